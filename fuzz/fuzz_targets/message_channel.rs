#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| toolbox_rpc::fuzzing::message_channel(data));
