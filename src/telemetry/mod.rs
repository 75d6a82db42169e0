//! Metric names and the helpers that record them.
//!
//! Everything goes through the [`metrics`] facade: with no recorder
//! installed the calls cost a few nanoseconds and record nothing. Drops and
//! rejections are rare events and are counted per reason. What is
//! counted per message (the traffic counters, [`MESSAGES_SENT`] and its
//! siblings) goes through counter handles a socket registers when it
//! opens, so the hot path stays free of global lookups.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `zfabric_messages_dropped_total` | counter | `reason` | a message zfabric discarded (reasons below) |
//! | `zfabric_messages_lost_total` | counter | — | gaps seen in a publisher's sequence numbers at a subscriber |
//! | `zfabric_peers_disconnected_total` | counter | `reason` | connections zfabric closed or lost |
//! | `zfabric_reconnects_total` | counter | `transport` | successful reconnections of an outgoing link |
//! | `zfabric_messages_sent_total`, `zfabric_messages_received_total` | counter | `pattern` (`pubsub`, `pipeline`, `reqrep`), `transport` (`inproc`, `ipc`, `tcp`) | messages a pattern sent, or received and handed on (a batch of N counts N) |
//! | `zfabric_message_bytes_sent_total`, `zfabric_message_bytes_received_total` | counter | `pattern`, `transport` | their header and body bytes |
//! | `zfabric_node_members` | gauge (scrape time) | `node`, `state` (`alive`, `suspect`) | peers a node sees |
//! | `zfabric_gossip_peers_ignored_total` | counter | `reason` (`members_full`, `greet_limit`) | peers named by gossip that the [`GossipLimits`](crate::node::GossipLimits) kept a node from greeting or admitting |
//!
//! Families measured by a node carry a `node` label, its name, so that
//! several nodes in one process (`zfabric run`) keep apart: requests,
//! members, breakers, retries. The others (drops, disconnects,
//! reconnects, gossip refusals) are counted per process. Gauges are read
//! from their owners at scrape time ([`collect`]), so the series of a
//! dropped node or bulkhead, or of a member that is gone, leave the
//! scrape.
//!
//! Resilience metrics (bulkheads, breakers, retries, dedup) are listed in
//! [`crate::resilience`]; topology metrics (event redeliveries, gateway
//! refusals) in [`crate::topology`].
//!
//! Request metrics (per service, on both sides of a node call) are in
//! `request` ([`REQUESTS`], [`REQUEST_DURATION`], [`REQUESTS_IN_FLIGHT`]);
//! [`catalog`] describes every family (help text, unit) and registers
//! the known counters at zero.
//!
//! The `reason` labels are the authoritative lists [`DropReason`] and
//! [`DisconnectReason`]: code, docs and the protocol use these enums, never
//! string literals. `docs/OPERATIONS.md` explains each (checked by
//! `tests/vocabulary.rs`).

pub mod catalog;
mod collect;
mod request;
mod status;

pub use collect::collect;
pub(crate) use collect::{register, Collector};
pub(crate) use request::{remote_outcome, RequestMetrics, RequestTimer, Side};
pub use request::{REQUESTS, REQUESTS_IN_FLIGHT, REQUEST_DURATION};
pub use status::{status, BreakerStatus, BulkheadStatus, MemberStatus, NodeStatus, StatusReport};

/// Counter: messages discarded, by `reason`.
pub const MESSAGES_DROPPED: &str = "zfabric_messages_dropped_total";
/// Counter: messages a subscriber knows it missed (sequence gaps).
pub const MESSAGES_LOST: &str = "zfabric_messages_lost_total";
/// Counter: connections closed or lost, by `reason`.
pub const PEERS_DISCONNECTED: &str = "zfabric_peers_disconnected_total";
/// Gauge: peers a node sees, by `node` and `state` (set at scrape time).
pub const NODE_MEMBERS: &str = "zfabric_node_members";
/// Counter: successful reconnections of an outgoing link.
pub const RECONNECTS: &str = "zfabric_reconnects_total";
/// Counter: messages a socket's pattern sent, by `pattern` and
/// `transport` (counted once per message, however many receive it).
pub const MESSAGES_SENT: &str = "zfabric_messages_sent_total";
/// Counter: messages a socket's pattern received and handed on, by
/// `pattern` and `transport`.
pub const MESSAGES_RECEIVED: &str = "zfabric_messages_received_total";
/// Counter: header and body bytes of the messages in [`MESSAGES_SENT`].
pub const MESSAGE_BYTES_SENT: &str = "zfabric_message_bytes_sent_total";
/// Counter: header and body bytes of the messages in
/// [`MESSAGES_RECEIVED`].
pub const MESSAGE_BYTES_RECEIVED: &str = "zfabric_message_bytes_received_total";

/// The `pattern` label of the traffic counters.
pub(crate) const PATTERNS: [&str; 3] = ["pubsub", "pipeline", "reqrep"];
/// The `transport` label of the traffic counters.
pub(crate) const TRANSPORTS: [&str; 3] = ["inproc", "ipc", "tcp"];

/// One direction of a socket's traffic: the message and byte counters of
/// its pattern and transport, registered once when the socket opens (at
/// zero) and kept as handles, so that counting a message is two relaxed
/// atomic additions: no label look-up, no allocation.
#[derive(Debug, Clone)]
pub(crate) struct Traffic {
    messages: metrics::Counter,
    bytes: metrics::Counter,
}

impl Traffic {
    /// The sent counters of `pattern` over `transport`.
    pub(crate) fn sent(pattern: &'static str, transport: &'static str) -> Self {
        Self::register(MESSAGES_SENT, MESSAGE_BYTES_SENT, pattern, transport)
    }

    /// The received counters of `pattern` over `transport`.
    pub(crate) fn received(pattern: &'static str, transport: &'static str) -> Self {
        Self::register(
            MESSAGES_RECEIVED,
            MESSAGE_BYTES_RECEIVED,
            pattern,
            transport,
        )
    }

    fn register(
        messages: &'static str,
        bytes: &'static str,
        pattern: &'static str,
        transport: &'static str,
    ) -> Self {
        let labels = [("pattern", pattern), ("transport", transport)];
        let t = Traffic {
            messages: metrics::counter!(messages, &labels),
            bytes: metrics::counter!(bytes, &labels),
        };
        t.messages.increment(0);
        t.bytes.increment(0);
        t
    }

    /// Counts one message of this header and body.
    #[inline]
    pub(crate) fn count(&self, header: &crate::wire::Header, body_len: usize) {
        self.count_len(header.encoded_len() + body_len);
    }

    /// Counts one message of `len` header and body bytes.
    #[inline]
    pub(crate) fn count_len(&self, len: usize) {
        self.messages.increment(1);
        self.bytes.increment(len as u64);
    }
}

/// Why a message was discarded: the `reason` label of
/// [`MESSAGES_DROPPED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// A message with no frame at all where a routing prefix (topic or
    /// peer identity) must come. ZMTP cannot carry an empty message, so
    /// this counts only what a transport bug could produce; a prefix with
    /// no header/body pair after it is [`BadFrameCount`](Self::BadFrameCount).
    Malformed,
    /// A header over the header size limit.
    HeaderTooLarge,
    /// A message over the message size limit.
    MessageTooLarge,
    /// A header of a protocol version this build does not speak.
    UnsupportedVersion,
    /// A header whose `kind` is not a known kind.
    UnknownKind,
    /// A header whose content type is not a known one.
    UnknownContentType,
    /// The frames after the routing prefix (if any) do not form
    /// header/body pairs: none, or an odd number (a topic alone, a topic
    /// and a header, a header without its body).
    BadFrameCount,
    /// Any other header that does not decode: not a MessagePack map, a
    /// field of the wrong MessagePack type (a signed integer encoding
    /// included), a required field missing, a value out of range (an id
    /// not 16 bytes, `attempt` over u32, `priority` or `hops` over 255, an
    /// unknown `op`), a string that is not UTF-8, truncation, unknown
    /// values nested deeper than 16 levels, bytes after the map.
    MalformedHeader,
    /// A body that does not decode as the expected type.
    BadBody,
    /// A known kind arriving where it has no meaning: anything but a
    /// request at a server, anything but a reply or error at a client,
    /// anything but an event at a subscriber or puller. Kind 4 (control,
    /// reserved: version 1 defines no control message) is one everywhere.
    UnexpectedKind,
    /// A reply whose correlation names no request this client sent.
    UnmatchedReply,
    /// A reply that arrived after its caller stopped waiting: at a client,
    /// one whose request already ended (timed out, or its future dropped);
    /// at an inproc server, one whose caller is gone.
    LateReply,
    /// At a server: a reply (or error) whose request's deadline passed
    /// while its handler ran. It is not sent: the caller stops waiting at
    /// its deadline, so a reply after it is never looked at.
    ReplyAfterDeadline,
    /// A reply with no way back to its requester.
    NoReplyPath,
    /// A request that arrived or waited past its deadline and was not
    /// started.
    DeadlineExpired,
    /// No connected peer could take the message.
    NoPeer,
    /// A subscriber's bounded queue was full.
    SubscriberQueueFull,
    /// The link the message was queued on broke before it was written.
    LinkDown,
    /// A discovery beacon that does not decode.
    BadBeacon,
    /// A discovery beacon whose authentication does not match this
    /// node's fabric key (none, another, tampered or stale).
    BeaconAuth,
    /// A node's bounded inbox was full.
    InboxFull,
    /// A call that has passed more service hops than allowed.
    TooManyHops,
    /// A pub/sub forwarder could not pass a message on.
    ForwardFailed,
    /// A publication that matched no subscriber connection when it was
    /// made (pub/sub delivers only to those subscribed at the time).
    NoSubscriber,
    /// A subscriber connection's send queue at the publisher was full: the
    /// subscriber reads slower than the publisher publishes (the queue
    /// holds `queue_capacity` publications and 8 MiB).
    SlowSubscriber,
    /// Still unsent when a sender closed and its linger ran out (e.g. no
    /// puller ever connected).
    LingerExpired,
    /// A stream record a consumer's handler failed on every attempt
    /// (`ConsumerConfig::handler_attempts`); skipped so the partition
    /// goes on.
    StreamHandlerFailed,
    /// Stream records that retention removed before a consumer read them
    /// (the consumer was away longer than the stream keeps records).
    StreamRetention,
}

impl DropReason {
    /// Every reason, for registering counters and for docs.
    pub const ALL: [DropReason; 28] = [
        DropReason::Malformed,
        DropReason::HeaderTooLarge,
        DropReason::MessageTooLarge,
        DropReason::UnsupportedVersion,
        DropReason::UnknownKind,
        DropReason::UnknownContentType,
        DropReason::BadFrameCount,
        DropReason::MalformedHeader,
        DropReason::BadBody,
        DropReason::UnexpectedKind,
        DropReason::UnmatchedReply,
        DropReason::LateReply,
        DropReason::ReplyAfterDeadline,
        DropReason::NoReplyPath,
        DropReason::DeadlineExpired,
        DropReason::NoPeer,
        DropReason::SubscriberQueueFull,
        DropReason::LinkDown,
        DropReason::BadBeacon,
        DropReason::BeaconAuth,
        DropReason::InboxFull,
        DropReason::TooManyHops,
        DropReason::ForwardFailed,
        DropReason::NoSubscriber,
        DropReason::SlowSubscriber,
        DropReason::LingerExpired,
        DropReason::StreamHandlerFailed,
        DropReason::StreamRetention,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::HeaderTooLarge => "header_too_large",
            DropReason::MessageTooLarge => "message_too_large",
            DropReason::UnsupportedVersion => "unsupported_version",
            DropReason::UnknownKind => "unknown_kind",
            DropReason::UnknownContentType => "unknown_content_type",
            DropReason::BadFrameCount => "bad_frame_count",
            DropReason::MalformedHeader => "malformed_header",
            DropReason::BadBody => "bad_body",
            DropReason::UnexpectedKind => "unexpected_kind",
            DropReason::UnmatchedReply => "unmatched_reply",
            DropReason::LateReply => "late_reply",
            DropReason::ReplyAfterDeadline => "reply_after_deadline",
            DropReason::NoReplyPath => "no_reply_path",
            DropReason::DeadlineExpired => "deadline_expired",
            DropReason::NoPeer => "no_peer",
            DropReason::SubscriberQueueFull => "subscriber_queue_full",
            DropReason::LinkDown => "link_down",
            DropReason::BadBeacon => "bad_beacon",
            DropReason::BeaconAuth => "beacon_auth",
            DropReason::InboxFull => "inbox_full",
            DropReason::TooManyHops => "too_many_hops",
            DropReason::ForwardFailed => "forward_failed",
            DropReason::NoSubscriber => "no_subscriber",
            DropReason::SlowSubscriber => "slow_subscriber",
            DropReason::LingerExpired => "linger_expired",
            DropReason::StreamHandlerFailed => "stream_handler_failed",
            DropReason::StreamRetention => "stream_retention",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection was closed or lost: the `reason` label of
/// [`PEERS_DISCONNECTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer's 64-byte ZMTP greeting is not one we accept.
    BadGreeting,
    /// The ZMTP handshake (READY, mechanism, socket type) failed.
    BadHandshake,
    /// A frame with flags that ZMTP does not define.
    MalformedFrame,
    /// A frame (or command) declaring more than its limit.
    FrameTooLarge,
    /// The frames of one message add up to more than the limit.
    MessageTooLarge,
    /// An I/O error on the connection.
    Io,
    /// A peer of a `zeromq` socket failed inside the crate.
    PeerError,
    /// The peer's greeting announces another security mechanism (a NULL
    /// peer at a CURVE socket, or the reverse).
    MechanismMismatch,
    /// The peer's CURVE key is not authorized (the `Authorizer` said no).
    Unauthorized,
    /// The greeting and handshake did not finish within
    /// `SocketConfig::handshake_timeout`.
    HandshakeTimeout,
    /// A CURVE box did not open: a wrong server key, a tampered cookie,
    /// handshake box or message.
    DecryptFailed,
    /// A CURVE message whose short nonce does not increase (a replay).
    BadNonce,
    /// The remote refused our handshake with a ZMTP ERROR command (e.g.
    /// our key is not authorized there).
    PeerRefused,
    /// A connection sent and received nothing for
    /// `SocketConfig::idle_timeout`.
    IdleTimeout,
    /// A listener already holds `SocketConfig::max_connections`
    /// connections: a new one is closed at once.
    TooManyConnections,
}

impl DisconnectReason {
    /// Every reason, for registering counters and for docs.
    pub const ALL: [DisconnectReason; 15] = [
        DisconnectReason::BadGreeting,
        DisconnectReason::BadHandshake,
        DisconnectReason::MalformedFrame,
        DisconnectReason::FrameTooLarge,
        DisconnectReason::MessageTooLarge,
        DisconnectReason::Io,
        DisconnectReason::PeerError,
        DisconnectReason::MechanismMismatch,
        DisconnectReason::Unauthorized,
        DisconnectReason::HandshakeTimeout,
        DisconnectReason::DecryptFailed,
        DisconnectReason::BadNonce,
        DisconnectReason::PeerRefused,
        DisconnectReason::IdleTimeout,
        DisconnectReason::TooManyConnections,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::BadGreeting => "bad_greeting",
            DisconnectReason::BadHandshake => "bad_handshake",
            DisconnectReason::MalformedFrame => "malformed_frame",
            DisconnectReason::FrameTooLarge => "frame_too_large",
            DisconnectReason::MessageTooLarge => "message_too_large",
            DisconnectReason::Io => "io",
            DisconnectReason::PeerError => "peer_error",
            DisconnectReason::MechanismMismatch => "mechanism_mismatch",
            DisconnectReason::Unauthorized => "unauthorized",
            DisconnectReason::HandshakeTimeout => "handshake_timeout",
            DisconnectReason::DecryptFailed => "decrypt_failed",
            DisconnectReason::BadNonce => "bad_nonce",
            DisconnectReason::PeerRefused => "peer_refused",
            DisconnectReason::IdleTimeout => "idle_timeout",
            DisconnectReason::TooManyConnections => "too_many_connections",
        }
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) fn dropped(reason: DropReason, n: u64) {
    metrics::counter!(MESSAGES_DROPPED, "reason" => reason.as_str()).increment(n);
}

/// Counter: peers named by gossip (or heard by beacon) that a node did
/// not greet or admit because of its [`GossipLimits`](crate::node::GossipLimits),
/// by `reason` ([`GossipIgnored`]).
pub const GOSSIP_IGNORED: &str = "zfabric_gossip_peers_ignored_total";

/// Why a peer named by gossip was ignored (the `reason` label of
/// [`GOSSIP_IGNORED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GossipIgnored {
    /// The registry holds `max_members` peers already.
    MembersFull,
    /// Over `greets_per_hello` unknown peers in one hello, or
    /// `greets_in_flight` greets under way.
    GreetLimit,
}

impl GossipIgnored {
    /// Every reason.
    pub const ALL: [GossipIgnored; 2] = [GossipIgnored::MembersFull, GossipIgnored::GreetLimit];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            GossipIgnored::MembersFull => "members_full",
            GossipIgnored::GreetLimit => "greet_limit",
        }
    }
}

/// Counter: failed attempts to reach a configured seed, by `reason`
/// ([`SeedFailure`]): a seed name that did not resolve (checked every
/// ten heartbeats) or a seed address whose hello went unanswered (every
/// heartbeat). Also logged (a warning when a seed starts failing, info
/// when it answers again).
pub const SEED_FAILURES: &str = "zfabric_seed_failures_total";

/// Why a seed attempt failed (the `reason` label of [`SEED_FAILURES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SeedFailure {
    /// The seed's host name did not resolve to any address.
    Unresolved,
    /// The seed's address did not answer a hello within the heartbeat
    /// (nothing listens there, the handshake failed, or it is too slow).
    Unreachable,
}

impl SeedFailure {
    /// Every reason.
    pub const ALL: [SeedFailure; 2] = [SeedFailure::Unresolved, SeedFailure::Unreachable];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SeedFailure::Unresolved => "unresolved",
            SeedFailure::Unreachable => "unreachable",
        }
    }
}

pub(crate) fn seed_failed(reason: SeedFailure) {
    metrics::counter!(SEED_FAILURES, "reason" => reason.as_str()).increment(1);
}

pub(crate) fn gossip_ignored(reason: GossipIgnored, n: u64) {
    metrics::counter!(GOSSIP_IGNORED, "reason" => reason.as_str()).increment(n);
}

pub(crate) fn lost(n: u64) {
    metrics::counter!(MESSAGES_LOST).increment(n);
}

pub(crate) fn disconnected(reason: DisconnectReason) {
    metrics::counter!(PEERS_DISCONNECTED, "reason" => reason.as_str()).increment(1);
}

pub(crate) fn reconnected(transport: &'static str) {
    metrics::counter!(RECONNECTS, "transport" => transport).increment(1);
}

/// Counter: HTTP requests the edge (`zfabric::edge`, the HTTP gateway)
/// refused before or instead of a fabric call, by `reason`
/// ([`EdgeRefusal`]). Every reason starts at zero.
pub const EDGE_REFUSED: &str = "zfabric_edge_refused_total";

/// Counter: HTTP requests the edge answered, by `route` (the configured
/// path template, a bounded set) and `status` (the HTTP status code).
pub const EDGE_REQUESTS: &str = "zfabric_edge_requests_total";

/// Histogram: time from an HTTP request's arrival at the edge to its
/// answer, in seconds, by `route`.
pub const EDGE_REQUEST_DURATION: &str = "zfabric_edge_request_duration_seconds";

/// Why the HTTP edge refused a request (the `reason` label of
/// [`EDGE_REFUSED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EdgeRefusal {
    /// No configured route matches the path (404).
    NoRoute,
    /// A route matches the path but not the method (405).
    MethodNotAllowed,
    /// The body is larger than `max_body_bytes` (413).
    TooLarge,
    /// The body is not JSON, path parameters cannot merge into it, or the
    /// deadline header does not parse (400).
    BadRequest,
    /// No bearer token, or one that does not verify (401).
    Unauthorized,
    /// A valid token without the route's scopes or claims, or a service
    /// the route does not allow (403).
    Forbidden,
    /// The client's token bucket is empty (429).
    RateLimited,
}

impl EdgeRefusal {
    /// Every reason.
    pub const ALL: [EdgeRefusal; 7] = [
        EdgeRefusal::NoRoute,
        EdgeRefusal::MethodNotAllowed,
        EdgeRefusal::TooLarge,
        EdgeRefusal::BadRequest,
        EdgeRefusal::Unauthorized,
        EdgeRefusal::Forbidden,
        EdgeRefusal::RateLimited,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            EdgeRefusal::NoRoute => "no_route",
            EdgeRefusal::MethodNotAllowed => "method_not_allowed",
            EdgeRefusal::TooLarge => "too_large",
            EdgeRefusal::BadRequest => "bad_request",
            EdgeRefusal::Unauthorized => "unauthorized",
            EdgeRefusal::Forbidden => "forbidden",
            EdgeRefusal::RateLimited => "rate_limited",
        }
    }
}

/// Counts one refusal of the HTTP edge.
pub fn edge_refused(reason: EdgeRefusal) {
    metrics::counter!(EDGE_REFUSED, "reason" => reason.as_str()).increment(1);
}
