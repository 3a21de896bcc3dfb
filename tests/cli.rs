//! The real `toolbox` binary: one-shot commands over `unix:DIR` against a minimal VMX peer, and
//! the clear failures on this (non-VMware) machine.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use toolbox_rpc::packet::Packet;
use toolbox_rpc::stream::{read_packet, write_packet};

fn toolbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toolbox"))
        .args(args)
        .env_remove("TOOLBOX_ASSUME_VMWARE")
        .env_remove("TOOLBOX_TRANSPORT")
        .output()
        .unwrap()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("toolbox-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A VMX stand-in on DIR/rpci.sock answering one connection's requests with `reply`; the
/// requests it saw come back on the channel.
fn peer(dir: &Path, reply: fn(&[u8]) -> Vec<u8>) -> mpsc::Receiver<Packet> {
    let listener = UnixListener::bind(dir.join("rpci.sock")).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        while let Ok(p) = read_packet(&mut s) {
            let r = reply(&p.payload);
            let fast_close = p.fast_close;
            tx.send(p).unwrap();
            write_packet(&mut s, &Packet::data(r)).unwrap();
            if fast_close {
                break;
            }
        }
    });
    rx
}

fn unix(dir: &Path) -> String {
    format!("unix:{}", dir.display())
}

#[test]
fn info_get_prints_the_value() {
    let dir = tempdir("get");
    let seen = peer(&dir, |_| b"1 <Environment/>".to_vec());
    let out = toolbox(&["--transport", &unix(&dir), "info", "get", "ovfEnv"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"<Environment/>\n");
    let p = seen.recv().unwrap();
    assert_eq!(p.payload, b"info-get guestinfo.ovfEnv");
    assert!(p.fast_close, "one-shot requests ask for a fast close");
}

#[test]
fn info_set_sends_key_and_value() {
    let dir = tempdir("set");
    let seen = peer(&dir, |_| b"1 ".to_vec());
    let out = toolbox(&[
        "--transport",
        &unix(&dir),
        "info",
        "set",
        "guestinfo.a",
        "b c",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(seen.recv().unwrap().payload, b"info-set guestinfo.a b c");
}

#[test]
fn rpc_prints_the_reply() {
    let dir = tempdir("rpc");
    let _seen = peer(&dir, |req| [&b"1 echo:"[..], req].concat());
    let out = toolbox(&["--transport", &unix(&dir), "rpc", "log hello"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"echo:log hello\n");
}

#[test]
fn rpc_refused_exits_1_with_the_vmx_text() {
    let dir = tempdir("refused");
    let _seen = peer(&dir, |_| b"0 No value found".to_vec());
    let out = toolbox(&["--transport", &unix(&dir), "info", "get", "missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "No value found\n",
        "the VMX's text alone, as vmware-rpctool prints it"
    );
}

/// A VMX stand-in taking any number of one-shot connections: `reply` gets the request and
/// how many came before it.
fn counting_peer(dir: &Path, reply: fn(&[u8], usize) -> Vec<u8>) -> mpsc::Receiver<Packet> {
    let listener = UnixListener::bind(dir.join("rpci.sock")).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut n = 0;
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            while let Ok(p) = read_packet(&mut s) {
                let r = reply(&p.payload, n);
                n += 1;
                let fast_close = p.fast_close;
                if tx.send(p).is_err() {
                    return;
                }
                let _ = write_packet(&mut s, &Packet::data(r));
                if fast_close {
                    break;
                }
            }
        }
    });
    rx
}

#[test]
fn info_wait_polls_until_the_host_sets_the_variable() {
    let dir = tempdir("wait");
    let seen = counting_peer(&dir, |_, n| {
        if n < 3 {
            b"0 No value found".to_vec()
        } else {
            b"1 <Environment/>".to_vec()
        }
    });
    let out = toolbox(&["--transport", &unix(&dir), "info", "wait", "ovfEnv"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"<Environment/>\n");
    let asked: Vec<Packet> = seen.try_iter().collect();
    assert_eq!(asked.len(), 4, "three refusals, then the value");
    assert!(asked
        .iter()
        .all(|p| p.payload == b"info-get guestinfo.ovfEnv"));
}

#[test]
fn info_wait_gives_up_after_its_timeout() {
    let dir = tempdir("waitout");
    let _seen = counting_peer(&dir, |_, _| b"0 No value found".to_vec());
    let out = toolbox(&[
        "--transport",
        &unix(&dir),
        "info",
        "wait",
        "userdata",
        "--timeout",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "toolbox: guestinfo.userdata was not set within 1 s\n"
    );
}

#[test]
fn info_update_network_sends_nic_info_v3_once() {
    let dir = tempdir("update");
    let seen = counting_peer(&dir, |_, _| b"1 ".to_vec());
    let out = toolbox(&["--transport", &unix(&dir), "info", "update", "network"]);
    assert!(out.status.success(), "{out:?}");
    let p = seen.recv().unwrap();
    let data = p
        .payload
        .strip_prefix(b"SetGuestInfo  10 ")
        .expect("NIC info v3 as type 10");
    let info = toolbox::guestinfo::xdr::decode(data).expect("valid NIC info");
    assert!(info.dns.is_some(), "DNS travels with the NICs");
    assert!(seen.try_recv().is_err(), "one request only");
}

#[test]
fn rpc_refused_prints_the_vmx_text_as_rpctool_does() {
    let dir = tempdir("rpcrefused");
    let _seen = peer(&dir, |_| b"0 Unknown command".to_vec());
    let out = toolbox(&["--transport", &unix(&dir), "rpc", "no.such.command"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "Unknown command\n");
}

#[test]
fn rpc_malformed_reply_exits_1() {
    let dir = tempdir("malformed");
    let _seen = peer(&dir, |_| b"what?".to_vec());
    let out = toolbox(&["--transport", &unix(&dir), "rpc", "ping"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed reply"));
}

#[test]
fn no_peer_exits_1_naming_the_socket() {
    let dir = tempdir("nopeer");
    let out = toolbox(&["--transport", &unix(&dir), "rpc", "ping"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rpci.sock") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn garbage_from_the_peer_is_a_clear_error() {
    let dir = tempdir("garbage");
    let listener = UnixListener::bind(dir.join("rpci.sock")).unwrap();
    thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 64];
        let _ = s.read(&mut b);
        // A length header announcing 4 GiB.
        let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    });
    let out = toolbox(&["--transport", &unix(&dir), "rpc", "ping"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeds"));
}

/// This build machine is not a VMware VM: every command must fail cleanly, never fault, and
/// must not touch vsock.
#[test]
fn off_vmware_commands_exit_1_with_one_line() {
    if toolbox_rpc::detect::require_vmware().is_ok() {
        println!("SKIPPED: off_vmware_commands_exit_1_with_one_line runs only off VMware");
        eprintln!("SKIPPED: off_vmware_commands_exit_1_with_one_line runs only off VMware");
        return;
    }
    for args in [
        &["check"][..],
        &["rpc", "ping"],
        &["info", "get", "x"],
        &["--transport", "vsock", "rpc", "ping"],
        &["--transport", "backdoor", "info", "set", "a", "b"],
        &["run"],
        &["--transport", "vsock", "run"],
        &["-s"],
    ] {
        let out = toolbox(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("toolbox: not running on VMware"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }
}
