//! The node facade: what an application holds.
//!
//! Guarantees: every [`Node`] method is a thin composition of the parts
//! (gossip view, links, local delivery, routing, the call path); a view
//! from a [`NodeHandle`] can call, publish and read membership but never
//! stops the node. Does not: hold state of its own beyond the parts and
//! the running tasks, or know how node messages look on the wire.

use std::future::Future;

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;

use super::call;
use super::error::CallError;
use super::local::{NodeInbox, NodeSubscription};
use super::membership::{MembershipEvent, PeerId, PeerInfo, PeerState};
use super::options::{CallOptions, MulticastReport};
use super::routing::BreakerEvent;
use super::service::typed_handler;
use super::shared::Shared;
use crate::endpoint::Endpoint;
use crate::messaging::reqrep::{Request, ServerHandle};
use crate::trace;
use crate::transport::guard::AbortOnDrop;
use crate::wire::{self, RemoteError};
use crate::RequestError;

/// A running node. Dropping it stops it.
pub struct Node {
    pub(super) shared: Arc<Shared>,
    /// The endpoints bound (ports resolved); empty for a handle's view.
    pub(super) bound: Vec<Endpoint>,
    /// The running tasks; `None` for a view made by a [`NodeHandle`].
    pub(super) running: Option<Running>,
}

/// What keeps a node running; dropping it stops the node.
pub(super) struct Running {
    pub(super) _beacon: Vec<AbortOnDrop>,
    pub(super) servers: Vec<ServerHandle>,
    pub(super) _heartbeats: AbortOnDrop,
}

/// A weak reference to a node, for handlers that call onwards through
/// the node that runs them (chains, proxies). Get it from
/// [`NodeBuilder::handle`](super::NodeBuilder::handle) before `start`; it does not keep the node alive.
#[derive(Clone, Default)]
pub struct NodeHandle(pub(super) Arc<OnceLock<Weak<Shared>>>);

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("started", &self.0.get().is_some())
            .finish()
    }
}

impl NodeHandle {
    /// The node, if it has started and is still running. The `Node`
    /// returned is a view: it can call, publish and read membership;
    /// dropping it does not stop the node, and `shutdown` on it does
    /// nothing.
    pub fn node(&self) -> Option<Node> {
        let shared = self.0.get()?.upgrade()?;
        Some(Node {
            shared,
            bound: Vec::new(),
            running: None,
        })
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let me = self.shared.view.me();
        f.debug_struct("Node")
            .field("id", &me.id)
            .field("name", &me.name)
            .field("endpoints", &me.endpoints)
            .finish()
    }
}

/// Encodes a request or message body.
fn encode<T: Serialize>(value: &T) -> Result<Bytes, CallError> {
    Ok(wire::encode_body(value).map_err(|e| RequestError::Send(e.into()))?)
}

/// Decodes a reply body.
fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, CallError> {
    Ok(wire::decode_body(body).map_err(RequestError::Decode)?)
}

impl Node {
    /// Leaves the fabric gracefully, all within `timeout`: tells every
    /// member, so that they drop this node from every route at once instead
    /// of after the failure-detection delay; then stops taking requests and
    /// lets the ones in progress finish; then stops. On a view from a
    /// [`NodeHandle`] it does nothing.
    pub async fn shutdown(mut self, timeout: Duration) {
        let Some(running) = self.running.take() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let s = &self.shared;
        let (me, incarnation) = (s.view.me().id, s.view.incarnation());
        let mut acks = Vec::new();
        for p in s.view.members() {
            if let Some(link) = s.links.to_member(p.id, || Some(p.endpoints.clone())).await {
                acks.push(tokio::spawn(async move {
                    link.leave(me, incarnation, timeout).await
                }));
            }
        }
        for a in acks {
            let _ = a.await;
        }
        // Peers no longer route here; let the requests already in progress
        // finish within the time left.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let drained =
            futures_util::future::join_all(running.servers.into_iter().map(|s| s.drain(left)))
                .await;
        if drained.contains(&false) {
            tracing::warn!("shutdown: requests still running at the deadline were abandoned");
        }
    }
    /// The value of type `T` attached with `NodeBuilder::extension`.
    pub(crate) fn extension<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.shared.extensions.get::<T>()
    }

    /// A view of this node for tasks that outlive the borrow (as
    /// [`NodeHandle::node`] gives): it calls, publishes and reads
    /// membership; dropping it does not stop the node.
    pub(crate) fn view(&self) -> Node {
        Node {
            shared: self.shared.clone(),
            bound: Vec::new(),
            running: None,
        }
    }

    /// This node's id.
    pub fn id(&self) -> PeerId {
        self.shared.view.me().id
    }

    /// The endpoints this node tells its peers to reach it by (its
    /// advertised endpoints; ports resolved). They are the bound ones
    /// unless it was given advertise endpoints or binds a wildcard host
    /// (see [`NodeBuilder::advertise`](super::NodeBuilder::advertise)).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.shared.view.me().endpoints
    }

    /// The endpoints this node listens on, as bound (ports resolved).
    pub fn bound_endpoints(&self) -> &[Endpoint] {
        &self.bound
    }

    /// The current members (alive or suspect), by id.
    pub fn members(&self) -> Vec<PeerInfo> {
        self.shared.view.members()
    }

    /// A peer's state, if known.
    pub fn peer_state(&self, id: PeerId) -> Option<PeerState> {
        self.shared.view.state(id)
    }

    /// Membership changes from now on.
    pub fn events(&self) -> broadcast::Receiver<MembershipEvent> {
        self.shared.view.subscribe()
    }

    /// Calls `service` on one member serving it (anycast), round-robin
    /// over alive members (suspect ones only if none is alive).
    pub async fn request<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        service: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Rep, CallError> {
        self.request_with(service, req, CallOptions::default().timeout(timeout))
            .await
    }

    /// Calls `service` on one member serving it, as `opts` say.
    ///
    /// Members whose circuit is open are skipped; if every member's is
    /// open the call fails at once with [`CallError::CircuitOpen`] (with
    /// [`CallOptions::wait_for_member`] it waits within its deadline for
    /// a breaker's trial or a member that joins instead). A
    /// request marked idempotent whose member fails (it went away, could
    /// not be reached, refused the call as busy) is retried on another
    /// member after a jittered backoff, up to `opts.retry.max_attempts`,
    /// within the same deadline and while the service's retry budget
    /// allows; every attempt carries the same call id, so a service with
    /// an idempotent-consumer window processes it once.
    pub async fn request_with<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        service: &str,
        req: &Req,
        opts: CallOptions,
    ) -> Result<Rep, CallError> {
        let reply = self.request_raw(service, encode(req)?, opts).await?;
        decode(&reply)
    }

    /// [`Node::request_with`] on an already encoded MessagePack body;
    /// returns the reply's MessagePack body (for proxies and gateways that
    /// forward without knowing the types).
    pub async fn request_raw(
        &self,
        service: &str,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, CallError> {
        call::anycast(&self.shared, service, body, opts).await
    }

    /// Calls `service` on the named peer (unicast), through that peer's
    /// breaker for the service: while it is open the call fails at once
    /// with [`CallError::CircuitOpen`].
    pub async fn request_peer<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        peer: PeerId,
        service: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Rep, CallError> {
        let opts = CallOptions::default().timeout(timeout);
        let reply = self
            .request_peer_raw(peer, service, encode(req)?, opts)
            .await?;
        decode(&reply)
    }

    /// [`Node::request_peer`] on an already encoded MessagePack body, with
    /// options (timeout, priority, call id; one attempt: `idempotent`,
    /// `retry` and `balance` do not apply to a named peer).
    pub async fn request_peer_raw(
        &self,
        peer: PeerId,
        service: &str,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, CallError> {
        call::to_peer(&self.shared, peer, service, body, opts).await
    }

    /// Starts taking unicast messages: they queue here (up to `capacity`;
    /// beyond that the sender gets `inbox_full`). Calling it again replaces
    /// the previous inbox.
    pub fn inbox(&self, capacity: usize) -> NodeInbox {
        self.shared.local.inbox(capacity)
    }

    /// Sends `msg` to one named peer's inbox and waits for it to be
    /// accepted. An unknown or gone peer is [`CallError::UnknownPeer`] at
    /// once; a peer with no inbox or a full one answers with a typed
    /// remote error (`no_inbox`, `inbox_full`).
    pub async fn unicast<T: Serialize>(
        &self,
        peer: PeerId,
        msg: &T,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let body = encode(msg)?;
        let s = &self.shared;
        let op = trace::outgoing(trace::Op::Send, &format_args!("{:016x}", peer.0), true);
        let link = s
            .links
            .to_member(peer, || s.view.endpoints(peer))
            .await
            .ok_or(CallError::UnknownPeer(peer))?;
        let r = link
            .unicast(body, timeout, op.fields())
            .await
            .map_err(|f| f.at(peer));
        if let Err(e) = &r {
            op.failed(e.outcome());
        }
        r
    }

    /// Subscribes to topics starting with `prefix`, published by any node
    /// of the fabric (peers learn of it with the next heartbeat). Up to
    /// `capacity` messages wait for `recv`; beyond that new ones are
    /// dropped and counted (`subscriber_queue_full`).
    pub fn subscribe(&self, prefix: impl Into<String>, capacity: usize) -> NodeSubscription {
        self.shared
            .local
            .subscribe(crate::topic::TopicFilter::prefix(prefix), capacity)
    }

    /// Subscribes to the topics `filter` matches: a prefix, or a pattern
    /// with whole-token wildcards (`orders.*.paid`: `*` one token;
    /// `orders.>`: one or more to the end), as [`crate::topic`] defines
    /// them. Peers send this node every topic of the pattern's literal
    /// prefix (`orders.`); it keeps the ones that match. Queueing as
    /// [`Node::subscribe`]. Fails on a malformed pattern.
    pub fn subscribe_matching(
        &self,
        filter: &str,
        capacity: usize,
    ) -> Result<NodeSubscription, crate::topic::TopicFilterError> {
        let f = crate::topic::TopicFilter::parse(filter)?;
        Ok(self.shared.local.subscribe(f, capacity))
    }

    /// Publishes `msg` on `topic` to every member subscribed to a prefix
    /// of it, concurrently; returns how many subscriptions took it. At
    /// most once: a member that fails to acknowledge within `timeout` is
    /// skipped (counted as `link_down`). Fails only if `msg` cannot be
    /// encoded.
    pub async fn publish<T: Serialize>(
        &self,
        topic: &str,
        msg: &T,
        timeout: Duration,
    ) -> Result<u32, CallError> {
        let body = encode(msg)?;
        let targets: Vec<PeerInfo> = self
            .members()
            .into_iter()
            .filter(|m| m.topics.iter().any(|p| topic.starts_with(p.as_str())))
            .collect();
        let s = &self.shared;
        let op = trace::outgoing(trace::Op::Publish, &topic, true);
        let trace = &op.fields();
        // One name and one body, shared by every send (no copies).
        let (name, body): (Arc<str>, _) = (Arc::from(topic), &body);
        let name = &name;
        let sends = targets.into_iter().map(|m| async move {
            let link = s.links.to_member(m.id, || s.view.endpoints(m.id)).await?;
            match link
                .publish(name.clone(), body.clone(), timeout, trace.clone())
                .await
            {
                Ok(n) => Some(n),
                Err(_) => {
                    crate::telemetry::dropped(crate::telemetry::DropReason::LinkDown, 1);
                    None
                }
            }
        });
        Ok(futures_util::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .sum())
    }

    /// Joins `group` at run time (peers learn it with the next heartbeat).
    pub fn join<T, H, Fut>(&self, group: impl Into<String>, handler: H)
    where
        T: DeserializeOwned + Send + 'static,
        H: Fn(Request<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.shared.local.join(group.into(), typed_handler(handler));
    }

    /// Leaves `group` (peers learn it with the next heartbeat; until then a
    /// message sent to the group is refused with `not_in_group`).
    pub fn leave_group(&self, group: &str) {
        self.shared.local.leave(group);
    }

    /// Sends `msg` to every current member of `group`, concurrently, and
    /// reports which members acknowledged it and which did not (with why).
    /// Fails only if `msg` cannot be encoded.
    pub async fn multicast<T: Serialize>(
        &self,
        group: &str,
        msg: &T,
        timeout: Duration,
    ) -> Result<MulticastReport, CallError> {
        let s = &self.shared;
        let members = s.view.in_group(group);
        let body = encode(msg)?;
        let op = trace::outgoing(trace::Op::Send, &group, true);
        let trace = &op.fields();
        // One name and one body, shared by every send (no copies).
        let (name, body): (Arc<str>, _) = (Arc::from(group), &body);
        let name = &name;
        let sends = members.into_iter().map(|id| async move {
            let Some(link) = s.links.to_member(id, || s.view.endpoints(id)).await else {
                return (id, Err(CallError::UnknownPeer(id)));
            };
            // A member whose connection broke is reported at once.
            if link.is_down() {
                return (id, Err(CallError::Request(RequestError::PeerGone)));
            }
            (
                id,
                link.deliver(name.clone(), body.clone(), timeout, trace.clone())
                    .await
                    .map_err(|f| f.at(id)),
            )
        });
        let mut report = MulticastReport::default();
        for (id, r) in futures_util::future::join_all(sends).await {
            match r {
                Ok(()) => report.delivered.push(id),
                Err(e) => report.failed.push((id, e)),
            }
        }
        Ok(report)
    }

    /// The last breaker transitions of this node's calls (up to 256),
    /// oldest first.
    pub fn breaker_log(&self) -> Vec<BreakerEvent> {
        self.shared.routing.log()
    }

    /// The members serving `service` as this node sees them: alive ones
    /// first, then suspect ones.
    pub fn serving(&self, service: &str) -> Vec<(PeerId, PeerState)> {
        self.shared.view.serving(service)
    }
}
