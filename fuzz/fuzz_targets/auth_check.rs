#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| toolbox::fuzzing::auth_check(data));
