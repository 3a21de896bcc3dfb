//! DataMap and packet codec: byte vectors worked out from `lib/dataMap/dataMap.c`, rejections,
//! and property round trips.

use proptest::prelude::*;
use toolbox_rpc::datamap::{self, DataMap, DataMapError, Value};
use toolbox_rpc::packet::{body_len, Packet, PacketError, PacketType, MAX_PACKET_SIZE};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn encodes_a_data_packet_as_the_reference() {
    // content 32 bytes | INT64 id 1 = 1 (low word, high word) | STRING id 2 len 4 "ping"
    let want =
        hex("00000020 00000001 00000001 00000001 00000000 00000002 00000002 00000004 70696e67");
    assert_eq!(Packet::data("ping").encode(), want);
    assert_eq!(Packet::decode(&want).unwrap(), Packet::data("ping"));
}

#[test]
fn encodes_a_ping_without_payload() {
    let want = hex("00000010 00000001 00000001 00000002 00000000");
    assert_eq!(Packet::ping().encode(), want);
    assert_eq!(Packet::decode(&want).unwrap().kind, PacketType::PING);
}

#[test]
fn encodes_fast_close_as_int64_field_3() {
    let p = Packet {
        fast_close: true,
        ..Packet::data("x")
    };
    let want = hex(
        "0000002d 00000001 00000001 00000001 00000000 00000002 00000002 00000001 78 \
         00000001 00000003 00000001 00000000",
    );
    assert_eq!(p.encode(), want);
    assert_eq!(Packet::decode(&want).unwrap(), p);
}

#[test]
fn int64_is_low_word_first() {
    let mut m = DataMap::new();
    m.insert(7, Value::Int64(-2));
    m.insert(8, Value::Int64(0x0102_0304_0506_0708));
    assert_eq!(
        datamap::encode(&m).unwrap(),
        hex("00000020 00000001 00000007 fffffffe ffffffff 00000001 00000008 05060708 01020304")
    );
}

#[test]
fn encodes_lists() {
    let mut m = DataMap::new();
    m.insert(1, Value::Int64List(vec![1, 2]));
    m.insert(2, Value::StringList(vec![b"ab".to_vec(), b"c".to_vec()]));
    m.insert(3, Value::Int64List(vec![]));
    let want = hex(
        "0000003f 00000003 00000001 00000002 00000001 00000000 00000002 00000000 \
         00000004 00000002 00000002 00000002 6162 00000001 63 \
         00000003 00000003 00000000",
    );
    assert_eq!(datamap::encode(&m).unwrap(), want);
    assert_eq!(datamap::decode(&want).unwrap(), m);
}

fn decode_err(s: &str) -> DataMapError {
    datamap::decode(&hex(s)).unwrap_err()
}

#[test]
fn rejects_truncated_header() {
    assert!(matches!(
        decode_err("000000"),
        DataMapError::Truncated { .. }
    ));
}

#[test]
fn rejects_content_shorter_than_announced() {
    assert!(matches!(
        decode_err("00000010 00000001 00000001"),
        DataMapError::Truncated { .. }
    ));
}

#[test]
fn rejects_negative_content_length() {
    assert!(matches!(
        decode_err("ffffffff"),
        DataMapError::Truncated { .. }
    ));
}

#[test]
fn rejects_trailing_bytes() {
    assert_eq!(decode_err("00000000 00"), DataMapError::TrailingBytes(1));
}

#[test]
fn rejects_unknown_types() {
    for ty in ["00000000", "00000005", "ffffffff"] {
        let e = decode_err(&format!("00000008 {ty} 00000001"));
        assert!(
            matches!(e, DataMapError::UnknownType { field: 1, .. }),
            "{e}"
        );
    }
}

#[test]
fn rejects_duplicated_field_ids() {
    assert_eq!(
        decode_err(
            "00000020 00000001 00000001 00000001 00000000 00000001 00000001 00000002 00000000"
        ),
        DataMapError::DuplicateField(1)
    );
}

#[test]
fn rejects_empty_and_negative_strings() {
    for len in ["00000000", "80000000"] {
        let e = decode_err(&format!("0000000c 00000002 00000002 {len}"));
        assert!(matches!(e, DataMapError::BadLength { field: 2, .. }), "{e}");
    }
}

#[test]
fn rejects_string_longer_than_the_rest() {
    assert!(matches!(
        decode_err("0000000e 00000002 00000002 00000010 6162"),
        DataMapError::Truncated { .. }
    ));
}

#[test]
fn rejects_list_counts_beyond_the_buffer_before_allocating() {
    for ty in ["00000003", "00000004"] {
        let e = decode_err(&format!("0000000c {ty} 00000009 7fffffff"));
        assert!(matches!(e, DataMapError::BadLength { field: 9, .. }), "{e}");
    }
}

#[test]
fn rejects_truncated_int64() {
    assert!(matches!(
        decode_err("0000000c 00000001 00000001 00000001"),
        DataMapError::Truncated { .. }
    ));
}

#[test]
fn rejects_oversized_frames_from_the_header_alone() {
    assert_eq!(
        body_len((MAX_PACKET_SIZE as u32 + 1).to_be_bytes()),
        Err(PacketError::TooLarge(MAX_PACKET_SIZE + 1))
    );
    assert_eq!(
        body_len([0xff; 4]),
        Err(PacketError::TooLarge(u32::MAX as usize))
    );
    assert_eq!(body_len(16u32.to_be_bytes()), Ok(16));
}

#[test]
fn rejects_a_payload_of_the_wrong_type() {
    let e = Packet::decode(&hex("00000010 00000001 00000002 00000001 00000000")).unwrap_err();
    assert_eq!(e, PacketError::FieldType("payload"));
}

#[test]
fn accepts_a_packet_without_type_as_data() {
    let p = Packet::decode(&hex("0000000d 00000002 00000002 00000001 41")).unwrap();
    assert_eq!(p, Packet::data("A"));
}

#[test]
fn refuses_to_encode_an_empty_string() {
    let mut m = DataMap::new();
    m.insert(4, Value::String(Vec::new()));
    assert!(matches!(
        datamap::encode(&m),
        Err(DataMapError::Unencodable { field: 4, .. })
    ));
}

fn value() -> impl Strategy<Value = Value> {
    let s = || proptest::collection::vec(any::<u8>(), 1..40);
    prop_oneof![
        any::<i64>().prop_map(Value::Int64),
        s().prop_map(Value::String),
        proptest::collection::vec(any::<i64>(), 0..8).prop_map(Value::Int64List),
        proptest::collection::vec(s(), 0..8).prop_map(Value::StringList),
    ]
}

proptest! {
    #[test]
    fn datamap_round_trips(map in proptest::collection::btree_map(any::<i32>(), value(), 0..12)) {
        let bytes = datamap::encode(&map).unwrap();
        prop_assert_eq!(datamap::decode(&bytes).unwrap(), map);
    }

    #[test]
    fn packet_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..300), kind in 1i64..3, fast_close: bool) {
        let p = Packet { kind: PacketType(kind), payload, fast_close };
        prop_assert_eq!(Packet::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = datamap::decode(&bytes);
        let _ = Packet::decode(&bytes);
    }

    #[test]
    fn corrupted_packets_never_panic(payload in proptest::collection::vec(any::<u8>(), 1..100), at in any::<prop::sample::Index>(), b: u8) {
        let mut bytes = Packet::data(payload).encode();
        let i = at.index(bytes.len());
        bytes[i] = b;
        if let Ok(m) = datamap::decode(&bytes) {
            // Whatever decodes survives a re-encode (field order may differ from the input).
            prop_assert_eq!(datamap::decode(&datamap::encode(&m).unwrap()).unwrap(), m);
        }
    }
}
