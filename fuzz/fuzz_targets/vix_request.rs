#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| toolbox::vix::fuzzing::vix_request(data));
