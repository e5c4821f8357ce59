use super::*;
use crate::store::testing::sample_record;

fn records(range: std::ops::Range<usize>) -> Vec<LogRecord> {
    range.map(sample_record).collect()
}

fn open(dir: &Path, max: u64) -> (Spool, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (Spool::open(dir, max, metrics.clone()).unwrap(), metrics)
}

/// Equal records, with a short message when they are not (a full dump is unreadable).
fn same(got: &[LogRecord], want: &[LogRecord]) {
    assert_eq!(got.len(), want.len(), "record count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g == w, "record {i} differs: got {g:?}\nwant {w:?}");
    }
}

fn read_all(spool: &mut Spool) -> Vec<LogRecord> {
    let mut out = Vec::new();
    while let Some(seg) = spool.oldest() {
        let c = read_segment(&seg.path).unwrap();
        assert!(c.damaged.is_empty(), "{:?}", c.damaged);
        out.extend(c.records);
        spool.remove(&seg).unwrap();
    }
    out
}

#[test]
fn records_round_trip_in_order_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let written = records(0..300);
    {
        // 1 MiB max → 128 KiB segments, so 300 records of ~1 KiB span several.
        let (mut spool, metrics) = open(dir.path(), 1024 * 1024);
        for chunk in written.chunks(7) {
            spool.append(chunk, SpoolReason::DbError).unwrap();
        }
        assert!(spool.segment_count() > 1, "{spool:?}");
        assert_eq!(metrics.spool_bytes.get() as u64, spool.bytes());
        assert_eq!(
            metrics.spool_records.with_label_values(&["db_error"]).get(),
            300
        );
    }
    // As after a crash: a new process finds the segments and reads them back in order.
    let (mut spool, metrics) = open(dir.path(), 1024 * 1024);
    assert!(spool.bytes() > 0);
    assert_eq!(metrics.spool_bytes.get() as u64, spool.bytes());
    same(&read_all(&mut spool), &written);
    assert!(spool.is_empty());
    assert_eq!(metrics.spool_bytes.get(), 0);
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(SEGMENT_SUFFIX))
        .collect();
    assert!(left.is_empty(), "segments left behind: {left:?}");
}

#[test]
fn appends_after_a_restart_go_to_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let written = records(0..4);
    {
        let (mut spool, _) = open(dir.path(), 1024 * 1024);
        spool.append(&written[..2], SpoolReason::DbError).unwrap();
    }
    let (mut spool, _) = open(dir.path(), 1024 * 1024);
    spool.append(&written[2..], SpoolReason::QueueFull).unwrap();
    assert_eq!(spool.segment_count(), 2);
    same(&read_all(&mut spool), &written);
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = open(dir.path(), 1024 * 1024);
    let err = Spool::open(dir.path(), 1024 * 1024, Arc::default()).unwrap_err();
    assert!(matches!(err, SpoolError::Locked(_)), "{err}");
    drop(first);
    Spool::open(dir.path(), 1024 * 1024, Arc::default()).unwrap();
}

/// A record as the first spool format wrote it. If this stops decoding, a `LogRecord` field
/// was added without `#[serde(default)]` (or renamed) and an upgrade would lose spooled records.
#[test]
fn a_record_spooled_by_the_first_version_still_reads() {
    let v1 = br#"{"request_id":"0193f3a4-5b6c-7d8e-9f00-112233445566","created_at":"2025-05-01T10:00:00.123456Z","endpoint":"chat","user_id":"u1","prompt":"hi","response":"hello","model_version":"gpt-5-mini","provider":"openai_chat","upstream_model":"gpt-5-mini","latency_ms":12.5,"ttft_ms":null,"input_tokens":3,"cached_input_tokens":0,"output_tokens":2,"cost_usd":0.000001,"status":"ok","http_status":200,"error_type":null,"error_message":null,"finish_reason":"stop","streamed":false,"tags":["a"],"metadata":{},"heuristic_label":null,"heuristic_results":[],"api_key_name":null}"#;
    let mut frame = Vec::new();
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&(v1.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(v1).to_le_bytes());
    frame.extend_from_slice(v1);
    let c = decode_frames(&frame);
    assert!(c.damaged.is_empty(), "{:?}", c.damaged);
    assert_eq!(c.records.len(), 1);
    assert_eq!(c.records[0].prompt, "hi");
    assert_eq!(
        c.records[0].created_at.to_rfc3339(),
        "2025-05-01T10:00:00.123456+00:00"
    );
}

#[test]
fn torn_tail_is_skipped_and_the_rest_is_read() {
    let mut buf = Vec::new();
    let recs = records(0..5);
    for r in &recs {
        encode_frame(r, &mut buf).unwrap();
    }
    // A kill -9 in the middle of the last write.
    let whole = buf.len();
    buf.truncate(whole - 10);
    let c = decode_frames(&buf);
    same(&c.records, &recs[..4]);
    assert_eq!(c.damaged.len(), 1);
    assert_eq!(c.damaged[0].what, "torn frame at the end of the segment");
    // Only part of a header.
    let mut buf2 = Vec::new();
    encode_frame(&recs[0], &mut buf2).unwrap();
    buf2.extend_from_slice(&MAGIC[..3]);
    let c = decode_frames(&buf2);
    same(&c.records, &recs[..1]);
    assert_eq!(c.damaged.len(), 1);
}

#[test]
fn a_damaged_frame_in_the_middle_costs_only_that_record() {
    let recs = records(0..6);
    let mut buf = Vec::new();
    let mut starts = Vec::new();
    for r in &recs {
        starts.push(buf.len());
        encode_frame(r, &mut buf).unwrap();
    }
    // Flip a payload byte of record 2 and overwrite record 4's magic.
    buf[starts[2] + HEADER_LEN + 5] ^= 0x01;
    buf[starts[4]] = b'x';
    let c = decode_frames(&buf);
    let want: Vec<_> = [0, 1, 3, 5].iter().map(|&i| recs[i].clone()).collect();
    same(&c.records, &want);
    assert_eq!(c.damaged.len(), 2, "{:?}", c.damaged);
    assert_eq!(c.damaged[0].what, "checksum mismatch");
    assert_eq!(c.damaged[0].offset, starts[2]);
    assert_eq!(c.damaged[1].offset, starts[4]);
    // Garbage, and garbage that happens to contain the magic, yields nothing and no panic.
    let junk: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    assert!(decode_frames(&junk).records.is_empty());
    let mut tricky = MAGIC.to_vec();
    tricky.extend_from_slice(&[255, 255, 255, 255, 0, 0, 0, 0]);
    tricky.extend_from_slice(&MAGIC);
    assert_eq!(decode_frames(&tricky).records.len(), 0);
}

/// A disk that takes `room` more bytes, then reports ENOSPC.
struct FillingDisk {
    bytes: Vec<u8>,
    room: usize,
}

impl Write for FillingDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        let n = buf.len().min(self.room).min(1000);
        self.bytes.extend_from_slice(&buf[..n]);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SegmentFile for FillingDisk {
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn cut_to(&mut self, len: u64) -> std::io::Result<()> {
        self.bytes.truncate(len as usize);
        Ok(())
    }
}

#[test]
fn an_append_cut_short_by_a_full_disk_leaves_no_torn_frame() {
    let recs = records(0..4);
    let mut first = Vec::new();
    for r in &recs[..2] {
        encode_frame(r, &mut first).unwrap();
    }
    let mut disk = FillingDisk {
        bytes: Vec::new(),
        room: first.len() + 1500,
    };
    append_durably(&mut disk, &first, 0).unwrap();
    let mut second = Vec::new();
    for r in &recs[2..] {
        encode_frame(r, &mut second).unwrap();
    }
    // The disk takes part of the second batch, then is full.
    let (err, cut_back) = append_durably(&mut disk, &second, first.len() as u64).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(28));
    assert!(cut_back);
    // Replay finds exactly the first batch and no damage: nothing counted as spool_corrupt
    // for records that were never acknowledged as spooled.
    let c = decode_frames(&disk.bytes);
    assert!(c.damaged.is_empty(), "{:?}", c.damaged);
    same(&c.records, &recs[..2]);
}

#[test]
fn a_full_spool_refuses_the_batch_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, metrics) = open(dir.path(), 64 * 1024);
    let mut n = 0;
    let err = loop {
        match spool.append(&records(n..n + 10), SpoolReason::QueueFull) {
            Ok(()) => n += 10,
            Err(e) => break e,
        }
        assert!(n < 10_000, "never filled");
    };
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert!(spool.bytes() <= 64 * 1024);
    assert!(spool.last_failure().unwrap().full);
    assert_eq!(
        metrics
            .spool_write_errors
            .with_label_values(&["full"])
            .get(),
        1
    );
    assert_eq!(metrics.spool_max_bytes.get(), 64 * 1024);
    // Still full: the recheck keeps the failure; after a replay frees space it clears.
    spool.recheck();
    assert!(spool.last_failure().is_some());
    assert_eq!(read_all(&mut spool).len(), n);
    spool.recheck();
    assert!(spool.last_failure().is_none());
    spool
        .append(&records(0..1), SpoolReason::QueueFull)
        .unwrap();
}

#[test]
fn an_unwritable_directory_is_an_io_error_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, metrics) = open(dir.path(), 1024 * 1024);
    // Replace the directory under the spool with a file: no segment can be created.
    let moved = dir.path().with_extension("moved");
    fs::rename(dir.path(), &moved).unwrap();
    fs::write(dir.path(), b"not a directory").unwrap();
    let err = spool
        .append(&records(0..1), SpoolReason::DbError)
        .unwrap_err();
    assert!(matches!(err, SpoolError::Io { .. }), "{err}");
    assert_eq!(
        metrics.spool_write_errors.with_label_values(&["io"]).get(),
        1
    );
    spool.recheck();
    assert!(spool.last_failure().is_some());
    fs::remove_file(dir.path()).unwrap();
    fs::rename(&moved, dir.path()).unwrap();
    spool.recheck();
    assert!(spool.last_failure().is_none());
    let one = records(0..1);
    spool.append(&one, SpoolReason::DbError).unwrap();
    same(&read_all(&mut spool), &one);
}
