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
}

impl Progress {
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

/// A `zeromq` send socket with adaptive batching.
pub(crate) struct Batcher<S> {
    sock: tokio::sync::Mutex<Zmq<S>>,
    pending: Mutex<Pending>,
    handed: AtomicU64,
    progress: Arc<Progress>,
    space: Notify,
    hwm: usize,
}

impl<S> std::fmt::Debug for Batcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("socket", &self.sock)
            .field("handed", &self.handed)
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
            handed: AtomicU64::new(0),
            progress,
            space: Notify::new(),
            hwm: hwm.max(1),
        })
    }

    fn backlog(&self) -> u64 {
        self.handed
            .load(Ordering::Relaxed)
            .saturating_sub(self.progress.relayed.load(Ordering::Relaxed))
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
                if !p.flusher && self.backlog() <= BACKLOG_LIMIT {
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
        self.handed.fetch_add(
            wire_len(header.len()) + wire_len(body.len()),
            Ordering::Relaxed,
        );
        let msg = ZmqMessage::try_from(vec![header, body]).map_err(|_| SendError::Closed)?;
        self.sock.lock().await.send(msg).await.map_err(send_error)
    }

    async fn wait_for_drain(&self) {
        if self.backlog() <= REFILL_BELOW {
            return;
        }
        self.progress.waiting.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
        loop {
            let drained = self.progress.notify.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.backlog() <= REFILL_BELOW {
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

    async fn flush(self: Arc<Self>) {
        loop {
            self.wait_for_drain().await;
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
            self.handed.fetch_add(wire, Ordering::Relaxed);
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
