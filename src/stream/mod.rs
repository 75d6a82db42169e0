//! Durable streams without a broker: each producer keeps its streams'
//! logs on its own disk and serves them on the fabric; consumers replay
//! them by offset, follow the live tail, commit their positions, and
//! share partitions in consumer groups.
//!
//! # Parts (each uses only those above it)
//! | module | owns | must not |
//! |---|---|---|
//! | [`log`] | one partition's segment files, index, fsync policy, recovery | know streams, nodes or consumers |
//! | [`store`] | a stream: its partitions, meta file, key → partition | serve or consume |
//! | [`group`] | rendezvous assignment and the lease table (pure) | do I/O |
//! | [`offsets`] | consumer positions in an embedded store (redb) | decide when to commit |
//! | [`protocol`] | the messages of `@stream/<name>` and its tail (pure) | send |
//! | [`client`] | calls to a host: info, remote append, fetch | keep state |
//! | [`host`] | serving a stream on a node, its tail, group leases and commits | process records |
//! | [`consumer`](mod@consumer) | following partitions, committing, groups | write the log |
//!
//! # Guarantees (details in each module and docs/STREAMS.md)
//! - A record acknowledged by an append is in the producer's log as
//!   durable as the stream's [`FsyncPolicy`] says, and
//!   survives a crash of the producer's process.
//! - Consumers get every record of the partitions they own at least once,
//!   in offset order, resume at their committed position after a restart,
//!   and skip (and count) records below it.
//!
//! # Not guaranteed
//! No replication: a stream lives on its producer's disk and is readable
//! while its producer runs. No order across partitions.

pub mod client;
pub mod consumer;
pub mod group;
pub mod host;
pub mod log;
pub mod offsets;
pub mod protocol;
pub mod store;

pub use client::{StreamClient, StreamInfo};
pub use consumer::{
    consumer, ConsumerBuilder, ConsumerConfig, ConsumerHandle, ConsumerStats, StartFrom,
    StreamRecord,
};
pub use host::{HostConfig, StreamHost};
pub use log::{FsyncPolicy, Log, LogConfig, NewRecord, Record};
pub use offsets::{OffsetStore, Position};
pub use store::{Stream, StreamConfig, StreamError};
