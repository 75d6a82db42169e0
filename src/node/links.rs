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
use parking_lot::Mutex;

use super::error::CallError;
use super::membership::PeerId;
use super::protocol::{body_bytes, wire_body, Call, Hello, NodeMsg, NodeReply};
use crate::endpoint::Endpoint;
use crate::messaging::reqrep::Client;
use crate::{LinkState, RequestError, SocketBuilder};

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
    client: Client<NodeMsg, NodeReply>,
}

impl Link {
    async fn ask(&self, msg: &NodeMsg, timeout: Duration) -> Result<NodeReply, Failed> {
        self.client
            .request_within(msg, timeout)
            .await
            .map_err(Failed::Request)
    }

    /// Says hello (within the default timeout); the answer, if one came.
    pub(super) async fn hello(&self, hello: Hello) -> Option<Hello> {
        match self.client.request(&NodeMsg::Hello(hello)).await {
            Ok(NodeReply::Hello(h)) => Some(h),
            _ => None,
        }
    }

    /// Tells the peer this node leaves.
    pub(super) async fn leave(&self, id: PeerId, incarnation: u64, timeout: Duration) {
        let msg = NodeMsg::Leave {
            id: id.0,
            incarnation,
        };
        let _ = self.ask(&msg, timeout).await;
    }

    /// Calls a service on the peer; the reply's MessagePack body.
    pub(super) async fn call(
        &self,
        call: &Call<'_>,
        hops: u8,
        timeout: Duration,
    ) -> Result<Bytes, Failed> {
        let msg = NodeMsg::Call {
            service: call.service.to_owned(),
            body: wire_body(&call.body),
            call: call.call_id,
            priority: call.priority,
            hops,
        };
        match self.ask(&msg, timeout).await? {
            NodeReply::Result(b) => Ok(body_bytes(b)),
            NodeReply::Hello(_) | NodeReply::Ack | NodeReply::Delivered(_) => Err(Failed::BadReply),
        }
    }

    /// Sends a message to the peer's inbox; `Ok` once it took it.
    pub(super) async fn unicast(&self, body: &Bytes, timeout: Duration) -> Result<(), Failed> {
        let msg = NodeMsg::Unicast {
            body: wire_body(body),
        };
        match self.ask(&msg, timeout).await? {
            NodeReply::Ack => Ok(()),
            _ => Err(Failed::BadReply),
        }
    }

    /// Sends a message to the peer's handler of `group`; `Ok` once it ran.
    pub(super) async fn deliver(
        &self,
        group: &str,
        body: &Bytes,
        timeout: Duration,
    ) -> Result<(), Failed> {
        let msg = NodeMsg::Deliver {
            group: group.to_owned(),
            body: wire_body(body),
        };
        match self.ask(&msg, timeout).await? {
            NodeReply::Ack => Ok(()),
            _ => Err(Failed::BadReply),
        }
    }

    /// Publishes to the peer's subscriptions; how many took it.
    pub(super) async fn publish(
        &self,
        topic: &str,
        body: &Bytes,
        timeout: Duration,
    ) -> Result<u32, Failed> {
        let msg = NodeMsg::Publish {
            topic: topic.to_owned(),
            body: wire_body(body),
        };
        match self.ask(&msg, timeout).await? {
            NodeReply::Delivered(n) => Ok(n),
            _ => Err(Failed::BadReply),
        }
    }

    /// Whether the link has lost its connection (and is trying again).
    pub(super) fn is_down(&self) -> bool {
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

/// This node's links to its members.
pub(super) struct Links {
    me: PeerId,
    /// The default timeout of a link's requests (hellos).
    timeout: Duration,
    members: Mutex<HashMap<PeerId, Arc<Link>>>,
}

impl Links {
    pub(super) fn new(me: PeerId, timeout: Duration) -> Self {
        Links {
            me,
            timeout,
            members: Mutex::new(HashMap::new()),
        }
    }

    /// Makes a link to `ep`: the only place a link is made.
    pub(super) async fn connect(&self, ep: &Endpoint) -> Option<Arc<Link>> {
        let client = SocketBuilder::new()
            .connect(ep.to_string())
            .client()
            .await
            .ok()?
            .with_source(self.me.0)
            .with_timeout(self.timeout);
        Some(Arc::new(Link { client }))
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
        let link = self.connect(reachable(&endpoints)?).await?;
        Some(self.members.lock().entry(id).or_insert(link).clone())
    }

    /// Drops the link to a member that left or is gone.
    pub(super) fn remove(&self, id: PeerId) {
        self.members.lock().remove(&id);
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
            Endpoint::Inproc(name) => {
                crate::transport::inproc::is_bound(crate::transport::inproc::Family::ReqRep, name)
            }
            _ => false,
        })
        .or_else(|| endpoints.iter().find(|e| !e.is_inproc()))
}
