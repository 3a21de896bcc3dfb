//! Guest info at scale (a benchmark, not a test): `cargo bench --bench guestinfo`. Needs root.
//!
//! In a network namespace it makes (and removes) with N interfaces (N/2 veth pairs, an IPv4
//! address on each), the CPU time and peak RSS of one NIC gather, for N = 16, 300 and 3000:
//! in kernel order (the link dump stops at the 16th NIC), with `primary_nics` naming the last
//! link (asked for by name, the dump still stops early), and with a wildcard `primary_nics`
//! pattern that matches nothing (every link must be looked at). Beside each, the same figures for
//! iproute2's `ip -o addr show` in the same namespace. Then `toolbox info update network`
//! at 3000 interfaces beside spawning `/bin/true`, both through `ip netns exec`.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use toolbox::guestinfo::{gather_nic_info, NicFilter};
use toolbox_rpc::packet::Packet;
use toolbox_rpc::stream::{read_packet, write_packet};

const BIN: &str = env!("CARGO_BIN_EXE_toolbox");
const RUNS: u32 = 20;

fn cpu_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// VmHWM of this process, KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Inside the namespace: one gather's CPU (mean of RUNS) and the peak RSS before and after.
fn child(mode: &str, interfaces: usize) {
    let primary = match mode {
        // The last link the namespace has, by name: asked for directly.
        "named" => vec![format!("eth{}", interfaces / 2 - 1)],
        // A wildcard: every link is looked at.
        "wildcard" => vec!["no-such-nic*".into()],
        _ => Vec::new(),
    };
    let filter = NicFilter {
        primary,
        ..NicFilter::default()
    };
    let before = peak_rss_kib();
    let first = gather_nic_info(&filter);
    let after_one = peak_rss_kib();
    let t = cpu_now();
    for _ in 0..RUNS {
        std::hint::black_box(gather_nic_info(&filter));
    }
    let cpu = (cpu_now() - t) / RUNS;
    println!(
        "{} {} {} {}",
        cpu.as_micros(),
        before,
        after_one,
        first.nics.len()
    );
}

struct Netns(String);

impl Netns {
    fn new(name: &str, interfaces: usize) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        assert!(Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap()
            .success());
        let mut batch = String::from("link set lo up\n");
        for i in 0..interfaces / 2 {
            batch.push_str(&format!(
                "link add eth{i} address 00:50:56:{:02x}:{:02x}:01 type veth peer name veth-p{i}\n\
                 addr add 10.{}.{}.1/24 dev eth{i}\nlink set eth{i} up\nlink set veth-p{i} up\n",
                i >> 8,
                i & 0xff,
                i >> 8,
                i & 0xff
            ));
        }
        let file = std::env::temp_dir().join(format!("{name}.batch"));
        std::fs::write(&file, batch).unwrap();
        let ok = Command::new("ip")
            .args(["-n", name, "-batch", &file.display().to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        let _ = std::fs::remove_file(&file);
        assert!(ok, "building {interfaces} interfaces");
        Netns(name.into())
    }

    fn exec(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(argv);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// CPU of a child process tree (user + system from /proc of the finished child is gone, so
/// this uses the wall time of `RUNS` runs, which for a single-threaded command is its CPU
/// plus the spawn).
fn wall_per_run(mut make: impl FnMut() -> Command) -> Duration {
    let t = Instant::now();
    for _ in 0..RUNS {
        let s = make()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(s.success());
    }
    t.elapsed() / RUNS
}

/// An RPCI peer on DIR/rpci.sock answering `1 ` to everything, for ever.
fn peer() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("toolbox-bench-gi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listener = UnixListener::bind(dir.join("rpci.sock")).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            while let Ok(p) = read_packet(&mut s) {
                let _ = write_packet(&mut s, &Packet::data(b"1 ".to_vec()));
                if p.fast_close {
                    break;
                }
            }
        }
    });
    dir
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let mode = args.get(i + 1).map(String::as_str).unwrap_or("default");
        let n = args.get(i + 2).and_then(|n| n.parse().ok()).unwrap_or(2);
        child(mode, n);
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: the guestinfo bench needs root (network namespaces)");
        return;
    }
    let me = std::env::current_exe().unwrap();
    let me = me.display().to_string();
    println!("one NIC gather (rtnetlink), mean of {RUNS}; peak RSS of the bench process");
    println!(
        "{:>6}  {:<22} {:>9} {:>12} {:>12} {:>5}   {:>22}",
        "ifaces", "order", "cpu/gather", "rss before", "rss after", "nics", "ref: ip -o addr show"
    );
    let mut ns3000 = None;
    for n in [16usize, 300, 3000] {
        let ns = Netns::new(&format!("tbxbench{}", std::process::id()), n);
        let reference = wall_per_run(|| ns.exec(&["ip", "-o", "addr", "show"]));
        for (label, mode) in [
            ("kernel order", "default"),
            ("primary: last, by name", "named"),
            ("primary: wildcard", "wildcard"),
        ] {
            let out = ns
                .exec(&[&me, "--child", mode, &n.to_string()])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let f: Vec<&str> = text.split_whitespace().collect();
            if f.len() != 4 {
                println!("{n:>6}  {label:<22} child failed: {out:?}");
                continue;
            }
            println!(
                "{n:>6}  {label:<22} {:>7} us {:>9} KiB {:>9} KiB {:>5}   {:>16.0} us wall",
                f[0],
                f[1],
                f[2],
                f[3],
                reference.as_secs_f64() * 1e6
            );
        }
        if n == 3000 {
            ns3000 = Some(ns);
        }
    }
    if let Some(ns) = ns3000 {
        let dir = peer();
        let transport = format!("unix:{}", dir.display());
        let update = wall_per_run(|| {
            let mut c = ns.exec(&[BIN, "--transport", &transport, "info", "update", "network"]);
            c.env_remove("TOOLBOX_LOG");
            c
        });
        let truth = wall_per_run(|| ns.exec(&["/bin/true"]));
        println!(
            "at 3000 interfaces, via ip netns exec: toolbox info update network {:.2} ms, /bin/true {:.2} ms (mean of {RUNS})",
            update.as_secs_f64() * 1e3,
            truth.as_secs_f64() * 1e3
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
