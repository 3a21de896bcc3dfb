//! The fuzz target's seeds run through the same entry point, which checks every reply.

#[test]
fn seeds_replay_with_well_formed_replies() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/hgfs_packet");
    let root = tempfile::tempdir().expect("root");
    toolbox_hgfs::fuzzing::populate(root.path());
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("seed directory") {
        let data = std::fs::read(entry.expect("seed").path()).expect("seed file");
        toolbox_hgfs::fuzzing::hgfs_packet_in(root.path(), &data);
        count += 1;
    }
    assert!(count >= 5, "only {count} seeds");
}

mod mutated {
    use proptest::prelude::*;

    fn seeds() -> Vec<Vec<u8>> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/hgfs_packet");
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .expect("seed directory")
            .map(|e| std::fs::read(e.expect("seed").path()).expect("seed file"))
            .collect();
        seeds.sort();
        seeds
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        // Seeds with bytes overwritten: mostly well-formed packets with one bad field,
        // which random bytes alone would rarely reach.
        #[test]
        fn mutated_seeds_get_well_formed_replies(
            pick in 0usize..5,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let seeds = seeds();
            let mut data = seeds[pick % seeds.len()].clone();
            for (at, byte) in edits {
                let i = at.index(data.len());
                data[i] = byte;
            }
            let root = tempfile::tempdir().expect("root");
            toolbox_hgfs::fuzzing::populate(root.path());
            toolbox_hgfs::fuzzing::hgfs_packet_in(root.path(), &data);
        }
    }
}
