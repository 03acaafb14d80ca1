#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_sensor::fuzzing::encap_frame(data));
