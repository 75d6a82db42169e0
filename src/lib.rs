//! # zfabric
//!
//! A brokerless messaging fabric for low-latency Rust services, built on
//! ZeroMQ sockets.
//!
//! ## Concepts
//! - An **envelope** ([`wire`]) is a small MessagePack header (ids,
//!   sequence, correlation, deadline, trace context) plus a body kept as
//!   [`bytes::Bytes`].
//! - An **endpoint** ([`Endpoint`]) names where a socket lives:
//!   `inproc://name` (zfabric's own in-process transport), `ipc:///path` or
//!   `tcp://host:port` (the `zeromq` crate, behind zfabric's guard relay).
//! - **Patterns** are typed sockets: [`Publisher`]/[`Subscriber`] (topic
//!   prefix), [`Pusher`]/[`Puller`] (pipeline), [`Client`]/[`Server`]
//!   (asynchronous request/reply). Each behaves the same on every
//!   transport.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use zfabric::{Client, Server, RemoteError};
//! let server = Server::<u64, u64>::bind("tcp://127.0.0.1:0").await?;
//! let ep = server.endpoints()[0].to_string();
//! let _running = server.spawn(|req| async move { Ok::<_, RemoteError>(req.body * 2) });
//! let client = Client::<u64, u64>::connect(&ep).await?;
//! assert_eq!(client.request(&21).await?, 42);
//! # Ok(()) }
//! ```
//!
//! ## Layout
//! Each layer uses only the ones above it in this list.
//! - [`wire`]: envelope, header codec, size limits, [`wire::RemoteCode`]
//!   (no I/O).
//! - [`telemetry`]: metric names; [`telemetry::DropReason`] and
//!   [`telemetry::DisconnectReason`], the lists every drop and disconnect is
//!   counted under.
//! - [`trace`]: the W3C trace context in headers and task-locals, and a
//!   `tracing` span per operation after OpenTelemetry's messaging
//!   conventions (no I/O, no exporter).
//! - `endpoint`, `config`, `error`: typed endpoints, socket settings, the
//!   error of each operation.
//! - `transport`: the one seam patterns send and receive through
//!   (`Outbound`, `Inbound`), written once per transport: the inproc
//!   engine, and the guard relay in front of every `zeromq` socket (frame
//!   limits, the ZMTP handshake and its security mechanism — NULL, or
//!   CURVE with [`CurveConfig`] — non-blocking connect, reconnection; see
//!   `docs/SECURITY.md`).
//! - [`messaging`]: the typed patterns and their delivery guarantees.
//! - [`resilience`]: bulkheads, deadline inheritance, retry budgets,
//!   circuit breakers, idempotent consumers.
//! - [`node`]: nodes built from parts (gossip, links, routing, local
//!   delivery, serve): membership, discovery, unicast/anycast/multicast.
//! - [`topology`]: aggregator, events, branch, chain, gateway, forwarder,
//!   composed from nodes.
//! - `edge` (feature `edge`, on with `cli`): the HTTP gateway into the
//!   fabric (routes, JWT, caching, limits, status page), over `node` and
//!   `topology`; no business logic, no way around the fabric's security.
//!
//! The command line (`zfabric run`, `bench`, `pub`, `req`, ...) is the
//! binary's, behind the default-on `cli` feature: the library built with
//! `--no-default-features` carries none of its dependencies.
//!
//! ## Life of a request
//! `node.request::<Req, Rep>("pricing", &req, timeout)` over tcp, one hop a line
//! (file, and the task that runs it):
//! 1. `node/node.rs` [`Node::request`](node::Node::request): encodes the
//!    body once into `Bytes` (caller's task).
//! 2. `node/call.rs`: the deadline (own timeout or what is left of the
//!    caller's, `resilience/deadline.rs`), then `routing.rs` `pick` chooses
//!    a member from a snapshot (alive first, breakers, round-robin or
//!    least outstanding), the retry budget and breaker judge the attempt
//!    (caller's task).
//! 3. `node/links.rs`: the member's link, a [`Client`]; the service, call id,
//!    priority and hops go into header fields ([`CallFields`]), the body
//!    stays the caller's bytes (caller's task).
//! 4. `messaging/reqrep.rs` [`Client::request_raw`]: a correlation id and a
//!    pending entry, then `transport/outbound.rs` hands `header, body` to
//!    the `zeromq` DEALER, straight or through `transport/batch.rs` when its
//!    backlog is high (caller's task; the batch flusher task under load).
//! 5. The DEALER writes to a private unix socket, `transport/guard/mod.rs`
//!    `PrivateIpc` (the `zeromq` crate's writer task).
//! 6. `transport/guard/connector.rs` and `relay.rs`: the link task (it
//!    answered the socket's ZMTP handshake itself, `transport/zmtp.rs`)
//!    pumps whole messages to the tcp connection, reconnecting when it
//!    breaks (the link's outbound pump task).
//! 7. The peer's `transport/guard/listener.rs`: every byte passes the
//!    frame scanner (`transport/scan.rs`) and the handshake
//!    (`transport/zmtp.rs`) before it reaches the peer's private socket (one
//!    relay task per accepted connection).
//! 8. The peer's `zeromq` ROUTER reads it; `transport/inbound.rs` decodes
//!    the header (the body stays `Bytes`) and notes where the reply goes
//!    (the server's receive task).
//! 9. `messaging/reqrep.rs` [`Server`]: drops it if not a request
//!    (counted), answers `deadline_expired` if it is already late, else
//!    runs the handler concurrently (server task); an answer finished past
//!    the deadline is dropped (counted), never sent.
//! 10. `node/serve.rs`: dispatch on the header's node operation; a call
//!     goes to `node/service.rs`: hop limit, dedup window, bulkhead
//!     (`resilience/bulkhead.rs`), deadline, then the handler, which decodes
//!     the body (server task, or the bulkhead's own threads).
//! 11. The reply goes back the same way, correlated by id
//!     (`transport/inbound.rs` `ReplySender` → ROUTER → listener relay →
//!     network → link inbound pump → DEALER → the client's receive task),
//!     which completes the caller's pending entry before its deadline, or
//!     the caller gets a typed error.
//!
//! Over inproc, steps 4–8 are one move of the envelope into the peer's
//! queue (`transport/inproc.rs`): no encoding, no syscall.
//!
//! ## Life of a published message
//! `publisher.publish("orders.created", &order)`:
//! 1. `messaging/pubsub.rs` [`Publisher::publish`]: encodes the body, and
//!    `transport/outbound.rs` fan-out stamps the per-topic sequence number
//!    while holding the socket, so numbers leave in order (caller's task).
//! 2. inproc: a copy of the envelope handle into each matching
//!    subscriber's bounded queue; a full one drops and counts
//!    `subscriber_queue_full` (`transport/inproc.rs`, caller's task).
//!    ipc/tcp: the `zeromq` PUB socket, then per subscriber the listener
//!    relay (`transport/guard/listener.rs`) to the network (the crate's
//!    writer task, one relay task per subscriber).
//! 3. The subscriber's link task (`transport/guard/connector.rs`, `relay.rs`)
//!    passes whole messages to its `zeromq` SUB, which filters by prefix;
//!    `transport/inbound.rs` decodes the header (the subscriber's task, in
//!    [`Subscriber::recv`]).
//! 4. `messaging/pubsub.rs` [`Subscriber::recv`]: the gap tracker
//!    (`messaging/socket.rs`) compares the sequence with the last one from
//!    that publisher and topic and reports what was missed in
//!    [`Delivery::missed_before`], counted as `zfabric_messages_lost_total`.
//!
//! ## Guarantees at a glance
//! | pattern | delivery | when full |
//! |---|---|---|
//! | pub/sub | at most once, ordered per publisher+topic, gaps counted | drop for that subscriber (counted) |
//! | push/pull | at most once, ordered per pair | sender waits (backpressure) |
//! | request/reply | exactly one reply or typed error before the deadline | server stops reading |

mod config;
#[cfg(feature = "edge")]
pub mod edge;
mod endpoint;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod messaging;
pub mod node;
pub mod resilience;
pub mod stream;
pub mod telemetry;
pub mod topic;
pub mod topology;
pub mod trace;
mod transport;
pub mod wire;

pub use config::SocketConfig;
pub use endpoint::{Endpoint, EndpointError, MAX_IPC_PATH};
pub use error::{BindError, ConnectError, OpenError, RecvError, RequestError, SendError};
pub use messaging::pipeline::{Puller, PushStats, Pusher};
pub use messaging::pubsub::{Publisher, Subscriber};
pub use messaging::reqrep::{
    CallFields, Client, Request, Server, ServerHandle, DEFAULT_REQUEST_TIMEOUT,
};
pub use messaging::socket::{Delivery, SocketBuilder};
pub use transport::curve::{
    AllowAnyClient, AllowList, AuthRequest, Authorizer, CurveConfig, CurveKeyPair, CurvePublicKey,
    CurveSecretKey, KeyError,
};
pub use transport::fanout::PublishStats;
pub use transport::{remove_private_dir, LinkState};
pub use wire::{Deadline, Envelope, RemoteError};
