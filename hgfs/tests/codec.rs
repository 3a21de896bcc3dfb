//! Property tests of the codec: encode/decode round trips, and refusal of truncated or
//! inconsistent input without panics.

use proptest::prelude::*;
use toolbox_hgfs::proto::{
    self, decode, encode, parse_request, AttrV2, Capability, DirEntry, FileName, FileNameV3,
    Header, Op, OpenFlags, ProtoError, ReplyCreateSessionV4, RequestCreateSessionV4,
    RequestGetattrV2, RequestOpenV3, RequestReadV3, RequestRenameV3, RequestSetattrV2, Status,
    Wire, HEADER_SIZE,
};

fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

fn name_v3() -> impl Strategy<Value = FileNameV3> {
    (any::<u32>(), any::<u32>(), any::<u32>(), name()).prop_map(|(flags, case_type, fid, name)| {
        FileNameV3 {
            flags,
            case_type,
            fid,
            name,
        }
    })
}

prop_compose! {
    fn attr()(a in any::<[u64; 10]>(), b in any::<[u32; 5]>(), p in any::<[u8; 4]>()) -> AttrV2 {
        AttrV2 {
            mask: a[0], file_type: b[0], size: a[1], creation_time: a[2], access_time: a[3],
            write_time: a[4], attr_change_time: a[5], special_perms: p[0], owner_perms: p[1],
            group_perms: p[2], other_perms: p[3], attr_flags: a[6], allocation_size: a[7],
            user_id: b[1], group_id: b[2], host_file_id: a[8], volume_id: b[3],
            effective_perms: b[4], reserved2: a[9],
        }
    }
}

fn round_trip<T: Wire + PartialEq + std::fmt::Debug>(value: T) -> Result<(), TestCaseError> {
    let bytes = encode(&value);
    prop_assert_eq!(decode::<T>(&bytes).unwrap(), value);
    // Every strict prefix is refused, never misread. (An empty name encodes as one NUL the
    // length does not count, so the last byte may be optional.)
    for cut in 0..bytes.len().saturating_sub(1) {
        prop_assert!(
            decode::<T>(&bytes[..cut]).is_err(),
            "prefix of {} bytes accepted",
            cut
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn header_round_trips(v in any::<u8>(), r in any::<[u8; 3]>(), w in any::<[u32; 8]>(), s in any::<u64>(), x in any::<u64>()) {
        round_trip(Header {
            version: v, reserved1: r, dummy: Op(w[0]), packet_size: w[1], header_size: w[2],
            request_id: w[3], op: Op(w[4]), status: Status(w[5]), flags: w[6], information: w[7],
            session_id: s, reserved: x,
        })?;
        prop_assert_eq!(encode(&Header::default()).len(), HEADER_SIZE);
    }

    #[test]
    fn attr_round_trips(a in attr()) {
        prop_assert_eq!(encode(&a).len(), proto::ATTR_V2_SIZE);
        round_trip(a)?;
    }

    #[test]
    fn open_v3_round_trips(mask in any::<u64>(), mode in any::<u32>(), flags in 0u32..5, perms in any::<[u8; 4]>(), n in name_v3()) {
        round_trip(RequestOpenV3 {
            mask, mode, flags: OpenFlags(flags), special_perms: perms[0], owner_perms: perms[1],
            group_perms: perms[2], other_perms: perms[3], file_name: n, ..RequestOpenV3::default()
        })?;
    }

    #[test]
    fn v2_requests_round_trip(hints in any::<u64>(), handle in any::<u32>(), n in name(), a in attr()) {
        round_trip(RequestGetattrV2 { hints, handle, file_name: FileName { name: n.clone() } })?;
        round_trip(RequestSetattrV2 { hints, attr: a, handle, file_name: FileName { name: n } })?;
    }

    #[test]
    fn rename_round_trips(hints in any::<u64>(), a in name_v3(), b in name_v3()) {
        round_trip(RequestRenameV3 { hints, reserved: 0, old_name: a, new_name: b })?;
    }

    #[test]
    fn sessions_round_trip(max in any::<u32>(), caps in proptest::collection::vec((any::<u32>(), any::<u32>()), 0..70), id in any::<u64>()) {
        let capabilities: Vec<Capability> = caps.iter().map(|&(op, flags)| Capability { op: Op(op), flags }).collect();
        round_trip(RequestCreateSessionV4 { max_packet_size: max, flags: 1, reserved: 0, capabilities: capabilities.clone() })?;
        round_trip(ReplyCreateSessionV4 { session_id: id, max_packet_size: max, identity_offset: 0, flags: 1, reserved: 0, capabilities })?;
    }

    #[test]
    fn write_and_read_payloads_round_trip(handle in any::<u32>(), offset in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let args = proto::encode_write_v3(handle, 0, offset, &data);
        let (head, got) = proto::decode_write_v3(&args).unwrap();
        prop_assert_eq!((head.handle, head.offset, got), (handle, offset, &data[..]));
        for cut in 0..args.len() {
            prop_assert!(proto::decode_write_v3(&args[..cut]).is_err());
        }
    }

    #[test]
    fn search_entries_round_trip(a in attr(), n in proptest::collection::vec(any::<u8>(), 1..300)) {
        let entry = DirEntry { attr: a, name: n };
        let mut out = Vec::new();
        proto::encode_search_read_v3(Some(&entry), &mut out);
        prop_assert_eq!(out.len(), 17 + proto::DIR_ENTRY_SIZE + entry.name.len());
        prop_assert_eq!(proto::decode_search_read_v3(&out).unwrap(), Some(entry));
        out.clear();
        proto::encode_search_read_v3(None, &mut out);
        prop_assert_eq!(proto::decode_search_read_v3(&out).unwrap(), None);
    }

    #[test]
    fn cp_names_round_trip(components in proptest::collection::vec("[^/\u{0}]{1,12}", 1..6)) {
        let path = format!("/{}", components.join("/"));
        let cp = proto::path_to_cp_name(path.as_bytes());
        prop_assert_eq!(proto::cp_name_to_path(&cp).unwrap(), path.into_bytes());
    }

    #[test]
    fn arbitrary_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok((_, args)) = parse_request(&bytes) {
            prop_assert!(args.len() <= bytes.len());
        }
        let _ = proto::parse_reply(&bytes);
        let _ = decode::<RequestOpenV3>(&bytes);
        let _ = decode::<RequestCreateSessionV4>(&bytes);
        let _ = proto::decode_search_read_v3(&bytes);
    }

    #[test]
    fn request_header_sizes_are_checked(packet_size in any::<u32>(), header_size in any::<u32>(), extra in 0usize..64) {
        let mut packet = proto::encode_request(1, Op::READ_V3, 9, &vec![0; extra]);
        packet[8..12].copy_from_slice(&packet_size.to_le_bytes());
        packet[12..16].copy_from_slice(&header_size.to_le_bytes());
        let ok = packet_size as usize <= packet.len() && header_size as usize >= HEADER_SIZE && header_size <= packet_size;
        match parse_request(&packet) {
            Ok((_, args)) => {
                prop_assert!(ok);
                prop_assert_eq!(args.len(), (packet_size - header_size) as usize);
            }
            Err(e) => {
                prop_assert!(!ok);
                let is_bad_sizes = matches!(e, ProtoError::BadSizes { .. });
                prop_assert!(is_bad_sizes);
            }
        }
    }
}

#[test]
fn rejects_truncated_header() {
    let packet = proto::encode_request(1, Op::READ_V3, 9, &[]);
    for cut in 0..HEADER_SIZE {
        assert!(parse_request(&packet[..cut]).is_err(), "{cut}");
    }
}

#[test]
fn rejects_packet_size_beyond_the_bytes() {
    let mut packet = proto::encode_request(1, Op::READ_V3, 9, &encode(&RequestReadV3::default()));
    let too_big = (packet.len() + 1) as u32;
    packet[8..12].copy_from_slice(&too_big.to_le_bytes());
    assert!(matches!(
        parse_request(&packet),
        Err(ProtoError::BadSizes { .. })
    ));
}

#[test]
fn rejects_header_size_inside_the_header() {
    let mut packet = proto::encode_request(1, Op::READ_V3, 9, &encode(&RequestReadV3::default()));
    packet[12..16].copy_from_slice(&8u32.to_le_bytes());
    assert!(matches!(
        parse_request(&packet),
        Err(ProtoError::BadSizes { .. })
    ));
}

#[test]
fn rejects_overlong_name_length() {
    let mut bytes = encode(&FileName {
        name: b"root\0tmp".to_vec(),
    });
    bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode::<FileName>(&bytes).is_err());
    let mut bytes = encode(&FileNameV3 {
        name: b"root\0tmp".to_vec(),
        ..FileNameV3::default()
    });
    bytes[..4].copy_from_slice(&9u32.to_le_bytes());
    assert!(decode::<FileNameV3>(&bytes).is_err());
}

#[test]
fn rejects_write_size_beyond_the_data() {
    let mut args = proto::encode_write_v3(1, 0, 0, b"abc");
    args[13..17].copy_from_slice(&4u32.to_le_bytes());
    assert!(proto::decode_write_v3(&args).is_err());
    args[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(proto::decode_write_v3(&args).is_err());
}

#[test]
fn rejects_huge_capability_counts_without_allocating() {
    let mut bytes = encode(&RequestCreateSessionV4::default());
    bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode::<RequestCreateSessionV4>(&bytes).is_err());
}

#[test]
fn rejects_names_outside_the_root_share() {
    assert!(proto::cp_name_to_path(b"other\0etc").is_err());
    assert!(proto::cp_name_to_path(b"").is_err());
    assert_eq!(proto::cp_name_to_path(b"root").unwrap(), b"/");
    assert_eq!(proto::cp_name_to_path(b"root\0").unwrap(), b"/");
}

#[test]
fn rejects_version_zero_headers() {
    let mut packet = proto::encode_request(1, Op::READ_V3, 9, &encode(&RequestReadV3::default()));
    packet[0] = 0;
    assert_eq!(parse_request(&packet), Err(ProtoError::BadVersion(0)));
}

#[test]
fn nt_times_convert_both_ways() {
    assert_eq!(
        proto::unix_time(proto::nt_time(1_700_000_000, 123_456_700)),
        (1_700_000_000, 123_456_700)
    );
    assert_eq!(proto::unix_time(0), (0, 0));
    assert_eq!(proto::nt_time(0, 0), 116_444_736_000_000_000);
}
