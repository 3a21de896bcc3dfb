//! The `packet` fuzz target's oracle ([`toolbox_rpc::fuzzing::packet`]) over its seeds and over
//! generated streams: valid packets cut anywhere, and arbitrary bytes.

use proptest::prelude::*;
use toolbox_rpc::packet::{Packet, PacketType};

#[test]
fn the_packet_seeds_pass_the_oracle() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/packet");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        toolbox_rpc::fuzzing::packet(&bytes);
        n += 1;
    }
    assert!(n >= 5, "seeds in {}", dir.display());
}

proptest! {
    #[test]
    fn valid_streams_cut_anywhere_pass_the_oracle(
        packets in proptest::collection::vec(
            (1i64..3, proptest::collection::vec(any::<u8>(), 0..200), any::<bool>()), 0..6),
        cuts in proptest::collection::vec(any::<u8>(), 0..8),
        truncate in 0usize..8,
    ) {
        let mut input = vec![cuts.len() as u8];
        input.extend(&cuts);
        for (kind, payload, fast_close) in packets {
            Packet { kind: PacketType(kind), payload, fast_close }.encode_into(&mut input).unwrap();
        }
        input.truncate(input.len().saturating_sub(truncate).max(1));
        toolbox_rpc::fuzzing::packet(&input);
    }

    #[test]
    fn arbitrary_input_passes_the_oracle(input in proptest::collection::vec(any::<u8>(), 0..400)) {
        toolbox_rpc::fuzzing::packet(&input);
    }
}
