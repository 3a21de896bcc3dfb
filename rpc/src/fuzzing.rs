//! Oracles for the fuzz targets in `fuzz/` (and the property tests): decode untrusted bytes,
//! and whatever decodes must survive a re-encode. Not part of the API.

use crate::{datamap, packet::Packet};

/// DataMap decoder.
pub fn datamap(data: &[u8]) {
    if let Ok(map) = datamap::decode(data) {
        let again = datamap::encode(&map).expect("a decoded map re-encodes");
        assert_eq!(
            datamap::decode(&again).expect("re-encoded map decodes"),
            map
        );
    }
}

/// Packet decoder, through the stream framing.
pub fn packet(data: &[u8]) {
    let mut cursor = data;
    if let Ok(p) = crate::stream::read_packet(&mut cursor) {
        let again = Packet::decode(&p.encode()).expect("a decoded packet re-encodes");
        assert_eq!(again, p);
    }
}
