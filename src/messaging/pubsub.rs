//! Publish/subscribe with topic-prefix filtering.
//!
//! # Guarantees
//! - **At most once**, in order per publisher and topic.
//! - Every message carries a per-(publisher, topic) sequence number; a
//!   subscriber detects gaps, reports them on the next message
//!   ([`Delivery::missed_before`]), in [`Subscriber::lost`] and in
//!   `zfabric_messages_lost_total`.
//! - Filtering happens at the publisher (a subscriber is sent only the
//!   topics it subscribed to by prefix).
//!
//! # Full-queue policy
//! A publisher never waits for a slow subscriber. Over inproc, a message
//! for a subscriber whose queue (`SocketConfig::queue_capacity`) is full is
//! dropped for that subscriber and counted (`subscriber_queue_full`); over
//! ipc/tcp the `zeromq` PUB socket drops silently when its per-subscriber
//! queue is full, and the subscriber's gap detection counts the loss. Use
//! push/pull where loss is not acceptable.
//!
//! # Not guaranteed
//! Messages published before a subscription reaches the publisher are not
//! delivered (the "slow joiner" of every pub/sub system).

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use zeromq::{PubSocket, Socket, SocketSend, SubSocket, ZmqMessage};

use super::{Delivery, GapTracker, SocketBuilder};
use crate::endpoint::Endpoint;
use crate::error::{OpenError, RecvError, SendError};
use crate::telemetry;
use crate::transport::guard::SocketKind;
use crate::transport::inproc::{self, Family, InMsg, InprocRx, Item, Registration, SenderCore};
use crate::transport::{
    decode_received, open_inproc, open_zmq, zmq_recv, InprocRole, LinkState, Zmq, ZmqSide,
};
use crate::wire::{self, ContentType, Envelope, Header, IdGen, Kind, Limits};

/// Sends typed messages to every subscriber whose prefix matches the topic.
#[derive(Debug)]
pub struct Publisher<T> {
    inner: PubInner,
    ids: IdGen,
    seqs: Mutex<HashMap<Bytes, u64>>,
    /// Inproc publishes so far (a turn is given to others every 64).
    published: std::sync::atomic::AtomicU64,
    limits: Limits,
    endpoints: Vec<Endpoint>,
    _t: PhantomData<fn(&T)>,
}

#[derive(Debug)]
enum PubInner {
    Inproc {
        core: Arc<SenderCore>,
        _regs: Vec<Registration>,
    },
    Zmq {
        sock: tokio::sync::Mutex<(Zmq<PubSocket>, u32)>,
        side: ZmqSide,
    },
}

impl SocketBuilder {
    /// Opens a publisher.
    pub async fn publisher<T: Serialize>(self) -> Result<Publisher<T>, OpenError> {
        let plan = self.plan()?;
        let (inner, endpoints) = if plan.inproc {
            let core = Arc::new(SenderCore::default());
            let (regs, eps) = open_inproc(&plan, Family::PubSub, InprocRole::Sender(&core))?;
            (PubInner::Inproc { core, _regs: regs }, eps)
        } else {
            let mut sock = PubSocket::new();
            let (side, eps) = open_zmq(&mut sock, &plan, SocketKind::Pub, &self.config).await?;
            (
                PubInner::Zmq {
                    sock: tokio::sync::Mutex::new((Zmq(sock), 0)),
                    side,
                },
                eps,
            )
        };
        Ok(Publisher {
            inner,
            ids: IdGen::new(),
            seqs: Mutex::new(HashMap::new()),
            published: std::sync::atomic::AtomicU64::new(0),
            limits: self.config.limits,
            endpoints,
            _t: PhantomData,
        })
    }

    /// Opens a subscriber with initial subscription prefixes (`""` matches
    /// every topic).
    pub async fn subscriber<T>(self, prefixes: &[&str]) -> Result<Subscriber<T>, OpenError> {
        let plan = self.plan()?;
        let subs = Arc::new(RwLock::new(Vec::new()));
        let inner = if plan.inproc {
            let (link, rx) = inproc::inbox(self.config.queue_capacity, Some(subs.clone()));
            let (regs, eps) = open_inproc(&plan, Family::PubSub, InprocRole::Receiver(&link))?;
            (SubInner::Inproc { rx, _regs: regs }, eps)
        } else {
            let mut sock = SubSocket::new();
            let (side, eps) = open_zmq(&mut sock, &plan, SocketKind::Sub, &self.config).await?;
            (
                SubInner::Zmq {
                    sock: Zmq(sock),
                    side,
                },
                eps,
            )
        };
        let mut s = Subscriber {
            inner: inner.0,
            subs,
            pending: VecDeque::new(),
            gaps: GapTracker::default(),
            lost: 0,
            limits: self.config.limits,
            endpoints: inner.1,
            _t: PhantomData,
        };
        for p in prefixes {
            s.subscribe(p).await;
        }
        Ok(s)
    }
}

impl<T: Serialize> Publisher<T> {
    /// Binds a publisher to one endpoint with the default config.
    pub async fn bind(endpoint: &str) -> Result<Self, OpenError> {
        SocketBuilder::new().bind(endpoint).publisher().await
    }

    /// Connects a publisher to one endpoint with the default config.
    pub async fn connect(endpoint: &str) -> Result<Self, OpenError> {
        SocketBuilder::new().connect(endpoint).publisher().await
    }

    /// Publishes `value` (MessagePack) on `topic`.
    pub async fn publish(&self, topic: &str, value: &T) -> Result<(), SendError> {
        let body = wire::encode_body(value)?;
        self.publish_body(topic.as_bytes(), body, ContentType::MsgPack)
            .await
    }

    /// Publishes raw bytes on `topic` (content type `Raw`).
    pub async fn publish_bytes(&self, topic: &[u8], body: Bytes) -> Result<(), SendError> {
        self.publish_body(topic, body, ContentType::Raw).await
    }

    async fn publish_body(
        &self,
        topic: &[u8],
        body: Bytes,
        ct: ContentType,
    ) -> Result<(), SendError> {
        let size = topic.len() + body.len() + 64;
        if size > self.limits.max_message_size {
            return Err(SendError::TooLarge {
                size,
                limit: self.limits.max_message_size,
            });
        }
        // The sequence number is taken while holding what orders the
        // sends (the topic table for inproc, the socket for ipc/tcp), so
        // concurrent publishers never put a topic's numbers out of order.
        let header = |seqs: &mut HashMap<Bytes, u64>| {
            let seq = match seqs.get_mut(topic) {
                Some(s) => {
                    *s += 1;
                    *s
                }
                None => {
                    seqs.insert(Bytes::copy_from_slice(topic), 0);
                    0
                }
            };
            let mut header = Header::new(Kind::Event, self.ids.next_id(), self.ids.source(), seq);
            header.content_type = ct;
            header
        };
        match &self.inner {
            PubInner::Inproc { core, .. } => {
                // The guards live in this block only: the future stays Send.
                let closed = {
                    let mut seqs = self.seqs.lock().map_err(|_| SendError::Closed)?;
                    let header = header(&mut seqs);
                    let topic = Bytes::copy_from_slice(topic);
                    let env = Envelope { header, body };
                    let mut closed = false;
                    let links = core.links.read().map_err(|_| SendError::Closed)?;
                    for link in links.iter() {
                        if !link.matches(&topic) {
                            continue;
                        }
                        let msg = InMsg {
                            topic: topic.clone(),
                            env: env.clone(),
                            reply: None,
                        };
                        match link.tx.try_send(Item::One(msg)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                telemetry::dropped(telemetry::DropReason::SubscriberQueueFull, 1)
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
                        }
                    }
                    closed
                };
                if closed {
                    core.prune();
                }
                // An inproc publish never waits; give subscribers on the
                // same runtime a turn now and then so that a burst does
                // not overrun their queues before they can run.
                let n = self
                    .published
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n % 64 == 63 {
                    tokio::task::yield_now().await;
                }
                Ok(())
            }
            PubInner::Zmq { sock, .. } => {
                let mut guard = sock.lock().await;
                let header = {
                    let mut seqs = self.seqs.lock().map_err(|_| SendError::Closed)?;
                    header(&mut seqs)
                };
                let frames = vec![
                    Bytes::copy_from_slice(topic),
                    wire::encode_header(&header),
                    body,
                ];
                let msg = ZmqMessage::try_from(frames).map_err(|_| SendError::Closed)?;
                guard
                    .0
                    .send(msg)
                    .await
                    .map_err(|e| SendError::Zmq(e.to_string()))?;
                // `PubSocket::send` never yields; give the writer tasks a
                // turn now and then so a burst does not fill the queues
                // before anything is written.
                guard.1 = guard.1.wrapping_add(1);
                if guard.1.is_multiple_of(64) {
                    drop(guard);
                    tokio::task::yield_now().await;
                }
                Ok(())
            }
        }
    }

    /// The endpoints this publisher bound (ports resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Waits until every connected endpoint's link is up (returns at once
    /// for bind-only and inproc publishers).
    pub async fn wait_connected(&self) {
        if let PubInner::Zmq { side, .. } = &self.inner {
            side.wait_connected().await;
        }
    }

    /// The state of each outgoing link (empty for inproc).
    pub fn link_states(&self) -> Vec<(Endpoint, LinkState)> {
        match &self.inner {
            PubInner::Zmq { side, .. } => side.link_states(),
            PubInner::Inproc { .. } => Vec::new(),
        }
    }
}

/// Receives typed messages on subscribed topic prefixes.
#[derive(Debug)]
pub struct Subscriber<T> {
    inner: SubInner,
    subs: Arc<RwLock<Vec<Bytes>>>,
    pending: VecDeque<Delivery<T>>,
    gaps: GapTracker,
    lost: u64,
    limits: Limits,
    endpoints: Vec<Endpoint>,
    _t: PhantomData<fn() -> T>,
}

#[derive(Debug)]
enum SubInner {
    Inproc {
        rx: InprocRx,
        _regs: Vec<Registration>,
    },
    Zmq {
        sock: Zmq<SubSocket>,
        side: ZmqSide,
    },
}

impl<T> Subscriber<T> {
    /// Binds a subscriber to one endpoint with the default config.
    pub async fn bind(endpoint: &str, prefixes: &[&str]) -> Result<Self, OpenError> {
        SocketBuilder::new()
            .bind(endpoint)
            .subscriber(prefixes)
            .await
    }

    /// Connects a subscriber to one endpoint with the default config.
    pub async fn connect(endpoint: &str, prefixes: &[&str]) -> Result<Self, OpenError> {
        SocketBuilder::new()
            .connect(endpoint)
            .subscriber(prefixes)
            .await
    }

    /// Adds a topic prefix.
    pub async fn subscribe(&mut self, prefix: &str) {
        if let Ok(mut s) = self.subs.write() {
            s.push(Bytes::copy_from_slice(prefix.as_bytes()));
        }
        if let SubInner::Zmq { sock, .. } = &mut self.inner {
            // Only fails when the socket is closed, which recv reports.
            let _ = sock.subscribe(prefix).await;
        }
    }

    /// Removes one subscription to `prefix`.
    pub async fn unsubscribe(&mut self, prefix: &str) {
        if let Ok(mut s) = self.subs.write() {
            if let Some(i) = s.iter().position(|p| p == prefix.as_bytes()) {
                s.remove(i);
            }
        }
        self.gaps.forget(prefix.as_bytes());
        if let SubInner::Zmq { sock, .. } = &mut self.inner {
            let _ = sock.unsubscribe(prefix).await;
        }
    }

    /// Messages known to be lost so far (sum of all sequence gaps).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The endpoints this subscriber bound.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Waits until every connected endpoint's link is up.
    pub async fn wait_connected(&self) {
        if let SubInner::Zmq { side, .. } = &self.inner {
            side.wait_connected().await;
        }
    }

    /// Receives the next message. Waits as long as it takes; while a link
    /// is down it waits for the reconnect.
    pub async fn recv(&mut self) -> Result<Delivery<T>, RecvError> {
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Ok(d);
            }
            match &mut self.inner {
                SubInner::Inproc { rx, .. } => {
                    let m = rx.recv().await.ok_or(RecvError::Closed)?;
                    self.accept(m.topic, m.env);
                }
                SubInner::Zmq { sock, .. } => {
                    let msg = zmq_recv(&mut **sock).await.ok_or(RecvError::Closed)?;
                    if let Some((topic, envs)) =
                        decode_received(msg, true, &self.limits, "subscriber")
                    {
                        for env in envs {
                            self.accept(topic.clone(), env);
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

    fn accept(&mut self, topic: Bytes, env: Envelope) {
        if env.header.kind != Kind::Event {
            telemetry::dropped(telemetry::DropReason::UnexpectedKind, 1);
            return;
        }
        let gap = self.gaps.observe(env.header.source, &topic, env.header.seq);
        if gap > 0 {
            self.lost += gap;
            telemetry::lost(gap);
        }
        self.pending.push_back(Delivery::new(topic, env, gap));
    }
}
