//! Fuzz target: `zfabric::fuzzing::header` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zfabric::fuzzing::header(data));
