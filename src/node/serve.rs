//! The inbound side: the node's servers, and what a node does with each
//! message another node sends it (one small function per kind).
//!
//! Guarantees: every request gets exactly one answer (a reply or a typed
//! remote error: `bad_request` for a request that is no node message,
//! `no_such_service`, `not_in_group`, `no_inbox`, `inbox_full`,
//! `too_many_hops`, or the service's own); the body reaches the service,
//! group handler, inbox or subscriptions as the sender's `Bytes`, and a
//! service's reply goes back as its handler's `Bytes` (no decode, no copy
//! here); a service call
//! runs through the same [`Service::call`](super::service) path as a local
//! one (hop limit, dedup, bulkhead, deadline). Does not: choose members,
//! make links (a leave only drops one), or run anything but the handlers
//! this node registered.

use std::sync::Arc;

use bytes::Bytes;

use super::gossip::Gossiper;
use super::local::{Direct, Local, Published};
use super::membership::PeerId;
use super::protocol::{ack, delivered_reply, hello_reply, Leave, NodeMsg};
use super::service::Services;
use crate::endpoint::Endpoint;
use crate::messaging::reqrep::{Request, Server, ServerHandle};
use crate::trace;
use crate::wire::{Header, RemoteCode, RemoteError};
use crate::{OpenError, SocketBuilder, SocketConfig};

/// The node's servers, bound and not yet serving.
pub(super) struct Bound(Vec<Server<Bytes, Bytes>>);

impl Bound {
    /// Binds one server per transport family: inproc, and ipc/tcp
    /// together, with `config` (its CURVE settings apply to ipc/tcp).
    pub(super) async fn bind(binds: &[String], config: &SocketConfig) -> Result<Self, OpenError> {
        let (inproc, network): (Vec<&String>, Vec<&String>) =
            binds.iter().partition(|b| b.starts_with("inproc://"));
        let mut servers = Vec::new();
        for group in [inproc, network] {
            if group.is_empty() {
                continue;
            }
            let mut sb = SocketBuilder::new().config(config.clone());
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

    /// Starts answering requests with `dispatch`; every reply carries
    /// `source`, the node's id.
    pub(super) fn serve(self, dispatch: Dispatch, source: PeerId) -> Vec<ServerHandle> {
        self.0
            .into_iter()
            .map(|server| {
                let dispatch = dispatch.clone();
                server
                    .with_source(source.0)
                    .spawn_raw(move |req: Request<Bytes>| {
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
    /// Answers one request from another node: its header says which node
    /// message it is; its body goes on to the receiver untouched.
    pub(super) async fn handle(&self, req: Request<Bytes>) -> Result<Bytes, RemoteError> {
        let Request { header, body } = req;
        match NodeMsg::read(&header, &body)? {
            NodeMsg::Hello(h) => hello_reply(&self.gossip.answer(&h)),
            NodeMsg::Leave(Leave { id, incarnation }) => {
                self.gossip.left(PeerId(id), incarnation);
                Ok(ack())
            }
            NodeMsg::Unicast => self.unicast(body, header),
            NodeMsg::Publish { topic } => Ok(self.publish(&topic, body, header)),
            NodeMsg::Deliver { group } => self.deliver(&group, body, header).await,
            NodeMsg::Call {
                service,
                call_id,
                priority,
                hops,
            } => {
                let svc = self.services.get(&service).ok_or_else(|| {
                    RemoteError::new(RemoteCode::NoSuchService, service.to_string())
                })?;
                svc.call(&service, call_id, priority, hops, body, header)
                    .await
            }
        }
    }

    fn unicast(&self, body: Bytes, mut header: Header) -> Result<Bytes, RemoteError> {
        // The receive span; the inbox's reader continues from it.
        let op = trace::incoming(trace::Op::Receive, &"inbox", &header);
        op.stamp(&mut header);
        self.local.deliver_direct(Direct {
            from: PeerId(header.source),
            body,
            header,
        })?;
        Ok(ack())
    }

    fn publish(&self, topic: &str, body: Bytes, mut header: Header) -> Bytes {
        // The receive span; subscribers continue from it.
        let op = trace::incoming(trace::Op::Receive, &topic, &header);
        op.stamp(&mut header);
        let n = self.local.deliver_published(Published {
            topic: topic.to_owned(),
            body,
            header,
        });
        delivered_reply(n)
    }

    async fn deliver(
        &self,
        group: &str,
        body: Bytes,
        header: Header,
    ) -> Result<Bytes, RemoteError> {
        let handler = self
            .local
            .group(group)
            .ok_or_else(|| RemoteError::new(RemoteCode::NotInGroup, group))?;
        // The group handler runs in the delivery's trace.
        let op = trace::incoming(trace::Op::Process, &group, &header);
        if let Err(e) = op.bind(handler(Request { body, header })).await {
            op.failed(&e.code);
            return Err(e);
        }
        Ok(ack())
    }
}
