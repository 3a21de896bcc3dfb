//! Guest info from a network namespace built by the test: known MACs, IPv4 and IPv6 addresses,
//! routes and DNS; the simulator must decode exactly those. Needs root and iproute2 (installed
//! by scripts/setup.sh); skipped with a loud SKIPPED line when not root. Every interface is a
//! veth pair (the peers, `veth-*`, are excluded by default) so that no extra kernel module is
//! needed.

mod util;

use std::process::Command;
use std::time::Duration;
use util::*;

struct Netns {
    name: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Netns {
    /// None, after a loud SKIPPED line naming `test`, when not root. As root (CI) the test
    /// must run, so a failing `ip netns add` is a failure, not a skip.
    fn new(test: &str, name: &str) -> Option<Netns> {
        if !root_or_skip(test) {
            return None;
        }
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        assert!(
            ip(&["netns", "add", name]),
            "`ip netns add {name}` failed as root: iproute2 missing or namespaces not permitted"
        );
        Some(Netns { name: name.into() })
    }

    fn ip(&self, args: &str) {
        let mut argv = vec!["-n", &self.name];
        argv.extend(args.split_whitespace());
        assert!(ip(&argv), "ip {}", argv.join(" "));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_info_reports_exactly_the_namespace_network() {
    let name = format!("tbx{}", std::process::id());
    let Some(ns) = Netns::new("guest_info_reports_exactly_the_namespace_network", &name) else {
        return;
    };
    ns.ip("link set lo up");
    ns.ip("link add eth0 type veth peer name veth-peer0");
    ns.ip("link set eth0 address 00:50:56:aa:bb:01");
    ns.ip("addr add 192.0.2.10/24 dev eth0");
    ns.ip("addr add 2001:db8::10/64 dev eth0 nodad");
    ns.ip("link set eth0 up");
    ns.ip("link set veth-peer0 up");
    ns.ip("route add default via 192.0.2.1 metric 7");
    ns.ip("-6 route add default via 2001:db8::1");
    ns.ip("link add eth1 type veth peer name veth-peer1");
    ns.ip("link set veth-peer1 up");
    ns.ip("link set eth1 address 00:50:56:aa:bb:02");
    ns.ip("addr add 198.51.100.7/25 dev eth1");
    ns.ip("link set eth1 up");
    // Excluded by default, with its route.
    ns.ip("link add docker0 type veth peer name veth-peer2");
    ns.ip("link set veth-peer2 up");
    ns.ip("addr add 172.17.0.1/16 dev docker0");
    ns.ip("link set docker0 up");
    // `ip netns exec` mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf.
    std::fs::create_dir_all(format!("/etc/netns/{name}")).unwrap();
    std::fs::write(
        format!("/etc/netns/{name}/resolv.conf"),
        "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.test corp.test\n",
    )
    .unwrap();

    let dir = TempDir::new("netns");
    let sim = sim(&dir).await;
    let _agent = Agent::start(
        &["ip", "netns", "exec", &name],
        &dir,
        sim.dir(),
        QUIET_CONFIG,
    );
    let r = sim
        .wait_for(Duration::from_secs(10), |r| {
            r.ip.is_some() && r.nics.len() == 2 && r.routes.iter().any(|rt| rt.dest == "::/0")
        })
        .await
        .unwrap_or_else(|r| panic!("incomplete guest info: {r:#?}"));

    assert_eq!(r.ip.as_deref(), Some("192.0.2.10"));
    assert_eq!(r.nics[0].mac, "00:50:56:aa:bb:01");
    assert_eq!(r.nics[1].mac, "00:50:56:aa:bb:02");
    let eth0 = &r.nics[0];
    assert_eq!(eth0.ips[0], "192.0.2.10/24");
    assert_eq!(
        eth0.ip_origin_status[0],
        (Some(2), Some(1)),
        "permanent IPv4: manual, preferred"
    );
    let v6 = eth0
        .ips
        .iter()
        .position(|a| a == "2001:db8::10/64")
        .expect("global IPv6 address");
    assert_eq!(
        eth0.ip_origin_status[v6],
        (Some(2), Some(1)),
        "static IPv6: manual, preferred"
    );
    for (i, a) in eth0.ips.iter().enumerate() {
        assert!(
            a == "192.0.2.10/24"
                || a == "2001:db8::10/64"
                || (a.starts_with("fe80::250:56ff:feaa:bb01/64")
                    && eth0.ip_origin_status[i].0 == Some(5)),
            "unexpected address {a}"
        );
    }
    assert!(r.nics[1].ips.contains(&"198.51.100.7/25".to_string()));
    assert!(
        r.nics
            .iter()
            .all(|n| !n.ips.iter().any(|a| a.starts_with("172.17."))),
        "docker0 must be excluded"
    );

    let has = |dest: &str, gw: Option<&str>, nic: u32| {
        r.routes
            .iter()
            .any(|rt| rt.dest == dest && rt.gateway.as_deref() == gw && rt.nic == nic)
    };
    assert!(has("0.0.0.0/0", Some("192.0.2.1"), 0), "{:#?}", r.routes);
    assert!(r
        .routes
        .iter()
        .any(|rt| rt.dest == "0.0.0.0/0" && rt.metric == 7));
    assert!(has("192.0.2.0/24", None, 0), "{:#?}", r.routes);
    assert!(has("198.51.100.0/25", None, 1), "{:#?}", r.routes);
    assert!(has("::/0", Some("2001:db8::1"), 0), "{:#?}", r.routes);
    assert!(has("2001:db8::/64", None, 0), "{:#?}", r.routes);
    assert!(
        !r.routes.iter().any(|rt| rt.dest.starts_with("172.17.")),
        "docker0's route must be left out"
    );

    assert_eq!(r.dns_servers, vec!["192.0.2.53", "2001:db8::53"]);
    assert_eq!(r.dns_search, vec!["example.test", "corp.test"]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}
