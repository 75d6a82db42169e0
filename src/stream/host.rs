//! A stream's host: the producer's node serves its stream's log on the
//! fabric (`@stream/<name>`: info, fetch, append, time lookup, group
//! leases and commits) and publishes every record appended on the live
//! tail (`@stream/<name>/<partition>`).
//!
//! # Guarantees
//! - A fetch returns only records the log has acknowledged (durable as
//!   the stream's fsync policy says), in offset order, never beyond the
//!   end.
//! - A group's committed position is in the host's offset store
//!   (`groups.redb` in the stream's directory) before the commit is
//!   answered; it survives restarts of the host. A commit under a lease
//!   that is not current is refused (`fenced`).
//! - Appends through the service are acknowledged only once durable.
//!
//! # Not guaranteed
//! The live tail is at most once (fabric publish): a consumer that misses
//! part of it finds the gap by offset and fetches it. Leases live in the
//! host's memory: a restarted host fences every lease, and the group's
//! members claim again (their committed positions are kept). One host per
//! stream name: a second host of the same name is a different log (its
//! log id differs, and consumers refuse to mix them).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::group::{LeaseRefusal, LeaseTable};
use super::log::{LogError, NewRecord};
use super::offsets::{OffsetStore, Position};
use super::protocol::{
    self, LeaseRef, PartitionExtent, StreamReply, StreamRequest, TailBatch, WireRecord,
};
use super::store::Stream;
use crate::node::{NodeBuilder, NodeHandle, ServeOptions};
use crate::{RemoteError, Request};

/// Counter: records published on streams' live tails, by `stream`.
pub const STREAM_TAIL_RECORDS: &str = "zfabric_stream_tail_records_total";

/// The most records one fetch returns.
pub const MAX_FETCH_RECORDS: u32 = 4096;
/// The most bytes of bodies one fetch returns (beyond its first record).
pub const MAX_FETCH_BYTES: u32 = 4 * 1024 * 1024;
/// Records per tail batch.
const TAIL_BATCH: usize = 256;

/// How a host keeps group leases.
#[derive(Debug, Clone, Copy)]
pub struct HostConfig {
    /// A lease lasts this long without renewal (members renew at a third
    /// of it); a dead member's partitions move after it. Default 3 s.
    pub lease_ttl: Duration,
    /// How long a tail publish waits for each subscriber. Default 1 s.
    pub tail_timeout: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            lease_ttl: Duration::from_secs(3),
            tail_timeout: Duration::from_secs(1),
        }
    }
}

/// Why a stream could not be hosted.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The group offset store failed to open.
    #[error(transparent)]
    Offsets(#[from] super::offsets::OffsetError),
}

/// A stream made ready to serve.
#[derive(Clone)]
pub struct StreamHost {
    inner: Arc<Inner>,
}

struct Inner {
    stream: Stream,
    groups: OffsetStore,
    leases: Mutex<LeaseTable>,
    config: HostConfig,
}

impl std::fmt::Debug for StreamHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHost")
            .field("stream", &self.inner.stream)
            .finish()
    }
}

impl StreamHost {
    /// Hosts `stream`; group positions go to `groups.redb` in its
    /// directory.
    pub fn new(stream: Stream, config: HostConfig) -> Result<Self, HostError> {
        let groups = OffsetStore::open(&stream.dir().join("groups.redb"))?;
        Ok(StreamHost {
            inner: Arc::new(Inner {
                leases: Mutex::new(LeaseTable::new(
                    config.lease_ttl,
                    crate::wire::random_u64() >> 1,
                )),
                stream,
                groups,
                config,
            }),
        })
    }

    /// The stream.
    pub fn stream(&self) -> &Stream {
        &self.inner.stream
    }

    /// Serves the stream on the node `builder` will start, and publishes
    /// its live tail once that node runs (until it stops or the stream is
    /// closed).
    ///
    /// # Panics
    /// Outside a tokio runtime (the tail tasks are spawned here).
    pub fn serve_on(&self, builder: NodeBuilder) -> NodeBuilder {
        let handle = builder.handle();
        for p in 0..self.inner.stream.partitions() {
            if let Ok(log) = self.inner.stream.partition(p) {
                let t = Tail {
                    log: log.clone(),
                    topic: protocol::tail_topic(self.inner.stream.name(), p),
                    name: self.inner.stream.name().to_owned(),
                    log_id: self.inner.stream.log_id(),
                    partition: p,
                    timeout: self.inner.config.tail_timeout,
                };
                tokio::spawn(tail(t, handle.clone()));
            }
        }
        let inner = self.inner.clone();
        builder.serve_with(
            protocol::service(self.inner.stream.name()),
            ServeOptions::default(),
            move |req: Request<StreamRequest>| {
                let inner = inner.clone();
                async move { Ok::<_, RemoteError>(handle_request(&inner, req).await) }
            },
        )
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn extent(stream: &Stream, p: u32) -> Option<PartitionExtent> {
    stream.partition(p).ok().map(|l| {
        let i = l.info();
        PartitionExtent {
            start: i.start,
            end: i.end,
        }
    })
}

fn failed(e: impl std::fmt::Display) -> StreamReply {
    StreamReply::Failed {
        reason: e.to_string(),
    }
}

async fn handle_request(inner: &Arc<Inner>, req: Request<StreamRequest>) -> StreamReply {
    let s = &inner.stream;
    let no_partition = || StreamReply::NoPartition {
        partitions: s.partitions(),
    };
    match req.body {
        StreamRequest::Info => StreamReply::Info {
            log_id: s.log_id(),
            partitions: (0..s.partitions()).filter_map(|p| extent(s, p)).collect(),
        },
        StreamRequest::Fetch {
            partition,
            from,
            max_records,
            max_bytes,
            lease,
        } => {
            let Ok(log) = s.partition(partition) else {
                return no_partition();
            };
            if let Some(l) = &lease {
                if l.partition != partition
                    || !inner
                        .leases
                        .lock()
                        .check(&l.group, partition, l.token, now())
                {
                    return StreamReply::Fenced;
                }
            }
            let log = log.clone();
            let (n, b) = (
                max_records.clamp(1, MAX_FETCH_RECORDS) as usize,
                max_bytes.min(MAX_FETCH_BYTES) as usize,
            );
            let read = tokio::task::spawn_blocking(move || {
                let recs = log.read(from, n, b);
                (recs, log.info())
            })
            .await;
            match read {
                Ok((Ok(recs), info)) => StreamReply::Records {
                    log_id: s.log_id(),
                    partition,
                    extent: PartitionExtent {
                        start: info.start,
                        end: info.end,
                    },
                    records: recs.iter().map(WireRecord::from).collect(),
                },
                Ok((Err(LogError::OutOfRange { start, end, .. }), _)) => StreamReply::OutOfRange {
                    extent: PartitionExtent { start, end },
                },
                Ok((Err(e), _)) => failed(e),
                Err(e) => failed(e),
            }
        }
        StreamRequest::Append {
            partition,
            key,
            records,
        } => {
            let p = match (partition, key) {
                (Some(p), _) => p,
                (None, Some(k)) => s.partition_for_key(&k),
                (None, None) => 0,
            };
            let Ok(log) = s.partition(p) else {
                return no_partition();
            };
            if records.is_empty() {
                return StreamReply::Appended {
                    partition: p,
                    first: log.info().end,
                    count: 0,
                };
            }
            let tp = req.header.traceparent.clone();
            let count = records.len() as u32;
            let batch = records
                .into_iter()
                .map(|r| NewRecord {
                    id: if r.id == 0 {
                        crate::wire::random_u64() | 1
                    } else {
                        r.id
                    },
                    traceparent: tp.clone(),
                    timestamp_ms: None,
                    body: Bytes::from(r.body.into_vec()),
                })
                .collect();
            match log.append_batch(batch).await {
                Ok(range) => StreamReply::Appended {
                    partition: p,
                    first: range.start,
                    count,
                },
                Err(e) => failed(e),
            }
        }
        StreamRequest::OffsetForTime {
            partition,
            timestamp_ms,
        } => {
            let Ok(log) = s.partition(partition) else {
                return no_partition();
            };
            let log = log.clone();
            match tokio::task::spawn_blocking(move || log.offset_for_time(timestamp_ms)).await {
                Ok(Ok(offset)) => StreamReply::Offset { offset },
                Ok(Err(e)) => failed(e),
                Err(e) => failed(e),
            }
        }
        StreamRequest::Claim {
            group,
            partition,
            member,
        } => {
            if partition >= s.partitions() {
                return no_partition();
            }
            let claimed = inner.leases.lock().claim(&group, partition, member, now());
            match claimed {
                Ok(token) => {
                    let store = inner.groups.clone();
                    let (g, log_id) = (group.clone(), s.log_id());
                    let committed =
                        tokio::task::spawn_blocking(move || store.get(&g, partition)).await;
                    match committed {
                        Ok(Ok(pos)) => StreamReply::Lease {
                            token,
                            committed: pos.filter(|p| p.log_id == log_id).map(|p| p.next),
                            ttl_ms: inner.config.lease_ttl.as_millis() as u64,
                        },
                        Ok(Err(e)) => {
                            inner.leases.lock().release(&group, partition, token);
                            failed(e)
                        }
                        Err(e) => {
                            inner.leases.lock().release(&group, partition, token);
                            failed(e)
                        }
                    }
                }
                Err(LeaseRefusal::Held { member, remaining }) => StreamReply::Held {
                    member,
                    retry_ms: remaining.as_millis() as u64,
                },
                Err(LeaseRefusal::Fenced) => StreamReply::Fenced,
            }
        }
        StreamRequest::Renew { lease } => {
            match inner
                .leases
                .lock()
                .renew(&lease.group, lease.partition, lease.token, now())
            {
                Ok(()) => StreamReply::Ok,
                Err(_) => StreamReply::Fenced,
            }
        }
        StreamRequest::Release { lease } => {
            inner
                .leases
                .lock()
                .release(&lease.group, lease.partition, lease.token);
            StreamReply::Ok
        }
        StreamRequest::Commit { lease, next } => commit(inner, lease, next).await,
    }
}

async fn commit(inner: &Arc<Inner>, lease: LeaseRef, next: u64) -> StreamReply {
    if !inner
        .leases
        .lock()
        .check(&lease.group, lease.partition, lease.token, now())
    {
        return StreamReply::Fenced;
    }
    let store = inner.groups.clone();
    let pos = Position {
        log_id: inner.stream.log_id(),
        next,
    };
    match tokio::task::spawn_blocking(move || store.commit(&lease.group, lease.partition, pos))
        .await
    {
        Ok(Ok(())) => StreamReply::Ok,
        Ok(Err(e)) => failed(e),
        Err(e) => failed(e),
    }
}

/// What a tail task needs (not the host itself: a host whose node has
/// stopped is dropped, and its offset store closed, while the log lives).
struct Tail {
    log: super::log::Log,
    topic: String,
    name: String,
    log_id: u64,
    partition: u32,
    timeout: Duration,
}

/// Publishes one partition's new records on its tail topic while the
/// node runs. Reads what each append made visible; a publish nobody takes
/// costs a membership scan.
async fn tail(t: Tail, handle: NodeHandle) {
    let mut end = t.log.watch_end();
    let mut next = *end.borrow_and_update();
    let mut started = false;
    while end.changed().await.is_ok() {
        let upto = *end.borrow_and_update();
        let node = match handle.node() {
            Some(n) => {
                started = true;
                n
            }
            None if started => return, // the node stopped
            None => {
                next = upto; // not running yet: consumers fetch
                continue;
            }
        };
        while next < upto {
            let l = t.log.clone();
            let from = next;
            let Ok(Ok(recs)) =
                tokio::task::spawn_blocking(move || l.read(from, TAIL_BATCH, 1 << 20)).await
            else {
                next = upto; // unreadable (retention moved on): consumers fetch
                break;
            };
            let Some(last) = recs.last() else { break };
            next = last.offset + 1;
            let batch = TailBatch {
                log_id: t.log_id,
                partition: t.partition,
                records: recs.iter().map(WireRecord::from).collect(),
            };
            if let Ok(n) = node.publish(&t.topic, &batch, t.timeout).await {
                if n > 0 {
                    metrics::counter!(STREAM_TAIL_RECORDS, "stream" => t.name.clone())
                        .increment(recs.len() as u64);
                }
            }
        }
    }
}
