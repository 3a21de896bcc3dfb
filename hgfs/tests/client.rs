//! The host-side client's parsers: real server replies accepted, random and mutated bytes
//! refused without a panic, never more data than was asked for.

use proptest::prelude::*;
use toolbox_hgfs::client::{Client, TRANSFER_CHUNK};
use toolbox_hgfs::proto::{OpenFlags, LARGE_PACKET_MAX, OPEN_MODE_READ_ONLY, OPEN_MODE_WRITE_ONLY};
use toolbox_hgfs::{Server, ServerConfig};

/// Replies of a real server to a whole upload and download: session, open, write, read, close.
fn real_replies() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("f").to_str().unwrap().as_bytes().to_vec();
    let mut server = Server::new(ServerConfig::default());
    let mut c = Client::new();
    let mut out = Vec::new();
    let mut send = |server: &mut Server, packet: &[u8]| {
        let r = server.handle_packet(packet).to_vec();
        out.push(r.clone());
        r
    };
    let r = c.create_session(LARGE_PACKET_MAX);
    let reply = send(&mut server, &r.packet);
    c.accept_session(&r, &reply).unwrap();
    let r = c.open(
        &name,
        OPEN_MODE_WRITE_ONLY,
        OpenFlags::OPEN_CREATE_EMPTY,
        Some(0o600),
    );
    let h = c.opened(&r, &send(&mut server, &r.packet)).unwrap();
    let r = c.write(h, 0, &vec![7u8; 70_000]);
    assert_eq!(
        c.written(&r, &send(&mut server, &r.packet)).unwrap(),
        70_000
    );
    let r = c.close(h);
    c.done(&r, &send(&mut server, &r.packet)).unwrap();
    let r = c.open(&name, OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None);
    let h = c.opened(&r, &send(&mut server, &r.packet)).unwrap();
    let r = c.read(h, 0, TRANSFER_CHUNK);
    let reply = send(&mut server, &r.packet);
    assert_eq!(
        c.read_data(&r, &reply, TRANSFER_CHUNK).unwrap().len(),
        TRANSFER_CHUNK as usize
    );
    let r = c.open(
        b"/nonexistent/x",
        OPEN_MODE_READ_ONLY,
        OpenFlags::OPEN,
        None,
    );
    assert!(c.opened(&r, &send(&mut server, &r.packet)).is_err());
    out
}

#[test]
fn real_replies_and_seeds_go_through_the_fuzz_entry() {
    for reply in real_replies() {
        toolbox_hgfs::fuzzing::client_reply(&reply);
    }
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/seeds/hgfs_client_reply"
    );
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("seed directory") {
        toolbox_hgfs::fuzzing::client_reply(&std::fs::read(entry.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count >= 3, "only {count} seeds");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        toolbox_hgfs::fuzzing::client_reply(&data);
    }

    #[test]
    fn mutated_replies_never_yield_more_than_asked(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let replies = real_replies();
        let mut data = pick.get(&replies).clone();
        for (at, byte) in edits {
            let i = at.index(data.len());
            data[i] = byte;
        }
        toolbox_hgfs::fuzzing::client_reply(&data);
    }
}
