//! Publish/subscribe with topic-prefix filtering.
//!
//! Guarantees: those of publish/subscribe in the [`messaging`](super) docs
//! (§ Publish/subscribe); this file implements the pattern's own rules on top of the
//! transport seam (`crate::transport::{Outbound, Inbound}`) and does no
//! I/O of its own.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use zeromq::{PubSocket, SubSocket};

use super::{Delivery, GapTracker, SocketBuilder};
use crate::endpoint::Endpoint;
use crate::error::{OpenError, RecvError, SendError};
use crate::telemetry;
use crate::trace;
use crate::transport::batch::FanBatcher;
use crate::transport::fanout::{Audience, PublishStats};
use crate::transport::inproc::Family;
use crate::transport::zmtp::SocketKind;
use crate::transport::{open_socket, Inbound, LinkState, Outbound, ZmqSide};
use crate::wire::{self, ContentType, Envelope, Header, IdGen, Kind};

/// How long [`Publisher::wait_subscribers`] waits after the last
/// subscription it needed was seen, for the socket to apply it.
const SUBSCRIPTION_SETTLE: Duration = Duration::from_millis(5);

/// Sends typed messages to every subscriber whose prefix matches the topic.
#[derive(Debug)]
pub struct Publisher<T> {
    out: Out,
    ids: IdGen,
    /// The next sequence number per topic; also what orders a topic's sends.
    seqs: Mutex<HashMap<Bytes, u64>>,
    limits: crate::wire::Limits,
    endpoints: Vec<Endpoint>,
    /// Publications made, counted once each (not per subscriber).
    sent: telemetry::Traffic,
    _t: PhantomData<fn(&T)>,
}

/// A publisher's sending side: the inproc engine's fan-out, or a `zeromq`
/// PUB socket behind the adaptive batcher (runs under one topic leave as
/// one message once the relays fall behind).
#[derive(Debug)]
enum Out {
    Inproc(Outbound<PubSocket>, Audience),
    Zmq {
        send: Arc<FanBatcher<PubSocket>>,
        side: ZmqSide,
    },
}

impl SocketBuilder {
    /// Opens a publisher.
    pub async fn publisher<T: Serialize>(self) -> Result<Publisher<T>, OpenError> {
        let plan = self.plan()?;
        let sent = telemetry::Traffic::sent("pubsub", plan.transport());
        let (out, endpoints) = if plan.inproc {
            let (out, eps) = Outbound::inproc(&plan, Family::PubSub)?;
            (Out::Inproc(out, Audience::default()), eps)
        } else {
            let (sock, side, eps) = open_socket(&plan, SocketKind::Pub, &self.config).await?;
            let send = FanBatcher::new(sock, side.progress.clone(), self.config.queue_capacity);
            (Out::Zmq { send, side }, eps)
        };
        Ok(Publisher {
            out,
            ids: IdGen::new(),
            seqs: Mutex::new(HashMap::new()),
            limits: self.config.limits,
            endpoints,
            sent,
            _t: PhantomData,
        })
    }

    /// Opens a subscriber with initial subscription prefixes (`""` matches
    /// every topic).
    pub async fn subscriber<T>(self, prefixes: &[&str]) -> Result<Subscriber<T>, OpenError> {
        let plan = self.plan()?;
        let received = telemetry::Traffic::received("pubsub", plan.transport());
        let subs = Arc::new(RwLock::new(Vec::new()));
        let (inbound, endpoints) = if plan.inproc {
            let cap = self.config.queue_capacity;
            Inbound::inproc(&plan, Family::PubSub, cap, Some(subs.clone()))?
        } else {
            let (sock, side, eps) = open_socket(&plan, SocketKind::Sub, &self.config).await?;
            let limits = self.config.limits;
            (
                Inbound::zmq(sock, side, true, false, limits, "subscriber"),
                eps,
            )
        };
        let mut s = Subscriber {
            inbound,
            subs,
            gaps: GapTracker::default(),
            lost: 0,
            endpoints,
            received,
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
        // Only a publish made inside a trace is traced (it never starts
        // one): outside, this is one task-local look-up, and the traced
        // path (boxed) adds nothing to this future.
        if trace::in_trace() {
            return Box::pin(async {
                let op = trace::outgoing(trace::Op::Publish, &TopicName(topic), false);
                self.send(topic, body, ct, Some(&op)).await
            })
            .await;
        }
        self.send(topic, body, ct, None).await
    }

    async fn send(
        &self,
        topic: &[u8],
        body: Bytes,
        ct: ContentType,
        op: Option<&trace::Traced>,
    ) -> Result<(), SendError> {
        let body_len = body.len();
        // The sequence number is taken while the transport holds what
        // orders the sends, so concurrent publishers never put a topic's
        // numbers out of order.
        let stamp = |seqs: &mut HashMap<Bytes, u64>| {
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
            if let Some(op) = op {
                op.stamp(&mut header);
            }
            self.sent.count(&header, body_len);
            header
        };
        match &self.out {
            Out::Inproc(out, audience) => {
                out.fan_out(topic, body, &self.seqs, stamp, audience).await
            }
            Out::Zmq { send, .. } => send.publish(topic, body, &self.seqs, stamp).await,
        }
    }

    fn audience(&self) -> &Audience {
        match &self.out {
            Out::Inproc(_, audience) => audience,
            Out::Zmq { side, .. } => &side.progress.audience,
        }
    }

    /// Where this publisher's publications went so far: made, owed to
    /// subscribers, written to their connections, dropped (by reason), and
    /// what is not known yet ([`PublishStats::unaccounted`]). Pub/sub has
    /// no acknowledgements: *written* means handed to the subscriber's
    /// connection (ipc/tcp) or queue (inproc), not processed.
    pub fn stats(&self) -> PublishStats {
        let mut stats = self.audience().stats();
        if let Out::Inproc(out, _) = &self.out {
            stats.subscribers = out.receivers();
        }
        stats
    }

    /// Subscriber connections subscribed to something now (inproc: the
    /// subscribers attached).
    pub fn subscribers(&self) -> usize {
        self.stats().subscribers
    }

    /// Waits until at least `n` subscribers are subscribed: pub/sub
    /// delivers only to subscriptions that exist when a message is
    /// published, so a publisher that must not lose its first messages
    /// waits here first (bound it with a timeout).
    pub async fn wait_subscribers(&self, n: usize) {
        match &self.out {
            Out::Inproc(out, _) => out.wait_receivers(n).await,
            Out::Zmq { side, .. } => {
                side.progress
                    .audience
                    .wait_for(|s| s.subscribers >= n)
                    .await;
                // The relay sees a subscription a moment before the
                // `zeromq` socket applies it (transport::fanout docs):
                // give the socket that moment. Not a guarantee under a
                // starved runtime, which shows as `unaccounted`.
                tokio::time::sleep(SUBSCRIPTION_SETTLE).await;
            }
        }
    }

    /// Sends what is queued for batching and waits, at most `limit`, until
    /// every delivery owed so far is accounted for: written to its
    /// subscriber's connection or dropped (counted). Returns the stats at
    /// that point; [`PublishStats::unaccounted`] is what was still on its
    /// way when `limit` ran out (lost if the process exits now). Call it
    /// before dropping a publisher whose last messages matter.
    pub async fn flush(&self, limit: Duration) -> PublishStats {
        if let Out::Zmq { send, .. } = &self.out {
            let _ = send.send_queued().await;
        }
        let settled = self.audience().wait_for(|s| s.unaccounted() == 0);
        let _ = tokio::time::timeout(limit, settled).await;
        self.stats()
    }

    /// Closes the publisher after a [`flush`](Self::flush) of at most
    /// `linger`; deliveries still unaccounted then are counted as dropped
    /// (`linger_expired`).
    pub async fn close(self, linger: Duration) -> PublishStats {
        let stats = self.flush(linger).await;
        telemetry::dropped(telemetry::DropReason::LingerExpired, stats.unaccounted());
        stats
    }

    /// The endpoints this publisher bound (ports resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Waits until every connected endpoint's link is up (returns at once
    /// for bind-only and inproc publishers).
    pub async fn wait_connected(&self) {
        match &self.out {
            Out::Inproc(out, _) => out.wait_connected().await,
            Out::Zmq { side, .. } => side.wait_connected().await,
        }
    }

    /// The state of each outgoing link (empty for inproc).
    pub fn link_states(&self) -> Vec<(Endpoint, LinkState)> {
        match &self.out {
            Out::Inproc(out, _) => out.link_states(),
            Out::Zmq { side, .. } => side.link_states(),
        }
    }
}

/// Receives typed messages on subscribed topic prefixes.
#[derive(Debug)]
pub struct Subscriber<T> {
    inbound: Inbound<SubSocket>,
    subs: Arc<RwLock<Vec<Bytes>>>,
    gaps: GapTracker,
    lost: u64,
    endpoints: Vec<Endpoint>,
    /// Messages handed to the application.
    received: telemetry::Traffic,
    _t: PhantomData<fn() -> T>,
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
        if let Some(sock) = self.inbound.zmq_socket() {
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
        if let Some(sock) = self.inbound.zmq_socket() {
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
        self.inbound.wait_connected().await;
    }

    /// Receives the next message. Waits as long as it takes; while a link
    /// is down it waits for the reconnect.
    pub async fn recv(&mut self) -> Result<Delivery<T>, RecvError> {
        loop {
            let a = self.inbound.recv().await.ok_or(RecvError::Closed)?;
            if let Some(d) = self.accept(a.prefix, a.env) {
                return Ok(d);
            }
        }
    }

    /// Like [`recv`](Self::recv) with a time limit.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Delivery<T>, RecvError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| RecvError::Timeout(limit))?
    }

    /// Applies the pattern's rules: events only, sequence gaps counted.
    fn accept(&mut self, topic: Bytes, env: Envelope) -> Option<Delivery<T>> {
        if env.header.kind != Kind::Event {
            telemetry::dropped(telemetry::DropReason::UnexpectedKind, 1);
            return None;
        }
        let gap = self.gaps.observe(env.header.source, &topic, env.header.seq);
        if gap > 0 {
            self.lost += gap;
            telemetry::lost(gap);
        }
        self.received.count(&env.header, env.body.len());
        let mut env = env;
        if env.header.traceparent.is_some() {
            received(&topic, &mut env.header);
        }
        Some(Delivery::new(topic, env, gap))
    }
}

/// The receive span of a traced message; the delivery's header then names
/// it, so that whoever continues the trace from the delivery is its child.
#[inline(never)]
fn received(topic: &[u8], header: &mut Header) {
    trace::incoming(trace::Op::Receive, &TopicName(topic), header).stamp(header);
}

/// A topic as a span names it.
struct TopicName<'a>(&'a [u8]);

impl std::fmt::Display for TopicName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}
