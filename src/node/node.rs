//! A node: one process's presence on the fabric.
//!
//! A node is composed of parts that each do one job:
//! - a [`Server`] on the node's endpoints that answers hellos and service
//!   calls from other nodes;
//! - one [`Client`] per known peer (the peer links), made and dropped as
//!   peers come and go;
//! - the [`Membership`] registry, fed by hellos;
//! - a heartbeat task that says hello to every peer and to the seeds each
//!   interval, applies the passage of time to the registry and publishes
//!   membership events.
//!
//! # Discovery
//! A node needs one seed endpoint to find the whole fabric. Every hello
//! carries the peers the sender knows (gossip); a node says hello to the
//! ones it does not know yet, and they become members once they answer.
//! Hearsay alone never makes a peer a member.
//!
//! # Delivery guarantees
//! | operation | guarantee | when the peer dies |
//! |---|---|---|
//! | unicast ([`Node::unicast`], [`Node::request_peer`]) | exactly one answer (the reply, or the acknowledgement that the peer's inbox took the message) or a typed error before the deadline | `PeerGone` as soon as the link to it breaks while the call is out; after it is declared gone, `UnknownPeer` at once |
//! | anycast ([`Node::request`], [`Node::request_with`]) | one member serving the service handles it: alive members first, round-robin or least-outstanding, skipping members whose circuit is open; an unknown service is `NoSuchService` at once, all circuits open is `CircuitOpen` at once | `PeerGone`; if marked idempotent, retried on another member (jittered backoff, `RetryPolicy::max_attempts`, the retry budget, the same deadline), so it is processed at least once and possibly more than once unless the service deduplicates ([`ServeOptions::dedup`]) |
//! | multicast ([`Node::multicast`]) | every current member of the group is sent the message concurrently; the report names who acknowledged and who did not, with why | listed in `failed` (timeout or `PeerGone`), never silently skipped |
//! | fabric publish ([`Node::publish`]) | at most once to every subscription whose prefix matches, as known from the last heartbeat; returns how many took it | not counted; the loss is counted as `link_down` |
//!
//! A node that serves a service itself is one of its members: anycast may
//! choose it, and the call then runs in the caller's task without a socket
//! (same bulkhead, dedup, deadline and hop rules).
//!
//! A service may run in a bulkhead ([`NodeBuilder::serve_with`]): when
//! it is full the call is refused at once and the caller gets
//! [`CallError::Rejected`] (an idempotent call tries another member). Calls
//! made from inside a handler inherit what is left of its deadline.
//!
//! A peer that stops answering is suspect after `suspect_after` and out of
//! every route after `gone_after` (checked twice per heartbeat); one that
//! leaves gracefully is out at once. Views are eventually consistent (see
//! [`Membership`]). A restarted process is a new member (new id).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::broadcast;

use super::membership::{
    Membership, MembershipConfig, MembershipEvent, PeerId, PeerInfo, PeerState,
};
use super::service::{ServeOptions, Service};
use crate::endpoint::Endpoint;
use crate::messaging::reqrep::{Client, Request, Server, ServerHandle};
use crate::resilience::{
    BreakerConfig, BreakerState, BudgetConfig, CircuitBreaker, Outcome, RetryBudget, RetryPolicy,
    Transition,
};
use crate::transport::guard::AbortOnDrop;
use crate::wire::{self, RemoteError};
use crate::{LinkState, OpenError, RequestError, SocketBuilder};

/// A node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Failure-detection timings.
    pub membership: MembershipConfig,
    /// The circuit breaker kept per (member, service) this node calls;
    /// `None` turns breakers off. Default: [`BreakerConfig::default`].
    pub breaker: Option<BreakerConfig>,
    /// The retry budget kept per service this node calls. Default:
    /// [`BudgetConfig::default`].
    pub retry_budget: BudgetConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            membership: MembershipConfig::default(),
            breaker: Some(BreakerConfig::default()),
            retry_budget: BudgetConfig::default(),
        }
    }
}

/// What nodes say to each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum NodeMsg {
    Hello(Hello),
    Call {
        service: String,
        body: ByteBuf,
        /// The logical call id, the same on every attempt (natural
        /// idempotency key); 0 if none.
        call: u64,
        /// Caller-given priority (bulkhead partitioning).
        priority: u8,
        /// Service hops that led to this call (1 = called from outside
        /// any handler).
        hops: u8,
    },
    Leave {
        id: u64,
        incarnation: u64,
    },
    Deliver {
        group: String,
        body: ByteBuf,
    },
    Publish {
        topic: String,
        body: ByteBuf,
    },
    Unicast {
        body: ByteBuf,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum NodeReply {
    Hello(Hello),
    Result(ByteBuf),
    Ack,
    /// How many local subscriptions took a published message.
    Delivered(u32),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    from: WirePeer,
    incarnation: u64,
    known: Vec<WirePeer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WirePeer {
    id: u64,
    name: String,
    endpoints: Vec<String>,
    services: Vec<String>,
    groups: Vec<String>,
    #[serde(default)]
    topics: Vec<String>,
}

impl WirePeer {
    fn from_info(i: &PeerInfo) -> Self {
        WirePeer {
            id: i.id.0,
            name: i.name.clone(),
            endpoints: i.endpoints.iter().map(ToString::to_string).collect(),
            services: i.services.clone(),
            groups: i.groups.clone(),
            topics: i.topics.clone(),
        }
    }

    /// `None` when an endpoint does not parse (the hello is ignored).
    fn to_info(&self) -> Option<PeerInfo> {
        Some(PeerInfo {
            id: PeerId(self.id),
            name: self.name.clone(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| e.parse().ok())
                .collect::<Option<_>>()?,
            services: self.services.clone(),
            groups: self.groups.clone(),
            topics: self.topics.clone(),
            metadata: Default::default(),
        })
    }
}

/// A message published on the fabric, as a subscriber receives it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The topic it was published on.
    pub topic: String,
    /// The MessagePack body.
    pub body: Bytes,
    /// The publisher's header (source, id, trace context).
    pub header: crate::wire::Header,
}

impl Published {
    /// Decodes the body as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, crate::wire::DecodeError> {
        wire::decode_body(&self.body)
    }
}

/// A message sent to this node alone ([`Node::unicast`]).
#[derive(Debug, Clone)]
pub struct Direct {
    /// The sending node.
    pub from: PeerId,
    /// The MessagePack body.
    pub body: Bytes,
    /// The sender's header.
    pub header: crate::wire::Header,
}

impl Direct {
    /// Decodes the body as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, crate::wire::DecodeError> {
        wire::decode_body(&self.body)
    }
}

/// Where unicast messages to this node arrive ([`Node::inbox`]).
#[derive(Debug)]
pub struct NodeInbox {
    rx: tokio::sync::mpsc::Receiver<Direct>,
}

impl NodeInbox {
    /// The next message; `None` once the node is gone.
    pub async fn recv(&mut self) -> Option<Direct> {
        self.rx.recv().await
    }
}

/// A subscription to topics published anywhere on the fabric.
/// Dropping it unsubscribes (peers learn it with the next heartbeat).
#[derive(Debug)]
pub struct NodeSubscription {
    rx: tokio::sync::mpsc::Receiver<Published>,
}

impl NodeSubscription {
    /// The next message; `None` once the node is gone.
    pub async fn recv(&mut self) -> Option<Published> {
        self.rx.recv().await
    }
}

pub(super) type BoxFut = Pin<Box<dyn Future<Output = Result<Bytes, RemoteError>> + Send>>;
pub(super) type Handler = Arc<dyn Fn(Request<ByteBuf>) -> BoxFut + Send + Sync>;
type Link = Arc<Client<NodeMsg, NodeReply>>;

/// Why a call to a service or peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No member of the fabric serves this service.
    #[error("no member serves {0:?}")]
    NoSuchService(String),
    /// The peer is not a member (never seen, or gone).
    #[error("peer {0:?} is not a member")]
    UnknownPeer(PeerId),
    /// The request failed (timeout, remote error, ...).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The reply was not a service result.
    #[error("unexpected reply from {0:?}")]
    BadReply(PeerId),
    /// The member refused the call at once because the service's bulkhead
    /// was full (its `BulkheadConfig` limits); nothing was processed.
    #[error("{peer:?} refused the call: {reason}")]
    Rejected {
        /// The member that refused.
        peer: PeerId,
        /// Its explanation (which bulkhead, its limits).
        reason: String,
    },
    /// Every member serving the service has its circuit open
    /// (`NodeConfig::breaker`); the call was not sent.
    #[error("circuit open for {service:?}; retry in {retry_in:?}")]
    CircuitOpen {
        /// The service.
        service: String,
        /// When the first breaker lets a trial call through.
        retry_in: Duration,
    },
}

impl CallError {
    /// Whether the member failed (went away, unreachable), as opposed to
    /// answering: such a call may be retried elsewhere if idempotent.
    fn is_member_failure(&self) -> bool {
        matches!(
            self,
            CallError::UnknownPeer(_)
                | CallError::Rejected { .. }
                | CallError::CircuitOpen { .. }
                | CallError::Request(RequestError::PeerGone | RequestError::Send(_))
        )
    }
}

/// How a member is chosen among those serving a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// In turn (the default).
    #[default]
    RoundRobin,
    /// The one with the fewest requests from this node still waiting for a
    /// reply; ties in turn.
    LeastOutstanding,
}

/// Options of an anycast request.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    /// Deadline for the whole call, retries included. Default 5 s. Inside
    /// a handler it is capped by what is left of the handler's own
    /// deadline.
    pub timeout: Duration,
    /// Whether the request may be processed twice without harm. Only such
    /// requests are retried.
    pub idempotent: bool,
    /// How an idempotent request is retried (attempts, backoff); within the
    /// deadline and the service's retry budget (`NodeConfig::retry_budget`).
    pub retry: RetryPolicy,
    /// How the member is chosen.
    pub balance: Balance,
    /// Priority carried to the member (0 = lowest), for services
    /// partitioned by priority.
    pub priority: u8,
    /// The logical message id (natural idempotency key). `None`: a fresh
    /// one per call. Set it to redeliver the same message: a service with
    /// [`ServeOptions::dedup`] processes it once and answers the
    /// redelivery from its window.
    pub call_id: Option<u64>,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            timeout: Duration::from_secs(5),
            idempotent: false,
            retry: RetryPolicy::default(),
            balance: Balance::RoundRobin,
            priority: 0,
            call_id: None,
        }
    }
}

impl CallOptions {
    /// Sets the deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Marks the request idempotent: a member failure (gone, unreachable,
    /// busy, circuit open) is retried on another member with jittered
    /// backoff, up to `retry.max_attempts`, within the deadline and the
    /// retry budget.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Sets the retry policy (and marks the request idempotent).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self.idempotent = true;
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the logical message id (non-zero), to redeliver a message.
    pub fn call_id(mut self, id: u64) -> Self {
        self.call_id = Some(id.max(1));
        self
    }

    /// Chooses the least-loaded member instead of taking turns.
    pub fn least_outstanding(mut self) -> Self {
        self.balance = Balance::LeastOutstanding;
        self
    }
}

/// The outcome of a multicast: who acknowledged, who did not.
#[derive(Debug, Default)]
pub struct MulticastReport {
    /// Members that received and accepted the message.
    pub delivered: Vec<PeerId>,
    /// Members that did not, with the reason (timeout, refused, gone).
    pub failed: Vec<(PeerId, CallError)>,
}

/// Builds a [`Node`].
pub struct NodeBuilder {
    name: String,
    config: NodeConfig,
    binds: Vec<String>,
    seeds: Vec<String>,
    services: HashMap<String, Service>,
    groups: HashMap<String, Handler>,
    beacon: Option<super::beacon::BeaconConfig>,
    handle: NodeHandle,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("name", &self.name)
            .field("binds", &self.binds)
            .field("seeds", &self.seeds)
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl NodeBuilder {
    /// A handle to the node this builder will start, for handlers that
    /// call onwards through it.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Uses `config`.
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds an endpoint the node listens on (port 0 allowed).
    pub fn bind(mut self, endpoint: impl Into<String>) -> Self {
        self.binds.push(endpoint.into());
        self
    }

    /// Adds a seed: an endpoint of some node of the fabric. A tcp seed may
    /// name a host: it is resolved every ten heartbeats and every address
    /// it has becomes a seed (how a Kubernetes headless Service lists its
    /// pods).
    pub fn seed(mut self, endpoint: impl Into<String>) -> Self {
        self.seeds.push(endpoint.into());
        self
    }

    /// Also discovers nodes on the LAN by UDP beacon.
    pub fn beacon(mut self, beacon: super::beacon::BeaconConfig) -> Self {
        self.beacon = Some(beacon);
        self
    }

    /// Joins a multicast group; `handler` receives what is sent to it.
    pub fn group<T, H, Fut>(mut self, group: impl Into<String>, handler: H) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        H: Fn(Request<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.groups.insert(group.into(), typed_handler(handler));
        self
    }

    /// Serves `service` with a typed handler. Requests run concurrently,
    /// directly on the node's runtime (see [`NodeBuilder::serve_with`] for
    /// bulkheads and deduplication).
    pub fn serve<Req, Rep, H, Fut>(self, service: impl Into<String>, handler: H) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Rep: Serialize + Send + 'static,
        H: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, RemoteError>> + Send + 'static,
    {
        self.serve_with(service, ServeOptions::default(), handler)
    }

    /// Serves `service` as `opts` say: in a bulkhead (or one of several,
    /// partitioned by caller or priority), with an idempotent-consumer
    /// window. A full bulkhead refuses at once; the caller gets
    /// [`CallError::Rejected`].
    pub fn serve_with<Req, Rep, H, Fut>(
        mut self,
        service: impl Into<String>,
        opts: ServeOptions,
        handler: H,
    ) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Rep: Serialize + Send + 'static,
        H: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, RemoteError>> + Send + 'static,
    {
        let name = service.into();
        let svc = Service::new(&name, typed_handler(handler), opts);
        self.services.insert(name, svc);
        self
    }

    /// Serves `service` with a handler on raw MessagePack bodies (for
    /// proxies and forwarders that do not know the types).
    pub fn serve_raw<H, Fut>(
        mut self,
        service: impl Into<String>,
        opts: ServeOptions,
        handler: H,
    ) -> Self
    where
        H: Fn(Request<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let raw: Handler = Arc::new(move |req: Request<ByteBuf>| {
            let handler = handler.clone();
            Box::pin(async move {
                handler(Request {
                    body: Bytes::from(req.body.into_vec()),
                    header: req.header,
                })
                .await
            }) as BoxFut
        });
        let name = service.into();
        let svc = Service::new(&name, raw, opts);
        self.services.insert(name, svc);
        self
    }

    /// Starts the node: binds, starts heartbeats, says hello to the seeds.
    pub async fn start(self) -> Result<Node, OpenError> {
        // One server per transport family: inproc, and ipc/tcp together.
        let (inproc, network): (Vec<&String>, Vec<&String>) =
            self.binds.iter().partition(|b| b.starts_with("inproc://"));
        let mut servers: Vec<Server<NodeMsg, NodeReply>> = Vec::new();
        for group in [inproc, network] {
            if group.is_empty() {
                continue;
            }
            let mut sb = SocketBuilder::new();
            for b in group {
                sb = sb.bind(b.clone());
            }
            servers.push(sb.server().await?);
        }
        if servers.is_empty() {
            return Err(OpenError::NoEndpoint);
        }
        let endpoints: Vec<Endpoint> = servers
            .iter()
            .flat_map(|s| s.endpoints().to_vec())
            .collect();
        let id = PeerId(wire::random_u64());
        let info = PeerInfo {
            id,
            name: self.name,
            endpoints,
            services: self.services.keys().cloned().collect(),
            groups: Vec::new(),
            topics: Vec::new(),
            metadata: Default::default(),
        };
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            info,
            inbox: Mutex::new(None),
            subscriptions: Mutex::new(Vec::new()),
            groups: Mutex::new(self.groups),
            incarnation: wire::random_u64() >> 1,
            membership: Mutex::new(Membership::new(id, self.config.membership)),
            links: Mutex::new(HashMap::new()),
            services: self.services,
            breakers: dashmap::DashMap::new(),
            budgets: dashmap::DashMap::new(),
            breaker_log: Mutex::new(std::collections::VecDeque::new()),
            events,
            next: AtomicUsize::new(0),
            config: self.config,
        });
        let servers: Vec<ServerHandle> = servers
            .into_iter()
            .map(|server| {
                let handler_inner = inner.clone();
                server.spawn(move |req: Request<NodeMsg>| {
                    let inner = handler_inner.clone();
                    async move { inner.handle(req).await }
                })
            })
            .collect();
        // Seeds from the environment come on top of the configured ones
        // (12-factor: ZFABRIC_SEEDS="tcp://a:7000,tcp://b:7000").
        let mut seed_list = self.seeds.clone();
        if let Ok(env) = std::env::var("ZFABRIC_SEEDS") {
            seed_list.extend(
                env.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        // Malformed seeds are refused here; names are resolved later.
        let seeds = seed_list
            .iter()
            .map(|s| s.parse::<Endpoint>())
            .collect::<Result<Vec<_>, _>>()?;
        let hb = tokio::spawn(heartbeats(inner.clone(), seeds));
        // A beacon advertises a network endpoint (inproc means nothing on a LAN).
        let beacon = match (
            self.beacon,
            inner.info.endpoints.iter().find(|e| !e.is_inproc()),
        ) {
            (Some(cfg), Some(ep)) => Some(AbortOnDrop(tokio::spawn(super::beacon::run(
                inner.clone(),
                cfg,
                id,
                ep.clone(),
            )))),
            _ => None,
        };
        let _ = self.handle.0.set(Arc::downgrade(&inner));
        Ok(Node {
            inner,
            parts: Some(Parts {
                _beacon: beacon,
                servers,
                _heartbeats: AbortOnDrop(hb),
            }),
        })
    }
}

/// Wraps a typed handler as one on raw MessagePack bodies.
fn typed_handler<Req, Rep, H, Fut>(handler: H) -> Handler
where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
    H: Fn(Request<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Rep, RemoteError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |req: Request<ByteBuf>| {
        let handler = handler.clone();
        Box::pin(async move {
            let body: Req = wire::decode_body(&req.body).map_err(|e| {
                RemoteError::new(crate::wire::RemoteCode::BadRequest, e.to_string())
            })?;
            let rep = handler(Request {
                body,
                header: req.header,
            })
            .await?;
            wire::encode_body(&rep)
                .map_err(|e| RemoteError::new(crate::wire::RemoteCode::BadReply, e.to_string()))
        }) as BoxFut
    })
}

pub(super) struct Inner {
    info: PeerInfo,
    /// Where unicast messages go, once the application asks for them.
    inbox: Mutex<Option<tokio::sync::mpsc::Sender<Direct>>>,
    /// Local subscriptions: prefix and where matching messages go.
    subscriptions: Mutex<Vec<(String, tokio::sync::mpsc::Sender<Published>)>>,
    /// Groups joined, with their handlers (changes at run time; hellos
    /// carry the current list).
    groups: Mutex<HashMap<String, Handler>>,
    incarnation: u64,
    membership: Mutex<Membership>,
    links: Mutex<HashMap<PeerId, Link>>,
    services: HashMap<String, Service>,
    /// Breakers of the destinations this node calls: (member, service).
    breakers: dashmap::DashMap<(PeerId, String), CircuitBreaker>,
    /// Retry budgets of the services this node calls.
    budgets: dashmap::DashMap<String, RetryBudget>,
    /// The last breaker transitions (bounded).
    breaker_log: Mutex<std::collections::VecDeque<BreakerEvent>>,
    events: broadcast::Sender<MembershipEvent>,
    next: AtomicUsize,
    config: NodeConfig,
}

impl Inner {
    fn hello(&self) -> Hello {
        let known = self
            .membership
            .lock()
            .map(|m| m.members().into_iter().map(WirePeer::from_info).collect())
            .unwrap_or_default();
        let mut from = WirePeer::from_info(&self.info);
        from.groups = self
            .groups
            .lock()
            .map(|g| {
                let mut v: Vec<String> = g.keys().cloned().collect();
                v.sort();
                v
            })
            .unwrap_or_default();
        from.topics = self
            .subscriptions
            .lock()
            .map(|mut subs| {
                subs.retain(|(_, tx)| !tx.is_closed());
                let mut v: Vec<String> = subs.iter().map(|(p, _)| p.clone()).collect();
                v.sort();
                v.dedup();
                v
            })
            .unwrap_or_default();
        Hello {
            from,
            incarnation: self.incarnation,
            known,
        }
    }

    /// Records a hello: the sender is alive; peers it knows that we do not
    /// are returned, to be greeted.
    fn heard(&self, h: &Hello) -> Vec<PeerInfo> {
        let Some(info) = h.from.to_info() else {
            return Vec::new();
        };
        let Ok(mut m) = self.membership.lock() else {
            return Vec::new();
        };
        if let Some(ev) = m.observe(info, h.incarnation, now()) {
            let _ = self.events.send(ev);
        }
        h.known
            .iter()
            .filter(|p| p.id != self.info.id.0 && m.state(PeerId(p.id)).is_none())
            .filter_map(WirePeer::to_info)
            .collect()
    }

    async fn handle(&self, req: Request<NodeMsg>) -> Result<NodeReply, RemoteError> {
        match req.body {
            NodeMsg::Hello(h) => {
                // Gossip learned from a request is greeted on the next beat.
                let _ = self.heard(&h);
                Ok(NodeReply::Hello(self.hello()))
            }
            NodeMsg::Leave { id, incarnation } => {
                let ev = self
                    .membership
                    .lock()
                    .ok()
                    .and_then(|mut m| m.leave(PeerId(id), incarnation, now()));
                if let Some(ev) = ev {
                    if let Ok(mut l) = self.links.lock() {
                        l.remove(&PeerId(id));
                    }
                    let _ = self.events.send(ev);
                }
                Ok(NodeReply::Ack)
            }
            NodeMsg::Unicast { body } => {
                let tx = self.inbox.lock().ok().and_then(|i| i.clone());
                let Some(tx) = tx else {
                    return Err(RemoteError::new(
                        crate::wire::RemoteCode::NoInbox,
                        "this node takes no unicast messages",
                    ));
                };
                let msg = Direct {
                    from: PeerId(req.header.source),
                    body: Bytes::from(body.into_vec()),
                    header: req.header,
                };
                tx.try_send(msg).map_err(|_| {
                    crate::telemetry::dropped(crate::telemetry::DropReason::InboxFull, 1);
                    RemoteError::new(
                        crate::wire::RemoteCode::InboxFull,
                        "the receiving node's inbox is full",
                    )
                })?;
                Ok(NodeReply::Ack)
            }
            NodeMsg::Publish { topic, body } => {
                let msg = Published {
                    topic: topic.clone(),
                    body: Bytes::from(body.into_vec()),
                    header: req.header,
                };
                let mut delivered = 0u32;
                if let Ok(mut subs) = self.subscriptions.lock() {
                    subs.retain(|(_, tx)| !tx.is_closed());
                    for (prefix, tx) in subs.iter() {
                        if topic.starts_with(prefix.as_str()) {
                            match tx.try_send(msg.clone()) {
                                Ok(()) => delivered += 1,
                                Err(_) => crate::telemetry::dropped(
                                    crate::telemetry::DropReason::SubscriberQueueFull,
                                    1,
                                ),
                            }
                        }
                    }
                }
                Ok(NodeReply::Delivered(delivered))
            }
            NodeMsg::Deliver { group, body } => {
                let handler = self
                    .groups
                    .lock()
                    .ok()
                    .and_then(|g| g.get(&group).cloned())
                    .ok_or_else(|| {
                        RemoteError::new(crate::wire::RemoteCode::NotInGroup, group.clone())
                    })?;
                handler(Request {
                    body,
                    header: req.header,
                })
                .await?;
                Ok(NodeReply::Ack)
            }
            NodeMsg::Call {
                service,
                body,
                call,
                priority,
                hops,
            } => {
                let svc = self.services.get(&service).ok_or_else(|| {
                    RemoteError::new(crate::wire::RemoteCode::NoSuchService, service.clone())
                })?;
                if hops > MAX_HOPS {
                    crate::telemetry::dropped(crate::telemetry::DropReason::TooManyHops, 1);
                    return Err(RemoteError::new(
                        "too_many_hops",
                        format!("{hops} service hops (limit {MAX_HOPS}): a forwarding loop?"),
                    ));
                }
                let out = svc
                    .call(&service, call, priority, hops, body, req.header)
                    .await?;
                Ok(NodeReply::Result(ByteBuf::from(out.to_vec())))
            }
        }
    }

    /// Whether `id` is in the registry at all (any state).
    pub(super) fn knows(&self, id: PeerId) -> bool {
        self.membership
            .lock()
            .map(|m| m.state(id).is_some())
            .unwrap_or(false)
    }

    /// The link to a member, made on first use.
    async fn link(&self, id: PeerId) -> Option<Link> {
        if let Some(l) = self.links.lock().ok()?.get(&id) {
            return Some(l.clone());
        }
        let endpoints = self.membership.lock().ok()?.get(id)?.endpoints.clone();
        let ep = reachable(&endpoints)?.clone();
        let client = SocketBuilder::new()
            .connect(ep.to_string())
            .client()
            .await
            .ok()?
            .with_source(self.info.id.0)
            .with_timeout(self.config.membership.heartbeat_interval);
        let link: Link = Arc::new(client);
        Some(self.links.lock().ok()?.entry(id).or_insert(link).clone())
    }
}

async fn say_hello(inner: &Arc<Inner>, link: &Link) {
    if let Ok(NodeReply::Hello(h)) = link.request(&NodeMsg::Hello(inner.hello())).await {
        for p in inner.heard(&h) {
            if let Some(ep) = reachable(&p.endpoints) {
                greet(inner, ep).await;
            }
        }
    }
}

/// The endpoint to reach a peer by: its inproc one when that name is bound
/// in this process (same process, no syscalls), else its first ipc/tcp
/// one.
fn reachable(endpoints: &[Endpoint]) -> Option<&Endpoint> {
    endpoints
        .iter()
        .find(|e| match e {
            Endpoint::Inproc(name) => {
                crate::transport::inproc::is_bound(crate::transport::inproc::Family::ReqRep, name)
            }
            _ => false,
        })
        .or_else(|| endpoints.iter().find(|e| !e.is_inproc()))
}

/// Says hello, once, to a node we only know an endpoint of (learned from
/// gossip or a beacon); it becomes a member if it answers.
pub(super) async fn greet(inner: &Arc<Inner>, ep: &Endpoint) {
    if let Ok(c) = SocketBuilder::new().connect(ep.to_string()).client().await {
        let link: Link = Arc::new(
            c.with_source(inner.info.id.0)
                .with_timeout(inner.config.membership.heartbeat_interval),
        );
        let inner = inner.clone();
        tokio::spawn(async move {
            if let Ok(NodeReply::Hello(h)) = link.request(&NodeMsg::Hello(inner.hello())).await {
                inner.heard(&h);
            }
        });
    }
}

/// Seed endpoints, with host names resolved to every address they have
/// (a Kubernetes headless Service name gives one per pod).
async fn resolve_seeds(seeds: &[Endpoint]) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for ep in seeds {
        match ep {
            Endpoint::Tcp { host, port } if host.parse::<std::net::IpAddr>().is_err() => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => out.extend(addrs.map(|a| Endpoint::Tcp {
                        host: a.ip().to_string(),
                        port: a.port(),
                    })),
                    Err(e) => tracing::debug!(%ep, error = %e, "seed name did not resolve"),
                }
            }
            other => out.push(other.clone()),
        }
    }
    out.sort_by_key(|e| e.to_string());
    out.dedup();
    out
}

/// The node's clock: tokio's, so that paused time in tests moves it too.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// How many heartbeats between two resolutions of the seed names.
const RESOLVE_EVERY: u32 = 10;

/// Says hello every heartbeat interval and checks for expiry twice as
/// often (so detection lags `gone_after` by at most half an interval).
async fn heartbeats(inner: Arc<Inner>, seed_names: Vec<Endpoint>) {
    let mut seeds: HashMap<Endpoint, Link> = HashMap::new();
    let mut beat = 0u32;
    let mut tick = tokio::time::interval(inner.config.membership.heartbeat_interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut half = false;
    loop {
        tick.tick().await;
        half = !half;
        if !half {
            expire(&inner);
            continue;
        }
        if beat.is_multiple_of(RESOLVE_EVERY) {
            let current = resolve_seeds(&seed_names).await;
            seeds.retain(|ep, _| current.contains(ep));
            for ep in current {
                if seeds.contains_key(&ep) {
                    continue;
                }
                if let Ok(c) = SocketBuilder::new().connect(ep.to_string()).client().await {
                    let link: Link = Arc::new(
                        c.with_source(inner.info.id.0)
                            .with_timeout(inner.config.membership.heartbeat_interval),
                    );
                    seeds.insert(ep, link);
                }
            }
        }
        beat = beat.wrapping_add(1);
        let peers: Vec<PeerId> = inner
            .membership
            .lock()
            .map(|m| m.members().iter().map(|p| p.id).collect())
            .unwrap_or_default();
        let mut beats = Vec::new();
        for id in peers {
            if let Some(link) = inner.link(id).await {
                let inner = inner.clone();
                beats.push(tokio::spawn(async move { say_hello(&inner, &link).await }));
            }
        }
        for s in seeds.values() {
            let (inner, s) = (inner.clone(), s.clone());
            beats.push(tokio::spawn(async move { say_hello(&inner, &s).await }));
        }
        expire(&inner);
        drop(beats); // they finish on their own, within one interval
    }
}

/// Applies the passage of time to the registry and publishes the changes;
/// links to peers that are gone are closed.
fn expire(inner: &Inner) {
    let (events, alive, suspect) = inner
        .membership
        .lock()
        .map(|mut m| {
            let events = m.tick(now());
            let members = m.members();
            let alive = members
                .iter()
                .filter(|p| m.state(p.id) == Some(PeerState::Alive))
                .count();
            (events, alive, members.len() - alive)
        })
        .unwrap_or_default();
    metrics::gauge!(crate::telemetry::NODE_MEMBERS, "state" => "alive").set(alive as f64);
    metrics::gauge!(crate::telemetry::NODE_MEMBERS, "state" => "suspect").set(suspect as f64);
    for ev in events {
        if let MembershipEvent::Gone(id) = ev {
            if let Ok(mut l) = inner.links.lock() {
                l.remove(&id);
            }
        }
        let _ = inner.events.send(ev);
    }
}

/// A running node. Dropping it stops it.
pub struct Node {
    inner: Arc<Inner>,
    /// The running parts; `None` for a view made by a [`NodeHandle`].
    parts: Option<Parts>,
}

/// What keeps a node running; dropping it stops the node.
struct Parts {
    _beacon: Option<AbortOnDrop>,
    servers: Vec<ServerHandle>,
    _heartbeats: AbortOnDrop,
}

/// A weak reference to a node, for handlers that call onwards through
/// the node that runs them (chains, proxies). Get it from
/// [`NodeBuilder::handle`] before `start`; it does not keep the node alive.
#[derive(Clone, Default)]
pub struct NodeHandle(Arc<std::sync::OnceLock<std::sync::Weak<Inner>>>);

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
        let inner = self.0.get()?.upgrade()?;
        Some(Node { inner, parts: None })
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.info.id)
            .field("name", &self.inner.info.name)
            .field("endpoints", &self.inner.info.endpoints)
            .finish()
    }
}

impl Node {
    /// Starts building a node called `name`.
    pub fn builder(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder {
            name: name.into(),
            config: NodeConfig::default(),
            binds: Vec::new(),
            seeds: Vec::new(),
            services: HashMap::new(),
            groups: HashMap::new(),
            beacon: None,
            handle: NodeHandle::default(),
        }
    }

    /// Leaves the fabric gracefully, all within `timeout`: tells every
    /// member, so that they drop this node from every route at once instead
    /// of after the failure-detection delay; then stops taking requests and
    /// lets the ones in progress finish; then stops. On a view from a
    /// [`NodeHandle`] it does nothing.
    pub async fn shutdown(mut self, timeout: Duration) {
        let Some(parts) = self.parts.take() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let members: Vec<PeerId> = self.members().iter().map(|p| p.id).collect();
        let msg = NodeMsg::Leave {
            id: self.inner.info.id.0,
            incarnation: self.inner.incarnation,
        };
        let mut acks = Vec::new();
        for id in members {
            if let Some(link) = self.inner.link(id).await {
                let msg = msg.clone();
                acks.push(tokio::spawn(async move {
                    link.request_within(&msg, timeout).await
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
            futures_util::future::join_all(parts.servers.into_iter().map(|s| s.drain(left))).await;
        if drained.contains(&false) {
            tracing::warn!("shutdown: requests still running at the deadline were abandoned");
        }
    }

    /// This node's id.
    pub fn id(&self) -> PeerId {
        self.inner.info.id
    }

    /// The endpoints this node listens on (ports resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.inner.info.endpoints
    }

    /// The current members (alive or suspect), by id.
    pub fn members(&self) -> Vec<PeerInfo> {
        self.inner
            .membership
            .lock()
            .map(|m| m.members().into_iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A peer's state, if known.
    pub fn peer_state(&self, id: PeerId) -> Option<PeerState> {
        self.inner.membership.lock().ok()?.state(id)
    }

    /// Membership changes from now on.
    pub fn events(&self) -> broadcast::Receiver<MembershipEvent> {
        self.inner.events.subscribe()
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
    /// open the call fails at once with [`CallError::CircuitOpen`]. A
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
        let body = wire::encode_body(req).map_err(|e| RequestError::Send(e.into()))?;
        let reply = self.request_raw(service, body, opts).await?;
        Ok(wire::decode_body(&reply).map_err(RequestError::Decode)?)
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
        let timeout = crate::resilience::deadline::budget(opts.timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let call_id = opts.call_id.unwrap_or_else(|| wire::random_u64() | 1);
        if opts.idempotent {
            self.inner
                .budgets
                .entry(service.to_owned())
                .or_insert_with(|| RetryBudget::new(self.inner.config.retry_budget))
                .deposit(clock());
        }
        let mut tried: Vec<PeerId> = Vec::new();
        let mut attempt = 1u32;
        loop {
            let id = match self.pick(service, opts.balance, &tried) {
                Pick::Member(id) => id,
                Pick::NoMember => return Err(CallError::NoSuchService(service.to_owned())),
                Pick::AllOpen(retry_in) => {
                    return Err(CallError::CircuitOpen {
                        service: service.to_owned(),
                        retry_in,
                    })
                }
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let call = Call {
                service,
                body: body.clone(),
                call_id,
                priority: opts.priority,
            };
            match self.call_guarded(id, call, remaining).await {
                Err(e)
                    if opts.idempotent
                        && e.is_member_failure()
                        && attempt < opts.retry.max_attempts =>
                {
                    let backoff = opts.retry.backoff(attempt, wire::random_u64());
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if backoff >= left {
                        return Err(e);
                    }
                    let allowed = self
                        .inner
                        .budgets
                        .get_mut(service)
                        .map(|mut b| b.try_withdraw(clock()))
                        .unwrap_or(false);
                    if !allowed {
                        metrics::counter!(crate::resilience::retry::RETRY_BUDGET_EXHAUSTED, "service" => service.to_owned()).increment(1);
                        return Err(e);
                    }
                    metrics::counter!(crate::resilience::retry::RETRIES, "service" => service.to_owned()).increment(1);
                    tracing::debug!(peer = ?id, error = %e, attempt, "retrying an idempotent request");
                    tried.push(id);
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Chooses a member serving `service`: alive members before suspect
    /// ones, those not in `exclude` first (all of them once every member
    /// has been tried), and only one whose breaker lets the call through.
    fn pick(&self, service: &str, balance: Balance, exclude: &[PeerId]) -> Pick {
        let Ok(mut members) = self.inner.membership.lock().map(|m| m.serving(service)) else {
            return Pick::NoMember;
        };
        // This node is a member too when it serves the service itself.
        if self.inner.services.contains_key(service) {
            members.push((self.inner.info.id, PeerState::Alive));
        }
        let alive: Vec<PeerId> = members
            .iter()
            .filter(|(_, s)| *s == PeerState::Alive)
            .map(|(id, _)| *id)
            .collect();
        let mut pool = if alive.is_empty() {
            members.iter().map(|(id, _)| *id).collect()
        } else {
            alive
        };
        if pool.iter().any(|id| !exclude.contains(id)) {
            pool.retain(|id| !exclude.contains(id));
        }
        if pool.is_empty() {
            return Pick::NoMember;
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % pool.len();
        pool.rotate_left(start);
        if balance == Balance::LeastOutstanding {
            if let Ok(links) = self.inner.links.lock() {
                let load = |id: &PeerId| links.get(id).map(|l| l.in_flight()).unwrap_or(0);
                // Stable sort: ties stay in turn.
                pool.sort_by_key(load);
            }
        }
        let mut soonest: Option<Duration> = None;
        for id in pool {
            match self.admit(id, service) {
                Ok(()) => return Pick::Member(id),
                Err(retry_in) => soonest = Some(soonest.map_or(retry_in, |s| s.min(retry_in))),
            }
        }
        Pick::AllOpen(soonest.unwrap_or_default())
    }

    /// Asks the breaker of (`peer`, `service`) to let a call through.
    fn admit(&self, peer: PeerId, service: &str) -> Result<(), Duration> {
        let Some(cfg) = self.inner.config.breaker else {
            return Ok(());
        };
        if peer == self.inner.info.id {
            return Ok(());
        }
        let mut b = self
            .inner
            .breakers
            .entry((peer, service.to_owned()))
            .or_insert_with(|| CircuitBreaker::new(cfg));
        match b.try_acquire(clock()) {
            Ok(t) => {
                if let Some(t) = t {
                    breaker_moved(&self.inner, peer, service, t);
                }
                Ok(())
            }
            Err(open) => Err(open.retry_in),
        }
    }

    /// A call to one member, judged by its breaker (already admitted).
    async fn call_guarded(
        &self,
        peer: PeerId,
        call: Call<'_>,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let mut judge = Judge {
            inner: &self.inner,
            peer,
            service: call.service,
            started: clock(),
            outcome: Outcome::Failure,
        };
        let r = self.call(peer, call, timeout).await;
        if r.is_ok() {
            judge.outcome = Outcome::Success;
        }
        r
    }

    /// Starts taking unicast messages: they queue here (up to `capacity`;
    /// beyond that the sender gets `inbox_full`). Calling it again replaces
    /// the previous inbox.
    pub fn inbox(&self, capacity: usize) -> NodeInbox {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        if let Ok(mut i) = self.inner.inbox.lock() {
            *i = Some(tx);
        }
        NodeInbox { rx }
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
        let body = wire::encode_body(msg).map_err(|e| RequestError::Send(e.into()))?;
        let link = self
            .inner
            .link(peer)
            .await
            .ok_or(CallError::UnknownPeer(peer))?;
        let msg = NodeMsg::Unicast {
            body: ByteBuf::from(body.to_vec()),
        };
        match link.request_within(&msg, timeout).await? {
            NodeReply::Ack => Ok(()),
            _ => Err(CallError::BadReply(peer)),
        }
    }

    /// Subscribes to topics starting with `prefix`, published by any node
    /// of the fabric (peers learn of it with the next heartbeat). Up to
    /// `capacity` messages wait for `recv`; beyond that new ones are
    /// dropped and counted (`subscriber_queue_full`).
    pub fn subscribe(&self, prefix: impl Into<String>, capacity: usize) -> NodeSubscription {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        if let Ok(mut subs) = self.inner.subscriptions.lock() {
            subs.push((prefix.into(), tx));
        }
        NodeSubscription { rx }
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
        let body = wire::encode_body(msg).map_err(|e| RequestError::Send(e.into()))?;
        let body = ByteBuf::from(body.to_vec());
        let targets: Vec<PeerId> = self
            .members()
            .into_iter()
            .filter(|m| m.topics.iter().any(|p| topic.starts_with(p.as_str())))
            .map(|m| m.id)
            .collect();
        let sends = targets.into_iter().map(|id| {
            let msg = NodeMsg::Publish {
                topic: topic.to_owned(),
                body: body.clone(),
            };
            let inner = self.inner.clone();
            async move {
                let link = inner.link(id).await?;
                match link.request_within(&msg, timeout).await {
                    Ok(NodeReply::Delivered(n)) => Some(n),
                    _ => {
                        crate::telemetry::dropped(crate::telemetry::DropReason::LinkDown, 1);
                        None
                    }
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
        if let Ok(mut g) = self.inner.groups.lock() {
            g.insert(group.into(), typed_handler(handler));
        }
    }

    /// Leaves `group` (peers learn it with the next heartbeat; until then a
    /// message sent to the group is refused with `not_in_group`).
    pub fn leave_group(&self, group: &str) {
        if let Ok(mut g) = self.inner.groups.lock() {
            g.remove(group);
        }
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
        let members: Vec<PeerId> = self
            .inner
            .membership
            .lock()
            .map(|m| m.in_group(group).into_iter().map(|(id, _)| id).collect())
            .unwrap_or_default();
        let body = wire::encode_body(msg).map_err(|e| RequestError::Send(e.into()))?;
        let body = ByteBuf::from(body.to_vec());
        let sends = members.into_iter().map(|id| {
            let msg = NodeMsg::Deliver {
                group: group.to_owned(),
                body: body.clone(),
            };
            let inner = self.inner.clone();
            async move {
                let Some(link) = inner.link(id).await else {
                    return (id, Err(CallError::UnknownPeer(id)));
                };
                // A member whose connection broke is reported at once.
                if link_is_down(&link) {
                    return (id, Err(CallError::Request(RequestError::PeerGone)));
                }
                let r = match link.request_within(&msg, timeout).await {
                    Ok(NodeReply::Ack) => Ok(()),
                    Ok(_) => Err(CallError::BadReply(id)),
                    Err(e) => Err(CallError::Request(e)),
                };
                (id, r)
            }
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
        let body = wire::encode_body(req).map_err(|e| RequestError::Send(e.into()))?;
        let reply = self
            .request_peer_raw(peer, service, body, CallOptions::default().timeout(timeout))
            .await?;
        Ok(wire::decode_body(&reply).map_err(RequestError::Decode)?)
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
        let timeout = crate::resilience::deadline::budget(opts.timeout);
        if peer != self.inner.info.id && !self.inner.knows(peer) {
            return Err(CallError::UnknownPeer(peer));
        }
        if let Err(retry_in) = self.admit(peer, service) {
            return Err(CallError::CircuitOpen {
                service: service.to_owned(),
                retry_in,
            });
        }
        let call = Call {
            service,
            body,
            call_id: opts.call_id.unwrap_or_else(|| wire::random_u64() | 1),
            priority: opts.priority,
        };
        self.call_guarded(peer, call, timeout).await
    }

    /// Runs a call to one of this node's own services in the caller's
    /// task: no socket, same bulkhead, dedup, deadline and hop rules.
    async fn call_local(&self, call: Call<'_>, timeout: Duration) -> Result<Bytes, CallError> {
        let me = self.inner.info.id;
        let svc = self
            .inner
            .services
            .get(call.service)
            .ok_or_else(|| CallError::NoSuchService(call.service.to_owned()))?;
        let hops = crate::resilience::deadline::current_hops().saturating_add(1);
        if hops > MAX_HOPS {
            crate::telemetry::dropped(crate::telemetry::DropReason::TooManyHops, 1);
            return Err(CallError::Request(RequestError::Remote(RemoteError::new(
                "too_many_hops",
                format!("{hops} service hops (limit {MAX_HOPS}): a forwarding loop?"),
            ))));
        }
        let id = wire::MessageId(((wire::random_u64() as u128) << 64) | call.call_id as u128);
        let mut header = wire::Header::new(wire::Kind::Request, id, me.0, 0);
        header.deadline = Some(wire::Deadline::after(timeout));
        let work = svc.call(
            call.service,
            call.call_id,
            call.priority,
            hops,
            ByteBuf::from(call.body.to_vec()),
            header,
        );
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(from_remote(me, e, timeout)),
            Err(_) => Err(CallError::Request(RequestError::Timeout(timeout))),
        }
    }

    /// The last breaker transitions of this node's calls (up to 256),
    /// oldest first.
    pub fn breaker_log(&self) -> Vec<BreakerEvent> {
        self.inner
            .breaker_log
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The members serving `service` as this node sees them: alive ones
    /// first, then suspect ones.
    pub fn serving(&self, service: &str) -> Vec<(PeerId, PeerState)> {
        self.inner
            .membership
            .lock()
            .map(|m| m.serving(service))
            .unwrap_or_default()
    }

    async fn call(
        &self,
        peer: PeerId,
        call: Call<'_>,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        if peer == self.inner.info.id {
            return self.call_local(call, timeout).await;
        }
        let link = self
            .inner
            .link(peer)
            .await
            .ok_or(CallError::UnknownPeer(peer))?;
        // A member whose connection broke is unreachable until it is back:
        // fail now (a member failure, retried elsewhere if idempotent)
        // instead of queueing the request for a process that may be dead.
        if link_is_down(&link) {
            return Err(CallError::Request(RequestError::PeerGone));
        }
        // A link still making its first connection gets two heartbeats.
        let patience = (self.inner.config.membership.heartbeat_interval * 2).min(timeout);
        if tokio::time::timeout(patience, link.wait_connected())
            .await
            .is_err()
        {
            return Err(CallError::Request(RequestError::PeerGone));
        }
        let msg = NodeMsg::Call {
            service: call.service.to_owned(),
            body: ByteBuf::from(call.body.to_vec()),
            call: call.call_id,
            priority: call.priority,
            hops: crate::resilience::deadline::current_hops().saturating_add(1),
        };
        let reply = match link.request_within(&msg, timeout).await {
            Ok(r) => r,
            Err(RequestError::Remote(e)) => return Err(from_remote(peer, e, timeout)),
            Err(e) => return Err(e.into()),
        };
        match reply {
            NodeReply::Result(b) => Ok(Bytes::from(b.into_vec())),
            NodeReply::Hello(_) | NodeReply::Ack | NodeReply::Delivered(_) => {
                Err(CallError::BadReply(peer))
            }
        }
    }
}

/// Calls deeper than this many service hops are refused (`too_many_hops`):
/// a forwarding loop ends instead of running until the deadline.
pub const MAX_HOPS: u8 = 32;

/// Whether a peer link has lost its connection (and is trying again).
fn link_is_down(link: &Link) -> bool {
    link.link_states()
        .iter()
        .any(|(_, s)| *s == LinkState::Reconnecting)
}

/// Types the remote errors a caller can act on.
fn from_remote(peer: PeerId, e: RemoteError, timeout: Duration) -> CallError {
    match e.known_code() {
        Some(wire::RemoteCode::Rejected) => CallError::Rejected {
            peer,
            reason: e.message,
        },
        Some(wire::RemoteCode::DeadlineExpired) => {
            CallError::Request(RequestError::Timeout(timeout))
        }
        _ => CallError::Request(RequestError::Remote(e)),
    }
}

/// What [`Node::pick`] found.
enum Pick {
    Member(PeerId),
    /// Members exist but every breaker refused; the soonest retry.
    AllOpen(Duration),
    NoMember,
}

/// One service call, as sent.
struct Call<'a> {
    service: &'a str,
    body: Bytes,
    call_id: u64,
    priority: u8,
}

/// The breakers' clock: tokio's, so that paused-time tests drive them.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Records a call's outcome with its breaker when dropped, so that a call
/// abandoned half-way (its caller gave up) still counts, as a failure, and
/// never leaves a half-open trial slot taken.
struct Judge<'a> {
    inner: &'a Inner,
    peer: PeerId,
    service: &'a str,
    started: Instant,
    outcome: Outcome,
}

impl Drop for Judge<'_> {
    fn drop(&mut self) {
        if self.inner.config.breaker.is_none() {
            return;
        }
        let now = clock();
        let took = now.saturating_duration_since(self.started);
        let t = self
            .inner
            .breakers
            .get_mut(&(self.peer, self.service.to_owned()))
            .and_then(|mut b| b.record(self.outcome, took, now));
        if let Some(t) = t {
            breaker_moved(self.inner, self.peer, self.service, t);
        }
    }
}

/// A breaker transition, as kept in [`Node::breaker_log`].
#[derive(Debug, Clone)]
pub struct BreakerEvent {
    /// When (tokio's clock).
    pub at: Instant,
    /// The member.
    pub peer: PeerId,
    /// The service.
    pub service: String,
    /// The transition.
    pub transition: Transition,
}

/// Transitions kept in the log.
const BREAKER_LOG: usize = 256;

/// Publishes a breaker transition: metrics, the node's log, a log line.
fn breaker_moved(inner: &Inner, peer: PeerId, service: &str, t: Transition) {
    if let Ok(mut log) = inner.breaker_log.lock() {
        if log.len() == BREAKER_LOG {
            log.pop_front();
        }
        log.push_back(BreakerEvent {
            at: clock(),
            peer,
            service: service.to_owned(),
            transition: t,
        });
    }
    let (to, level) = match t.to {
        BreakerState::Closed => ("closed", 0.0),
        BreakerState::HalfOpen => ("half_open", 1.0),
        BreakerState::Open => ("open", 2.0),
    };
    metrics::counter!(crate::resilience::BREAKER_TRANSITIONS, "service" => service.to_owned(), "to" => to)
        .increment(1);
    metrics::gauge!(crate::resilience::BREAKER_STATE, "service" => service.to_owned(), "peer" => format!("{:016x}", peer.0))
        .set(level);
    tracing::info!(?peer, service, from = ?t.from, to = ?t.to, "circuit breaker moved");
}
