//! The real `toolbox run` against the simulator on unix:DIR.

mod util;

use std::time::{Duration, Instant};
use util::*;

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_run_and_report_after_start() {
    let dir = TempDir::new("start");
    let sim = sim(&dir).await;
    let _agent = Agent::start(&[], &dir, sim.dir(), QUIET_CONFIG);
    let r = tools_running(&sim).await;
    assert_eq!(r.tools_version.as_deref(), Some("2147483647 4"));
    assert!(r.capabilities.contains(&"statechange".to_string()), "{r:?}");
    assert!(r.capabilities.contains(&"softpowerop_retry".to_string()));
    assert_eq!(r.nic_info_type, Some(10));
    assert!(r.os_full.as_deref().unwrap().starts_with("Linux "));
    assert!(r.os_short.as_deref().unwrap().ends_with("-64"));
    assert!(r
        .os_detailed
        .as_deref()
        .unwrap()
        .contains("familyName='Linux'"));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // The greeting's broadcastIP made the guest set guestinfo.ip.
    let r = sim.wait_for(10 * SEC, |r| r.ip.is_some()).await.unwrap();
    assert!(r.ip.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_ping_and_unknown_commands() {
    let dir = TempDir::new("reset");
    let sim = sim(&dir).await;
    let _agent = Agent::start(&[], &dir, sim.dir(), QUIET_CONFIG);
    tools_running(&sim).await;
    assert_eq!(
        sim.tclo(b"reset", 5 * SEC).await.unwrap(),
        b"OK ATR toolbox"
    );
    assert_eq!(sim.tclo(b"ping", 5 * SEC).await.unwrap(), b"OK ");
    // No feature here syncs time: refused as vmtoolsd without its timeSync plugin refuses it.
    assert_eq!(
        sim.tclo(b"Set_Option synctime 0", 5 * SEC).await.unwrap(),
        b"ERROR Unknown or invalid option"
    );
    assert_eq!(
        sim.tclo(b"Set_Option broadcastIP 0", 5 * SEC)
            .await
            .unwrap(),
        b"OK "
    );
    assert_eq!(
        sim.tclo(b"No_Such_Command x", 5 * SEC).await.unwrap(),
        b"ERROR Unknown Command"
    );
    // Heartbeats arrive once a second after the first reply.
    let pings = sim.report().pings;
    let r = sim.wait_for(5 * SEC, |r| r.pings >= pings + 2).await;
    assert!(r.is_ok(), "no heartbeat: {:?}", r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_while_a_slow_state_change_runs() {
    let dir = TempDir::new("slow");
    let marker = dir.0.join("ran");
    let gate = dir.0.join("gate");
    // The script ends only once the test opens the gate (or its directory is gone, should the
    // test fail first): whatever is answered before that did not wait for it.
    let script = dir.script(
        "poweron.sh",
        &format!(
            "while [ -d {d} ] && [ ! -e {g} ]; do sleep 0.02; done; echo ok > {m}",
            d = dir.path().display(),
            g = gate.display(),
            m = marker.display()
        ),
    );
    let sim = sim(&dir).await;
    let cfg = format!(
        "[power]\nmethod = \"none\"\npoweron_script = \"{}\"\n",
        script.display()
    );
    let _agent = Agent::start(&[], &dir, sim.dir(), &cfg);
    tools_running(&sim).await;
    assert_eq!(sim.tclo(b"OS_PowerOn", 5 * SEC).await.unwrap(), b"OK ");
    assert_eq!(sim.tclo(b"ping", 5 * SEC).await.unwrap(), b"OK ");
    assert_eq!(
        sim.tclo(b"OS_Halt", 5 * SEC).await.unwrap(),
        b"ERROR State change already in progress"
    );
    // The gate is shut, so the script is still running: no status yet.
    assert!(sim.report().statechanges.is_empty());
    assert!(!marker.exists());
    std::fs::write(&gate, "").unwrap();
    let r = sim
        .wait_for(10 * SEC, |r| !r.statechanges.is_empty())
        .await
        .unwrap();
    assert_eq!(r.statechanges, vec![(1, 3)]);
    assert!(marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_power_op_reports_its_status() {
    let dir = TempDir::new("ops");
    let sim = sim(&dir).await;
    let _agent = Agent::start(&[], &dir, sim.dir(), QUIET_CONFIG);
    tools_running(&sim).await;
    for (i, (op, state)) in [
        ("OS_PowerOn", 3),
        ("OS_Resume", 4),
        ("OS_Suspend", 5),
        ("OS_Halt", 1),
        ("OS_Reboot", 2),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(send_power_op(&sim, op).await, b"OK ", "{op}");
        let r = sim
            .wait_for(5 * SEC, |r| r.statechanges.len() > i)
            .await
            .unwrap();
        assert_eq!(r.statechanges[i], (1, state), "{op}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_reports_status_0_and_a_retry_goes_through() {
    let dir = TempDir::new("fail");
    // Script runs and the halt program write to one log, so its order tells whether a halt
    // followed the failed script: the in-progress flag is released only after the halt step,
    // so such a halt would come before the retry's script line.
    let events = dir.0.join("events");
    let halt = dir.script("halt.sh", &format!("echo halt >> {}", events.display()));
    let script = dir.script(
        "poweroff.sh",
        &format!("echo script >> {}; exit 3", events.display()),
    );
    let sim = sim(&dir).await;
    let cfg = format!("[power]\nmethod = \"command\"\nhalt_command = [\"{}\"]\nreboot_command = [\"/bin/false\"]\npoweroff_script = \"{}\"\n", halt.display(), script.display());
    let _agent = Agent::start(&[], &dir, sim.dir(), &cfg);
    tools_running(&sim).await;
    assert_eq!(sim.tclo(b"OS_Halt", 5 * SEC).await.unwrap(), b"OK ");
    let r = sim
        .wait_for(5 * SEC, |r| !r.statechanges.is_empty())
        .await
        .unwrap();
    assert_eq!(r.statechanges, vec![(0, 1)]);
    // vmtoolsd's rule: the same state change right after a failure is forced through.
    assert_eq!(send_power_op(&sim, "OS_Halt").await, b"OK ");
    let r = sim
        .wait_for(5 * SEC, |r| r.statechanges.len() == 2)
        .await
        .unwrap();
    assert_eq!(r.statechanges[1], (1, 1));
    wait_until(5 * SEC, "the halt command", || {
        lines(&events).contains(&"halt".to_string())
    })
    .await;
    assert_eq!(
        lines(&events),
        ["script", "script", "halt"],
        "halted despite the failing script, or not after the retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_method_runs_the_halt_and_reboot_programs() {
    let dir = TempDir::new("command");
    let out = dir.0.join("out");
    let halt = dir.script("halt.sh", &format!("echo halt >> {}", out.display()));
    let reboot = dir.script(
        "reboot.sh",
        &format!("echo reboot \"$1\" >> {}", out.display()),
    );
    let sim = sim(&dir).await;
    let cfg = format!(
        "[power]\nmethod = \"command\"\nhalt_command = [\"{}\"]\nreboot_command = [\"{}\", \"now\"]\nscripts_dir = \"{}\"\n",
        halt.display(),
        reboot.display(),
        dir.0.join("none").display()
    );
    let _agent = Agent::start(&[], &dir, sim.dir(), &cfg);
    tools_running(&sim).await;
    for (i, op) in ["OS_Halt", "OS_Reboot"].into_iter().enumerate() {
        // Halt stays in progress until its program has exited, which may be after the line
        // the loop waited for was written: the reboot retries past that.
        assert_eq!(send_power_op(&sim, op).await, b"OK ", "{op}");
        let r = sim
            .wait_for(5 * SEC, |r| r.statechanges.len() > i)
            .await
            .unwrap();
        assert_eq!(r.statechanges[i].0, 1, "{op}");
        // The status goes out before the action; wait for the program.
        wait_until(5 * SEC, op, || lines(&out).len() > i).await;
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "halt\nreboot now\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_method_calls_systemctl() {
    let dir = TempDir::new("systemd");
    let bin = dir.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let out = dir.0.join("out");
    dir.script(
        "bin/systemctl",
        &format!("echo \"$@\" >> {}", out.display()),
    );
    let sim = sim(&dir).await;
    let cfg_path = dir.write(
        "toolbox.toml",
        "[power]\nmethod = \"systemd\"\nscripts_dir = \"/nonexistent\"\n",
    );
    let mut child = std::process::Command::new(BIN)
        .args([
            "run",
            "-c",
            &cfg_path.display().to_string(),
            "--transport",
            &format!("unix:{}", sim.dir().display()),
        ])
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tools_running(&sim).await;
    assert_eq!(sim.tclo(b"OS_Reboot", 5 * SEC).await.unwrap(), b"OK ");
    sim.tclo(b"OS_Halt", 5 * SEC).await.ok();
    wait_until(5 * SEC, "systemctl", || !lines(&out).is_empty()).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .starts_with("reboot\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid1_signal_method_signals_the_init() {
    let dir = TempDir::new("pid1");
    let out = dir.0.join("out");
    let ready = dir.0.join("ready");
    // A stand-in init: records which signal it got, once it says its traps are set; it gives
    // up when the test's directory is gone.
    let init = dir.script(
        "init.sh",
        &format!(
            "trap 'echo usr2 > {o}; exit 0' USR2; trap 'echo term > {o}; exit 0' TERM; : > {r}; \
             while [ -d {d} ]; do sleep 0.05; done; exit 1",
            o = out.display(),
            r = ready.display(),
            d = dir.path().display()
        ),
    );
    for (op, want) in [("OS_Halt", "usr2"), ("OS_Reboot", "term")] {
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&ready);
        let mut stand_in = std::process::Command::new(&init).spawn().unwrap();
        wait_until(5 * SEC, "the stand-in init's traps", || ready.exists()).await;
        let sim = sim(&dir).await;
        let cfg = format!(
            "[power]\nmethod = \"pid1-signal\"\npid1 = {}\nscripts_dir = \"/nonexistent\"\n",
            stand_in.id()
        );
        let agent = Agent::start(&[], &dir, sim.dir(), &cfg);
        tools_running(&sim).await;
        sim.tclo(op.as_bytes(), 5 * SEC).await.unwrap();
        let status = tokio::task::spawn_blocking(move || stand_in.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), want, "{op}");
        drop(agent);
    }
}

/// `syscall`: as the init of its own PID namespace, reboot(2) ends the namespace, with SIGINT
/// for power off and SIGHUP for restart (pid_namespaces(7)); the host is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syscall_method_reboots_its_pid_namespace() {
    if !root_or_skip("syscall_method_reboots_its_pid_namespace") {
        return;
    }
    // As root (CI) the test must run: a missing unshare(1) is a failure, not a skip.
    assert!(
        std::process::Command::new("unshare")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "unshare(1) from util-linux is needed"
    );
    for (op, signal) in [("OS_Halt", libc::SIGINT), ("OS_Reboot", libc::SIGHUP)] {
        let dir = TempDir::new(&format!("syscall-{signal}"));
        let sim = sim(&dir).await;
        let cfg = "[power]\nmethod = \"syscall\"\nscripts_dir = \"/nonexistent\"\n";
        let mut agent = Agent::start(
            &["unshare", "--pid", "--fork", "--kill-child"],
            &dir,
            sim.dir(),
            cfg,
        );
        tools_running(&sim).await;
        sim.tclo(op.as_bytes(), 5 * SEC).await.unwrap();
        let r = sim
            .wait_for(5 * SEC, |r| !r.statechanges.is_empty())
            .await
            .unwrap();
        assert_eq!(r.statechanges[0].0, 1);
        let mut status = None;
        for _ in 0..250 {
            if let Ok(Some(s)) = agent.child.try_wait() {
                status = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = status
            .unwrap_or_else(|| panic!("{op}: the namespace did not end; log: {}", agent.log()));
        // unshare reports the child's death by signal as 128 + signal.
        use std::os::unix::process::ExitStatusExt;
        let code = status.code().or(status.signal().map(|s| 128 + s));
        assert_eq!(code, Some(128 + signal), "{op}: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_exit_1_with_one_line() {
    let dir = TempDir::new("config");
    for (text, want) in [
        (
            "[power]\nmethod = \"teleport\"\n",
            "unknown variant `teleport`",
        ),
        ("bogus = 1\n", "unknown field `bogus`"),
        ("transport = \"tcp\"\n", "unknown transport"),
    ] {
        let cfg = dir.write("bad.toml", text);
        let out = std::process::Command::new(BIN)
            .args(["run", "-c", &cfg.display().to_string()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!("toolbox: config {}", cfg.display())) && err.contains(want),
            "{text}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let out = std::process::Command::new(BIN)
        .args(["run", "-c", "/nonexistent/toolbox.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("toolbox: reading config /nonexistent/toolbox.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_closes_the_channel() {
    let dir = TempDir::new("term");
    let sim = sim(&dir).await;
    let mut agent = Agent::start(&[], &dir, sim.dir(), QUIET_CONFIG);
    tools_running(&sim).await;
    let status = agent
        .terminate(5 * SEC)
        .await
        .expect("the agent did not stop");
    assert!(status.success(), "{status:?}");
    // The VMX sees the TCLO channel closed at once: a request fails fast.
    let e = sim.tclo(b"ping", SEC).await.unwrap_err();
    assert!(
        e.contains("no guest") || e.contains("closed") || e.contains("sending"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_from_faults_within_5s_without_spinning() {
    let dir = TempDir::new("faults");
    let sim = sim(&dir).await;
    let agent = Agent::start(&[], &dir, sim.dir(), QUIET_CONFIG);
    tools_running(&sim).await;
    let cpu0 = agent.cpu_seconds();
    let t0 = Instant::now();

    // Dropped channel: the agent reconnects and answers again.
    let conns = sim.report().tclo_connections;
    sim.drop_connections().await;
    let t = Instant::now();
    sim.wait_for(5 * SEC, |r| r.tclo_connections > conns)
        .await
        .expect("no reconnection after a drop");
    assert_eq!(sim.tclo(b"ping", 5 * SEC).await.unwrap(), b"OK ");
    assert!(t.elapsed() < 5 * SEC);
    // RPCI was dropped too: the next report goes over a fresh connection.
    let changes = sim.report().statechanges.len();
    assert_eq!(sim.tclo(b"OS_Resume", 5 * SEC).await.unwrap(), b"OK ");
    let r = sim
        .wait_for(5 * SEC, |r| r.statechanges.len() > changes)
        .await
        .expect("no status after RPCI was dropped");
    assert_eq!(r.statechanges[changes], (1, 4));

    // Garbage on the channel: the agent drops it and reconnects.
    let before = sim.report();
    assert!(sim.send_garbage().await);
    let t = Instant::now();
    sim.wait_for(5 * SEC, |r| r.tclo_connections > before.tclo_connections)
        .await
        .expect("no reconnection after garbage");
    assert_eq!(sim.tclo(b"ping", 5 * SEC).await.unwrap(), b"OK ");
    assert!(t.elapsed() < 5 * SEC);
    // The new connection's greeting ends with Capabilities_Register and Set_Option, which
    // wait for RPCI as vmtoolsd's do; slow RPCI must not start before they are through.
    sim.wait_for(5 * SEC, |r| r.greeted_connection == r.tclo_connections)
        .await
        .expect("the greeting after the reconnection did not finish");

    // Slow RPCI replies do not hold up TCLO. The delay is within the agent's RPCI timeout and
    // is cut short below by clearing the fault, which releases the held reply.
    sim.set_faults(toolbox::sim::Faults {
        rpci_delay_ms: 8000,
        refuse: vec![],
    });
    // A reset makes the guest push everything again, over the slow RPCI channel.
    let reply = sim
        .tclo(b"reset", 5 * SEC)
        .await
        .unwrap_or_else(|e| panic!("reset while RPCI is slow: {e}; log:\n{}", agent.log()));
    assert_eq!(reply, b"OK ATR toolbox");
    let held = sim
        .wait_for(5 * SEC, |r| r.rpci_replies_held > 0)
        .await
        .expect("no RPCI request after the reset");
    let reply = sim
        .tclo(b"ping", 5 * SEC)
        .await
        .unwrap_or_else(|e| panic!("ping while RPCI is slow: {e}; log:\n{}", agent.log()));
    assert_eq!(reply, b"OK ");
    // No RPCI reply went out between the ping and its answer: the ping did not wait for one.
    let r = sim.report();
    assert!(
        r.rpci_replies_held > 0 && r.rpci_requests == held.rpci_requests,
        "ping waited for RPCI: {} replies held, {} answered before, {} after",
        r.rpci_replies_held,
        held.rpci_requests,
        r.rpci_requests
    );
    sim.set_faults(toolbox::sim::Faults::default());
    sim.wait_for(5 * SEC, |r| r.rpci_replies_held == 0)
        .await
        .expect("clearing the delay released no RPCI reply");

    // A VMX refusing NIC info v3 gets the v3-as-type-9 fallback.
    sim.set_faults(toolbox::sim::Faults {
        rpci_delay_ms: 0,
        refuse: vec!["SetGuestInfo  10 ".into()],
    });
    sim.tclo(b"reset", 5 * SEC).await.unwrap();
    let r = sim.wait_for(5 * SEC, |r| r.nic_info_type == Some(9)).await;
    assert!(r.is_ok(), "no fallback to type 9: {:?}", r);
    sim.set_faults(toolbox::sim::Faults::default());

    // No spinning: well under a CPU second for all of it.
    let cpu = agent.cpu_seconds() - cpu0;
    assert!(cpu < 1.0, "{cpu} CPU seconds in {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmx_that_goes_away_costs_no_cpu() {
    let dir = TempDir::new("gone");
    let vmx = dir.0.join("vmx");
    std::fs::create_dir_all(&vmx).unwrap();
    // No simulator at all: every connection attempt fails.
    let agent = Agent::start(&[], &dir, &vmx, QUIET_CONFIG);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = agent.cpu_seconds();
    // A spinning reconnect loop would burn most of the 3 s.
    assert!(cpu < 0.5, "{cpu} CPU seconds while the VMX was unreachable");
    // And it connects once the VMX appears.
    let sim = toolbox::sim::Sim::start(&vmx, true).await.unwrap();
    tools_running(&sim).await;
}
