//! Adaptive batching in front of a `zeromq` send socket.
//!
//! The guard relays count the bytes they take off the socket
//! ([`Progress`]), so the sender knows how much the `zeromq` socket still
//! holds (its *backlog*). While the backlog is small, a send goes straight
//! to the socket: no extra task, no added latency. Once it exceeds
//! [`BACKLOG_LIMIT`], sends are queued (up to the high-water mark) and a
//! flusher task sends whatever has accumulated as **one** ZeroMQ message of
//! several `header, body` pairs each time the backlog drains. Batches grow
//! with the load and vanish when it stops.
//!
//! Policy when the queue is full: the sender waits (backpressure). A queued
//! message that can no longer be sent (no peer left) is counted as dropped
//! (`no_peer`).
//!
//! [`FanBatcher`] does the same for a `zeromq` PUB socket: runs of messages
//! under one topic leave as one ZeroMQ message `topic, header, body,
//! header, body, ...`, which every subscriber's inbound side already hands
//! out one envelope at a time. A publisher never waits for a subscriber:
//! when its queue is full it sends the queue itself instead of waiting for
//! the flusher. Order is kept: headers are stamped and queued under one
//! lock, and whoever holds the socket sends the queue from its front.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use zeromq::{SocketSend, ZmqMessage};

use super::Zmq;
use crate::error::SendError;
use crate::telemetry;
use crate::wire::{self, Header};

/// Bytes the `zeromq` socket may hold before sends start to batch.
pub(crate) const BACKLOG_LIMIT: u64 = 8 * 1024;
/// In batch mode, the next batch goes out once the backlog is below this,
/// so the relay always has work queued while the next batch accumulates.
const REFILL_BELOW: u64 = 64 * 1024;
/// Most envelopes in one batch.
const MAX_BATCH: usize = 1024;
/// Most bytes in one batch.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Longest a flusher waits for the backlog to drain before sending anyway
/// (and re-basing its estimate, e.g. after a peer vanished with queued
/// bytes).
const DRAIN_WAIT: Duration = Duration::from_millis(1);

/// Bytes the guard relays have taken off one `zeromq` socket.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    relayed: AtomicU64,
    waiting: AtomicBool,
    notify: Notify,
    /// Relays that carry this socket's bytes to a peer (a PUB socket's
    /// bytes are relayed once per subscriber).
    peers: AtomicU64,
    /// A PUB socket's subscribers and where its publications went.
    pub(crate) audience: super::fanout::Audience,
}

/// One relay counted in [`Progress`] while it lives.
#[derive(Debug)]
pub(crate) struct Peer(Arc<Progress>);

impl Drop for Peer {
    fn drop(&mut self) {
        self.0.peers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Progress {
    /// Counts one relay carrying the socket's bytes to a peer until the
    /// returned guard is dropped.
    pub(crate) fn peer(self: &Arc<Self>) -> Peer {
        self.peers.fetch_add(1, Ordering::Relaxed);
        Peer(self.clone())
    }

    /// Counts `n` relays for the life of the socket (its outgoing links).
    pub(crate) fn add_peers(&self, n: usize) {
        self.peers.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Called by a relay after reading `n` bytes from the socket.
    pub(crate) fn relayed(&self, n: usize) {
        self.relayed.fetch_add(n as u64, Ordering::Relaxed);
        if self.waiting.load(Ordering::Relaxed) {
            self.notify.notify_waiters();
        }
    }

    /// Waits until the relays have taken `target` bytes in all (a socket's
    /// linger: everything handed to it has left for the network).
    pub(crate) async fn wait_relayed(&self, target: u64) {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            self.waiting.store(true, Ordering::Relaxed);
            if self.relayed.load(Ordering::Relaxed) >= target {
                return;
            }
            n.await;
        }
    }
}

/// Wire size of a frame of `len` bytes (ZMTP header included).
pub(crate) fn wire_len(len: usize) -> u64 {
    (len + if len > 255 { 9 } else { 2 }) as u64
}

/// What a `zeromq` send socket still holds: bytes handed to it against
/// bytes its relays took.
#[derive(Debug)]
struct Backlog {
    handed: AtomicU64,
    progress: Arc<Progress>,
}

impl Backlog {
    fn new(progress: Arc<Progress>) -> Self {
        Backlog {
            handed: AtomicU64::new(0),
            progress,
        }
    }

    fn get(&self) -> u64 {
        self.handed
            .load(Ordering::Relaxed)
            .saturating_sub(self.progress.relayed.load(Ordering::Relaxed))
    }

    fn hand(&self, wire: u64) {
        self.handed.fetch_add(wire, Ordering::Relaxed);
    }

    /// Waits until the backlog is below [`REFILL_BELOW`], or
    /// [`DRAIN_WAIT`] at most.
    async fn wait_for_drain(&self) {
        if self.get() <= REFILL_BELOW {
            return;
        }
        self.progress.waiting.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
        loop {
            let drained = self.progress.notify.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.get() <= REFILL_BELOW {
                break;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                // The estimate may have drifted (bytes dropped with a
                // vanished peer): start counting afresh.
                self.handed.store(
                    self.progress.relayed.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                break;
            }
        }
        self.progress.waiting.store(false, Ordering::Relaxed);
    }
}

/// A `zeromq` send socket with adaptive batching.
pub(crate) struct Batcher<S> {
    sock: tokio::sync::Mutex<Zmq<S>>,
    pending: Mutex<Pending>,
    backlog: Backlog,
    space: Notify,
    hwm: usize,
    /// Envelopes and their wire bytes handed to the socket in all (never
    /// re-based, unlike the backlog estimate): what a flush waits for.
    sent: AtomicU64,
    sent_bytes: AtomicU64,
}

/// What a [`Batcher::linger`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Envelopes sent in all.
    pub(crate) sent: u64,
    /// Of those, not yet taken off the socket by a relay (an estimate
    /// from their bytes: envelopes of one sender are of any size), plus
    /// any still queued for a batch.
    pub(crate) unsent: u64,
}

impl<S> std::fmt::Debug for Batcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("socket", &self.sock)
            .field("backlog", &self.backlog.get())
            .field("hwm", &self.hwm)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Pending {
    entries: VecDeque<(Bytes, Bytes)>,
    flusher: bool,
}

fn send_error(e: zeromq::ZmqError) -> SendError {
    match e {
        zeromq::ZmqError::ReturnToSender { .. } => SendError::NoPeer,
        other => SendError::Zmq(other.to_string()),
    }
}

impl<S: SocketSend + Send + 'static> Batcher<S> {
    pub(crate) fn new(sock: S, progress: Arc<Progress>, hwm: usize) -> Arc<Self> {
        Arc::new(Batcher {
            sock: tokio::sync::Mutex::new(Zmq(sock)),
            pending: Mutex::new(Pending::default()),
            backlog: Backlog::new(progress),
            space: Notify::new(),
            hwm: hwm.max(1),
            sent: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
        })
    }

    /// Waits, at most `limit`, until every envelope sent so far has been
    /// taken off the socket by a relay (written on to a peer, or read by a
    /// link whose remote is up).
    pub(crate) async fn linger(&self, limit: Duration) -> Flushed {
        let drained = async {
            loop {
                let idle = self
                    .pending
                    .lock()
                    .map_or(true, |p| !p.flusher && p.entries.is_empty());
                if idle {
                    break;
                }
                let space = self.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                // The flusher may have taken the last batch already.
                if self
                    .pending
                    .lock()
                    .map_or(true, |p| !p.flusher && p.entries.is_empty())
                {
                    break;
                }
                let _ = tokio::time::timeout(DRAIN_WAIT, space).await;
            }
            // Re-checked now and then: the batching path may clear the
            // relays' wake-up flag meanwhile.
            let target = self.sent_bytes.load(Ordering::Relaxed);
            while self.backlog.progress.relayed.load(Ordering::Relaxed) < target {
                let wait = self.backlog.progress.wait_relayed(target);
                let _ = tokio::time::timeout(DRAIN_WAIT * 10, wait).await;
            }
        };
        let _ = tokio::time::timeout(limit, drained).await;
        let queued = self.pending.lock().map_or(0, |p| p.entries.len() as u64);
        let sent = self.sent.load(Ordering::Relaxed);
        let bytes = self.sent_bytes.load(Ordering::Relaxed);
        let behind = bytes.saturating_sub(self.backlog.progress.relayed.load(Ordering::Relaxed));
        let unsent_sent = if bytes == 0 {
            0
        } else {
            (behind as u128 * sent as u128).div_ceil(bytes as u128) as u64
        };
        Flushed {
            sent: sent + queued,
            unsent: (unsent_sent + queued).min(sent + queued),
        }
    }

    /// Sends one envelope: at once when the socket keeps up, otherwise as
    /// part of the next batch.
    pub(crate) async fn send(
        self: &Arc<Self>,
        header: Bytes,
        body: Bytes,
    ) -> Result<(), SendError> {
        let mut entry = Some((header, body));
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            {
                let mut p = self.pending.lock().map_err(|_| SendError::Closed)?;
                if !p.flusher && self.backlog.get() <= BACKLOG_LIMIT {
                    break;
                }
                if p.entries.len() < self.hwm {
                    if let Some(e) = entry.take() {
                        p.entries.push_back(e);
                    }
                    if !p.flusher {
                        p.flusher = true;
                        tokio::spawn(self.clone().flush());
                    }
                    return Ok(());
                }
                // Queue full: wait for the flusher to take a batch.
                space.as_mut().enable();
            }
            space.await;
        }
        let Some((header, body)) = entry else {
            return Ok(());
        };
        let wire = wire_len(header.len()) + wire_len(body.len());
        self.backlog.hand(wire);
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(wire, Ordering::Relaxed);
        let msg = ZmqMessage::try_from(vec![header, body]).map_err(|_| SendError::Closed)?;
        self.sock.lock().await.send(msg).await.map_err(send_error)
    }

    async fn flush(self: Arc<Self>) {
        loop {
            self.backlog.wait_for_drain().await;
            let idle = self
                .pending
                .lock()
                .map(|p| p.entries.is_empty())
                .unwrap_or(true);
            if idle {
                // Under load the producer may just not have run yet: give
                // it one turn before leaving batch mode.
                tokio::task::yield_now().await;
            }
            let batch: Vec<(Bytes, Bytes)> = {
                let Ok(mut p) = self.pending.lock() else {
                    return;
                };
                if p.entries.is_empty() {
                    p.flusher = false;
                    return;
                }
                let mut bytes = 0;
                let mut n = 0;
                for (h, b) in p.entries.iter() {
                    if n == MAX_BATCH || (n > 0 && bytes + h.len() + b.len() > MAX_BATCH_BYTES) {
                        break;
                    }
                    bytes += h.len() + b.len();
                    n += 1;
                }
                p.entries.drain(..n).collect()
            };
            self.space.notify_waiters();
            let count = batch.len() as u64;
            let mut frames = Vec::with_capacity(batch.len() * 2);
            let mut wire = 0;
            for (h, b) in batch {
                wire += wire_len(h.len()) + wire_len(b.len());
                frames.push(h);
                frames.push(b);
            }
            self.backlog.hand(wire);
            self.sent.fetch_add(count, Ordering::Relaxed);
            self.sent_bytes.fetch_add(wire, Ordering::Relaxed);
            let Ok(msg) = ZmqMessage::try_from(frames) else {
                continue;
            };
            if let Err(e) = self.sock.lock().await.send(msg).await {
                tracing::debug!(error = %e, "dropping a queued batch");
                telemetry::dropped(telemetry::DropReason::NoPeer, count);
            }
        }
    }
}

/// One queued publication: its routing prefix and its two frames.
#[derive(Debug)]
struct Publication {
    topic: Bytes,
    header: Bytes,
    body: Bytes,
}

#[derive(Debug, Default)]
struct FanPending {
    entries: VecDeque<Publication>,
    flusher: bool,
    /// The last topic queued, shared by the next publication on it.
    last_topic: Bytes,
    /// Publications so far (a turn is given to others every 64).
    published: u64,
    /// When the last publication was queued, and how many in a row came
    /// less than [`BURST_GAP`] apart.
    last_at: Option<std::time::Instant>,
    streak: u32,
}

/// Publications closer together than this are a burst...
const BURST_GAP: Duration = Duration::from_micros(20);
/// ...and this many in a row start batch mode for a PUB socket, whatever
/// its backlog: a subscriber behind a network hop falls behind long
/// before the publisher's own relay does (the kernel buffers in between
/// hold megabytes), so the backlog alone would start batching too late.
const BURST_STREAK: u32 = 64;
/// In batch mode a PUB flusher gives the publisher up to this many turns
/// to queue [`FILL_TO`] publications before it sends what is queued.
const FILL_TURNS: usize = 32;
const FILL_TO: usize = 64;

/// One ZeroMQ message of a run of publications under one topic.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    /// `topic, header, body, header, body, ...`
    frames: Vec<Bytes>,
    /// Its bytes on the wire.
    wire: u64,
    /// Publications in it.
    count: u64,
}

/// Splits queued publications, in order, into runs under one topic of at
/// most [`MAX_BATCH`] publications and [`MAX_BATCH_BYTES`] (one at least).
fn runs(entries: impl IntoIterator<Item = Publication>) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut bytes = 0;
    for p in entries {
        let size = p.header.len() + p.body.len();
        let joins = out.last().is_some_and(|r| {
            r.frames[0] == p.topic
                && (r.count as usize) < MAX_BATCH
                && bytes + size <= MAX_BATCH_BYTES
        });
        if !joins {
            bytes = 0;
            out.push(Run {
                wire: wire_len(p.topic.len()),
                frames: vec![p.topic],
                count: 0,
            });
        }
        if let Some(r) = out.last_mut() {
            bytes += size;
            r.wire += wire_len(p.header.len()) + wire_len(p.body.len());
            r.count += 1;
            r.frames.push(p.header);
            r.frames.push(p.body);
        }
    }
    out
}

/// A `zeromq` PUB socket with adaptive batching: an idle or moderate
/// publisher's publications leave at once; after [`BURST_STREAK`]
/// publications less than [`BURST_GAP`] apart, or once the backlog exceeds
/// [`BACKLOG_LIMIT`], publications queue (up to `cap`) and leave in runs
/// under one topic, as one ZeroMQ message per run. Batch mode ends when
/// the flusher finds the queue empty.
///
/// Policy when the queue is full: the publisher sends the queue itself
/// (it never waits for the flusher or for a subscriber; a `zeromq` PUB
/// send does not wait either: it drops silently for a subscriber whose
/// own queue is full, which the subscriber's gap detection counts).
/// With several subscribers the backlog is estimated per subscriber (the
/// relays' bytes divided among them); a subscriber whose subscriptions
/// match nothing makes batching start early, which costs no delivery.
pub(crate) struct FanBatcher<S> {
    sock: tokio::sync::Mutex<Zmq<S>>,
    pending: Mutex<FanPending>,
    backlog: Backlog,
    cap: usize,
}

impl<S> std::fmt::Debug for FanBatcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanBatcher")
            .field("socket", &self.sock)
            .field("backlog", &self.backlog.get())
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl<S: SocketSend + Send + 'static> FanBatcher<S> {
    /// Wraps a PUB socket whose relays report to `progress`; at most `cap`
    /// publications wait for a batch.
    pub(crate) fn new(sock: S, progress: Arc<Progress>, cap: usize) -> Arc<Self> {
        Arc::new(FanBatcher {
            sock: tokio::sync::Mutex::new(Zmq(sock)),
            pending: Mutex::new(FanPending::default()),
            backlog: Backlog::new(progress),
            cap: cap.max(1),
        })
    }

    /// Publishes `body` under the routing prefix `topic`. `stamp` makes
    /// the header under `order`, in the same critical section that queues
    /// it, so what it numbers leaves in that order.
    pub(crate) async fn publish<G>(
        self: &Arc<Self>,
        topic: &[u8],
        body: Bytes,
        order: &Mutex<G>,
        stamp: impl FnOnce(&mut G) -> Header,
    ) -> Result<(), SendError> {
        // Owed to the subscribers whose prefixes match now.
        self.backlog.progress.audience.publish(topic);
        let (send_now, turn) = {
            let mut p = self.pending.lock().map_err(|_| SendError::Closed)?;
            let header = {
                let mut ordered = order.lock().map_err(|_| SendError::Closed)?;
                wire::encode_header(&stamp(&mut ordered))
            };
            if p.last_topic[..] != *topic {
                p.last_topic = Bytes::copy_from_slice(topic);
            }
            let topic = p.last_topic.clone();
            p.entries.push_back(Publication {
                topic,
                header,
                body,
            });
            p.published = p.published.wrapping_add(1);
            let send_now = if p.flusher {
                p.entries.len() >= self.cap
            } else if self.in_burst(&mut p) || self.backlog.get() > BACKLOG_LIMIT {
                p.flusher = true;
                tokio::spawn(self.clone().flush());
                false
            } else {
                true
            };
            (send_now, p.published.is_multiple_of(64))
        };
        let sent = if send_now {
            self.send_queued().await
        } else {
            Ok(())
        };
        // A `zeromq` PUB send never yields; give the writer tasks (and the
        // flusher) a turn now and then so a burst does not fill the queues
        // before anything is written.
        if turn {
            tokio::task::yield_now().await;
        }
        sent
    }

    /// Whether this publication continues a burst of [`BURST_STREAK`].
    fn in_burst(&self, p: &mut FanPending) -> bool {
        let now = std::time::Instant::now();
        let close = p
            .last_at
            .is_some_and(|at| now.saturating_duration_since(at) < BURST_GAP);
        p.last_at = Some(now);
        p.streak = if close { p.streak.saturating_add(1) } else { 0 };
        p.streak >= BURST_STREAK
    }

    /// Sends everything queued, in order, holding the socket. A failed
    /// send is counted (`no_peer`) and returned.
    pub(crate) async fn send_queued(&self) -> Result<(), SendError> {
        let mut sock = self.sock.lock().await;
        let queued = {
            let mut p = self.pending.lock().map_err(|_| SendError::Closed)?;
            std::mem::take(&mut p.entries)
        };
        let peers = self.backlog.progress.peers.load(Ordering::Relaxed);
        let mut result = Ok(());
        for run in runs(queued) {
            self.backlog.hand(run.wire * peers);
            let Ok(msg) = ZmqMessage::try_from(run.frames) else {
                continue;
            };
            if let Err(e) = sock.send(msg).await {
                tracing::debug!(error = %e, "dropping a batch of publications");
                telemetry::dropped(telemetry::DropReason::NoPeer, run.count);
                result = Err(send_error(e));
            }
        }
        result
    }

    async fn flush(self: Arc<Self>) {
        loop {
            self.backlog.wait_for_drain().await;
            // Let the publisher run: what it queues meanwhile is the next
            // batch (and an empty queue after its turns ends batch mode).
            for _ in 0..FILL_TURNS {
                tokio::task::yield_now().await;
                if self.pending.lock().map_or(0, |p| p.entries.len()) >= FILL_TO {
                    break;
                }
            }
            {
                let Ok(mut p) = self.pending.lock() else {
                    return;
                };
                if p.entries.is_empty() {
                    p.flusher = false;
                    p.streak = 0;
                    return;
                }
            }
            // Failures are counted where they happen; the publisher whose
            // send fails directly gets the error.
            let _ = self.send_queued().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(topic: &'static [u8], n: u8, body: usize) -> Publication {
        Publication {
            topic: Bytes::from_static(topic),
            header: Bytes::from(vec![n]),
            body: Bytes::from(vec![n; body]),
        }
    }

    #[test]
    fn runs_split_where_the_topic_changes_and_keep_the_order() {
        let queued = vec![
            publication(b"a", 1, 1),
            publication(b"a", 2, 1),
            publication(b"b", 3, 1),
            publication(b"a", 4, 1),
        ];
        let r = runs(queued);
        let shape: Vec<(Bytes, Vec<u8>, u64)> = r
            .iter()
            .map(|r| {
                let headers = r.frames[1..].chunks(2).map(|p| p[0][0]).collect();
                (r.frames[0].clone(), headers, r.count)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (Bytes::from_static(b"a"), vec![1, 2], 2),
                (Bytes::from_static(b"b"), vec![3], 1),
                (Bytes::from_static(b"a"), vec![4], 1),
            ]
        );
        // Wire size: the topic frame once, then each header and body.
        assert_eq!(r[0].wire, 3 + 4 * 3);
    }

    #[test]
    fn runs_stop_at_the_batch_limits_but_carry_at_least_one_publication() {
        let many = (0..MAX_BATCH + 1).map(|_| publication(b"t", 0, 0));
        let counts: Vec<u64> = runs(many).iter().map(|r| r.count).collect();
        assert_eq!(counts, vec![MAX_BATCH as u64, 1]);

        let big = MAX_BATCH_BYTES / 2;
        let large = (0..3).map(|_| publication(b"t", 0, big));
        let counts: Vec<u64> = runs(large).iter().map(|r| r.count).collect();
        assert_eq!(
            counts,
            vec![1, 1, 1],
            "two halves plus headers exceed the limit"
        );

        let huge = std::iter::once(publication(b"t", 0, 2 * MAX_BATCH_BYTES));
        assert_eq!(runs(huge)[0].count, 1);
    }
}
