//! Entry points for the fuzz targets in `tests/fuzz/` (cargo fuzz): each
//! hands arbitrary bytes to one decoder of untrusted input. Compiled only
//! with the `fuzzing` feature; not part of the API.
//!
//! Guarantees: each function returns for any input: what it calls must
//! not panic, loop or allocate beyond the limits it is given (a fuzzer
//! reports any of these). Does not: check the decoders' answers (the unit
//! and property tests do).

use crate::transport::scan::{FrameScanner, ScanLimits};

/// The limits the scanner runs with here: small, so that the fuzzer
/// reaches "too large" quickly.
const LIMITS: ScanLimits = ScanLimits {
    max_message: 64 * 1024,
    max_command: 4 * 1024,
};

/// The header decoder ([`crate::wire::Header::decode`]).
pub fn header(data: &[u8]) {
    let _ = crate::wire::Header::decode(data, 16 * 1024);
}

/// The ZMTP frame scanner, from the greeting and past the handshake, fed
/// in chunks whose sizes the first byte picks (so that frames split
/// across reads are exercised).
pub fn frames(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    for mut scanner in [
        FrameScanner::new(LIMITS).capture_small().count_units(),
        FrameScanner::after_handshake(LIMITS).capture_small(),
    ] {
        let mut ends = Vec::new();
        for piece in rest.chunks(chunk) {
            if scanner.feed(piece, &mut ends).is_err() {
                break;
            }
            ends.clear();
            let _ = scanner.take_units().count();
            let _ = scanner.take_captured();
        }
    }
}

/// The node message reader: a header (its length in the first two bytes,
/// big-endian) and a body, read as a request and as a hello reply.
pub fn node_message(data: &[u8]) {
    crate::node::fuzz_node_message(data);
}

/// The CURVE server handshake: a HELLO, then (if it opened) an INITIATE,
/// split by the first two bytes (the HELLO's length, big-endian).
pub fn curve_server(data: &[u8]) {
    crate::transport::curve::fuzz_server(data);
}
