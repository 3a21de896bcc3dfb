//! vmtoolsd's behaviour where the agent must match it exactly, each rule from its source, the
//! real binary against the simulator.

mod util;

use std::time::Duration;
use toolbox_rpc::datamap::{self, DataMap, Value};
use toolbox_rpc::packet::{Packet, FIELD_TYPE};
use util::*;

const SEC: Duration = Duration::from_secs(1);

/// `lib/rpcIn/rpcin.c` (`RpcInDecodePacket`): a packet without a payload is not a request. The
/// channel is closed, never answered, and the guest comes back on a new one.
async fn closes_unanswered_on(frame: &[u8]) {
    let dir = TempDir::new("notreq");
    let sim = sim(&dir).await;
    let _agent = Agent::start(&[], &dir, sim.dir(), QUIET_CONFIG);
    tools_running(&sim).await;
    let before = sim.report();
    assert!(sim.send_raw(frame).await);
    let r = sim
        .wait_for(5 * SEC, |r| r.tclo_connections > before.tclo_connections)
        .await
        .expect("the guest did not reopen the channel");
    assert_eq!(sim.tclo(b"ping", 5 * SEC).await.unwrap(), b"OK ");
    // The reconnection came after the old channel's end, so anything the guest had answered
    // would have been counted by now.
    assert_eq!(
        r.unsolicited_replies, before.unsolicited_replies,
        "the guest answered a frame that was not a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_packet_without_payload_is_not_answered() {
    let mut map = DataMap::new();
    map.insert(FIELD_TYPE, Value::Int64(1));
    closes_unanswered_on(&datamap::encode(&map).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_length_frame_is_not_answered() {
    closes_unanswered_on(&[0, 0, 0, 0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_from_the_host_is_not_answered() {
    closes_unanswered_on(&Packet::ping().encode()).await;
}

/// `ToolsCoreRpcCapReg`: capabilities and the version reach the VMX before the reply does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_are_registered_before_the_reply() {
    let dir = TempDir::new("caps");
    let sim = toolbox::sim::Sim::start(&dir.0.join("vmx"), false)
        .await
        .unwrap();
    let _agent = Agent::start(&[], &dir, sim.dir(), QUIET_CONFIG);
    assert_eq!(
        sim.tclo(b"Capabilities_Register", 10 * SEC).await.unwrap(),
        b"OK "
    );
    let r = sim.report();
    assert!(r.capabilities.contains(&"statechange".to_string()), "{r:?}");
    assert!(r.capabilities.contains(&"softpowerop_retry".to_string()));
    assert!(r
        .capabilities
        .iter()
        .any(|c| c.starts_with("guest_conf_directory ")));
    assert_eq!(r.tools_version.as_deref(), Some("2147483647 4"));
}

/// `ToolsCoreRpcSetOption`: an option no plugin takes is refused; each plugin's own are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_no_feature_takes_are_refused() {
    let dir = TempDir::new("options");
    let sim = sim(&dir).await;
    let _agent = Agent::start(&[], &dir, sim.dir(), QUIET_CONFIG);
    tools_running(&sim).await;
    for (req, want) in [
        (
            &b"Set_Option synctime 1"[..],
            &b"ERROR Unknown or invalid option"[..],
        ),
        (
            b"Set_Option enableDnD 1",
            b"ERROR Unknown or invalid option",
        ),
        (b"Set_Option broadcastIP 0", b"OK "),
        (
            b"Set_Option broadcastIP 7",
            b"ERROR Unknown or invalid option",
        ),
        (b"Set_Option toolScripts.afterPowerOn 0", b"OK "),
        (
            b"Set_Option toolScripts.beforePowerOff 2",
            b"ERROR Unknown or invalid option",
        ),
        (
            b"Set_Option broadcastIP",
            b"ERROR Unknown or invalid option",
        ),
    ] {
        assert_eq!(
            sim.tclo(req, 5 * SEC).await.unwrap(),
            want,
            "{}",
            String::from_utf8_lossy(req)
        );
    }
}

/// `PowerOpsStateChange`: a script that cannot start is `ERROR Error starting script` with
/// status 0, and the next request is taken (nothing stays in progress).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_cannot_start_is_an_error_and_releases_the_state_change() {
    let dir = TempDir::new("nostart");
    let not_executable = dir.write("poweron.sh", "#!/bin/sh\nexit 0\n");
    let sim = sim(&dir).await;
    let cfg = format!(
        "[power]\nmethod = \"none\"\nscripts_dir = \"/nonexistent\"\npoweron_script = \"{}\"\n",
        not_executable.display()
    );
    let _agent = Agent::start(&[], &dir, sim.dir(), &cfg);
    tools_running(&sim).await;
    assert_eq!(
        sim.tclo(b"OS_PowerOn", 5 * SEC).await.unwrap(),
        b"ERROR Error starting script"
    );
    let r = sim
        .wait_for(5 * SEC, |r| !r.statechanges.is_empty())
        .await
        .unwrap();
    assert_eq!(r.statechanges, vec![(0, 3)]);
    // Released: another state change is accepted (it has no script) and reports success.
    let reply = loop {
        let reply = sim.tclo(b"OS_Resume", 5 * SEC).await.unwrap();
        if reply != b"ERROR State change already in progress" {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reply, b"OK ");
    let r = sim
        .wait_for(5 * SEC, |r| r.statechanges.len() == 2)
        .await
        .unwrap();
    assert_eq!(r.statechanges[1], (1, 4));
}

/// `PowerOpsSetOption`: the host can turn a state change's script off; it then does not run
/// and the change succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_can_turn_a_script_off() {
    let dir = TempDir::new("scriptoff");
    let ran = dir.0.join("ran");
    let script = dir.script("suspend.sh", &format!("touch {}", ran.display()));
    let sim = sim(&dir).await;
    let cfg = format!(
        "[power]\nmethod = \"none\"\nscripts_dir = \"/nonexistent\"\nsuspend_script = \"{}\"\n",
        script.display()
    );
    let _agent = Agent::start(&[], &dir, sim.dir(), &cfg);
    tools_running(&sim).await;
    assert_eq!(
        sim.tclo(b"Set_Option toolScripts.beforeSuspend 0", 5 * SEC)
            .await
            .unwrap(),
        b"OK "
    );
    assert_eq!(sim.tclo(b"OS_Suspend", 5 * SEC).await.unwrap(), b"OK ");
    let r = sim
        .wait_for(5 * SEC, |r| !r.statechanges.is_empty())
        .await
        .unwrap();
    // The status follows the decision not to run the script.
    assert_eq!(r.statechanges, vec![(1, 5)]);
    assert!(
        !ran.exists(),
        "the script ran though the host turned it off"
    );
    // And on again.
    assert_eq!(
        sim.tclo(b"Set_Option toolScripts.beforeSuspend 1", 5 * SEC)
            .await
            .unwrap(),
        b"OK "
    );
    let reply = loop {
        let reply = sim.tclo(b"OS_Suspend", 5 * SEC).await.unwrap();
        if reply != b"ERROR State change already in progress" {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reply, b"OK ");
    sim.wait_for(5 * SEC, |r| r.statechanges.len() == 2)
        .await
        .unwrap();
    assert!(ran.exists(), "the script did not run once turned on again");
}

/// `GuestInfoServerSetOption` with `GuestInfo_GetPrimaryIP`: no address is an empty value, and
/// the request carries the C string's terminator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_ip_without_an_address_sends_an_empty_value() {
    let dir = TempDir::new("noip");
    let sim = sim(&dir).await;
    let cfg = format!("{QUIET_CONFIG}[guestinfo]\nexclude_nics = [\"*\"]\n");
    let _agent = Agent::start(&[], &dir, sim.dir(), &cfg);
    let r = sim
        .wait_for(10 * SEC, |r| r.ip_sets > 0)
        .await
        .expect("the greeting's broadcastIP set no guestinfo.ip");
    assert_eq!(r.ip.as_deref(), Some(""));
    assert_eq!(r.ip_nul_terminated, Some(true));
    assert_eq!(
        sim.tclo(b"Set_Option broadcastIP 1", 5 * SEC)
            .await
            .unwrap(),
        b"OK "
    );
}
