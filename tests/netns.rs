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

/// A veth `name` in the namespace with a known MAC, up, its peer up too (excluded as `veth*`).
fn veth(ns: &Netns, name: &str, peer: &str, mac: &str) {
    ns.ip(&format!("link add {name} type veth peer name {peer}"));
    ns.ip(&format!("link set {name} address {mac}"));
    ns.ip(&format!("link set {peer} up"));
    ns.ip(&format!("link set {name} up"));
}

fn sysctl(ns: &Netns, setting: &str) {
    let ok = Command::new("ip")
        .args(["netns", "exec", &ns.name, "sysctl", "-q", "-w", setting])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "sysctl {setting}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_and_status_come_from_the_address_flags_and_lifetimes() {
    let test = "origin_and_status_come_from_the_address_flags_and_lifetimes";
    let name = format!("tbo{}", std::process::id());
    let Some(ns) = Netns::new(test, &name) else {
        return;
    };
    ns.ip("link set lo up");
    veth(&ns, "eth0", "veth-p0", "00:50:56:aa:cc:01");
    // Duplicate address detection that takes 100 s keeps an address tentative for the test.
    sysctl(&ns, "net.ipv6.neigh.eth0.retrans_time_ms=100000");
    ns.ip("addr add 192.0.2.10/24 dev eth0");
    ns.ip("addr add 192.0.2.20/24 dev eth0 valid_lft 600 preferred_lft 300");
    ns.ip("addr add 192.0.2.30/24 dev eth0 valid_lft 600 preferred_lft 0");
    ns.ip("addr add 2001:db8::10/64 dev eth0 nodad");
    ns.ip("addr add 2001:db8::20/128 dev eth0 nodad valid_lft 600 preferred_lft 300");
    ns.ip("addr add 2001:db8::30/64 dev eth0 nodad valid_lft 600 preferred_lft 0");
    ns.ip("addr add 2001:db8::40/64 dev eth0");

    let dir = TempDir::new("netns-origin");
    let sim = sim(&dir).await;
    let _agent = Agent::start(
        &["ip", "netns", "exec", &name],
        &dir,
        sim.dir(),
        QUIET_CONFIG,
    );
    let r = sim
        .wait_for(Duration::from_secs(10), |r| {
            r.nics.len() == 1 && r.nics[0].ips.len() >= 7
        })
        .await
        .unwrap_or_else(|r| panic!("incomplete guest info: {r:#?}"));
    let nic = &r.nics[0];
    let of = |addr: &str| {
        let i = nic
            .ips
            .iter()
            .position(|a| a == addr)
            .unwrap_or_else(|| panic!("{addr} missing from {:?}", nic.ips));
        nic.ip_origin_status[i]
    };
    // IpAddressOrigin: MANUAL 2, DHCP 4, LINKLAYER 5; IpAddressStatus: PREFERRED 1,
    // DEPRECATED 2, TENTATIVE 6.
    assert_eq!(of("192.0.2.10/24"), (Some(2), Some(1)), "static IPv4");
    assert_eq!(of("192.0.2.20/24"), (Some(4), Some(1)), "leased IPv4");
    assert_eq!(
        of("192.0.2.30/24"),
        (Some(4), Some(2)),
        "lease past its preferred time"
    );
    assert_eq!(of("2001:db8::10/64"), (Some(2), Some(1)), "static IPv6");
    assert_eq!(
        of("2001:db8::20/128"),
        (Some(4), Some(1)),
        "DHCPv6-style /128 lease"
    );
    assert_eq!(of("2001:db8::30/64").1, Some(2), "deprecated IPv6");
    assert_eq!(
        of("2001:db8::40/64"),
        (Some(2), Some(6)),
        "IPv6 still in DAD"
    );
    let ll = nic
        .ips
        .iter()
        .position(|a| a.starts_with("fe80::250:56ff:feaa:cc01/64"))
        .expect("link-local address");
    assert_eq!(nic.ip_origin_status[ll].0, Some(5), "link-local: LINKLAYER");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_nics_come_first_and_policy_tables_are_read() {
    let test = "primary_nics_come_first_and_policy_tables_are_read";
    let name = format!("tbp{}", std::process::id());
    let Some(ns) = Netns::new(test, &name) else {
        return;
    };
    ns.ip("link set lo up");
    veth(&ns, "eth0", "veth-p0", "00:50:56:aa:dd:01");
    veth(&ns, "ens1", "veth-p1", "00:50:56:aa:dd:02");
    veth(&ns, "skip0", "veth-p2", "00:50:56:aa:dd:03");
    veth(&ns, "ens9", "veth-p3", "00:50:56:aa:dd:04");
    ns.ip("addr add 10.0.0.5/24 dev eth0");
    ns.ip("addr add 10.0.1.5/24 dev ens1");
    ns.ip("addr add 10.0.2.5/24 dev skip0");
    ns.ip("addr add 10.0.9.5/24 dev ens9");
    // A policy table the lookup uses, and one no rule names.
    ns.ip("route add 203.0.113.0/24 via 10.0.1.1 dev ens1 table 100");
    ns.ip("rule add from 10.0.1.0/24 table 100");
    ns.ip("route add 198.18.0.0/15 via 10.0.1.1 dev ens1 table 200");
    ns.ip("route add default via 10.0.0.1 dev eth0");

    let config = format!(
        "{QUIET_CONFIG}[guestinfo]\nexclude_nics = [\"skip*\", \"veth*\"]\n\
         primary_nics = [\"ens9\"]\nlow_priority_nics = [\"eth*\"]\nmax_nics = 3\n"
    );
    let dir = TempDir::new("netns-primary");
    let sim = sim(&dir).await;
    let _agent = Agent::start(&["ip", "netns", "exec", &name], &dir, sim.dir(), &config);
    let r = sim
        .wait_for(Duration::from_secs(10), |r| {
            r.ip.is_some() && r.nics.len() == 3
        })
        .await
        .unwrap_or_else(|r| panic!("incomplete guest info: {r:#?}"));
    let macs: Vec<&str> = r.nics.iter().map(|n| n.mac.as_str()).collect();
    assert_eq!(
        macs,
        [
            "00:50:56:aa:dd:04",
            "00:50:56:aa:dd:02",
            "00:50:56:aa:dd:01"
        ],
        "primary, normal, low priority; the excluded one left out"
    );
    assert_eq!(
        r.ip.as_deref(),
        Some("10.0.9.5"),
        "broadcastIP: the primary NIC's"
    );
    let has = |dest: &str, nic: u32| r.routes.iter().any(|rt| rt.dest == dest && rt.nic == nic);
    assert!(
        has("203.0.113.0/24", 1),
        "table 100 is used by a rule: {:#?}",
        r.routes
    );
    assert!(
        !has("198.18.0.0/15", 1),
        "no rule uses table 200: {:#?}",
        r.routes
    );
    assert!(has("0.0.0.0/0", 2), "{:#?}", r.routes);
    assert!(!r.routes.iter().any(|rt| rt.dest.starts_with("10.0.2.")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_caps_bound_the_route_list() {
    let test = "route_caps_bound_the_route_list";
    let name = format!("tbr{}", std::process::id());
    let Some(ns) = Netns::new(test, &name) else {
        return;
    };
    veth(&ns, "eth0", "veth-p0", "00:50:56:aa:ee:01");
    ns.ip("addr add 10.1.0.5/16 dev eth0");
    ns.ip("addr add 2001:db8:1::5/64 dev eth0 nodad");
    for i in 0..20 {
        ns.ip(&format!("route add 10.{}.0.0/16 via 10.1.0.1", 100 + i));
        ns.ip(&format!(
            "-6 route add 2001:db8:{:x}::/48 via 2001:db8:1::1",
            0x100 + i
        ));
    }
    let config = format!("{QUIET_CONFIG}[guestinfo]\nmax_ipv4_routes = 3\nmax_ipv6_routes = 2\n");
    let dir = TempDir::new("netns-routes");
    let sim = sim(&dir).await;
    let _agent = Agent::start(&["ip", "netns", "exec", &name], &dir, sim.dir(), &config);
    let r = sim
        .wait_for(Duration::from_secs(10), |r| {
            r.nics.len() == 1 && !r.routes.is_empty()
        })
        .await
        .unwrap_or_else(|r| panic!("incomplete guest info: {r:#?}"));
    let v4 = r.routes.iter().filter(|rt| !rt.dest.contains(':')).count();
    let v6 = r.routes.iter().filter(|rt| rt.dest.contains(':')).count();
    assert_eq!((v4, v6), (3, 2), "{:#?}", r.routes);
}
