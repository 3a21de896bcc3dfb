//! Helpers for end-to-end tests: temp dirs, the real `toolbox` binary as a child, CPU time.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use toolbox::sim::Sim;

pub const BIN: &str = env!("CARGO_BIN_EXE_toolbox");

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        // Unique per call too: tests of one binary share a process under `cargo test`.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d =
            std::env::temp_dir().join(format!("toolbox-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.write(name, &format!("#!/bin/sh\n{body}\n"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent, killed on drop.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    /// `toolbox run -c CONFIG --transport unix:VMX`, optionally prefixed (e.g. `ip netns exec`).
    pub fn start(prefix: &[&str], dir: &TempDir, vmx: &Path, config: &str) -> Agent {
        let cfg = dir.write("toolbox.toml", config);
        let log = dir.0.join("agent.log");
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.push(BIN.into());
        argv.extend([
            "run".into(),
            "-c".into(),
            cfg.display().to_string(),
            "--transport".into(),
            format!("unix:{}", vmx.display()),
        ]);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("TOOLBOX_LOG", "debug")
            .env_remove("TOOLBOX_TRANSPORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// user + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait, up to `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// A simulator in DIR/vmx with the VMX's greeting.
pub async fn sim(dir: &TempDir) -> Sim {
    Sim::start(&dir.0.join("vmx"), true).await.unwrap()
}

/// Power does nothing and no script of this machine runs.
pub const QUIET_CONFIG: &str = "[power]\nmethod = \"none\"\nscripts_dir = \"/nonexistent\"\n";

pub async fn tools_running(sim: &Sim) -> toolbox::sim::GuestReport {
    sim.wait_for(Duration::from_secs(10), |r| {
        r.tools_version.is_some()
            && r.capabilities.len() >= 2
            && r.nic_info_updates > 0
            && r.uptime_centis.is_some()
            && r.os_short.is_some()
    })
    .await
    .unwrap_or_else(|r| panic!("the agent never reported tools running: {r:?}"))
}

/// True when running as root; otherwise prints a loud SKIPPED line naming `test` (on stdout and
/// stderr, so it shows however the runner captures output) and the test returns.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    println!("SKIPPED: {test} needs root");
    eprintln!("SKIPPED: {test} needs root");
    false
}

/// Polls `cond` (a file the agent's children write, say) until it holds; panics naming `what`
/// after `timeout`. The sleep only paces the polling.
pub async fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The lines of a file, none while it does not exist.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Sends a power operation until the agent accepts it: halt and reboot keep the in-progress
/// flag until their action has run, so a refusal only means the last one is not over yet.
/// Returns the accepted reply.
pub async fn send_power_op(sim: &Sim, op: &str) -> Vec<u8> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = sim
            .tclo(op.as_bytes(), Duration::from_secs(5))
            .await
            .unwrap();
        if reply != b"ERROR State change already in progress" {
            return reply;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{op} still refused as in progress after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A uid no account of this machine has, for the test's unprivileged user.
pub fn free_uid() -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let taken: Vec<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    (41_000 + std::process::id() % 10_000..)
        .find(|u| !taken.contains(u))
        .unwrap()
}

/// The test's accounts: root and `gfuser` (a fresh uid), with the fixture set's
/// sha512-crypt (bob's) and yescrypt (alice's) hashes, so both kinds are checked.
pub struct Accounts {
    pub uid: u32,
    pub config: String,
}

pub fn accounts(dir: &TempDir, extra: &str) -> Accounts {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth");
    let shadow = std::fs::read_to_string(format!("{fixtures}/shadow")).unwrap();
    let hash = |user: &str| {
        shadow
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{user}:")))
            .and_then(|rest| rest.split(':').next())
            .unwrap()
            .to_string()
    };
    let (sha512, yescrypt) = (hash("bob"), hash("alice"));
    assert!(sha512.starts_with("$6$") && yescrypt.starts_with("$y$"));
    let uid = free_uid();
    let home = dir.0.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
    let etc = dir.0.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/sh\ngfuser:x:{uid}:{uid}:test:{}:/bin/sh\n",
            home.display()
        ),
    )
    .unwrap();
    std::fs::write(etc.join("group"), format!("root:x:0:\ngfuser:x:{uid}:\n")).unwrap();
    std::fs::write(
        etc.join("shadow"),
        format!("root:{sha512}:19000:0:99999:7:::\ngfuser:{yescrypt}:19000:0:99999:7:::\n"),
    )
    .unwrap();
    std::fs::write(etc.join("shells"), "/bin/sh\n").unwrap();
    let e = etc.display();
    Accounts {
        uid,
        config: format!(
            "{QUIET_CONFIG}[auth]\nbackend = \"shadow\"\npasswd_file = \"{e}/passwd\"\n\
             group_file = \"{e}/group\"\nshadow_file = \"{e}/shadow\"\nshells_file = \"{e}/shells\"\n\
             {extra}"
        ),
    }
}

/// This process's own account, as guest operations would run as it.
pub fn own_identity() -> toolbox::auth::UserIdentity {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid).unwrap().unwrap();
    toolbox::auth::UserIdentity {
        name: user.name,
        uid: uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect(),
        home: user.dir,
        shell: user.shell,
    }
}

/// The stdout of a `vmx-sim` command that must succeed (its output shown when it did not).
pub fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Exit status 1 and `message` on stderr, as govc prints it.
pub fn fails_with(o: &std::process::Output, message: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end(), format!("vmx-sim: {message}"));
}
