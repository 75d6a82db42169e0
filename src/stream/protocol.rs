//! The messages of a stream's service, `@stream/<name>`: what a consumer
//! (or a remote appender) asks the stream's host, and what the host
//! answers. MessagePack maps (rmp-serde, struct maps); the request is
//! tagged by `op`, the reply by `r`. Refusals travel in the reply, not as
//! remote errors, so that they never count against the host's breaker.
//!
//! Pure: no I/O. Normative description: docs/STREAMS.md.

use serde::{Deserialize, Serialize};

use super::log::Record;

/// Services named with this prefix are stream hosts: `@stream/<name>`.
pub const STREAM_SERVICE_PREFIX: &str = "@stream/";

/// Topics with this prefix carry a stream's live tail:
/// `@stream/<name>/<partition>`.
pub const TAIL_TOPIC_PREFIX: &str = "@stream/";

/// Groups with this prefix are a consumer group's members:
/// `@sg/<stream>/<group>`.
pub const GROUP_PREFIX: &str = "@sg/";

/// The service of stream `name`.
pub fn service(name: &str) -> String {
    format!("{STREAM_SERVICE_PREFIX}{name}")
}

/// The tail topic of `name`'s partition `p`.
pub fn tail_topic(name: &str, p: u32) -> String {
    format!("{TAIL_TOPIC_PREFIX}{name}/{p}")
}

/// The tail topic prefix of every partition of `name`.
pub fn tail_prefix(name: &str) -> String {
    format!("{TAIL_TOPIC_PREFIX}{name}/")
}

/// The multicast group of consumer group `group` on stream `name`.
pub fn group_name(name: &str, group: &str) -> String {
    format!("{GROUP_PREFIX}{name}/{group}")
}

/// A lease held by a group member on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRef {
    /// The consumer group.
    pub group: String,
    /// The partition.
    pub partition: u32,
    /// The token the host granted.
    pub token: u64,
}

/// One record to append remotely.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppendItem {
    /// Its message id (0: the host draws one).
    #[serde(default)]
    pub id: u64,
    /// Its body (MessagePack or opaque bytes).
    pub body: serde_bytes::ByteBuf,
}

/// A request to a stream host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StreamRequest {
    /// The stream's extent.
    Info,
    /// Records of `partition` from offset `from`.
    Fetch {
        /// The partition.
        partition: u32,
        /// The first offset wanted.
        from: u64,
        /// At most this many records.
        max_records: u32,
        /// About this many bytes of bodies (at least one record).
        max_bytes: u32,
        /// For a group member: its lease (a stale one is refused).
        #[serde(default)]
        lease: Option<LeaseRef>,
    },
    /// Appends records, in order, to one partition: `partition`, or the
    /// one `key` maps to, or partition 0.
    Append {
        /// An explicit partition.
        #[serde(default)]
        partition: Option<u32>,
        /// A key to choose the partition by.
        #[serde(default)]
        key: Option<serde_bytes::ByteBuf>,
        /// The records.
        records: Vec<AppendItem>,
    },
    /// The first offset at or after a time.
    OffsetForTime {
        /// The partition.
        partition: u32,
        /// Milliseconds since the Unix epoch.
        timestamp_ms: u64,
    },
    /// Claims `partition` for a member of `group`.
    Claim {
        /// The consumer group.
        group: String,
        /// The partition.
        partition: u32,
        /// The member (its peer id).
        member: u64,
    },
    /// Extends a lease.
    Renew {
        /// The lease.
        lease: LeaseRef,
    },
    /// Gives a lease up.
    Release {
        /// The lease.
        lease: LeaseRef,
    },
    /// Commits the group's position under a lease: every record before
    /// `next` was processed.
    Commit {
        /// The lease.
        lease: LeaseRef,
        /// The next offset to process.
        next: u64,
    },
}

/// A record on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    /// Its offset.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
    /// Its message id.
    pub id: u64,
    /// Its `traceparent`.
    #[serde(default)]
    pub tp: Option<String>,
    /// Its body.
    pub body: serde_bytes::ByteBuf,
}

impl From<&Record> for WireRecord {
    fn from(r: &Record) -> Self {
        WireRecord {
            offset: r.offset,
            ts: r.timestamp_ms,
            id: r.id,
            tp: r.traceparent.as_deref().map(str::to_owned),
            body: serde_bytes::ByteBuf::from(r.body.to_vec()),
        }
    }
}

impl From<WireRecord> for Record {
    fn from(w: WireRecord) -> Self {
        Record {
            offset: w.offset,
            timestamp_ms: w.ts,
            id: w.id,
            traceparent: w.tp.map(std::sync::Arc::from),
            body: bytes::Bytes::from(w.body.into_vec()),
        }
    }
}

/// One partition's extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionExtent {
    /// The oldest offset kept.
    pub start: u64,
    /// The next offset to be written.
    pub end: u64,
}

/// A stream host's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum StreamReply {
    /// The stream's extent.
    Info {
        /// Its log id.
        log_id: u64,
        /// Each partition's extent.
        partitions: Vec<PartitionExtent>,
    },
    /// Records (possibly none: the consumer is at the end).
    Records {
        /// The log id.
        log_id: u64,
        /// The partition.
        partition: u32,
        /// Its extent when read.
        extent: PartitionExtent,
        /// The records, in offset order.
        records: Vec<WireRecord>,
    },
    /// Records appended.
    Appended {
        /// The partition.
        partition: u32,
        /// The first one's offset.
        first: u64,
        /// How many.
        count: u32,
    },
    /// An offset.
    Offset {
        /// The offset.
        offset: u64,
    },
    /// A lease granted, with the group's committed position.
    Lease {
        /// The token.
        token: u64,
        /// The group's committed next offset, if any.
        committed: Option<u64>,
        /// How long the lease lasts unless renewed.
        ttl_ms: u64,
    },
    /// Done.
    Ok,
    /// The offset is outside what the log keeps.
    OutOfRange {
        /// The partition's extent.
        extent: PartitionExtent,
    },
    /// No such partition.
    NoPartition {
        /// How many the stream has.
        partitions: u32,
    },
    /// Another member holds the lease.
    Held {
        /// The holder.
        member: u64,
        /// Until its lease runs out, unless renewed.
        retry_ms: u64,
    },
    /// The lease is not current (expired, released, superseded, or the
    /// host restarted): claim again.
    Fenced,
    /// The host could not do it (its log or store failed; the reason says
    /// why).
    Failed {
        /// Why.
        reason: String,
    },
}

/// The record tail published on `@stream/<name>/<partition>`: records
/// just appended, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TailBatch {
    /// The log id.
    pub log_id: u64,
    /// The partition.
    pub partition: u32,
    /// The records.
    pub records: Vec<WireRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_body, encode_body};

    #[test]
    fn requests_and_replies_round_trip_as_tagged_maps() {
        let reqs = [
            StreamRequest::Info,
            StreamRequest::Fetch {
                partition: 2,
                from: 7,
                max_records: 10,
                max_bytes: 4096,
                lease: Some(LeaseRef {
                    group: "g".into(),
                    partition: 2,
                    token: 5,
                }),
            },
            StreamRequest::Commit {
                lease: LeaseRef {
                    group: "g".into(),
                    partition: 0,
                    token: 1,
                },
                next: 9,
            },
        ];
        for r in reqs {
            let b = encode_body(&r).unwrap();
            let back: StreamRequest = decode_body(&b).unwrap();
            assert_eq!(format!("{r:?}"), format!("{back:?}"));
        }
        let b = encode_body(&StreamReply::Held {
            member: 3,
            retry_ms: 10,
        })
        .unwrap();
        assert!(matches!(
            decode_body::<StreamReply>(&b).unwrap(),
            StreamReply::Held { member: 3, .. }
        ));
        // A request without the optional fields decodes (older senders).
        let b = encode_body(&serde_json::json!({"op": "fetch", "partition": 0, "from": 1, "max_records": 1, "max_bytes": 1})).unwrap();
        assert!(matches!(
            decode_body::<StreamRequest>(&b).unwrap(),
            StreamRequest::Fetch { lease: None, .. }
        ));
        // An unknown op is an error, not a panic.
        let b = encode_body(&serde_json::json!({"op": "drop_table"})).unwrap();
        assert!(decode_body::<StreamRequest>(&b).is_err());
    }
}
