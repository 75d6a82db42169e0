//! The inbound side: the node's servers, and what a node does with each
//! message another node sends it (one small function per kind).
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
use crate::endpoint::Endpoint;
use crate::messaging::reqrep::{Request, Server, ServerHandle};
use crate::wire::{Header, RemoteCode, RemoteError};
use crate::{OpenError, SocketBuilder};

/// The node's servers, bound and not yet serving.
pub(super) struct Bound(Vec<Server<NodeMsg, NodeReply>>);

impl Bound {
    /// Binds one server per transport family: inproc, and ipc/tcp
    /// together.
    pub(super) async fn bind(binds: &[String]) -> Result<Self, OpenError> {
        let (inproc, network): (Vec<&String>, Vec<&String>) =
            binds.iter().partition(|b| b.starts_with("inproc://"));
        let mut servers = Vec::new();
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
        Ok(Bound(servers))
    }

    /// The endpoints bound (ports resolved).
    pub(super) fn endpoints(&self) -> Vec<Endpoint> {
        self.0.iter().flat_map(|s| s.endpoints().to_vec()).collect()
    }

    /// Starts answering requests with `dispatch`.
    pub(super) fn serve(self, dispatch: Dispatch) -> Vec<ServerHandle> {
        self.0
            .into_iter()
            .map(|server| {
                let dispatch = dispatch.clone();
                server.spawn(move |req: Request<NodeMsg>| {
                    let dispatch = dispatch.clone();
                    async move { dispatch.handle(req).await }
                })
            })
            .collect()
    }
}

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
