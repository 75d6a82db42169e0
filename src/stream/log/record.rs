//! The on-disk encoding of one record: pure encode and decode, no I/O.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | `len`: the bytes after the `crc` field (the payload below) |
//! | 4 | `crc`: CRC32C (Castagnoli) of those `len` bytes |
//! | 8 | `offset` |
//! | 8 | `timestamp_ms` |
//! | 8 | `id` (the message id) |
//! | 1 | `flags`: bit 0 set on the last record of an append (a batch); the other bits are 0 |
//! | 1 | `tp_len`: the traceparent's length, 0 for none |
//! | `tp_len` | the traceparent, UTF-8 |
//! | the rest | the body |
//!
//! Guarantees: [`decode`] never panics, whatever the bytes; every kind of
//! damage (short input, impossible length, checksum mismatch, unknown
//! flags, traceparent overrunning the payload or not UTF-8) is its own
//! [`DecodeError`]. The checksum covers every field after itself, so a
//! flipped bit anywhere in the payload is caught. Does not: check that
//! the offset is the one expected (the segment scan does), or detect a
//! damaged `len` that happens to frame a valid-looking record (a 32-bit
//! checksum makes that one in four billion).

use std::sync::Arc;

use bytes::Bytes;

/// Bytes before the payload: `len` and `crc`.
pub(crate) const PREFIX: usize = 8;
/// Fixed payload bytes: offset, timestamp, id, flags, tp_len.
pub(crate) const FIXED: usize = 8 + 8 + 8 + 1 + 1;
/// The smallest frame: a record with no traceparent and an empty body.
pub(crate) const MIN_FRAME: usize = PREFIX + FIXED;
/// The longest traceparent a record carries (W3C's version 00 is 55).
pub(crate) const MAX_TRACEPARENT: usize = u8::MAX as usize;
/// The largest body the format can frame (the `len` field is 32 bits).
pub(crate) const MAX_BODY: usize = u32::MAX as usize - FIXED - MAX_TRACEPARENT;

/// Flag bit: this record ends an append (a batch). Recovery keeps only
/// whole batches.
pub(crate) const FLAG_BATCH_END: u8 = 1;

/// A record as stored: the fields of [`super::Record`] plus its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// Its offset.
    pub(crate) offset: u64,
    /// Milliseconds since the Unix epoch.
    pub(crate) timestamp_ms: u64,
    /// The message id.
    pub(crate) id: u64,
    /// Whether it ends its batch.
    pub(crate) batch_end: bool,
    /// The traceparent.
    pub(crate) traceparent: Option<Arc<str>>,
    /// The body.
    pub(crate) body: Bytes,
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the frame needs: a torn write at the tail, or a
    /// read cut short.
    #[error("record frame needs {needed} bytes, {available} available")]
    Incomplete {
        /// The frame's size (or the prefix's, when even that is short).
        needed: usize,
        /// The bytes there are.
        available: usize,
    },
    /// A `len` smaller than the fixed fields (zeros from a torn
    /// extension of the file read this way).
    #[error("record length {len} is below the minimum {min}")]
    BadLength {
        /// The `len` field.
        len: u32,
        /// The smallest valid one.
        min: u32,
    },
    /// The payload does not match its CRC32C.
    #[error("record checksum {stored:#010x} does not match the computed {computed:#010x}")]
    Checksum {
        /// The `crc` field.
        stored: u32,
        /// CRC32C of the payload.
        computed: u32,
    },
    /// Flag bits this version does not know.
    #[error("record flags {0:#04x} have unknown bits")]
    BadFlags(u8),
    /// The traceparent's length overruns the payload.
    #[error("traceparent of {len} bytes overruns the payload")]
    TraceparentLength {
        /// The `tp_len` field.
        len: u8,
    },
    /// The traceparent is not UTF-8.
    #[error("traceparent is not UTF-8")]
    TraceparentUtf8,
}

/// The frame size of a record with this traceparent and body length.
pub(crate) fn frame_len(traceparent_len: usize, body_len: usize) -> usize {
    MIN_FRAME + traceparent_len + body_len
}

/// Appends one record's frame to `out`. The caller has checked that the
/// traceparent is at most [`MAX_TRACEPARENT`] bytes and the body at most
/// [`MAX_BODY`]; longer ones are cut to fit, never a panic.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    offset: u64,
    timestamp_ms: u64,
    id: u64,
    batch_end: bool,
    traceparent: Option<&str>,
    body: &[u8],
) {
    let tp = traceparent.unwrap_or_default();
    let mut cut = tp.len().min(MAX_TRACEPARENT);
    while !tp.is_char_boundary(cut) {
        cut -= 1;
    }
    let tp = &tp.as_bytes()[..cut];
    let body = &body[..body.len().min(MAX_BODY)];
    let len = FIXED + tp.len() + body.len();
    let start = out.len();
    out.reserve(PREFIX + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.push(if batch_end { FLAG_BATCH_END } else { 0 });
    out.push(tp.len() as u8);
    out.extend_from_slice(tp);
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[start + PREFIX..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The whole frame's length announced by the prefix at the start of
/// `buf`, checked against the minimum (not against `buf`'s length).
pub(crate) fn peek_frame_len(buf: &[u8]) -> Result<usize, DecodeError> {
    if buf.len() < PREFIX {
        return Err(DecodeError::Incomplete {
            needed: PREFIX,
            available: buf.len(),
        });
    }
    let len = u32_at(buf, 0);
    if (len as usize) < FIXED {
        return Err(DecodeError::BadLength {
            len,
            min: FIXED as u32,
        });
    }
    Ok(PREFIX + len as usize)
}

/// Decodes the record at the start of `buf` (a [`Bytes`] so that the
/// body is a slice of it, not a copy); returns it and its frame length.
pub(crate) fn decode(buf: &Bytes) -> Result<(Decoded, usize), DecodeError> {
    let frame = peek_frame_len(buf)?;
    if buf.len() < frame {
        return Err(DecodeError::Incomplete {
            needed: frame,
            available: buf.len(),
        });
    }
    let payload = &buf[PREFIX..frame];
    let stored = u32_at(buf, 4);
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let flags = payload[24];
    if flags & !FLAG_BATCH_END != 0 {
        return Err(DecodeError::BadFlags(flags));
    }
    let tp_len = payload[25];
    let tp_end = FIXED + tp_len as usize;
    if tp_end > payload.len() {
        return Err(DecodeError::TraceparentLength { len: tp_len });
    }
    let traceparent = if tp_len == 0 {
        None
    } else {
        let s = std::str::from_utf8(&payload[FIXED..tp_end])
            .map_err(|_| DecodeError::TraceparentUtf8)?;
        Some(Arc::<str>::from(s))
    };
    let decoded = Decoded {
        offset: u64_at(payload, 0),
        timestamp_ms: u64_at(payload, 8),
        id: u64_at(payload, 16),
        batch_end: flags & FLAG_BATCH_END != 0,
        traceparent,
        body: buf.slice(PREFIX + tp_end..frame),
    };
    Ok((decoded, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn one(tp: Option<&str>, body: &[u8]) -> Bytes {
        let mut out = Vec::new();
        encode(&mut out, 42, 1_700_000_000_000, 7, true, tp, body);
        Bytes::from(out)
    }

    /// Recomputes the checksum after a deliberate edit of the payload, so
    /// that the damage under test is the only one.
    fn reseal(b: &mut [u8]) {
        let crc = crc32c::crc32c(&b[PREFIX..]);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn a_record_round_trips_with_and_without_traceparent() {
        for (tp, body) in [
            (Some(TP), &b"hello"[..]),
            (None, &b""[..]),
            (None, &[0u8; 5000][..]),
        ] {
            let buf = one(tp, body);
            assert_eq!(buf.len(), frame_len(tp.map_or(0, str::len), body.len()));
            let (d, n) = decode(&buf).unwrap();
            assert_eq!(n, buf.len());
            assert_eq!(d.offset, 42);
            assert_eq!(d.timestamp_ms, 1_700_000_000_000);
            assert_eq!(d.id, 7);
            assert!(d.batch_end);
            assert_eq!(d.traceparent.as_deref(), tp);
            assert_eq!(&d.body[..], body);
        }
    }

    #[test]
    fn records_decode_one_after_another_from_one_buffer() {
        let mut out = Vec::new();
        encode(&mut out, 0, 1, 10, false, None, b"a");
        encode(&mut out, 1, 2, 11, true, Some(TP), b"bb");
        let buf = Bytes::from(out);
        let (a, n) = decode(&buf).unwrap();
        let (b, m) = decode(&buf.slice(n..)).unwrap();
        assert_eq!((a.offset, a.batch_end, &a.body[..]), (0, false, &b"a"[..]));
        assert_eq!((b.offset, b.batch_end, &b.body[..]), (1, true, &b"bb"[..]));
        assert_eq!(n + m, buf.len());
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let buf = one(Some(TP), b"body bytes");
        for cut in 0..buf.len() {
            let err = decode(&buf.slice(..cut)).unwrap_err();
            assert!(
                matches!(err, DecodeError::Incomplete { available, .. } if available == cut),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn every_flipped_payload_byte_fails_the_checksum() {
        let buf = one(Some(TP), b"body bytes");
        for at in PREFIX..buf.len() {
            let mut b = buf.to_vec();
            b[at] ^= 0x40;
            let err = decode(&Bytes::from(b)).unwrap_err();
            assert!(
                matches!(err, DecodeError::Checksum { .. }),
                "byte {at}: {err:?}"
            );
        }
        let mut b = buf.to_vec();
        b[5] ^= 1;
        assert!(matches!(
            decode(&Bytes::from(b)),
            Err(DecodeError::Checksum { .. })
        ));
    }

    #[test]
    fn a_length_below_the_fixed_fields_is_bad_and_zeros_are_too() {
        let err = decode(&Bytes::from(vec![0u8; 64])).unwrap_err();
        assert_eq!(
            err,
            DecodeError::BadLength {
                len: 0,
                min: FIXED as u32
            }
        );
        let mut b = one(None, b"x").to_vec();
        b[0..4].copy_from_slice(&(FIXED as u32 - 1).to_le_bytes());
        assert!(matches!(
            decode(&Bytes::from(b)),
            Err(DecodeError::BadLength { .. })
        ));
    }

    #[test]
    fn a_length_beyond_the_buffer_is_incomplete() {
        let mut b = one(None, b"x").to_vec();
        b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&Bytes::from(b)),
            Err(DecodeError::Incomplete { .. })
        ));
    }

    #[test]
    fn unknown_flags_a_long_traceparent_and_bad_utf8_are_typed() {
        let mut b = one(None, b"xyz").to_vec();
        b[PREFIX + 24] = 0x82;
        reseal(&mut b);
        assert_eq!(
            decode(&Bytes::from(b)).unwrap_err(),
            DecodeError::BadFlags(0x82)
        );

        let mut b = one(None, b"xyz").to_vec();
        b[PREFIX + 25] = 200;
        reseal(&mut b);
        assert_eq!(
            decode(&Bytes::from(b)).unwrap_err(),
            DecodeError::TraceparentLength { len: 200 }
        );

        let mut b = one(Some("ab"), b"xyz").to_vec();
        b[PREFIX + FIXED] = 0xff;
        reseal(&mut b);
        assert_eq!(
            decode(&Bytes::from(b)).unwrap_err(),
            DecodeError::TraceparentUtf8
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic walk over many small buffers (a xorshift
        // stream), including ones whose prefix frames them exactly.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..2000usize {
            let len = n % 97;
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if len >= PREFIX && n % 2 == 0 {
                let l = (len - PREFIX) as u32;
                b[0..4].copy_from_slice(&l.to_le_bytes());
                if n % 4 == 0 && len >= MIN_FRAME {
                    reseal(&mut b);
                }
            }
            let _ = decode(&Bytes::from(b));
        }
    }

    #[test]
    fn an_over_long_traceparent_is_cut_not_a_panic() {
        let tp = "x".repeat(300);
        let buf = one(Some(&tp), b"b");
        let (d, _) = decode(&buf).unwrap();
        assert_eq!(
            d.traceparent.as_deref().map(str::len),
            Some(MAX_TRACEPARENT)
        );
    }
}
