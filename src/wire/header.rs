//! The envelope header: a MessagePack map with small integer keys.
//!
//! Encoding is hand-written on top of `rmp` (no serde on the hot path) and
//! decoding is a bounded, panic-free parser: every length is checked against
//! the bytes that are actually there before anything is allocated, unknown
//! keys are skipped (up to a nesting depth), and every failure is a
//! [`DecodeError`] variant.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::io::Write;

use bytes::{BufMut, BytesMut};
use rmp::Marker;

use super::{DecodeError, PROTOCOL_VERSION};

/// Header map keys. See `docs/PROTOCOL.md` for the table.
mod key {
    pub(super) const VERSION: u8 = 0;
    pub(super) const KIND: u8 = 1;
    pub(super) const ID: u8 = 2;
    pub(super) const SOURCE: u8 = 3;
    pub(super) const SEQ: u8 = 4;
    pub(super) const CORRELATION: u8 = 5;
    pub(super) const REPLY_TO: u8 = 6;
    pub(super) const DEADLINE: u8 = 7;
    pub(super) const ATTEMPT: u8 = 8;
    pub(super) const TRACEPARENT: u8 = 9;
    pub(super) const CONTENT_TYPE: u8 = 10;
    pub(super) const SERVICE: u8 = 11;
    pub(super) const CALL_ID: u8 = 12;
    pub(super) const PRIORITY: u8 = 13;
    pub(super) const HOPS: u8 = 14;
    pub(super) const OP: u8 = 15;
    pub(super) const TRACESTATE: u8 = 16;
}

/// How deep an unknown value may nest before the header is rejected.
const MAX_SKIP_DEPTH: usize = 16;

/// What a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A fire-and-forget message: pub/sub, push/pull, events.
    Event = 0,
    /// A request that expects exactly one reply or error.
    Request = 1,
    /// A successful reply; `correlation` names the request.
    Reply = 2,
    /// An error reply; `correlation` names the request, the body is a
    /// [`RemoteError`](crate::RemoteError).
    Error = 3,
    /// Reserved for fabric control traffic. Version 1 defines no control
    /// message: nothing in zfabric sends this kind (membership hellos and
    /// leaves are requests with an [`op`](Header::op)), and every receiver
    /// drops it, counted `unexpected_kind`. Reserved so that a later
    /// addition is dropped and counted by older receivers, never misread.
    Control = 4,
}

impl Kind {
    fn from_wire(v: u64) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Kind::Event,
            1 => Kind::Request,
            2 => Kind::Reply,
            3 => Kind::Error,
            4 => Kind::Control,
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ContentType {
    /// MessagePack of a serde type (the default).
    #[default]
    MsgPack = 0,
    /// Opaque bytes chosen by the application.
    Raw = 1,
}

impl ContentType {
    fn from_wire(v: u64) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(ContentType::MsgPack),
            1 => Ok(ContentType::Raw),
            other => Err(DecodeError::UnknownContentType(other)),
        }
    }
}

/// The node operation a message carries (header key 15). Absent means a
/// plain application message of a socket pattern.
///
/// Values are part of the protocol: a new operation gets a new number, and
/// a receiver refuses a number it does not know
/// ([`DecodeError::FieldOutOfRange`]`("op")`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeOp {
    /// An anycast call to the service named in [`Header::service`].
    Call = 1,
    /// A membership hello (join or heartbeat).
    Hello = 2,
    /// A node leaving the fabric.
    Leave = 3,
    /// A group multicast delivered to the group named in
    /// [`Header::service`].
    Deliver = 4,
    /// A fabric publish on the topic named in [`Header::service`].
    Publish = 5,
    /// A unicast to one node's inbox.
    Unicast = 6,
}

impl NodeOp {
    fn from_wire(v: u64) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => NodeOp::Call,
            2 => NodeOp::Hello,
            3 => NodeOp::Leave,
            4 => NodeOp::Deliver,
            5 => NodeOp::Publish,
            6 => NodeOp::Unicast,
            _ => return Err(DecodeError::FieldOutOfRange("op")),
        })
    }
}

/// A 128-bit message id, unique per message (random per-sender prefix in
/// the high 64 bits, a per-sender counter in the low 64 bits).
///
/// Stored 8-byte aligned (`packed(8)`), so that it does not make every
/// header 16-byte aligned and padded: headers are moved by value on every
/// hop, and a smaller header is moved with fewer instructions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(C, packed(8))]
pub struct MessageId(pub u128);

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(f, "MessageId({v:032x})")
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(f, "{v:032x}")
    }
}

/// An absolute deadline in microseconds since the Unix epoch (wall clock, so
/// that it means the same thing on every host of the fabric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub u64);

impl Deadline {
    fn now_micros() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }

    /// The deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Deadline(Self::now_micros().saturating_add(timeout.as_micros() as u64))
    }

    /// Time left before the deadline, or `None` if it has passed.
    pub fn remaining(&self) -> Option<Duration> {
        let now = Self::now_micros();
        (self.0 > now).then(|| Duration::from_micros(self.0 - now))
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.remaining().is_none()
    }
}

/// The envelope header carried in front of every body.
///
/// The protocol version is not a field: it is always written as
/// [`PROTOCOL_VERSION`] and checked on decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// What the message is for.
    pub kind: Kind,
    /// Unique id of this message.
    pub id: MessageId,
    /// Id of the sending socket or node.
    pub source: u64,
    /// Per-source sequence number (per topic for pub/sub).
    pub seq: u64,
    /// For replies and errors: the id of the request.
    pub correlation: Option<MessageId>,
    /// Key 6, reserved: decoded (it must be a string) and carried, but
    /// nothing in zfabric sets it or acts on it. Replies always go back
    /// along the connection the request came in on.
    pub reply_to: Option<Arc<str>>,
    /// Absolute deadline after which the message should not be worked on.
    pub deadline: Option<Deadline>,
    /// Delivery attempt, 0 for the first.
    pub attempt: u32,
    /// W3C trace context (`traceparent` header value). Read with
    /// [`trace::from_header`](crate::trace::from_header): a value that is
    /// not a valid `traceparent` is ignored there, not refused here.
    pub traceparent: Option<Arc<str>>,
    /// W3C vendor trace state (`tracestate` header value), passed on with
    /// [`traceparent`](Self::traceparent).
    pub tracestate: Option<Arc<str>>,
    /// How the body is encoded.
    pub content_type: ContentType,
    /// The service, group or topic a node-level message addresses. Shared,
    /// not copied: cloning a header (or reusing a name across calls) does
    /// not allocate; decoding allocates it once.
    pub service: Option<Arc<str>>,
    /// Logical call id kept across retries (0 = none).
    pub call_id: u64,
    /// Priority of the call (0 = default, higher is more urgent).
    pub priority: u8,
    /// Node hops the message has taken so far.
    pub hops: u8,
    /// The node operation (`None` = plain application message).
    pub op: Option<NodeOp>,
}

impl Header {
    /// A header with the given kind, id, source and sequence and every
    /// optional field empty.
    pub fn new(kind: Kind, id: MessageId, source: u64, seq: u64) -> Self {
        Header {
            kind,
            id,
            source,
            seq,
            correlation: None,
            reply_to: None,
            deadline: None,
            attempt: 0,
            traceparent: None,
            tracestate: None,
            content_type: ContentType::MsgPack,
            service: None,
            call_id: 0,
            priority: 0,
            hops: 0,
            op: None,
        }
    }

    /// The length of this header's encoding ([`encode`](Self::encode)),
    /// computed without encoding it: a few additions, no allocation (what
    /// the byte counters of the messaging patterns use).
    pub fn encoded_len(&self) -> usize {
        let mut fields = 5usize;
        // Every key is a positive fixint: one byte.
        let mut len = 1 + uint_len(PROTOCOL_VERSION as u64);
        len += 1 + uint_len(self.kind as u64);
        len += 1 + bin_len(16);
        len += 1 + uint_len(self.source);
        len += 1 + uint_len(self.seq);
        if self.correlation.is_some() {
            fields += 1;
            len += 1 + bin_len(16);
        }
        if let Some(r) = &self.reply_to {
            fields += 1;
            len += 1 + str_len(r.len());
        }
        if let Some(d) = self.deadline {
            fields += 1;
            len += 1 + uint_len(d.0);
        }
        let uints = [
            self.attempt as u64,
            self.content_type as u64,
            self.call_id,
            self.priority as u64,
            self.hops as u64,
        ];
        for v in uints {
            if v != 0 {
                fields += 1;
                len += 1 + uint_len(v);
            }
        }
        if let Some(op) = self.op {
            fields += 1;
            len += 1 + uint_len(op as u64);
        }
        for s in [&self.traceparent, &self.service, &self.tracestate]
            .into_iter()
            .flatten()
        {
            fields += 1;
            len += 1 + str_len(s.len());
        }
        len + if fields < 16 { 1 } else { 3 }
    }

    /// Appends the MessagePack encoding of this header to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let mut fields = 5u32;
        fields += self.correlation.is_some() as u32;
        fields += self.reply_to.is_some() as u32;
        fields += self.deadline.is_some() as u32;
        fields += (self.attempt != 0) as u32;
        fields += self.traceparent.is_some() as u32;
        fields += (self.content_type != ContentType::MsgPack) as u32;
        fields += self.service.is_some() as u32;
        fields += (self.call_id != 0) as u32;
        fields += (self.priority != 0) as u32;
        fields += (self.hops != 0) as u32;
        fields += self.op.is_some() as u32;
        fields += self.tracestate.is_some() as u32;
        let mut out = buf.writer();
        // Writing into memory cannot fail; the results are infallible.
        let _ = rmp::encode::write_map_len(&mut out, fields);
        put_uint(&mut out, key::VERSION, PROTOCOL_VERSION as u64);
        put_uint(&mut out, key::KIND, self.kind as u64);
        put_bin(&mut out, key::ID, &self.id.0.to_be_bytes());
        put_uint(&mut out, key::SOURCE, self.source);
        put_uint(&mut out, key::SEQ, self.seq);
        if let Some(c) = self.correlation {
            put_bin(&mut out, key::CORRELATION, &c.0.to_be_bytes());
        }
        if let Some(r) = &self.reply_to {
            put_str(&mut out, key::REPLY_TO, r);
        }
        if let Some(d) = self.deadline {
            put_uint(&mut out, key::DEADLINE, d.0);
        }
        if self.attempt != 0 {
            put_uint(&mut out, key::ATTEMPT, self.attempt as u64);
        }
        if let Some(t) = &self.traceparent {
            put_str(&mut out, key::TRACEPARENT, t);
        }
        if self.content_type != ContentType::MsgPack {
            put_uint(&mut out, key::CONTENT_TYPE, self.content_type as u64);
        }
        if let Some(s) = &self.service {
            put_str(&mut out, key::SERVICE, s);
        }
        if self.call_id != 0 {
            put_uint(&mut out, key::CALL_ID, self.call_id);
        }
        if self.priority != 0 {
            put_uint(&mut out, key::PRIORITY, self.priority as u64);
        }
        if self.hops != 0 {
            put_uint(&mut out, key::HOPS, self.hops as u64);
        }
        if let Some(op) = self.op {
            put_uint(&mut out, key::OP, op as u64);
        }
        if let Some(t) = &self.tracestate {
            put_str(&mut out, key::TRACESTATE, t);
        }
    }

    /// Decodes a header, refusing anything over `max_size` bytes before
    /// looking at it. Never panics.
    pub fn decode(bytes: &[u8], max_size: usize) -> Result<Header, DecodeError> {
        if bytes.len() > max_size {
            return Err(DecodeError::HeaderTooLarge {
                size: bytes.len(),
                limit: max_size,
            });
        }
        let mut rd = bytes;
        let n = read_map_len(&mut rd, "header")?;
        let mut version = None;
        let mut kind = None;
        let mut id = None;
        let mut source = None;
        let mut seq = None;
        let mut h = Header::new(Kind::Event, MessageId(0), 0, 0);
        for _ in 0..n {
            let k = read_uint(&mut rd, "key")?;
            match k {
                k if k == key::VERSION as u64 => version = Some(read_uint(&mut rd, "version")?),
                k if k == key::KIND as u64 => {
                    kind = Some(Kind::from_wire(read_uint(&mut rd, "kind")?)?)
                }
                k if k == key::ID as u64 => id = Some(read_id(&mut rd, "id")?),
                k if k == key::SOURCE as u64 => source = Some(read_uint(&mut rd, "source")?),
                k if k == key::SEQ as u64 => seq = Some(read_uint(&mut rd, "seq")?),
                k if k == key::CORRELATION as u64 => {
                    h.correlation = Some(read_id(&mut rd, "correlation")?)
                }
                k if k == key::REPLY_TO as u64 => {
                    h.reply_to = Some(read_str(&mut rd, "reply_to")?.into())
                }
                k if k == key::DEADLINE as u64 => {
                    h.deadline = Some(Deadline(read_uint(&mut rd, "deadline")?))
                }
                k if k == key::ATTEMPT as u64 => {
                    h.attempt = u32::try_from(read_uint(&mut rd, "attempt")?)
                        .map_err(|_| DecodeError::FieldOutOfRange("attempt"))?
                }
                k if k == key::TRACEPARENT as u64 => {
                    h.traceparent = Some(read_str(&mut rd, "traceparent")?.into())
                }
                k if k == key::CONTENT_TYPE as u64 => {
                    h.content_type = ContentType::from_wire(read_uint(&mut rd, "content_type")?)?
                }
                k if k == key::SERVICE as u64 => {
                    h.service = Some(Arc::from(read_str_slice(&mut rd, "service")?))
                }
                k if k == key::CALL_ID as u64 => h.call_id = read_uint(&mut rd, "call_id")?,
                k if k == key::PRIORITY as u64 => h.priority = read_u8(&mut rd, "priority")?,
                k if k == key::HOPS as u64 => h.hops = read_u8(&mut rd, "hops")?,
                k if k == key::OP as u64 => {
                    h.op = Some(NodeOp::from_wire(read_uint(&mut rd, "op")?)?)
                }
                k if k == key::TRACESTATE as u64 => {
                    h.tracestate = Some(Arc::from(read_str_slice(&mut rd, "tracestate")?))
                }
                _ => skip_value(&mut rd, 0)?,
            }
        }
        if !rd.is_empty() {
            return Err(DecodeError::TrailingBytes(rd.len()));
        }
        match version {
            Some(v) if v == PROTOCOL_VERSION as u64 => {}
            Some(v) => return Err(DecodeError::UnsupportedVersion(v)),
            None => return Err(DecodeError::MissingField("version")),
        }
        h.kind = kind.ok_or(DecodeError::MissingField("kind"))?;
        h.id = id.ok_or(DecodeError::MissingField("id"))?;
        h.source = source.ok_or(DecodeError::MissingField("source"))?;
        h.seq = seq.ok_or(DecodeError::MissingField("seq"))?;
        Ok(h)
    }
}

/// The MessagePack length of an unsigned integer (`write_uint`).
fn uint_len(v: u64) -> usize {
    match v {
        0..=127 => 1,
        128..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// The MessagePack length of a binary of `n` bytes (`write_bin`).
fn bin_len(n: usize) -> usize {
    n + match n {
        0..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// The MessagePack length of a string of `n` bytes (`write_str`).
fn str_len(n: usize) -> usize {
    n + match n {
        0..=31 => 1,
        32..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

fn put_uint<W: Write>(out: &mut W, k: u8, v: u64) {
    let _ = rmp::encode::write_pfix(out, k);
    let _ = rmp::encode::write_uint(out, v);
}

fn put_bin<W: Write>(out: &mut W, k: u8, v: &[u8]) {
    let _ = rmp::encode::write_pfix(out, k);
    let _ = rmp::encode::write_bin(out, v);
}

fn put_str<W: Write>(out: &mut W, k: u8, v: &str) {
    let _ = rmp::encode::write_pfix(out, k);
    let _ = rmp::encode::write_str(out, v);
}

fn take<'a>(rd: &mut &'a [u8], n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
    if rd.len() < n {
        return Err(DecodeError::Truncated(field));
    }
    let (head, tail) = rd.split_at(n);
    *rd = tail;
    Ok(head)
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64)
}

fn read_marker(rd: &mut &[u8], field: &'static str) -> Result<Marker, DecodeError> {
    Ok(Marker::from_u8(take(rd, 1, field)?[0]))
}

fn read_uint(rd: &mut &[u8], field: &'static str) -> Result<u64, DecodeError> {
    match read_marker(rd, field)? {
        Marker::FixPos(v) => Ok(v as u64),
        Marker::U8 => Ok(be(take(rd, 1, field)?)),
        Marker::U16 => Ok(be(take(rd, 2, field)?)),
        Marker::U32 => Ok(be(take(rd, 4, field)?)),
        Marker::U64 => Ok(be(take(rd, 8, field)?)),
        // Signed encodings are refused: every integer field is unsigned.
        _ => Err(DecodeError::WrongType(field)),
    }
}

fn read_map_len(rd: &mut &[u8], field: &'static str) -> Result<usize, DecodeError> {
    match read_marker(rd, field)? {
        Marker::FixMap(n) => Ok(n as usize),
        Marker::Map16 => Ok(be(take(rd, 2, field)?) as usize),
        Marker::Map32 => Ok(be(take(rd, 4, field)?) as usize),
        _ => Err(DecodeError::WrongType(field)),
    }
}

fn read_bin<'a>(rd: &mut &'a [u8], field: &'static str) -> Result<&'a [u8], DecodeError> {
    let len = match read_marker(rd, field)? {
        Marker::Bin8 => be(take(rd, 1, field)?),
        Marker::Bin16 => be(take(rd, 2, field)?),
        Marker::Bin32 => be(take(rd, 4, field)?),
        _ => return Err(DecodeError::WrongType(field)),
    };
    take(rd, len as usize, field)
}

fn read_id(rd: &mut &[u8], field: &'static str) -> Result<MessageId, DecodeError> {
    let b = read_bin(rd, field)?;
    let arr: [u8; 16] = b
        .try_into()
        .map_err(|_| DecodeError::FieldOutOfRange(field))?;
    Ok(MessageId(u128::from_be_bytes(arr)))
}

fn read_u8(rd: &mut &[u8], field: &'static str) -> Result<u8, DecodeError> {
    u8::try_from(read_uint(rd, field)?).map_err(|_| DecodeError::FieldOutOfRange(field))
}

fn read_str(rd: &mut &[u8], field: &'static str) -> Result<String, DecodeError> {
    read_str_slice(rd, field).map(str::to_owned)
}

/// A string field, borrowed from the header bytes (no allocation).
fn read_str_slice<'a>(rd: &mut &'a [u8], field: &'static str) -> Result<&'a str, DecodeError> {
    let len = match read_marker(rd, field)? {
        Marker::FixStr(n) => n as u64,
        Marker::Str8 => be(take(rd, 1, field)?),
        Marker::Str16 => be(take(rd, 2, field)?),
        Marker::Str32 => be(take(rd, 4, field)?),
        _ => return Err(DecodeError::WrongType(field)),
    };
    let b = take(rd, len as usize, field)?;
    std::str::from_utf8(b).map_err(|_| DecodeError::InvalidUtf8(field))
}

/// Skips one MessagePack value of any type, bounded in depth and never
/// reading past the slice.
fn skip_value(rd: &mut &[u8], depth: usize) -> Result<(), DecodeError> {
    const F: &str = "unknown field";
    if depth > MAX_SKIP_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let skip_n = |rd: &mut &[u8], n: u64| take(rd, n as usize, F).map(|_| ());
    match read_marker(rd, F)? {
        Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
            Ok(())
        }
        Marker::U8 | Marker::I8 => skip_n(rd, 1),
        Marker::U16 | Marker::I16 => skip_n(rd, 2),
        Marker::U32 | Marker::I32 | Marker::F32 => skip_n(rd, 4),
        Marker::U64 | Marker::I64 | Marker::F64 => skip_n(rd, 8),
        Marker::FixStr(n) => skip_n(rd, n as u64),
        Marker::Str8 | Marker::Bin8 => {
            let n = be(take(rd, 1, F)?);
            skip_n(rd, n)
        }
        Marker::Str16 | Marker::Bin16 => {
            let n = be(take(rd, 2, F)?);
            skip_n(rd, n)
        }
        Marker::Str32 | Marker::Bin32 => {
            let n = be(take(rd, 4, F)?);
            skip_n(rd, n)
        }
        Marker::FixExt1 => skip_n(rd, 2),
        Marker::FixExt2 => skip_n(rd, 3),
        Marker::FixExt4 => skip_n(rd, 5),
        Marker::FixExt8 => skip_n(rd, 9),
        Marker::FixExt16 => skip_n(rd, 17),
        Marker::Ext8 => {
            let n = be(take(rd, 1, F)?);
            skip_n(rd, n + 1)
        }
        Marker::Ext16 => {
            let n = be(take(rd, 2, F)?);
            skip_n(rd, n + 1)
        }
        Marker::Ext32 => {
            let n = be(take(rd, 4, F)?);
            skip_n(rd, n + 1)
        }
        Marker::FixArray(n) => skip_items(rd, n as u64, depth),
        Marker::Array16 => {
            let n = be(take(rd, 2, F)?);
            skip_items(rd, n, depth)
        }
        Marker::Array32 => {
            let n = be(take(rd, 4, F)?);
            skip_items(rd, n, depth)
        }
        Marker::FixMap(n) => skip_items(rd, 2 * n as u64, depth),
        Marker::Map16 => {
            let n = be(take(rd, 2, F)?);
            skip_items(rd, 2 * n, depth)
        }
        Marker::Map32 => {
            let n = be(take(rd, 4, F)?);
            skip_items(rd, 2 * n, depth)
        }
        Marker::Reserved => Err(DecodeError::WrongType(F)),
    }
}

fn skip_items(rd: &mut &[u8], n: u64, depth: usize) -> Result<(), DecodeError> {
    for _ in 0..n {
        // Every item takes at least one byte: a count larger than what is
        // left ends with `Truncated`, never a long loop.
        if rd.is_empty() {
            return Err(DecodeError::Truncated("unknown field"));
        }
        skip_value(rd, depth + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoded_length_is_the_length_of_the_encoding() {
        let long = |n: usize| -> Option<Arc<str>> { Some("x".repeat(n).into()) };
        let mut cases = vec![full(), Header::new(Kind::Event, MessageId(1), 0, 0)];
        for (n, v) in [
            (31, 127),
            (32, 128),
            (255, 255),
            (256, 256),
            (70_000, 70_000),
        ] {
            let mut h = full();
            h.service = long(n);
            h.traceparent = long(n);
            h.attempt = v as u32;
            h.seq = v as u64;
            h.call_id = u64::from(u32::MAX) + v as u64;
            cases.push(h);
            let mut h = Header::new(Kind::Request, MessageId(v as u128), v as u64, 1 << 40);
            h.reply_to = long(n);
            cases.push(h);
        }
        for h in cases {
            let mut buf = BytesMut::new();
            h.encode(&mut buf);
            assert_eq!(h.encoded_len(), buf.len(), "{h:?}");
        }
    }

    fn full() -> Header {
        Header {
            kind: Kind::Error,
            id: MessageId(u128::MAX - 7),
            source: 42,
            seq: u64::MAX,
            correlation: Some(MessageId(9)),
            reply_to: Some("svc".into()),
            deadline: Some(Deadline(1_700_000_000_000_000)),
            attempt: 3,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: Some("congo=t61rcWkgMzE".into()),
            content_type: ContentType::Raw,
            service: Some("pricing".into()),
            call_id: u64::MAX,
            priority: 200,
            hops: 7,
            op: Some(NodeOp::Call),
        }
    }

    #[test]
    fn a_header_round_trips_with_every_field_set() {
        let h = full();
        let mut buf = BytesMut::new();
        h.encode(&mut buf);
        assert_eq!(Header::decode(&buf, 4096).unwrap(), h);
    }

    #[test]
    fn a_minimal_header_is_small() {
        let h = Header::new(Kind::Event, MessageId(1 << 100 | 5), 7, 1);
        let mut buf = BytesMut::new();
        h.encode(&mut buf);
        assert!(buf.len() <= 32, "{} bytes", buf.len());
        assert_eq!(Header::decode(&buf, 4096).unwrap(), h);
    }

    #[test]
    fn unknown_keys_are_skipped() {
        let mut buf = BytesMut::new();
        let h = Header::new(Kind::Request, MessageId(3), 1, 2);
        h.encode(&mut buf);
        // Rewrite the map length (fixmap 5 -> 6) and append key 99 with a nested value.
        buf[0] = 0x86;
        buf.extend_from_slice(&[99, 0x92, 0x01, 0x81, 0xa1, b'x', 0xc0]);
        assert_eq!(Header::decode(&buf, 4096).unwrap(), h);
    }

    #[test]
    fn node_fields_are_omitted_when_empty_and_checked_when_present() {
        let plain = Header::new(Kind::Request, MessageId(3), 1, 2);
        let mut a = BytesMut::new();
        plain.encode(&mut a);
        assert_eq!(a[0], 0x85, "five required fields, nothing else");
        for op in [1u8, 2, 3, 4, 5, 6] {
            let mut h = plain.clone();
            h.op = Some(NodeOp::from_wire(op as u64).unwrap());
            assert_eq!(h.op.map(|o| o as u8), Some(op));
        }
        // An op this version does not know is refused.
        let mut buf = BytesMut::new();
        plain.encode(&mut buf);
        buf[0] = 0x86;
        buf.extend_from_slice(&[key::OP, 99]);
        assert_eq!(
            Header::decode(&buf, 4096),
            Err(DecodeError::FieldOutOfRange("op"))
        );
        // A priority over 255 is refused.
        let mut buf = BytesMut::new();
        plain.encode(&mut buf);
        buf[0] = 0x86;
        buf.extend_from_slice(&[key::PRIORITY, 0xcd, 0x01, 0x00]);
        assert_eq!(
            Header::decode(&buf, 4096),
            Err(DecodeError::FieldOutOfRange("priority"))
        );
    }

    #[test]
    fn signed_integer_encodings_are_refused_as_malformed_headers() {
        let mut buf = BytesMut::new();
        Header::new(Kind::Event, MessageId(3), 1, 2).encode(&mut buf);
        // The last field is seq = 2 (positive fixint); write it as int 8,
        // then as a negative fixint: both refused, whatever the value.
        assert_eq!(&buf[buf.len() - 2..], &[key::SEQ, 2]);
        let n = buf.len();
        for signed in [&[0xd0, 2][..], &[0xff]] {
            let mut b = buf[..n - 1].to_vec();
            b.extend_from_slice(signed);
            let e = Header::decode(&b, 4096).unwrap_err();
            assert_eq!(e, DecodeError::WrongType("seq"));
            assert_eq!(e.reason(), crate::telemetry::DropReason::MalformedHeader);
        }
        // The same value as uint 8 decodes.
        let mut b = buf[..n - 1].to_vec();
        b.extend_from_slice(&[0xcc, 2]);
        assert_eq!(Header::decode(&b, 4096).unwrap().seq, 2);
    }

    #[test]
    fn a_newer_version_is_refused() {
        let mut buf = BytesMut::new();
        Header::new(Kind::Event, MessageId(3), 1, 2).encode(&mut buf);
        assert_eq!(buf[1], key::VERSION);
        buf[2] = 9;
        assert_eq!(
            Header::decode(&buf, 4096),
            Err(DecodeError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn an_oversized_header_is_refused_before_parsing() {
        let big = vec![0u8; 100];
        assert_eq!(
            Header::decode(&big, 64),
            Err(DecodeError::HeaderTooLarge {
                size: 100,
                limit: 64
            })
        );
    }

    #[test]
    fn a_huge_declared_array_ends_as_truncated() {
        // fixmap 1, key 99, array32 with 4 billion elements and no data.
        let bytes = [0x81, 99, 0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            Header::decode(&bytes, 4096),
            Err(DecodeError::Truncated(_))
        ));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut bytes = vec![0x81, 99];
        bytes.extend(std::iter::repeat_n(0x91, 100));
        bytes.push(0xc0);
        assert_eq!(Header::decode(&bytes, 4096), Err(DecodeError::TooDeep));
    }
}
