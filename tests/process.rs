//! Guest processes on real programs: start, exit codes, environment, working directory,
//! quoting, errors, listing from /proc with chunks, kill of a tree, streams through the HGFS
//! file handler (100 MB out, stdin in), in-agent functions, 1 000 short programs in a row.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolbox::guestops::HelperService;
use toolbox::process::io::Stream;
use toolbox::process::{
    decode_reply, encode_call, proclist, FunctionRegistry, ManagerConfig, ProcessFiles,
    ProcessManager, ProcessService,
};
use toolbox::vix::client;
use toolbox::vix::proto::{Command, ListProcessesRequest, StartProgramRequest, VixError};
use toolbox_hgfs::proto::OpenFlags;
use toolbox_hgfs::{Access, FileHandler, OpenIntent};

const WAIT: Duration = Duration::from_secs(30);

fn functions() -> FunctionRegistry {
    FunctionRegistry::new()
        .with("fn.upper", |mut ctx| {
            use std::io::{Read, Write};
            let mut input = Vec::new();
            if ctx.stdin.read_to_end(&mut input).is_err() {
                return 2;
            }
            let _ = ctx.stdout.write_all(&input.to_ascii_uppercase());
            let _ = ctx.stderr.write_all(ctx.arguments.as_bytes());
            0
        })
        .with("fn.block", |ctx| {
            while !ctx.cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            42
        })
}

fn manager_with(config: ManagerConfig) -> Arc<ProcessManager> {
    ProcessManager::new(config, functions())
}

fn manager() -> Arc<ProcessManager> {
    manager_with(ManagerConfig {
        owner: "tester".into(),
        kill_grace: Duration::from_secs(2),
        ..ManagerConfig::default()
    })
}

fn start(m: &Arc<ProcessManager>, program: &str, args: &str) -> i64 {
    m.start(&StartProgramRequest {
        start_minimized: false,
        program: program.into(),
        arguments: args.into(),
        working_dir: String::new(),
        env: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("start {program} {args}: {e}"))
}

fn read_all(files: &ProcessFiles, pid: i64, stream: &str) -> Vec<u8> {
    let path = format!("/proc/{pid}/{stream}");
    let intent = OpenIntent {
        access: Access::Read,
        flags: OpenFlags::OPEN,
        create_mode: None,
    };
    let mut f = files.open(Path::new(&path), &intent).expect("open stream");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 61_440];
    loop {
        match f.read_at(out.len() as u64, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => panic!("read {path}: {e}"),
        }
    }
    f.close().expect("close");
    out
}

fn write_stdin(files: &ProcessFiles, pid: i64, data: &[u8]) {
    let path = format!("/proc/{pid}/stdin");
    let intent = OpenIntent {
        access: Access::Write,
        flags: OpenFlags::OPEN,
        create_mode: None,
    };
    let mut f = files.open(Path::new(&path), &intent).expect("open stdin");
    let mut done = 0;
    while done < data.len() {
        done += f
            .write_at(Some(done as u64), &data[done..])
            .expect("write stdin");
    }
    f.close().expect("close stdin");
}

#[test]
fn exit_code_is_kept_and_listed() {
    let m = manager();
    let pid = start(&m, "/bin/sh", "-c 'exit 7'");
    assert_eq!(m.wait(pid, WAIT), Some(7));
    let rec = m.record(pid).expect("still remembered");
    let (code, end) = rec.exit.expect("ended");
    assert_eq!(code, 7);
    assert!(end >= rec.start_time);
    let mut service = ProcessService::new(m.clone());
    let reply = decode_reply(&service.handle(&encode_call(&Command::ListProcesses(
        ListProcessesRequest {
            key: 0,
            offset: 0,
            pids: vec![pid as u64],
        },
    ))))
    .unwrap();
    assert_eq!(reply.error, VixError::OK);
    let list = client::parse_process_list(&reply.result).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].pid, pid);
    assert_eq!(list[0].exit_code, 7);
    assert_eq!(list[0].owner, "tester");
    assert_eq!(list[0].name, "sh");
    assert_eq!(list[0].command_line, "/bin/sh -c 'exit 7'");
    assert!(list[0].end_time > 0);
}

#[test]
fn environment_working_directory_and_quoting() {
    let m = manager();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let pid = m
        .start(&StartProgramRequest {
            start_minimized: false,
            program: "/bin/sh".into(),
            arguments: format!(
                r#"-c 'printf "%s|%s|%s" "$FOO" "$(pwd)" "a  b"' > "{}""#,
                out.display()
            ),
            working_dir: dir.path().to_string_lossy().into_owned(),
            env: vec!["FOO=bar baz".into()],
        })
        .unwrap();
    assert_eq!(m.wait(pid, WAIT), Some(0));
    let got = std::fs::read_to_string(&out).unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(got, format!("bar baz|{}|a  b", cwd.display()));
}

#[test]
fn govc_run_redirections_work() {
    let m = manager();
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    let pid = start(
        &m,
        "/bin/ls",
        &format!("'with space' /  1> {} 2> {}", o.display(), e.display()),
    );
    assert_eq!(m.wait(pid, WAIT), Some(2), "ls of a missing file fails");
    assert!(std::fs::read_to_string(&o).unwrap().contains("proc"));
    assert!(std::fs::read_to_string(&e).unwrap().contains("with space"));
}

#[test]
fn start_errors_are_vmtoolsds() {
    let m = manager();
    let dir = tempfile::tempdir().unwrap();
    let req = |program: &str, working_dir: &str| StartProgramRequest {
        start_minimized: false,
        program: program.into(),
        arguments: String::new(),
        working_dir: working_dir.into(),
        env: Vec::new(),
    };
    let missing = dir.path().join("missing");
    let err = m.start(&req(missing.to_str().unwrap(), "")).unwrap_err();
    assert_eq!(err.vix_error(), VixError::FILE_NOT_FOUND);
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "not a program").unwrap();
    let err = m.start(&req(plain.to_str().unwrap(), "")).unwrap_err();
    assert_eq!(err.vix_error(), VixError::GUEST_USER_PERMISSIONS);
    let err = m
        .start(&req("/bin/true", plain.to_str().unwrap()))
        .unwrap_err();
    assert_eq!(err.vix_error(), VixError::NOT_A_DIRECTORY);
    let err = m
        .start(&StartProgramRequest {
            env: vec!["NOEQUALS".into()],
            ..req("/bin/true", "")
        })
        .unwrap_err();
    assert_eq!(err.vix_error(), VixError::INVALID_ARG);
    assert_eq!(m.tracked(), 0, "nothing started");
}

#[test]
fn bare_names_get_pipes_served_as_files() {
    let m = manager();
    let files = ProcessFiles::new(m.clone());
    let pid = start(&m, "cat", "");
    assert!(files.claims(Path::new(&format!("/proc/{pid}/stdout"))));
    assert!(!files.claims(Path::new("/proc/cpuinfo")));
    assert!(!files.claims(Path::new("/proc/1/stdout")), "not ours");
    let no_read = OpenIntent {
        access: Access::Read,
        flags: OpenFlags::OPEN,
        create_mode: None,
    };
    assert!(files
        .open(Path::new(&format!("/proc/{pid}/stdin")), &no_read)
        .is_err());
    write_stdin(&files, pid, b"line one\nline two\n");
    assert_eq!(read_all(&files, pid, "stdout"), b"line one\nline two\n");
    assert_eq!(read_all(&files, pid, "stderr"), b"");
    assert_eq!(m.wait(pid, WAIT), Some(0));
    let attr = files
        .stat(Path::new(&format!("/proc/{pid}/stdout")))
        .unwrap();
    assert_eq!(attr.size, 0, "everything was read");
    let abs = start(&m, "/bin/cat", "");
    assert!(m.io(abs).is_none(), "absolute paths run without I/O");
    assert_eq!(m.wait(abs, WAIT), Some(0), "stdin is /dev/null");
}

#[test]
fn hundred_megabytes_through_stdout_with_bounded_buffer() {
    let m = manager_with(ManagerConfig {
        stream_buffer: 256 * 1024,
        ..ManagerConfig::default()
    });
    let files = ProcessFiles::new(m.clone());
    const SIZE: usize = 100 * 1024 * 1024;
    let pid = start(&m, "head", &format!("-c {SIZE} /dev/zero"));
    // Nobody reads yet: the program must block on its full pipe, not fill memory.
    std::thread::sleep(Duration::from_millis(300));
    let io = m.io(pid).unwrap();
    assert!(io.stream(Stream::Stdout).len() <= 256 * 1024);
    assert!(m.record(pid).unwrap().exit.is_none(), "blocked, not done");
    let out = read_all(&files, pid, "stdout");
    assert_eq!(out.len(), SIZE);
    assert!(out.iter().all(|b| *b == 0));
    assert_eq!(m.wait(pid, WAIT), Some(0));
}

fn group_members(pgid: i64) -> Vec<i64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i64>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // fields[0] is the state, [2] the process group.
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

#[test]
fn terminate_kills_the_tree_and_reports_missing_pids() {
    let m = manager();
    let pid = start(&m, "/bin/sh", "-c 'sleep 300 & sleep 300 & wait'");
    let deadline = Instant::now() + WAIT;
    while group_members(pid).len() < 3 {
        assert!(Instant::now() < deadline, "children never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    m.terminate(pid).unwrap();
    assert!(m.wait(pid, WAIT).is_some());
    let deadline = Instant::now() + WAIT;
    while !group_members(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "tree survived: {:?}",
            group_members(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        m.terminate(pid).unwrap_err().vix_error(),
        VixError::NO_SUCH_PROCESS,
        "already ended"
    );
    assert_eq!(
        m.terminate(i64::from(std::process::id()))
            .unwrap_err()
            .vix_error(),
        VixError::GUEST_USER_PERMISSIONS,
        "never the helper itself"
    );
    // A process the manager did not start, killed with this process's rights.
    let mut other = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let other_pid = i64::from(other.id());
    let killer = {
        let m = m.clone();
        std::thread::spawn(move || m.terminate(other_pid))
    };
    let status = other.wait().unwrap();
    assert!(!status.success());
    killer.join().unwrap().unwrap();
}

#[test]
fn unprivileged_kill_of_anothers_process_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    // A process of root's; the kill comes from a child running as nobody: the kernel's
    // answer is what the helper of an unprivileged user gets and maps to 3015.
    use std::os::unix::process::CommandExt as _;
    let mut victim = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let as_nobody = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("kill {} 2>&1; echo rc=$?", victim.id()))
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run kill as nobody");
    let said = String::from_utf8_lossy(&as_nobody.stdout);
    assert!(said.contains("rc=1"), "{said}");
    assert!(said.to_lowercase().contains("not permitted"), "{said}");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim.id() as i32), None).is_ok(),
        "still alive"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn thousand_short_programs_leave_no_zombie_and_bounded_state() {
    let m = manager_with(ManagerConfig {
        max_exited: 64,
        ..ManagerConfig::default()
    });
    for _ in 0..1000 {
        let pid = start(&m, "/bin/true", "");
        assert_eq!(m.wait(pid, WAIT), Some(0));
    }
    assert!(m.tracked() <= 64, "{} remembered", m.tracked());
    let me = std::process::id().to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let zombies: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|s| {
                let Some(c) = s.rfind(')') else { return false };
                let f: Vec<&str> = s[c + 2..].split_whitespace().collect();
                f.len() > 1 && f[0] == "Z" && f[1] == me
            })
            .collect();
        if zombies.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "zombies left: {zombies:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn functions_have_pids_streams_listing_and_kill() {
    let m = manager();
    let files = ProcessFiles::new(m.clone());
    let pid = start(&m, "fn.upper", "the-args");
    assert!(pid >= toolbox::process::manager::PSEUDO_PID_BASE);
    write_stdin(&files, pid, b"hello");
    assert_eq!(read_all(&files, pid, "stdout"), b"HELLO");
    assert_eq!(read_all(&files, pid, "stderr"), b"the-args");
    assert_eq!(m.wait(pid, WAIT), Some(0));
    let listing = proclist::listing(&m, &[pid as u64]);
    let list = client::parse_process_list(listing.as_bytes()).unwrap();
    assert_eq!(list[0].name, "fn.upper");
    assert_eq!(list[0].command_line, "fn.upper the-args");

    let blocked = start(&m, "fn.block", "");
    assert!(m.record(blocked).unwrap().exit.is_none());
    m.terminate(blocked).unwrap();
    assert_eq!(m.wait(blocked, WAIT), Some(42));
}

#[test]
fn large_listing_comes_in_vmtoolsd_chunks() {
    let m = manager();
    // A few programs with long command lines make the listing long.
    let long = "x".repeat(2000);
    let pids: Vec<i64> = (0..20)
        .map(|_| start(&m, "/bin/sleep", &format!("30 # {long}")))
        .collect();
    let mut cache = proclist::ListingCache::new();
    let first = proclist::list_processes(
        &mut cache,
        &m,
        &ListProcessesRequest {
            key: 0,
            offset: 0,
            pids: Vec::new(),
        },
        8192,
    )
    .unwrap();
    assert!(first.len() <= 8192);
    let chunk = client::parse_process_chunk(&first).unwrap();
    let key = chunk.key.expect("chunked");
    let total = chunk.total_size.unwrap() as usize;
    let mut data = chunk.data;
    let mut left = chunk.left_to_send.unwrap();
    let mut rounds = 1;
    while left > 0 {
        let next = proclist::list_processes(
            &mut cache,
            &m,
            &ListProcessesRequest {
                key,
                offset: data.len() as u32,
                pids: Vec::new(),
            },
            8192,
        )
        .unwrap();
        assert!(next.len() <= 8192);
        let c = client::parse_process_chunk(&next).unwrap();
        assert_eq!(c.key, None);
        data.extend_from_slice(&c.data);
        left = c.left_to_send.unwrap();
        rounds += 1;
    }
    assert!(rounds >= 5, "{rounds} chunks");
    assert_eq!(data.len(), total);
    assert!(cache.is_empty(), "the last chunk drops the listing");
    let list = client::parse_process_list(&data).unwrap();
    for pid in &pids {
        let p = list.iter().find(|p| p.pid == *pid).expect("listed");
        assert!(p.command_line.contains(&long));
    }
    assert!(list.iter().any(|p| p.pid == 1), "the rest of /proc too");
    let stale = proclist::list_processes(
        &mut cache,
        &m,
        &ListProcessesRequest {
            key,
            offset: 0,
            pids: Vec::new(),
        },
        8192,
    );
    assert_eq!(stale, Err(VixError::FAIL));
    for pid in pids {
        m.terminate(pid).unwrap();
    }
}

#[test]
fn service_answers_start_and_environment() {
    let m = manager();
    let mut service = ProcessService::new(m.clone());
    let reply = decode_reply(&service.handle(&encode_call(&client::start_program(
        "/bin/true",
        "",
        "",
        &[],
    ))))
    .unwrap();
    assert_eq!(reply.error, VixError::OK);
    let pid = client::parse_pid(&reply.result).unwrap();
    assert_eq!(m.wait(pid, WAIT), Some(0));
    let reply = decode_reply(
        &service.handle(&encode_call(&Command::ReadEnvironmentVariables(
            toolbox::vix::proto::ReadEnvRequest {
                names: vec!["PATH".into(), "SURELY_NOT_SET_ANYWHERE".into()],
            },
        ))),
    )
    .unwrap();
    let env = client::parse_env(&reply.result).unwrap();
    assert_eq!(env.len(), 1);
    assert_eq!(env[0], format!("PATH={}", std::env::var("PATH").unwrap()));
    let garbage = decode_reply(&service.handle(&[1, 2])).unwrap();
    assert_eq!(garbage.error, VixError::INVALID_MESSAGE_BODY);
    let kill = decode_reply(&service.handle(&encode_call(&Command::TerminateProcess(
        toolbox::vix::proto::TerminateProcessRequest {
            pid: u64::MAX,
            options: 0,
        },
    ))))
    .unwrap();
    assert_eq!(kill.error, VixError::NO_SUCH_PROCESS);
}
