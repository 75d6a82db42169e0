//! Metric names and the helpers that record them.
//!
//! Everything goes through the [`metrics`] facade: with no recorder
//! installed the calls cost a few nanoseconds and record nothing. Drops and
//! rejections are rare events and are counted per reason; nothing is
//! recorded per successfully delivered message, so the hot path stays free
//! of global lookups.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `zfabric_messages_dropped_total` | counter | `reason` | a message zfabric discarded (reasons below) |
//! | `zfabric_messages_lost_total` | counter | — | gaps seen in a publisher's sequence numbers at a subscriber |
//! | `zfabric_peers_disconnected_total` | counter | `reason` | connections zfabric closed or lost |
//! | `zfabric_reconnects_total` | counter | `transport` | successful reconnections of an outgoing link |
//! | `zfabric_node_members` | gauge | `state` (`alive`, `suspect`) | peers a node sees, set twice per heartbeat |
//!
//! Resilience metrics (bulkheads, breakers, retries, dedup) are listed in
//! [`crate::resilience`]; topology metrics (event redeliveries, gateway
//! refusals) in [`crate::topology`].
//!
//! Drop reasons: `malformed` (header or frame layout), `unknown_kind`,
//! `unsupported_version`, `bad_body`, `subscriber_queue_full`,
//! `deadline_expired`, `late_reply`, `unmatched_reply`, `link_down`,
//! `no_peer`. Disconnect reasons: `frame_too_large`, `message_too_large`,
//! `bad_greeting`, `bad_handshake`, `malformed_frame`, `io`.

/// Counter: messages discarded, by `reason`.
pub const MESSAGES_DROPPED: &str = "zfabric_messages_dropped_total";
/// Counter: messages a subscriber knows it missed (sequence gaps).
pub const MESSAGES_LOST: &str = "zfabric_messages_lost_total";
/// Counter: connections closed or lost, by `reason`.
pub const PEERS_DISCONNECTED: &str = "zfabric_peers_disconnected_total";
/// Gauge: peers a node sees, by `state`.
pub const NODE_MEMBERS: &str = "zfabric_node_members";
/// Counter: successful reconnections of an outgoing link.
pub const RECONNECTS: &str = "zfabric_reconnects_total";

pub(crate) fn dropped(reason: &'static str, n: u64) {
    metrics::counter!(MESSAGES_DROPPED, "reason" => reason).increment(n);
}

pub(crate) fn lost(n: u64) {
    metrics::counter!(MESSAGES_LOST).increment(n);
}

pub(crate) fn disconnected(reason: &'static str) {
    metrics::counter!(PEERS_DISCONNECTED, "reason" => reason).increment(1);
}

pub(crate) fn reconnected(transport: &'static str) {
    metrics::counter!(RECONNECTS, "transport" => transport).increment(1);
}
