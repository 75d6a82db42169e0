use std::time::Duration;

use super::*;

const T0: u64 = 1_700_000_000_000;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        fsync: FsyncPolicy::Os,
        ..LogConfig::default()
    }
}

fn body(i: u64) -> Bytes {
    let n = (i * 37 % 200) as usize + 1;
    Bytes::from((0..n).map(|k| (i as usize + k) as u8).collect::<Vec<u8>>())
}

fn rec(i: u64) -> NewRecord {
    NewRecord {
        id: 1000 + i,
        traceparent: i
            .is_multiple_of(3)
            .then(|| Arc::from(format!("00-{i:032x}-{i:016x}-01"))),
        timestamp_ms: Some(T0 + i),
        body: body(i),
    }
}

fn check(r: &Record, i: u64) {
    assert_eq!(r.offset, i);
    assert_eq!(r.id, 1000 + i);
    assert_eq!(r.timestamp_ms, T0 + i);
    assert_eq!(r.body, body(i), "body of {i}");
    assert_eq!(r.traceparent.is_some(), i.is_multiple_of(3));
}

async fn fill(log: &Log, n: u64) {
    for i in log.info().end..log.info().end + n {
        assert_eq!(log.append(rec(i)).await.unwrap(), i);
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

#[tokio::test]
async fn records_round_trip_across_rolls_and_read_from_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (log, rec0) = Log::open(dir.path(), config(2048)).unwrap();
    assert_eq!(rec0.segments, 1);
    assert_eq!(rec0.records, 0);
    fill(&log, 300).await;
    let info = log.info();
    assert_eq!((info.start, info.end), (0, 300));
    assert!(info.segments > 10, "{info:?}");
    assert_eq!(info.segments, segment_files(dir.path()).len());
    for from in 0..300 {
        let one = log.read(from, 1, 0).unwrap();
        assert_eq!(one.len(), 1);
        check(&one[0], from);
        let all = log.read(from, usize::MAX, usize::MAX).unwrap();
        assert_eq!(all.len() as u64, 300 - from, "from {from}");
        for (k, r) in all.iter().enumerate() {
            check(r, from + k as u64);
        }
    }
    assert!(log.read(300, 10, 1000).unwrap().is_empty());
    assert!(matches!(
        log.read(301, 10, 1000),
        Err(LogError::OutOfRange {
            requested: 301,
            start: 0,
            end: 300
        })
    ));
    assert!(log.read(5, 0, 1000).unwrap().is_empty());
}

#[tokio::test]
async fn a_read_stops_near_max_bytes_but_returns_at_least_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config(1 << 20)).unwrap();
    for i in 0..10u64 {
        log.append(NewRecord {
            id: i,
            body: Bytes::from(vec![i as u8; 1000]),
            ..NewRecord::default()
        })
        .await
        .unwrap();
    }
    assert_eq!(log.read(0, 100, 10).unwrap().len(), 1);
    assert_eq!(log.read(0, 100, 2500).unwrap().len(), 3);
    assert_eq!(log.read(0, 4, usize::MAX).unwrap().len(), 4);
}

#[tokio::test]
async fn a_batch_takes_consecutive_offsets_and_an_empty_one_none() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config(1 << 20)).unwrap();
    fill(&log, 2).await;
    let r = log.append_batch((2..7).map(rec).collect()).await.unwrap();
    assert_eq!(r, 2..7);
    assert_eq!(log.append_batch(Vec::new()).await.unwrap(), 7..7);
    let all = log.read(0, 100, usize::MAX).unwrap();
    assert_eq!(all.len(), 7);
    for (i, r) in all.iter().enumerate() {
        check(r, i as u64);
    }
}

#[tokio::test]
async fn oversized_records_are_refused_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(1 << 20);
    c.max_record_bytes = 100;
    let (log, _) = Log::open(dir.path(), c).unwrap();
    let big = NewRecord {
        body: Bytes::from(vec![0; 101]),
        ..NewRecord::default()
    };
    assert!(matches!(
        log.append(big.clone()).await,
        Err(LogError::TooLarge {
            size: 101,
            limit: 100
        })
    ));
    let long_tp = NewRecord {
        traceparent: Some(Arc::from("x".repeat(256))),
        ..NewRecord::default()
    };
    assert!(matches!(
        log.append(long_tp).await,
        Err(LogError::TooLarge {
            size: 256,
            limit: 255
        })
    ));
    // A batch with one bad record is refused whole.
    assert!(log
        .append_batch(vec![NewRecord::default(), big])
        .await
        .is_err());
    assert_eq!(log.append(NewRecord::default()).await.unwrap(), 0);
    assert_eq!(log.info().end, 1);
}

#[tokio::test]
async fn offset_for_time_finds_the_first_record_at_or_after_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config(1024)).unwrap();
    // Timestamps 0, 10, 20, ... with one that goes backwards at 50.
    for i in 0..100u64 {
        let ts = if i == 50 { T0 + 5 } else { T0 + i * 10 };
        log.append(NewRecord {
            id: i,
            timestamp_ms: Some(ts),
            body: Bytes::from(vec![1; 60]),
            ..NewRecord::default()
        })
        .await
        .unwrap();
    }
    assert!(log.info().segments > 3);
    assert_eq!(log.offset_for_time(0).unwrap(), 0);
    assert_eq!(log.offset_for_time(T0).unwrap(), 0);
    assert_eq!(log.offset_for_time(T0 + 1).unwrap(), 1);
    assert_eq!(log.offset_for_time(T0 + 10).unwrap(), 1);
    assert_eq!(log.offset_for_time(T0 + 5).unwrap(), 1);
    assert_eq!(log.offset_for_time(T0 + 495).unwrap(), 51);
    assert_eq!(log.offset_for_time(T0 + 500).unwrap(), 51);
    assert_eq!(log.offset_for_time(T0 + 985).unwrap(), 99);
    assert_eq!(log.offset_for_time(T0 + 990).unwrap(), 99);
    assert_eq!(log.offset_for_time(T0 + 991).unwrap(), 100);
    // Every time agrees with a linear search.
    let all = log.read(0, usize::MAX, usize::MAX).unwrap();
    for t in (T0..T0 + 1000).step_by(7) {
        let want = all
            .iter()
            .find(|r| r.timestamp_ms >= t)
            .map_or(100, |r| r.offset);
        assert_eq!(log.offset_for_time(t).unwrap(), want, "time {t}");
    }
}

#[tokio::test]
async fn retention_by_size_deletes_the_oldest_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(1024);
    c.retention_bytes = Some(4096);
    let (log, _) = Log::open(dir.path(), c).unwrap();
    fill(&log, 200).await;
    let info = log.info();
    assert!(info.start > 0, "{info:?}");
    assert!(info.bytes <= 4096 + 1024, "{info:?}");
    assert_eq!(info.end, 200);
    assert_eq!(info.segments, segment_files(dir.path()).len());
    assert!(matches!(
        log.read(info.start - 1, 1, 0),
        Err(LogError::OutOfRange { .. })
    ));
    let kept = log.read(info.start, usize::MAX, usize::MAX).unwrap();
    assert_eq!(kept.len() as u64, 200 - info.start);
    check(&kept[0], info.start);
}

#[tokio::test]
async fn retention_by_age_deletes_segments_whose_newest_record_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(1024);
    c.retention_age = Some(Duration::from_secs(3600));
    let (log, _) = Log::open(dir.path(), c).unwrap();
    let now = writer_now_ms();
    let old = now - 2 * 3600 * 1000;
    for i in 0..40u64 {
        log.append(NewRecord {
            id: i,
            timestamp_ms: Some(old + i),
            body: Bytes::from(vec![0; 100]),
            ..NewRecord::default()
        })
        .await
        .unwrap();
    }
    // The old segments are the active one's elders only once newer
    // records roll past them.
    for i in 40..60u64 {
        log.append(NewRecord {
            id: i,
            timestamp_ms: Some(now + i),
            body: Bytes::from(vec![0; 100]),
            ..NewRecord::default()
        })
        .await
        .unwrap();
    }
    let info = log.info();
    assert!(info.start >= 35 && info.start <= 40, "{info:?}");
    let first = &log.read(info.start, 1, 0).unwrap()[0];
    assert!(first.timestamp_ms < now || info.start == 40);
    assert_eq!(log.offset_for_time(now).unwrap(), 40);
}

#[tokio::test]
async fn segments_roll_by_the_age_of_their_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(1 << 30);
    c.segment_age = Some(Duration::from_secs(60));
    let (log, _) = Log::open(dir.path(), c).unwrap();
    for i in 0..10u64 {
        log.append(NewRecord {
            timestamp_ms: Some(T0 + i * 30_000),
            ..NewRecord::default()
        })
        .await
        .unwrap();
    }
    // Records at 0, 30 s, 60 s (rolls), 90 s, 120 s (rolls), ...
    assert_eq!(log.info().segments, 5);
    let names: Vec<_> = segment_files(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(names[1], "00000000000000000002.log");
}

#[tokio::test]
async fn reopening_keeps_everything_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = Log::open(dir.path(), config(2048)).unwrap();
        fill(&log, 150).await;
        log.close().unwrap();
        assert!(matches!(log.append(rec(150)).await, Err(LogError::Closed)));
        // Reads still work after close.
        check(&log.read(149, 1, 0).unwrap()[0], 149);
    }
    let (log, r) = Log::open(dir.path(), config(2048)).unwrap();
    assert_eq!(r.records, 150);
    assert_eq!(r.truncated_bytes, 0);
    assert_eq!(r.truncated_file, None);
    assert_eq!(r.segments, log.info().segments);
    fill(&log, 10).await;
    drop(log);
    // Dropped without close: the writer finished all the same.
    let (log, r) = Log::open(dir.path(), config(2048)).unwrap();
    assert_eq!(r.records, 160);
    let all = log.read(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(all.len(), 160);
    for (i, r) in all.iter().enumerate() {
        check(r, i as u64);
    }
    assert_eq!(log.offset_for_time(T0 + 77).unwrap(), 77);
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config(2048)).unwrap();
    match Log::open(dir.path(), config(2048)) {
        Err(LogError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        other => panic!("{other:?}"),
    }
    log.close().unwrap();
    drop(log);
    Log::open(dir.path(), config(2048)).unwrap();
}

#[tokio::test]
async fn a_flipped_byte_in_the_tail_is_cut_at_that_record_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config(1 << 20)).unwrap();
    fill(&log, 20).await;
    // Position of record 12: the sum of the frames before it.
    let pos: u64 = log
        .read(0, 12, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| {
            record::frame_len(r.traceparent.as_deref().map_or(0, str::len), r.body.len()) as u64
        })
        .sum();
    let len = log.info().bytes;
    log.close().unwrap();
    drop(log);
    let file = segment_files(dir.path()).pop().unwrap();
    flip(&file, pos + 30);
    let (log, r) = Log::open(dir.path(), config(1 << 20)).unwrap();
    assert_eq!(r.records, 12);
    assert_eq!(r.truncated_bytes, len - pos);
    assert_eq!(r.truncated_file.as_deref(), Some(file.as_path()));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), pos);
    assert_eq!(log.info().end, 12);
    assert_eq!(log.append(rec(12)).await.unwrap(), 12);
    let all = log.read(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(all.len(), 13);
    for (i, r) in all.iter().enumerate() {
        check(r, i as u64);
    }
}

#[tokio::test]
async fn a_truncated_tail_and_a_partial_batch_are_cut_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config(1 << 20)).unwrap();
    fill(&log, 5).await;
    let before = log.info().bytes;
    log.append_batch((5..9).map(rec).collect()).await.unwrap();
    let after = log.info().bytes;
    log.close().unwrap();
    drop(log);
    let file = segment_files(dir.path()).pop().unwrap();
    // Cut inside the batch's last record: its first three records are
    // whole, but the batch is not.
    let f = OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(after - 3).unwrap();
    drop(f);
    let (log, r) = Log::open(dir.path(), config(1 << 20)).unwrap();
    assert_eq!(r.records, 5);
    assert_eq!(r.truncated_bytes, after - 3 - before);
    assert_eq!(log.info().end, 5);
    assert_eq!(log.info().bytes, before);
    // And a cut inside one record's prefix.
    log.close().unwrap();
    drop(log);
    let f = OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(before - 200).unwrap();
    drop(f);
    let (log, r) = Log::open(dir.path(), config(1 << 20)).unwrap();
    assert!(r.records < 5 && r.truncated_bytes > 0, "{r:?}");
    assert_eq!(log.info().end, r.records);
    fill(&log, 3).await;
    assert_eq!(
        log.read(0, 100, usize::MAX).unwrap().len() as u64,
        r.records + 3
    );
}

#[tokio::test]
async fn a_flipped_byte_in_an_older_segment_is_corrupt_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config(2048)).unwrap();
    fill(&log, 100).await;
    log.close().unwrap();
    drop(log);
    let files = segment_files(dir.path());
    assert!(files.len() > 3);
    let second = &files[1];
    let base: u64 =
        segment::parse_name(second.file_name().unwrap().to_str().unwrap(), "log").unwrap();
    flip(second, 40);
    let (log, r) = Log::open(dir.path(), config(2048)).unwrap();
    assert_eq!(r.truncated_bytes, 0);
    assert_eq!(r.records, 100);
    match log.read(base, 1, 0) {
        Err(LogError::Corrupt { file, position }) => {
            assert_eq!(&file, second);
            assert_eq!(position, 0);
        }
        other => panic!("{other:?}"),
    }
    // Reading across it fails too; the other segments read fine.
    assert!(matches!(
        log.read(0, usize::MAX, usize::MAX),
        Err(LogError::Corrupt { .. })
    ));
    let third =
        segment::parse_name(files[2].file_name().unwrap().to_str().unwrap(), "log").unwrap();
    let rest = log.read(third, usize::MAX, usize::MAX).unwrap();
    assert_eq!(rest.len() as u64, 100 - third);
    check(&log.read(0, 1, 0).unwrap()[0], 0);
}

#[tokio::test]
async fn missing_and_short_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), config(2048)).unwrap();
    fill(&log, 100).await;
    log.close().unwrap();
    drop(log);
    let files = segment_files(dir.path());
    std::fs::remove_file(files[0].with_extension("idx")).unwrap();
    let idx1 = files[1].with_extension("idx");
    let len = std::fs::metadata(&idx1).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&idx1)
        .unwrap()
        .set_len(len - 16)
        .unwrap();
    std::fs::write(files.last().unwrap().with_extension("idx"), b"junk").unwrap();
    let (log, r) = Log::open(dir.path(), config(2048)).unwrap();
    assert_eq!(r.records, 100);
    assert!(files[0].with_extension("idx").exists());
    assert_eq!(std::fs::metadata(&idx1).unwrap().len(), len);
    for from in 0..100 {
        check(&log.read(from, 1, 0).unwrap()[0], from);
    }
    assert_eq!(log.offset_for_time(T0 + 50).unwrap(), 50);
}

#[tokio::test]
async fn every_policy_acknowledges_and_moves_the_watched_end() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::GroupCommit {
            interval: Duration::from_millis(2),
        },
        FsyncPolicy::Os,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let c = LogConfig {
            fsync,
            ..config(4096)
        };
        let (log, _) = Log::open(dir.path(), c).unwrap();
        let mut end = log.watch_end();
        assert_eq!(*end.borrow_and_update(), 0);
        // Concurrent appends share writes and fsyncs.
        let futs: Vec<_> = (0..50).map(|i| log.append(rec(i))).collect();
        let offsets = tokio::time::timeout(
            Duration::from_secs(30),
            futures_util::future::join_all(futs),
        )
        .await
        .expect("appends answered");
        let mut offsets: Vec<u64> = offsets.into_iter().map(Result::unwrap).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..50).collect::<Vec<_>>(), "{fsync:?}");
        tokio::time::timeout(Duration::from_secs(10), end.wait_for(|e| *e == 50))
            .await
            .expect("end watched")
            .unwrap();
        assert_eq!(log.info().end, 50);
        assert_eq!(log.read(0, 100, usize::MAX).unwrap().len(), 50);
    }
}

#[tokio::test]
async fn garbage_files_in_the_directory_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A segment of random bytes and an index of random bytes.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let junk: Vec<u8> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(segment::log_path(dir.path(), 0), &junk).unwrap();
    std::fs::write(segment::idx_path(dir.path(), 0), &junk[..160]).unwrap();
    std::fs::write(segment::log_path(dir.path(), 7), &junk[100..]).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    let (log, r) = Log::open(dir.path(), config(2048)).unwrap();
    assert_eq!(r.segments, 2);
    assert_eq!(r.truncated_bytes, 4900);
    // Offsets 0..7 are claimed by a segment that holds none of them.
    assert!(matches!(log.read(0, 1, 0), Err(LogError::Corrupt { .. })));
    assert!(log.offset_for_time(5).is_ok());
    assert_eq!(log.append(rec(7)).await.unwrap(), 7);
    check(&log.read(7, 1, 0).unwrap()[0], 7);
}
