//! Inbound dispatch: what a node does with each message another node
//! sends it, one small function per kind.
//!
//! Guarantees: every request gets exactly one answer (a reply or a typed
//! remote error: `no_such_service`, `not_in_group`, `no_inbox`,
//! `inbox_full`, `too_many_hops`, or the service's own); a service call
//! runs through the same [`Service::call`](super::service) path as a local
//! one (hop limit, dedup, bulkhead, deadline). Does not: choose members,
//! make links (a leave only drops one), or run anything but the handlers
//! this node registered.

use std::sync::Arc;

use bytes::Bytes;
use serde_bytes::ByteBuf;

use super::gossip::Gossiper;
use super::local::{Direct, Local, Published};
use super::membership::PeerId;
use super::protocol::{body_bytes, wire_body, NodeMsg, NodeReply};
use super::service::Services;
use crate::messaging::reqrep::Request;
use crate::wire::{Header, RemoteCode, RemoteError};

/// What inbound requests are dispatched to.
#[derive(Clone)]
pub(super) struct Dispatch {
    pub(super) gossip: Gossiper,
    pub(super) local: Arc<Local>,
    pub(super) services: Arc<Services>,
}

impl Dispatch {
    /// Answers one request from another node.
    pub(super) async fn handle(&self, req: Request<NodeMsg>) -> Result<NodeReply, RemoteError> {
        let header = req.header;
        match req.body {
            NodeMsg::Hello(h) => Ok(NodeReply::Hello(self.gossip.answer(&h))),
            NodeMsg::Leave { id, incarnation } => {
                self.gossip.left(PeerId(id), incarnation);
                Ok(NodeReply::Ack)
            }
            NodeMsg::Unicast { body } => self.unicast(body, header),
            NodeMsg::Publish { topic, body } => Ok(self.publish(topic, body, header)),
            NodeMsg::Deliver { group, body } => self.deliver(group, body, header).await,
            NodeMsg::Call {
                service,
                body,
                call,
                priority,
                hops,
            } => {
                self.call(&service, body, call, priority, hops, header)
                    .await
            }
        }
    }

    fn unicast(&self, body: ByteBuf, header: Header) -> Result<NodeReply, RemoteError> {
        self.local.deliver_direct(Direct {
            from: PeerId(header.source),
            body: body_bytes(body),
            header,
        })?;
        Ok(NodeReply::Ack)
    }

    fn publish(&self, topic: String, body: ByteBuf, header: Header) -> NodeReply {
        let n = self.local.deliver_published(Published {
            topic,
            body: body_bytes(body),
            header,
        });
        NodeReply::Delivered(n)
    }

    async fn deliver(
        &self,
        group: String,
        body: ByteBuf,
        header: Header,
    ) -> Result<NodeReply, RemoteError> {
        let handler = self
            .local
            .group(&group)
            .ok_or_else(|| RemoteError::new(RemoteCode::NotInGroup, group.clone()))?;
        handler(Request { body, header }).await?;
        Ok(NodeReply::Ack)
    }

    async fn call(
        &self,
        service: &str,
        body: ByteBuf,
        call: u64,
        priority: u8,
        hops: u8,
        header: Header,
    ) -> Result<NodeReply, RemoteError> {
        let svc = self
            .services
            .get(service)
            .ok_or_else(|| RemoteError::new(RemoteCode::NoSuchService, service.to_owned()))?;
        let out: Bytes = svc
            .call(service, call, priority, hops, body, header)
            .await?;
        Ok(NodeReply::Result(wire_body(&out)))
    }
}
