//! Guest processes end to end, as govc drives them: `vmx-sim guest.start|ps|kill|getenv|run`
//! and `vmx-sim http` (and the same library in process) against the real agent, logins by the
//! shadow backend over a test-made passwd/group/shadow set, every program started by the
//! user's helper process.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};
use toolbox::sim::guestops::{GuestOps, HttpRequest, InProcess};
use toolbox::sim::Sim;
use toolbox::vix::client::login;
use util::*;

const VMX_SIM: &str = env!("CARGO_BIN_EXE_vmx-sim");
const ROOT_PW: &str = "bob-pw-2";
const USER_PW: &str = "alice-pw-1";

fn root() -> String {
    format!("root:{ROOT_PW}")
}
fn user() -> String {
    format!("gfuser:{USER_PW}")
}

/// `vmx-sim -d VMX ARGS...` on a blocking thread (the simulator lives on this runtime), with
/// the login in `GOVC_GUEST_LOGIN` and `input` on standard input.
async fn govc_in(sim: &Sim, login: &str, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut c = std::process::Command::new(VMX_SIM);
    c.arg("-d").arg(sim.dir()).args(args);
    c.env("GOVC_GUEST_LOGIN", login)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let input = input.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = c.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        out
    })
    .await
    .unwrap()
}

async fn govc(sim: &Sim, login: &str, args: &[&str]) -> Output {
    govc_in(sim, login, args, b"").await
}

fn pid_of(o: &Output) -> i64 {
    let text = ok(o);
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    text.trim().parse().unwrap()
}

async fn start(name: &str, extra: &str) -> (TempDir, Sim, Agent, Accounts) {
    let dir = TempDir::new(name);
    // The user's programs reach into the test's directory (its home is there).
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let acc = accounts(&dir, extra);
    let sim = sim(&dir).await;
    let agent = Agent::start(&[], &dir, sim.dir(), &acc.config);
    tools_running(&sim).await;
    (dir, sim, agent, acc)
}

fn alive(pid: i64) -> bool {
    // A zombie is no longer running.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// (pid, state, ppid, pgrp) of every process.
fn processes() -> Vec<(i64, char, i64, i64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i64>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let state = f[0].chars().next().unwrap_or('?');
        out.push((
            pid,
            state,
            f[1].parse().unwrap_or(0),
            f[2].parse().unwrap_or(0),
        ));
    }
    out
}

/// The agent's helper processes (its children).
fn helpers(agent: &Agent) -> Vec<i64> {
    let me = i64::from(agent.pid());
    processes()
        .into_iter()
        .filter(|p| p.2 == me && p.1 != 'Z')
        .map(|p| p.0)
        .collect()
}

fn rss_kib(pid: i64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The uid a process runs as.
fn uid_of(pid: i64) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The rows of a `guest.ps` table, each split at its columns; checks the header and that
/// every column starts where its header does (govc's tabwriter).
fn ps_rows(table: &str, exit: bool) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let names: &[&str] = if exit {
        &["UID", "PID", "STIME", "XTIME", "XCODE", "CMD"]
    } else {
        &["UID", "PID", "STIME", "CMD"]
    };
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), names);
    let starts: Vec<usize> = names.iter().map(|n| header.find(n).unwrap()).collect();
    lines
        .map(|line| {
            let mut cells = Vec::new();
            for (i, start) in starts.iter().enumerate() {
                let end = starts.get(i + 1).copied().unwrap_or(line.len());
                assert!(
                    i == 0 || line.as_bytes()[start - 1] == b' ',
                    "column {} of {line:?} not aligned under its header",
                    names[i]
                );
                cells.push(line[*start..end].trim_end().to_string());
            }
            cells
        })
        .collect()
}

fn hhmm(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5 && b[2] == b':' && s.chars().filter(char::is_ascii_digit).count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_list_and_kill_as_root_and_as_a_user() {
    if !root_or_skip("start_list_and_kill_as_root_and_as_a_user") {
        return;
    }
    let (_dir, sim, _agent, acc) = start("gp-kill", "").await;
    let (r, u) = (root(), user());

    // guest.start prints the pid alone; the program runs as the login's user.
    let root_pid = pid_of(&govc(&sim, &r, &["guest.start", "/bin/sleep", "1000"]).await);
    let user_pid = pid_of(&govc(&sim, &u, &["guest.start", "/bin/sleep", "1001"]).await);
    wait_until(Duration::from_secs(5), "both sleeps", || {
        alive(root_pid) && alive(user_pid)
    })
    .await;
    assert_eq!(uid_of(root_pid), 0);
    assert_eq!(uid_of(user_pid), acc.uid);

    // guest.ps -p: the owner, pid, start time and command line, as govc's table.
    let rows = ps_rows(
        &ok(&govc(&sim, &u, &["guest.ps", "-p", &user_pid.to_string()]).await),
        false,
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], "gfuser");
    assert_eq!(rows[0][1], user_pid.to_string());
    assert!(hhmm(&rows[0][2]), "{rows:?}");
    assert_eq!(rows[0][3], "/bin/sleep 1001");
    // -x while it runs: "-" for the exit time and code.
    let rows = ps_rows(
        &ok(&govc(&sim, &r, &["guest.ps", "-x", "-p", &root_pid.to_string()]).await),
        true,
    );
    assert_eq!(
        (rows[0][0].as_str(), &rows[0][3][..], &rows[0][4][..]),
        ("root", "-", "-")
    );
    // Without -e, -p or -U only the login's own processes; -U and -e select others.
    let own = ps_rows(&ok(&govc(&sim, &u, &["guest.ps"]).await), false);
    assert!(own.iter().all(|row| row[0] == "gfuser"), "{own:?}");
    assert!(own.iter().any(|row| row[1] == user_pid.to_string()));
    let roots = ps_rows(
        &ok(&govc(&sim, &u, &["guest.ps", "-U", "root"]).await),
        false,
    );
    assert!(roots.iter().all(|row| row[0] == "root"));
    assert!(roots.iter().any(|row| row[1] == root_pid.to_string()));
    let every = ps_rows(&ok(&govc(&sim, &u, &["guest.ps", "-e"]).await), false);
    assert!(every.iter().any(|row| row[1] == "1"));
    assert!(every.len() >= roots.len() + own.len());

    // The user cannot kill root's process: the VIX permission error, as govc shows it.
    fails_with(
        &govc(&sim, &u, &["guest.kill", "-p", &root_pid.to_string()]).await,
        &format!(
            "Insufficient permissions in guest operating system to access process {root_pid}."
        ),
    );
    assert!(alive(root_pid));

    // Its own: gone, and listed with its end (SIGTERM: 128 + 15) until retention ends.
    assert_eq!(
        ok(&govc(&sim, &u, &["guest.kill", "-p", &user_pid.to_string()]).await),
        ""
    );
    wait_until(Duration::from_secs(5), "the user's sleep to end", || {
        !alive(user_pid)
    })
    .await;
    let rows = ps_rows(
        &ok(&govc(
            &sim,
            &u,
            &["guest.ps", "-x", "-X", "-p", &user_pid.to_string()],
        )
        .await),
        true,
    );
    assert!(hhmm(&rows[0][3]), "{rows:?}");
    assert_eq!(rows[0][4], "143");

    // Root kills anyone's; a pid nobody has is not found.
    ok(&govc(&sim, &r, &["guest.kill", "-p", &root_pid.to_string()]).await);
    wait_until(Duration::from_secs(5), "root's sleep to end", || {
        !alive(root_pid)
    })
    .await;
    let mut gone = std::process::Command::new("/bin/true").spawn().unwrap();
    let gone_pid = i64::from(gone.id());
    gone.wait().unwrap();
    fails_with(
        &govc(&sim, &r, &["guest.kill", "-p", &gone_pid.to_string()]).await,
        &format!("Process {gone_pid} was not found"),
    );
    // A program that does not exist.
    fails_with(
        &govc(&sim, &r, &["guest.start", "/nonexistent/prog"]).await,
        "File /nonexistent/prog was not found",
    );
    fails_with(
        &govc(&sim, "root:wrong", &["guest.ps"]).await,
        "Failed to authenticate with the guest operating system using the supplied credentials.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_environment_directories_quoting_and_stdin() {
    if !root_or_skip("exit_codes_environment_directories_quoting_and_stdin") {
        return;
    }
    let (dir, sim, _agent, acc) = start("gp-run", "").await;
    let (r, u) = (root(), user());
    let home = dir.0.join("home");

    // guest.run: stdout and stderr apart, the exit code propagated (and nothing printed for
    // it, as govc).
    let o = govc(
        &sim,
        &r,
        &[
            "guest.run",
            "sh",
            "-c",
            "\"echo out; echo err >&2; exit 3\"",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    let o = govc(&sim, &r, &["guest.run", "/bin/sh", "-c", "'exit 7'"]).await;
    assert_eq!((o.status.code(), o.stderr.len()), (Some(7), 0));
    assert_eq!(
        ok(&govc(&sim, &u, &["guest.run", "id", "-u"]).await),
        format!("{}\n", acc.uid)
    );
    // The guest.run temporaries (where guest.mktemp makes them) are gone again.
    let probe = ok(&govc(&sim, &u, &["guest.mktemp", "-t", "govmomi-"]).await);
    let probe = Path::new(probe.trim());
    assert_eq!(probe.parent(), Some(std::env::temp_dir().as_path()));
    ok(&govc(&sim, &u, &["guest.rm", probe.to_str().unwrap()]).await);
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("govmomi-"))
        .filter(|e| std::os::unix::fs::MetadataExt::uid(&e.metadata().unwrap()) == acc.uid)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Environment: the request's variables over the user's login environment.
    let env = ok(&govc(
        &sim,
        &u,
        &["guest.run", "-e", "FOO=bar", "-e", "SP=a b", "env"],
    )
    .await);
    let env: Vec<&str> = env.lines().collect();
    assert!(
        env.contains(&"FOO=bar") && env.contains(&"SP=a b"),
        "{env:?}"
    );
    assert!(
        env.contains(&format!("HOME={}", home.display()).as_str()),
        "{env:?}"
    );
    assert!(env.contains(&"USER=gfuser"), "{env:?}");
    // guest.getenv: the names asked for, in that order, NAME=value per line; none: all.
    assert_eq!(
        ok(&govc(&sim, &u, &["guest.getenv", "USER", "NO_SUCH_VAR", "HOME"]).await),
        format!("USER=gfuser\nHOME={}\n", home.display())
    );
    let all = ok(&govc(&sim, &u, &["guest.getenv"]).await);
    assert!(
        all.lines().any(|l| l == "USER=gfuser") && all.lines().count() >= 3,
        "{all}"
    );

    // Working directory: -C, else the user's home; a missing one is refused.
    let work = dir.0.join("work dir");
    std::fs::create_dir(&work).unwrap();
    assert_eq!(
        ok(&govc(
            &sim,
            &u,
            &["guest.run", "-C", work.to_str().unwrap(), "/bin/pwd"]
        )
        .await),
        format!("{}\n", work.display())
    );
    assert_eq!(
        ok(&govc(&sim, &u, &["guest.run", "/bin/pwd"]).await),
        format!("{}\n", home.display())
    );
    let missing = dir.0.join("missing");
    let o = govc(
        &sim,
        &u,
        &["guest.start", "-C", missing.to_str().unwrap(), "/bin/true"],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("vmx-sim: "));

    // Quotes and spaces: the arguments reach the guest's shell as govc joins them.
    let out = home.join("args");
    let pid = pid_of(
        &govc(
            &sim,
            &u,
            &[
                "guest.start",
                "/usr/bin/printf",
                "'[%s]'",
                "'a b'",
                "\"c  d\"",
                "e\\ f",
                "'it'\\''s'",
                ">",
                out.to_str().unwrap(),
            ],
        )
        .await,
    );
    ok(&govc(&sim, &u, &["guest.ps", "-X", "-p", &pid.to_string()]).await);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "[a b][c  d][e f][it's]"
    );

    // Standard input: -d DATA, and -d - from our stdin (a megabyte, through cat).
    assert_eq!(
        ok(&govc(&sim, &u, &["guest.run", "-d", "hello world", "cat"]).await),
        "hello world"
    );
    let input: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let o = govc_in(&sim, &u, &["guest.run", "-d", "-", "/bin/cat"], &input).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout == input, "{} bytes back", o.stdout.len());
    let o = govc_in(&sim, &u, &["guest.run", "-d", "-", "wc", "-c"], &input).await;
    assert_eq!(ok(&o).trim(), "1000000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_through_guest_run() {
    if !root_or_skip("a_hundred_megabytes_through_guest_run") {
        return;
    }
    let (_dir, sim, _agent, _) = start("gp-big", "").await;
    const SIZE: usize = 100_000_000;
    let line = b"0123456789abcdef\n";
    let started = Instant::now();
    let o = govc(
        &sim,
        &root(),
        &[
            "guest.run",
            "yes",
            "0123456789abcdef",
            "|",
            "head",
            "-c",
            &SIZE.to_string(),
        ],
    )
    .await;
    let took = started.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout.len(), SIZE);
    assert!(o.stdout.chunks(line.len()).all(|c| c == &line[..c.len()]));
    // A same-run reference: the guest writing the same bytes to a local pipe.
    let local = Instant::now();
    let direct = std::process::Command::new("/bin/bash")
        .arg("-c")
        .arg(format!("yes 0123456789abcdef | head -c {SIZE}"))
        .output()
        .unwrap();
    assert_eq!(direct.stdout.len(), SIZE);
    let local = local.elapsed();
    // A reader who stops early: no panic, no error, the program's exit code.
    let o = tokio::task::spawn_blocking({
        let dir = sim.dir().to_path_buf();
        move || {
            std::process::Command::new("/bin/bash")
                .arg("-c")
                .arg(format!(
                    "set -o pipefail; {VMX_SIM} -d '{}' guest.run head -c 3000000 /dev/zero | head -c 10 | wc -c",
                    dir.display()
                ))
                .env("GOVC_GUEST_LOGIN", root())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "10");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!(
        "guest.run of 100 MB: {:.2} s, {:.1} MB/s (the same program to a local pipe: {:.2} s)",
        took.as_secs_f64(),
        SIZE as f64 / 1e6 / took.as_secs_f64(),
        local.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tree_and_a_thousand_short_programs() {
    if !root_or_skip("a_killed_tree_and_a_thousand_short_programs") {
        return;
    }
    let (_dir, sim, agent, _) = start("gp-many", "").await;
    let mut ops = GuestOps::new(InProcess(sim.clone()), login("root", ROOT_PW));

    // A tree: the program's shell, a subshell, two sleeps, all in the program's group.
    let pid = ops
        .start(
            "/bin/sh",
            "-c 'sleep 1000 & (sleep 1001 & wait) & wait'",
            "",
            &[],
        )
        .await
        .unwrap();
    let group = || -> Vec<i64> {
        processes()
            .into_iter()
            .filter(|p| p.3 == pid && p.1 != 'Z')
            .map(|p| p.0)
            .collect()
    };
    wait_until(Duration::from_secs(5), "the tree to start", || {
        group().len() >= 4
    })
    .await;
    ops.kill(pid).await.unwrap();
    wait_until(Duration::from_secs(10), "the whole tree to go", || {
        group().is_empty()
    })
    .await;
    let ended = ops.process(pid).await.unwrap().unwrap();
    assert_ne!(ended.end_time, 0);

    // 1 000 short programs in a row.
    let helper = {
        let h = helpers(&agent);
        assert_eq!(h.len(), 1, "one helper for root: {h:?}");
        h[0]
    };
    let warm_up: Vec<i64> = {
        let mut pids = Vec::new();
        for _ in 0..100 {
            pids.push(ops.start("/bin/true", "", "", &[]).await.unwrap());
        }
        pids
    };
    for p in &warm_up {
        ops.wait(*p).await.unwrap();
    }
    let (agent_before, helper_before) = (rss_kib(i64::from(agent.pid())), rss_kib(helper));
    let started = Instant::now();
    let mut pids = Vec::with_capacity(1000);
    for i in 0..1000 {
        let code = i % 7;
        pids.push(
            ops.start("/bin/sh", &format!("-c 'exit {code}'"), "", &[])
                .await
                .unwrap(),
        );
    }
    let start_time = started.elapsed();
    let mut left: Vec<(usize, i64)> = pids.iter().copied().enumerate().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !left.is_empty() {
        assert!(Instant::now() < deadline, "{} still running", left.len());
        let listed = ops
            .ps(&left.iter().map(|(_, p)| *p).collect::<Vec<_>>())
            .await
            .unwrap();
        left.retain(|(i, p)| match listed.iter().find(|l| l.pid == *p) {
            Some(l) if l.end_time != 0 => {
                assert_eq!(l.exit_code, (*i % 7) as i32, "program {i}");
                false
            }
            Some(_) => true,
            None => panic!("program {i} (pid {p}) not listed"),
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let zombies: Vec<_> = processes()
        .into_iter()
        .filter(|p| p.1 == 'Z' && (p.2 == helper || p.2 == i64::from(agent.pid())))
        .collect();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
    let (agent_after, helper_after) = (rss_kib(i64::from(agent.pid())), rss_kib(helper));
    println!(
        "1 000 StartProgram in {:.2} s ({:.2} ms each); RSS agent {agent_before} -> \
         {agent_after} KiB, helper {helper_before} -> {helper_after} KiB",
        start_time.as_secs_f64(),
        start_time.as_secs_f64()
    );
    // The ended programs are remembered (exit code, end time) but bounded; a leak per
    // program of even 4 KiB would show as 4 MB here.
    assert!(
        agent_after < agent_before + 2048,
        "agent {agent_before} -> {agent_after} KiB"
    );
    assert!(
        helper_after < helper_before + 4096,
        "helper {helper_before} -> {helper_after} KiB"
    );
}

/// The HTTP service the round-trip tests talk to: `/hello`, `/echo` (method and body back),
/// `/chunked` (a body of unknown length in pieces), `/large` (8 MiB), `/slow` (answers after
/// 3 s), 404 for the rest.
fn serve_connection<I>(io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(handle);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .await;
    });
}

const LARGE: usize = 8 * 1024 * 1024;

fn large_body() -> Vec<u8> {
    (0..LARGE).map(|i| (i % 253) as u8).collect()
}

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

/// A body sent in pieces without a length: hyper sends it chunked.
struct Pieces(std::vec::IntoIter<bytes::Bytes>);

impl hyper::body::Body for Pieces {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.get_mut()
                .0
                .next()
                .map(|b| Ok(hyper::body::Frame::data(b))),
        )
    }
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Body>, hyper::Error> {
    use http_body_util::BodyExt;
    let full = |b: Vec<u8>| http_body_util::Full::new(bytes::Bytes::from(b)).boxed();
    let path = req.uri().path().to_string();
    let method = req.method().to_string();
    let response = match path.as_str() {
        "/hello" => hyper::Response::new(full(b"hello\n".to_vec())),
        "/echo" => {
            let body = req.into_body().collect().await?.to_bytes();
            let mut out = format!("{method} {} ", body.len()).into_bytes();
            out.extend_from_slice(&body);
            hyper::Response::new(full(out))
        }
        "/chunked" => {
            let pieces: Vec<bytes::Bytes> = (0..5)
                .map(|i| bytes::Bytes::from(format!("part {i};")))
                .collect();
            hyper::Response::new(Pieces(pieces.into_iter()).boxed())
        }
        "/large" => hyper::Response::new(full(large_body())),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            hyper::Response::new(full(b"late\n".to_vec()))
        }
        _ => {
            let mut r = hyper::Response::new(full(b"no such page\n".to_vec()));
            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
            r
        }
    };
    Ok(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_round_trips_on_loopback_and_a_unix_socket() {
    if !root_or_skip("http_round_trips_on_loopback_and_a_unix_socket") {
        return;
    }
    let dir = TempDir::new("gp-http");
    let socket = dir.0.join("web.sock");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let unix = tokio::net::UnixListener::bind(&socket).unwrap();
    let tcp_connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = tcp_connections.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = tcp.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            serve_connection(s);
        }
    });
    tokio::spawn(async move {
        while let Ok((s, _)) = unix.accept().await {
            serve_connection(s);
        }
    });
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);

    let acc = accounts(
        &dir,
        &format!(
            "[process.http]\nunix_sockets = [\"{}\"]\ntimeout_secs = 1\n",
            socket.display()
        ),
    );
    let sim = sim(&dir).await;
    let _agent = Agent::start(&[], &dir, sim.dir(), &acc.config);
    tools_running(&sim).await;
    let r = root();
    let base = format!("http://127.0.0.1:{port}");
    let encoded = socket.to_str().unwrap().replace('/', "%2F");
    let unix_base = format!("http+unix://{encoded}");

    // vmx-sim http: the body on stdout; a status other than 2xx on stderr, exit 1.
    for base in [&base, &unix_base] {
        let o = govc(&sim, &r, &["http", &format!("{base}/hello")]).await;
        assert_eq!(ok(&o), "hello\n");
        assert!(o.stderr.is_empty());
        let o = govc(&sim, &r, &["http", &format!("{base}/nothing")]).await;
        assert_eq!(String::from_utf8_lossy(&o.stdout), "no such page\n");
        fails_with(&o, "404 Not Found");
        let o = govc(
            &sim,
            &r,
            &[
                "http",
                "-X",
                "POST",
                "-d",
                "some data",
                &format!("{base}/echo"),
            ],
        )
        .await;
        assert_eq!(ok(&o), "POST 9 some data");
    }
    let o = govc_in(
        &sim,
        &r,
        &["http", "-X", "PUT", "-d", "-", &format!("{base}/echo")],
        b"from stdin",
    )
    .await;
    assert_eq!(ok(&o), "PUT 10 from stdin");

    // In process: chunked and large responses, a large request body, the failures.
    let mut ops = GuestOps::new(InProcess(sim.clone()), login("root", ROOT_PW));
    for base in [&base, &unix_base] {
        let get = |path: &str| HttpRequest::new("GET", &format!("{base}{path}")).unwrap();
        let resp = ops.http(&get("/chunked")).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"part 0;part 1;part 2;part 3;part 4;");
        let started = Instant::now();
        let resp = ops.http(&get("/large")).await.unwrap();
        let through = started.elapsed();
        assert!(resp.body == large_body(), "{} bytes", resp.body.len());
        let mut post = HttpRequest::new("POST", &format!("{base}/echo")).unwrap();
        post.body = large_body();
        let resp = ops.http(&post).await.unwrap();
        let mut echoed = format!("POST {LARGE} ").into_bytes();
        echoed.extend_from_slice(&large_body());
        assert!(resp.body == echoed, "{} bytes echoed", resp.body.len());
        println!(
            "8 MiB response through http.RoundTrip ({}): {:.1} MB/s",
            if base.starts_with("http+unix") {
                "unix"
            } else {
                "tcp"
            },
            LARGE as f64 / 1e6 / through.as_secs_f64()
        );
    }
    // Keep-alive: three requests written at once go over one connection to the target.
    let before = tcp_connections.load(std::sync::atomic::Ordering::SeqCst);
    let mut echo = HttpRequest::new("POST", &format!("{base}/echo")).unwrap();
    echo.body = b"second".to_vec();
    let all = ops
        .http_pipelined(&[
            HttpRequest::new("GET", &format!("{base}/hello")).unwrap(),
            echo,
            HttpRequest::new("GET", &format!("{base}/chunked")).unwrap(),
        ])
        .await
        .unwrap();
    let bodies: Vec<&[u8]> = all.iter().map(|r| &r.body[..]).collect();
    assert_eq!(
        bodies,
        [
            &b"hello\n"[..],
            b"POST 6 second",
            b"part 0;part 1;part 2;part 3;part 4;"
        ]
    );
    assert_eq!(
        tcp_connections.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );

    // A dead target: 502; a slow one beyond the configured time limit: 504; a socket the
    // configuration does not list: 403.
    let resp = ops
        .http(&HttpRequest::new("GET", &format!("http://127.0.0.1:{dead_port}/")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status, 502, "{}", String::from_utf8_lossy(&resp.body));
    let started = Instant::now();
    let resp = ops
        .http(&HttpRequest::new("GET", &format!("{base}/slow")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status, 504, "{}", String::from_utf8_lossy(&resp.body));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let other = dir
        .0
        .join("other.sock")
        .to_str()
        .unwrap()
        .replace('/', "%2F");
    let o = govc(&sim, &r, &["http", &format!("http+unix://{other}/")]).await;
    fails_with(&o, "403 Forbidden");
    assert!(String::from_utf8_lossy(&o.stdout).contains("not allowed"));
}

/// Usage as govc's: help on stdout with exit 0, a bad flag value or a missing PATH exit 1
/// with the reason on stderr, nothing sent to any simulator.
#[test]
fn process_commands_usage_and_help() {
    let run = |args: &[&str]| {
        std::process::Command::new(VMX_SIM)
            .args(["-d", "/nonexistent-simulator"])
            .args(args)
            .env_remove("GOVC_GUEST_LOGIN")
            .output()
            .unwrap()
    };
    for cmd in [
        "guest.start",
        "guest.ps",
        "guest.kill",
        "guest.getenv",
        "guest.run",
        "http",
    ] {
        let o = run(&[cmd, "-h"]);
        assert_eq!(o.status.code(), Some(0), "{cmd}");
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains(&format!("Usage: vmx-sim {cmd}")), "{help}");
        assert!(help.contains("-l <LOGIN>"), "{cmd} takes -l: {help}");
    }
    let o = run(&["guest.kill", "-p", "abc"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid syntax"));
    for missing in [
        &["guest.run"][..],
        &["guest.start", "-C", "/tmp"],
        &["http"],
    ] {
        let o = run(missing);
        assert_eq!(o.status.code(), Some(1), "{missing:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("required"));
    }
}
