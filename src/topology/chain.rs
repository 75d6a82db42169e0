//! Chain and proxy building blocks: handlers that pass a request on.
//!
//! A chain A → B → C is services whose handlers call the next one. Each
//! hop inherits what is left of the caller's deadline (so the budget
//! shrinks along the chain) and carries the hop count, visible as the
//! `hop` field of the debug `serve` span (`zfabric.hop` of a traced one)
//! and through [`current_hops`](crate::resilience::deadline::current_hops).
//! A traced call continues its trace along the chain: each hop's call is a
//! child of the server span of the hop before ([`trace`](crate::trace)). A call
//! more than [`MAX_HOPS`](crate::node::MAX_HOPS) deep is refused, so a
//! forwarding loop ends at once.
//!
//! [`forward`] builds the handler of a dumb proxy hop: the body is passed
//! on unchanged, without decoding, and the reply comes back the same way;
//! [`transform`] builds a smart one that rewrites the request and the
//! reply.
//!
//! # Not guaranteed
//! A hop adds one request/reply round trip; errors of the next hop come
//! back as the remote error `upstream` naming the hop and the error.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::node::{CallOptions, NodeHandle};

/// The future a chain handler returns.
pub type HopFuture<T> = std::pin::Pin<Box<dyn Future<Output = Result<T, RemoteError>> + Send>>;
use crate::{RemoteError, Request};

/// The remote error a hop returns when the next one failed.
pub fn upstream_error(next: &str, e: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(crate::wire::RemoteCode::Upstream, format!("{next}: {e}"))
}

/// A raw handler forwarding every request to `next` (any member; anycast)
/// through the node behind `node`, with at most `timeout` (capped by the
/// caller's deadline). Use with [`NodeBuilder::serve_raw`](crate::node::NodeBuilder::serve_raw).
pub fn forward(
    node: NodeHandle,
    next: impl Into<String>,
    timeout: Duration,
) -> impl Fn(Request<Bytes>) -> HopFuture<Bytes> + Send + Sync + 'static {
    let next: String = next.into();
    move |req: Request<Bytes>| {
        let node = node.clone();
        let next = next.clone();
        Box::pin(async move {
            let node = node.node().ok_or_else(|| {
                RemoteError::new(
                    crate::wire::RemoteCode::Stopping,
                    "the node is shutting down",
                )
            })?;
            node.request_raw(&next, req.body, CallOptions::default().timeout(timeout))
                .await
                .map_err(|e| upstream_error(&next, e))
        })
    }
}

/// A typed handler calling `next` with `before(request)` and answering
/// with `after(reply)`: a smart proxy hop (or a chain step that adapts
/// between two services' types).
pub fn transform<A, B, C, D, F, G>(
    node: NodeHandle,
    next: impl Into<String>,
    timeout: Duration,
    before: F,
    after: G,
) -> impl Fn(Request<A>) -> HopFuture<D> + Send + Sync + 'static
where
    A: Send + 'static,
    B: Serialize + Send + Sync + 'static,
    C: DeserializeOwned + Send + 'static,
    D: Send + 'static,
    F: Fn(A) -> Result<B, RemoteError> + Send + Sync + Clone + 'static,
    G: Fn(C) -> Result<D, RemoteError> + Send + Sync + Clone + 'static,
{
    let next: String = next.into();
    move |req: Request<A>| {
        let (node, next, before, after) =
            (node.clone(), next.clone(), before.clone(), after.clone());
        Box::pin(async move {
            let node = node.node().ok_or_else(|| {
                RemoteError::new(
                    crate::wire::RemoteCode::Stopping,
                    "the node is shutting down",
                )
            })?;
            let out = before(req.body)?;
            let reply: C = node
                .request(&next, &out, timeout)
                .await
                .map_err(|e| upstream_error(&next, e))?;
            after(reply)
        })
    }
}
