//! Transport figures (a benchmark, not a test): `cargo bench --bench transport`.
//!
//! Prints RPCI round trips per second over the VMX model and over unix:DIR, bytes per second
//! through the model's high- and low-bandwidth paths, the wall time of one `toolbox info get`
//! process over unix:DIR, and the size of the release binary.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use toolbox_rpc::message::{MessageChannel, Protocol};
use toolbox_rpc::model::{ModelConfig, VmxModel};
use toolbox_rpc::packet::Packet;
use toolbox_rpc::rpci::{RpciClient, StreamRpci};
use toolbox_rpc::stream::{read_packet, write_packet};
use toolbox_rpc::transport::connect_unix;

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn model_round_trips(hb: bool) {
    let model = VmxModel::new(ModelConfig {
        high_bandwidth: hb,
        ..ModelConfig::default()
    });
    model.set_rpci(Box::new(|_| b"1 ".to_vec()));
    let mut chan = MessageChannel::open(model.port(), Protocol::Rpci).unwrap();
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        chan.call(b"info-get guestinfo.x").unwrap();
    }
    println!(
        "rpci round trips over the model (hb={hb}): {:.0}/s",
        rate(n, t.elapsed())
    );
}

fn model_throughput(hb: bool) {
    let model = VmxModel::new(ModelConfig {
        high_bandwidth: hb,
        ..ModelConfig::default()
    });
    let mut chan = MessageChannel::open(model.port(), Protocol::Tclo).unwrap();
    let msg = vec![0x5au8; 64 * 1024];
    let rounds = if hb { 4000 } else { 100 };
    let t = Instant::now();
    for _ in 0..rounds {
        chan.send(&msg).unwrap();
        model.take_tclo_replies();
    }
    let mbs = rate(rounds * msg.len() as u64, t.elapsed()) / 1e6;
    println!(
        "model {} path, 64 KiB messages: {mbs:.1} MB/s",
        if hb {
            "high-bandwidth"
        } else {
            "low-bandwidth"
        }
    );
}

fn serve(dir: &std::path::Path, connections: usize) -> thread::JoinHandle<()> {
    let listener = UnixListener::bind(dir.join("rpci.sock")).unwrap();
    thread::spawn(move || {
        for _ in 0..connections {
            let (mut s, _) = listener.accept().unwrap();
            while let Ok(p) = read_packet(&mut s) {
                write_packet(&mut s, &Packet::data(&b"1 value"[..])).unwrap();
                if p.fast_close {
                    break;
                }
            }
        }
    })
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("toolbox-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn unix_round_trips() {
    let dir = tempdir("rt");
    let server = serve(&dir, 1);
    let stream = connect_unix(&dir, "rpci.sock").unwrap();
    let mut client = RpciClient::new(StreamRpci::new(stream, false), "unix");
    let n = 100_000;
    let t = Instant::now();
    for _ in 0..n {
        client.call(b"info-get guestinfo.x").unwrap();
    }
    println!(
        "rpci round trips over unix:DIR (one connection): {:.0}/s",
        rate(n, t.elapsed())
    );
    drop(client);
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `a` and `b` in turn, A B A B …, `pairs` times, as whole processes with their output
/// thrown away: the median of A's wall time, of B's, and of the per-pair ratio A/B. Pairing
/// keeps the ratio honest on a machine whose speed drifts; timing A's runs and B's runs in two
/// blocks does not.
fn paired(
    pairs: usize,
    mut a: impl FnMut() -> Command,
    mut b: impl FnMut() -> Command,
) -> (f64, f64, f64) {
    let run = |mut c: Command| {
        let t = Instant::now();
        let status = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{c:?}: {status}");
        t.elapsed().as_secs_f64()
    };
    // One warm-up of each: page cache, the peer's first accept.
    run(a());
    run(b());
    let mut ta = Vec::with_capacity(pairs);
    let mut tb = Vec::with_capacity(pairs);
    let mut ratio = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let x = run(a());
        let y = run(b());
        ta.push(x);
        tb.push(y);
        ratio.push(x / y);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (
        median(&mut ta) * 1e3,
        median(&mut tb) * 1e3,
        median(&mut ratio),
    )
}

/// One `toolbox info get` process against `/bin/true`, paired, with two VMX sides: a blocking
/// thread of this process that answers at once, and `vmx-sim`, a separate process as the real
/// VMX is. The difference between the two is the peer's wakeup and answer, not the agent.
fn process_wall_time() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let static_bin = root.join("target/x86_64-unknown-linux-gnu/release-static/toolbox");
    let mut bins = vec![("dynamic", PathBuf::from(env!("CARGO_BIN_EXE_toolbox")))];
    if static_bin.exists() {
        bins.push(("static", static_bin));
    }
    let pairs = 100;
    for (kind, bin) in &bins {
        let dir = tempdir("proc");
        let server = serve(&dir, pairs + 1);
        let transport = format!("unix:{}", dir.display());
        let (a, b, ratio) = paired(
            pairs,
            || {
                let mut c = Command::new(bin);
                c.args(["--transport", &transport, "info", "get", "guestinfo.x"]);
                c
            },
            || Command::new("/bin/true"),
        );
        server.join().unwrap();
        println!(
            "one `toolbox info get` ({kind}) over unix:DIR, in-process peer: {a:.2} ms beside /bin/true {b:.2} ms: {ratio:.2}x (median of {pairs} pairs)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    // vmx-sim as the peer.
    let dir = tempdir("procsim");
    let vmx = dir.join("vmx");
    let mut sim = Command::new(env!("CARGO_BIN_EXE_vmx-sim"))
        .arg("serve")
        .arg(&vmx)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sim_cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vmx-sim"))
            .arg("-d")
            .arg(&vmx)
            .args(args)
            .status()
    };
    for _ in 0..100 {
        if vmx.join("ctl.sock").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(sim_cli(&["info", "set", "guestinfo.x", "hello"])
        .unwrap()
        .success());
    let transport = format!("unix:{}", vmx.display());
    for (kind, bin) in &bins {
        let (a, b, ratio) = paired(
            pairs,
            || {
                let mut c = Command::new(bin);
                c.args(["--transport", &transport, "info", "get", "guestinfo.x"]);
                c
            },
            || Command::new("/bin/true"),
        );
        println!(
            "one `toolbox info get` ({kind}) over unix:DIR against vmx-sim: {a:.2} ms beside /bin/true {b:.2} ms: {ratio:.2}x (median of {pairs} pairs)"
        );
    }
    let _ = sim.kill();
    let _ = sim.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn binary_sizes() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_toolbox"));
    if let Ok(m) = std::fs::metadata(&bin) {
        println!(
            "release toolbox binary (stripped, dynamic): {} bytes",
            m.len()
        );
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let static_bin = root.join("target/x86_64-unknown-linux-gnu/release-static/toolbox");
    match std::fs::metadata(&static_bin) {
        Ok(m) => println!(
            "release toolbox binary (stripped, static, from scripts/qemu-vmport.sh): {} bytes",
            m.len()
        ),
        Err(_) => println!("static binary not built (scripts/qemu-vmport.sh builds it)"),
    }
}

fn main() {
    // `cargo bench` passes --bench; anything else (e.g. a filter) is ignored.
    model_round_trips(true);
    model_round_trips(false);
    model_throughput(true);
    model_throughput(false);
    unix_round_trips();
    process_wall_time();
    binary_sizes();
}
