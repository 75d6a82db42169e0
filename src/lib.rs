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
//! - [`wire`]: envelope, header codec, size limits (no I/O).
//! - `endpoint`: typed endpoints.
//! - `transport`: inproc engine; the guard relay that puts frame limits,
//!   non-blocking connect and reconnection in front of every `zeromq`
//!   socket (see `docs/SECURITY.md`).
//! - `messaging`: the typed patterns and their delivery guarantees.
//! - [`node`]: nodes, membership, discovery, unicast/anycast/multicast.
//! - [`resilience`]: bulkheads, deadline inheritance, retry budgets,
//!   circuit breakers, idempotent consumers.
//! - [`telemetry`]: metric names; every drop is counted with a reason.
//!
//! ## Guarantees at a glance
//! | pattern | delivery | when full |
//! |---|---|---|
//! | pub/sub | at most once, ordered per publisher+topic, gaps counted | drop for that subscriber (counted) |
//! | push/pull | at most once, ordered per pair | sender waits (backpressure) |
//! | request/reply | exactly one reply or typed error before the deadline | server stops reading |

mod config;
mod endpoint;
mod error;
pub mod messaging;
pub mod node;
pub mod resilience;
pub mod telemetry;
pub mod topology;
mod transport;
pub mod wire;

pub use config::SocketConfig;
pub use endpoint::{Endpoint, EndpointError, MAX_IPC_PATH};
pub use error::{BindError, ConnectError, OpenError, RecvError, RequestError, SendError};
pub use messaging::pipeline::{Puller, Pusher};
pub use messaging::pubsub::{Publisher, Subscriber};
pub use messaging::reqrep::{
    CallFields, Client, Request, Server, ServerHandle, DEFAULT_REQUEST_TIMEOUT,
};
pub use messaging::socket::{Delivery, SocketBuilder};
pub use transport::LinkState;
pub use wire::{Deadline, Envelope, RemoteError};
