//! Durable events: an outbox in the emitter's own stream log, relayed to
//! consumer groups at least once, across restarts of the emitter.
//!
//! [`emit`](super::events::emit) with [`EventDelivery::Durable`] appends
//! the event to the node's [`Outbox`] and returns once the log has it (as
//! durable as the outbox's fsync policy: by default every record is
//! fsynced before `emit` returns). A relay task delivers the outbox in
//! order, in batches of concurrent deliveries, to every consumer group
//! consuming the event's topic, and commits how far it got (an offset in
//! `delivered.redb` beside the log) after each batch.
//!
//! # Guarantees
//! - An event `emit` accepted is delivered at least once to each consumer
//!   group that consumes its topic when the relay delivers it, even if the
//!   emitter is killed and restarted on the same directory in between:
//!   the relay resumes at its committed offset.
//! - Redeliveries carry the event's id, so the consumers' dedup window
//!   processes an event once unless the window has forgotten it.
//! - A group that does not acknowledge is tried again (rounds of
//!   attempts, backing off to 2 s), and the relay does not move past the
//!   event until it has: the outbox holds what a slow, cut-off or
//!   restarting group has not taken. A group the relay delivered to and
//!   cannot see now is waited for up to `absent_for` (10 min) after it was
//!   last seen, so events emitted during a partition are delivered after
//!   it heals.
//!
//! # Not guaranteed
//! Events are relayed after `emit` returns, not during it: the report of
//! a durable emit names the outbox offset, not the groups. The relay
//! delivers in order and waits at the first event not yet taken: a group
//! that is away holds up later events for every group (bounded by
//! `absent_for`). The groups the relay has seen are kept in memory: after
//! a restart of the emitter, a group away for all of `settle` is not
//! waited for. An event whose
//! topic no group consumes (after the node has been up for `settle`, so
//! that it has heard of the fabric) is delivered to none and not counted
//! as lost, as with the other deliveries. Plain subscribers get the event
//! at most once, when it is emitted. No order between events across
//! groups; redelivery after a restart may reorder a group's events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::node::{Node, NodeBuilder, NodeHandle};
use crate::stream::log::{FsyncPolicy, LogConfig, LogError, NewRecord, Recovery};
use crate::stream::offsets::{OffsetError, OffsetStore, Position};
use crate::stream::store::{Stream, StreamConfig, StreamError};

use super::events::{self, EventDelivery};

/// How an outbox keeps and relays events.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// The log (default: fsync every record before `emit` returns).
    pub log: LogConfig,
    /// How each round delivers to each group (default at least once,
    /// 1 s per attempt, 3 attempts 50 ms apart); the relay repeats rounds
    /// (backing off to 2 s) until every group took the event.
    pub delivery: EventDelivery,
    /// Events delivered concurrently (default 32).
    pub batch: usize,
    /// How long after the node starts an event with no consumer group is
    /// held back, waiting to hear of the fabric (default 2 s).
    pub settle: Duration,
    /// A group the relay has delivered to and cannot see now (cut off,
    /// restarting) is waited for this long after it was last seen: its
    /// events stay in the outbox and are delivered when it is back
    /// (default 10 min). Beyond it the group is presumed gone for good.
    pub absent_for: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            log: LogConfig {
                fsync: FsyncPolicy::Always,
                ..LogConfig::default()
            },
            delivery: EventDelivery::AtLeastOnce {
                ack_timeout: Duration::from_secs(1),
                max_attempts: 3,
                backoff: Duration::from_millis(50),
            },
            batch: 32,
            settle: Duration::from_secs(2),
            absent_for: Duration::from_secs(600),
        }
    }
}

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Its log failed.
    #[error("outbox log: {0}")]
    Stream(#[from] StreamError),
    /// Its delivered-offset store failed.
    #[error("outbox: {0}")]
    Offsets(#[from] OffsetError),
}

impl From<LogError> for OutboxError {
    fn from(e: LogError) -> Self {
        OutboxError::Stream(e.into())
    }
}

/// A node's outbox of durable events.
pub struct Outbox {
    stream: Stream,
    /// Taken by `close` (the file is released then).
    store: parking_lot::Mutex<Option<OffsetStore>>,
    config: OutboxConfig,
    wake: Notify,
    delivered: AtomicU64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("dir", &self.stream.dir())
            .field("delivered", &self.delivered.load(Ordering::Relaxed))
            .finish()
    }
}

const KEY: &str = "relay";

impl Outbox {
    /// Opens (creating) the outbox in `dir`, recovering its log.
    pub fn open(
        dir: &std::path::Path,
        config: OutboxConfig,
    ) -> Result<(Arc<Outbox>, Recovery), OutboxError> {
        let (stream, mut rec) = Stream::open(
            dir,
            "outbox",
            StreamConfig {
                partitions: 1,
                log: config.log.clone(),
            },
        )?;
        let store = OffsetStore::open(&dir.join("delivered.redb"))?;
        let next = store
            .get(KEY, 0)?
            .filter(|p| p.log_id == stream.log_id())
            .map_or(stream.partition(0)?.info().start, |p| p.next);
        Ok((
            Arc::new(Outbox {
                stream,
                store: parking_lot::Mutex::new(Some(store)),
                config,
                wake: Notify::new(),
                delivered: AtomicU64::new(next),
            }),
            rec.pop().unwrap_or_default(),
        ))
    }

    /// Attaches the outbox to the node `builder` will start (durable
    /// emits on it go here) and relays it once the node runs.
    ///
    /// # Panics
    /// Outside a tokio runtime (the relay task is spawned here).
    pub fn relay_on(self: &Arc<Self>, builder: NodeBuilder) -> NodeBuilder {
        tokio::spawn(relay(Arc::downgrade(self), builder.handle()));
        builder.extension(self.clone())
    }

    /// Events appended and not yet relayed.
    pub fn pending(&self) -> u64 {
        let end = self.stream.partition(0).map_or(0, |l| l.info().end);
        end.saturating_sub(self.delivered.load(Ordering::Relaxed))
    }

    /// Appends an encoded event; returns its offset once durable.
    pub(crate) async fn append(&self, id: u64, body: bytes::Bytes) -> Result<u64, OutboxError> {
        let offset = self
            .stream
            .append(
                0,
                NewRecord {
                    id,
                    traceparent: None,
                    timestamp_ms: None,
                    body,
                },
            )
            .await?;
        self.wake.notify_one();
        Ok(offset)
    }

    /// Writes what is pending, closes the log and releases the store (the
    /// relay stops; the directory can be opened again).
    pub fn close(&self) -> Result<(), OutboxError> {
        self.store.lock().take();
        Ok(self.stream.close()?)
    }
}

/// The outbox of `node`, if one was attached.
pub(crate) fn of(node: &Node) -> Option<Arc<Outbox>> {
    node.extension::<Outbox>()
}

/// What one outbox record still waits for.
enum Outcome {
    /// Every group that takes it acknowledged (or none takes it).
    Done,
    /// A group did not acknowledge, or one it was sent to before is away.
    Pending,
}

/// Groups (event services) the relay has seen, with when it last saw each:
/// an event for a group that is away now (a partition, a restart) waits
/// for it up to `absent_for`.
type Known = std::collections::HashMap<String, tokio::time::Instant>;

async fn relay_one(
    node: &Node,
    outbox: &Outbox,
    known: &mut Known,
    record: &crate::stream::log::Record,
    settled: bool,
) -> Outcome {
    let Some(topic) = events::encoded_topic(&record.body) else {
        tracing::error!(
            offset = record.offset,
            "outbox record is not an event; skipped"
        );
        crate::telemetry::dropped(crate::telemetry::DropReason::BadBody, 1);
        return Outcome::Done;
    };
    let now = tokio::time::Instant::now();
    let visible = events::group_services(node, &topic);
    for svc in &visible {
        known.insert(svc.clone(), now);
    }
    let away = known.iter().any(|(svc, seen)| {
        !visible.contains(svc)
            && events::takes(svc, &topic)
            && now.duration_since(*seen) < outbox.config.absent_for
    });
    if visible.is_empty() && !settled {
        return Outcome::Pending; // not heard of the fabric yet
    }
    let acks = futures_util::future::join_all(visible.iter().map(|svc| {
        events::deliver_encoded(
            node,
            svc,
            record.id,
            record.body.clone(),
            outbox.config.delivery,
        )
    }))
    .await;
    if away || acks.iter().any(|ok| !ok) {
        Outcome::Pending
    } else {
        Outcome::Done
    }
}

async fn relay(outbox: std::sync::Weak<Outbox>, handle: NodeHandle) {
    // Wait for the node to run (or the outbox to be dropped).
    loop {
        if handle.node().is_some() {
            break;
        }
        if outbox.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = tokio::time::Instant::now();
    let mut known = Known::new();
    let mut wait = Duration::from_millis(50);
    loop {
        let Some(node) = handle.node() else { return };
        let Some(outbox) = outbox.upgrade() else {
            return;
        };
        if outbox.store.lock().is_none() {
            return; // closed
        }
        let Ok(log) = outbox.stream.partition(0).cloned() else {
            return;
        };
        let next = outbox.delivered.load(Ordering::Relaxed);
        let batch = outbox.config.batch.max(1);
        let recs = match tokio::task::spawn_blocking(move || log.read(next, batch, 1 << 20)).await {
            Ok(Ok(r)) => r,
            Ok(Err(LogError::OutOfRange { start, .. })) if next < start => {
                tracing::error!(
                    skipped = start - next,
                    "outbox records removed before they were relayed"
                );
                crate::telemetry::dropped(
                    crate::telemetry::DropReason::StreamRetention,
                    start - next,
                );
                outbox.delivered.store(start, Ordering::Relaxed);
                continue;
            }
            Ok(Err(LogError::Closed)) | Err(_) => return,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "outbox unreadable");
                drop((node, outbox));
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if recs.is_empty() {
            drop(node);
            let woken = async { outbox.wake.notified().await };
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            continue;
        }
        let settled = started.elapsed() >= outbox.config.settle;
        let mut outcomes = Vec::with_capacity(recs.len());
        {
            // Concurrent deliveries; `known` is updated between them.
            let known_now = known.clone();
            let results = futures_util::future::join_all(recs.iter().map(|r| {
                let mut k = known_now.clone();
                let node = &node;
                let outbox = &outbox;
                async move {
                    let o = relay_one(node, outbox, &mut k, r, settled).await;
                    (o, k)
                }
            }))
            .await;
            for (o, k) in results {
                for (svc, seen) in k {
                    let e = known.entry(svc).or_insert(seen);
                    *e = (*e).max(seen);
                }
                outcomes.push(o);
            }
        }
        // Commit up to the first record still pending (the ones after it
        // are delivered again next time; consumers dedup them by id).
        let done = outcomes
            .iter()
            .take_while(|o| matches!(o, Outcome::Done))
            .count();
        if done > 0 {
            // Held only for the commit: `close` releases the file.
            let Some(store) = outbox.store.lock().clone() else {
                return;
            };
            let pos = Position {
                log_id: outbox.stream.log_id(),
                next: recs[done - 1].offset + 1,
            };
            match tokio::task::spawn_blocking(move || store.commit(KEY, 0, pos)).await {
                Ok(Ok(())) => outbox.delivered.store(pos.next, Ordering::Relaxed),
                Ok(Err(e)) => tracing::error!(error = %e, "could not commit the outbox position"),
                Err(_) => return,
            }
        }
        if done < outcomes.len() {
            // A group did not take an event, or is away: wait, then again.
            drop((node, outbox));
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        } else {
            wait = Duration::from_millis(50);
        }
    }
}
