//! Guest operations wired end to end: a VIX request from the simulator, a login by the shadow
//! backend, the operation in the user's helper process, the reply back over TCLO.

mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;
use toolbox::vix::client;
use toolbox::vix::proto::{Command, CreateDirectoryRequest, Reply, VixError};
use util::*;

const SEC: Duration = Duration::from_secs(1);

/// The agent's config: quiet power, the shadow backend over the test fixtures (bob, uid 2002,
/// password `bob-pw-2`).
fn config() -> String {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth");
    format!(
        "{QUIET_CONFIG}[auth]\nbackend = \"shadow\"\npasswd_file = \"{fixtures}/passwd\"\n\
         group_file = \"{fixtures}/group\"\nshadow_file = \"{fixtures}/shadow\"\n\
         shells_file = \"{fixtures}/shells\"\n"
    )
}

async fn vix(sim: &toolbox::sim::Sim, command: &Command, user: &str, password: &str) -> Reply {
    let creds = client::login(user, password);
    let request = client::relayed_request(command, Some(&creds), 7);
    let reply = sim.tclo(&request, 10 * SEC).await.expect("no TCLO reply");
    let body = reply
        .strip_prefix(b"OK ")
        .unwrap_or_else(|| panic!("{:?}", String::from_utf8_lossy(&reply)));
    client::parse_reply(command, body).expect("reply decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_made_as_the_logged_in_user_and_a_wrong_password_is_invalid_login() {
    if !root_or_skip(
        "a_directory_is_made_as_the_logged_in_user_and_a_wrong_password_is_invalid_login",
    ) {
        return;
    }
    let dir = TempDir::new("guestops");
    let work = dir.0.join("shared");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sim = sim(&dir).await;
    let _agent = Agent::start(&[], &dir, sim.dir(), &config());
    let r = tools_running(&sim).await;
    assert!(
        r.capabilities.iter().any(|c| c == "hgfs_server toolbox 1"),
        "{:?}",
        r.capabilities
    );

    let target = work.join("made/by/bob");
    let mkdir = Command::CreateDirectory(CreateDirectoryRequest {
        options: 0,
        path: target.to_str().unwrap().to_string(),
        properties: Vec::new(),
        create_parents: true,
    });
    let reply = vix(&sim, &mkdir, "bob", "wrong").await;
    assert_eq!(reply.error, VixError::INVALID_LOGIN_CREDENTIALS);
    assert!(
        !work.join("made").exists(),
        "a failed login changed something"
    );

    // A failure holds the user's next login back for a second (the rate limit): the right
    // password goes through once that has passed.
    let started = std::time::Instant::now();
    let reply = loop {
        let reply = vix(&sim, &mkdir, "bob", "bob-pw-2").await;
        if reply.error != VixError::INVALID_LOGIN_CREDENTIALS || started.elapsed() > 10 * SEC {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(reply.error, VixError::OK, "{reply:?}");
    for d in ["made", "made/by", "made/by/bob"] {
        let meta = std::fs::metadata(work.join(d)).unwrap();
        assert_eq!(meta.uid(), 2002, "{d} is not bob's");
    }

    // Again: the directory exists now, as vmtoolsd says it.
    let again = Command::CreateDirectory(CreateDirectoryRequest {
        options: 0,
        path: target.to_str().unwrap().to_string(),
        properties: Vec::new(),
        create_parents: false,
    });
    let reply = vix(&sim, &again, "bob", "bob-pw-2").await;
    assert_eq!(reply.error, VixError::FILE_ALREADY_EXISTS);

    // The tools state needs no login.
    let request = client::relayed_request(&Command::GetToolsState, None, 8);
    let reply = sim.tclo(&request, 10 * SEC).await.unwrap();
    let body = reply.strip_prefix(b"OK ").unwrap();
    let reply = client::parse_reply(&Command::GetToolsState, body).unwrap();
    assert_eq!(reply.error, VixError::OK);
    client::parse_tools_state(&reply.result).expect("a property list");
}

/// The one-chunk listing of `pid`.
async fn process(sim: &toolbox::sim::Sim, pid: i64) -> client::ProcessInfo {
    let reply = vix(
        sim,
        &client::list_processes(0, 0, &[pid as u64]),
        "bob",
        "bob-pw-2",
    )
    .await;
    assert_eq!(reply.error, VixError::OK, "{reply:?}");
    let chunk = client::parse_process_chunk(&reply.result).unwrap();
    let mut procs = client::parse_process_list(&chunk.data).unwrap();
    assert_eq!(procs.len(), 1, "{procs:?}");
    procs.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_operations_run_in_the_users_helper_and_its_streams_are_files() {
    if !root_or_skip("process_operations_run_in_the_users_helper_and_its_streams_are_files") {
        return;
    }
    let dir = TempDir::new("guestprocs");
    let work = dir.0.join("shared");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sim = sim(&dir).await;
    let _agent = Agent::start(&[], &dir, sim.dir(), &config());
    tools_running(&sim).await;

    // An absolute path runs through /bin/sh -c as bob, in the directory asked for, with the
    // request's variables, and its exit code is kept.
    let out = work.join("out");
    let start = client::start_program(
        "/bin/sh",
        &format!(
            "-c 'echo \"$GREETING\" $(id -u) $(pwd) > {}; exit 3'",
            out.display()
        ),
        work.to_str().unwrap(),
        &["GREETING=hello there".into()],
    );
    let reply = vix(&sim, &start, "bob", "bob-pw-2").await;
    assert_eq!(reply.error, VixError::OK, "{reply:?}");
    let pid = client::parse_pid(&reply.result).unwrap();
    let started = std::time::Instant::now();
    let ended = loop {
        let p = process(&sim, pid).await;
        if p.end_time != 0 || started.elapsed() > 10 * SEC {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (ended.exit_code, ended.owner.as_str()),
        (3, "bob"),
        "{ended:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("hello there 2002 {}\n", work.display())
    );
    assert_eq!(std::fs::metadata(&out).unwrap().uid(), 2002);

    // The environment bob would see.
    let reply = vix(
        &sim,
        &client::read_environment(&["USER".into()]),
        "bob",
        "bob-pw-2",
    )
    .await;
    assert_eq!(reply.error, VixError::OK);
    assert_eq!(client::parse_env(&reply.result).unwrap(), vec!["USER=bob"]);

    // A name without `/` gets pipes the host reads and writes as /proc/<pid>/std* files.
    let reply = vix(
        &sim,
        &client::start_program("cat", "", "", &[]),
        "bob",
        "bob-pw-2",
    )
    .await;
    assert_eq!(reply.error, VixError::OK, "{reply:?}");
    let cat = client::parse_pid(&reply.result).unwrap();
    let mut ops = toolbox::sim::guestops::GuestOps::new(
        toolbox::sim::guestops::InProcess(sim.clone()),
        client::login("bob", "bob-pw-2"),
    );
    let mut input: &[u8] = b"through the guest and back\n";
    ops.upload(
        &mut input,
        &format!("/proc/{cat}/stdin"),
        Default::default(),
        true,
        &mut toolbox::sim::guestops::Quiet,
    )
    .await
    .expect("stdin written");
    let mut output = Vec::new();
    ops.download(
        &format!("/proc/{cat}/stdout"),
        &mut output,
        &mut toolbox::sim::guestops::Quiet,
    )
    .await
    .expect("stdout read");
    assert_eq!(output, b"through the guest and back\n");

    // Bob may not kill root's processes; his own he may.
    let root_sleep = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let reply = vix(
        &sim,
        &client::terminate_process(u64::from(root_sleep.id())),
        "bob",
        "bob-pw-2",
    )
    .await;
    assert_ne!(reply.error, VixError::OK);
    let mut root_sleep = root_sleep;
    assert!(
        root_sleep.try_wait().unwrap().is_none(),
        "root's process died"
    );
    let _ = root_sleep.kill();
    let _ = root_sleep.wait();
    let reply = vix(
        &sim,
        &client::start_program("/bin/sleep", "30", "", &[]),
        "bob",
        "bob-pw-2",
    )
    .await;
    let sleeper = client::parse_pid(&reply.result).unwrap();
    let reply = vix(
        &sim,
        &client::terminate_process(sleeper as u64),
        "bob",
        "bob-pw-2",
    )
    .await;
    assert_eq!(reply.error, VixError::OK, "{reply:?}");
    let started = std::time::Instant::now();
    while process(&sim, sleeper).await.end_time == 0 {
        assert!(started.elapsed() < 10 * SEC, "the kill did not end it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_helper_whose_programs_run_or_have_unread_exit_codes_outlives_its_idle_timeout() {
    use toolbox::guestops::{HelperPool, PoolConfig};
    use toolbox::process;
    let pool = HelperPool::new(PoolConfig {
        program: env!("CARGO_BIN_EXE_toolbox").into(),
        idle_timeout: Duration::from_millis(200),
        ..PoolConfig::default()
    });
    let me = own_identity();
    let run = |command: &Command| {
        let reply = pool
            .call(
                &me,
                process::PROCESS_SERVICE,
                &process::encode_call(command),
            )
            .unwrap();
        process::decode_reply(&reply).unwrap()
    };
    let started = run(&client::start_program("/bin/sleep", "30", "", &[]));
    assert_eq!(started.error, VixError::OK, "{started:?}");
    let sleeper = client::parse_pid(&started.result).unwrap();
    let helper = pool.helper_pid(me.uid).expect("a helper");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        pool.helper_pid(me.uid),
        Some(helper),
        "stopped while its program ran"
    );
    assert_eq!(
        run(&client::terminate_process(sleeper as u64)).error,
        VixError::OK
    );
    std::thread::sleep(Duration::from_millis(1000));
    // The exit code is the host's to read for vmtoolsd's five minutes: the helper stays.
    assert_eq!(pool.helper_pid(me.uid), Some(helper));
    let listed = run(&client::list_processes(0, 0, &[sleeper as u64]));
    let chunk = client::parse_process_chunk(&listed.result).unwrap();
    let procs = client::parse_process_list(&chunk.data).unwrap();
    assert!(procs[0].end_time != 0, "{procs:?}");
}

#[test]
fn a_helper_already_running_as_its_user_needs_no_capability_to_switch() {
    use toolbox::guestops::{HelperPool, PoolConfig, ServiceId};
    if !root_or_skip("a_helper_already_running_as_its_user_needs_no_capability_to_switch") {
        return;
    }
    // As LinuxKit runs the agent: root, but with CAP_SYS_BOOT only, so no setgroups/setresuid.
    let pool = HelperPool::new(PoolConfig {
        program: "setpriv".into(),
        args: [
            "--bounding-set=-all,+sys_boot",
            "--inh-caps=-all",
            env!("CARGO_BIN_EXE_toolbox"),
            toolbox::guestops::HELPER_SUBCOMMAND,
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
        ..PoolConfig::default()
    });
    // The test runs as root (checked above), so this is root.
    let root = own_identity();
    let report = pool
        .call(&root, ServiceId::IDENTITY, &[])
        .expect("root's helper starts");
    let report = toolbox::guestops::frame::Report::decode(&report).unwrap();
    assert_eq!(report.uids, [0; 3]);
}
