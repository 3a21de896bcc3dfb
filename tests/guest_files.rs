//! Guest file operations end to end, as govc drives them: `vmx-sim guest.*` (and the same
//! library in process) against the real agent, logins by the shadow backend over a test-made
//! passwd/group/shadow set, every operation run in the user's helper process.

mod util;

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use toolbox::sim::guestops::{GuestOps, InProcess, Quiet, UploadAttributes};
use toolbox::sim::Sim;
use toolbox::vix::client::login;
use toolbox::vix::VixError;
use util::*;

const VMX_SIM: &str = env!("CARGO_BIN_EXE_vmx-sim");
const ROOT_PW: &str = "bob-pw-2";
const USER_PW: &str = "alice-pw-1";

/// `vmx-sim -d VMX ARGS...` with the login in `GOVC_GUEST_LOGIN` (or none).
fn govc(sim: &Sim, login: Option<&str>, args: &[&str]) -> Output {
    let mut c = std::process::Command::new(VMX_SIM);
    c.arg("-d").arg(sim.dir()).args(args);
    match login {
        Some(l) => c.env("GOVC_GUEST_LOGIN", l),
        None => c.env_remove("GOVC_GUEST_LOGIN"),
    };
    c.stdin(std::process::Stdio::null()).output().unwrap()
}

/// `vmx-sim -d VMX ARGS...` with `input` on its standard input.
async fn run_with_input(sim: &Sim, login: &str, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut c = std::process::Command::new(VMX_SIM);
    c.arg("-d").arg(sim.dir()).args(args);
    c.env("GOVC_GUEST_LOGIN", login)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    tokio::task::spawn_blocking(move || {
        stdin.write_all(&input).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// Runs `govc` on a blocking thread (the simulator lives on this runtime).
async fn run(sim: &Sim, login: Option<&str>, args: &[&str]) -> Output {
    let sim2 = sim.clone();
    let login = login.map(str::to_string);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        govc(&sim2, login.as_deref(), &a)
    })
    .await
    .unwrap()
}

fn root() -> String {
    format!("root:{ROOT_PW}")
}
fn user() -> String {
    format!("gfuser:{USER_PW}")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

async fn start(name: &str, extra: &str) -> (TempDir, Sim, Agent, Accounts) {
    let dir = TempDir::new(name);
    let acc = accounts(&dir, extra);
    let sim = sim(&dir).await;
    let agent = Agent::start(&[], &dir, sim.dir(), &acc.config);
    tools_running(&sim).await;
    (dir, sim, agent, acc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_as_root_with_govc_output_and_errors() {
    if !root_or_skip("each_operation_as_root_with_govc_output_and_errors") {
        return;
    }
    let (dir, sim, _agent, _) = start("gf-root", "").await;
    let r = root();
    let l = Some(r.as_str());
    let work = dir.0.join("work");
    std::fs::create_dir(&work).unwrap();

    // mkdir, -p, exists.
    let deep = work.join("a/b/c");
    fails_with(
        &run(&sim, l, &["guest.mkdir", p(&deep)]).await,
        &format!("File {} was not found", deep.display()),
    );
    ok(&run(&sim, l, &["guest.mkdir", "-p", p(&deep)]).await);
    assert!(deep.is_dir());
    ok(&run(&sim, l, &["guest.mkdir", "-p", p(&deep)]).await);
    fails_with(
        &run(&sim, l, &["guest.mkdir", p(&deep)]).await,
        &format!(
            "Cannot complete the operation because the file or folder {} already exists",
            deep.display()
        ),
    );

    // upload, download, -f on both sides.
    let local = dir.0.join("local.txt");
    std::fs::write(&local, "hello guest\n").unwrap();
    let guest = work.join("up.txt");
    let out = run(&sim, l, &["guest.upload", p(&local), p(&guest)]).await;
    ok(&out);
    assert!(out.stderr.is_empty(), "no progress bar when piped");
    assert_eq!(std::fs::read(&guest).unwrap(), b"hello guest\n");
    fails_with(
        &run(&sim, l, &["guest.upload", p(&local), p(&guest)]).await,
        &format!(
            "Cannot complete the operation because the file or folder {} already exists",
            guest.display()
        ),
    );
    std::fs::write(&local, "second\n").unwrap();
    ok(&run(
        &sim,
        l,
        &[
            "guest.upload",
            "-f",
            "-perm",
            "0640",
            "-uid",
            "123",
            "-gid",
            "456",
            p(&local),
            p(&guest),
        ],
    )
    .await);
    let meta = std::fs::metadata(&guest).unwrap();
    assert_eq!(std::fs::read(&guest).unwrap(), b"second\n");
    assert_eq!((meta.uid(), meta.gid(), mode(&guest)), (123, 456, 0o640));
    let back = dir.0.join("back.txt");
    ok(&run(&sim, l, &["guest.download", p(&guest), p(&back)]).await);
    assert_eq!(std::fs::read(&back).unwrap(), b"second\n");
    fails_with(
        &run(&sim, l, &["guest.download", p(&guest), p(&back)]).await,
        "file already exists",
    );
    ok(&run(&sim, l, &["guest.download", "-f", p(&guest), p(&back)]).await);
    let stdout = ok(&run(&sim, l, &["guest.download", p(&guest), "-"]).await);
    assert_eq!(stdout, "second\n");
    let missing = work.join("nope");
    fails_with(
        &run(
            &sim,
            l,
            &["guest.download", p(&missing), p(&dir.0.join("x"))],
        )
        .await,
        &format!("File {} was not found", missing.display()),
    );
    assert!(
        !dir.0.join("x").exists(),
        "a failed download left a local file"
    );
    // "-" uploads standard input.
    let piped = work.join("piped");
    ok(&run_with_input(&sim, &r, &["guest.upload", "-", p(&piped)], b"from stdin").await);
    assert_eq!(std::fs::read(&piped).unwrap(), b"from stdin");
    std::fs::remove_file(&piped).unwrap();

    // ls: govc's columns, -s, a missing path.
    let listing = ok(&run(&sim, l, &["guest.ls", p(&work)]).await);
    let up = listing
        .lines()
        .find(|line| line.ends_with("up.txt"))
        .unwrap_or_else(|| panic!("{listing}"));
    let fields: Vec<&str> = up.split_whitespace().collect();
    assert_eq!(&fields[..4], ["-rw-r-----", "123", "456", "7"], "{up}");
    assert!(listing
        .lines()
        .any(|l| l.starts_with("drwx") && l.ends_with(" a")));
    // -l instead of GOVC_GUEST_LOGIN.
    let simple = ok(&run(&sim, None, &["guest.ls", "-l", &r, "-s", p(&work)]).await);
    let mut names: Vec<&str> = simple.lines().collect();
    names.sort();
    assert_eq!(names, [".", "..", "a", "up.txt"]);
    fails_with(
        &run(&sim, l, &["guest.ls", p(&missing)]).await,
        &format!("File {} was not found", missing.display()),
    );

    // On a terminal a transfer shows its progress (`script` gives it one).
    let sizable = dir.0.join("sizable");
    std::fs::write(&sizable, vec![5u8; 8 << 20]).unwrap();
    let shown = work.join("shown");
    let line = format!(
        "{VMX_SIM} -d {} guest.upload {} {}",
        sim.dir().display(),
        sizable.display(),
        shown.display()
    );
    let tty = tokio::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("GOVC_GUEST_LOGIN", &r)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{text}");
    assert!(text.contains("Uploading... "), "no progress bar: {text:?}");
    assert_eq!(std::fs::metadata(&shown).unwrap().len(), 8 << 20);

    // A listing longer than one reply comes in pages, each entry once.
    let many = work.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..1500 {
        std::fs::write(many.join(format!("{i:04}-{}", "x".repeat(120))), "").unwrap();
    }
    let listing = ok(&run(&sim, l, &["guest.ls", "-s", p(&many)]).await);
    let mut names: Vec<&str> = listing.lines().collect();
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!((total, names.len()), (1502, 1502));
    std::fs::remove_dir_all(&many).unwrap();

    // chmod, chown, touch.
    ok(&run(&sim, l, &["guest.chmod", "0604", p(&guest)]).await);
    assert_eq!(mode(&guest), 0o604);
    ok(&run(&sim, l, &["guest.chown", "77:88", p(&guest)]).await);
    let meta = std::fs::metadata(&guest).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (77, 88));
    ok(&run(&sim, l, &["guest.chown", "78", p(&guest)]).await);
    let meta = std::fs::metadata(&guest).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (78, 88));
    fails_with(
        &run(&sim, l, &["guest.chmod", "0644", p(&missing)]).await,
        &format!("File {} was not found", missing.display()),
    );
    ok(&run(
        &sim,
        l,
        &[
            "guest.touch",
            "-d",
            "Tue Nov 14 22:13:20 UTC 2023",
            p(&guest),
        ],
    )
    .await);
    assert_eq!(std::fs::metadata(&guest).unwrap().mtime(), 1_700_000_000);
    ok(&run(
        &sim,
        l,
        &[
            "guest.touch",
            "-a",
            "-d",
            "Thu Jan  1 00:01:40 UTC 1970",
            p(&guest),
        ],
    )
    .await);
    let meta = std::fs::metadata(&guest).unwrap();
    assert_eq!((meta.atime(), meta.mtime()), (100, 1_700_000_000));
    let touched = work.join("touched");
    fails_with(
        &run(&sim, l, &["guest.touch", "-c", p(&touched)]).await,
        &format!("File {} was not found", touched.display()),
    );
    assert!(!touched.exists());
    ok(&run(&sim, l, &["guest.touch", p(&touched)]).await);
    assert_eq!(std::fs::metadata(&touched).unwrap().len(), 0);

    // mktemp: file and directory, prefix, suffix, directory.
    let name = ok(&run(
        &sim,
        l,
        &["guest.mktemp", "-t", "pre", "-s", ".suf", "-p", p(&work)],
    )
    .await);
    let name = PathBuf::from(name.trim_end());
    assert_eq!(name.parent().unwrap(), work);
    let base = name.file_name().unwrap().to_str().unwrap();
    assert!(base.starts_with("pre") && base.ends_with(".suf"), "{base}");
    assert!(name.is_file());
    let tdir = ok(&run(&sim, l, &["guest.mktemp", "-d", "-p", p(&work)]).await);
    assert!(Path::new(tdir.trim_end()).is_dir());

    // mv: file, -n onto an existing one, a directory.
    let moved = work.join("moved.txt");
    ok(&run(&sim, l, &["guest.mv", p(&guest), p(&moved)]).await);
    assert!(!guest.exists() && moved.is_file());
    fails_with(
        &run(&sim, l, &["guest.mv", "-n", p(&touched), p(&moved)]).await,
        &format!(
            "Cannot complete the operation because the file or folder {} already exists",
            touched.display()
        ),
    );
    assert_eq!(std::fs::metadata(&moved).unwrap().len(), 7);
    ok(&run(&sim, l, &["guest.mv", p(&touched), p(&moved)]).await);
    assert_eq!(std::fs::metadata(&moved).unwrap().len(), 0);
    let adir = work.join("a");
    let bdir = work.join("renamed");
    ok(&run(&sim, l, &["guest.mv", p(&adir), p(&bdir)]).await);
    assert!(bdir.join("b/c").is_dir());

    // rm, rmdir: not empty, -r, a file that is gone, a directory given to rm.
    ok(&run(&sim, l, &["guest.rm", p(&moved)]).await);
    assert!(!moved.exists());
    fails_with(
        &run(&sim, l, &["guest.rm", p(&moved)]).await,
        &format!("File {} was not found", moved.display()),
    );
    fails_with(
        &run(&sim, l, &["guest.rm", p(&bdir)]).await,
        &format!("{} is not a file", bdir.display()),
    );
    fails_with(
        &run(&sim, l, &["guest.rmdir", p(&bdir)]).await,
        &format!("The directory {} is not empty", bdir.display()),
    );
    ok(&run(&sim, l, &["guest.rmdir", "-r", p(&bdir)]).await);
    assert!(!bdir.exists());

    // A usage error exits 1, as govc's do.
    let out = run(&sim, l, &["guest.chmod", p(&work)]).await;
    assert_eq!(out.status.code(), Some(1));
    // No login at all is refused before anything is sent, as govc does.
    fails_with(
        &run(&sim, None, &["guest.ls", p(&work)]).await,
        "guest login username must not be empty",
    );
}

/// `run`, again while the login is held back by the rate limit after a failure.
async fn retried(sim: &Sim, login: &str, args: &[&str]) -> Output {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = run(sim, Some(login), args).await;
        if !String::from_utf8_lossy(&out.stderr).contains("authenticate")
            || std::time::Instant::now() > deadline
        {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_disabled_operations() {
    if !root_or_skip("a_wrong_password_and_disabled_operations") {
        return;
    }
    let (dir, sim, _agent, _) = start(
        "gf-disabled",
        "[guestoperations]\nMakeDirectoryInGuest.disabled = true\n",
    )
    .await;
    let work = dir.0.join("work");
    std::fs::create_dir(&work).unwrap();
    let target = work.join("x");
    fails_with(
        &run(&sim, Some("root:wrong"), &["guest.rm", p(&work.join("f"))]).await,
        "Failed to authenticate with the guest operating system using the supplied credentials.",
    );
    fails_with(
        &run(&sim, Some("root:wrong"), &["guest.ls", p(&work)]).await,
        "Failed to authenticate with the guest operating system using the supplied credentials.",
    );
    // The failure holds the next login back a little (the rate limit).
    let r = root();
    fails_with(
        &retried(&sim, &r, &["guest.mkdir", p(&target)]).await,
        "Operation is disabled by guest",
    );
    assert!(!target.exists());
    // Others still work.
    ok(&retried(&sim, &r, &["guest.touch", p(&target)]).await);
    assert!(target.is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_user_gets_a_shell_users_rights_and_symlinks_are_not_followed() {
    if !root_or_skip("an_unprivileged_user_gets_a_shell_users_rights_and_symlinks_are_not_followed")
    {
        return;
    }
    let (dir, sim, _agent, acc) = start("gf-user", "").await;
    let u = user();
    let l = Some(u.as_str());
    let home = dir.0.join("home");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();

    // What the user makes is the user's.
    let local = dir.0.join("local");
    std::fs::write(&local, "mine").unwrap();
    let file = home.join("f");
    ok(&run(&sim, l, &["guest.upload", p(&local), p(&file)]).await);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (acc.uid, acc.uid));
    ok(&run(&sim, l, &["guest.mkdir", p(&home.join("d"))]).await);
    assert_eq!(std::fs::metadata(home.join("d")).unwrap().uid(), acc.uid);

    // A directory uploads into a new directory the agent makes, as the user, 0755 less the
    // umask (the archive carries no root entry), without a guest.mkdir first.
    let tree = dir.0.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/leaf"), "leaf").unwrap();
    let made = home.join("made/");
    ok(&run(&sim, l, &["guest.upload", p(&tree), p(&made)]).await);
    let meta = std::fs::metadata(&made).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (acc.uid, acc.uid));
    let umask = {
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        nix::sys::stat::umask(old);
        old.bits()
    };
    assert_eq!(meta.mode() & 0o7777, 0o755 & !umask);
    assert_eq!(std::fs::read(made.join("sub/leaf")).unwrap(), b"leaf");
    assert_eq!(
        std::fs::metadata(made.join("sub/leaf")).unwrap().uid(),
        acc.uid
    );

    // Root's places are not the user's.
    let rootdir = dir.0.join("rootonly");
    std::fs::create_dir(&rootdir).unwrap();
    std::fs::set_permissions(&rootdir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = rootdir.join("secret");
    std::fs::write(&secret, "root's").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let denied = |path: &Path| {
        format!(
            "Insufficient permissions in guest operating system to access {}.",
            path.display()
        )
    };
    fails_with(
        &run(&sim, l, &["guest.mkdir", p(&rootdir.join("x"))]).await,
        &denied(&rootdir.join("x")),
    );
    fails_with(
        &run(
            &sim,
            l,
            &["guest.download", p(&secret), p(&dir.0.join("got"))],
        )
        .await,
        &denied(&secret),
    );
    fails_with(
        &run(&sim, l, &["guest.rm", p(&secret)]).await,
        &denied(&secret),
    );
    fails_with(
        &run(&sim, l, &["guest.upload", "-f", p(&local), p(&secret)]).await,
        &denied(&secret),
    );
    fails_with(
        &run(&sim, l, &["guest.chmod", "0666", p(&secret)]).await,
        &denied(&secret),
    );
    // Nor may the user make a directory there by uploading into it.
    let barred = rootdir.join("new");
    let out = run(
        &sim,
        l,
        &["guest.upload", p(&tree), &format!("{}/", barred.display())],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        std::fs::read_dir(&rootdir).unwrap().count(),
        1,
        "only the secret is there"
    );
    assert_eq!(std::fs::read(&secret).unwrap(), b"root's");
    assert_eq!(mode(&secret), 0o600);
    fails_with(
        &run(&sim, l, &["guest.chown", "0", p(&file)]).await,
        &denied(&file),
    );

    // A link to /etc/shadow in the user's home: the download does not follow it, and the
    // user cannot read the target anyway.
    let link = home.join("shadow");
    std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();
    let got = dir.0.join("leak");
    let out = run(&sim, l, &["guest.download", p(&link), p(&got)]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(std::fs::read(&got).map_or(true, |b| b.is_empty()), "leaked");
    // Even root's download refuses a symlink (vmtoolsd's InvalidArg).
    let r = root();
    let out = run(&sim, Some(&r), &["guest.download", "-f", p(&link), p(&got)]).await;
    fails_with(&out, "A specified parameter was not correct");
    // chmod, mv and rm act on the link, never on what it points to.
    let target = home.join("target");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::chown(&target, Some(acc.uid), Some(acc.uid)).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    let tlink = home.join("tlink");
    std::os::unix::fs::symlink(&target, &tlink).unwrap();
    let _ = run(&sim, l, &["guest.chmod", "0777", p(&tlink)]).await;
    assert_eq!(mode(&target), 0o640);
    let _ = run(&sim, l, &["guest.chmod", "0666", p(&link)]).await;
    assert_eq!(
        mode(Path::new("/etc/shadow")) & 0o004,
        0,
        "/etc/shadow changed"
    );
    let moved = home.join("tlink2");
    ok(&run(&sim, l, &["guest.mv", p(&tlink), p(&moved)]).await);
    assert!(std::fs::symlink_metadata(&moved)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    ok(&run(&sim, l, &["guest.rm", p(&moved)]).await);
    assert!(!moved.exists() && target.is_file());
    ok(&run(&sim, l, &["guest.rm", p(&link)]).await);
    assert!(Path::new("/etc/shadow").exists());

    // A directory with a link to /etc/shadow downloads with the link as a link.
    let linked = home.join("linked");
    std::fs::create_dir(&linked).unwrap();
    std::os::unix::fs::chown(&linked, Some(acc.uid), Some(acc.uid)).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", linked.join("shadow")).unwrap();
    let tgz = dir.0.join("linked.tgz");
    ok(&run(&sim, l, &["guest.download", p(&linked), p(&tgz)]).await);
    let unpacked = dir.0.join("linked-unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let got = unpacked.join("shadow");
    assert!(std::fs::symlink_metadata(&got)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_link(&got).unwrap(), Path::new("/etc/shadow"));

    // Upload over a link: refused, the target untouched.
    let over = home.join("over");
    std::os::unix::fs::symlink(&target, &over).unwrap();
    let out = run(&sim, l, &["guest.upload", "-f", p(&local), p(&over)]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}

/// A tar whose first member is a link out of the target and whose second writes through it.
fn planting_tar(outside: &Path) -> Vec<u8> {
    let mut t = Vec::new();
    let mut header = |name: &str, kind: u8, link: &str, size: usize| {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        t.extend_from_slice(&h);
    };
    header("escape", b'2', outside.to_str().unwrap(), 0);
    header("escape/planted", b'0', "", 5);
    t.extend_from_slice(b"pwned");
    t.resize(t.len() + 512 - 5, 0);
    t.resize(t.len() + 1024, 0);
    t
}

fn tree_listing(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let content = if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else if meta.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .as_bytes()
                    .to_vec()
            } else {
                stack.push(path);
                Vec::new()
            };
            out.push((rel, meta.mode(), content));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_archives_both_ways_and_an_archive_that_plants_a_link() {
    if !root_or_skip("directory_archives_both_ways_and_an_archive_that_plants_a_link") {
        return;
    }
    let (dir, sim, _agent, _) = start("gf-archive", "").await;
    let r = root();
    let l = Some(r.as_str());

    // A deep tree, empty directories, special modes, long names, a link inside.
    let src = dir.0.join("src");
    let mut deep = src.clone();
    for i in 0..40 {
        deep = deep.join(format!("level{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom.txt"), "at the bottom").unwrap();
    std::fs::create_dir_all(src.join("empty/also-empty")).unwrap();
    let long = "n".repeat(255);
    std::fs::write(src.join(&long), "long name").unwrap();
    let special = src.join("special");
    std::fs::create_dir(&special).unwrap();
    std::fs::write(special.join("setuid"), "x").unwrap();
    std::fs::set_permissions(
        special.join("setuid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::write(special.join("private"), "y").unwrap();
    std::fs::set_permissions(
        special.join("private"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(&special, std::fs::Permissions::from_mode(0o3775)).unwrap();
    std::os::unix::fs::symlink("level0", src.join("link")).unwrap();
    let mut big = vec![0u8; 3 << 20];
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(src.join("big.bin"), &big).unwrap();

    // Download the directory: a gzip'd tar that GNU tar reads.
    let tgz = dir.0.join("src.tgz");
    ok(&run(&sim, l, &["guest.download", p(&src), p(&tgz)]).await);
    let bytes = std::fs::read(&tgz).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    let listed = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&tgz)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let names = String::from_utf8_lossy(&listed.stdout);
    assert!(
        names.contains("bottom.txt") && names.contains(&long),
        "{names}"
    );

    // Upload it into another directory: the same tree comes out.
    let dst = dir.0.join("dst");
    ok(&run(
        &sim,
        l,
        &["guest.upload", p(&tgz), &format!("{}/", dst.display())],
    )
    .await);
    assert_eq!(tree_listing(&src), tree_listing(&dst));
    // A local directory uploads as an archive too.
    let dst2 = dir.0.join("dst2");
    ok(&run(&sim, l, &["guest.upload", p(&src), p(&dst2)]).await);
    assert_eq!(tree_listing(&src), tree_listing(&dst2));

    // An archive that plants a link out of the target and writes through it.
    let outside = dir.0.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let evil = dir.0.join("evil.tar");
    std::fs::write(&evil, planting_tar(&outside)).unwrap();
    let target = dir.0.join("unpacked");
    let out = run(
        &sim,
        l,
        &["guest.upload", p(&evil), &format!("{}/", target.display())],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        !outside.join("planted").exists(),
        "wrote through a planted link"
    );
    // The refused archive was for a new directory: none appears, and no temporary is left.
    assert!(!target.exists(), "a failed unpack left its directory");
    let temporaries: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tbx-unpack"))
        .collect();
    assert!(temporaries.is_empty(), "{temporaries:?}");
}

/// A source that fails after `left` bytes: an upload cut off midway.
struct Cut {
    left: usize,
}

impl Read for Cut {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("cut"));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(b'z');
        self.left -= n;
        Ok(n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_upload_keeps_the_old_file_and_a_gigabyte_goes_both_ways() {
    if !root_or_skip("a_cut_upload_keeps_the_old_file_and_a_gigabyte_goes_both_ways") {
        return;
    }
    use sha2::{Digest, Sha256};
    let (dir, sim, _agent, _) = start("gf-big", "").await;
    let mut ops = GuestOps::new(InProcess(sim.clone()), login("root", ROOT_PW));
    let work = dir.0.join("work");
    std::fs::create_dir(&work).unwrap();

    let old = work.join("old");
    std::fs::write(&old, "old content").unwrap();
    let e = ops
        .upload(
            &mut Cut { left: 500_000 },
            p(&old),
            UploadAttributes::default(),
            true,
            &mut Quiet,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cut"), "{e}");
    assert_eq!(std::fs::read(&old).unwrap(), b"old content");
    let left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["old"], "a temporary was left behind");

    // 1 GiB each way, on tmpfs when there is one.
    let shm = Path::new("/dev/shm");
    let big_dir = if shm.is_dir() {
        let d = shm.join(format!("toolbox-gf-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    } else {
        work.clone()
    };
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _guard = Remove(big_dir.clone());
    const SIZE: usize = 1 << 30;
    // Deterministic bytes that are not all alike: a block of prime length, repeated, so no
    // two chunks of a transfer are the same.
    struct Pattern {
        at: usize,
        hash: Sha256,
        block: Vec<u8>,
    }
    impl Read for Pattern {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(SIZE - self.at);
            let mut done = 0;
            while done < n {
                let from = (self.at + done) % self.block.len();
                let k = (n - done).min(self.block.len() - from);
                buf[done..done + k].copy_from_slice(&self.block[from..from + k]);
                done += k;
            }
            self.hash.update(&buf[..n]);
            self.at += n;
            Ok(n)
        }
    }
    let block: Vec<u8> = (0..1_000_003u64)
        .map(|x| (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect();
    let up = big_dir.join("up.bin");
    let mut source = Pattern {
        at: 0,
        hash: Sha256::new(),
        block,
    };
    let started = std::time::Instant::now();
    let sent = ops
        .upload(
            &mut source,
            p(&up),
            UploadAttributes::default(),
            false,
            &mut Quiet,
        )
        .await
        .unwrap();
    let up_secs = started.elapsed().as_secs_f64();
    assert_eq!(sent, SIZE as u64);
    let sent_hash = source.hash.finalize();
    let mut on_disk = Sha256::new();
    let mut f = std::fs::File::open(&up).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        on_disk.update(&buf[..n]);
    }
    assert_eq!(on_disk.finalize(), sent_hash);

    struct Hasher(Sha256, u64);
    impl std::io::Write for Hasher {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            self.1 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Hasher(Sha256::new(), 0);
    let started = std::time::Instant::now();
    let got = ops.download(p(&up), &mut sink, &mut Quiet).await.unwrap();
    let down_secs = started.elapsed().as_secs_f64();
    assert_eq!(
        (got.bytes, got.archive, sink.1),
        (SIZE as u64, false, SIZE as u64)
    );
    assert_eq!(sink.0.finalize(), sent_hash);
    println!(
        "1 GiB over VIX op 84: upload {:.0} MB/s, download {:.0} MB/s",
        SIZE as f64 / up_secs / 1e6,
        SIZE as f64 / down_secs / 1e6
    );

    // A wrong password through the library: the fault and its message.
    let mut bad = GuestOps::new(InProcess(sim.clone()), login("root", "nope"));
    let e = bad.rm(p(&old)).await.unwrap_err();
    assert_eq!(e.vix(), Some(VixError::INVALID_LOGIN_CREDENTIALS));
    assert!(old.exists());
}
