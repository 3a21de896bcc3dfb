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
