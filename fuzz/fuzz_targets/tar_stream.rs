#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| toolbox_hgfs::archive::fuzzing::tar_stream(data));
