//! Guest file transfer figures (a benchmark, not a test): `cargo bench --bench guestfiles`, or
//! `scripts/bench-vmtoolsd.sh`, which also runs open-vm-tools' vmtoolsd beside it in the same
//! run.
//!
//! Each agent runs as a child of this process against its own in-process VMX simulator on
//! `unix:DIR`: the release `toolbox run`, and, when `VMTOOLSD_CMD` names a command that starts
//! vmtoolsd against a simulator directory given as its last argument (the script's wrapper),
//! the real vmtoolsd. Measured on each, with 61 440-byte requests as the VMX sends them:
//!
//! * HGFS over the TCLO `f` command: write then read a file (no credentials on this carrier);
//! * HGFS over VIX op 84 (`HgfsSendPacket` with name/password credentials in every request,
//!   the way guest-operation transfers travel): a file uploaded then downloaded;
//! * peak RSS (VmHWM) of the agent and of the largest process it starts (its per-user helper;
//!   at a login, the short-lived password check, which holds yescrypt's 16 MiB so that the
//!   agent does not) during the transfers.
//!
//! Beside each: plain `pwrite`/`pread` of the same file in the same 61 440-byte pieces, same run.
//! Files live on /dev/shm when there is one, so the figures are the agents' and not a disk's.
//!
//! `TOOLBOX_BENCH_AGENT` names another build of `toolbox` to measure (the static binary, a
//! build with symbols for `perf`).
//!
//! Sizes (MiB): `TOOLBOX_BENCH_MB` (default 1024) for our agent and for vmtoolsd over `f`;
//! `TOOLBOX_BENCH_VMTOOLSD_VIX_MB` (default 16) for vmtoolsd over op 84, which logs in through
//! PAM for every packet and would take a quarter of an hour for 1 GiB.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use toolbox::sim::guestops::{GuestOps, InProcess, Quiet, UploadAttributes};
use toolbox::sim::Sim;
use toolbox::vix::client::login;
use toolbox_hgfs::client::{Client as HgfsClient, TRANSFER_CHUNK};
use toolbox_hgfs::proto::{OpenFlags, LARGE_PACKET_MAX, OPEN_MODE_READ_ONLY, OPEN_MODE_WRITE_ONLY};

const BIN: &str = env!("CARGO_BIN_EXE_toolbox");
/// The login both agents check: root with the test fixtures' yescrypt hash (as a current
/// distribution hashes passwords), so each VIX request costs what a real login costs.
const PASSWORD: &str = "alice-pw-1";
const FIXTURE_SHADOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth/shadow");
const TIMEOUT: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;

fn env_mib(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        * MIB
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// The scratch directory: /dev/shm when there is one.
fn scratch(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("toolbox-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes a scratch directory when dropped, a panicking run's too.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes that repeat only every 1 000 003 (prime) bytes.
struct Pattern {
    at: u64,
    size: u64,
    block: Arc<Vec<u8>>,
}

impl Pattern {
    fn new(size: u64) -> Pattern {
        let block: Vec<u8> = (0..1_000_003u64)
            .map(|x| (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
            .collect();
        Pattern {
            at: 0,
            size,
            block: Arc::new(block),
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.size - self.at) as usize;
        let mut done = 0;
        while done < n {
            let from = ((self.at + done as u64) % self.block.len() as u64) as usize;
            let k = (n - done).min(self.block.len() - from);
            buf[done..done + k].copy_from_slice(&self.block[from..from + k]);
            done += k;
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// Counts what a download delivers.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The processes below `root` (its helpers, their children).
fn descendants(root: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter_map(|pid| Some((pid, parent_of(pid)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut at = 0;
    while at < found.len() {
        let parent = found[at];
        found.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        at += 1;
    }
    found.remove(0);
    found
}

/// Samples the peak RSS (VmHWM, KiB) of an agent and of the largest process below it.
struct Peaks {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<(u64, u64)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Resets the kernel's peak-RSS mark (VmHWM) of `pid` and its descendants (`clear_refs` 5).
fn reset_peaks(pid: u32) {
    for p in std::iter::once(pid).chain(descendants(pid)) {
        let _ = std::fs::write(format!("/proc/{p}/clear_refs"), "5");
    }
}

impl Peaks {
    /// Starts a window: the peaks are reset, then sampled until [`Peaks::finish`].
    fn watch(pid: u32) -> Peaks {
        reset_peaks(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new((0, 0)));
        let (s, p) = (stop.clone(), peaks.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let agent = status_kib(pid, "VmHWM:").unwrap_or(0);
                let child = descendants(pid)
                    .into_iter()
                    .filter_map(|c| status_kib(c, "VmHWM:"))
                    .max()
                    .unwrap_or(0);
                let mut g = p.lock().unwrap();
                g.0 = g.0.max(agent);
                g.1 = g.1.max(child);
                drop(g);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Peaks {
            stop,
            peaks,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.peaks.lock().unwrap()
    }
}

/// A child killed (its whole process group) when dropped.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        // The child leads its own process group (see `spawn_owned`): its helpers go with it.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

fn spawn_owned(cmd: &mut Command) -> Owned {
    use std::os::unix::process::CommandExt;
    Owned(cmd.process_group(0).spawn().expect("starting the agent"))
}

async fn wait_tools(sim: &Sim, who: &str) {
    sim.wait_for(Duration::from_secs(30), |r| {
        r.capabilities.iter().any(|c| c.starts_with("hgfs_server"))
    })
    .await
    .unwrap_or_else(|r| panic!("{who} never registered its HGFS server: {r:?}"));
}

/// One HGFS packet over the TCLO `f` command; the reply packet.
async fn tclo_f(sim: &Sim, packet: &[u8]) -> Vec<u8> {
    let mut request = Vec::with_capacity(2 + packet.len());
    request.extend_from_slice(b"f ");
    request.extend_from_slice(packet);
    let reply = sim.tclo(&request, TIMEOUT).await.expect("f command");
    match reply.strip_prefix(b"OK ") {
        Some(r) => r.to_vec(),
        None => panic!(
            "f refused: {}",
            String::from_utf8_lossy(&reply[..reply.len().min(80)])
        ),
    }
}

/// Writes `size` bytes to `path` over `f`; the seconds taken.
async fn hgfs_f_write(sim: &Sim, path: &Path, size: u64) -> f64 {
    let mut hgfs = HgfsClient::new();
    let r = hgfs.create_session(LARGE_PACKET_MAX);
    let reply = tclo_f(sim, &r.packet).await;
    hgfs.accept_session(&r, &reply).unwrap();
    let mut source = Pattern::new(size);
    let mut chunk = vec![0u8; TRANSFER_CHUNK as usize];
    let started = Instant::now();
    let r = hgfs.open(
        path.to_str().unwrap().as_bytes(),
        OPEN_MODE_WRITE_ONLY,
        OpenFlags::OPEN_CREATE_EMPTY,
        Some(0o644),
    );
    let reply = tclo_f(sim, &r.packet).await;
    let handle = hgfs.opened(&r, &reply).unwrap();
    let mut offset = 0u64;
    while offset < size {
        let n = source.read(&mut chunk).unwrap();
        let r = hgfs.write(handle, offset, &chunk[..n]);
        let reply = tclo_f(sim, &r.packet).await;
        let written = hgfs.written(&r, &reply).unwrap();
        assert_eq!(written as usize, n, "short HGFS write");
        offset += n as u64;
    }
    let r = hgfs.close(handle);
    let reply = tclo_f(sim, &r.packet).await;
    hgfs.done(&r, &reply).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let r = hgfs.destroy_session();
    let reply = tclo_f(sim, &r.packet).await;
    hgfs.done(&r, &reply).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), size);
    secs
}

/// Reads `path` over `f` to its end; the bytes and seconds.
async fn hgfs_f_read(sim: &Sim, path: &Path) -> (u64, f64) {
    let mut hgfs = HgfsClient::new();
    let r = hgfs.create_session(LARGE_PACKET_MAX);
    let reply = tclo_f(sim, &r.packet).await;
    hgfs.accept_session(&r, &reply).unwrap();
    let started = Instant::now();
    let r = hgfs.open(
        path.to_str().unwrap().as_bytes(),
        OPEN_MODE_READ_ONLY,
        OpenFlags::OPEN,
        None,
    );
    let reply = tclo_f(sim, &r.packet).await;
    let handle = hgfs.opened(&r, &reply).unwrap();
    let mut offset = 0u64;
    loop {
        let r = hgfs.read(handle, offset, TRANSFER_CHUNK);
        let reply = tclo_f(sim, &r.packet).await;
        let n = hgfs.read_data(&r, &reply, TRANSFER_CHUNK).unwrap().len();
        if n == 0 {
            break;
        }
        offset += n as u64;
    }
    let r = hgfs.close(handle);
    let reply = tclo_f(sim, &r.packet).await;
    hgfs.done(&r, &reply).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let r = hgfs.destroy_session();
    let reply = tclo_f(sim, &r.packet).await;
    hgfs.done(&r, &reply).unwrap();
    (offset, secs)
}

/// Plain pwrite then pread of `size` bytes in transfer-sized pieces: the same-run reference.
fn plain(path: &Path, size: u64) -> (f64, f64) {
    let mut source = Pattern::new(size);
    let mut chunk = vec![0u8; TRANSFER_CHUNK as usize];
    let file = std::fs::File::create(path).unwrap();
    let started = Instant::now();
    let mut offset = 0;
    while offset < size {
        let n = source.read(&mut chunk).unwrap();
        file.write_all_at(&chunk[..n], offset).unwrap();
        offset += n as u64;
    }
    drop(file);
    let write = mbps(size, started.elapsed().as_secs_f64());
    let file = std::fs::File::open(path).unwrap();
    let started = Instant::now();
    let mut offset = 0;
    loop {
        let n = file.read_at(&mut chunk, offset).unwrap();
        if n == 0 {
            break;
        }
        offset += n as u64;
    }
    let read = mbps(offset, started.elapsed().as_secs_f64());
    let _ = std::fs::remove_file(path);
    (write, read)
}

#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    f_write: f64,
    f_read: f64,
    vix_up: f64,
    vix_down: f64,
    vix_mib: u64,
    /// Peak RSS (agent, largest child), KiB: over `f`, at the first login, over op 84.
    peak_f: (u64, u64),
    peak_login: (u64, u64),
    peak_vix: (u64, u64),
    plain_write: f64,
    plain_read: f64,
}

/// Runs every transfer against an agent already connected to `sim`.
async fn measure(sim: &Sim, pid: u32, data: &Path, f_size: u64, vix_size: u64) -> Figures {
    let mut fig = Figures {
        vix_mib: vix_size / MIB,
        ..Figures::default()
    };
    let (plain_write, plain_read) = plain(&data.join("plain.bin"), f_size);
    fig.plain_write = plain_write;
    fig.plain_read = plain_read;

    let peaks = Peaks::watch(pid);
    let f_file = data.join("f.bin");
    let secs = hgfs_f_write(sim, &f_file, f_size).await;
    fig.f_write = mbps(f_size, secs);
    let (got, secs) = hgfs_f_read(sim, &f_file).await;
    assert_eq!(got, f_size);
    fig.f_read = mbps(got, secs);
    let _ = std::fs::remove_file(&f_file);
    fig.peak_f = peaks.finish();

    // The first login apart: a yescrypt check alone needs 16 MiB (N = 4096, r = 32).
    let peaks = Peaks::watch(pid);
    let mut ops = GuestOps::new(InProcess(sim.clone()), login("root", PASSWORD));
    ops.list(data.to_str().unwrap(), None)
        .await
        .expect("a first guest operation");
    fig.peak_login = peaks.finish();

    let peaks = Peaks::watch(pid);
    let vix_file = data.join("vix.bin");
    let started = Instant::now();
    let sent = ops
        .upload(
            &mut Pattern::new(vix_size),
            vix_file.to_str().unwrap(),
            UploadAttributes::default(),
            true,
            &mut Quiet,
        )
        .await
        .expect("upload over VIX op 84");
    fig.vix_up = mbps(sent, started.elapsed().as_secs_f64());
    let mut sink = Counter(0);
    let started = Instant::now();
    let got = ops
        .download(vix_file.to_str().unwrap(), &mut sink, &mut Quiet)
        .await
        .expect("download over VIX op 84");
    fig.vix_down = mbps(got.bytes, started.elapsed().as_secs_f64());
    assert_eq!((got.bytes, sink.0), (vix_size, vix_size));
    let _ = std::fs::remove_file(&vix_file);
    fig.peak_vix = peaks.finish();
    fig
}

/// root with the fixtures' yescrypt hash, in passwd/group/shadow files of our own.
fn account_files(dir: &Path) -> PathBuf {
    let shadow = std::fs::read_to_string(FIXTURE_SHADOW).unwrap();
    let hash = shadow
        .lines()
        .find_map(|l| l.strip_prefix("alice:"))
        .and_then(|rest| rest.split(':').next())
        .unwrap()
        .to_string();
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\n").unwrap();
    std::fs::write(
        etc.join("shadow"),
        format!("root:{hash}:19000:0:99999:7:::\n"),
    )
    .unwrap();
    std::fs::write(etc.join("shells"), "/bin/sh\n").unwrap();
    etc
}

fn print_row(what: &str, ours: f64, theirs: Option<f64>, reference: f64, unit: &str) {
    let theirs = theirs.map_or_else(|| "-".to_string(), |t| format!("{t:.1}"));
    println!("{what:<44} {ours:>10.1} {theirs:>10} {reference:>12.1} {unit}");
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: the guest file benchmark needs root (it logs in as root)");
        return;
    }
    let f_size = env_mib("TOOLBOX_BENCH_MB", 1024);
    let vmtoolsd_vix_size = env_mib("TOOLBOX_BENCH_VMTOOLSD_VIX_MB", 16);
    // One thread for the simulator and the transfers driving it, as the VMX's one vCPU thread
    // serves a guest's RPCs: a request and its reply cross no thread of ours.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let work = scratch("guestfiles");
        // Gigabyte files in memory-backed /dev/shm: gone even when a step fails.
        let _cleanup = RemoveOnDrop(work.clone());
        let etc = account_files(&work);

        // Ours.
        let ours_dir = work.join("ours");
        std::fs::create_dir_all(ours_dir.join("data")).unwrap();
        let sim = Sim::start(&ours_dir.join("vmx"), true).await.unwrap();
        let e = etc.display();
        let cfg = ours_dir.join("toolbox.toml");
        std::fs::write(
            &cfg,
            format!(
                "log_level = \"warn\"\n[power]\nmethod = \"none\"\nscripts_dir = \"/nonexistent\"\n\
                 [guestinfo]\ndisk_info = false\n\
                 [auth]\nbackend = \"shadow\"\npasswd_file = \"{e}/passwd\"\n\
                 group_file = \"{e}/group\"\nshadow_file = \"{e}/shadow\"\nshells_file = \"{e}/shells\"\n"
            ),
        )
        .unwrap();
        // Another build of the agent (the static one, a profiling build) when named.
        let bin = std::env::var("TOOLBOX_BENCH_AGENT").unwrap_or_else(|_| BIN.to_string());
        let agent = spawn_owned(
            Command::new(&bin)
                .args(["run", "-c"])
                .arg(&cfg)
                .arg("--transport")
                .arg(format!("unix:{}", ours_dir.join("vmx").display()))
                .env_remove("TOOLBOX_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_tools(&sim, "toolbox").await;
        let ours = measure(&sim, agent.0.id(), &ours_dir.join("data"), f_size, f_size).await;
        drop(agent);
        drop(sim);

        // vmtoolsd, when the script provides it.
        let theirs = match std::env::var("VMTOOLSD_CMD") {
            Ok(cmd) if !cmd.is_empty() => {
                let dir = work.join("vmtoolsd");
                std::fs::create_dir_all(dir.join("data")).unwrap();
                let vmx = dir.join("vmx");
                let sim = Sim::start(&vmx, true).await.unwrap();
                let child = spawn_owned(
                    Command::new(&cmd)
                        .arg(&etc)
                        .arg(&vmx)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(std::fs::File::create(dir.join("vmtoolsd.log")).unwrap()),
                );
                wait_tools(&sim, "vmtoolsd").await;
                // The wrapper execs vmtoolsd in the same process, so its pid is the agent's.
                let fig = measure(
                    &sim,
                    child.0.id(),
                    &dir.join("data"),
                    f_size,
                    vmtoolsd_vix_size,
                )
                .await;
                drop(child);
                Some(fig)
            }
            _ => None,
        };

        println!(
            "guest file transfers through unix:DIR, {} requests ({} MiB over f, {} MiB over op 84; vmtoolsd op 84: {})",
            TRANSFER_CHUNK,
            f_size / MIB,
            f_size / MIB,
            theirs.map_or("-".into(), |t| format!("{} MiB", t.vix_mib))
        );
        println!(
            "{:<44} {:>10} {:>10} {:>12}",
            "", "toolbox", "vmtoolsd", "plain (same run)"
        );
        let t = theirs;
        print_row("HGFS write over TCLO f (pwrite)", ours.f_write, t.map(|t| t.f_write), ours.plain_write, "MB/s");
        print_row("HGFS read over TCLO f (pread)", ours.f_read, t.map(|t| t.f_read), ours.plain_read, "MB/s");
        print_row("upload over VIX op 84 (pwrite)", ours.vix_up, t.map(|t| t.vix_up), ours.plain_write, "MB/s");
        print_row("download over VIX op 84 (pread)", ours.vix_down, t.map(|t| t.vix_down), ours.plain_read, "MB/s");
        if let Some(t) = theirs {
            println!(
                "{:<44} {:>10.1} {:>10.1} {:>12}",
                "plain pwrite / pread in vmtoolsd's turn", t.plain_write, t.plain_read, "MB/s"
            );
            println!(
                "ratios toolbox/vmtoolsd: f write {:.1}x, f read {:.1}x, op 84 up {:.0}x, op 84 down {:.0}x",
                ours.f_write / t.f_write,
                ours.f_read / t.f_read,
                ours.vix_up / t.vix_up,
                ours.vix_down / t.vix_down
            );
        } else {
            println!("vmtoolsd: not measured (scripts/bench-vmtoolsd.sh runs it beside ours)");
        }
        let mb = |kib: u64| kib as f64 / 1024.0;
        let peaks = |label: &str, pick: fn(&Figures) -> (u64, u64)| {
            let (agent, child) = pick(&ours);
            let theirs = theirs.map_or(String::new(), |t| {
                format!("; vmtoolsd {:.1} MB", mb(pick(&t).0))
            });
            println!(
                "peak RSS {label:<34} toolbox {:.1} MB, its largest child {:.1} MB{theirs}",
                mb(agent),
                mb(child)
            );
        };
        peaks("during the transfers over f", |f| f.peak_f);
        peaks("during the transfers over op 84", |f| f.peak_vix);
        peaks("at the first login (yescrypt)", |f| f.peak_login);
        println!("(aim: < 16 MB during a 1 GiB transfer)");
    });
}
