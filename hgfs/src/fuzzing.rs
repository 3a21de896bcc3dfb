//! Entry points for the fuzz targets in `fuzz/` (not part of the API).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::proto::{
    self, encode, Framing, Op, RequestCreateSessionV4, HEADER_SIZE, LARGE_PACKET_MAX,
};
use crate::{Server, ServerConfig};

/// The directory the fuzzed server serves when none is given: made once per process under
/// a fresh random name (an existing entry of that name is never reused), with a few
/// entries to find. It is left behind when the process ends.
fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let seed = RandomState::new();
        let root = (0u32..)
            .map(|attempt| {
                let mut hasher = seed.build_hasher();
                hasher.write_u32(attempt);
                std::env::temp_dir().join(format!("toolbox-hgfs-fuzz-{:016x}", hasher.finish()))
            })
            .find(|candidate| std::fs::create_dir(candidate).is_ok())
            .expect("a fresh fuzzing directory");
        populate(&root);
        root
    })
}

/// The entries a fuzzing root starts with.
pub fn populate(root: &Path) {
    let _ = std::fs::create_dir_all(root.join("dir"));
    let _ = std::fs::write(root.join("file"), b"0123456789");
    let _ = std::fs::write(root.join("dir").join("inner"), b"inner");
}

/// Feeds a sequence of packets (each behind a little-endian `u16` length) to a server in a
/// fresh session. Packets with the session header get the live session's id unless their
/// second byte is set, so stale sessions are exercised too. Every reply must be a
/// well-formed packet.
pub fn hgfs_packet(data: &[u8]) {
    hgfs_packet_in(root(), data)
}

/// [`hgfs_packet`] serving `root` (see [`populate`]).
pub fn hgfs_packet_in(root: &Path, data: &[u8]) {
    let mut server = Server::new(ServerConfig {
        root: root.to_path_buf(),
        max_sessions: 4,
        max_handles: 8,
        max_packet_size: LARGE_PACKET_MAX,
    });
    let create = proto::encode_request(
        0,
        Op::CREATE_SESSION_V4,
        0,
        &encode(&RequestCreateSessionV4 {
            max_packet_size: LARGE_PACKET_MAX,
            ..RequestCreateSessionV4::default()
        }),
    );
    let reply = server.handle_packet(&create).to_vec();
    let (_, payload) = proto::parse_reply(&reply).expect("create-session reply is well-formed");
    let created: proto::ReplyCreateSessionV4 =
        proto::decode(payload).expect("create-session reply decodes");

    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let mut packet = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        let new_header =
            packet.len() >= HEADER_SIZE && packet[4..8] == Op::NEW_HEADER.0.to_le_bytes();
        if new_header && packet[1] == 0 {
            packet[36..44].copy_from_slice(&created.session_id.to_le_bytes());
        }
        let framing = match proto::parse_request(&packet) {
            Ok((info, _)) => info.framing,
            Err(_) => Framing::Session { session_id: 0 },
        };
        let reply = server.handle_packet(&packet);
        match framing {
            Framing::Session { .. } => {
                let (header, _) = proto::parse_reply(reply).expect("reply is well-formed");
                assert_eq!(header.packet_size as usize, reply.len());
                assert_eq!(header.header_size as usize, HEADER_SIZE);
                assert!(reply.len() <= LARGE_PACKET_MAX as usize);
            }
            Framing::Legacy => assert!(reply.len() >= proto::LEGACY_HEADER_SIZE),
        }
    }
}

/// Every host-side reply parser of [`crate::client`] over `data` as the reply to each kind of
/// request: errors are fine, a panic or a read longer than asked is not.
pub fn client_reply(data: &[u8]) {
    use crate::client::{Client, ClientError};
    use crate::proto::{OpenFlags, OPEN_MODE_READ_ONLY};
    let mut c = Client::new();
    let r = c.create_session(LARGE_PACKET_MAX);
    let _ = c.clone().accept_session(&r, data);
    let r = c.open(b"/x", OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None);
    let _ = c.opened(&r, data);
    for asked in [0, 1, crate::client::TRANSFER_CHUNK] {
        let r = c.read(1, 0, asked);
        match c.read_data(&r, data, asked) {
            Ok(d) => assert!(d.len() <= asked as usize),
            Err(ClientError::Overlong { .. } | ClientError::Malformed { .. }) => {}
            Err(_) => {}
        }
    }
    let r = c.write(1, 0, b"data");
    let _ = c.written(&r, data);
    let r = c.close(1);
    let _ = c.done(&r, data);
}
