#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_sensor::fuzzing::rewrite_frame(data));
