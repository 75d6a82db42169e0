//! A stream on disk: a fixed number of partitions, each a [`Log`], under
//! one directory with a small meta file naming the partition count and
//! the stream's log id.
//!
//! # Guarantees
//! - Reopening a stream keeps its partitions and log id; opening it with
//!   a different partition count is refused ([`StreamError::Partitions`]),
//!   never silently re-partitioned.
//! - [`Stream::partition_for_key`] maps a key to the same partition in
//!   every process and version (CRC32C of the key).
//!
//! # Not guaranteed
//! Order across partitions. One process keeps a stream at a time: each
//! partition's log locks its directory, so a second opener fails with
//! an I/O error instead of writing beside the first.

use std::path::{Path, PathBuf};

use super::log::{Log, LogConfig, LogError, NewRecord, Recovery};

/// The meta file of a stream directory.
const META: &str = "stream.meta";

/// The most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// How a stream is kept.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Partitions (fixed when the stream is created; 1 by default).
    pub partitions: u32,
    /// How each partition's log is kept.
    pub log: LogConfig,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            partitions: 1,
            log: LogConfig::default(),
        }
    }
}

/// Why a stream could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A name outside `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid stream name {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    Name(String),
    /// The directory holds the stream with another partition count.
    #[error("stream {name} has {found} partitions on disk, {wanted} were configured")]
    Partitions {
        /// The stream.
        name: String,
        /// On disk.
        found: u32,
        /// Configured.
        wanted: u32,
    },
    /// A partition count of 0 or over [`MAX_PARTITIONS`].
    #[error("a stream needs 1 to {MAX_PARTITIONS} partitions, not {0}")]
    PartitionCount(u32),
    /// A partition that does not exist.
    #[error("stream {name} has no partition {partition} (it has {partitions})")]
    NoPartition {
        /// The stream.
        name: String,
        /// Asked for.
        partition: u32,
        /// It has.
        partitions: u32,
    },
    /// The meta file is unreadable.
    #[error("stream meta file {path}: {reason}")]
    Meta {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A partition's log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Checks a stream name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn check_name(name: &str) -> Result<(), StreamError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StreamError::Name(name.to_owned()))
    }
}

/// A stream: its partitions' logs.
#[derive(Clone)]
pub struct Stream {
    name: String,
    dir: PathBuf,
    log_id: u64,
    partitions: Vec<Log>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

impl Stream {
    /// Opens (creating) stream `name` in `dir` (its own directory:
    /// `dir/p0000`, `dir/p0001`, ... and the meta file), recovering each
    /// partition; returns what recovery found, per partition.
    pub fn open(
        dir: &Path,
        name: &str,
        config: StreamConfig,
    ) -> Result<(Stream, Vec<Recovery>), StreamError> {
        check_name(name)?;
        if config.partitions == 0 || config.partitions > MAX_PARTITIONS {
            return Err(StreamError::PartitionCount(config.partitions));
        }
        std::fs::create_dir_all(dir).map_err(LogError::Io)?;
        let meta = dir.join(META);
        let log_id = match std::fs::read_to_string(&meta) {
            Ok(text) => {
                let (found, id) = parse_meta(&text).ok_or_else(|| StreamError::Meta {
                    path: meta.clone(),
                    reason: "not a zfabric stream meta file".into(),
                })?;
                if found != config.partitions {
                    return Err(StreamError::Partitions {
                        name: name.to_owned(),
                        found,
                        wanted: config.partitions,
                    });
                }
                id
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = crate::wire::random_u64() | 1;
                write_meta(&meta, config.partitions, id).map_err(LogError::Io)?;
                id
            }
            Err(e) => return Err(LogError::Io(e).into()),
        };
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        let mut recoveries = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let (log, rec) = Log::open(&dir.join(format!("p{p:04}")), config.log.clone())?;
            partitions.push(log);
            recoveries.push(rec);
        }
        Ok((
            Stream {
                name: name.to_owned(),
                dir: dir.to_owned(),
                log_id,
                partitions,
            },
            recoveries,
        ))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log id: random at creation, kept on disk; a stream recreated
    /// under the same name has a new one.
    pub fn log_id(&self) -> u64 {
        self.log_id
    }

    /// How many partitions it has.
    pub fn partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Partition `p`'s log.
    pub fn partition(&self, p: u32) -> Result<&Log, StreamError> {
        self.partitions
            .get(p as usize)
            .ok_or_else(|| StreamError::NoPartition {
                name: self.name.clone(),
                partition: p,
                partitions: self.partitions(),
            })
    }

    /// The partition a key goes to.
    pub fn partition_for_key(&self, key: &[u8]) -> u32 {
        crc32c::crc32c(key) % self.partitions()
    }

    /// Appends `record` to partition `p` (durable as its policy says);
    /// returns its offset.
    pub async fn append(&self, p: u32, record: NewRecord) -> Result<u64, StreamError> {
        Ok(self.partition(p)?.append(record).await?)
    }

    /// Writes what is pending and stops every partition's writer.
    pub fn close(&self) -> Result<(), StreamError> {
        for log in &self.partitions {
            log.close()?;
        }
        Ok(())
    }
}

fn parse_meta(text: &str) -> Option<(u32, u64)> {
    let mut lines = text.lines();
    if lines.next()? != "zfabric-stream 1" {
        return None;
    }
    let (mut partitions, mut id) = (None, None);
    for line in lines {
        match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("partitions", v)) => partitions = v.parse().ok(),
            Some(("log_id", v)) => id = u64::from_str_radix(v, 16).ok(),
            _ => {}
        }
    }
    Some((partitions?, id?))
}

/// Writes the meta file atomically (a temporary file, fsynced, renamed).
fn write_meta(path: &Path, partitions: u32, id: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    write!(
        f,
        "zfabric-stream 1\npartitions = {partitions}\nlog_id = {id:016x}\n"
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("orders.v2_eu-1").is_ok());
        for bad in ["", "a/b", "..x/", &"x".repeat(65), "sp ace"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_meta_file_round_trips_and_junk_is_refused() {
        assert_eq!(
            parse_meta("zfabric-stream 1\npartitions = 4\nlog_id = 00000000000000ff\n"),
            Some((4, 255))
        );
        assert_eq!(parse_meta("partitions = 4\n"), None);
        assert_eq!(
            parse_meta("zfabric-stream 1\npartitions = x\nlog_id = 1\n"),
            None
        );
    }
}
