//! Error types, one per operation.

use std::time::Duration;

use crate::endpoint::{Endpoint, EndpointError};

use crate::wire::{DecodeError, EncodeError, RemoteError};

/// Why a socket could not bind.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another live socket holds the address (for ipc: a live listener is
    /// behind the socket file; a stale file is removed and reused).
    #[error("address in use: {0}")]
    AddrInUse(Endpoint),
    /// An ipc path exists and is not a socket; zfabric never deletes it.
    #[error("ipc path {0} exists and is not a socket")]
    NotASocket(Endpoint),
    /// The operating system refused.
    #[error("bind {endpoint}: {source}")]
    Io {
        /// What was being bound.
        endpoint: Endpoint,
        /// The OS error.
        source: std::io::Error,
    },
    /// The underlying ZeroMQ socket refused.
    #[error("zeromq bind: {0}")]
    Zmq(String),
}

/// Why a socket could not connect. Connecting never waits for the peer:
/// these are errors found before any network traffic.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Setting up the local guard failed.
    #[error("connect {endpoint}: {source}")]
    Io {
        /// What was being connected.
        endpoint: Endpoint,
        /// The OS error.
        source: std::io::Error,
    },
    /// The underlying ZeroMQ socket refused.
    #[error("zeromq connect: {0}")]
    Zmq(String),
}

/// Why a send failed. A send that returns `Ok` has been queued for
/// delivery; the pattern's docs say what happens after that.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The value could not be encoded as MessagePack.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The message exceeds `SocketConfig::limits.max_message_size`.
    #[error("message of {size} bytes exceeds the limit of {limit} (SocketConfig::limits)")]
    TooLarge {
        /// Message size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// No peer is attached and the pattern cannot queue (push/dealer with
    /// no endpoint bound or connected yet).
    #[error("no peer to send to (bind or connect first)")]
    NoPeer,
    /// The socket was closed.
    #[error("socket closed")]
    Closed,
    /// The underlying ZeroMQ socket refused.
    #[error("zeromq send: {0}")]
    Zmq(String),
}

/// Why a receive failed.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// `recv_timeout` elapsed with nothing received.
    #[error("nothing received within {0:?}")]
    Timeout(Duration),
    /// The socket was closed.
    #[error("socket closed")]
    Closed,
}

/// Why a request got no successful reply.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No reply before the request's deadline (`Client::request` timeout).
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server answered with an error (handler failure, bad request,
    /// overload).
    #[error("remote error {0}")]
    Remote(#[from] RemoteError),
    /// The request could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The reply body is not the expected type.
    #[error("bad reply: {0}")]
    Decode(#[from] DecodeError),
    /// The server that had the request went away before replying. Over
    /// inproc this is known at once; over ipc/tcp, when the client's only
    /// link breaks while the request is out (with several links it shows
    /// as `Timeout`).
    #[error("the server went away before replying")]
    PeerGone,
}

/// Why a socket could not be opened from a [`SocketBuilder`](crate::SocketBuilder).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// An endpoint string is malformed.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Neither `bind` nor `connect` was given.
    #[error("no endpoint given: call bind() or connect() on the builder")]
    NoEndpoint,
    /// A socket's endpoints must be all inproc or all ipc/tcp.
    #[error("cannot mix inproc with ipc/tcp on one socket ({0})")]
    MixedTransports(Endpoint),
    /// Binding failed.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}
