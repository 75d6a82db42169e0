//! Typed messaging patterns over every transport: pub/sub, push/pull and
//! request/reply, with their delivery guarantees.
//!
//! Sockets are opened from a [`SocketBuilder`] (or the
//! `bind`/`connect` shortcuts on each type). Each pattern below states its
//! ordering, delivery and full-queue policy; every message zfabric discards
//! is counted in `zfabric_messages_dropped_total` with a reason
//! ([`DropReason`](crate::telemetry::DropReason)).
//!
//! ## One path per type
//! The pattern types are named at the crate root ([`Publisher`](crate::Publisher),
//! [`Subscriber`](crate::Subscriber), [`Pusher`](crate::Pusher),
//! [`Puller`](crate::Puller), [`Client`](crate::Client),
//! [`Server`](crate::Server), [`Request`](crate::Request),
//! [`ServerHandle`](crate::ServerHandle), [`CallFields`](crate::CallFields),
//! [`Delivery`], [`SocketBuilder`]):
//! that is their only public path. This module holds the documentation of
//! what they guarantee, not a second name for them.
//!
//! ## How a pattern sits on a transport
//! Each pattern keeps only its own rules (sequence numbers and gaps,
//! correlation, deadlines, which kinds it accepts). Sending and receiving
//! are written once per transport in `transport::{Outbound, Inbound}`: over
//! inproc, envelopes move as values between queues; over ipc/tcp, they are
//! `header, body` frames on a `zeromq` socket behind the guard relay.
//!
//!
//! ## Publish/subscribe
//!
//! Publish/subscribe with topic-prefix filtering.
//!
//!
//! ### Guarantees
//! - **At most once**, in order per publisher and topic.
//! - Every message carries a per-(publisher, topic) sequence number; a
//!   subscriber detects gaps, reports them on the next message
//!   ([`Delivery::missed_before`]), in [`Subscriber::lost`] and in
//!   `zfabric_messages_lost_total`.
//! - Filtering happens at the publisher (a subscriber is sent only the
//!   topics it subscribed to by prefix).
//!
//! ### Full-queue policy
//! A publisher never waits long for a slow subscriber (its batching paces
//! itself by what subscribers take, a millisecond at most per batch). Over
//! inproc, a message for a subscriber whose queue
//! (`SocketConfig::queue_capacity`) is full is dropped for that subscriber
//! and counted (`subscriber_queue_full`). Over ipc/tcp each subscriber
//! connection has its own send queue at the publisher
//! (`queue_capacity` publications and `publisher_queue_bytes`, 8 MiB):
//! what does not fit is dropped whole and counted (`slow_subscriber`), so
//! a subscriber that stops reading costs its publisher that much memory
//! and no more; the subscriber's gap detection counts the same loss. Use
//! push/pull where loss is not acceptable.
//!
//! ### What a publisher knows
//! [`Publisher::stats`](crate::Publisher::stats) says, per publication,
//! how many subscriber connections it was owed to, how many deliveries
//! were written or dropped (by reason), and how many are still unaccounted;
//! a publication that matched nobody is counted `no_subscriber`.
//! [`Publisher::flush`](crate::Publisher::flush) waits for the last ones,
//! [`Publisher::wait_subscribers`](crate::Publisher::wait_subscribers) for
//! subscribers before the first.
//!
//! ### Not guaranteed
//! Messages published before a subscription reaches the publisher are not
//! delivered (the "slow joiner" of every pub/sub system): they are counted
//! `no_subscriber` at the publisher when nobody was subscribed, and a late
//! subscriber's first message simply has a later sequence number (not
//! counted as lost). Nothing is acknowledged: *written* means handed to a
//! subscriber's connection.
//!
//! ## Push/pull
//!
//! Push/pull pipeline: each message goes to exactly one puller.
//!
//!
//! ### Guarantees
//! - **At most once**, in order per pusher and puller pair.
//! - Load is spread round-robin over the attached pullers; a puller with a
//!   full queue is skipped while another has room.
//! - A puller receives fairly from all its pushers (arrival order).
//!
//! ### Full-queue policy: backpressure
//! When every puller's queue is full, [`Pusher::send`] waits. Over inproc
//! a pusher with no puller attached yet waits for one; over ipc/tcp a
//! connected pusher queues up to the `zeromq` socket's high-water mark
//! while its link is down and then waits, and a bind-only pusher with no
//! puller connected yet fails with [`SendError::NoPeer`].
//!
//! ### What a pusher knows
//! [`Pusher::flush`](crate::Pusher::flush) waits, bounded, until what was
//! sent has left for a puller and says how many have not (`send`
//! returning `Ok` means queued, not delivered);
//! [`Pusher::close`](crate::Pusher::close) counts what never left as
//! `linger_expired`.
//!
//! ### Not guaranteed
//! Messages in flight on a connection that breaks are lost (counted as
//! `link_down` where the break is seen mid-message; what a puller that
//! dies held unread in its queue or the kernel's buffers is not known to
//! the pusher). At-least-once delivery (ack + retry + dedup) is layered
//! on top by the topology module.
//!
//! ## Request/reply
//!
//! Asynchronous request/reply (ZeroMQ DEALER/ROUTER).
//!
//!
//! ### Guarantees
//! - Each [`Client::request`] ends with exactly one outcome before its
//!   deadline: the reply, a typed remote error
//!   ([`RequestError::Remote`]), [`RequestError::PeerGone`] (the server
//!   went away with the request: at once over inproc, and over ipc/tcp when
//!   the client's only link breaks while the request is out), or
//!   [`RequestError::Timeout`]. It never hangs.
//! - Many requests may be in flight on one client; replies are matched by
//!   correlation id, in any order.
//! - The deadline travels in the request header; a server does not start
//!   work whose deadline has already passed (it answers
//!   `deadline_expired`), and does not send the answer of work that
//!   finished after it (dropped, counted `reply_after_deadline`; the
//!   caller gets its [`RequestError::Timeout`]).
//! - A server's replies carry its source id ([`Server::with_source`]; a
//!   node's servers use the node's id).
//! - A server runs requests concurrently, up to
//!   `SocketConfig::queue_capacity` at once; beyond that it stops reading
//!   (backpressure, no unbounded queue).
//! - Requests are spread round-robin over the servers a client is
//!   attached to.
//!
//! ### Full-queue policy
//! A client whose queue is full (`SocketConfig::queue_capacity` requests
//! waiting to be written) makes the next request wait for room, within its
//! deadline. Before a connected client's link is up, requests wait for it,
//! also within their deadline. A server with `queue_capacity` requests in
//! progress stops reading until one finishes.
//!
//! ### Raw path
//! [`Client::request_raw`] and [`Server::spawn_raw`]/[`Server::run_raw`]
//! carry an already encoded body as [`Bytes`] from caller to handler and
//! back, never re-encoded or copied, with the node header fields of
//! [`CallFields`] (service, call id, priority, hops, operation). The typed
//! [`Client`]/[`Server`] methods are a thin layer over it: they encode
//! once on the way out and decode once on the way in.
//!
//! ### Not guaranteed
//! A request is sent once: no retry happens here (see the resilience
//! module for idempotent retries). A reply that arrives after its request
//! timed out is dropped and counted (`late_reply`).
//!
//! [`Bytes`]: bytes::Bytes
//! [`CallFields`]: crate::CallFields
//! [`Client`]: crate::Client
//! [`Client::request`]: crate::Client::request
//! [`Client::request_raw`]: crate::Client::request_raw
//! [`Delivery::missed_before`]: crate::Delivery::missed_before
//! [`Pusher::send`]: crate::Pusher::send
//! [`RequestError::PeerGone`]: crate::RequestError::PeerGone
//! [`RequestError::Remote`]: crate::RequestError::Remote
//! [`RequestError::Timeout`]: crate::RequestError::Timeout
//! [`SendError::NoPeer`]: crate::SendError::NoPeer
//! [`Server`]: crate::Server
//! [`Server::run_raw`]: crate::Server::run_raw
//! [`Server::with_source`]: crate::Server::with_source
//! [`Server::spawn_raw`]: crate::Server::spawn_raw
//! [`Subscriber::lost`]: crate::Subscriber::lost

pub(crate) mod pipeline;
pub(crate) mod pubsub;
pub(crate) mod reqrep;
pub(crate) mod socket;

pub(crate) use socket::GapTracker;
pub(crate) use socket::{Delivery, SocketBuilder};
