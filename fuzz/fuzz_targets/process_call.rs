#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| toolbox::process::fuzzing::process_call(data));
