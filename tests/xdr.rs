//! NIC info XDR: a byte vector worked out by XDR's rules for the structure govmomi's toolbox
//! sends (RFC 4506, as go-xdr marshals `GuestNicInfo`), rejections, property round trips.

use proptest::prelude::*;
use std::net::IpAddr;
use toolbox::guestinfo::xdr::{self, DnsConfig, IpEntry, Nic, NicInfo, Route, TypedIp, XdrError};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ip(s: &str) -> TypedIp {
    s.parse::<IpAddr>().unwrap().into()
}

fn one_nic() -> NicInfo {
    NicInfo {
        nics: vec![Nic {
            mac: "00:50:56:aa:bb:cc".into(),
            ips: vec![IpEntry {
                addr: ip("10.0.0.5"),
                prefix_len: 24,
                origin: None,
                status: Some(xdr::status::PREFERRED),
            }],
            ..Nic::default()
        }],
        ..NicInfo::default()
    }
}

#[test]
fn encodes_one_nic_as_govmomi_does() {
    let want = hex("00000003 00000001 \
         00000001 \
           00000011 30303a35303a35363a61613a62623a6363 000000 \
           00000001 \
             00000001 00000004 0a000005 \
             00000018 \
             00000000 \
             00000001 00000001 \
           00000000 00000000 00000000 00000000 \
         00000000 \
         00000000 00000000 00000000 00000000");
    assert_eq!(one_nic().encode_v3(xdr::MAX_IPS), want);
    assert_eq!(xdr::decode_v3(&want).unwrap(), one_nic());
}

#[test]
fn encodes_routes_and_dns() {
    let info = NicInfo {
        routes: vec![Route {
            dest: ip("0.0.0.0"),
            prefix_len: 0,
            next_hop: Some(ip("10.0.0.1")),
            if_index: 0,
            kind: xdr::route_type::REMOTE,
            metric: 100,
        }],
        dns: Some(DnsConfig {
            host_name: Some("vm".into()),
            domain_name: None,
            servers: vec![ip("10.0.0.2")],
            search: vec!["ex".into()],
        }),
        ..one_nic()
    };
    let bytes = info.encode_v3(xdr::MAX_IPS);
    let tail = hex("00000001 \
           00000001 00000004 00000000 00000000 \
           00000001 00000001 00000004 0a000001 \
           00000000 00000004 00000064 \
         00000001 \
           00000001 00000002 766d0000 \
           00000000 \
           00000001 00000001 00000004 0a000002 \
           00000001 00000002 65780000 \
         00000000 00000000 00000000");
    assert!(
        bytes.ends_with(&tail),
        "{:02x?}",
        &bytes[bytes.len() - tail.len()..]
    );
    assert_eq!(xdr::decode_v3(&bytes).unwrap(), info);
}

#[test]
fn type_9_caps_addresses_at_64() {
    let mut info = one_nic();
    info.nics[0].ips = (0..100)
        .map(|i| IpEntry {
            addr: ip(&format!("10.0.{i}.1")),
            prefix_len: 24,
            origin: None,
            status: None,
        })
        .collect();
    assert_eq!(
        xdr::decode_v3(&info.encode_v3(xdr::V2_MAX_IPS))
            .unwrap()
            .nics[0]
            .ips
            .len(),
        64
    );
    assert_eq!(
        xdr::decode_v3(&info.encode_v3(xdr::MAX_IPS)).unwrap().nics[0]
            .ips
            .len(),
        100
    );
}

#[test]
fn v2_uses_fixed_char_vectors() {
    let v2 = one_nic().encode_v2();
    // version, pointer, count, then 18 chars of 4 bytes each.
    assert_eq!(&v2[..12], &hex("00000002 00000001 00000001")[..]);
    assert_eq!(&v2[12..20], &hex("00000030 00000030")[..]); // "00"
                                                            // after the MAC: ips count 1, family IPv4, dhcp 0, then "10.0.0.5" as 64 chars.
    let at = 12 + 18 * 4;
    assert_eq!(&v2[at..at + 12], &hex("00000001 00000000 00000000")[..]);
    assert_eq!(v2.len(), at + 12 + 64 * 4 * 2);
    let mask: Vec<u8> = v2[at + 12 + 256..]
        .chunks(4)
        .map(|c| c[3])
        .take_while(|&c| c != 0)
        .collect();
    // NicInfoV3ToV2 prints the prefix length with %u, IPv4 or not.
    assert_eq!(mask, b"24");
}

#[test]
fn rejects_too_many_nics() {
    let e = xdr::decode_v3(&hex("00000003 00000001 00000011")).unwrap_err();
    assert_eq!(
        e,
        XdrError::TooLong {
            what: "nics",
            len: 17,
            max: 16
        }
    );
}

#[test]
fn rejects_counts_the_input_cannot_hold() {
    let e = xdr::decode_v3(&hex("00000003 00000001 00000010")).unwrap_err();
    assert_eq!(e, XdrError::Truncated("nics"));
    let e = xdr::decode_v3(&hex(
        "00000003 00000001 00000001 00000001 41000000 000007ff 00000000 00000000 00000000 00000000",
    ))
    .unwrap_err();
    assert_eq!(e, XdrError::Truncated("addresses"));
}

#[test]
fn rejects_wrong_version_bad_bool_long_mac_and_trailing_bytes() {
    assert!(matches!(
        xdr::decode_v3(&hex("00000002 00000000")),
        Err(XdrError::BadValue {
            what: "version",
            ..
        })
    ));
    assert!(matches!(
        xdr::decode_v3(&hex("00000003 00000002")),
        Err(XdrError::BadValue { .. })
    ));
    let long_mac = hex(
        "00000003 00000001 00000001 00000013 00000000 00000000 00000000 00000000 00000000 00000000",
    );
    assert!(matches!(
        xdr::decode_v3(&long_mac),
        Err(XdrError::TooLong { what: "mac", .. })
    ));
    let mut ok = one_nic().encode_v3(xdr::MAX_IPS);
    ok.push(0);
    assert_eq!(xdr::decode_v3(&ok).unwrap_err(), XdrError::Trailing(1));
}

#[test]
fn empty_pointer_is_empty_info() {
    assert_eq!(
        xdr::decode_v3(&hex("00000003 00000000")).unwrap(),
        NicInfo::default()
    );
}

fn typed_ip() -> impl Strategy<Value = TypedIp> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::from(b).into()),
        any::<[u8; 16]>().prop_map(|b| IpAddr::from(b).into())
    ]
}

fn nic() -> impl Strategy<Value = Nic> {
    (
        "[0-9a-f:]{0,18}",
        proptest::collection::vec(
            (
                typed_ip(),
                0u32..129,
                proptest::option::of(1i32..7),
                proptest::option::of(1i32..9),
            ),
            0..5,
        ),
    )
        .prop_map(|(mac, ips)| Nic {
            mac,
            ips: ips
                .into_iter()
                .map(|(addr, prefix_len, origin, status)| IpEntry {
                    addr,
                    prefix_len,
                    origin,
                    status,
                })
                .collect(),
            ..Nic::default()
        })
}

proptest! {
    #[test]
    fn round_trips(nics in proptest::collection::vec(nic(), 0..16),
                   routes in proptest::collection::vec((typed_ip(), 0u32..129, proptest::option::of(typed_ip()), 0u32..16, 1i32..5, any::<u32>()), 0..10),
                   servers in proptest::collection::vec(typed_ip(), 0..16),
                   search in proptest::collection::vec("[a-z.]{1,20}", 0..10)) {
        let info = NicInfo {
            nics,
            routes: routes.into_iter().map(|(dest, prefix_len, next_hop, if_index, kind, metric)| Route { dest, prefix_len, next_hop, if_index, kind, metric }).collect(),
            dns: Some(DnsConfig { host_name: Some("h".into()), domain_name: None, servers, search }),
            ..NicInfo::default()
        };
        prop_assert_eq!(xdr::decode_v3(&info.encode_v3(xdr::MAX_IPS)).unwrap(), info);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        toolbox::fuzzing::nicinfo(&bytes);
    }

    #[test]
    fn corrupted_records_never_panic(at in any::<prop::sample::Index>(), b: u8) {
        let mut bytes = one_nic().encode_v3(xdr::MAX_IPS);
        let i = at.index(bytes.len());
        bytes[i] = b;
        toolbox::fuzzing::nicinfo(&bytes);
    }
}
