//! Building and starting a node.
//!
//! Guarantees: a node starts with every endpoint bound (or an error and
//! nothing running), one server per transport family, its services fixed,
//! and seeds checked (malformed ones refused here; names resolved later);
//! its advertised endpoints fixed (see `advertise`). Starting wires the parts
//! together: the dispatcher on the servers, the heartbeat task, the beacon
//! and its discoveries. Does not: wait for any peer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::advertise::{advertised, HostAddresses};
use super::beacon::BeaconConfig;
use super::gossip::Gossip;
use super::links::{LinkSecurity, Links};
use super::local::Local;
use super::membership::{PeerId, PeerInfo};
use super::node::{Node, NodeHandle, Running};
use super::options::NodeConfig;
use super::routing::Routing;
use super::serve::{Bound, Dispatch};
use super::service::{raw_handler, typed_handler, Handler, ServeOptions, Service, Services};
use super::shared::Shared;
use crate::endpoint::Endpoint;
use crate::messaging::reqrep::Request;
use crate::transport::guard::AbortOnDrop;
use crate::wire::{self, RemoteError};
use crate::{CurveConfig, OpenError, SocketConfig};

/// Builds a [`Node`].
pub struct NodeBuilder {
    pub(super) name: String,
    pub(super) config: NodeConfig,
    pub(super) binds: Vec<String>,
    pub(super) advertise: Vec<String>,
    pub(super) seeds: Vec<String>,
    pub(super) services: Services,
    pub(super) groups: HashMap<String, Handler>,
    pub(super) beacon: Option<BeaconConfig>,
    pub(super) handle: NodeHandle,
    pub(super) curve: Option<CurveConfig>,
    pub(super) client: bool,
    pub(super) extensions: super::shared::Extensions,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("name", &self.name)
            .field("binds", &self.binds)
            .field("seeds", &self.seeds)
            .field("services", &self.services.names())
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
            advertise: Vec::new(),
            seeds: Vec::new(),
            services: Services::default(),
            groups: Default::default(),
            beacon: None,
            handle: NodeHandle::default(),
            curve: None,
            client: false,
            extensions: Default::default(),
        }
    }
}

impl NodeBuilder {
    /// A handle to the node this builder will start, for handlers that
    /// call onwards through it.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Attaches `value` to the node for the layers above (one per type).
    pub(crate) fn extension<T: std::any::Any + Send + Sync>(mut self, value: Arc<T>) -> Self {
        self.extensions.insert(value);
        self
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

    /// Adds an endpoint peers are told to reach this node by, instead of
    /// the bound ones (a pod IP, a DNS name, a published port; port 0:
    /// the first bound tcp port). Without any, the bound endpoints are
    /// advertised, a wildcard host (`0.0.0.0`, `::`) replaced by this
    /// host's address (see [`HostAddresses::discover`]).
    pub fn advertise(mut self, endpoint: impl Into<String>) -> Self {
        self.advertise.push(endpoint.into());
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

    /// Turns security on: every ipc/tcp server of the node is a CURVE
    /// server that lets in only the clients `curve`'s authorizer accepts,
    /// and every link is a CURVE client with `curve`'s key pair. A link to
    /// a member expects the key that member advertises in gossip (and only
    /// if the authorizer accepts that key too); a link to a seed or a
    /// beacon find expects `curve`'s server keys. Since a hello can only
    /// arrive over an authorized connection, gossip then comes only from
    /// authenticated peers. NULL nodes and CURVE nodes refuse each other
    /// (counted `mechanism_mismatch`). Inproc is never encrypted. The
    /// advertised key is the public key at start.
    pub fn curve(mut self, curve: CurveConfig) -> Self {
        self.curve = Some(curve);
        self
    }

    /// Joins as a client only: the node learns the members from the nodes
    /// it greets and calls, publishes and sends through them, but they
    /// never record it as a member (no joined/gone events, not gossiped,
    /// not routed to). For short-lived callers such as `zfabric req`, so
    /// that each of them does not join and leave the fabric. A client's
    /// own services and groups are unreachable by name.
    pub fn client(mut self) -> Self {
        self.client = true;
        self
    }

    /// Also discovers nodes on the LAN by UDP beacon.
    pub fn beacon(mut self, beacon: BeaconConfig) -> Self {
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
    /// [`CallError::Rejected`](super::CallError::Rejected).
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
        let svc = Service::new(&self.name, &name, typed_handler(handler), opts);
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
        let name = service.into();
        let svc = Service::new(&self.name, &name, raw_handler(handler), opts);
        self.services.insert(name, svc);
        self
    }

    /// Starts the node: binds, starts heartbeats, says hello to the seeds.
    pub async fn start(self) -> Result<Node, OpenError> {
        let mut socket = SocketConfig::default();
        if let Some(c) = &self.curve {
            socket = socket.curve(c.clone());
        }
        let explicit = parse_all(&self.advertise)?;
        let seeds = parse_all(&self.seeds)?;
        let bound = Bound::bind(&self.binds, &socket).await?;
        let bound_endpoints = bound.endpoints();
        let host = if HostAddresses::needed_for(&bound_endpoints)
            || HostAddresses::needed_for(&explicit)
        {
            HostAddresses::discover(&seeds).await
        } else {
            HostAddresses::default()
        };
        let adv = advertised(&bound_endpoints, &explicit, &host);
        for ep in &adv.unroutable {
            tracing::warn!(endpoint = %ep, "advertising a wildcard address: no address of this host was found; peers on other hosts cannot reach it (set an advertise endpoint)");
        }
        let endpoints = adv.endpoints;
        let id = PeerId(wire::random_u64());
        let info_name = self.name.clone();
        let info = PeerInfo {
            id,
            name: self.name,
            endpoints,
            services: self.services.names(),
            groups: Vec::new(),
            topics: Vec::new(),
            metadata: Default::default(),
            curve_key: self.curve.as_ref().map(|c| c.public_key()),
        };
        let membership = self.config.membership;
        let view = Arc::new(
            Gossip::new(
                info,
                wire::random_u64() >> 1,
                membership,
                self.config.gossip,
            )
            .with_client(self.client),
        );
        let security = self.curve.map(|curve| {
            let v = Arc::downgrade(&view);
            LinkSecurity {
                curve,
                member_key: Box::new(move |id| v.upgrade()?.curve_key(id)),
            }
        });
        let shared = Arc::new(Shared {
            view,
            links: Arc::new(Links::new(id, membership.heartbeat_interval, security)),
            local: Arc::new(Local::new(self.groups)),
            routing: Arc::new(Routing::new(
                id,
                Arc::from(info_name.as_str()),
                self.config.breaker,
                self.config.retry_budget,
            )),
            services: Arc::new(self.services),
            extensions: self.extensions,
            config: self.config,
        });
        let dispatch = Dispatch {
            gossip: shared.gossiper(),
            local: shared.local.clone(),
            services: shared.services.clone(),
        };
        let servers = bound.serve(dispatch, id);
        let heartbeats = tokio::spawn(shared.gossiper().heartbeats(seeds));
        // A beacon advertises a network endpoint (inproc means nothing on a LAN).
        let advertised = shared.view.me().endpoints.iter().find(|e| !e.is_inproc());
        let beacon = match (self.beacon, advertised) {
            (Some(cfg), Some(ep)) => {
                let (found, discovered) = mpsc::channel(64);
                let send = tokio::spawn(super::beacon::run(cfg, id, ep.clone(), found));
                let greet = tokio::spawn(shared.gossiper().discoveries(discovered));
                vec![AbortOnDrop(send), AbortOnDrop(greet)]
            }
            _ => Vec::new(),
        };
        let _ = self.handle.0.set(Arc::downgrade(&shared));
        // Its gauges are read at scrape time, until it is dropped.
        let owner: std::sync::Weak<Shared> = Arc::downgrade(&shared);
        crate::telemetry::register(owner);
        Ok(Node {
            shared,
            bound: bound_endpoints,
            running: Some(Running {
                _beacon: beacon,
                servers,
                _heartbeats: AbortOnDrop(heartbeats),
            }),
        })
    }
}

/// Parses seeds or advertised endpoints: a malformed one is refused
/// here (names are resolved later).
fn parse_all(list: &[String]) -> Result<Vec<Endpoint>, OpenError> {
    Ok(list
        .iter()
        .map(|s| s.parse::<Endpoint>())
        .collect::<Result<Vec<_>, _>>()?)
}
