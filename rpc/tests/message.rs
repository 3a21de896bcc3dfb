//! The backdoor message channel against the register-level VMX model.

use toolbox_rpc::backdoor::{get_version, Backdoor, Regs, BDOOR_MAGIC};
use toolbox_rpc::message::{self, status, MessageChannel, MessageError, Protocol, Step};
use toolbox_rpc::model::{Fault, ModelConfig, VmxModel};

fn echo_model(config: ModelConfig) -> VmxModel {
    let model = VmxModel::new(config);
    model.set_rpci(Box::new(|req| [&b"1 "[..], req].concat()));
    model
}

fn config(high_bandwidth: bool) -> ModelConfig {
    ModelConfig {
        high_bandwidth,
        ..ModelConfig::default()
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Sizes around the 4-byte word and the 64 KiB boundaries, up to 70 000.
fn sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (0..=300).collect();
    for edge in [1021, 4096, 8192, 65_531, 65_536, 69_996] {
        v.extend(edge - 4..=edge + 4);
    }
    v.push(70_000);
    v
}

#[test]
fn rpci_round_trips_every_size_with_and_without_high_bandwidth() {
    for hb in [true, false] {
        let model = echo_model(config(hb));
        let mut chan = MessageChannel::open(model.port(), Protocol::Rpci).unwrap();
        for n in sizes() {
            let req = pattern(n);
            let reply = chan.call(&req).unwrap();
            assert_eq!(reply.len(), n + 2, "hb={hb} n={n}");
            assert_eq!(&reply[..2], b"1 ");
            assert_eq!(&reply[2..], &req[..], "hb={hb} n={n}");
        }
        let stats = model.stats();
        if hb {
            assert!(stats.hb_calls > 0);
        } else {
            assert_eq!(stats.hb_calls, 0);
        }
    }
}

#[test]
fn tclo_receives_requests_and_sends_replies_of_every_size() {
    for hb in [true, false] {
        let model = VmxModel::new(config(hb));
        let mut chan = MessageChannel::open(model.port(), Protocol::Tclo).unwrap();
        // Nothing queued: an empty receive, as a poll with no request.
        assert_eq!(chan.receive().unwrap(), Vec::<u8>::new());
        for n in [1usize, 2, 3, 4, 5, 255, 4097, 65_537, 70_000] {
            model.push_tclo(pattern(n));
            assert_eq!(chan.receive().unwrap(), pattern(n), "hb={hb} n={n}");
            chan.send(&pattern(n + 1)).unwrap();
        }
        chan.send(b"").unwrap();
        let replies = model.take_tclo_replies();
        assert_eq!(replies.len(), 9);
        assert_eq!(replies[8], pattern(70_001));
    }
}

#[test]
fn registers_match_the_reference_conversation_in_low_bandwidth() {
    let model = echo_model(config(false));
    model.record(true);
    let mut chan = MessageChannel::open(model.port(), Protocol::Rpci).unwrap();
    assert_eq!(chan.call(b"abcde").unwrap(), b"1 abcde");
    drop(chan);
    let log = model.take_log();
    let ins: Vec<Regs> = log.iter().map(|(i, _)| *i).collect();
    // OPEN with the cookie flag.
    assert_eq!(ins[0].eax, BDOOR_MAGIC);
    assert_eq!(ins[0].ebx, 0x4943_5052 | 0x8000_0000);
    assert_eq!(ins[0].ecx, 0x0000_001e);
    assert_eq!(ins[0].edx & 0xffff, 0x5658);
    let (id, cookie_high, cookie_low) = (log[0].1.edx >> 16, log[0].1.esi, log[0].1.edi);
    for r in &ins[1..] {
        assert_eq!(r.edx, (id << 16) | 0x5658);
        assert_eq!((r.esi, r.edi), (cookie_high, cookie_low));
    }
    // SENDSIZE 5, two SENDPAYLOAD words (little-endian, zero padded).
    assert_eq!((ins[1].ecx, ins[1].ebx), (0x0001_001e, 5));
    assert_eq!((ins[2].ecx, ins[2].ebx), (0x0002_001e, 0x6463_6261));
    assert_eq!((ins[3].ecx, ins[3].ebx), (0x0002_001e, 0x0000_0065));
    // RECVSIZE answered with DORECV, size 7 and type SENDSIZE in dx high.
    assert_eq!(ins[4].ecx, 0x0003_001e);
    assert_eq!(
        log[4].1.ecx >> 16,
        u32::from(status::SUCCESS | status::DORECV)
    );
    assert_eq!((log[4].1.ebx, log[4].1.edx >> 16), (7, 1));
    // Two RECVPAYLOAD (each acknowledging the previous with SUCCESS), then RECVSTATUS, CLOSE.
    assert_eq!((ins[5].ecx, ins[5].ebx), (0x0004_001e, 1));
    assert_eq!((ins[6].ecx, ins[6].ebx), (0x0004_001e, 1));
    assert_eq!((ins[7].ecx, ins[7].ebx), (0x0005_001e, 1));
    assert_eq!(ins[8].ecx, 0x0006_001e);
    assert_eq!(ins.len(), 9);
    assert_eq!(model.open_channels(), 0);
}

#[test]
fn open_falls_back_to_no_cookie_on_an_old_vmx() {
    let model = echo_model(ModelConfig {
        cookies: false,
        ..ModelConfig::default()
    });
    model.record(true);
    let mut chan = MessageChannel::open(model.port(), Protocol::Rpci).unwrap();
    let log = model.take_log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].0.ebx, 0xC943_5052);
    assert_eq!(log[0].1.ecx >> 16, 0, "refused with the cookie flag");
    assert_eq!(log[1].0.ebx, 0x4943_5052);
    assert_eq!(chan.call(b"x").unwrap(), b"1 x");
}

#[test]
fn a_wrong_cookie_is_refused() {
    let model = echo_model(ModelConfig::default());
    let chan = MessageChannel::open(model.port(), Protocol::Rpci).unwrap();
    let mut port = model.port();
    let mut regs = Regs::command(30, message::kind::SENDSIZE);
    regs.edx |= u32::from(chan.id()) << 16;
    regs.ebx = 4;
    regs.esi = 0xdead_beef;
    regs.edi = 0x0bad_f00d;
    let out = port.in_out(regs);
    assert_eq!(out.ecx >> 16, 0);
}

#[test]
fn checkpoint_at_any_step_of_a_send_restarts_the_message() {
    for hb in [true, false] {
        // Calls: SENDSIZE, then 3 payload words (or one HB transfer); checkpoint each payload call.
        let steps = if hb { 1 } else { 3 };
        for k in 1..=steps {
            let model = echo_model(config(hb));
            let mut chan = MessageChannel::open(model.port(), Protocol::Tclo).unwrap();
            model.inject(k, Fault::Checkpoint);
            chan.send(b"0123456789").unwrap();
            assert_eq!(
                model.take_tclo_replies(),
                vec![b"0123456789".to_vec()],
                "hb={hb} k={k}"
            );
        }
    }
}

#[test]
fn checkpoint_at_any_step_of_a_receive_restarts_the_message() {
    for hb in [true, false] {
        // RECVSIZE, payload (1 HB or 3 words), RECVSTATUS.
        let last = if hb { 2 } else { 4 };
        for k in 1..=last {
            let model = VmxModel::new(config(hb));
            let mut chan = MessageChannel::open(model.port(), Protocol::Tclo).unwrap();
            model.push_tclo(&b"Capabilities"[..]);
            model.inject(k, Fault::Checkpoint);
            assert_eq!(chan.receive().unwrap(), b"Capabilities", "hb={hb} k={k}");
            // Taken exactly once.
            assert_eq!(chan.receive().unwrap(), b"");
        }
    }
}

#[test]
fn endless_checkpoints_end_in_an_error_not_a_hang() {
    let model = echo_model(config(false));
    let mut chan = MessageChannel::open(model.port(), Protocol::Rpci).unwrap();
    for k in 0..1000 {
        // Every second call is a payload call of a 5-byte send: SENDSIZE ok, payload CPT.
        if k % 2 == 1 {
            model.inject(k, Fault::Checkpoint);
        }
    }
    let err = chan.send(b"abcd!").unwrap_err();
    assert!(matches!(err, MessageError::Checkpoints { .. }), "{err}");
}

#[test]
fn a_failure_at_each_step_is_reported_with_the_step() {
    for hb in [true, false] {
        let payload_steps: u64 = if hb { 1 } else { 2 };
        // Send: SENDSIZE, payload.
        let mut cases = vec![(0, Step::SendSize), (1, Step::SendPayload)];
        // Receive after a complete send: RECVSIZE, payload, RECVSTATUS.
        let base = 1 + payload_steps;
        cases.push((base, Step::ReceiveSize));
        cases.push((base + 1, Step::ReceivePayload));
        // The 9-byte reply takes 3 words in low bandwidth.
        let receive_steps = if hb { 1 } else { 3 };
        cases.push((base + 1 + receive_steps, Step::ReceiveStatus));
        for (k, step) in cases {
            let model = echo_model(config(hb));
            let mut chan = MessageChannel::open(model.port(), Protocol::Rpci).unwrap();
            model.inject(k, Fault::Fail);
            match chan.call(b"ab12345") {
                Err(MessageError::Refused { step: s, .. }) => assert_eq!(s, step, "hb={hb} k={k}"),
                other => panic!("hb={hb} k={k}: expected a refusal at {step}, got {other:?}"),
            }
            // After a failure the message state is unknown: the caller reopens, as vmtoolsd's
            // channel reset does, and the VMX sees the old channel closed.
            drop(chan);
            let mut chan = MessageChannel::open(model.port(), Protocol::Rpci).unwrap();
            assert_eq!(chan.call(b"again").unwrap(), b"1 again", "hb={hb} k={k}");
            assert_eq!(model.open_channels(), 1);
        }
    }
}

#[test]
fn open_and_close_failures_are_errors() {
    let model = echo_model(ModelConfig::default());
    model.inject(0, Fault::Fail);
    model.inject(1, Fault::Fail);
    let err = MessageChannel::open(model.port(), Protocol::Rpci).unwrap_err();
    assert!(matches!(
        err,
        MessageError::Refused {
            step: Step::Open,
            ..
        }
    ));
    let chan = MessageChannel::open(model.port(), Protocol::Rpci).unwrap();
    model.inject(0, Fault::Fail);
    let err = chan.close().unwrap_err();
    assert!(matches!(
        err,
        MessageError::Refused {
            step: Step::Close,
            ..
        }
    ));
}

#[test]
fn an_oversized_message_from_the_vmx_is_refused_without_allocating() {
    let model = VmxModel::new(ModelConfig::default());
    let mut chan = MessageChannel::open(model.port(), Protocol::Tclo).unwrap();
    model.push_tclo(vec![b'x'; message::MAX_RECEIVE_SIZE + 1]);
    let err = chan.receive().unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    // The guest told the VMX it gave up: the message is gone.
    assert_eq!(chan.receive().unwrap(), b"");
}

#[test]
fn getversion_answers_from_the_model() {
    let model = VmxModel::default();
    let v = get_version(&mut model.port()).unwrap();
    assert_eq!((v.version, v.vmx_type), (6, 2));
}

mod hostile {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_hostile_vmx_never_panics_the_channel(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            toolbox_rpc::fuzzing::message_channel(&data);
        }
    }
}

/// A high-bandwidth transfer whose ecx (the `rep` count the VMX reads) disagrees with the
/// buffer is refused and changes nothing; with the right ecx the same transfer goes through.
#[test]
fn high_bandwidth_calls_must_carry_the_buffer_length_in_ecx() {
    use toolbox_rpc::backdoor::{halves, high, BDOORHB_PORT, BDOOR_PORT, HB_CMD_MESSAGE};
    use toolbox_rpc::message::kind;

    let model = echo_model(ModelConfig::default());
    let mut port = model.port();
    // Open without cookies so the registers below need none.
    let mut open = Regs::command(30, kind::OPEN);
    open.ebx = Protocol::Rpci.magic();
    let id = high(port.in_out(open).edx);
    let low = |sub: u16, ebx: u32| Regs {
        ebx,
        edx: halves(id, BDOOR_PORT),
        ..Regs::command(30, sub)
    };
    let hb = |ecx: u32| Regs {
        eax: BDOOR_MAGIC,
        ebx: halves(status::SUCCESS, HB_CMD_MESSAGE),
        ecx,
        edx: halves(id, BDOORHB_PORT),
        ..Regs::default()
    };
    let ok = |r: Regs| high(r.ebx) & status::SUCCESS != 0;

    let request = b"hello";
    let st = high(port.in_out(low(kind::SENDSIZE, 5)).ecx);
    assert_ne!(st & status::HB, 0);
    for wrong in [0, 4, 6, 0xffff_ffff] {
        assert!(!ok(port.hb_out(hb(wrong), request)), "ecx {wrong}");
    }
    assert_eq!(model.stats().messages_in, 0);
    assert!(ok(port.hb_out(hb(5), request)));
    assert_eq!(model.stats().messages_in, 1);

    let size = port.in_out(low(kind::RECVSIZE, 0)).ebx;
    assert_eq!(size, 7);
    let mut buf = [0u8; 7];
    for wrong in [0, 6, 8] {
        assert!(!ok(port.hb_in(hb(wrong), &mut buf)), "ecx {wrong}");
        assert_eq!(buf, [0; 7]);
    }
    assert!(ok(port.hb_in(hb(7), &mut buf)));
    assert_eq!(&buf, b"1 hello");
}
