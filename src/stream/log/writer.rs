//! The writer thread: the only code that writes a log's files. It takes
//! appends from a channel, encodes every queued one into one buffer,
//! writes it with one `pwrite`, fsyncs per the [`FsyncPolicy`], then
//! publishes the new visible end and answers the appends. Under
//! `GroupCommit` it sleeps until the group's deadline instead of waking
//! for every append (a wake-up per append costs more than the write),
//! then writes and fsyncs the group at once; it writes early when 8 MiB
//! are gathered.
//!
//! Guarantees: an append is answered `Ok` only once its records are
//! written (`Os`) or written and fsynced (`Always`, `GroupCommit`), and
//! only then does the visible end move past them; the records of one
//! append are in one segment and become visible together; a failed
//! write is cut back off the file and answered with the error. After a
//! failed fsync the writer refuses every further append (the kernel may
//! have dropped the dirty pages: nothing written since the last good
//! fsync can be vouched for), until the log is reopened. Does not: undo a
//! record whose append was cancelled after it was queued (it is written
//! all the same).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::record::{self, MAX_BODY, MAX_TRACEPARENT};
use super::segment::{self, IndexEntry, ENTRY};
use super::{
    FsyncPolicy, LogError, NewRecord, SegView, Shared, STREAM_APPENDED_RECORDS, STREAM_FSYNCS,
};

/// The largest batch one append may carry, in encoded bytes (so that
/// every record starts at a position the 32-bit index can hold).
pub(crate) const MAX_BATCH_BYTES: usize = 1 << 30;
/// How many queued appends one write gathers at most.
const MAX_GATHER: usize = 4096;
/// How many encoded bytes one write gathers at most.
const MAX_GATHER_BYTES: usize = 8 << 20;
/// How often an idle writer checks retention by age.
const RETENTION_TICK: Duration = Duration::from_secs(1);

/// The answer to an append.
pub(crate) type Reply = oneshot::Sender<Result<Range<u64>, LogError>>;

/// The records of one append.
#[derive(Debug)]
pub(crate) enum Records {
    /// `append`.
    One(NewRecord),
    /// `append_batch`.
    Many(Vec<NewRecord>),
}

impl Records {
    fn as_slice(&self) -> &[NewRecord] {
        match self {
            Records::One(r) => std::slice::from_ref(r),
            Records::Many(v) => v,
        }
    }
}

/// What the handles send the writer.
#[derive(Debug)]
pub(crate) enum Msg {
    /// Append these records and answer.
    Append {
        /// The records.
        records: Records,
        /// Where the answer goes.
        reply: Reply,
        /// The queue slot, freed when the append is answered.
        permit: OwnedSemaphorePermit,
    },
    /// Settle everything, seal the index and stop.
    Close(std::sync::mpsc::SyncSender<Result<(), LogError>>),
}

/// A position in the active segment: what is encoded, written or synced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tail {
    /// Bytes.
    pub(crate) len: u64,
    /// The next offset.
    pub(crate) next: u64,
    /// Index entries.
    pub(crate) entries: usize,
    /// The largest timestamp.
    pub(crate) max_ts: u64,
    /// The first record's timestamp.
    pub(crate) first_ts: Option<u64>,
    /// The last record's position and the running maximum there.
    pub(crate) last: Option<(u64, u64)>,
}

/// The segment being written.
#[derive(Debug)]
pub(crate) struct Active {
    /// Its base offset.
    pub(crate) base: u64,
    /// The `.log`, shared with readers.
    pub(crate) file: Arc<File>,
    /// The `.idx`.
    pub(crate) idx: File,
    /// Every index entry of the segment.
    pub(crate) entries: Vec<IndexEntry>,
    /// Entries already in the `.idx` file.
    pub(crate) idx_written: usize,
    /// Entries already given to readers.
    pub(crate) published: usize,
    /// Up to the end of the encode buffer.
    pub(crate) encoded: Tail,
    /// Up to what is written to the file.
    pub(crate) written: Tail,
}

/// The writer thread's state.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) active: Active,
    /// Held for the writer's life: one process writes a directory.
    pub(crate) _lock: File,
    /// Encoded, not yet written.
    buf: Vec<u8>,
    /// Appends encoded in `buf`.
    group: Vec<(Reply, Range<u64>, OwnedSemaphorePermit)>,
    /// Appends written, waiting for their fsync.
    waiting: Vec<(Reply, Range<u64>, OwnedSemaphorePermit)>,
    /// When the oldest unsynced write must be fsynced (`GroupCommit`).
    deadline: Option<Instant>,
    /// Set by a failed fsync: every further append gets this error.
    failed: Option<(io::ErrorKind, String)>,
    /// Written since the last fsync.
    dirty: bool,
    last_retention: Instant,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn copy_err(e: &io::Error) -> LogError {
    LogError::Io(io::Error::new(e.kind(), e.to_string()))
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, active: Active, lock: File) -> Self {
        Writer {
            shared,
            active,
            _lock: lock,
            buf: Vec::new(),
            group: Vec::new(),
            waiting: Vec::new(),
            deadline: None,
            failed: None,
            dirty: false,
            last_retention: Instant::now(),
        }
    }

    /// The writer thread's body: runs until [`Msg::Close`] or until every
    /// handle is gone.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        let mut close = None;
        let mut disconnected = false;
        let mut batch: Vec<Msg> = Vec::new();
        while close.is_none() && !disconnected {
            let gathering = matches!(self.shared.config.fsync, FsyncPolicy::GroupCommit { .. });
            match self.deadline.filter(|_| gathering) {
                // Group commit: gather without listening until the
                // deadline, so that senders need not wake this thread.
                Some(d) => {
                    let now = Instant::now();
                    if d > now {
                        std::thread::sleep(d - now);
                    }
                }
                None => {
                    let first = match self.shared.config.retention_age {
                        Some(_) => rx.recv_timeout(RETENTION_TICK),
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    };
                    match first {
                        Ok(m) => batch.push(m),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => disconnected = true,
                    }
                }
            }
            while !disconnected && batch.len() < MAX_GATHER && self.buf.len() < MAX_GATHER_BYTES {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => disconnected = true,
                }
                if matches!(batch.last(), Some(Msg::Close(_))) {
                    break;
                }
            }
            let batch_full = batch.len() >= MAX_GATHER;
            let now = now_ms();
            for m in batch.drain(..) {
                match m {
                    Msg::Append {
                        records,
                        reply,
                        permit,
                    } => self.admit(records.as_slice(), reply, permit, now),
                    Msg::Close(done) => close = Some(done),
                }
            }
            let full = batch_full;
            match self.shared.config.fsync {
                FsyncPolicy::Os => {
                    self.flush();
                    let group = std::mem::take(&mut self.group);
                    self.waiting.extend(group);
                    self.publish();
                }
                FsyncPolicy::Always => {
                    self.flush();
                    let group = std::mem::take(&mut self.group);
                    self.waiting.extend(group);
                    self.sync_and_publish();
                }
                FsyncPolicy::GroupCommit { interval } => {
                    if self.deadline.is_none() && !self.group.is_empty() {
                        self.deadline = Some(Instant::now() + interval);
                    }
                    let due = self.deadline.is_some_and(|d| Instant::now() >= d);
                    if due || self.buf.len() >= MAX_GATHER_BYTES {
                        self.flush();
                        let group = std::mem::take(&mut self.group);
                        self.waiting.extend(group);
                    }
                    if due {
                        self.sync_and_publish();
                        if full {
                            // More are queued: take them without waiting.
                            self.deadline = Some(Instant::now());
                        }
                    }
                }
            }
            self.retention_if_due();
        }
        let result = self.settle().and_then(|()| self.seal_index());
        if let Some(done) = close {
            let _ = done.send(result);
        } else if let Err(e) = result {
            tracing::warn!(dir = %self.shared.dir.display(), error = %e, "stream log: closing failed");
        }
        // Appends still queued behind the close are dropped with the
        // receiver: their callers see `Closed`.
    }

    /// Validates and encodes one append into the buffer, rolling first
    /// when it does not fit the active segment.
    fn admit(
        &mut self,
        records: &[NewRecord],
        reply: Reply,
        permit: OwnedSemaphorePermit,
        now: u64,
    ) {
        if let Some((kind, msg)) = &self.failed {
            let _ = reply.send(Err(LogError::Io(io::Error::new(*kind, msg.clone()))));
            return;
        }
        let limit = self.shared.config.max_record_bytes.min(MAX_BODY as u32);
        let mut total = 0usize;
        for r in records {
            let tp = r.traceparent.as_deref().map_or(0, str::len);
            let err = if r.body.len() > limit as usize {
                Some((r.body.len(), limit))
            } else if tp > MAX_TRACEPARENT {
                Some((tp, MAX_TRACEPARENT as u32))
            } else {
                None
            };
            if let Some((size, limit)) = err {
                let _ = reply.send(Err(LogError::TooLarge { size, limit }));
                return;
            }
            total = total.saturating_add(record::frame_len(tp, r.body.len()));
        }
        if total > MAX_BATCH_BYTES {
            let _ = reply.send(Err(LogError::TooLarge {
                size: total,
                limit: MAX_BATCH_BYTES as u32,
            }));
            return;
        }
        let Some(first) = records.first() else {
            let n = self.active.encoded.next;
            self.group.push((reply, n..n, permit));
            return;
        };
        let first_ts = first.timestamp_ms.unwrap_or(now);
        let cap = self
            .shared
            .config
            .segment_bytes
            .clamp(1, u64::from(u32::MAX));
        let tail = self.active.encoded;
        let too_big = tail.len + total as u64 > cap;
        let too_old = match (self.shared.config.segment_age, tail.first_ts) {
            (Some(age), Some(t0)) => first_ts.saturating_sub(t0) >= age.as_millis() as u64,
            _ => false,
        };
        if tail.len > 0 && (too_big || too_old) {
            if let Err(e) = self.roll() {
                let _ = reply.send(Err(e));
                return;
            }
        }
        let interval = self.shared.config.index_interval_bytes;
        let a = &mut self.active;
        let start = a.encoded.next;
        for (i, r) in records.iter().enumerate() {
            let ts = r.timestamp_ms.unwrap_or(now);
            let pos = a.encoded.len;
            let before = self.buf.len();
            record::encode(
                &mut self.buf,
                a.encoded.next,
                ts,
                r.id,
                i + 1 == records.len(),
                r.traceparent.as_deref(),
                &r.body,
            );
            let t = &mut a.encoded;
            t.max_ts = t.max_ts.max(ts);
            t.first_ts.get_or_insert(ts);
            if segment::wants_entry(a.entries.last().map(|e| e.pos), pos, interval) {
                a.entries.push(IndexEntry {
                    rel: (t.next - a.base) as u32,
                    pos: pos as u32,
                    max_ts: t.max_ts,
                });
                t.entries = a.entries.len();
            }
            t.last = Some((pos, t.max_ts));
            t.len += (self.buf.len() - before) as u64;
            t.next += 1;
        }
        let end = a.encoded.next;
        self.group.push((reply, start..end, permit));
    }

    /// Writes the buffer (and the new index entries); on failure cuts
    /// the file back and answers this buffer's appends with the error.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let a = &mut self.active;
        let res = a
            .file
            .write_all_at(&self.buf, a.written.len)
            .and_then(|()| {
                let mut idx = Vec::with_capacity((a.encoded.entries - a.idx_written) * ENTRY);
                for e in &a.entries[a.idx_written..a.encoded.entries] {
                    e.encode(&mut idx);
                }
                a.idx.write_all_at(&idx, (a.idx_written * ENTRY) as u64)
            });
        self.buf.clear();
        match res {
            Ok(()) => {
                self.dirty = true;
                a.written = a.encoded;
                a.idx_written = a.entries.len();
            }
            Err(e) => {
                tracing::warn!(dir = %self.shared.dir.display(), error = %e, "stream log: write failed");
                a.encoded = a.written;
                a.entries.truncate(a.written.entries);
                let _ = a.file.set_len(a.written.len);
                let _ = a
                    .idx
                    .set_len((a.idx_written.min(a.entries.len()) * ENTRY) as u64);
                a.idx_written = a.idx_written.min(a.entries.len());
                for (reply, _, _) in self.group.drain(..) {
                    let _ = reply.send(Err(copy_err(&e)));
                }
            }
        }
    }

    /// fsyncs what is written, then publishes it and answers its appends.
    fn sync_and_publish(&mut self) {
        self.deadline = None;
        if self.dirty {
            if let Err(e) = self.active.file.sync_data() {
                tracing::error!(dir = %self.shared.dir.display(), error = %e, "stream log: fsync failed; refusing appends until reopened");
                self.failed = Some((e.kind(), format!("an earlier fsync failed: {e}")));
                for (reply, _, _) in self.waiting.drain(..) {
                    let _ = reply.send(Err(copy_err(&e)));
                }
                return;
            }
            self.dirty = false;
            metrics::counter!(STREAM_FSYNCS).increment(1);
        }
        self.publish();
    }

    /// Makes everything written visible and answers the waiting appends.
    fn publish(&mut self) {
        let a = &mut self.active;
        let w = a.written;
        {
            let mut st = self.shared.state.write();
            if let Some(v) = st.segments.last_mut().filter(|v| v.base == a.base) {
                v.end = w.next;
                v.len = w.len;
                v.max_ts = w.max_ts;
                v.index
                    .extend_from_slice(&a.entries[a.published..w.entries]);
            }
            st.end = w.next;
        }
        a.published = w.entries;
        self.shared.end_tx.send_if_modified(|v| {
            let moved = *v != w.next;
            *v = w.next;
            moved
        });
        let mut n = 0u64;
        for (reply, range, permit) in self.waiting.drain(..) {
            n += range.end - range.start;
            let _ = reply.send(Ok(range));
            drop(permit);
        }
        if n > 0 {
            metrics::counter!(STREAM_APPENDED_RECORDS).increment(n);
        }
    }

    /// Writes, fsyncs and publishes everything pending.
    fn settle(&mut self) -> Result<(), LogError> {
        self.flush();
        let group = std::mem::take(&mut self.group);
        self.waiting.extend(group);
        self.sync_and_publish();
        match &self.failed {
            Some((kind, msg)) => Err(LogError::Io(io::Error::new(*kind, msg.clone()))),
            None => Ok(()),
        }
    }

    /// Gives the last record an index entry and writes and fsyncs the
    /// whole index.
    fn seal_index(&mut self) -> Result<(), LogError> {
        let a = &mut self.active;
        if let Some((pos, max_ts)) = a.written.last {
            let rel = (a.written.next - 1 - a.base) as u32;
            if a.entries.last().is_none_or(|e| e.rel != rel) {
                a.entries.push(IndexEntry {
                    rel,
                    pos: pos as u32,
                    max_ts,
                });
                a.written.entries = a.entries.len();
                a.encoded.entries = a.entries.len();
            }
        }
        let mut idx = Vec::new();
        for e in &a.entries[a.idx_written..] {
            e.encode(&mut idx);
        }
        a.idx.write_all_at(&idx, (a.idx_written * ENTRY) as u64)?;
        a.idx_written = a.entries.len();
        a.idx.sync_all()?;
        let mut st = self.shared.state.write();
        if let Some(v) = st.segments.last_mut().filter(|v| v.base == a.base) {
            v.index.extend_from_slice(&a.entries[a.published..]);
        }
        a.published = a.entries.len();
        Ok(())
    }

    /// Settles and seals the active segment and starts a new one at the
    /// next offset.
    fn roll(&mut self) -> Result<(), LogError> {
        self.settle()?;
        self.seal_index()?;
        let base = self.active.written.next;
        let dir = self.shared.dir.clone();
        let (active, view) = create_segment(&dir, base)?;
        self.active = active;
        self.shared.state.write().segments.push(view);
        apply_retention(&self.shared, now_ms());
        self.last_retention = Instant::now();
        tracing::debug!(dir = %dir.display(), base, "stream log: rolled a segment");
        Ok(())
    }

    fn retention_if_due(&mut self) {
        let c = &self.shared.config;
        if c.retention_bytes.is_none() && c.retention_age.is_none() {
            return;
        }
        if c.retention_bytes.is_none() && self.last_retention.elapsed() < RETENTION_TICK {
            return;
        }
        self.last_retention = Instant::now();
        apply_retention(&self.shared, now_ms());
    }
}

/// Deletes the oldest whole segments, never the last, while the log is
/// over `retention_bytes` or their newest record is older than
/// `retention_age` at `now_ms`.
pub(crate) fn apply_retention(shared: &Shared, now_ms: u64) {
    let c = &shared.config;
    let removed: Vec<SegView> = {
        let mut st = shared.state.write();
        let mut total: u64 = st.segments.iter().map(|s| s.len).sum();
        let mut n = 0;
        while n + 1 < st.segments.len() {
            let s = &st.segments[n];
            let by_size = c.retention_bytes.is_some_and(|r| total > r);
            let by_age = c
                .retention_age
                .is_some_and(|a| now_ms.saturating_sub(s.max_ts) > a.as_millis() as u64);
            if !(by_size || by_age) {
                break;
            }
            total -= s.len;
            n += 1;
        }
        st.segments.drain(..n).collect()
    };
    for s in removed {
        for p in [
            segment::log_path(&shared.dir, s.base),
            segment::idx_path(&shared.dir, s.base),
        ] {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(file = %p.display(), error = %e, "stream log: could not delete a retired segment");
                }
            }
        }
        tracing::debug!(dir = %shared.dir.display(), base = s.base, "stream log: retention deleted a segment");
    }
}

/// Creates an empty segment's two files and makes their names durable.
pub(crate) fn create_segment(dir: &Path, base: u64) -> Result<(Active, SegView), LogError> {
    let log_path = segment::log_path(dir, base);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&log_path)?;
    let idx = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(segment::idx_path(dir, base))?;
    File::open(dir)?.sync_all()?;
    let file = Arc::new(file);
    let tail = Tail {
        len: 0,
        next: base,
        entries: 0,
        max_ts: 0,
        first_ts: None,
        last: None,
    };
    let active = Active {
        base,
        file: file.clone(),
        idx,
        entries: Vec::new(),
        idx_written: 0,
        published: 0,
        encoded: tail,
        written: tail,
    };
    let view = SegView {
        base,
        path: log_path.into(),
        file,
        index: Vec::new(),
        end: base,
        len: 0,
        max_ts: 0,
    };
    Ok((active, view))
}
