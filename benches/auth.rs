//! Authentication and helper figures (a benchmark, not a test): `cargo bench --bench auth`.
//!
//! What one login costs with the `shadow` backend (yescrypt and sha512-crypt, uncached), what a
//! remembered login costs, and a helper round trip; each beside a reference measured in the
//! same run: libxcrypt's yescrypt (through mkpasswd, its process start subtracted), the four
//! stat(2) calls a cached login makes, and a bare socketpair round trip between two threads.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use toolbox::auth::{
    AccountFiles, AuthSettings, Authenticator, BackendKind, CredentialType, Credentials, RateLimits,
};
use toolbox::guestops::{HelperPool, PoolConfig, ServiceId};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth");

fn per_op(n: u32, mut f: impl FnMut()) -> Duration {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

fn show(d: Duration) -> String {
    if d >= Duration::from_millis(1) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} µs", d.as_secs_f64() * 1e6)
    }
}

fn spawn_cost(program: &str, args: &[&str], stdin: &[u8], n: u32) -> Option<Duration> {
    let mut ok = true;
    let d = per_op(n, || {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(mut c) => {
                if let Some(mut i) = c.stdin.take() {
                    let _ = i.write_all(stdin);
                }
                ok &= c.wait().map(|s| s.success()).unwrap_or(false);
            }
            Err(_) => ok = false,
        }
    });
    ok.then_some(d)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    for f in ["passwd", "group", "shadow", "shells"] {
        std::fs::copy(Path::new(FIXTURES).join(f), dir.path().join("etc").join(f)).unwrap();
    }
    let files = AccountFiles::under(dir.path());
    let settings = |ttl| AuthSettings {
        backend: BackendKind::Shadow,
        files: files.clone(),
        cache_ttl: ttl,
        limits: RateLimits::unlimited(),
        ..AuthSettings::default()
    };
    let uncached = Authenticator::new(settings(Duration::ZERO)).unwrap();
    let cached = Authenticator::new(settings(Duration::from_secs(60))).unwrap();
    let login = |a: &Authenticator, u: &str, p: &str| {
        a.authenticate(CredentialType::NAME_PASSWORD, &Credentials::new(u, p))
            .unwrap();
    };

    let yes = per_op(20, || login(&uncached, "alice", "alice-pw-1"));
    let true_spawn = spawn_cost("/bin/true", &[], b"", 50);
    let xcrypt = spawn_cost("mkpasswd", &["-s", "-m", "yescrypt"], b"alice-pw-1", 20);
    let reference = match (xcrypt, true_spawn) {
        (Some(x), Some(t)) => format!(
            "libxcrypt yescrypt via mkpasswd {} (process start {} included)",
            show(x),
            show(t)
        ),
        _ => "libxcrypt reference unavailable (no mkpasswd)".into(),
    };
    println!(
        "shadow login, yescrypt $y$j9T, uncached: {:>10}   | {reference}",
        show(yes)
    );
    let sha = per_op(20, || login(&uncached, "bob", "bob-pw-2"));
    let xsha = spawn_cost("mkpasswd", &["-s", "-m", "sha512crypt"], b"bob-pw-2", 20);
    println!(
        "shadow login, sha512-crypt, uncached:    {:>10}   | {}",
        show(sha),
        xsha.map(|d| format!("libxcrypt sha512-crypt via mkpasswd {}", show(d)))
            .unwrap_or_else(|| "reference unavailable".into())
    );
    login(&cached, "alice", "alice-pw-1");
    let hit = per_op(100_000, || login(&cached, "alice", "alice-pw-1"));
    let stats = per_op(100_000, || {
        for p in [&files.passwd, &files.group, &files.shadow, &files.shells] {
            let _ = std::fs::metadata(p);
        }
    });
    println!(
        "cached login (yescrypt account):         {:>10}   | 4× stat(2) of the account files {}",
        show(hit),
        show(stats)
    );
    println!(
        "  → a cached login is {:.0}× cheaper than a yescrypt check",
        yes.as_secs_f64() / hit.as_secs_f64()
    );

    let pool = HelperPool::new(PoolConfig {
        program: env!("CARGO_BIN_EXE_toolbox").into(),
        ..PoolConfig::default()
    });
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid).unwrap().unwrap();
    let me = toolbox::auth::UserIdentity {
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
    };
    let t = Instant::now();
    pool.call(&me, ServiceId::IDENTITY, b"").unwrap();
    let first = t.elapsed();
    let rt = per_op(20_000, || {
        pool.call(&me, ServiceId::IDENTITY, b"").unwrap();
    });
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok(n) = b.read(&mut buf) {
            if n == 0 || b.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 64];
    let bare = per_op(20_000, || {
        a.write_all(b"\0\0\0\x01\x03").unwrap();
        let _ = a.read(&mut buf).unwrap();
    });
    drop(a);
    let _ = echo.join();
    println!(
        "helper round trip (identity report):     {:>10}   | bare socketpair round trip {}",
        show(rt),
        show(bare)
    );
    println!(
        "helper start (exec, drop, setup, first reply): {}",
        show(first)
    );
}
