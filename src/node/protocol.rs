//! What nodes say to each other: the node message types and how a peer
//! and a hello look on the wire.
//!
//! Guarantees: this module defines the shape of node messages
//! ([`NodeMsg`], [`NodeReply`], [`Hello`], [`WirePeer`]) and how bodies go
//! in and out of them; outside it only `links` (which builds requests and
//! reads replies) and `serve` (which reads requests and builds replies)
//! name the variants, so a change of encoding (e.g. moving service, call
//! id, priority and hops into header fields, bodies as raw `Bytes`) stays
//! in these three. `gossip` only passes [`Hello`]s through. Does not:
//! send, receive or decide anything.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::membership::{PeerId, PeerInfo};

/// What nodes say to each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum NodeMsg {
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

/// What nodes answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum NodeReply {
    Hello(Hello),
    Result(ByteBuf),
    Ack,
    /// How many local subscriptions took a published message.
    Delivered(u32),
}

/// A node's hello: who it is, its incarnation, and who it knows (gossip).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Hello {
    pub(super) from: WirePeer,
    pub(super) incarnation: u64,
    pub(super) known: Vec<WirePeer>,
}

/// A peer as it travels in a hello.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct WirePeer {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) endpoints: Vec<String>,
    pub(super) services: Vec<String>,
    pub(super) groups: Vec<String>,
    #[serde(default)]
    pub(super) topics: Vec<String>,
}

impl WirePeer {
    pub(super) fn from_info(i: &PeerInfo) -> Self {
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
    pub(super) fn to_info(&self) -> Option<PeerInfo> {
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

/// One service call, as the caller gives it.
#[derive(Debug, Clone)]
pub(super) struct Call<'a> {
    pub(super) service: &'a str,
    pub(super) body: Bytes,
    pub(super) call_id: u64,
    pub(super) priority: u8,
}

/// A body as it travels inside a node message.
pub(super) fn wire_body(body: &Bytes) -> ByteBuf {
    ByteBuf::from(body.to_vec())
}

/// A body taken out of a node message.
pub(super) fn body_bytes(body: ByteBuf) -> Bytes {
    Bytes::from(body.into_vec())
}
