#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| toolbox::sim::guestops::fuzzing::http_response(data));
