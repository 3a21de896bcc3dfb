//! Agent figures (a benchmark, not a test): `cargo bench --bench agent`.
//!
//! The release `toolbox run` against the simulator on unix:DIR: TCLO ping round trips per
//! second, broadcastIP → info-set latency, idle wakeups and CPU, idle RSS and threads, RSS after
//! a million pings and a thousand guest info pushes; and the backdoor poll rate over the model.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use toolbox::service::channel::Connector;
use toolbox::service::ServiceBuilder;
use toolbox::sim::Sim;
use toolbox_rpc::model::VmxModel;
use toolbox_rpc::packet::{body_len, Packet};

const BIN: &str = env!("CARGO_BIN_EXE_toolbox");

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("toolbox-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn agent(dir: &std::path::Path, vmx: &std::path::Path, bin: &str) -> Child {
    let cfg = dir.join("toolbox.toml");
    std::fs::write(&cfg, "log_level = \"warn\"\n[power]\nmethod = \"none\"\n").unwrap();
    Command::new(bin)
        .args([
            "run",
            "-c",
            &cfg.display().to_string(),
            "--transport",
            &format!("unix:{}", vmx.display()),
        ])
        .env_remove("TOOLBOX_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn status_field(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// Context switches of all the process's threads: each is a wakeup.
fn wakeups(pid: u32) -> u64 {
    let mut n = 0;
    if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in d.flatten() {
            let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            for l in s.lines() {
                if l.starts_with("voluntary_ctxt_switches")
                    || l.starts_with("nonvoluntary_ctxt_switches")
                {
                    n += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    n
}

/// The floor: two processes passing 24 bytes back and forth (here through `cat` on pipes).
fn floor_rate(n: u32, label: &str) {
    let mut cat = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut w, mut r) = (cat.stdin.take().unwrap(), cat.stdout.take().unwrap());
    let mut buf = [0u8; 24];
    let t = Instant::now();
    for _ in 0..n {
        w.write_all(&buf.clone()).unwrap();
        r.read_exact(&mut buf).unwrap();
    }
    let e = t.elapsed();
    println!(
        "floor, two processes ping-ponging 24 bytes ({label}): {:.0}/s ({:.1} us each)",
        f64::from(n) / e.as_secs_f64(),
        e.as_secs_f64() * 1e6 / f64::from(n)
    );
    drop(w);
    let _ = cat.wait();
}

fn pin_to_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

fn unpin() {
    let mut set = nix::sched::CpuSet::new();
    for i in 0..std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
    {
        let _ = set.set(i);
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

/// A bare VMX stand-in for the TCLO rate: blocking I/O on one thread, no runtime in the way.
fn raw_ping_rate(n: u32, label: &str) {
    let dir = tempdir("raw");
    let vmx = dir.join("vmx");
    std::fs::create_dir_all(&vmx).unwrap();
    let tclo = UnixListener::bind(vmx.join("tclo.sock")).unwrap();
    // RPCI: answer everything "1 " from a thread.
    let rpci = UnixListener::bind(vmx.join("rpci.sock")).unwrap();
    std::thread::spawn(move || {
        for s in rpci.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                while let Ok(_p) = toolbox_rpc::stream::read_packet(&mut s) {
                    if toolbox_rpc::stream::write_packet(&mut s, &Packet::data(&b"1 "[..])).is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    let mut child = agent(&dir, &vmx, BIN);
    let (s, _) = tclo.accept().unwrap();
    let mut w = s.try_clone().unwrap();
    // Buffered, so that a reply takes one read(2) as it does in the agent.
    let mut s = std::io::BufReader::new(s);
    let ping = Packet::data(&b"ping"[..]).encode();
    let mut buf = vec![0u8; 4096];
    let mut exchange = |s: &mut std::io::BufReader<std::os::unix::net::UnixStream>| {
        w.write_all(&ping).unwrap();
        // Read one DATA reply, skipping heartbeats.
        loop {
            s.read_exact(&mut buf[..4]).unwrap();
            let len = body_len([buf[0], buf[1], buf[2], buf[3]]).unwrap();
            s.read_exact(&mut buf[4..4 + len]).unwrap();
            let p = Packet::decode(&buf[..4 + len]).unwrap();
            if p.kind == toolbox_rpc::packet::PacketType::DATA {
                assert_eq!(p.payload, b"OK ");
                return;
            }
        }
    };
    for _ in 0..1000 {
        exchange(&mut s);
    }
    let cpu0 = cpu_seconds(child.id());
    let t = Instant::now();
    for _ in 0..n {
        exchange(&mut s);
    }
    let e = t.elapsed();
    let cpu = cpu_seconds(child.id()) - cpu0;
    println!(
        "TCLO ping round trips, unix:DIR, bare driver ({label}): {:.0}/s ({:.1} us each, agent CPU {:.1} us per ping)",
        f64::from(n) / e.as_secs_f64(),
        e.as_secs_f64() * 1e6 / f64::from(n),
        cpu * 1e6 / f64::from(n)
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn with_simulator() {
    let dir = tempdir("sim");
    let vmx = dir.join("vmx");
    let sim = Sim::start(&vmx, true).await.unwrap();
    let mut child = agent(&dir, &vmx, BIN);
    let pid = child.id();
    sim.wait_for(Duration::from_secs(10), |r| {
        r.ip.is_some() && r.tools_version.is_some()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Idle: RSS, threads, wakeups and CPU over 10 s.
    let rss0 = status_field(pid, "VmRSS:");
    let threads = status_field(pid, "Threads:");
    let (w0, c0, t0) = (wakeups(pid), cpu_seconds(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let secs = t0.elapsed().as_secs_f64();
    println!("idle toolbox run: RSS {rss0} kB, {threads} thread(s)");
    // The static build, when scripts/qemu-vmport.sh has made it.
    let static_bin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/x86_64-unknown-linux-gnu/release-static/toolbox"
    );
    if std::path::Path::new(static_bin).exists() {
        let d2 = tempdir("sim-static");
        let sim2 = Sim::start(&d2.join("vmx"), true).await.unwrap();
        let mut c2 = agent(&d2, &d2.join("vmx"), static_bin);
        sim2.wait_for(Duration::from_secs(10), |r| r.ip.is_some())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!(
            "idle toolbox run, static build: RSS {} kB ({} kB anonymous), {} thread(s)",
            status_field(c2.id(), "VmRSS:"),
            status_field(c2.id(), "RssAnon:"),
            status_field(c2.id(), "Threads:")
        );
        let _ = c2.kill();
        let _ = c2.wait();
        let _ = std::fs::remove_dir_all(&d2);
    }
    println!(
        "idle on unix:DIR: {:.2} wakeups/s, {:.3} CPU s/hour (heartbeat 1/s)",
        (wakeups(pid) - w0) as f64 / secs,
        (cpu_seconds(pid) - c0) / secs * 3600.0
    );

    // broadcastIP → info-set latency.
    let mut lat = Vec::new();
    for _ in 0..50 {
        let before = sim.report().ip_sets;
        let t = Instant::now();
        sim.tclo(b"Set_Option broadcastIP 1", Duration::from_secs(5))
            .await
            .unwrap();
        sim.wait_for(Duration::from_secs(5), |r| r.ip_sets > before)
            .await
            .unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "Set_Option broadcastIP 1 -> info-set guestinfo.ip arriving: median {:.0} us, p90 {:.0} us",
        lat[25].as_secs_f64() * 1e6,
        lat[45].as_secs_f64() * 1e6
    );

    // Ping rate through the simulator's own request path.
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        sim.tclo(b"ping", Duration::from_secs(5)).await.unwrap();
    }
    println!(
        "TCLO ping round trips, unix:DIR, through vmx-sim: {:.0}/s",
        n as f64 / t.elapsed().as_secs_f64()
    );

    // A million pings and a thousand guest info pushes: RSS growth.
    let t = Instant::now();
    for _ in 0..980_000 {
        sim.tclo(b"ping", Duration::from_secs(5)).await.unwrap();
    }
    let pings_secs = t.elapsed().as_secs_f64();
    for _ in 0..1000 {
        // reset forces a complete guest info push.
        sim.tclo(b"reset", Duration::from_secs(5)).await.unwrap();
        sim.tclo(b"Set_Option broadcastIP 1", Duration::from_secs(5))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = status_field(pid, "VmRSS:");
    println!(
        "after 1,000,000 pings ({pings_secs:.0} s) and 1000 forced guest info pushes: RSS {rss1} kB ({:+} kB from idle)",
        rss1 as i64 - rss0 as i64
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn backdoor_polls() {
    let model = VmxModel::default();
    model.set_rpci(Box::new(|_| b"1 ".to_vec()));
    let mut cfg = toolbox::config::Config::default();
    cfg.power.method = toolbox::config::PowerMethod::None;
    let service = ServiceBuilder::new(cfg)
        .connector(Connector::Model(model.clone()))
        .build();
    let stop = service.stop_handle();
    let task = tokio::spawn(service.run());
    // Let the delay back off to its maximum.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, t0) = (model.stats().low_calls, Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    // An idle poll is two calls: SENDSIZE of the empty reply, RECVSIZE.
    let polls = (model.stats().low_calls - c0) as f64 / 2.0 / t0.elapsed().as_secs_f64();
    println!("backdoor TCLO polls once backed off, over the model: {polls:.1}/s (vmtoolsd and govmomi: 10/s)");
    stop.stop();
    let _ = task.await;
}

fn main() {
    floor_rate(100_000, "on any CPU");
    raw_ping_rate(100_000, "on any CPU");
    // Children inherit the affinity: agent and driver share one CPU, no cross-CPU wakeups.
    pin_to_cpu0();
    floor_rate(200_000, "one CPU");
    raw_ping_rate(300_000, "one CPU");
    unpin();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(backdoor_polls());
    rt.block_on(with_simulator());
}
