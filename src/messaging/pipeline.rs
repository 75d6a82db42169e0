//! Push/pull pipeline: each message goes to exactly one puller.
//!
//! Guarantees: those of push/pull in the [`messaging`](super) docs
//! (§ Push/pull); this file implements the pattern's own rules on top of the
//! transport seam (`crate::transport::{Outbound, Inbound}`) and does no
//! I/O of its own.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use zeromq::{PullSocket, PushSocket};

use super::{Delivery, SocketBuilder};
use crate::endpoint::Endpoint;
use crate::error::{OpenError, RecvError, SendError};
use crate::telemetry;
use crate::trace;
use crate::transport::inproc::{Family, RoundRobin};
use crate::transport::zmtp::SocketKind;
use crate::transport::{open_socket, Inbound, Outbound};
use crate::wire::{self, ContentType, Envelope, Header, IdGen, Kind, Limits};

/// Sends typed messages to one of its pullers at a time.
#[derive(Debug)]
pub struct Pusher<T> {
    out: Outbound<PushSocket>,
    ids: IdGen,
    /// Inproc sends so far (ipc/tcp sends are counted by the batcher).
    inproc_sent: AtomicU64,
    limits: Limits,
    endpoints: Vec<Endpoint>,
    /// What its spans name as destination: the first endpoint given.
    dest: Arc<str>,
    sent: telemetry::Traffic,
    _t: PhantomData<fn(&T)>,
}

/// What a [`Pusher`] knows of its messages after [`Pusher::flush`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Messages sent (`send` returned `Ok`) in all.
    pub sent: u64,
    /// Of those, how many have left for a puller: written to a puller's
    /// connection (ipc/tcp) or put in its queue (inproc).
    pub written: u64,
    /// Of those, how many have not (still queued in this process; lost if
    /// it exits now). Over ipc/tcp this is estimated from bytes, since
    /// the socket's queue is not visible message by message.
    pub unsent: u64,
}

/// Receives typed messages from its pushers.
#[derive(Debug)]
pub struct Puller<T> {
    inbound: Inbound<PullSocket>,
    endpoints: Vec<Endpoint>,
    /// What its spans name as destination: the first endpoint given.
    dest: Arc<str>,
    received: telemetry::Traffic,
    _t: PhantomData<fn() -> T>,
}

impl SocketBuilder {
    /// Opens a pusher.
    pub async fn pusher<T: Serialize>(self) -> Result<Pusher<T>, OpenError> {
        let plan = self.plan()?;
        let dest = plan.name();
        let sent = telemetry::Traffic::sent("pipeline", plan.transport());
        let (out, endpoints) = if plan.inproc {
            Outbound::inproc(&plan, Family::Pipeline)?
        } else {
            let (sock, side, eps) = open_socket(&plan, SocketKind::Push, &self.config).await?;
            let out = Outbound::batched(sock, side, self.config.queue_capacity);
            (out, eps)
        };
        Ok(Pusher {
            out,
            ids: IdGen::new(),
            inproc_sent: AtomicU64::new(0),
            limits: self.config.limits,
            endpoints,
            dest,
            sent,
            _t: PhantomData,
        })
    }

    /// Opens a puller.
    pub async fn puller<T>(self) -> Result<Puller<T>, OpenError> {
        let plan = self.plan()?;
        let dest = plan.name();
        let received = telemetry::Traffic::received("pipeline", plan.transport());
        let (inbound, endpoints) = if plan.inproc {
            Inbound::inproc(&plan, Family::Pipeline, self.config.queue_capacity, None)?
        } else {
            let (sock, side, eps) = open_socket(&plan, SocketKind::Pull, &self.config).await?;
            let limits = self.config.limits;
            (
                Inbound::zmq(sock, side, false, false, limits, "puller"),
                eps,
            )
        };
        Ok(Puller {
            inbound,
            endpoints,
            dest,
            received,
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
        // Only a send made inside a trace is traced (it never starts one);
        // its span ends once the send is done.
        let _op = trace::in_trace().then(|| {
            let op = trace::outgoing(trace::Op::Send, &self.dest, false);
            op.stamp(&mut header);
            Box::new(op)
        });
        if body.len() + 64 > self.limits.max_message_size {
            return Err(SendError::TooLarge {
                size: body.len() + 64,
                limit: self.limits.max_message_size,
            });
        }
        let (header_len, body_len) = (header.encoded_len(), body.len());
        let env = Envelope { header, body };
        let r = match self.out.inproc_engine() {
            Some(core) => match core.send_one(env).await {
                RoundRobin::Sent => {
                    self.inproc_sent.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                RoundRobin::NoPeer => Err(SendError::NoPeer),
            },
            None => self.out.send_one(env, None).await,
        };
        if r.is_ok() {
            self.sent.count_len(header_len + body_len);
        }
        r
    }

    /// The endpoints this pusher bound (ports resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Waits until every connected endpoint's link is up.
    pub async fn wait_connected(&self) {
        self.out.wait_connected().await;
    }

    /// Waits, at most `limit`, until every message sent so far has left
    /// this process for a puller, and says how many have not (a linger:
    /// call it before dropping a pusher whose last messages matter).
    ///
    /// Push/pull has no acknowledgements: *written* means handed to a
    /// puller's connection. What a puller that dies takes with it (its
    /// unread queue, the kernel's socket buffers) is not known here; a
    /// connection that breaks mid-message is counted `link_down`.
    pub async fn flush(&self, limit: Duration) -> PushStats {
        match self.out.flush(limit).await {
            Some(f) => PushStats {
                sent: f.sent,
                written: f.sent - f.unsent,
                unsent: f.unsent,
            },
            None => {
                let sent = self.inproc_sent.load(Ordering::Relaxed);
                PushStats {
                    sent,
                    written: sent,
                    unsent: 0,
                }
            }
        }
    }

    /// Closes the pusher after a [`flush`](Self::flush) of at most
    /// `linger`; what is still unsent then is dropped and counted
    /// (`linger_expired`).
    pub async fn close(self, linger: Duration) -> PushStats {
        let stats = self.flush(linger).await;
        telemetry::dropped(telemetry::DropReason::LingerExpired, stats.unsent);
        stats
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
        self.inbound.wait_connected().await;
    }

    /// Receives the next message; waits as long as it takes.
    pub async fn recv(&mut self) -> Result<Delivery<T>, RecvError> {
        // Inproc pushers send only events. This path is one await and
        // nothing else, so its future stays small and the message is
        // moved as few times as possible (measured under callgrind,
        // docs/BENCH.md).
        if let Some(rx) = self.inbound.inproc_queue() {
            let mut m = rx.recv().await.ok_or(RecvError::Closed)?;
            self.received.count(&m.env.header, m.env.body.len());
            if m.env.header.traceparent.is_some() {
                received(&self.dest, &mut m.env.header);
            }
            return Ok(Delivery::new(Bytes::new(), m.env, 0));
        }
        self.recv_remote().await
    }

    /// The ipc/tcp receive path: a foreign peer may send other kinds,
    /// which are dropped and counted.
    async fn recv_remote(&mut self) -> Result<Delivery<T>, RecvError> {
        loop {
            let mut env = self.inbound.recv().await.ok_or(RecvError::Closed)?.env;
            if env.header.kind == Kind::Event {
                self.received.count(&env.header, env.body.len());
                if env.header.traceparent.is_some() {
                    received(&self.dest, &mut env.header);
                }
                return Ok(Delivery::new(Bytes::new(), env, 0));
            }
            telemetry::dropped(telemetry::DropReason::UnexpectedKind, 1);
        }
    }

    /// Like [`recv`](Self::recv) with a time limit.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Delivery<T>, RecvError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| RecvError::Timeout(limit))?
    }
}

/// The receive span of a traced message; the delivery's header then names
/// it, so that whoever continues the trace from the delivery is its child.
#[inline(never)]
fn received(dest: &Arc<str>, header: &mut Header) {
    trace::incoming(trace::Op::Receive, dest, header).stamp(header);
}
