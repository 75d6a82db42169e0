//! Fuzz target: `zfabric::fuzzing::frames` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zfabric::fuzzing::frames(data));
