//! Calls to a stream's host from anywhere on the fabric: its extent,
//! remote appends, reads. For tools and producers that do not keep the
//! log themselves (`zfabric stream append | info`).
//!
//! # Guarantees
//! An append that returns `Ok` is in the host's log, durable as the
//! stream's fsync policy says. An append that fails with a timeout or a
//! lost peer may or may not have been written (it is not retried: that
//! could write it twice); the error says which it was.

use std::time::Duration;

use bytes::Bytes;

use super::log::Record;
use super::protocol::{self, AppendItem, PartitionExtent, StreamReply, StreamRequest};
use crate::node::{CallError, CallOptions, Node};

/// Why a call to a stream's host failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The call did not get an answer (no host serves the stream, it went
    /// away, the deadline passed).
    #[error("stream host: {0}")]
    Call(#[from] CallError),
    /// The host has no such partition.
    #[error("no partition {partition}: the stream has {partitions}")]
    NoPartition {
        /// Asked for.
        partition: u32,
        /// It has.
        partitions: u32,
    },
    /// The offset is outside what the host keeps.
    #[error("offset {offset} is outside the partition ({}..{})", .extent.start, .extent.end)]
    OutOfRange {
        /// Asked for.
        offset: u64,
        /// What it keeps.
        extent: PartitionExtent,
    },
    /// The host failed (its log or store); the reason says why.
    #[error("stream host failed: {0}")]
    Failed(String),
    /// An answer that does not fit the question.
    #[error("unexpected reply from the stream host: {0}")]
    Unexpected(String),
}

/// A stream's extent as its host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its log id.
    pub log_id: u64,
    /// Each partition's extent.
    pub partitions: Vec<PartitionExtent>,
}

/// Where appended records went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The partition.
    pub partition: u32,
    /// The first record's offset.
    pub first: u64,
    /// How many.
    pub count: u32,
}

/// Where to append.
#[derive(Debug, Clone, Default)]
pub enum Target {
    /// Partition 0.
    #[default]
    First,
    /// This partition.
    Partition(u32),
    /// The partition this key maps to.
    Key(Vec<u8>),
}

/// A client of stream `name`'s host, through `node`.
#[derive(Debug)]
pub struct StreamClient<'a> {
    node: &'a Node,
    service: String,
    timeout: Duration,
}

impl<'a> StreamClient<'a> {
    /// A client of stream `name`; each call waits up to `timeout`.
    pub fn new(node: &'a Node, name: &str, timeout: Duration) -> Self {
        StreamClient {
            node,
            service: protocol::service(name),
            timeout,
        }
    }

    async fn call(
        &self,
        req: &StreamRequest,
        idempotent: bool,
    ) -> Result<StreamReply, ClientError> {
        let mut opts = CallOptions::default().timeout(self.timeout);
        if idempotent {
            opts = opts.idempotent();
        }
        match self.node.request_with(&self.service, req, opts).await? {
            StreamReply::Failed { reason } => Err(ClientError::Failed(reason)),
            StreamReply::NoPartition { partitions } => Err(ClientError::NoPartition {
                partition: match req {
                    StreamRequest::Fetch { partition, .. }
                    | StreamRequest::OffsetForTime { partition, .. } => *partition,
                    StreamRequest::Append {
                        partition: Some(p), ..
                    } => *p,
                    _ => 0,
                },
                partitions,
            }),
            r => Ok(r),
        }
    }

    /// The stream's extent.
    pub async fn info(&self) -> Result<StreamInfo, ClientError> {
        match self.call(&StreamRequest::Info, true).await? {
            StreamReply::Info { log_id, partitions } => Ok(StreamInfo { log_id, partitions }),
            r => Err(ClientError::Unexpected(format!("{r:?}"))),
        }
    }

    /// Appends `bodies` in order to one partition; returns where they
    /// went once the host has them durably. Not retried.
    pub async fn append(
        &self,
        target: Target,
        bodies: Vec<Bytes>,
    ) -> Result<Appended, ClientError> {
        let (partition, key) = match target {
            Target::First => (None, None),
            Target::Partition(p) => (Some(p), None),
            Target::Key(k) => (None, Some(serde_bytes::ByteBuf::from(k))),
        };
        let req = StreamRequest::Append {
            partition,
            key,
            records: bodies
                .into_iter()
                .map(|b| AppendItem {
                    id: 0,
                    body: serde_bytes::ByteBuf::from(b.to_vec()),
                })
                .collect(),
        };
        match self.call(&req, false).await? {
            StreamReply::Appended {
                partition,
                first,
                count,
            } => Ok(Appended {
                partition,
                first,
                count,
            }),
            r => Err(ClientError::Unexpected(format!("{r:?}"))),
        }
    }

    /// Up to `max_records` records of `partition` from `from`.
    pub async fn fetch(
        &self,
        partition: u32,
        from: u64,
        max_records: u32,
    ) -> Result<Vec<Record>, ClientError> {
        let req = StreamRequest::Fetch {
            partition,
            from,
            max_records,
            max_bytes: 1 << 20,
            lease: None,
        };
        match self.call(&req, true).await? {
            StreamReply::Records { records, .. } => {
                Ok(records.into_iter().map(Record::from).collect())
            }
            StreamReply::OutOfRange { extent } => Err(ClientError::OutOfRange {
                offset: from,
                extent,
            }),
            r => Err(ClientError::Unexpected(format!("{r:?}"))),
        }
    }
}
