//! The envelope: header + body, and how envelopes sit in ZeroMQ frames.
//!
//! # Guarantees
//! - Decoding never panics and never allocates more than the bytes it was
//!   given: every length is checked first. Sizes are capped by [`Limits`]
//!   *before* decoding (the transports also cap them before the bytes are
//!   read off a socket, see `docs/SECURITY.md`).
//! - Bodies stay [`Bytes`]: receiving does not copy them; a typed decode
//!   happens only when asked for ([`Envelope::decode`]).
//! - Unknown header keys are skipped; an unknown protocol version, message
//!   kind or content type is a typed [`DecodeError`].
//!
//! # Frame layout
//! A ZeroMQ message carries one or more envelopes as frame pairs
//! `header, body`, after an optional routing prefix (a topic for pub/sub, a
//! peer identity at a router). Several pairs in one message form a batch;
//! receivers treat them exactly like the same envelopes sent one by one.
//! `docs/PROTOCOL.md` is the normative description.

mod header;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::telemetry::DropReason;

pub use header::{ContentType, Deadline, Header, Kind, MessageId, NodeOp};

/// The protocol version written in every header.
pub const PROTOCOL_VERSION: u8 = 1;

/// Size limits applied before anything is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole ZeroMQ message (all frames together) accepted from a
    /// peer, in bytes. Default 8 MiB. A peer that declares more is
    /// disconnected before the bytes are read.
    pub max_message_size: usize,
    /// Largest header frame, in bytes. Default 16 KiB.
    pub max_header_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 8 * 1024 * 1024,
            max_header_size: 16 * 1024,
        }
    }
}

/// Why bytes could not be decoded into an envelope or a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header frame is larger than [`Limits::max_header_size`].
    #[error("header of {size} bytes exceeds the limit of {limit} (Limits::max_header_size)")]
    HeaderTooLarge {
        /// Size seen.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The message is larger than [`Limits::max_message_size`].
    #[error("message of {size} bytes exceeds the limit of {limit} (Limits::max_message_size)")]
    MessageTooLarge {
        /// Size seen (or declared).
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The bytes ended inside the named field.
    #[error("header truncated in {0}")]
    Truncated(&'static str),
    /// The named field has the wrong MessagePack type.
    #[error("header field {0} has the wrong MessagePack type")]
    WrongType(&'static str),
    /// A required header field is absent.
    #[error("header field {0} is missing")]
    MissingField(&'static str),
    /// A field's value does not fit its type (e.g. an id that is not 16 bytes).
    #[error("header field {0} is out of range")]
    FieldOutOfRange(&'static str),
    /// A string field is not UTF-8.
    #[error("header field {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// The header's protocol version is not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u64),
    /// The message kind is not one this version knows.
    #[error("unknown message kind {0}")]
    UnknownKind(u64),
    /// The content type is not one this version knows.
    #[error("unknown content type {0}")]
    UnknownContentType(u64),
    /// Unknown header values nest deeper than the decoder follows.
    #[error("header nests too deeply")]
    TooDeep,
    /// Bytes follow the header map.
    #[error("{0} bytes after the header")]
    TrailingBytes(usize),
    /// The frames do not form `header, body` pairs after the prefix.
    #[error("expected header/body frame pairs, got {0} frames")]
    BadFrameCount(usize),
    /// The body is not MessagePack of the expected type.
    #[error("body does not decode as the expected type: {0}")]
    Body(String),
}

impl DecodeError {
    /// The drop reason this error is counted under.
    pub fn reason(&self) -> DropReason {
        match self {
            DecodeError::HeaderTooLarge { .. } => DropReason::HeaderTooLarge,
            DecodeError::MessageTooLarge { .. } => DropReason::MessageTooLarge,
            DecodeError::UnsupportedVersion(_) => DropReason::UnsupportedVersion,
            DecodeError::UnknownKind(_) => DropReason::UnknownKind,
            DecodeError::UnknownContentType(_) => DropReason::UnknownContentType,
            DecodeError::BadFrameCount(_) => DropReason::BadFrameCount,
            DecodeError::Body(_) => DropReason::BadBody,
            _ => DropReason::MalformedHeader,
        }
    }
}

/// Why a value could not be encoded as a body.
#[derive(Debug, thiserror::Error)]
#[error("body does not encode as MessagePack: {0}")]
pub struct EncodeError(#[from] rmp_serde::encode::Error);

/// One message: its header and its (still encoded) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The decoded header.
    pub header: Header,
    /// The body bytes, as received.
    pub body: Bytes,
}

impl Envelope {
    /// Decodes the body as MessagePack of `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode_body(&self.body)
    }

    /// The envelope's size on the wire, approximately (header excluded).
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

/// Encodes `value` as a MessagePack body (structs as maps, so that other
/// languages see field names).
pub fn encode_body<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, EncodeError> {
    let mut buf = Vec::with_capacity(64);
    value.serialize(&mut rmp_serde::Serializer::new(&mut buf).with_struct_map())?;
    Ok(Bytes::from(buf))
}

/// Decodes a MessagePack body as `T`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice(body).map_err(|e| DecodeError::Body(e.to_string()))
}

/// Encodes a header into its own frame.
pub fn encode_header(header: &Header) -> Bytes {
    let mut buf = BytesMut::with_capacity(48);
    header.encode(&mut buf);
    buf.freeze()
}

/// Checks a whole message's size against the limit.
pub fn check_message_size(frames: &[Bytes], limits: &Limits) -> Result<(), DecodeError> {
    let size: usize = frames.iter().map(Bytes::len).sum();
    if size > limits.max_message_size {
        return Err(DecodeError::MessageTooLarge {
            size,
            limit: limits.max_message_size,
        });
    }
    Ok(())
}

/// Decodes the `header, body` pairs of one message (the routing prefix
/// already removed). All or nothing: one bad pair rejects the message.
pub fn decode_pairs(frames: &[Bytes], limits: &Limits) -> Result<Vec<Envelope>, DecodeError> {
    check_message_size(frames, limits)?;
    if frames.is_empty() || !frames.len().is_multiple_of(2) {
        return Err(DecodeError::BadFrameCount(frames.len()));
    }
    frames
        .chunks_exact(2)
        .map(|pair| {
            Ok(Envelope {
                header: Header::decode(&pair[0], limits.max_header_size)?,
                body: pair[1].clone(),
            })
        })
        .collect()
}

/// The body of an error reply (kind [`Kind::Error`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RemoteError {
    /// A short machine-readable code, e.g. `bad_request`, `handler_error`,
    /// `overloaded`, `deadline_expired`.
    pub code: String,
    /// A human-readable description.
    pub message: String,
}

/// The remote error codes zfabric itself sends ([`RemoteError::code`]).
///
/// Applications may send codes of their own; [`RemoteCode::parse`] returns
/// `None` for those. This enum is the authoritative list: code, docs and
/// `docs/PROTOCOL.md` use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteCode {
    /// The request body did not decode as the service's request type.
    BadRequest,
    /// The handler's reply did not encode.
    BadReply,
    /// An error reply whose body did not decode as a [`RemoteError`].
    BadErrorReply,
    /// An event body did not decode as the consumer's event type.
    BadEvent,
    /// The server's bulkhead refused the call (full); retry elsewhere.
    Rejected,
    /// The request's deadline passed before work started.
    DeadlineExpired,
    /// No reply came in time from the next hop (gateway, chain).
    Timeout,
    /// The next hop's circuit breaker is open.
    CircuitOpen,
    /// The receiving node serves no service of that name.
    NoSuchService,
    /// The receiving node is not a member of that group.
    NotInGroup,
    /// The receiving node takes no unicast messages, or its inbox is full.
    InboxFull,
    /// The receiving node takes no unicast messages at all.
    NoInbox,
    /// The node is shutting down.
    Stopping,
    /// A call further along (chain, gateway) failed; the message says how.
    Upstream,
    /// A failure injected on purpose (`zfabric run` faults, `serve --fail`).
    Injected,
    /// A value could not be encoded.
    Encode,
    /// A gateway refused the caller's token.
    Unauthorized,
    /// A gateway refused a service the token or its config does not allow.
    Forbidden,
    /// The call had taken more service hops than the node allows
    /// (`node::MAX_HOPS`): a forwarding loop, ended.
    TooManyHops,
    /// A write named a version other than the stored one (optimistic
    /// concurrency: someone changed it since the caller read it); nothing
    /// was changed. Read again and retry.
    Conflict,
}

impl RemoteCode {
    /// Every code, for docs and tests.
    pub const ALL: [RemoteCode; 20] = [
        RemoteCode::BadRequest,
        RemoteCode::BadReply,
        RemoteCode::BadErrorReply,
        RemoteCode::BadEvent,
        RemoteCode::Rejected,
        RemoteCode::DeadlineExpired,
        RemoteCode::Timeout,
        RemoteCode::CircuitOpen,
        RemoteCode::NoSuchService,
        RemoteCode::NotInGroup,
        RemoteCode::InboxFull,
        RemoteCode::NoInbox,
        RemoteCode::Stopping,
        RemoteCode::Upstream,
        RemoteCode::Injected,
        RemoteCode::Encode,
        RemoteCode::Unauthorized,
        RemoteCode::Forbidden,
        RemoteCode::TooManyHops,
        RemoteCode::Conflict,
    ];

    /// The code as it travels on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            RemoteCode::BadRequest => "bad_request",
            RemoteCode::BadReply => "bad_reply",
            RemoteCode::BadErrorReply => "bad_error_reply",
            RemoteCode::BadEvent => "bad_event",
            RemoteCode::Rejected => "rejected",
            RemoteCode::DeadlineExpired => "deadline_expired",
            RemoteCode::Timeout => "timeout",
            RemoteCode::CircuitOpen => "circuit_open",
            RemoteCode::NoSuchService => "no_such_service",
            RemoteCode::NotInGroup => "not_in_group",
            RemoteCode::InboxFull => "inbox_full",
            RemoteCode::NoInbox => "no_inbox",
            RemoteCode::Stopping => "stopping",
            RemoteCode::Upstream => "upstream",
            RemoteCode::Injected => "injected",
            RemoteCode::Encode => "encode",
            RemoteCode::Unauthorized => "unauthorized",
            RemoteCode::Forbidden => "forbidden",
            RemoteCode::TooManyHops => "too_many_hops",
            RemoteCode::Conflict => "conflict",
        }
    }

    /// The code for a wire string, or `None` for an application's own code.
    pub fn parse(code: &str) -> Option<RemoteCode> {
        RemoteCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl std::fmt::Display for RemoteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<RemoteCode> for String {
    fn from(c: RemoteCode) -> String {
        c.as_str().to_string()
    }
}

impl RemoteError {
    /// The code as one of zfabric's own, or `None` for an application's.
    pub fn known_code(&self) -> Option<RemoteCode> {
        RemoteCode::parse(&self.code)
    }

    /// An error with the given code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        RemoteError {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Makes unique message ids and sequence numbers for one sender.
#[derive(Debug)]
pub struct IdGen {
    source: u64,
    prefix: u128,
    counter: AtomicU64,
}

impl IdGen {
    /// A generator with a fresh random source id.
    pub fn new() -> Self {
        Self::with_source(random_u64())
    }

    /// A generator for a given source id (e.g. a node id).
    pub fn with_source(source: u64) -> Self {
        IdGen {
            source,
            prefix: (random_u64() as u128) << 64,
            counter: AtomicU64::new(0),
        }
    }

    /// The source id written in headers.
    pub fn source(&self) -> u64 {
        self.source
    }

    /// A fresh message id.
    pub fn next_id(&self) -> MessageId {
        MessageId(self.prefix | self.counter.fetch_add(1, Ordering::Relaxed) as u128)
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

/// A random 64-bit value from the standard library's per-process random
/// keys, mixed with the time and a counter (not cryptographic).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_within_a_generator() {
        let g = IdGen::new();
        let a = g.next_id();
        let b = g.next_id();
        assert_ne!(a, b);
        assert_eq!(a.0 >> 64, b.0 >> 64);
    }

    #[test]
    fn pairs_decode_and_odd_frame_counts_are_refused() {
        let h = Header::new(Kind::Event, MessageId(1), 2, 3);
        let frames = vec![encode_header(&h), Bytes::from_static(b"x")];
        let env = decode_pairs(&frames, &Limits::default()).unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].header, h);
        assert_eq!(
            decode_pairs(&frames[..1], &Limits::default()),
            Err(DecodeError::BadFrameCount(1))
        );
    }

    #[test]
    fn a_message_over_the_limit_is_refused() {
        let limits = Limits {
            max_message_size: 10,
            max_header_size: 10,
        };
        let frames = vec![Bytes::from(vec![0u8; 6]), Bytes::from(vec![0u8; 6])];
        assert_eq!(
            decode_pairs(&frames, &limits),
            Err(DecodeError::MessageTooLarge {
                size: 12,
                limit: 10
            })
        );
    }

    #[test]
    fn bodies_round_trip_as_named_maps() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Quote {
            sym: String,
            px: f64,
        }
        let q = Quote {
            sym: "ABC".into(),
            px: 1.5,
        };
        let b = encode_body(&q).unwrap();
        assert_eq!(b[0], 0x82, "a struct is a 2-entry map");
        assert_eq!(decode_body::<Quote>(&b).unwrap(), q);
        assert!(matches!(
            decode_body::<Quote>(b"\xc1"),
            Err(DecodeError::Body(_))
        ));
    }
}
