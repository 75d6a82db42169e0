//! The send side of a relay that carries a PUB socket's bytes to one
//! subscriber: a reader that takes them off the `zeromq` socket as fast as
//! they come into the subscriber's bounded [`SendQueue`], and the handle a
//! writer drains it through. The state (what fits, what is dropped) is in
//! [`fanout`](crate::transport::fanout); this file adds the I/O and the
//! accounting.
//!
//! Guarantees: the `zeromq` socket is never held up by this subscriber;
//! every publication that leaves the queue is reported to the socket's
//! [`Audience`](crate::transport::fanout::Audience) as written or dropped;
//! what was written is also reported to its [`Progress`] as relayed, which
//! paces the publisher's batching by what subscribers really take. What
//! is still queued when the relay ends is counted `link_down`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;

use super::secure::RemoteWriter;
use crate::telemetry::DropReason;
use crate::transport::batch::Progress;
use crate::transport::fanout::{Piece, SendQueue, Splitter};
use crate::transport::scan::ScanError;

/// One subscriber connection's queue, shared by its reader and writer.
#[derive(Debug)]
pub(super) struct PubQueue {
    queue: Mutex<SendQueue>,
    ready: Notify,
    progress: Arc<Progress>,
    /// Its id in the socket's audience.
    id: u64,
    /// Its deliveries written or dropped so far.
    settled: AtomicU64,
}

impl PubQueue {
    /// A queue of `cap` publications and `cap_bytes` for a new subscriber
    /// connection of the socket that `progress` belongs to.
    pub(super) fn new(progress: Arc<Progress>, cap: usize, cap_bytes: usize) -> Self {
        let id = progress.audience.join();
        PubQueue {
            queue: Mutex::new(SendQueue::new(cap, cap_bytes)),
            ready: Notify::new(),
            progress,
            id,
            settled: AtomicU64::new(0),
        }
    }

    /// A subscription message (`1`/`0`, prefix) from this subscriber.
    pub(super) fn subscription(&self, message: &[u8]) {
        self.progress.audience.subscription(self.id, message);
    }

    /// Reads the socket's bytes for this subscriber until it closes, or a
    /// malformed stream. `reason` names why a publication that does not
    /// fit is dropped (`slow_subscriber`, or `link_down` while a link is
    /// down); `read` is called after each read (activity).
    pub(super) async fn fill<R: AsyncRead + Unpin>(
        &self,
        mut from: R,
        mut splitter: Splitter,
        reason: impl Fn() -> DropReason,
        read: impl Fn(),
    ) -> Result<(), ScanError> {
        loop {
            match from.read_buf(splitter.buf()).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => read(),
            }
            let absorbed = {
                let Ok(mut q) = self.queue.lock() else {
                    return Ok(());
                };
                splitter.absorb(&mut q)?
            };
            if absorbed.dropped > 0 {
                // Not counted as relayed: the publisher's batching paces
                // itself by what subscribers take, and a drop is not that
                // (it re-bases its estimate when the backlog stalls).
                self.progress.audience.dropped(reason(), absorbed.dropped);
            }
            self.ready.notify_one();
        }
    }

    /// Serves one subscriber connection of a bound PUB socket: reads the
    /// socket's bytes for it (`from`, starting with the greeting when
    /// `greeting`) and writes them to the peer through `to`, until either
    /// side ends. `activity` counts reads and writes (idle timeout).
    pub(super) async fn serve<R: AsyncRead + Unpin>(
        &self,
        from: R,
        splitter: Splitter,
        mut to: RemoteWriter,
        activity: &AtomicU64,
    ) {
        let fill = self.fill(
            from,
            splitter,
            || DropReason::SlowSubscriber,
            || {
                activity.fetch_add(1, Ordering::Relaxed);
            },
        );
        let drain = async {
            loop {
                let mut batch = self.next().await;
                while let Some(p) = batch.pop_front() {
                    if to.write_plain(&p.bytes).await.is_err() {
                        self.lost(&p);
                        self.put_back(batch);
                        return;
                    }
                    self.written(&p);
                    activity.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        tokio::select! {
            r = fill => if let Err(e) = r {
                tracing::error!(error = ?e, "PUB socket wrote a malformed stream");
            },
            _ = drain => {}
        }
    }

    /// Waits for queued pieces and takes them all, oldest first.
    pub(super) async fn next(&self) -> VecDeque<Piece> {
        loop {
            let batch = self
                .queue
                .lock()
                .map(|mut q| q.take_all())
                .unwrap_or_default();
            if !batch.is_empty() {
                return batch;
            }
            self.ready.notified().await;
        }
    }

    /// `piece` was written to the subscriber's connection.
    pub(super) fn written(&self, piece: &Piece) {
        self.progress.relayed(piece.data_bytes as usize);
        self.settle(piece.publications);
        self.progress.audience.written(piece.publications);
    }

    /// `piece` cannot be written (the connection broke).
    pub(super) fn lost(&self, piece: &Piece) {
        self.settle(piece.publications);
        self.progress
            .audience
            .dropped(DropReason::LinkDown, piece.publications);
    }

    fn settle(&self, n: u64) {
        self.settled.fetch_add(n, Ordering::Relaxed);
    }

    /// Puts pieces taken but not written back at the front of the queue.
    pub(super) fn put_back(&self, rest: VecDeque<Piece>) {
        if let Ok(mut q) = self.queue.lock() {
            q.put_back(rest.into_iter());
        }
        self.ready.notify_one();
    }
}

impl Drop for PubQueue {
    fn drop(&mut self) {
        let rest = self
            .queue
            .lock()
            .map(|mut q| q.take_all())
            .unwrap_or_default();
        for p in &rest {
            self.lost(p);
        }
        let settled = self.settled.load(Ordering::Relaxed);
        self.progress.audience.leave(self.id, settled);
    }
}
