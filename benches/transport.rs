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

fn median_spawn(n: usize, mut run: impl FnMut()) -> (f64, f64) {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        run();
        times.push(t.elapsed());
    }
    times.sort();
    (
        times[n / 2].as_secs_f64() * 1e3,
        times[n * 9 / 10].as_secs_f64() * 1e3,
    )
}

fn process_wall_time() {
    let (floor, _) = median_spawn(200, || {
        assert!(Command::new("true").status().unwrap().success());
    });
    println!("spawning /bin/true from this process: median {floor:.2} ms (the floor)");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let static_bin = root.join("target/x86_64-unknown-linux-gnu/release/toolbox");
    let mut bins = vec![("dynamic", PathBuf::from(env!("CARGO_BIN_EXE_toolbox")))];
    if static_bin.exists() {
        bins.push(("static", static_bin));
    }
    for (kind, bin) in bins {
        let dir = tempdir("proc");
        let n = 200;
        let server = serve(&dir, n);
        let transport = format!("unix:{}", dir.display());
        let (median, p90) = median_spawn(n, || {
            let out = Command::new(&bin)
                .args(["--transport", &transport, "info", "get", "guestinfo.x"])
                .output()
                .unwrap();
            assert!(out.status.success());
        });
        server.join().unwrap();
        println!(
            "one `toolbox info get` process ({kind}) over unix:DIR: median {median:.2} ms, p90 {p90:.2} ms (spawn included)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
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
    let static_bin = root.join("target/x86_64-unknown-linux-gnu/release/toolbox");
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
