//! One partition's append-only log on disk: segment files of records, a
//! sparse offset index per segment, rolling, retention, an fsync policy,
//! and recovery of a torn tail.
//!
//! A log is a directory of segments, each a `.log` file of records named
//! by the offset of its first record (`00000000000000000000.log`) and a
//! sparse `.idx` beside it (`record.rs` gives the record layout:
//! length, CRC32C, offset, timestamp, message id, traceparent, body).
//! Offsets are dense: 0, 1, 2, ... One writer thread owns the files:
//! [`Log::append`] hands it the records over a channel (at most
//! [`MAX_QUEUED_APPENDS`] queued; more wait for a slot) and awaits its
//! answer. Reads ([`Log::read`], [`Log::offset_for_time`]) run on the
//! caller's thread with positioned reads (`pread`), binary-searching the
//! segments by base offset, then the segment's index, then scanning.
//!
//! # What it guarantees
//!
//! - An acknowledged record (its `append` returned `Ok`) survives the
//!   process dying (a panic, `SIGKILL`): under every policy it is in the
//!   kernel before the answer. Under [`FsyncPolicy::Always`] and
//!   [`FsyncPolicy::GroupCommit`] it was also fsynced (`fdatasync`)
//!   before the answer, so it survives an OS crash or a power loss as far
//!   as the disk honours fsync. Records are visible to readers (and in
//!   [`Log::watch_end`]) only once acknowledged, so a reader never sees a
//!   record that a crash could take back.
//! - The records of one append (or [`Log::append_batch`]) are visible
//!   together, and recovery keeps whole batches only.
//! - Recovery ([`Log::open`]) scans the last segment, cuts its tail at
//!   the first record with a bad length, checksum or offset (and back to
//!   the end of the last whole batch), reports it in [`Recovery`], and
//!   rebuilds a missing or damaged index. Damage found by a read anywhere
//!   else is [`LogError::Corrupt`]. No input, on disk or through the API,
//!   makes it panic.
//! - Retention deletes whole segments, oldest first, never the one being
//!   written; [`LogInfo::start`] moves with it and reads below it are
//!   [`LogError::OutOfRange`].
//! - One process at a time: `open` takes an exclusive lock on the
//!   directory's `.lock` file, and a second `open` fails with an I/O
//!   error of kind `WouldBlock`.
//!
//! # What it does not
//!
//! - Replicate: a lost disk is a lost log.
//! - Survive a disk (or a virtual disk) that acknowledges a flush it did
//!   not make.
//! - Under [`FsyncPolicy::Os`], keep the most recent records through an
//!   OS crash or power loss: whatever the kernel had not written back is
//!   lost (recovery then cuts the torn tail).
//! - Keep an append that was cancelled from being written: once queued it
//!   is written, whether or not anyone awaits its answer.
//! - Detect damage in an older segment before a read reaches it (open
//!   only checks that its index agrees with the end of the file).
//! - Delete by age while no appends arrive: retention by age is checked
//!   about once a second by the writer and whenever a segment rolls, but the
//!   segment being written is never deleted, however old.

mod record;
mod segment;
mod writer;

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, watch, Semaphore};

pub use record::DecodeError;
use segment::{FrameError, Frames, IndexEntry};
use writer::{Msg, Records, Writer};

/// Records acknowledged by stream logs, all logs of the process (a counter).
pub const STREAM_APPENDED_RECORDS: &str = "zfabric_stream_appended_records_total";
/// fsyncs of stream log segments, all logs of the process (a counter).
pub const STREAM_FSYNCS: &str = "zfabric_stream_fsyncs_total";
/// Bytes cut off torn or corrupt tails when stream logs were opened (a counter).
pub const STREAM_TRUNCATED_BYTES: &str = "zfabric_stream_truncated_bytes_total";

/// How many appends may wait for the writer thread at once; further
/// ones wait (asynchronously) for a slot.
pub const MAX_QUEUED_APPENDS: usize = 4096;

/// When an append is made durable (fsync) before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is on disk (written and fsynced) before it returns.
    /// Appends that arrive while an fsync runs share the next one.
    Always,
    /// Appends are gathered for at most `interval` after the first of a
    /// group arrives, then written and fsynced together (earlier when
    /// 8 MiB are gathered). An append returns after the fsync that
    /// covers it: at most `interval` plus one write and one fsync after
    /// it arrived. Durable like `Always`; fewer fsyncs and wake-ups for
    /// up to `interval` more latency.
    GroupCommit {
        /// The longest a record waits for its fsync.
        interval: Duration,
    },
    /// Written to the OS (survives the process dying, not the machine);
    /// returns after `write(2)`.
    Os,
}

/// How a partition's log is kept.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment rolls when it would grow beyond this (default 64 MiB).
    pub segment_bytes: u64,
    /// A segment rolls when its first record is older than this.
    pub segment_age: Option<Duration>,
    /// Oldest whole segments are deleted while the log is larger.
    pub retention_bytes: Option<u64>,
    /// Whole segments whose newest record is older are deleted.
    pub retention_age: Option<Duration>,
    /// See [`FsyncPolicy`].
    pub fsync: FsyncPolicy,
    /// One index entry per this many bytes of records (default 4 KiB).
    pub index_interval_bytes: u32,
    /// The largest body accepted (default 1 MiB).
    pub max_record_bytes: u32,
}

/// A record to append.
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    /// The message id (an idempotency key for consumers).
    pub id: u64,
    /// The W3C `traceparent` it was appended under.
    pub traceparent: Option<Arc<str>>,
    /// Milliseconds since the Unix epoch; `None`: now.
    pub timestamp_ms: Option<u64>,
    /// Its body.
    pub body: Bytes,
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its offset in the partition (dense: 0, 1, 2, ...).
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Its message id.
    pub id: u64,
    /// The `traceparent` it was appended under.
    pub traceparent: Option<Arc<str>>,
    /// Its body.
    pub body: Bytes,
}

/// What opening found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments found.
    pub segments: usize,
    /// Valid records found.
    pub records: u64,
    /// Bytes cut off a torn or corrupt tail.
    pub truncated_bytes: u64,
    /// The file that was cut, if any.
    pub truncated_file: Option<PathBuf>,
}

/// A partition's extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogInfo {
    /// The oldest offset still kept.
    pub start: u64,
    /// The next offset to be written (= the visible end).
    pub end: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of records on disk.
    pub bytes: u64,
}

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file system refused.
    #[error("stream log i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A body over `max_record_bytes` (`limit`), a traceparent over 255
    /// bytes (`limit` 255), or a batch over 1 GiB encoded.
    #[error("record of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: u32,
    },
    /// An offset outside what the log keeps.
    #[error("offset {requested} is outside the log ({start}..{end})")]
    OutOfRange {
        /// Asked for.
        requested: u64,
        /// The oldest kept.
        start: u64,
        /// The next to be written.
        end: u64,
    },
    /// Corruption found while reading (not at the tail, which
    /// [`Log::open`] cuts): a record that does not decode, has the wrong
    /// offset, or is missing where the index or the next segment says it
    /// should be.
    #[error("corrupt record in {file} at byte {position}")]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Where.
        position: u64,
    },
    /// The log was closed.
    #[error("the stream log is closed")]
    Closed,
}

impl Default for LogConfig {
    /// Tuned for a stream of small to medium events on an SSD: 64 MiB
    /// segments (a few file handles for gigabytes, and retention in
    /// 64 MiB steps), no rolling by age, no retention, group commit
    /// every 5 ms (the durability of [`FsyncPolicy::Always`] for at most
    /// 5 ms more latency, with at most 200 fsyncs a second), an index
    /// entry per 4 KiB (a lookup scans at most about 4 KiB; 16 bytes of
    /// index in memory per 4 KiB of log), bodies up to 1 MiB.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
            segment_age: None,
            retention_bytes: None,
            retention_age: None,
            fsync: FsyncPolicy::GroupCommit {
                interval: Duration::from_millis(5),
            },
            index_interval_bytes: 4096,
            max_record_bytes: 1 << 20,
        }
    }
}

/// A segment as readers see it: only acknowledged records.
#[derive(Debug)]
pub(crate) struct SegView {
    /// Its base offset.
    pub(crate) base: u64,
    /// Its `.log` file's path (for errors).
    pub(crate) path: Arc<Path>,
    /// The `.log`, for `pread`.
    pub(crate) file: Arc<File>,
    /// Its index entries (of visible records).
    pub(crate) index: Vec<IndexEntry>,
    /// The offset after its last visible record.
    pub(crate) end: u64,
    /// Bytes of its visible records.
    pub(crate) len: u64,
    /// The largest visible timestamp (0 for none).
    pub(crate) max_ts: u64,
}

/// What readers and the writer share.
#[derive(Debug)]
pub(crate) struct State {
    /// Segments by base offset.
    pub(crate) segments: Vec<SegView>,
    /// The visible end.
    pub(crate) end: u64,
}

/// A log's shared parts.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) state: RwLock<State>,
    pub(crate) end_tx: watch::Sender<u64>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    slots: Arc<Semaphore>,
    closed: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Inner {
    fn stop(&self) -> Result<(), LogError> {
        let Some(handle) = self.thread.lock().take() else {
            return Ok(());
        };
        self.closed.store(true, Ordering::SeqCst);
        self.slots.close();
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let result = match self.tx.send(Msg::Close(done_tx)) {
            Ok(()) => done_rx.recv().unwrap_or(Ok(())),
            Err(_) => Ok(()),
        };
        let _ = handle.join();
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(dir = %self.shared.dir.display(), error = %e, "stream log: closing on drop failed");
        }
    }
}

/// One partition's log: a cheap handle (clone it); one writer thread
/// behind it. Reads run on the caller's thread (blocking file reads: call
/// them from `spawn_blocking` in async code).
#[derive(Clone, Debug)]
pub struct Log {
    inner: Arc<Inner>,
}

/// Chunk size for reads: enough for `max_bytes` after an index step.
fn read_chunk(max_bytes: usize, interval: u32) -> usize {
    max_bytes
        .saturating_add(interval as usize)
        .saturating_add(512)
        .clamp(4 << 10, 1 << 20)
}

fn corrupt(path: &Path, position: u64) -> LogError {
    LogError::Corrupt {
        file: path.to_path_buf(),
        position,
    }
}

impl Log {
    /// Opens (creating) the log in `dir`, recovering a torn tail.
    ///
    /// Scans the last segment from its start (a cost of reading it once),
    /// cuts what follows its last whole, valid batch, and rewrites its
    /// index; checks each older segment's index against its file and
    /// rebuilds it by a scan when it is missing or does not agree. Fails
    /// only on I/O errors (including another process holding the log).
    pub fn open(dir: &Path, config: LogConfig) -> Result<(Log, Recovery), LogError> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(".lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is open in another log", dir.display()),
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let (views, active, recovery) = recover(dir, &config)?;
        let end = active.written.next;
        let (end_tx, _) = watch::channel(end);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            config,
            state: RwLock::new(State {
                segments: views,
                end,
            }),
            end_tx,
        });
        writer::apply_retention(&shared, writer_now_ms());
        let (tx, rx) = mpsc::channel();
        let w = Writer::new(shared.clone(), active, lock);
        let thread = std::thread::Builder::new()
            .name("zfabric-stream-log".into())
            .spawn(move || w.run(rx))?;
        let log = Log {
            inner: Arc::new(Inner {
                shared,
                tx,
                slots: Arc::new(Semaphore::new(MAX_QUEUED_APPENDS)),
                closed: AtomicBool::new(false),
                thread: Mutex::new(Some(thread)),
            }),
        };
        Ok((log, recovery))
    }

    /// Appends one record; resolves with its offset once it is as durable
    /// as the policy says.
    pub async fn append(&self, record: NewRecord) -> Result<u64, LogError> {
        self.send(Records::One(record)).await.map(|r| r.start)
    }

    /// Appends records in order, atomically visible together; resolves
    /// with their offsets. An empty batch resolves with an empty range.
    /// A batch is refused whole ([`LogError::TooLarge`]) when one body is
    /// over `max_record_bytes`, one traceparent over 255 bytes, or the
    /// batch over 1 GiB encoded.
    pub async fn append_batch(&self, records: Vec<NewRecord>) -> Result<Range<u64>, LogError> {
        self.send(Records::Many(records)).await
    }

    async fn send(&self, records: Records) -> Result<Range<u64>, LogError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        let permit = inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LogError::Closed)?;
        let (reply, answer) = oneshot::channel();
        inner
            .tx
            .send(Msg::Append {
                records,
                reply,
                permit,
            })
            .map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Up to `max_records` records (and about `max_bytes` of bodies, at
    /// least one record) from offset `from`. `from == end` gives none;
    /// `from` outside `start..=end` is [`LogError::OutOfRange`].
    ///
    /// Continues into the following segments until a limit is reached or
    /// the visible end. Damage on the way is [`LogError::Corrupt`] (the
    /// records before it can be read with a lower limit). Works after
    /// [`Log::close`] too.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let shared = &self.inner.shared;
        let mut out: Vec<Record> = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        let chunk = read_chunk(max_bytes, shared.config.index_interval_bytes);
        // Each pass reads one segment; offsets only grow, so this ends.
        loop {
            let (file, path, seg_end, seg_len, pos, chunk) = {
                let st = shared.state.read();
                let start = st.segments.first().map_or(st.end, |s| s.base);
                if next < start || next > st.end {
                    if out.is_empty() {
                        return Err(LogError::OutOfRange {
                            requested: from,
                            start,
                            end: st.end,
                        });
                    }
                    break;
                }
                if next == st.end || out.len() >= max_records {
                    break;
                }
                let i = st.segments.partition_point(|s| s.base <= next) - 1;
                let s = &st.segments[i];
                let pos = segment::floor_entry(&s.index, next - s.base).map_or(0, |e| e.pos);
                // Read about what `max_records` records of this segment's
                // average size take, not a whole `max_bytes` chunk.
                let avg = s.len / (s.end - s.base).max(1);
                let want = (max_records.min(1 << 20) as u64)
                    .saturating_mul(avg)
                    .saturating_add(u64::from(shared.config.index_interval_bytes) + 512);
                (
                    s.file.clone(),
                    s.path.clone(),
                    s.end.min(st.end),
                    s.len,
                    u64::from(pos),
                    chunk.min(want.try_into().unwrap_or(usize::MAX)),
                )
            };
            if next >= seg_end {
                // An empty segment (only the one being written can be);
                // or a gap between segments.
                return Err(corrupt(&path, seg_len));
            }
            let mut frames = Frames::new(&file, pos, seg_len, chunk);
            while next < seg_end && out.len() < max_records && (out.is_empty() || bytes < max_bytes)
            {
                let f = match frames.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => return Err(corrupt(&path, frames.pos())),
                    Err(FrameError::Decode { pos, .. }) => return Err(corrupt(&path, pos)),
                    Err(FrameError::Io(e)) => return Err(e.into()),
                };
                let r = f.record;
                if r.offset < next {
                    continue;
                }
                if r.offset != next {
                    return Err(corrupt(&path, f.pos));
                }
                bytes = bytes.saturating_add(r.body.len());
                out.push(Record {
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    id: r.id,
                    traceparent: r.traceparent,
                    body: r.body,
                });
                next += 1;
            }
            if out.len() >= max_records || bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// The first offset whose record's timestamp is at or after
    /// `timestamp_ms` (the end when none is).
    ///
    /// Exact even when timestamps go backwards: each index entry carries
    /// the running maximum, so it finds the first segment whose newest
    /// record reaches the time, binary-searches its index and scans at
    /// most one index step.
    pub fn offset_for_time(&self, timestamp_ms: u64) -> Result<u64, LogError> {
        let shared = &self.inner.shared;
        let (file, path, seg_base, seg_end, seg_len, entry) = {
            let st = shared.state.read();
            let Some(s) = st
                .segments
                .iter()
                .find(|s| s.end.min(st.end) > s.base && s.max_ts >= timestamp_ms)
            else {
                return Ok(st.end);
            };
            let entry = segment::time_entry(&s.index, timestamp_ms);
            (
                s.file.clone(),
                s.path.clone(),
                s.base,
                s.end.min(st.end),
                s.len,
                entry,
            )
        };
        let (pos, first) = entry.map_or((0, seg_base), |e| {
            (u64::from(e.pos), seg_base + u64::from(e.rel))
        });
        let mut frames = Frames::new(&file, pos, seg_len, 64 << 10);
        loop {
            let f = match frames.next_frame() {
                Ok(Some(f)) => f,
                // The segment said it had such a record.
                Ok(None) => return Err(corrupt(&path, frames.pos())),
                Err(FrameError::Decode { pos, .. }) => return Err(corrupt(&path, pos)),
                Err(FrameError::Io(e)) => return Err(e.into()),
            };
            let r = f.record;
            if r.offset < first || r.offset >= seg_end {
                return Err(corrupt(&path, f.pos));
            }
            if r.timestamp_ms >= timestamp_ms {
                return Ok(r.offset);
            }
        }
    }

    /// The log's extent now.
    pub fn info(&self) -> LogInfo {
        let st = self.inner.shared.state.read();
        LogInfo {
            start: st.segments.first().map_or(st.end, |s| s.base),
            end: st.end,
            segments: st.segments.len(),
            bytes: st.segments.iter().map(|s| s.len).sum(),
        }
    }

    /// The visible end, updated after every durable append.
    pub fn watch_end(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.shared.end_tx.subscribe()
    }

    /// Writes and fsyncs what is pending and stops the writer thread.
    ///
    /// Blocks the calling thread for that (one fsync). Appends queued
    /// before it are written and answered; later ones get
    /// [`LogError::Closed`]. Closing again does nothing. Dropping the
    /// last handle closes too.
    pub fn close(&self) -> Result<(), LogError> {
        self.inner.stop()
    }

    /// The directory the log is kept in.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }
}

fn writer_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads the directory: older segments checked (their index rebuilt
/// when it disagrees), the last one scanned and cut.
fn recover(
    dir: &Path,
    config: &LogConfig,
) -> Result<(Vec<SegView>, writer::Active, Recovery), LogError> {
    let mut bases = Vec::new();
    let mut idx_only = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(b) = segment::parse_name(name, "log") {
            bases.push(b);
        } else if let Some(b) = segment::parse_name(name, "idx") {
            idx_only.push(b);
        }
    }
    bases.sort_unstable();
    // An index whose segment is gone (a deletion cut short) is removed.
    for b in idx_only {
        if bases.binary_search(&b).is_err() {
            let _ = std::fs::remove_file(segment::idx_path(dir, b));
        }
    }
    let interval = config.index_interval_bytes;
    let mut recovery = Recovery::default();
    let mut views = Vec::new();
    let Some((&last, older)) = bases.split_last() else {
        let (active, view) = writer::create_segment(dir, 0)?;
        recovery.segments = 1;
        return Ok((vec![view], active, recovery));
    };
    for (i, &base) in older.iter().enumerate() {
        let next_base = bases[i + 1];
        let path = segment::log_path(dir, base);
        let file = File::open(&path)?;
        let len = file.metadata()?.len();
        let idx = match std::fs::read(segment::idx_path(dir, base)) {
            Ok(b) => segment::decode_index(&b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let checked = match &idx {
            Some(entries) => segment::check_sealed(&file, base, len, entries)?,
            None => None,
        };
        let (index, end) = match (idx, checked) {
            (Some(entries), Some(end)) => (entries, end),
            _ => {
                tracing::warn!(file = %path.display(), "stream log: rebuilding a segment index");
                let s = segment::scan(&file, base, len, interval)?;
                if let Some((pos, why)) = &s.stopped {
                    tracing::warn!(file = %path.display(), position = pos, reason = %why, "stream log: damage in an older segment; reads reaching it fail");
                }
                let entries = seal_entries(base, &s);
                write_index(dir, base, &entries)?;
                (entries, s.next_offset)
            }
        };
        if end != next_base {
            tracing::warn!(file = %path.display(), end, next_base, "stream log: segment does not end where the next begins");
        }
        recovery.records += end.saturating_sub(base);
        views.push(SegView {
            base,
            path: path.into(),
            file: Arc::new(file),
            max_ts: index.last().map_or(0, |e| e.max_ts),
            index,
            end: next_base,
            len,
        });
    }
    let path = segment::log_path(dir, last);
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let len = file.metadata()?.len();
    let s = segment::scan(&file, last, len, interval)?;
    if s.len < len {
        let why = s.stopped.as_ref().map_or("", |(_, w)| w.as_str());
        tracing::warn!(file = %path.display(), kept = s.len, cut = len - s.len, reason = %why, "stream log: truncating a torn tail");
        file.set_len(s.len)?;
        file.sync_all()?;
        recovery.truncated_bytes = len - s.len;
        recovery.truncated_file = Some(path.clone());
    }
    metrics::counter!(STREAM_TRUNCATED_BYTES).increment(recovery.truncated_bytes);
    write_index(dir, last, &s.entries)?;
    let idx = OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment::idx_path(dir, last))?;
    recovery.records += s.next_offset - last;
    recovery.segments = bases.len();
    let file = Arc::new(file);
    let tail = writer::Tail {
        len: s.len,
        next: s.next_offset,
        entries: s.entries.len(),
        max_ts: s.max_ts,
        first_ts: s.first_ts,
        last: s.last,
    };
    views.push(SegView {
        base: last,
        path: path.into(),
        file: file.clone(),
        index: s.entries.clone(),
        end: s.next_offset,
        len: s.len,
        max_ts: s.max_ts,
    });
    let active = writer::Active {
        base: last,
        file,
        idx,
        idx_written: s.entries.len(),
        published: s.entries.len(),
        entries: s.entries,
        encoded: tail,
        written: tail,
    };
    Ok((views, active, recovery))
}

/// A rebuilt older segment's entries, with its last record indexed.
fn seal_entries(base: u64, s: &segment::Scan) -> Vec<IndexEntry> {
    let mut entries = s.entries.clone();
    if let Some((pos, max_ts)) = s.last {
        let rel = (s.next_offset - 1 - base) as u32;
        if entries.last().is_none_or(|e| e.rel != rel) {
            entries.push(IndexEntry {
                rel,
                pos: pos as u32,
                max_ts,
            });
        }
    }
    entries
}

/// Replaces a segment's index file.
fn write_index(dir: &Path, base: u64, entries: &[IndexEntry]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(entries.len() * segment::ENTRY);
    for e in entries {
        e.encode(&mut bytes);
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(segment::idx_path(dir, base))?;
    io::Write::write_all(&mut f, &bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests;
