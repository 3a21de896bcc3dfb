//! Authentication and impersonation end to end: the `shadow` and `none` backends against the
//! account files in tests/fixtures/auth (made by its make.sh), the login cache and the rate
//! limits, then — as root — real helpers for a user this test creates (and removes again), and
//! the `pam` backend through the system's pam_unix.

mod util;

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use toolbox::auth::{
    AccountFiles, AuthError, AuthSettings, Authenticator, BackendKind, Checker, CredentialType,
    Credentials, DenyReason, RateLimits, UserIdentity,
};
use toolbox::guestops::{GuestOpsError, HelperPool, HelperRegistry, PoolConfig, ServiceId};
use util::own_identity;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth");

/// The fixture files copied into a fresh directory, so a test may change them.
struct Accounts {
    dir: tempfile::TempDir,
}

impl Accounts {
    fn new() -> Accounts {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        for f in ["passwd", "group", "shadow", "shells"] {
            std::fs::copy(Path::new(FIXTURES).join(f), dir.path().join("etc").join(f)).unwrap();
        }
        Accounts { dir }
    }

    fn files(&self) -> AccountFiles {
        AccountFiles::under(self.dir.path())
    }

    fn authenticator(&self, backend: BackendKind, limits: RateLimits) -> Authenticator {
        self.authenticator_checking(backend, limits, Checker::InProcess)
    }

    fn authenticator_checking(
        &self,
        backend: BackendKind,
        limits: RateLimits,
        checker: Checker,
    ) -> Authenticator {
        Authenticator::new(AuthSettings {
            backend,
            files: self.files(),
            limits,
            checker,
            ..AuthSettings::default()
        })
        .unwrap()
    }

    /// Replaces `user`'s hash in shadow the way chpasswd does: a new file renamed into place.
    fn set_hash(&self, user: &str, hash: &str) {
        let path = self.files().shadow;
        let text = std::fs::read_to_string(&path).unwrap();
        let out: String = text
            .lines()
            .map(|l| {
                let mut f: Vec<&str> = l.split(':').collect();
                if f[0] == user {
                    f[1] = hash;
                }
                f.join(":") + "\n"
            })
            .collect();
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, out).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
}

/// The real binary's password check process, as the agent runs it.
fn child_checker() -> Checker {
    Checker::Child {
        program: env!("CARGO_BIN_EXE_toolbox").into(),
        args: vec![toolbox::auth::CHECK_SUBCOMMAND.into()],
    }
}

/// Both places a check can run.
fn checkers() -> [Checker; 2] {
    [Checker::InProcess, child_checker()]
}

fn login(a: &Authenticator, user: &str, password: &str) -> Result<UserIdentity, AuthError> {
    a.authenticate(
        CredentialType::NAME_PASSWORD,
        &Credentials::new(user, password),
    )
}

fn reason(r: Result<UserIdentity, AuthError>) -> DenyReason {
    match r {
        Err(AuthError::Denied { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn shadow_backend_verifies_yescrypt_sha512_sha256_and_old_style_hashes() {
    for checker in checkers() {
        shadow_backend_verifies_with(checker);
    }
}

fn shadow_backend_verifies_with(checker: Checker) {
    let acc = Accounts::new();
    let auth = acc.authenticator_checking(BackendKind::Shadow, RateLimits::unlimited(), checker);
    let alice = login(&auth, "alice", "alice-pw-1").unwrap();
    assert_eq!(
        alice,
        UserIdentity {
            name: "alice".into(),
            uid: 2001,
            gid: 2001,
            groups: vec![2001, 10, 30],
            home: "/home/alice".into(),
            shell: "/bin/bash".into(),
        }
    );
    assert_eq!(
        login(&auth, "bob", "bob-pw-2").unwrap().groups,
        vec![2002, 10]
    );
    assert_eq!(login(&auth, "carol", "carol-pw-3").unwrap().uid, 2003);
    assert_eq!(login(&auth, "oldstyle", "oldstyle-pw").unwrap().uid, 2012);
}

#[test]
fn shadow_backend_refuses_what_must_not_log_in() {
    for checker in checkers() {
        shadow_backend_refuses_with(checker);
    }
}

fn shadow_backend_refuses_with(checker: Checker) {
    let acc = Accounts::new();
    let auth = acc.authenticator_checking(BackendKind::Shadow, RateLimits::unlimited(), checker);
    let cases: &[(&str, &str, DenyReason)] = &[
        ("alice", "alice-pw-2", DenyReason::WrongPassword),
        ("alice", "", DenyReason::WrongPassword),
        ("bob", "BOB-PW-2", DenyReason::WrongPassword),
        ("carol", "carol-pw-", DenyReason::WrongPassword),
        ("nobody-here", "x", DenyReason::UnknownUser),
        ("locked", "locked-pw", DenyReason::Locked),
        ("starred", "", DenyReason::Locked),
        ("expired", "expired-pw", DenyReason::AccountExpired),
        ("pwexpired", "pwexpired-pw", DenyReason::PasswordExpired),
        ("mustchange", "mustchange-pw", DenyReason::PasswordExpired),
        (
            "nologin",
            "nologin-pw",
            DenyReason::ShellNotAllowed("/usr/sbin/nologin".into()),
        ),
        (
            "md5user",
            "md5-pw",
            DenyReason::UnsupportedHash("$1$".into()),
        ),
        ("emptypw", "", DenyReason::NoPassword),
        ("root", "", DenyReason::Locked),
        ("al:ice", "x", DenyReason::MalformedName),
    ];
    for (user, password, want) in cases {
        let got = reason(login(&auth, user, password));
        assert_eq!(&got, want, "{user}");
    }
    // An expired account says so only after the right password: a wrong one is just wrong.
    assert_eq!(
        reason(login(&auth, "expired", "guess")),
        DenyReason::WrongPassword
    );
}

#[test]
fn unknown_and_legacy_credential_types_are_refused_even_with_the_right_password() {
    let acc = Accounts::new();
    for backend in [BackendKind::Shadow, BackendKind::None] {
        let auth = acc.authenticator(backend, RateLimits::unlimited());
        for t in (0..=13u32).chain([0x7fff_ffff, u32::MAX]) {
            let kind = CredentialType(t);
            let got = auth.authenticate(kind, &Credentials::new("alice", "alice-pw-1"));
            if kind.is_accepted() {
                assert!(got.is_ok(), "{kind}");
            } else {
                assert!(
                    matches!(got, Err(AuthError::UnsupportedCredentialType(k)) if k == kind),
                    "{kind}: {got:?}"
                );
            }
        }
        assert_eq!(
            auth.backend_checks(),
            if backend == BackendKind::None { 0 } else { 1 }
        );
    }
}

#[test]
fn none_backend_takes_the_named_user_without_a_password_but_not_unknown_ones() {
    let acc = Accounts::new();
    let auth = acc.authenticator(BackendKind::None, RateLimits::default());
    assert_eq!(login(&auth, "bob", "anything").unwrap().uid, 2002);
    assert_eq!(reason(login(&auth, "ghost", "x")), DenyReason::UnknownUser);
}

#[test]
fn cache_answers_repeats_and_never_a_changed_or_wrong_password() {
    let acc = Accounts::new();
    let auth = acc.authenticator(BackendKind::Shadow, RateLimits::unlimited());
    login(&auth, "alice", "alice-pw-1").unwrap();
    login(&auth, "alice", "alice-pw-1").unwrap();
    login(&auth, "alice", "alice-pw-1").unwrap();
    assert_eq!(auth.backend_checks(), 1, "repeats come from the cache");

    // A wrong password is checked for real, and drops the entry.
    assert_eq!(
        reason(login(&auth, "alice", "nope")),
        DenyReason::WrongPassword
    );
    login(&auth, "alice", "alice-pw-1").unwrap();
    assert_eq!(auth.backend_checks(), 3);

    // The password changes: the old one must fail at once, the new one work.
    let new_hash = fixture_hash_of("bob"); // bob's hash: password "bob-pw-2"
    acc.set_hash("alice", &new_hash);
    assert_eq!(
        reason(login(&auth, "alice", "alice-pw-1")),
        DenyReason::WrongPassword
    );
    login(&auth, "alice", "bob-pw-2").unwrap();

    // An in-place edit (same inode) is noticed too: lock the account.
    login(&auth, "alice", "bob-pw-2").unwrap();
    let checks = auth.backend_checks();
    let shadow = acc.files().shadow;
    let ino = std::fs::metadata(&shadow).unwrap().ino();
    let text = std::fs::read_to_string(&shadow)
        .unwrap()
        .replace(&format!("alice:{new_hash}"), &format!("alice:!{new_hash}"));
    std::fs::write(&shadow, text).unwrap();
    assert_eq!(std::fs::metadata(&shadow).unwrap().ino(), ino);
    assert_eq!(
        reason(login(&auth, "alice", "bob-pw-2")),
        DenyReason::Locked
    );
    assert_eq!(auth.backend_checks(), checks + 1);
}

#[test]
fn cache_expires_and_can_be_turned_off() {
    let acc = Accounts::new();
    let auth = Authenticator::new(AuthSettings {
        backend: BackendKind::Shadow,
        files: acc.files(),
        cache_ttl: Duration::from_millis(1500),
        limits: RateLimits::unlimited(),
        ..AuthSettings::default()
    })
    .unwrap();
    login(&auth, "bob", "bob-pw-2").unwrap();
    login(&auth, "bob", "bob-pw-2").unwrap();
    assert_eq!(auth.backend_checks(), 1);
    std::thread::sleep(Duration::from_millis(1600));
    login(&auth, "bob", "bob-pw-2").unwrap();
    assert_eq!(auth.backend_checks(), 2);

    let off = Authenticator::new(AuthSettings {
        backend: BackendKind::Shadow,
        files: acc.files(),
        cache_ttl: Duration::ZERO,
        limits: RateLimits::unlimited(),
        ..AuthSettings::default()
    })
    .unwrap();
    login(&off, "bob", "bob-pw-2").unwrap();
    login(&off, "bob", "bob-pw-2").unwrap();
    assert_eq!(off.backend_checks(), 2);
}

#[test]
fn concurrent_logins_of_one_user_share_one_check() {
    let acc = Accounts::new();
    let auth = Arc::new(acc.authenticator(BackendKind::Shadow, RateLimits::unlimited()));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let auth = auth.clone();
            std::thread::spawn(move || login(&auth, "alice", "alice-pw-1").map(|id| id.uid))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), 2001);
    }
    assert_eq!(auth.backend_checks(), 1);
}

#[test]
fn failed_logins_are_rate_limited_per_user_and_in_total() {
    let acc = Accounts::new();
    let limits = RateLimits {
        user_backoff: Duration::from_millis(1500),
        user_backoff_max: Duration::from_secs(5),
        global_burst: 3,
        global_refill: Duration::from_secs(60),
        max_tracked_users: 100,
    };
    let auth = acc.authenticator(BackendKind::Shadow, limits);
    assert_eq!(
        reason(login(&auth, "bob", "wrong")),
        DenyReason::WrongPassword
    );
    // Right after a failure even the right password is not checked.
    let limited = login(&auth, "bob", "bob-pw-2").unwrap_err();
    assert!(
        matches!(
            limited,
            AuthError::RateLimited {
                scope: "for this user",
                ..
            }
        ),
        "{limited}"
    );
    assert!(limited.is_invalid_login());
    // Another user is not held up by bob's failure.
    login(&auth, "carol", "carol-pw-3").unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    login(&auth, "bob", "bob-pw-2").unwrap();

    // Two more failures over different names spend the global burst of three.
    assert_eq!(reason(login(&auth, "ghost1", "x")), DenyReason::UnknownUser);
    assert_eq!(reason(login(&auth, "ghost2", "x")), DenyReason::UnknownUser);
    let limited = login(&auth, "alice", "alice-pw-1").unwrap_err();
    assert!(
        matches!(
            limited,
            AuthError::RateLimited {
                scope: "in total",
                ..
            }
        ),
        "{limited}"
    );
    // Logins already remembered still work: bob's is cached.
    login(&auth, "bob", "bob-pw-2").unwrap();
}

/// The hash a fixture user has in tests/fixtures/auth/shadow.
fn fixture_hash_of(user: &str) -> String {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join("shadow")).unwrap();
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == user)
        .map(|f| f[1].to_string())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Helpers: this test binary plays the helper program. The pool starts it again with
// TBX_AUTH_TEST_HELPER=1 and `--exact helper_process_entry`, and that test then serves the
// registry below instead of returning.

const HELPER_ENV: &str = "TBX_AUTH_TEST_HELPER";
const PROBE: ServiceId = ServiceId(0x40);

/// Probe requests: `C path` creates a file, `R path` reads one, `I` reports the process's
/// credentials, working directory, umask and environment, `P` panics.
fn probe(request: &[u8]) -> Vec<u8> {
    let (op, arg) = request.split_first().unwrap_or((&b'?', &[]));
    let arg = std::str::from_utf8(arg).unwrap_or("");
    let outcome = |r: std::io::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
    };
    match op {
        b'C' => outcome(std::fs::write(arg, b"made by the helper\n")),
        b'R' => outcome(std::fs::read(arg).map(drop)),
        b'I' => {
            let u = nix::unistd::getresuid().unwrap();
            let g = nix::unistd::getresgid().unwrap();
            let groups: Vec<String> = nix::unistd::getgroups()
                .unwrap()
                .iter()
                .map(|g| g.as_raw().to_string())
                .collect();
            let mask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
            nix::sys::stat::umask(mask);
            format!(
                "uids={},{},{} gids={},{},{} groups={} cwd={} umask={:o} home={} user={} logname={} shell={} path={} pid={}",
                u.real, u.effective, u.saved, g.real, g.effective, g.saved,
                groups.join(","),
                std::env::current_dir().unwrap().display(),
                mask.bits(),
                std::env::var("HOME").unwrap_or_default(),
                std::env::var("USER").unwrap_or_default(),
                std::env::var("LOGNAME").unwrap_or_default(),
                std::env::var("SHELL").unwrap_or_default(),
                std::env::var("PATH").unwrap_or_default(),
                std::process::id(),
            )
        }
        b'P' => panic!("probe asked to panic"),
        _ => "unknown probe".to_string(),
    }
    .into_bytes()
}

#[test]
fn helper_process_entry() {
    if std::env::var_os(HELPER_ENV).is_none() {
        // Run as a plain test: the registry the helpers serve has the probe.
        let registry = HelperRegistry::new().with_fn(PROBE, probe);
        assert!(format!("{registry:?}").contains("0x40"));
        return;
    }
    let registry = HelperRegistry::new().with_fn(PROBE, probe);
    let code = toolbox::guestops::helper::serve(&registry);
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

fn pool_config() -> PoolConfig {
    PoolConfig {
        program: std::env::current_exe().unwrap(),
        args: [
            "--exact",
            "helper_process_entry",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ]
        .into_iter()
        .map(OsString::from)
        .collect(),
        extra_env: vec![(HELPER_ENV.into(), "1".into())],
        ..PoolConfig::default()
    }
}

fn ask(pool: &HelperPool, user: &UserIdentity, op: u8, arg: &str) -> String {
    let mut req = vec![op];
    req.extend_from_slice(arg.as_bytes());
    String::from_utf8(pool.call(user, PROBE, &req).unwrap()).unwrap()
}

fn field<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{name} missing in {report}"))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn helper_for_the_agents_own_user_serves_survives_crashes_and_is_reaped() {
    let pool = HelperPool::new(PoolConfig {
        idle_timeout: Duration::from_millis(300),
        ..pool_config()
    });
    let me = own_identity();
    let report = ask(&pool, &me, b'I', "");
    assert_eq!(field(&report, "uids"), format!("{0},{0},{0}", me.uid));
    assert_eq!(field(&report, "umask"), "22");
    assert_eq!(field(&report, "home"), me.home.to_str().unwrap());
    let pid: u32 = field(&report, "pid").parse().unwrap();
    assert_eq!(pool.helper_pid(me.uid), Some(pid));
    // Requests are answered by the same process until it dies.
    assert_eq!(field(&ask(&pool, &me, b'I', ""), "pid"), pid.to_string());

    // A handler panic kills that helper only; the next request gets a new one.
    let crash = pool.call(&me, PROBE, b"P").unwrap_err();
    assert!(matches!(crash, GuestOpsError::Helper { .. }), "{crash}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the dead helper is reaped"
    );
    let again: u32 = field(&ask(&pool, &me, b'I', ""), "pid").parse().unwrap();
    assert_ne!(again, pid);

    // Unknown services are an error, not a crash.
    let e = pool.call(&me, ServiceId(0x77), b"").unwrap_err();
    assert!(
        matches!(e, GuestOpsError::UnknownService(ServiceId(0x77))),
        "{e}"
    );
    assert_eq!(pool.helper_pid(me.uid), Some(again));

    // Idle helpers are stopped by the reaper.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pool.helpers().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pool.helpers().is_empty());
    assert!(!Path::new(&format!("/proc/{again}")).exists());
}

#[test]
fn a_bad_frame_kills_only_that_helper() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let config = pool_config();
    let me = own_identity();
    let pool = HelperPool::new(pool_config());
    let pooled = ask(&pool, &me, b'I', "");

    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let mut child = Command::new(&config.program)
        .args(&config.args)
        .env(HELPER_ENV, "1")
        .stdin(std::os::fd::OwnedFd::from(theirs))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A length far above the limit.
    ours.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let mut rest = Vec::new();
    ours.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing answered to a bad frame");
    // The pool's helper is untouched.
    assert_eq!(
        field(&ask(&pool, &me, b'I', ""), "pid"),
        field(&pooled, "pid")
    );
}

#[test]
fn a_non_root_agent_refuses_other_users() {
    if is_root() {
        // Root may become anyone; the refusal is what an unprivileged agent must do. Check it
        // in a copy of this test run as a user the test creates.
        let user = TestUser::create(false);
        let exe = std::env::current_exe().unwrap();
        let status = Command::new("setpriv")
            .args([
                "--reuid",
                &user.uid.to_string(),
                "--regid",
                &user.gid.to_string(),
            ])
            .arg("--clear-groups")
            .arg(&exe)
            .args([
                "--exact",
                "a_non_root_agent_refuses_other_users",
                "-q",
                "--test-threads=1",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "the unprivileged run failed");
        return;
    }
    let pool = HelperPool::new(pool_config());
    let root = UserIdentity {
        name: "root".into(),
        uid: 0,
        gid: 0,
        groups: vec![0],
        home: "/root".into(),
        shell: "/bin/sh".into(),
    };
    let e = pool.call(&root, PROBE, b"I").unwrap_err();
    assert!(
        matches!(e, GuestOpsError::NotPermitted { uid: 0, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("need the agent to run as root"),
        "{e}"
    );
    assert!(pool.helpers().is_empty());
}

// ---------------------------------------------------------------------------------------------
// As root: a real unprivileged user.

/// A user (and a supplementary group) made for one test with useradd, removed with
/// `userdel -r` when dropped, whether the test passed or not.
struct TestUser {
    name: String,
    group: String,
    uid: u32,
    gid: u32,
    extra_gid: u32,
    home: PathBuf,
    password: String,
    pam_file: Option<PathBuf>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestUser {
    fn create(with_pam_file: bool) -> TestUser {
        let suffix = format!("{:08x}", getrandom::u32().unwrap());
        let name = format!("tbx-test-{suffix}");
        let group = format!("tbx-grp-{suffix}");
        run(Command::new("groupadd").arg(&group));
        let mut user = TestUser {
            name: name.clone(),
            group: group.clone(),
            uid: 0,
            gid: 0,
            extra_gid: 0,
            home: PathBuf::from(format!("/home/{name}")),
            password: format!("pw-{suffix}-Ok"),
            pam_file: None,
        };
        // From here on Drop cleans up, whatever fails next.
        run(Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-G", &group])
            .arg(&name));
        let entry = nix::unistd::User::from_name(&name).unwrap().unwrap();
        user.uid = entry.uid.as_raw();
        user.gid = entry.gid.as_raw();
        user.extra_gid = nix::unistd::Group::from_name(&group)
            .unwrap()
            .unwrap()
            .gid
            .as_raw();
        user.set_password(&user.password.clone());
        if with_pam_file {
            let path = PathBuf::from(format!("/etc/pam.d/tbx-test-{suffix}"));
            std::fs::write(&path, "@include common-auth\n@include common-account\n").unwrap();
            user.pam_file = Some(path);
        }
        user
    }

    fn set_password(&mut self, password: &str) {
        use std::io::Write;
        let mut child = Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{}:{password}", self.name).unwrap();
        assert!(child.wait().unwrap().success());
        self.password = password.to_string();
    }

    #[cfg(feature = "pam")]
    fn pam_service(&self) -> String {
        self.pam_file
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Some(p) = &self.pam_file {
            let _ = std::fs::remove_file(p);
        }
        let _ = Command::new("userdel").arg("-r").arg(&self.name).output();
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: needs root (creates a user with useradd)");
            return;
        }
    };
}

#[test]
fn helper_becomes_the_user_files_are_theirs_and_root_things_stay_out_of_reach() {
    require_root!();
    let mut user = TestUser::create(false);
    // The real /etc/shadow, with the hash chpasswd just wrote (Debian: yescrypt).
    let auth = Authenticator::new(AuthSettings {
        backend: BackendKind::Shadow,
        limits: RateLimits::unlimited(),
        ..AuthSettings::default()
    })
    .unwrap();
    let id = login(&auth, &user.name, &user.password.clone()).unwrap();
    assert_eq!((id.uid, id.gid), (user.uid, user.gid));
    assert!(id.groups.contains(&user.extra_gid));

    let pool = HelperPool::new(pool_config());
    let report = ask(&pool, &id, b'I', "");
    assert_eq!(field(&report, "uids"), format!("{0},{0},{0}", user.uid));
    assert_eq!(field(&report, "gids"), format!("{0},{0},{0}", user.gid));
    let mut groups: Vec<u32> = field(&report, "groups")
        .split(',')
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort_unstable();
    let mut want = vec![user.gid, user.extra_gid];
    want.sort_unstable();
    assert_eq!(groups, want, "supplementary groups are exactly the user's");
    assert_eq!(field(&report, "cwd"), user.home.to_str().unwrap());
    assert_eq!(field(&report, "home"), user.home.to_str().unwrap());
    assert_eq!(field(&report, "user"), user.name);
    assert_eq!(field(&report, "logname"), user.name);
    assert_eq!(field(&report, "shell"), "/bin/sh");
    assert_eq!(field(&report, "umask"), "22");
    assert!(!field(&report, "path").contains("sbin"));

    // What the helper creates is the user's, with umask 022 applied.
    let made = user.home.join("made-by-helper");
    assert_eq!(ask(&pool, &id, b'C', made.to_str().unwrap()), "ok");
    let meta = std::fs::metadata(&made).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid));
    assert_eq!(meta.mode() & 0o777, 0o644);

    // Root's files and directories are out of reach.
    assert_eq!(ask(&pool, &id, b'R', "/etc/shadow"), "err 13");
    assert_eq!(ask(&pool, &id, b'C', "/etc/tbx-should-not-exist"), "err 13");
    assert_eq!(
        ask(&pool, &id, b'C', "/root/tbx-should-not-exist"),
        "err 13"
    );
    assert!(!Path::new("/etc/tbx-should-not-exist").exists());
    // A group-writable directory of the supplementary group is writable: the group is real.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o770),
    )
    .unwrap();
    nix::unistd::chown(
        shared.path(),
        None,
        Some(nix::unistd::Gid::from_raw(user.extra_gid)),
    )
    .unwrap();
    let in_shared = shared.path().join("via-group");
    assert_eq!(ask(&pool, &id, b'C', in_shared.to_str().unwrap()), "ok");
    assert_eq!(std::fs::metadata(&in_shared).unwrap().uid(), user.uid);

    // The password changes: the old one must not log in, even though it was just cached.
    let old = user.password.clone();
    user.set_password("a-new-Pw-42");
    assert_eq!(
        reason(login(&auth, &user.name, &old)),
        DenyReason::WrongPassword
    );
    let id2 = login(&auth, &user.name, "a-new-Pw-42").unwrap();
    assert_eq!(id2, id);

    // A changed identity (removed from the group) gets a new helper without the group.
    let pid = field(&report, "pid").to_string();
    run(Command::new("gpasswd").args(["-d", &user.name, &user.group]));
    let id3 = login(&auth, &user.name, "a-new-Pw-42").unwrap();
    assert!(!id3.groups.contains(&user.extra_gid));
    let report3 = ask(&pool, &id3, b'I', "");
    assert_ne!(field(&report3, "pid"), pid);
    assert!(!field(&report3, "groups")
        .split(',')
        .any(|g| g == user.extra_gid.to_string()));
    drop(pool);
}

#[test]
fn pool_is_bounded_and_evicts_the_least_recently_used_idle_helper() {
    require_root!();
    let a = TestUser::create(false);
    let b = TestUser::create(false);
    let auth = Authenticator::new(AuthSettings {
        backend: BackendKind::None,
        ..AuthSettings::default()
    })
    .unwrap();
    let ida = login(&auth, &a.name, "").unwrap();
    let idb = login(&auth, &b.name, "").unwrap();
    let pool = HelperPool::new(PoolConfig {
        max_helpers: 1,
        ..pool_config()
    });
    assert_eq!(
        field(&ask(&pool, &ida, b'I', ""), "uids").split(',').next(),
        Some(&*a.uid.to_string())
    );
    assert_eq!(pool.helpers(), vec![a.uid]);
    assert_eq!(
        field(&ask(&pool, &idb, b'I', ""), "uids").split(',').next(),
        Some(&*b.uid.to_string())
    );
    assert_eq!(pool.helpers(), vec![b.uid]);
}

#[cfg(feature = "pam")]
#[test]
fn pam_backend_logs_in_through_pam_unix_and_refuses_wrong_locked_and_changed() {
    require_root!();
    let mut user = TestUser::create(true);
    let auth = Authenticator::new(AuthSettings {
        backend: BackendKind::Pam,
        pam_service: user.pam_service(),
        limits: RateLimits::unlimited(),
        ..AuthSettings::default()
    })
    .unwrap();
    let id = login(&auth, &user.name, &user.password.clone()).unwrap();
    assert_eq!(
        (id.uid, id.gid, id.name.as_str()),
        (user.uid, user.gid, user.name.as_str())
    );
    assert!(id.groups.contains(&user.extra_gid));
    assert!(matches!(
        reason(login(&auth, &user.name, "not-the-password")),
        DenyReason::Pam(_)
    ));
    // The same through the agent's password check process.
    let in_child = Authenticator::new(AuthSettings {
        backend: BackendKind::Pam,
        pam_service: user.pam_service(),
        limits: RateLimits::unlimited(),
        checker: child_checker(),
        ..AuthSettings::default()
    })
    .unwrap();
    assert_eq!(
        login(&in_child, &user.name, &user.password.clone())
            .unwrap()
            .uid,
        user.uid
    );
    assert!(matches!(
        reason(login(&in_child, &user.name, "not-the-password")),
        DenyReason::Pam(_)
    ));
    // Changed password: the old one (cached a moment ago) must fail.
    login(&auth, &user.name, &user.password.clone()).unwrap();
    let old = user.password.clone();
    user.set_password("pam-New-pw-7");
    assert!(matches!(
        reason(login(&auth, &user.name, &old)),
        DenyReason::Pam(_)
    ));
    login(&auth, &user.name, "pam-New-pw-7").unwrap();
    // Locked with usermod -L: refused even with the right password.
    run(Command::new("usermod").arg("-L").arg(&user.name));
    assert!(login(&auth, &user.name, "pam-New-pw-7").is_err());
}

#[test]
fn the_password_check_process_answers_one_request_and_refuses_garbage() {
    use std::io::Write;
    let check = |request: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_toolbox"))
            .arg(toolbox::auth::CHECK_SUBCOMMAND)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(request).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), out.stdout)
    };
    let field = |b: &[u8]| [&(b.len() as u32).to_le_bytes()[..], b].concat();
    let hash = fixture_hash_of("bob");
    let request = |password: &[u8]| [&b"H"[..], &field(hash.as_bytes()), &field(password)].concat();
    assert_eq!(check(&request(b"bob-pw-2")), (Some(0), vec![0]));
    // Refused: the reason (4, a wrong password) and no text.
    assert_eq!(check(&request(b"guess")), (Some(0), vec![1, 4, 0, 0, 0, 0]));
    for garbage in [&b""[..], b"Q", b"H\xff\xff\xff\x7f", &request(b"pw")[..9]] {
        let (code, out) = check(garbage);
        assert!(
            code != Some(0) && out.is_empty(),
            "{garbage:?}: {code:?} {out:?}"
        );
    }
}

#[test]
fn the_real_binary_serves_as_helper_through_its_hidden_subcommand() {
    let pool = HelperPool::new(PoolConfig {
        program: env!("CARGO_BIN_EXE_toolbox").into(),
        ..PoolConfig::default()
    });
    let me = own_identity();
    let reply = pool.call(&me, ServiceId::IDENTITY, b"").unwrap();
    let report = toolbox::guestops::frame::Report::decode(&reply).unwrap();
    assert_eq!(report.uids, [me.uid; 3]);
    assert_eq!(report.gids[1], me.gid);
    // The VIX and HGFS services are not registered yet: an error, and the helper lives on.
    let e = pool.call(&me, ServiceId(0x70), b"x").unwrap_err();
    assert!(matches!(e, GuestOpsError::UnknownService(_)), "{e}");
    assert_eq!(pool.helpers(), vec![me.uid]);
    // Hidden from help.
    let help = Command::new(env!("CARGO_BIN_EXE_toolbox"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("guestops"));
}

#[test]
fn descriptors_leaked_without_close_on_exec_are_reported() {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    // Opened without O_CLOEXEC, as a C library might: every child inherits it.
    let leaked = open("/etc/hostname", OFlag::O_RDONLY, Mode::empty()).unwrap();
    let me = own_identity();
    // The setup reply names them (the pool logs it); talk to a helper directly to see it.
    use std::os::unix::net::UnixStream;
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolbox"))
        .arg(toolbox::guestops::HELPER_SUBCOMMAND)
        .stdin(std::os::fd::OwnedFd::from(theirs))
        .spawn()
        .unwrap();
    let setup = toolbox::guestops::frame::Setup {
        uid: me.uid,
        gid: me.gid,
        groups: me.groups.clone(),
        home: me.home.clone(),
        no_new_privs: true,
        settings: toolbox::guestops::HelperSettings::new(),
    };
    toolbox::guestops::frame::write_frame(&mut ours, 0, &setup.encode()).unwrap();
    let (status, payload) = toolbox::guestops::frame::read_frame(&mut ours)
        .unwrap()
        .unwrap();
    assert_eq!(status, toolbox::guestops::frame::STATUS_OK);
    let setup_report = toolbox::guestops::frame::Report::decode(&payload).unwrap();
    assert!(
        setup_report
            .stray_fds
            .iter()
            .any(|s| s.ends_with("-> /etc/hostname")),
        "{:?}",
        setup_report.stray_fds
    );
    drop(ours);
    assert!(
        child.wait().unwrap().success(),
        "EOF ends the helper cleanly"
    );
    drop(leaked);
}

#[test]
fn helpers_of_changed_accounts_stop_without_waiting_for_a_request() {
    require_root!();
    let user = TestUser::create(false);
    let auth = Arc::new(
        Authenticator::new(AuthSettings {
            backend: BackendKind::Shadow,
            limits: RateLimits::unlimited(),
            ..AuthSettings::default()
        })
        .unwrap(),
    );
    let id = login(&auth, &user.name, &user.password.clone()).unwrap();
    let resolver = auth.clone();
    let pool = HelperPool::new(PoolConfig {
        idle_timeout: Duration::from_secs(600),
        account_watch: Some(toolbox::guestops::AccountWatch {
            files: auth.account_files().clone(),
            resolve: Arc::new(move |name: &str| resolver.resolve(name).ok().flatten()),
        }),
        ..pool_config()
    });
    let pid = field(&ask(&pool, &id, b'I', ""), "pid").to_string();
    let wait_for = |done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        done()
    };
    // Someone else's account changes: this helper stays.
    let other = TestUser::create(false);
    pool.reap_idle();
    assert_eq!(
        pool.helper_pid(user.uid).map(|p| p.to_string()),
        Some(pid.clone())
    );
    drop(other);
    // This user leaves a group: the helper (which still has it) is stopped.
    run(Command::new("gpasswd").args(["-d", &user.name, &user.group]));
    assert!(
        wait_for(&|| pool.helpers().is_empty()),
        "helper still running"
    );
    // Its slot goes first; the process is gone once it has been killed and reaped.
    assert!(wait_for(&|| !Path::new(&format!("/proc/{pid}")).exists()));
}
