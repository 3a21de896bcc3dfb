//! The service polling TCLO over the backdoor, against the register-level VMX model: the same
//! message channel code the real port runs, in process.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use toolbox::config::Config;
use toolbox::service::channel::Connector;
use toolbox_rpc::model::{ModelConfig, VmxModel};

fn quiet() -> Config {
    let mut c = Config::default();
    c.power.method = toolbox::config::PowerMethod::None;
    c
}

async fn wait_reply(model: &VmxModel, want: &[u8]) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    for _ in 0..300 {
        seen.extend(model.take_tclo_replies());
        if seen.iter().any(|r| r == want) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no reply {:?} in {:?}", String::from_utf8_lossy(want), seen);
}

async fn run(hb: bool) {
    let model = VmxModel::new(ModelConfig {
        high_bandwidth: hb,
        ..ModelConfig::default()
    });
    let rpci: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let log = rpci.clone();
    model.set_rpci(Box::new(move |req| {
        log.lock().unwrap().push(req.to_vec());
        b"1 ".to_vec()
    }));
    let service = toolbox::agent::builder(quiet())
        .connector(Connector::Model(model.clone()))
        .handler("Custom_Command", |_, args| {
            toolbox::dispatch::Reply::ok([&b"got "[..], args].concat())
        })
        .build();
    let stop = service.stop_handle();
    let task = tokio::spawn(service.run());

    model.push_tclo(&b"reset"[..]);
    wait_reply(&model, b"OK ATR toolbox").await;
    model.push_tclo(&b"Capabilities_Register"[..]);
    wait_reply(&model, b"OK ").await;
    model.push_tclo(&b"Custom_Command hello"[..]);
    wait_reply(&model, b"OK got hello").await;
    model.push_tclo(&b"Nope"[..]);
    wait_reply(&model, b"ERROR Unknown Command").await;
    model.push_tclo(&b"OS_Suspend"[..]);
    wait_reply(&model, b"OK ").await;

    // RPCI went over the model's RPCI channel: capabilities, guest info, the state change.
    for _ in 0..300 {
        let seen = rpci.lock().unwrap().clone();
        let has = |p: &[u8]| seen.iter().any(|r| r.starts_with(p));
        if has(b"tools.capability.statechange")
            && has(b"SetGuestInfo  10 ")
            && has(b"tools.os.statechange.status 1 5")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = rpci.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|r| r == b"tools.set.versiontype 2147483647 4\0"),
        "{:?}",
        seen.len()
    );
    assert!(seen
        .iter()
        .any(|r| r.starts_with(b"tools.os.statechange.status 1 5")));

    stop.stop();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("service did not stop")
        .unwrap();
    // Both channels are closed: the VMX sees tools stop.
    assert_eq!(model.open_channels(), 0);
}

#[tokio::test]
async fn polls_tclo_over_the_backdoor_model_high_bandwidth() {
    run(true).await;
}

#[tokio::test]
async fn polls_tclo_over_the_backdoor_model_low_bandwidth() {
    run(false).await;
}

#[tokio::test]
async fn reopens_the_channel_after_a_failure() {
    let model = VmxModel::default();
    model.set_rpci(Box::new(|_| b"1 ".to_vec()));
    let service = toolbox::agent::builder(quiet())
        .connector(Connector::Model(model.clone()))
        .build();
    let stop = service.stop_handle();
    let task = tokio::spawn(service.run());
    model.push_tclo(&b"ping"[..]);
    wait_reply(&model, b"OK ").await;
    // Fail the next call (a poll): the session ends, its channel is closed, and after a pause
    // the loop opens a new one. The request goes in once the fault has struck, so it is the
    // new channel that must carry it.
    let failing_call = {
        let st = model.stats();
        st.low_calls + st.hb_calls
    };
    model.inject(0, toolbox_rpc::model::Fault::Fail);
    for _ in 0..300 {
        if {
            let st = model.stats();
            st.low_calls + st.hb_calls
        } > failing_call
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        {
            let st = model.stats();
            st.low_calls + st.hb_calls
        } > failing_call,
        "the agent stopped polling"
    );
    model.push_tclo(&b"reset"[..]);
    wait_reply(&model, b"OK ATR toolbox").await;
    stop.stop();
    task.await.unwrap();
    assert_eq!(model.open_channels(), 0);
}
