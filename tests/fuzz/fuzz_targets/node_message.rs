//! Fuzz target: `zfabric::fuzzing::node_message` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zfabric::fuzzing::node_message(data));
