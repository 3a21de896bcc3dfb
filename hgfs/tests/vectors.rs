//! Packets encoded by govmomi's Go toolbox (tests/vectors/govmomi.txt, see
//! tests/vectors/gen): our codec decodes them to the values the Go program encoded, and
//! our encoders give the same bytes back.

use toolbox_hgfs::proto::{
    self, attr_valid, begin_reply, decode, encode, finish_reply, parse_reply, parse_request,
    path_to_cp_name, AttrV2, Capability, FileName, FileNameV3, Framing, Op, OpenFlags,
    ReplyCreateSessionV4, ReplyGetattrV2, ReplyOpen, ReplyOpenV3, ReplyWriteV3, RequestClose,
    RequestCreateSessionV4, RequestGetattrV2, RequestInfo, RequestOpen, RequestOpenV3,
    RequestReadV3, RequestSetattrV2, Reserved, Status, Wire, FILE_TYPE_DIRECTORY, LARGE_PACKET_MAX,
    OPEN_MODE_READ_ONLY, OPEN_MODE_WRITE_ONLY,
};

const SESSION: u64 = 0x1122_3344_5566_7788;

fn vector(name: &str) -> Vec<u8> {
    let text = include_str!("vectors/govmomi.txt");
    let hex = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no vector {name}"));
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Decodes a request vector, checks its routing, and returns its arguments (after the
/// legacy prefix for V1/V2 ops).
fn request_args(name: &str, op: Op, id: u32) -> (Vec<u8>, Vec<u8>) {
    let packet = vector(name);
    let (info, args) = parse_request(&packet).expect("govmomi request decodes");
    assert_eq!(
        info,
        RequestInfo {
            framing: Framing::Session {
                session_id: SESSION
            },
            request_id: id,
            op
        }
    );
    let args = if op.has_legacy_prefix() {
        args[8..].to_vec()
    } else {
        args.to_vec()
    };
    (packet, args)
}

/// Our client-side encoding of the same request.
fn our_request(op: Op, id: u32, body: &[u8]) -> Vec<u8> {
    let mut args = Vec::new();
    if op.has_legacy_prefix() {
        // govmomi leaves the embedded HgfsRequest zeroed.
        args.extend_from_slice(&[0; 8]);
    }
    args.extend_from_slice(body);
    proto::encode_request(id, op, SESSION, &args)
}

/// Our server-side framing of a successful reply with `body`.
fn our_reply(op: Op, id: u32, body: &[u8]) -> Vec<u8> {
    let info = RequestInfo {
        framing: Framing::Session {
            session_id: SESSION,
        },
        request_id: id,
        op,
    };
    let mut out = Vec::new();
    begin_reply(&mut out, &info);
    out.extend_from_slice(body);
    finish_reply(&mut out, &info, Status::SUCCESS);
    out
}

fn reply_body(name: &str, op: Op) -> Vec<u8> {
    let packet = vector(name);
    let (header, payload) = parse_reply(&packet).expect("govmomi reply decodes");
    assert_eq!(header.op, op);
    assert_eq!(header.status, Status::SUCCESS);
    assert_eq!(header.session_id, SESSION);
    let payload = if op.has_legacy_prefix() {
        &payload[8..]
    } else {
        payload
    };
    payload.to_vec()
}

fn check_pair<Req: Wire + PartialEq + std::fmt::Debug, Rep: Wire + PartialEq + std::fmt::Debug>(
    name: &str,
    op: Op,
    id: u32,
    want_req: Req,
    want_rep: Rep,
) {
    let (packet, args) = request_args(&format!("{name}_request"), op, id);
    assert_eq!(
        decode::<Req>(&args).expect("request body decodes"),
        want_req
    );
    assert_eq!(
        our_request(op, id, &encode(&want_req)),
        packet,
        "{name} request bytes"
    );

    let body = reply_body(&format!("{name}_reply"), op);
    assert_eq!(decode::<Rep>(&body).expect("reply body decodes"), want_rep);
    assert_eq!(
        our_reply(op, id, &encode(&want_rep)),
        vector(&format!("{name}_reply")),
        "{name} reply bytes"
    );
}

fn caps() -> Vec<Capability> {
    vec![
        Capability {
            op: Op::OPEN_V3,
            flags: 1,
        },
        Capability {
            op: Op::READ_V3,
            flags: 1,
        },
    ]
}

#[test]
fn create_session_v4() {
    check_pair(
        "create_session_v4",
        Op::CREATE_SESSION_V4,
        1,
        RequestCreateSessionV4 {
            max_packet_size: 0x7f800,
            flags: 0,
            reserved: 0,
            capabilities: caps(),
        },
        ReplyCreateSessionV4 {
            session_id: SESSION,
            // govmomi offers 0xf800; we offer HGFS_LARGE_PACKET_MAX.
            max_packet_size: 0xf800,
            identity_offset: 0,
            flags: 1,
            reserved: 0,
            capabilities: caps(),
        },
    );
    assert_eq!(LARGE_PACKET_MAX, 522_240);
}

#[test]
fn destroy_session_v4() {
    check_pair(
        "destroy_session_v4",
        Op::DESTROY_SESSION_V4,
        2,
        Reserved::default(),
        Reserved::default(),
    );
}

#[test]
fn open_and_close_v1() {
    check_pair(
        "open",
        Op::OPEN,
        3,
        RequestOpen {
            mode: OPEN_MODE_READ_ONLY,
            flags: OpenFlags::OPEN,
            permissions: 6,
            file_name: FileName {
                name: path_to_cp_name(b"/etc/hostname"),
            },
        },
        ReplyOpen { handle: 5 },
    );
    // The close reply has no body past its embedded HgfsReply.
    let (packet, args) = request_args("close_request", Op::CLOSE, 4);
    assert_eq!(
        decode::<RequestClose>(&args).unwrap(),
        RequestClose { handle: 5 }
    );
    assert_eq!(
        our_request(Op::CLOSE, 4, &encode(&RequestClose { handle: 5 })),
        packet
    );
    assert!(reply_body("close_reply", Op::CLOSE).is_empty());
    assert_eq!(our_reply(Op::CLOSE, 4, &[]), vector("close_reply"));
}

#[test]
fn open_v3() {
    check_pair(
        "open_v3",
        Op::OPEN_V3,
        5,
        RequestOpenV3 {
            mask: 0x83,
            mode: OPEN_MODE_WRITE_ONLY,
            flags: OpenFlags::OPEN_CREATE_EMPTY,
            owner_perms: 6,
            group_perms: 4,
            other_perms: 4,
            file_name: FileNameV3 {
                name: path_to_cp_name(b"/tmp/upload dir/file.bin"),
                ..FileNameV3::default()
            },
            ..RequestOpenV3::default()
        },
        ReplyOpenV3 {
            handle: 9,
            ..ReplyOpenV3::default()
        },
    );
    let name = path_to_cp_name(b"/tmp/upload dir/file.bin");
    assert_eq!(
        proto::cp_name_to_path(&name).unwrap(),
        b"/tmp/upload dir/file.bin"
    );
}

#[test]
fn read_v3() {
    let (packet, args) = request_args("read_v3_request", Op::READ_V3, 6);
    let want = RequestReadV3 {
        handle: 9,
        offset: 0x10000,
        required_size: 61440,
        reserved: 0,
    };
    assert_eq!(decode::<RequestReadV3>(&args).unwrap(), want);
    assert_eq!(our_request(Op::READ_V3, 6, &encode(&want)), packet);

    let body = reply_body("read_v3_reply", Op::READ_V3);
    let (head, data) = proto::decode_read_v3_reply(&body).unwrap();
    assert_eq!((head.actual_size, data), (11, &b"hello world"[..]));
    let mut ours = encode(&head);
    ours.extend_from_slice(data);
    assert_eq!(our_reply(Op::READ_V3, 6, &ours), vector("read_v3_reply"));
}

#[test]
fn write_v3() {
    let (packet, args) = request_args("write_v3_request", Op::WRITE_V3, 7);
    let (head, data) = proto::decode_write_v3(&args).unwrap();
    assert_eq!(
        (head.handle, head.flags, head.offset, data),
        (9, 0, 61440, &b"abcde"[..])
    );
    assert_eq!(
        our_request(
            Op::WRITE_V3,
            7,
            &proto::encode_write_v3(9, 0, 61440, b"abcde")
        ),
        packet
    );

    let body = reply_body("write_v3_reply", Op::WRITE_V3);
    let want = ReplyWriteV3 {
        actual_size: 5,
        reserved: 0,
    };
    assert_eq!(decode::<ReplyWriteV3>(&body).unwrap(), want);
    assert_eq!(
        our_reply(Op::WRITE_V3, 7, &encode(&want)),
        vector("write_v3_reply")
    );
}

#[test]
fn getattr_v2() {
    check_pair(
        "getattr_v2",
        Op::GETATTR_V2,
        8,
        RequestGetattrV2 {
            hints: 0,
            handle: 0,
            file_name: FileName {
                name: path_to_cp_name(b"/var/log"),
            },
        },
        ReplyGetattrV2 {
            attr: AttrV2 {
                mask: attr_valid::TYPE
                    | attr_valid::SIZE
                    | attr_valid::OWNER_PERMS
                    | attr_valid::GROUP_PERMS
                    | attr_valid::OTHER_PERMS
                    | attr_valid::USER_ID
                    | attr_valid::GROUP_ID,
                file_type: FILE_TYPE_DIRECTORY,
                size: 4096,
                creation_time: 2,
                access_time: 1,
                write_time: 2,
                attr_change_time: 3,
                owner_perms: 7,
                group_perms: 5,
                other_perms: 5,
                allocation_size: 4096,
                user_id: 1000,
                group_id: 100,
                host_file_id: 42,
                volume_id: 7,
                ..AttrV2::default()
            },
            symlink_target: FileName::default(),
        },
    );
}

#[test]
fn setattr_v2() {
    let (packet, args) = request_args("setattr_v2_request", Op::SETATTR_V2, 9);
    let want = RequestSetattrV2 {
        hints: 0,
        attr: AttrV2 {
            mask: attr_valid::OWNER_PERMS
                | attr_valid::GROUP_PERMS
                | attr_valid::OTHER_PERMS
                | attr_valid::USER_ID
                | attr_valid::GROUP_ID,
            owner_perms: 6,
            group_perms: 4,
            user_id: 1000,
            group_id: 1000,
            ..AttrV2::default()
        },
        handle: 0,
        file_name: FileName {
            name: path_to_cp_name(b"/tmp/file.bin"),
        },
    };
    assert_eq!(decode::<RequestSetattrV2>(&args).unwrap(), want);
    assert_eq!(our_request(Op::SETATTR_V2, 9, &encode(&want)), packet);
    assert!(reply_body("setattr_v2_reply", Op::SETATTR_V2).is_empty());
    assert_eq!(
        our_reply(Op::SETATTR_V2, 9, &[]),
        vector("setattr_v2_reply")
    );
}

#[test]
fn stale_session_reply() {
    let packet = vector("stale_reply");
    let (header, payload) = parse_reply(&packet).unwrap();
    assert_eq!(header.status, Status::STALE_SESSION);
    assert!(payload.is_empty());

    let info = RequestInfo {
        framing: Framing::Session {
            session_id: SESSION,
        },
        request_id: 10,
        op: Op::READ_V3,
    };
    let mut ours = Vec::new();
    begin_reply(&mut ours, &info);
    finish_reply(&mut ours, &info, Status::STALE_SESSION);
    // hgfsServer repeats the status in `information` (HgfsPackReplyHeaderV4); govmomi
    // leaves it 0. Everything else is the same.
    let (our_header, _) = parse_reply(&ours).unwrap();
    assert_eq!(our_header.information, Status::STALE_SESSION.0);
    ours[32..36].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(ours, packet);
}
