#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2psip_fuzz::core_input(data));
