//! Socket configuration shared by every pattern.

use std::time::Duration;

use crate::transport::curve::CurveConfig;
use crate::wire::Limits;

/// Settings for one zfabric socket.
///
/// The defaults are tuned for low-latency services on one host or a LAN:
/// 8 MiB messages, 1,000-message queues, reconnect after 100 ms backing off
/// to 5 s.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// Size limits enforced on every incoming message before it is
    /// decoded, and on ipc/tcp before it is read off the socket.
    pub limits: Limits,
    /// High-water mark, in messages. Over inproc: the queue of each
    /// receiving socket, plus as many parked sends per receiver while it is
    /// full. Over ipc/tcp: zfabric's batch queue per sending socket, and a
    /// publisher's send queue per subscriber connection (with
    /// [`publisher_queue_bytes`](Self::publisher_queue_bytes); the
    /// `zeromq` crate's own queues underneath are kept empty). For a
    /// server: requests handled at once. When it is reached the pattern's
    /// full-queue policy applies (see each pattern). Memory cost: up to
    /// this many messages.
    pub queue_capacity: usize,
    /// Most bytes a publisher queues for one subscriber connection that
    /// reads slower than it publishes (besides `queue_capacity`
    /// publications); beyond either bound publications for that subscriber
    /// are dropped and counted (`slow_subscriber`). Default 8 MiB. Memory
    /// cost: up to this much per subscriber connection.
    pub publisher_queue_bytes: usize,
    /// First delay before reconnecting a lost outgoing link.
    pub reconnect_initial: Duration,
    /// Largest delay between reconnection attempts (the delay doubles, with
    /// jitter, up to this).
    pub reconnect_max: Duration,
    /// Longest wait for one TCP connect and ZMTP handshake attempt; also
    /// the longest a peer connecting to a bound socket may take over its
    /// greeting and handshake (NULL or CURVE) before it is cut off
    /// (counted as `handshake_timeout`). Default 5 s.
    pub handshake_timeout: Duration,
    /// A connection to a bound socket that sends and receives nothing for
    /// this long is closed (counted as `idle_timeout`); checked once per
    /// period, so it goes between one and two periods after its last
    /// byte. `None` (the default): never. Cost: one timer per connection.
    pub idle_timeout: Option<Duration>,
    /// Most connections each listener of a bound socket holds at once;
    /// one more is closed before any byte is read (counted as
    /// `too_many_connections`). Default 1,024. Each connection costs 3
    /// file descriptors and a few tens of kilobytes (docs/SECURITY.md).
    pub max_connections: usize,
    /// CurveZMQ on every ipc/tcp connection of this socket (`None`, the
    /// default: NULL, no security). See [`CurveConfig`]. Inproc is never
    /// encrypted. Cost: a few X25519 operations per connection, then one
    /// box (XSalsa20-Poly1305, 33 bytes of overhead) per frame.
    pub curve: Option<CurveConfig>,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            limits: Limits::default(),
            queue_capacity: 1000,
            publisher_queue_bytes: 8 * 1024 * 1024,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: None,
            max_connections: 1024,
            curve: None,
        }
    }
}

impl SocketConfig {
    /// Sets the largest accepted message. Cost: up to this many bytes may
    /// be buffered per connection while a message arrives.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes;
        self
    }

    /// Sets the high-water mark. Cost: memory for this many messages per
    /// peer; a larger value absorbs longer bursts at the price of latency
    /// under overload.
    pub fn queue_capacity(mut self, messages: usize) -> Self {
        self.queue_capacity = messages.max(1);
        self
    }

    /// Sets a publisher's byte bound per subscriber connection (see
    /// [`publisher_queue_bytes`](Self::publisher_queue_bytes); at least 1).
    pub fn publisher_queue_bytes(mut self, bytes: usize) -> Self {
        self.publisher_queue_bytes = bytes.max(1);
        self
    }

    /// Turns CURVE on for this socket's ipc/tcp connections: it binds as a
    /// CURVE server (clients are let in by the config's authorizer) and
    /// connects as a CURVE client (to the config's server keys).
    pub fn curve(mut self, curve: CurveConfig) -> Self {
        self.curve = Some(curve);
        self
    }

    /// Sets the greeting + handshake deadline (see
    /// [`handshake_timeout`](Self::handshake_timeout)).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Closes connections to a bound socket that stay silent both ways for
    /// `timeout` (see [`idle_timeout`](Self::idle_timeout)).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Sets the most connections each listener holds (at least 1; see
    /// [`max_connections`](Self::max_connections)).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets the reconnection backoff bounds.
    pub fn reconnect(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_initial = initial;
        self.reconnect_max = max.max(initial);
        self
    }
}
