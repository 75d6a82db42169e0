//! What nodes say to each other: how each node message sits in the
//! envelope (header fields + body), how a peer and a hello look on the
//! wire.
//!
//! Guarantees: a node message is one request whose header names the
//! operation ([`Header::op`]) and carries its fields (`service` for the
//! service, group or topic; `call_id`, `priority`, `hops` for a call);
//! the body of a call, delivery, publish or unicast is the caller's encoded
//! [`Bytes`], passed through untouched (no re-encode, no copy) in both
//! directions. Only the control messages ([`Hello`], [`Leave`]) and the
//! publish count have a body of their own, MessagePack. `docs/PROTOCOL.md`
//! §6 (Nodes) is the normative description. Outside this module only
//! `links` (which builds requests and reads replies) and `serve` (which
//! reads requests and builds replies) use these functions; `gossip` only
//! passes [`Hello`]s through. Does not: send, receive or decide anything.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::membership::{PeerId, PeerInfo};
use crate::messaging::reqrep::CallFields;
use crate::wire::{self, Header, NodeOp, RemoteCode, RemoteError};

/// A node message as its receiver reads it from the header (the body is
/// handed on separately, untouched).
#[derive(Debug, Clone)]
pub(super) enum NodeMsg {
    Hello(Hello),
    Leave(Leave),
    Call {
        service: Arc<str>,
        /// The logical call id, the same on every attempt (natural
        /// idempotency key); 0 if none.
        call_id: u64,
        /// Caller-given priority (bulkhead partitioning).
        priority: u8,
        /// Service hops that led to this call (1 = called from outside
        /// any handler).
        hops: u8,
    },
    Deliver {
        group: Arc<str>,
    },
    Publish {
        topic: Arc<str>,
    },
    Unicast,
}

impl NodeMsg {
    /// Reads the node message a request's header names; `body` is read
    /// only for the control messages (hello, leave). A request that is no
    /// node message, or lacks a field its operation needs, is `bad_request`.
    pub(super) fn read(header: &Header, body: &[u8]) -> Result<NodeMsg, RemoteError> {
        let op = header
            .op
            .ok_or_else(|| bad_request("not a node message (no op)"))?;
        let named = || {
            header
                .service
                .clone()
                .ok_or_else(|| bad_request("a node message without its service, group or topic"))
        };
        Ok(match op {
            NodeOp::Hello => NodeMsg::Hello(control(body)?),
            NodeOp::Leave => NodeMsg::Leave(control(body)?),
            NodeOp::Call => NodeMsg::Call {
                service: named()?,
                call_id: header.call_id,
                priority: header.priority,
                hops: header.hops,
            },
            NodeOp::Deliver => NodeMsg::Deliver { group: named()? },
            NodeOp::Publish => NodeMsg::Publish { topic: named()? },
            NodeOp::Unicast => NodeMsg::Unicast,
        })
    }
}

fn bad_request(why: &str) -> RemoteError {
    RemoteError::new(RemoteCode::BadRequest, why)
}

/// A control message's MessagePack body.
fn control<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RemoteError> {
    wire::decode_body(body).map_err(|e| bad_request(&e.to_string()))
}

/// A node leaving gracefully (the body of a leave).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Leave {
    pub(super) id: u64,
    pub(super) incarnation: u64,
}

/// A node's hello: who it is, its incarnation, and who it knows (gossip).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Hello {
    pub(super) from: WirePeer,
    pub(super) incarnation: u64,
    pub(super) known: Vec<WirePeer>,
    /// The sender only calls: it is answered (and so learns the members)
    /// but never becomes a member itself, is never gossiped, never
    /// routed to. Left out when false, so hellos of members are encoded
    /// as before; peers that predate it ignore it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) client: bool,
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
    /// Its CURVE public key (Z85) when it runs with security on. Optional:
    /// peers that predate it (or run without security) leave it out, and
    /// ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) curve_key: Option<String>,
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
            curve_key: i.curve_key.map(|k| k.to_z85()),
        }
    }

    /// `None` when an endpoint or the CURVE key does not parse (the hello
    /// is ignored).
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
            curve_key: match &self.curve_key {
                Some(k) => Some(k.parse().ok()?),
                None => None,
            },
        })
    }
}

/// The W3C `traceparent` and `tracestate` a node message carries.
pub(super) type TraceFields = (Option<Arc<str>>, Option<Arc<str>>);

/// One service call, as the caller gives it.
#[derive(Debug, Clone)]
pub(super) struct Call {
    /// The service, interned: sharing it costs no allocation.
    pub(super) service: Arc<str>,
    pub(super) body: Bytes,
    pub(super) call_id: u64,
    pub(super) priority: u8,
    /// The trace context of the call's span.
    pub(super) trace: TraceFields,
}

/// The header fields of a call `hops` deep.
pub(super) fn call_fields(call: &Call, hops: u8) -> CallFields {
    CallFields {
        service: Some(call.service.clone()),
        call_id: call.call_id,
        priority: call.priority,
        hops,
        op: Some(NodeOp::Call),
        traceparent: call.trace.0.clone(),
        tracestate: call.trace.1.clone(),
        ..CallFields::default()
    }
}

/// The header fields of a delivery to `group`.
pub(super) fn deliver_fields(group: Arc<str>, trace: TraceFields) -> CallFields {
    addressed(NodeOp::Deliver, group, trace)
}

/// The header fields of a publish on `topic`.
pub(super) fn publish_fields(topic: Arc<str>, trace: TraceFields) -> CallFields {
    addressed(NodeOp::Publish, topic, trace)
}

/// The header fields of a unicast message.
pub(super) fn unicast_fields(trace: TraceFields) -> CallFields {
    CallFields {
        op: Some(NodeOp::Unicast),
        traceparent: trace.0,
        tracestate: trace.1,
        ..CallFields::default()
    }
}

fn addressed(op: NodeOp, name: Arc<str>, trace: TraceFields) -> CallFields {
    CallFields {
        service: Some(name),
        op: Some(op),
        traceparent: trace.0,
        tracestate: trace.1,
        ..CallFields::default()
    }
}

/// The header fields and body of a hello.
pub(super) fn hello_request(hello: &Hello) -> Option<(CallFields, Bytes)> {
    control_request(NodeOp::Hello, hello)
}

/// The header fields and body of a leave.
pub(super) fn leave_request(leave: &Leave) -> Option<(CallFields, Bytes)> {
    control_request(NodeOp::Leave, leave)
}

fn control_request<T: Serialize>(op: NodeOp, msg: &T) -> Option<(CallFields, Bytes)> {
    let body = wire::encode_body(msg).ok()?;
    let fields = CallFields {
        op: Some(op),
        ..CallFields::default()
    };
    Some((fields, body))
}

/// The reply body of a hello: the answering node's hello.
pub(super) fn hello_reply(hello: &Hello) -> Result<Bytes, RemoteError> {
    wire::encode_body(hello).map_err(|e| RemoteError::new(RemoteCode::Encode, e.to_string()))
}

/// A hello reply's body read back (`None`: not a hello).
pub(super) fn read_hello_reply(body: &[u8]) -> Option<Hello> {
    wire::decode_body(body).ok()
}

/// The reply body of a leave, delivery or unicast: empty (an
/// acknowledgement).
pub(super) fn ack() -> Bytes {
    Bytes::new()
}

/// Whether a reply body is an acknowledgement.
pub(super) fn is_ack(body: &[u8]) -> bool {
    body.is_empty()
}

/// The reply body of a publish: how many subscriptions took it, as a
/// MessagePack unsigned integer.
pub(super) fn delivered_reply(n: u32) -> Bytes {
    wire::encode_body(&n).unwrap_or_default()
}

/// A publish reply's count read back (`None`: not a count).
pub(super) fn read_delivered(body: &[u8]) -> Option<u32> {
    wire::decode_body(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Kind, MessageId};

    fn header(op: Option<NodeOp>, service: Option<&str>) -> Header {
        let mut h = Header::new(Kind::Request, MessageId(1), 1, 0);
        h.op = op;
        h.service = service.map(Arc::from);
        h
    }

    #[test]
    fn a_peers_curve_key_travels_in_gossip_and_peers_without_it_still_parse() {
        #[derive(Serialize)]
        struct OldPeer {
            id: u64,
            name: String,
            endpoints: Vec<String>,
            services: Vec<String>,
            groups: Vec<String>,
        }
        let old = OldPeer {
            id: 7,
            name: "old".into(),
            endpoints: vec!["tcp://127.0.0.1:7000".into()],
            services: vec![],
            groups: vec![],
        };
        let bytes = wire::encode_body(&old).unwrap();
        let p: WirePeer = wire::decode_body(&bytes).unwrap();
        assert_eq!(p.to_info().unwrap().curve_key, None);
        // A security-off peer leaves the field out entirely.
        let back = wire::encode_body(&p).unwrap();
        assert!(!back.windows(9).any(|w| w == b"curve_key"));

        let key = *crate::CurveKeyPair::generate().public();
        let mut info = p.to_info().unwrap();
        info.curve_key = Some(key);
        let bytes = wire::encode_body(&WirePeer::from_info(&info)).unwrap();
        let p: WirePeer = wire::decode_body(&bytes).unwrap();
        assert_eq!(p.to_info().unwrap().curve_key, Some(key));
        // A key that is not Z85: the peer is ignored.
        let bad = WirePeer {
            curve_key: Some("not a key".into()),
            ..p
        };
        assert!(bad.to_info().is_none());
    }

    #[test]
    fn a_call_is_read_from_its_header_fields() {
        let call = Call {
            service: Arc::from("svc"),
            body: Bytes::from_static(b"\x01\x02"),
            call_id: 9,
            priority: 3,
            trace: (None, None),
        };
        let mut h = header(None, None);
        let fields = call_fields(&call, 2);
        assert!(Arc::ptr_eq(fields.service.as_ref().unwrap(), &call.service));
        (h.service, h.call_id, h.priority, h.hops, h.op) = (
            fields.service,
            fields.call_id,
            fields.priority,
            fields.hops,
            fields.op,
        );
        match NodeMsg::read(&h, &call.body).unwrap() {
            NodeMsg::Call {
                service,
                call_id,
                priority,
                hops,
            } => assert_eq!((&*service, call_id, priority, hops), ("svc", 9, 3, 2)),
            other => panic!("not a call: {other:?}"),
        }
    }

    #[test]
    fn a_request_without_op_or_name_is_a_bad_request() {
        for h in [
            header(None, Some("svc")),
            header(Some(NodeOp::Call), None),
            header(Some(NodeOp::Deliver), None),
            header(Some(NodeOp::Publish), None),
        ] {
            let e = NodeMsg::read(&h, b"").unwrap_err();
            assert_eq!(e.known_code(), Some(RemoteCode::BadRequest));
        }
        let e = NodeMsg::read(&header(Some(NodeOp::Hello), None), b"\xc1").unwrap_err();
        assert_eq!(e.known_code(), Some(RemoteCode::BadRequest));
        assert!(matches!(
            NodeMsg::read(&header(Some(NodeOp::Unicast), None), b"anything"),
            Ok(NodeMsg::Unicast)
        ));
    }

    #[test]
    fn replies_read_back() {
        assert!(is_ack(&ack()));
        assert_eq!(read_delivered(&delivered_reply(3)), Some(3));
        assert_eq!(read_delivered(&ack()), None);
        let leave = Leave {
            id: 5,
            incarnation: 6,
        };
        let (fields, body) = leave_request(&leave).unwrap();
        assert_eq!(fields.op, Some(NodeOp::Leave));
        match NodeMsg::read(&header(fields.op, None), &body).unwrap() {
            NodeMsg::Leave(l) => assert_eq!((l.id, l.incarnation), (5, 6)),
            other => panic!("not a leave: {other:?}"),
        }
    }
}
