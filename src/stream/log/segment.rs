//! One segment: a `.log` file of records named by its base offset, and
//! its sparse `.idx` file; the index entry encoding (pure), a frame
//! reader over a file range, and the scan that recovery and index
//! rebuilding share.
//!
//! Index entries are 16 bytes, little-endian: the record's offset
//! relative to the segment's base (`u32`), its position in the `.log`
//! (`u32`), and the largest timestamp of the segment's records up to and
//! including it (`u64`, so that a search by time is a binary search even
//! when timestamps go backwards). A record gets an entry when it is the
//! segment's first or starts at least `index_interval_bytes` after the
//! previous entry's record; a sealed segment's last record always has
//! one. Guarantees: the scan stops at the first record that does not
//! decode or carries the wrong offset, and keeps only whole batches;
//! [`decode_index`] refuses entries that are not strictly increasing.
//! Does not: checksum the index (a plausible but wrong entry sends a read
//! to the wrong place, where it finds the wrong offset: `Corrupt`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::record::{self, DecodeError, Decoded, PREFIX};

/// Bytes of one index entry.
pub(crate) const ENTRY: usize = 16;

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Offset relative to the segment's base.
    pub(crate) rel: u32,
    /// Byte position of the record in the `.log`.
    pub(crate) pos: u32,
    /// The largest timestamp up to and including this record.
    pub(crate) max_ts: u64,
}

impl IndexEntry {
    /// Appends its 16 bytes to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel.to_le_bytes());
        out.extend_from_slice(&self.pos.to_le_bytes());
        out.extend_from_slice(&self.max_ts.to_le_bytes());
    }
}

/// The entries of an index file, or `None` when its length is not a
/// multiple of [`ENTRY`] or the entries are not strictly increasing in
/// offset and position and non-decreasing in timestamp.
pub(crate) fn decode_index(bytes: &[u8]) -> Option<Vec<IndexEntry>> {
    if !bytes.len().is_multiple_of(ENTRY) {
        return None;
    }
    let mut out: Vec<IndexEntry> = Vec::with_capacity(bytes.len() / ENTRY);
    for c in bytes.chunks_exact(ENTRY) {
        let mut r = [0; 4];
        let mut p = [0; 4];
        let mut t = [0; 8];
        r.copy_from_slice(&c[0..4]);
        p.copy_from_slice(&c[4..8]);
        t.copy_from_slice(&c[8..16]);
        let e = IndexEntry {
            rel: u32::from_le_bytes(r),
            pos: u32::from_le_bytes(p),
            max_ts: u64::from_le_bytes(t),
        };
        if let Some(prev) = out.last() {
            if e.rel <= prev.rel || e.pos <= prev.pos || e.max_ts < prev.max_ts {
                return None;
            }
        } else if e.pos != 0 || e.rel != 0 {
            return None;
        }
        out.push(e);
    }
    Some(out)
}

/// The index of the last entry at or before relative offset `rel`.
pub(crate) fn floor_entry(entries: &[IndexEntry], rel: u64) -> Option<IndexEntry> {
    let i = entries.partition_point(|e| u64::from(e.rel) <= rel);
    i.checked_sub(1).map(|i| entries[i])
}

/// Where to start scanning for the first record with a timestamp at or
/// after `ts`: the entry before the first whose running maximum reaches
/// it (that record is after it), or the last entry when none does.
pub(crate) fn time_entry(entries: &[IndexEntry], ts: u64) -> Option<IndexEntry> {
    let i = entries.partition_point(|e| e.max_ts < ts);
    let i = i.saturating_sub(1).min(entries.len().saturating_sub(1));
    entries.get(i).copied()
}

/// Whether a record at `pos` gets an index entry, after one at `last`.
pub(crate) fn wants_entry(last: Option<u32>, pos: u64, interval: u32) -> bool {
    match last {
        None => true,
        Some(l) => pos - u64::from(l) >= u64::from(interval),
    }
}

/// `00000000000000000042.log`.
pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// `00000000000000000042.idx`.
pub(crate) fn idx_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

/// The base offset in a segment file name with extension `ext`.
pub(crate) fn parse_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// One frame read back.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Its position in the file.
    pub(crate) pos: u64,
    /// Its length.
    pub(crate) len: u64,
    /// The record.
    pub(crate) record: Decoded,
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The file system refused.
    Io(io::Error),
    /// The bytes at `pos` are no record.
    Decode {
        /// Where.
        pos: u64,
        /// Why.
        err: DecodeError,
    },
}

/// Frames of a file range `[pos, end)`, read in chunks with `pread`.
#[derive(Debug)]
pub(crate) struct Frames<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    chunk: Bytes,
    chunk_pos: u64,
    chunk_size: usize,
}

impl<'a> Frames<'a> {
    /// Frames from `pos` to `end`, reading about `chunk_size` bytes at a
    /// time.
    pub(crate) fn new(file: &'a File, pos: u64, end: u64, chunk_size: usize) -> Self {
        Frames {
            file,
            pos,
            end,
            chunk: Bytes::new(),
            chunk_pos: pos,
            chunk_size: chunk_size.max(PREFIX),
        }
    }

    /// The position of the next frame.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Makes the chunk hold `[pos, pos + n)`, or as much of it as the
    /// range has; returns the bytes from `pos` on.
    fn ensure(&mut self, n: usize) -> io::Result<Bytes> {
        let off = (self.pos - self.chunk_pos) as usize;
        let remaining = (self.end - self.pos) as usize;
        let want = n.min(remaining);
        if self.pos < self.chunk_pos || self.chunk.len() < off + want {
            let size = n.max(self.chunk_size).min(remaining);
            let mut v = vec![0u8; size];
            self.file.read_exact_at(&mut v, self.pos)?;
            self.chunk = Bytes::from(v);
            self.chunk_pos = self.pos;
            return Ok(self.chunk.clone());
        }
        Ok(self.chunk.slice(off..))
    }

    /// The next frame; `None` exactly at the end of the range.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let pos = self.pos;
        let bad = |err| FrameError::Decode { pos, err };
        let head = self.ensure(PREFIX).map_err(FrameError::Io)?;
        let len = record::peek_frame_len(&head).map_err(bad)?;
        let bytes = self.ensure(len).map_err(FrameError::Io)?;
        let (rec, n) = record::decode(&bytes).map_err(bad)?;
        self.pos += n as u64;
        Ok(Some(Frame {
            pos,
            len: n as u64,
            record: rec,
        }))
    }
}

/// What a scan of a segment found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The index of the records kept.
    pub(crate) entries: Vec<IndexEntry>,
    /// The offset after the last record kept.
    pub(crate) next_offset: u64,
    /// Bytes of the records kept (the end of the last whole batch).
    pub(crate) len: u64,
    /// The first record's timestamp.
    pub(crate) first_ts: Option<u64>,
    /// The largest timestamp kept (0 for none).
    pub(crate) max_ts: u64,
    /// The last record kept: its position and the running maximum there.
    pub(crate) last: Option<(u64, u64)>,
    /// Where and why the scan stopped before the end of the file: a
    /// record that does not decode or has the wrong offset.
    pub(crate) stopped: Option<(u64, String)>,
}

/// Reads every record of a segment from the start, checking that
/// offsets run on from `base`, and indexes them; stops at the first bad
/// record and drops a trailing partial batch.
pub(crate) fn scan(file: &File, base: u64, file_len: u64, interval: u32) -> io::Result<Scan> {
    let mut frames = Frames::new(file, 0, file_len, 1 << 20);
    let mut s = Scan {
        next_offset: base,
        ..Scan::default()
    };
    // Progress so far, committed to `s` at each batch end.
    let mut entries: Vec<IndexEntry> = Vec::new();
    let mut next = base;
    let mut max_ts = 0u64;
    let mut first_ts = None;
    loop {
        let f = match frames.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(FrameError::Io(e)) => return Err(e),
            Err(FrameError::Decode { pos, err }) => {
                s.stopped = Some((pos, err.to_string()));
                break;
            }
        };
        if f.record.offset != next {
            s.stopped = Some((
                f.pos,
                format!("offset {} where {next} was expected", f.record.offset),
            ));
            break;
        }
        if f.pos > u64::from(u32::MAX) || next - base > u64::from(u32::MAX) {
            s.stopped = Some((f.pos, "segment beyond the index's range".into()));
            break;
        }
        max_ts = max_ts.max(f.record.timestamp_ms);
        first_ts.get_or_insert(f.record.timestamp_ms);
        if wants_entry(entries.last().map(|e| e.pos), f.pos, interval) {
            entries.push(IndexEntry {
                rel: (next - base) as u32,
                pos: f.pos as u32,
                max_ts,
            });
        }
        next += 1;
        if f.record.batch_end {
            s.last = Some((f.pos, max_ts));
            s.entries.clone_from(&entries);
            s.next_offset = next;
            s.len = f.pos + f.len;
            s.max_ts = max_ts;
            s.first_ts = first_ts;
        }
    }
    if s.stopped.is_none() && s.len < file_len {
        s.stopped = Some((s.len, "a batch without its end".into()));
    }
    Ok(s)
}

/// Checks a sealed segment's index against its file: the last entry's
/// record must decode with the right offset and end exactly at the end
/// of the file. Returns the offset after it when it does.
pub(crate) fn check_sealed(
    file: &File,
    base: u64,
    file_len: u64,
    entries: &[IndexEntry],
) -> io::Result<Option<u64>> {
    let Some(last) = entries.last() else {
        return Ok((file_len == 0).then_some(base));
    };
    if u64::from(last.pos) >= file_len {
        return Ok(None);
    }
    let mut frames = Frames::new(file, u64::from(last.pos), file_len, 64 << 10);
    match frames.next_frame() {
        Ok(Some(f))
            if f.record.offset == base + u64::from(last.rel)
                && f.pos + f.len == file_len
                && f.record.timestamp_ms <= last.max_ts =>
        {
            Ok(Some(f.record.offset + 1))
        }
        Ok(_) | Err(FrameError::Decode { .. }) => Ok(None),
        Err(FrameError::Io(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(v: &[(u32, u32, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(rel, pos, max_ts) in v {
            IndexEntry { rel, pos, max_ts }.encode(&mut out);
        }
        out
    }

    #[test]
    fn an_index_round_trips_and_refuses_disorder_and_odd_lengths() {
        let good = entries(&[(0, 0, 5), (3, 100, 5), (9, 4000, 8)]);
        let d = decode_index(&good).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[2],
            IndexEntry {
                rel: 9,
                pos: 4000,
                max_ts: 8
            }
        );
        assert!(decode_index(&good[..good.len() - 1]).is_none());
        assert!(decode_index(&entries(&[(0, 0, 5), (3, 100, 4)])).is_none());
        assert!(decode_index(&entries(&[(0, 0, 5), (0, 100, 5)])).is_none());
        assert!(decode_index(&entries(&[(1, 10, 5)])).is_none());
        assert!(decode_index(&[0u8; 32]).is_none(), "zeros are not an index");
        assert_eq!(decode_index(&[]), Some(vec![]));
    }

    #[test]
    fn lookups_find_the_floor_and_the_time_crossing() {
        let e = decode_index(&entries(&[(0, 0, 10), (5, 50, 20), (9, 90, 30)])).unwrap();
        assert_eq!(floor_entry(&e, 0).unwrap().rel, 0);
        assert_eq!(floor_entry(&e, 4).unwrap().rel, 0);
        assert_eq!(floor_entry(&e, 5).unwrap().rel, 5);
        assert_eq!(floor_entry(&e, 100).unwrap().rel, 9);
        assert!(floor_entry(&[], 3).is_none());
        assert_eq!(time_entry(&e, 5).unwrap().rel, 0);
        assert_eq!(time_entry(&e, 15).unwrap().rel, 0);
        assert_eq!(time_entry(&e, 20).unwrap().rel, 0);
        assert_eq!(time_entry(&e, 21).unwrap().rel, 5);
        assert_eq!(time_entry(&e, 99).unwrap().rel, 9);
    }

    #[test]
    fn names_parse_back_and_others_do_not() {
        let p = log_path(Path::new("/d"), 42);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042.log");
        assert_eq!(parse_name(name, "log"), Some(42));
        assert_eq!(parse_name("00000000000000000042.idx", "log"), None);
        assert_eq!(parse_name("42.log", "log"), None);
        assert_eq!(parse_name("0000000000000000004x.log", "log"), None);
        assert_eq!(parse_name("99999999999999999999.log", "log"), None);
    }
}
