//! Fuzz target: `zfabric::fuzzing::curve_server` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zfabric::fuzzing::curve_server(data));
