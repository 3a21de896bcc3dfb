//! Oracles for the fuzz targets in `fuzz/` and the property tests. Not part of the API.

use crate::guestinfo::xdr;

/// NIC info decoder (the simulator's, i.e. the VMX side): whatever decodes re-encodes to a
/// record that decodes the same.
pub fn nicinfo(data: &[u8]) {
    if let Ok(info) = xdr::decode_v3(data) {
        let again =
            xdr::decode_v3(&info.encode_v3(xdr::MAX_IPS)).expect("re-encoded nic info decodes");
        assert_eq!(again, info);
    }
}

/// TCLO request splitting.
pub fn tclo_request(data: &[u8]) {
    let (name, args) = crate::dispatch::split_request(data);
    assert!(name.len() + args.len() <= data.len());
    assert!(!name.contains(&b' '));
}

/// Guest-operation helper frames, setups and reports (`src/guestops/frame.rs`).
pub fn guestops_frame(data: &[u8]) {
    crate::guestops::frame::fuzzing::frames(data);
}

/// The password check's request and verdict decoders (`src/auth/checker.rs`), as the child and
/// the agent read them.
pub fn auth_check(data: &[u8]) {
    crate::auth::fuzz_check_messages(data);
}

/// The simulator's disk info decoders (JSON and binary): never panic; what the JSON decoder
/// takes names at most `MAX_DISKS` filesystems.
#[cfg(feature = "sim")]
pub fn disk_info(data: &[u8]) {
    if let Ok(d) = crate::sim::diskinfo::decode_json(data) {
        assert!(d.len() <= crate::sim::diskinfo::MAX_DISKS);
    }
    if let Ok(d) = crate::sim::diskinfo::decode_v0(data) {
        assert!(d.len() <= usize::from(data.first().copied().unwrap_or(0)));
    }
}

/// rtnetlink message payloads (links, addresses, routes, rules) as the gather reads them:
/// never panic, never add more than one entry per message.
pub fn rtnetlink(data: &[u8]) {
    use crate::guestinfo::netlink::{self, ChosenLink, RouteCaps};
    let filter = crate::guestinfo::NicFilter::default();
    let mut choice = netlink::LinkChoice::new(&filter);
    choice.offer(data, &filter);
    assert!(choice.into_ordered().len() <= 1);
    let links = [ChosenLink {
        index: data.get(4).copied().map(u32::from).unwrap_or(0),
        name: "eth0".into(),
        mac: String::new(),
    }];
    let mut nics = vec![crate::guestinfo::xdr::Nic::default()];
    netlink::offer_addr(data, &links, &mut nics);
    assert!(nics[0].ips.len() <= 1);
    let mut caps = RouteCaps {
        v4_left: 1,
        v6_left: 1,
    };
    let mut routes = Vec::new();
    netlink::offer_route(data, &[0, 254], &links, &mut caps, &mut routes);
    assert!(routes.len() <= 1);
    let mut tables = Vec::new();
    netlink::offer_rule(data, &mut tables);
    assert!(tables.len() <= 1);
}
