//! Push/pull pipeline: each message goes to exactly one puller.
//!
//! # Guarantees
//! - **At most once**, in order per pusher and puller pair.
//! - Load is spread round-robin over the attached pullers; a puller with a
//!   full queue is skipped while another has room.
//! - A puller receives fairly from all its pushers (arrival order).
//!
//! # Full-queue policy: backpressure
//! When every puller's queue is full, [`Pusher::send`] waits. Over inproc
//! a pusher with no puller attached yet waits for one; over ipc/tcp a
//! connected pusher queues up to the `zeromq` socket's high-water mark
//! while its link is down and then waits, and a bind-only pusher with no
//! puller connected yet fails with [`SendError::NoPeer`].
//!
//! # Not guaranteed
//! Messages in flight on a connection that breaks are lost (counted as
//! `link_down`). At-least-once delivery (ack + retry + dedup) is layered
//! on top by the topology module.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use zeromq::{PullSocket, PushSocket, Socket};

use super::{Delivery, SocketBuilder};
use crate::endpoint::Endpoint;
use crate::error::{OpenError, RecvError, SendError};
use crate::telemetry;
use crate::transport::batch::Batcher;
use crate::transport::guard::SocketKind;
use crate::transport::inproc::{
    self, Family, InMsg, InprocRx, Registration, RoundRobin, SenderCore,
};
use crate::transport::{
    decode_received, open_inproc, open_zmq, zmq_recv, InprocRole, Zmq, ZmqSide,
};
use crate::wire::{self, ContentType, Envelope, Header, IdGen, Kind, Limits};

/// Sends typed messages to one of its pullers at a time.
#[derive(Debug)]
pub struct Pusher<T> {
    inner: PushInner,
    ids: IdGen,
    limits: Limits,
    endpoints: Vec<Endpoint>,
    _t: PhantomData<fn(&T)>,
}

#[derive(Debug)]
enum PushInner {
    Inproc {
        core: Arc<SenderCore>,
        _regs: Vec<Registration>,
    },
    Zmq {
        sock: Arc<Batcher<PushSocket>>,
        side: ZmqSide,
    },
}

/// Receives typed messages from its pushers.
#[derive(Debug)]
pub struct Puller<T> {
    inner: PullInner,
    pending: std::collections::VecDeque<Envelope>,
    limits: Limits,
    endpoints: Vec<Endpoint>,
    _t: PhantomData<fn() -> T>,
}

#[derive(Debug)]
enum PullInner {
    Inproc {
        rx: InprocRx,
        _regs: Vec<Registration>,
    },
    Zmq {
        sock: Zmq<PullSocket>,
        side: ZmqSide,
    },
}

impl SocketBuilder {
    /// Opens a pusher.
    pub async fn pusher<T: Serialize>(self) -> Result<Pusher<T>, OpenError> {
        let plan = self.plan()?;
        let (inner, endpoints) = if plan.inproc {
            let core = Arc::new(SenderCore::default());
            let (regs, eps) = open_inproc(&plan, Family::Pipeline, InprocRole::Sender(&core))?;
            (PushInner::Inproc { core, _regs: regs }, eps)
        } else {
            let mut sock = PushSocket::new();
            let (side, eps) = open_zmq(&mut sock, &plan, SocketKind::Push, &self.config).await?;
            (
                PushInner::Zmq {
                    sock: Batcher::new(sock, side.progress.clone(), self.config.queue_capacity),
                    side,
                },
                eps,
            )
        };
        Ok(Pusher {
            inner,
            ids: IdGen::new(),
            limits: self.config.limits,
            endpoints,
            _t: PhantomData,
        })
    }

    /// Opens a puller.
    pub async fn puller<T>(self) -> Result<Puller<T>, OpenError> {
        let plan = self.plan()?;
        let (inner, endpoints) = if plan.inproc {
            let (link, rx) = inproc::inbox(self.config.queue_capacity, None);
            let (regs, eps) = open_inproc(&plan, Family::Pipeline, InprocRole::Receiver(&link))?;
            (PullInner::Inproc { rx, _regs: regs }, eps)
        } else {
            let mut sock = PullSocket::new();
            let (side, eps) = open_zmq(&mut sock, &plan, SocketKind::Pull, &self.config).await?;
            (
                PullInner::Zmq {
                    sock: Zmq(sock),
                    side,
                },
                eps,
            )
        };
        Ok(Puller {
            inner,
            pending: Default::default(),
            limits: self.config.limits,
            endpoints,
            _t: PhantomData,
        })
    }
}

impl<T: Serialize> Pusher<T> {
    /// Binds a pusher to one endpoint with the default config.
    pub async fn bind(endpoint: &str) -> Result<Self, OpenError> {
        SocketBuilder::new().bind(endpoint).pusher().await
    }

    /// Connects a pusher to one endpoint with the default config.
    pub async fn connect(endpoint: &str) -> Result<Self, OpenError> {
        SocketBuilder::new().connect(endpoint).pusher().await
    }

    /// Sends `value` (MessagePack) to one puller.
    pub async fn send(&self, value: &T) -> Result<(), SendError> {
        let body = wire::encode_body(value)?;
        self.send_body(body, ContentType::MsgPack).await
    }

    /// Sends raw bytes (content type `Raw`) to one puller.
    pub async fn send_bytes(&self, body: Bytes) -> Result<(), SendError> {
        self.send_body(body, ContentType::Raw).await
    }

    async fn send_body(&self, body: Bytes, ct: ContentType) -> Result<(), SendError> {
        let id = self.ids.next_id();
        let mut header = Header::new(Kind::Event, id, self.ids.source(), id.0 as u64);
        header.content_type = ct;
        if body.len() + 64 > self.limits.max_message_size {
            return Err(SendError::TooLarge {
                size: body.len() + 64,
                limit: self.limits.max_message_size,
            });
        }
        match &self.inner {
            PushInner::Inproc { core, .. } => {
                let msg = InMsg {
                    topic: Bytes::new(),
                    env: Envelope { header, body },
                    reply: None,
                };
                match core.send_round_robin(msg, true).await {
                    RoundRobin::Sent => Ok(()),
                    RoundRobin::NoPeer => Err(SendError::NoPeer),
                }
            }
            PushInner::Zmq { sock, .. } => sock.send(wire::encode_header(&header), body).await,
        }
    }

    /// The endpoints this pusher bound (ports resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Waits until every connected endpoint's link is up.
    pub async fn wait_connected(&self) {
        if let PushInner::Zmq { side, .. } = &self.inner {
            side.wait_connected().await;
        }
    }
}

impl<T> Puller<T> {
    /// Binds a puller to one endpoint with the default config.
    pub async fn bind(endpoint: &str) -> Result<Self, OpenError> {
        SocketBuilder::new().bind(endpoint).puller().await
    }

    /// Connects a puller to one endpoint with the default config.
    pub async fn connect(endpoint: &str) -> Result<Self, OpenError> {
        SocketBuilder::new().connect(endpoint).puller().await
    }

    /// The endpoints this puller bound (ports resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Waits until every connected endpoint's link is up.
    pub async fn wait_connected(&self) {
        if let PullInner::Zmq { side, .. } = &self.inner {
            side.wait_connected().await;
        }
    }

    /// Receives the next message; waits as long as it takes.
    pub async fn recv(&mut self) -> Result<Delivery<T>, RecvError> {
        loop {
            if let Some(env) = self.pending.pop_front() {
                return Ok(Delivery::new(Bytes::new(), env, 0));
            }
            match &mut self.inner {
                PullInner::Inproc { rx, .. } => {
                    let m = rx.recv().await.ok_or(RecvError::Closed)?;
                    return Ok(Delivery::new(Bytes::new(), m.env, 0));
                }
                PullInner::Zmq { sock, .. } => {
                    let msg = zmq_recv(&mut **sock).await.ok_or(RecvError::Closed)?;
                    if let Some((_, envs)) = decode_received(msg, false, &self.limits, "puller") {
                        for env in envs {
                            if env.header.kind == Kind::Event {
                                self.pending.push_back(env);
                            } else {
                                telemetry::dropped(telemetry::DropReason::UnexpectedKind, 1);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Like [`recv`](Self::recv) with a time limit.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Delivery<T>, RecvError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| RecvError::Timeout(limit))?
    }
}
