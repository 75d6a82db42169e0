//! Links: the one place a connection to another node is made, and the
//! member links, looked up by peer.
//!
//! Guarantees: every link (to a member, to a seed, to a node heard of by
//! gossip or beacon) is made by [`Links::connect`], with this node's id as
//! source and the heartbeat interval as default timeout; a member has at
//! most one link, made on first use and dropped when it leaves or is gone.
//! A [`Link`] speaks node messages through typed methods, so callers never
//! build a message or read a reply themselves. Does not: know membership
//! (the caller hands over a member's endpoints), decide whom to call, or
//! retry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use parking_lot::Mutex;

use super::error::CallError;
use super::membership::PeerId;
use super::protocol::{
    call_fields, deliver_fields, hello_request, is_ack, leave_request, publish_fields,
    read_delivered, read_hello_reply, unicast_fields, Call, Hello, Leave, TraceFields,
};
use crate::endpoint::Endpoint;
use crate::messaging::reqrep::{CallFields, Client};
use crate::transport::curve::AuthRequest;
use crate::transport::inproc::{self, Family};
use crate::{CurveConfig, CurvePublicKey, LinkState, RequestError, SocketBuilder, SocketConfig};

/// Why a request over a link failed.
#[derive(Debug)]
pub(super) enum Failed {
    /// The request itself failed (timeout, gone, remote error, ...).
    Request(RequestError),
    /// The peer answered with the wrong kind of reply.
    BadReply,
}

impl Failed {
    /// As a call error about `peer`.
    pub(super) fn at(self, peer: PeerId) -> CallError {
        match self {
            Failed::Request(e) => CallError::Request(e),
            Failed::BadReply => CallError::BadReply(peer),
        }
    }
}

/// A connection to another node.
#[derive(Debug)]
pub(super) struct Link {
    client: Client<Bytes, Bytes>,
    /// The default timeout (hellos).
    timeout: Duration,
    /// The inproc name it is connected to, if it is an inproc link.
    inproc: Option<String>,
}

impl Link {
    /// One request: header `fields`, `body` as given; the reply's body as
    /// received.
    async fn ask(
        &self,
        fields: CallFields,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, Failed> {
        self.client
            .request_raw(fields, body, timeout)
            .await
            .map(|env| env.body)
            .map_err(Failed::Request)
    }

    /// Says hello (within the default timeout); the answer, if one came.
    pub(super) async fn hello(&self, hello: Hello) -> Option<Hello> {
        let (fields, body) = hello_request(&hello)?;
        let reply = self.ask(fields, body, self.timeout).await.ok()?;
        read_hello_reply(&reply)
    }

    /// Tells the peer this node leaves.
    pub(super) async fn leave(&self, id: PeerId, incarnation: u64, timeout: Duration) {
        let leave = Leave {
            id: id.0,
            incarnation,
        };
        if let Some((fields, body)) = leave_request(&leave) {
            let _ = self.ask(fields, body, timeout).await;
        }
    }

    /// Calls a service on the peer; the reply's body as the handler
    /// encoded it.
    pub(super) async fn call(
        &self,
        call: &Call,
        hops: u8,
        timeout: Duration,
    ) -> Result<Bytes, Failed> {
        self.ask(call_fields(call, hops), call.body.clone(), timeout)
            .await
    }

    /// Sends a message to the peer's inbox; `Ok` once it took it.
    pub(super) async fn unicast(
        &self,
        body: Bytes,
        timeout: Duration,
        trace: TraceFields,
    ) -> Result<(), Failed> {
        let reply = self.ask(unicast_fields(trace), body, timeout).await?;
        is_ack(&reply).then_some(()).ok_or(Failed::BadReply)
    }

    /// Sends a message to the peer's handler of `group`; `Ok` once it ran.
    pub(super) async fn deliver(
        &self,
        group: Arc<str>,
        body: Bytes,
        timeout: Duration,
        trace: TraceFields,
    ) -> Result<(), Failed> {
        let reply = self
            .ask(deliver_fields(group, trace), body, timeout)
            .await?;
        is_ack(&reply).then_some(()).ok_or(Failed::BadReply)
    }

    /// Publishes to the peer's subscriptions; how many took it.
    pub(super) async fn publish(
        &self,
        topic: Arc<str>,
        body: Bytes,
        timeout: Duration,
        trace: TraceFields,
    ) -> Result<u32, Failed> {
        let reply = self
            .ask(publish_fields(topic, trace), body, timeout)
            .await?;
        read_delivered(&reply).ok_or(Failed::BadReply)
    }

    /// Whether the link has lost its connection (and is trying again).
    /// Allocates nothing when the link is up (the usual case): an inproc
    /// link is down when its name is no longer bound; a `zeromq` link that
    /// is connected is not down, and only one that is not is looked at
    /// closer (first connection or reconnection).
    pub(super) fn is_down(&self) -> bool {
        if let Some(name) = &self.inproc {
            return !inproc::is_bound(Family::ReqRep, name);
        }
        if self.client.wait_connected().now_or_never().is_some() {
            return false;
        }
        self.client
            .link_states()
            .iter()
            .any(|(_, s)| *s == LinkState::Reconnecting)
    }

    /// Resolves once the link is connected.
    pub(super) async fn wait_connected(&self) {
        self.client.wait_connected().await
    }

    /// Requests sent and not yet answered.
    pub(super) fn in_flight(&self) -> usize {
        self.client.in_flight()
    }
}

/// A member's CURVE public key, as gossip learned it.
pub(super) type MemberKey = Box<dyn Fn(PeerId) -> Option<CurvePublicKey> + Send + Sync>;

/// How a node with security on makes its links: as a CURVE client with its
/// own key pair, to the member's advertised key (or the configured server
/// keys for seeds and beacon finds).
pub(super) struct LinkSecurity {
    /// The node's CURVE settings (key pair, server keys, authorizer).
    pub(super) curve: CurveConfig,
    /// Looks up a member's advertised key.
    pub(super) member_key: MemberKey,
}

/// This node's links to its members.
pub(super) struct Links {
    me: PeerId,
    /// The default timeout of a link's requests (hellos).
    timeout: Duration,
    members: Mutex<HashMap<PeerId, Arc<Link>>>,
    security: Option<LinkSecurity>,
}

impl Links {
    pub(super) fn new(me: PeerId, timeout: Duration, security: Option<LinkSecurity>) -> Self {
        Links {
            me,
            timeout,
            members: Mutex::new(HashMap::new()),
            security,
        }
    }

    /// Makes a link to `ep` (a seed or a beacon find: with security on, to
    /// the configured server keys).
    pub(super) async fn connect(&self, ep: &Endpoint) -> Option<Arc<Link>> {
        self.connect_to(ep, None).await
    }

    /// Makes a link to `ep`, whose CURVE server key is `key` if known: the
    /// only place a link is made. With security on, a known key must be
    /// one this node's authorizer accepts (it is the peer's long-term key:
    /// the same key it connects to us with); one it refuses is not linked
    /// to, and counted as `unauthorized`. The configured server keys are
    /// tried after it (a member that rotated its key is still reached).
    pub(super) async fn connect_to(
        &self,
        ep: &Endpoint,
        key: Option<CurvePublicKey>,
    ) -> Option<Arc<Link>> {
        let mut cfg = SocketConfig::default();
        if let Some(sec) = &self.security {
            let mut curve = sec.curve.clone();
            if let Some(k) = key {
                let req = AuthRequest {
                    client_key: &k,
                    socket_type: None,
                    endpoint: ep,
                };
                if !curve.authorize(&req) {
                    crate::telemetry::disconnected(
                        crate::telemetry::DisconnectReason::Unauthorized,
                    );
                    tracing::warn!(peer = %ep, "not linking to a member whose CURVE key is not authorized here");
                    return None;
                }
                curve = curve.with_first_server_key(k);
            }
            cfg = cfg.curve(curve);
        }
        let client = SocketBuilder::new()
            .config(cfg)
            .connect(ep.to_string())
            .client()
            .await
            .ok()?
            .with_source(self.me.0);
        Some(Arc::new(Link {
            client,
            timeout: self.timeout,
            inproc: ep.inproc_name().map(str::to_owned),
        }))
    }

    /// The link to a member, made on first use from its endpoints
    /// (`endpoints` is asked only then; `None`: not a member).
    pub(super) async fn to_member(
        &self,
        id: PeerId,
        endpoints: impl FnOnce() -> Option<Vec<Endpoint>>,
    ) -> Option<Arc<Link>> {
        if let Some(l) = self.members.lock().get(&id) {
            return Some(l.clone());
        }
        let endpoints = endpoints()?;
        let key = self.security.as_ref().and_then(|s| (s.member_key)(id));
        let link = self.connect_to(reachable(&endpoints)?, key).await?;
        Some(self.members.lock().entry(id).or_insert(link).clone())
    }

    /// Drops the link to a member that left or is gone.
    pub(super) fn remove(&self, id: PeerId) {
        self.members.lock().remove(&id);
    }

    /// Whether the link to a member exists and is known to be down (its
    /// connection broke and is not back): a call to it would not be sent.
    pub(super) fn known_down(&self, id: PeerId) -> bool {
        let link = self.members.lock().get(&id).cloned();
        link.is_some_and(|l| l.is_down())
    }

    /// Requests to a member still waiting for a reply (0 without a link).
    pub(super) fn in_flight(&self, id: PeerId) -> usize {
        self.members
            .lock()
            .get(&id)
            .map(|l| l.in_flight())
            .unwrap_or(0)
    }
}

/// The endpoint to reach a peer by: its inproc one when that name is bound
/// in this process (same process, no syscalls), else its first ipc/tcp
/// one.
pub(super) fn reachable(endpoints: &[Endpoint]) -> Option<&Endpoint> {
    endpoints
        .iter()
        .find(|e| match e {
            Endpoint::Inproc(name) => inproc::is_bound(Family::ReqRep, name),
            _ => false,
        })
        .or_else(|| endpoints.iter().find(|e| !e.is_inproc()))
}
