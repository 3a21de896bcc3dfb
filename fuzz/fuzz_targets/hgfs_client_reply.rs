#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| toolbox_hgfs::fuzzing::client_reply(data));
