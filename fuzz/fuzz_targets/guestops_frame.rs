#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| toolbox::fuzzing::guestops_frame(data));
