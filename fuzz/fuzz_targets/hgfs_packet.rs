#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| toolbox_hgfs::fuzzing::hgfs_packet(data));
