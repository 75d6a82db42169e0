//! What every pattern shares: the [`SocketBuilder`] that opens sockets,
//! the [`Delivery`] a receiver hands out, and the [`GapTracker`] that finds
//! sequence gaps. Guarantees: a builder only parses and checks endpoints
//! (mixing inproc with ipc/tcp is refused); the gap tracker is bounded and
//! never reports a false gap. No I/O here.
use std::collections::HashMap;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::config::SocketConfig;
use crate::transport::{self, Plan};
use crate::wire::{DecodeError, Envelope, Header};
use crate::OpenError;

/// Endpoints and settings for one socket; finish with the method naming
/// the role (`publisher`, `subscriber`, `pusher`, `puller`, `client`,
/// `server`).
#[derive(Debug, Clone, Default)]
pub struct SocketBuilder {
    pub(crate) config: SocketConfig,
    pub(crate) binds: Vec<String>,
    pub(crate) connects: Vec<String>,
}

impl SocketBuilder {
    /// A builder with the default [`SocketConfig`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `config` for the socket.
    pub fn config(mut self, config: SocketConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds an endpoint to bind (`inproc://name`, `ipc:///path`,
    /// `tcp://host:port`; port 0 picks a free port).
    pub fn bind(mut self, endpoint: impl Into<String>) -> Self {
        self.binds.push(endpoint.into());
        self
    }

    /// Adds an endpoint to connect to. Connecting never waits for the
    /// peer: the link is made (and remade) in the background.
    pub fn connect(mut self, endpoint: impl Into<String>) -> Self {
        self.connects.push(endpoint.into());
        self
    }

    pub(crate) fn plan(&self) -> Result<Plan, OpenError> {
        transport::plan(&self.binds, &self.connects)
    }
}

/// A received message: topic (pub/sub only), envelope, and the number of
/// messages from the same publisher and topic known to be missing just
/// before it.
#[derive(Debug, Clone)]
pub struct Delivery<T> {
    /// The topic (empty outside pub/sub).
    pub topic: Bytes,
    /// Header and undecoded body.
    pub envelope: Envelope,
    /// Messages missed just before this one (sequence gap), pub/sub only.
    pub missed_before: u64,
    pub(crate) _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Delivery<T> {
    /// Decodes the body as `T`.
    pub fn decode(&self) -> Result<T, DecodeError> {
        self.envelope.decode()
    }
}

impl<T> Delivery<T> {
    pub(crate) fn new(topic: Bytes, envelope: Envelope, missed_before: u64) -> Self {
        Delivery {
            topic,
            envelope,
            missed_before,
            _t: PhantomData,
        }
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.envelope.header
    }

    /// The raw body bytes.
    pub fn body(&self) -> &Bytes {
        &self.envelope.body
    }

    /// The trace the message came in (its receive span, when this process
    /// records spans), if it carries one: continue it with
    /// [`trace::with_context`](crate::trace::with_context).
    pub fn trace_context(&self) -> Option<crate::trace::TraceContext> {
        crate::trace::from_header(&self.envelope.header)
    }

    /// The topic as UTF-8, if it is.
    pub fn topic_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.topic).ok()
    }
}

/// Detects gaps in per-(publisher, topic) sequence numbers.
///
/// Bounded: past `MAX_TRACKED` streams the table is cleared and each
/// stream starts a new baseline (no false gaps, possibly missed ones).
/// A run of messages on one stream (what a batch carries) is tracked
/// without hashing: the previous message's stream is remembered.
#[derive(Debug, Default)]
pub(crate) struct GapTracker {
    /// Each stream's slot in `last`.
    index: HashMap<(u64, Bytes), usize>,
    /// The highest sequence number seen per stream.
    last: Vec<u64>,
    /// The previous message's stream and its slot.
    recent: Option<(u64, Bytes, usize)>,
}

const MAX_TRACKED: usize = 65_536;

impl GapTracker {
    /// Records `seq` from `source` on `topic`; returns how many messages
    /// were skipped just before it.
    pub(crate) fn observe(&mut self, source: u64, topic: &Bytes, seq: u64) -> u64 {
        let slot = match &self.recent {
            Some((s, t, slot)) if *s == source && t == topic => *slot,
            _ => match self.index.get(&(source, topic.clone())) {
                Some(&slot) => {
                    self.recent = Some((source, topic.clone(), slot));
                    slot
                }
                None => {
                    if self.index.len() >= MAX_TRACKED {
                        self.index.clear();
                        self.last.clear();
                    }
                    let slot = self.last.len();
                    self.last.push(seq);
                    self.index.insert((source, topic.clone()), slot);
                    self.recent = Some((source, topic.clone(), slot));
                    return 0;
                }
            },
        };
        let last = &mut self.last[slot];
        let gap = seq.saturating_sub(*last).saturating_sub(1);
        if seq > *last {
            *last = seq;
        }
        gap
    }

    /// Forgets streams under `prefix` (after an unsubscribe, the next
    /// message starts a new baseline).
    pub(crate) fn forget(&mut self, prefix: &[u8]) {
        let kept: Vec<((u64, Bytes), u64)> = self
            .index
            .drain()
            .filter(|((_, t), _)| !t.starts_with(prefix))
            .map(|(k, slot)| (k, self.last[slot]))
            .collect();
        self.last.clear();
        self.recent = None;
        for (k, seq) in kept {
            self.index.insert(k, self.last.len());
            self.last.push(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_counted_per_publisher_and_topic() {
        let mut g = GapTracker::default();
        let a = Bytes::from_static(b"a");
        let b = Bytes::from_static(b"b");
        assert_eq!(g.observe(1, &a, 10), 0);
        assert_eq!(g.observe(1, &a, 11), 0);
        assert_eq!(g.observe(1, &a, 15), 3);
        assert_eq!(g.observe(1, &b, 1), 0);
        assert_eq!(g.observe(2, &a, 1), 0);
        assert_eq!(g.observe(1, &a, 12), 0, "a late message is not a gap");
        g.forget(b"a");
        assert_eq!(g.observe(1, &a, 40), 0);
        assert_eq!(g.observe(1, &b, 3), 1, "b's baseline survives forgetting a");
        assert_eq!(g.observe(1, &a, 43), 2);
    }

    #[test]
    fn runs_and_switches_between_streams_count_the_same_gaps() {
        // The same messages, in runs and interleaved: the same gaps.
        let a = Bytes::from_static(b"a");
        let b = Bytes::from_static(b"b");
        let seqs = [(1, &a, 0), (1, &a, 1), (1, &a, 4), (2, &a, 7), (1, &b, 0)];
        let rest = [(1, &a, 5), (2, &a, 9), (1, &b, 2), (1, &b, 3), (2, &a, 10)];
        let mut g = GapTracker::default();
        let gaps: Vec<u64> = seqs
            .iter()
            .chain(rest.iter())
            .map(|(s, t, n)| g.observe(*s, t, *n))
            .collect();
        assert_eq!(gaps, vec![0, 0, 2, 0, 0, 0, 1, 1, 0, 0]);
    }
}
