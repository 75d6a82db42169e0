//! Consumers of a stream: replay from the earliest record, the latest, an
//! offset or a time; follow the live tail; commit positions after
//! processing; share partitions in a consumer group.
//!
//! # How a partition is followed
//! A worker per partition fetches from its position until a fetch comes
//! back empty, then follows the live tail (records published as they are
//! appended; a group member, whose reads must be checked against its
//! lease, takes the tail only as the signal to fetch). A tail batch that starts beyond the position is a gap (the
//! tail is at most once): the worker goes back to fetching, so nothing is
//! skipped. An idle worker fetches again every `poll` interval, which
//! finds a lost last batch too.
//!
//! # Guarantees
//! - **At least once, in offset order per partition**: every record of
//!   an owned partition is handed to the handler, in order; a record is
//!   committed only after the handler returned for it (and for every
//!   record before it).
//! - **Duplicates suppressed by watermark**: a record below the position
//!   (a tail batch repeating what a fetch brought) is skipped and counted;
//!   a restarted consumer resumes at its committed position. With a
//!   handler that is idempotent by `(stream, partition, offset)`,
//!   processing is effectively once.
//! - **Groups**: each partition is owned by one member at a time, chosen
//!   by rendezvous hashing over the group's alive members and granted by
//!   the host's lease; a member that leaves commits and releases first,
//!   so a graceful rebalance hands over without reprocessing.
//! - A record the handler keeps failing (after `handler_attempts`) is
//!   skipped, counted as dropped (`stream_handler_failed`) and logged; so
//!   are records that retention removed before they were read
//!   (`stream_retention`).
//!
//! # Not guaranteed
//! A consumer that dies between processing and committing processes the
//! records since its last commit again when it (or the partition's next
//! owner) resumes: commit granularity is one batch. No order across
//! partitions. Solo consumers keep positions only when given an
//! [`OffsetStore`]; without one they start from `from` every time.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::group;
use super::log::Record;
use super::offsets::{OffsetStore, Position};
use super::protocol::{self, LeaseRef, StreamReply, StreamRequest, TailBatch};
use crate::node::{CallError, CallOptions, Node, PeerState};
use crate::telemetry::{dropped, DropReason};
use crate::{RemoteError, Request};

/// Counter: records a consumer skipped because it had already processed
/// them (watermark), by `stream`.
pub const STREAM_DUPLICATES_SKIPPED: &str = "zfabric_stream_duplicates_skipped_total";
/// Counter: gaps in a stream's live tail that a consumer filled by
/// fetching, by `stream`.
pub const STREAM_TAIL_GAPS: &str = "zfabric_stream_tail_gaps_total";

/// Where a consumer starts in a partition where it has no committed
/// position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest record kept.
    Earliest,
    /// The next record appended (none of those already there).
    Latest,
    /// This offset (clamped into what the log keeps).
    Offset(u64),
    /// The first record at or after this time (ms since the Unix epoch).
    Time(u64),
}

impl std::str::FromStr for StartFrom {
    type Err = String;
    /// `earliest`, `latest`, an offset, or `time:<ms since the epoch>`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(StartFrom::Earliest),
            "latest" => Ok(StartFrom::Latest),
            _ => if let Some(t) = s.strip_prefix("time:") {
                t.parse().map(StartFrom::Time)
            } else {
                s.parse().map(StartFrom::Offset)
            }
            .map_err(|_| {
                format!("{s:?}: expected earliest, latest, an offset or time:<ms since the epoch>")
            }),
        }
    }
}

/// A record handed to a consumer's handler.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// The stream.
    pub stream: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// When it was appended (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Its message id.
    pub id: u64,
    /// The `traceparent` it was appended under.
    pub traceparent: Option<Arc<str>>,
    /// Its body.
    pub body: Bytes,
}

impl StreamRecord {
    /// Decodes the body as MessagePack `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, crate::wire::DecodeError> {
        crate::wire::decode_body(&self.body)
    }
}

/// How a consumer fetches, retries and rebalances.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Where to start without a committed position. Default earliest.
    pub from: StartFrom,
    /// Records per fetch (and at most per commit). Default 256.
    pub batch: u32,
    /// Bytes of bodies per fetch. Default 1 MiB.
    pub max_bytes: u32,
    /// An idle partition is fetched again this often. Default 500 ms.
    pub poll: Duration,
    /// Each call to the host. Default 2 s.
    pub call_timeout: Duration,
    /// Attempts of the handler per record. Default 5.
    pub handler_attempts: u32,
    /// Wait after a failed attempt or an unreachable host (doubling, up
    /// to 2 s). Default 50 ms.
    pub backoff: Duration,
    /// A group member checks the assignment this often. Default 250 ms.
    pub rebalance: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            from: StartFrom::Earliest,
            batch: 256,
            max_bytes: 1 << 20,
            poll: Duration::from_millis(500),
            call_timeout: Duration::from_secs(2),
            handler_attempts: 5,
            backoff: Duration::from_millis(50),
            rebalance: Duration::from_millis(250),
        }
    }
}

/// Why a consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// Not a valid stream name.
    #[error(transparent)]
    Stream(#[from] super::store::StreamError),
    /// A group name with `/`.
    #[error("invalid consumer group name {0:?}: it cannot be empty or contain '/'")]
    Group(String),
}

type Handler = Arc<
    dyn Fn(StreamRecord) -> Pin<Box<dyn Future<Output = Result<(), RemoteError>> + Send>>
        + Send
        + Sync,
>;

enum Mode {
    Solo {
        name: String,
        store: Option<OffsetStore>,
    },
    Group(String),
}

/// Builds a consumer of one stream.
pub struct ConsumerBuilder {
    stream: String,
    mode: Mode,
    config: ConsumerConfig,
    limit: Option<u64>,
}

/// What a consumer has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Records the handler processed (returned `Ok` for).
    pub processed: u64,
    /// Records skipped as already processed (watermark).
    pub duplicates_skipped: u64,
    /// Tail gaps filled by fetching.
    pub gaps: u64,
    /// Records skipped after the handler failed every attempt.
    pub handler_failed: u64,
    /// Records retention removed before they were read.
    pub skipped_retention: u64,
    /// Positions committed.
    pub commits: u64,
    /// Each partition's position (the next offset to process), for the
    /// partitions this consumer has worked on.
    pub positions: BTreeMap<u32, u64>,
    /// The partitions it owns now.
    pub owned: Vec<u32>,
}

#[derive(Default)]
struct Stats {
    processed: AtomicU64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
    handler_failed: AtomicU64,
    retention: AtomicU64,
    commits: AtomicU64,
    positions: Mutex<BTreeMap<u32, u64>>,
    owned: Mutex<Vec<u32>>,
}

/// A running consumer. Dropping it does not stop it: call
/// [`ConsumerHandle::stop`].
pub struct ConsumerHandle {
    stop: watch::Sender<bool>,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ConsumerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("stream", &self.stream)
            .field("config", &self.config)
            .finish()
    }
}

impl Stats {
    fn snapshot(&self) -> ConsumerStats {
        ConsumerStats {
            processed: self.processed.load(Ordering::Relaxed),
            duplicates_skipped: self.duplicates.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
            handler_failed: self.handler_failed.load(Ordering::Relaxed),
            skipped_retention: self.retention.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            positions: self.positions.lock().clone(),
            owned: self.owned.lock().clone(),
        }
    }
}

impl ConsumerHandle {
    /// What it has done so far.
    pub fn stats(&self) -> ConsumerStats {
        self.stats.snapshot()
    }

    /// Stops: every worker finishes the record in hand, commits and
    /// releases its lease; a group member leaves the group. Returns the
    /// final figures.
    pub async fn stop(self) -> ConsumerStats {
        let ConsumerHandle { stop, stats, task } = self;
        let _ = stop.send(true);
        let _ = task.await;
        stats.snapshot()
    }
}

/// A consumer of stream `stream`: see [`ConsumerBuilder`].
pub fn consumer(stream: &str) -> ConsumerBuilder {
    ConsumerBuilder {
        stream: stream.to_owned(),
        mode: Mode::Solo {
            name: String::new(),
            store: None,
        },
        config: ConsumerConfig::default(),
        limit: None,
    }
}

impl ConsumerBuilder {
    /// Where to start without a committed position.
    pub fn from(mut self, from: StartFrom) -> Self {
        self.config.from = from;
        self
    }

    /// Hands at most `n` records to the handler in all (then the workers
    /// wait for [`ConsumerHandle::stop`]; nothing beyond is committed).
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Uses `config` (its `from` too).
    pub fn config(mut self, config: ConsumerConfig) -> Self {
        self.config = config;
        self
    }

    /// A solo consumer named `name` whose positions are committed to
    /// `store` (resumes there after a restart).
    pub fn offsets(mut self, store: OffsetStore, name: &str) -> Self {
        self.mode = Mode::Solo {
            name: name.to_owned(),
            store: Some(store),
        };
        self
    }

    /// A member of consumer group `group`: partitions are shared among
    /// the group's members; positions are committed at the host.
    pub fn group(mut self, group: &str) -> Self {
        self.mode = Mode::Group(group.to_owned());
        self
    }

    /// Starts consuming on `node`, calling `handler` for each record.
    pub fn run<H, Fut>(self, node: &Node, handler: H) -> Result<ConsumerHandle, ConsumerError>
    where
        H: Fn(StreamRecord) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        super::store::check_name(&self.stream)?;
        if let Mode::Group(g) = &self.mode {
            if g.is_empty() || g.contains('/') {
                return Err(ConsumerError::Group(g.clone()));
            }
        }
        let handler: Handler = Arc::new(move |r| Box::pin(handler(r)));
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let ctx = Arc::new(Ctx {
            node: node.view(),
            name: Arc::from(self.stream.as_str()),
            service: protocol::service(&self.stream),
            config: self.config,
            handler,
            stats: stats.clone(),
            tails: Mutex::new(HashMap::new()),
            log_id: AtomicU64::new(0),
            limit: self.limit,
            taken: AtomicU64::new(0),
        });
        let task = tokio::spawn(run(ctx, self.mode, stop_rx));
        Ok(ConsumerHandle { stop, stats, task })
    }
}

struct Ctx {
    node: Node,
    name: Arc<str>,
    service: String,
    config: ConsumerConfig,
    handler: Handler,
    stats: Arc<Stats>,
    tails: Mutex<HashMap<u32, mpsc::Sender<TailBatch>>>,
    log_id: AtomicU64,
    /// At most this many records handed over in all.
    limit: Option<u64>,
    taken: AtomicU64,
}

impl Ctx {
    async fn call(&self, req: &StreamRequest) -> Result<StreamReply, CallError> {
        let mut opts = CallOptions::default().timeout(self.config.call_timeout);
        if !matches!(req, StreamRequest::Append { .. }) {
            opts = opts.idempotent();
        }
        self.node.request_with(&self.service, req, opts).await
    }

    /// Calls until the host answers or `stop` is set (backing off).
    async fn call_retrying(
        &self,
        req: &StreamRequest,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<StreamReply> {
        let mut wait = self.config.backoff;
        loop {
            if *stop.borrow() {
                return None;
            }
            match self.call(req).await {
                Ok(StreamReply::Failed { reason }) => {
                    tracing::warn!(stream = %self.name, %reason, "stream host failed a request");
                }
                Ok(r) => return Some(r),
                Err(e) => {
                    tracing::debug!(stream = %self.name, error = %e, "stream host unreachable");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return None,
            }
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// The starting offset for `from` in partition `p`.
    async fn resolve(&self, p: u32, stop: &mut watch::Receiver<bool>) -> Option<u64> {
        let info = self.call_retrying(&StreamRequest::Info, stop).await?;
        let StreamReply::Info { partitions, .. } = info else {
            return None;
        };
        let e = partitions.get(p as usize)?;
        Some(match self.config.from {
            StartFrom::Earliest => e.start,
            StartFrom::Latest => e.end,
            StartFrom::Offset(o) => o.clamp(e.start, e.end),
            StartFrom::Time(t) => {
                match self
                    .call_retrying(
                        &StreamRequest::OffsetForTime {
                            partition: p,
                            timestamp_ms: t,
                        },
                        stop,
                    )
                    .await?
                {
                    StreamReply::Offset { offset } => offset,
                    _ => e.start,
                }
            }
        })
    }

    fn set_position(&self, p: u32, next: u64) {
        self.stats.positions.lock().insert(p, next);
    }
}

/// Where a worker commits.
enum Commit {
    Local { store: OffsetStore, name: String },
    Lease(LeaseRef),
    None,
}

async fn run(ctx: Arc<Ctx>, mode: Mode, mut stop: watch::Receiver<bool>) {
    let Some(StreamReply::Info {
        log_id, partitions, ..
    }) = ctx.call_retrying(&StreamRequest::Info, &mut stop).await
    else {
        return;
    };
    ctx.log_id.store(log_id, Ordering::Relaxed);
    let n = partitions.len() as u32;
    let sub = ctx.node.subscribe(protocol::tail_prefix(&ctx.name), 1024);
    let dispatch = tokio::spawn(dispatch_tail(ctx.clone(), sub));
    match mode {
        Mode::Solo { name, store } => {
            let mut workers = Vec::new();
            *ctx.stats.owned.lock() = (0..n).collect();
            for p in 0..n {
                let (ctx, mut stop, name, store) =
                    (ctx.clone(), stop.clone(), name.clone(), store.clone());
                workers.push(tokio::spawn(async move {
                    let committed = match &store {
                        Some(s) => {
                            let (s, nm) = (s.clone(), name.clone());
                            tokio::task::spawn_blocking(move || s.get(&nm, p))
                                .await
                                .ok()
                                .and_then(|r| r.ok())
                                .flatten()
                                .filter(|pos| pos.log_id == log_id)
                                .map(|pos| pos.next)
                        }
                        None => None,
                    };
                    let start = match committed {
                        Some(c) => c,
                        None => match ctx.resolve(p, &mut stop).await {
                            Some(s) => s,
                            None => return,
                        },
                    };
                    let commit = match store {
                        Some(store) => Commit::Local { store, name },
                        None => Commit::None,
                    };
                    worker(&ctx, p, start, commit, None, stop).await;
                }));
            }
            for w in workers {
                let _ = w.await;
            }
        }
        Mode::Group(group) => run_group(ctx.clone(), &group, n, stop).await,
    }
    dispatch.abort();
}

/// Hands tail batches to the partitions' workers (a full or absent
/// worker queue drops the batch: the worker fetches instead).
async fn dispatch_tail(ctx: Arc<Ctx>, mut sub: crate::node::NodeSubscription) {
    while let Some(msg) = sub.recv().await {
        let Ok(batch) = msg.decode::<TailBatch>() else {
            continue;
        };
        if batch.log_id != ctx.log_id.load(Ordering::Relaxed) {
            continue;
        }
        let tx = ctx.tails.lock().get(&batch.partition).cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send(batch);
        }
    }
}

/// Follows partition `p` from `next` until `stop` (or a lost lease);
/// returns the position reached (committed).
async fn worker(
    ctx: &Ctx,
    p: u32,
    mut next: u64,
    commit: Commit,
    lost: Option<watch::Receiver<bool>>,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let (tx, mut tail) = mpsc::channel::<TailBatch>(64);
    ctx.tails.lock().insert(p, tx);
    ctx.set_position(p, next);
    let lease = match &commit {
        Commit::Lease(l) => Some(l.clone()),
        _ => None,
    };
    let is_lost = |l: &Option<watch::Receiver<bool>>| l.as_ref().is_some_and(|l| *l.borrow());
    let mut committed = next;
    let mut wait = ctx.config.backoff;
    'follow: loop {
        if *stop.borrow() || is_lost(&lost) {
            break;
        }
        if ctx
            .limit
            .is_some_and(|l| ctx.taken.load(Ordering::SeqCst) >= l)
        {
            // Done: hold the position until told to stop.
            let _ = stop.changed().await;
            break;
        }
        let req = StreamRequest::Fetch {
            partition: p,
            from: next,
            max_records: ctx.config.batch,
            max_bytes: ctx.config.max_bytes,
            lease: lease.clone(),
        };
        let reply = match ctx.call(&req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(stream = %ctx.name, partition = p, error = %e, "fetch failed");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                wait = (wait * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        wait = ctx.config.backoff;
        match reply {
            StreamReply::Records {
                log_id, records, ..
            } => {
                if log_id != ctx.log_id.load(Ordering::Relaxed) {
                    tracing::error!(stream = %ctx.name, "the stream's host now keeps another log (its log id changed); stopping");
                    break;
                }
                if records.is_empty() {
                    // Caught up: follow the tail until a gap, a pause or stop.
                    loop {
                        tokio::select! {
                            b = tail.recv() => {
                                let Some(b) = b else { continue 'follow };
                                let recs: Vec<Record> = b.records.into_iter().map(Record::from).collect();
                                match recs.first() {
                                    Some(f) if f.offset > next => {
                                        metrics::counter!(STREAM_TAIL_GAPS, "stream" => ctx.name.to_string()).increment(1);
                                        ctx.stats.gaps.fetch_add(1, Ordering::Relaxed);
                                        continue 'follow;
                                    }
                                    // A group member reads under its lease: the
                                    // tail only wakes it to fetch (the fetch
                                    // checks the lease, the tail cannot).
                                    Some(_) if lease.is_some() && recs.last().is_some_and(|l| l.offset >= next) => {
                                        continue 'follow;
                                    }
                                    Some(_) if lease.is_some() => {}
                                    Some(_) => {
                                        next = process(ctx, p, next, recs, &stop, &lost).await;
                                        if !do_commit(ctx, p, next, &mut committed, &commit).await {
                                            break 'follow;
                                        }
                                        if *stop.borrow() || is_lost(&lost) {
                                            break 'follow;
                                        }
                                    }
                                    None => {}
                                }
                            }
                            _ = tokio::time::sleep(ctx.config.poll) => continue 'follow,
                            _ = stop.changed() => break 'follow,
                        }
                    }
                }
                let recs: Vec<Record> = records.into_iter().map(Record::from).collect();
                next = process(ctx, p, next, recs, &stop, &lost).await;
                if !do_commit(ctx, p, next, &mut committed, &commit).await {
                    break;
                }
            }
            StreamReply::OutOfRange { extent } => {
                if next < extent.start {
                    let n = extent.start - next;
                    tracing::warn!(stream = %ctx.name, partition = p, records = n, "records removed by retention before this consumer read them");
                    dropped(DropReason::StreamRetention, n);
                    ctx.stats.retention.fetch_add(n, Ordering::Relaxed);
                    next = extent.start;
                } else {
                    tracing::error!(stream = %ctx.name, partition = p, position = next, end = extent.end, "the host's log ends before this consumer's position (records it had acknowledged are gone); following from its end");
                    next = extent.end;
                }
                ctx.set_position(p, next);
            }
            StreamReply::Fenced => break,
            other => {
                tracing::warn!(stream = %ctx.name, partition = p, reply = ?other, "unexpected fetch reply");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    if !is_lost(&lost) {
        do_commit(ctx, p, next, &mut committed, &commit).await;
    }
    ctx.tails.lock().remove(&p);
    committed
}

/// Hands `records` (in offset order) from `next` on to the handler;
/// returns the new position. Stops early on `stop` or a lost lease
/// (after the record in hand).
async fn process(
    ctx: &Ctx,
    p: u32,
    mut next: u64,
    records: Vec<Record>,
    stop: &watch::Receiver<bool>,
    lost: &Option<watch::Receiver<bool>>,
) -> u64 {
    for r in records {
        if r.offset < next {
            ctx.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(STREAM_DUPLICATES_SKIPPED, "stream" => ctx.name.to_string())
                .increment(1);
            continue;
        }
        if r.offset > next {
            break; // a gap: the caller fetches from `next`
        }
        if *stop.borrow() || lost.as_ref().is_some_and(|l| *l.borrow()) {
            break;
        }
        if let Some(limit) = ctx.limit {
            if ctx.taken.fetch_add(1, Ordering::SeqCst) >= limit {
                break;
            }
        }
        let rec = StreamRecord {
            stream: ctx.name.clone(),
            partition: p,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            id: r.id,
            traceparent: r.traceparent,
            body: r.body,
        };
        let mut wait = ctx.config.backoff;
        let mut ok = false;
        for attempt in 1..=ctx.config.handler_attempts.max(1) {
            match (ctx.handler)(rec.clone()).await {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(stream = %ctx.name, partition = p, offset = r.offset, attempt, error = %e, "stream handler failed");
                    if attempt < ctx.config.handler_attempts {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
        if ok {
            ctx.stats.processed.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::error!(stream = %ctx.name, partition = p, offset = r.offset, "record skipped: the handler failed every attempt");
            dropped(DropReason::StreamHandlerFailed, 1);
            ctx.stats.handler_failed.fetch_add(1, Ordering::Relaxed);
        }
        next = r.offset + 1;
        ctx.set_position(p, next);
    }
    next
}

/// Commits `next` if it moved; false when the lease is gone.
async fn do_commit(ctx: &Ctx, p: u32, next: u64, committed: &mut u64, commit: &Commit) -> bool {
    if next == *committed {
        return true;
    }
    let ok = match commit {
        Commit::None => true,
        Commit::Local { store, name } => {
            let (s, n) = (store.clone(), name.clone());
            let pos = Position {
                log_id: ctx.log_id.load(Ordering::Relaxed),
                next,
            };
            match tokio::task::spawn_blocking(move || s.commit(&n, p, pos)).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::error!(stream = %ctx.name, partition = p, error = %e, "could not commit the position");
                    return true; // keep going; the next commit may succeed
                }
                Err(_) => return true,
            }
        }
        Commit::Lease(lease) => {
            let req = StreamRequest::Commit {
                lease: lease.clone(),
                next,
            };
            match ctx.call(&req).await {
                Ok(StreamReply::Ok) => true,
                Ok(StreamReply::Fenced) => return false,
                Ok(other) => {
                    tracing::warn!(stream = %ctx.name, partition = p, reply = ?other, "commit refused");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(stream = %ctx.name, partition = p, error = %e, "commit failed");
                    return true;
                }
            }
        }
    };
    if ok {
        *committed = next;
        ctx.stats.commits.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// A group member: keeps the partitions rendezvous hashing gives it,
/// claimed under the host's leases.
async fn run_group(ctx: Arc<Ctx>, group: &str, partitions: u32, mut stop: watch::Receiver<bool>) {
    let gname = protocol::group_name(&ctx.name, group);
    ctx.node
        .join(gname.clone(), |_: Request<()>| async { Ok(()) });
    let me = ctx.node.id().0;
    let mut running: HashMap<u32, (watch::Sender<bool>, JoinHandle<()>)> = HashMap::new();
    loop {
        running.retain(|_, (_, h)| !h.is_finished());
        let mut members: Vec<u64> = ctx
            .node
            .members()
            .into_iter()
            .filter(|m| m.groups.contains(&gname))
            .filter(|m| ctx.node.peer_state(m.id) == Some(PeerState::Alive))
            .map(|m| m.id.0)
            .collect();
        members.push(me);
        members.sort_unstable();
        members.dedup();
        let mine = group::assigned(me, partitions, &members);
        for (p, (tx, _)) in running.iter() {
            if !mine.contains(p) {
                let _ = tx.send(true);
            }
        }
        for &p in &mine {
            if let std::collections::hash_map::Entry::Vacant(e) = running.entry(p) {
                let (tx, rx) = watch::channel(false);
                let h = tokio::spawn(own_partition(ctx.clone(), group.to_owned(), p, rx));
                e.insert((tx, h));
            }
        }
        *ctx.stats.owned.lock() = {
            let mut v: Vec<u32> = running.keys().copied().collect();
            v.sort_unstable();
            v
        };
        tokio::select! {
            _ = tokio::time::sleep(ctx.config.rebalance) => {}
            _ = stop.changed() => break,
        }
    }
    for (_, (tx, _)) in running.iter() {
        let _ = tx.send(true);
    }
    for (_, (_, h)) in running {
        let _ = h.await;
    }
    ctx.stats.owned.lock().clear();
    ctx.node.leave_group(&gname);
}

/// Claims partition `p` for the group (waiting while another member
/// holds it), follows it under the lease, renews the lease, and releases
/// it when told to stop.
async fn own_partition(ctx: Arc<Ctx>, group: String, p: u32, mut stop: watch::Receiver<bool>) {
    let me = ctx.node.id().0;
    let (token, committed, ttl) = loop {
        let req = StreamRequest::Claim {
            group: group.clone(),
            partition: p,
            member: me,
        };
        match ctx.call_retrying(&req, &mut stop).await {
            None => return,
            Some(StreamReply::Lease {
                token,
                committed,
                ttl_ms,
            }) => break (token, committed, Duration::from_millis(ttl_ms.max(30))),
            Some(StreamReply::Held { retry_ms, .. }) => {
                let wait = Duration::from_millis(retry_ms).min(ctx.config.rebalance);
                tokio::select! {
                    _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
                    _ = stop.changed() => return,
                }
            }
            Some(other) => {
                tracing::warn!(stream = %ctx.name, partition = p, reply = ?other, "claim refused");
                return;
            }
        }
    };
    let lease = LeaseRef {
        group: group.clone(),
        partition: p,
        token,
    };
    let start = match committed {
        Some(c) => c,
        None => match ctx.resolve(p, &mut stop).await {
            Some(s) => s,
            None => {
                let _ = ctx.call(&StreamRequest::Release { lease }).await;
                return;
            }
        },
    };
    // This member processed everything below its own last position in the
    // partition: when a commit was lost (the host restarted before it
    // arrived), go on from there rather than from the older commit.
    let local = ctx.stats.positions.lock().get(&p).copied();
    let start = start.max(local.unwrap_or(0));
    // Renew at a third of the lease; a refusal means it is lost.
    let (lost_tx, lost_rx) = watch::channel(false);
    let renewer = {
        let (ctx, lease) = (ctx.clone(), lease.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match ctx
                    .call(&StreamRequest::Renew {
                        lease: lease.clone(),
                    })
                    .await
                {
                    Ok(StreamReply::Ok) => {}
                    Ok(_) => {
                        let _ = lost_tx.send(true);
                        return;
                    }
                    Err(_) => {} // the host is away; its lease check decides
                }
            }
        })
    };
    worker(
        &ctx,
        p,
        start,
        Commit::Lease(lease.clone()),
        Some(lost_rx.clone()),
        stop,
    )
    .await;
    renewer.abort();
    if !*lost_rx.borrow() {
        let _ = ctx.call(&StreamRequest::Release { lease }).await;
    }
}
