//! The writer's append-only spool: log records the database cannot take right now, kept on disk
//! (fsync'd) until they are replayed into it, so a database outage or a crash loses nothing.
//!
//! Layout: numbered segment files `<dir>/00000000000000000001.seg`, … written in order and
//! replayed oldest first; a segment is deleted only after every record in it is committed, so a
//! crash during replay replays it again and `ON CONFLICT DO NOTHING` drops the repeats. After a
//! restart appends always go to a new segment, so a torn write can only be the tail of a segment
//! that is no longer written to.
//!
//! Frame, one per record: `FF 4C 51 53` ("\xFFLQS") | payload length u32 LE | CRC-32 of the
//! payload u32 LE | payload = the `LogRecord` as JSON. `0xFF` never occurs in UTF-8, so the magic
//! cannot appear inside a payload and a reader resynchronises after a damaged frame by scanning
//! for the next magic whose checksum holds. A damaged region (torn tail after `kill -9`, a
//! flipped bit) costs the records in it, which are counted, never the rest of the segment.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::LogRecord;
use crate::metrics::Metrics;

const MAGIC: [u8; 4] = [0xFF, b'L', b'Q', b'S'];
const HEADER_LEN: usize = 12;
const SEGMENT_SUFFIX: &str = ".seg";
const LOCK_FILE: &str = ".lock";
/// A segment is closed and a new one started once it holds this much (or `max_bytes / 8`, if
/// smaller), so replay can delete finished parts while the spool is still being written.
const MAX_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
const MIN_SEGMENT_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {} is used by another gateway process (each one needs its own writer.spool_dir)", .0.display())]
    Locked(PathBuf),
    #[error("spool is full ({bytes} of {max_bytes} bytes, writer.spool_max_bytes); {needed} more bytes do not fit")]
    Full {
        bytes: u64,
        max_bytes: u64,
        needed: u64,
    },
    #[error("spool I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode a log record for the spool: {0}")]
    Encode(String),
}

impl SpoolError {
    /// The `reason` label of `lqo_spool_write_errors_total`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            SpoolError::Full { .. } => "full",
            _ => "io",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why records were spooled: the `reason` label of `lqo_spool_records_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolReason {
    /// The database failed, timed out, or is known to be down.
    DbError,
    /// The writer queue was full.
    QueueFull,
    /// Submitted after the writer shut down; replayed on the next start.
    Closed,
}

impl SpoolReason {
    fn label(self) -> &'static str {
        match self {
            SpoolReason::DbError => "db_error",
            SpoolReason::QueueFull => "queue_full",
            SpoolReason::Closed => "closed",
        }
    }
}

/// One segment file, closed for appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

struct Active {
    file: File,
    segment: Segment,
}

/// The last failed write, until a write (or a probe) succeeds again.
#[derive(Debug, Clone)]
pub struct SpoolFailure {
    pub message: String,
    pub full: bool,
    pub at: SystemTime,
}

/// The records of one segment, as far as they could be read.
#[derive(Debug, Default)]
pub struct SegmentContents {
    pub records: Vec<LogRecord>,
    /// Damaged regions skipped (each lost at least one record).
    pub damaged: Vec<Damage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: usize,
    pub bytes: usize,
    pub what: &'static str,
}

/// What the spool holds and whether it can be written, published after every operation so that
/// readers (`/ready`, the writer's logs) never wait for the spool's lock, which is held during
/// disk I/O.
#[derive(Debug, Default)]
pub struct SpoolStats {
    bytes: AtomicU64,
    segments: AtomicUsize,
    failure: Mutex<Option<String>>,
}

impl SpoolStats {
    /// Bytes on disk in every segment, including the one being written.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn segments(&self) -> usize {
        self.segments.load(Ordering::Acquire)
    }

    /// The last failed write, unless a later write or probe succeeded.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The spool of one gateway process. Not internally synchronised: the writer keeps it behind a
/// mutex that is only taken on blocking threads (it is held during disk I/O).
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Held (locked) for the spool's lifetime; the OS releases it if the process dies.
    _lock: File,
    closed: VecDeque<Segment>,
    active: Option<Active>,
    next_seq: u64,
    total_bytes: u64,
    last_failure: Option<SpoolFailure>,
    metrics: Arc<Metrics>,
    stats: Arc<SpoolStats>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("bytes", &self.total_bytes)
            .field("segments", &self.segment_count())
            .finish()
    }
}

impl Spool {
    /// Opens (creating) the directory, locks it against a second process, and lists the
    /// segments a previous run left behind, oldest first.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir.to_path_buf())),
            Err(TryLockError::Error(source)) => {
                return Err(SpoolError::Io {
                    path: lock_path,
                    source,
                })
            }
        }
        let mut closed = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let bytes = entry.metadata().map_err(io_err(&path))?.len();
            closed.push(Segment { seq, path, bytes });
        }
        closed.sort_by_key(|s| s.seq);
        let next_seq = closed.last().map_or(1, |s| s.seq + 1);
        let total_bytes = closed.iter().map(|s| s.bytes).sum();
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            _lock: lock,
            closed: closed.into(),
            active: None,
            next_seq,
            total_bytes,
            last_failure: None,
            metrics,
            stats: Arc::default(),
        };
        spool.metrics.spool_max_bytes.set(clamp_i64(max_bytes));
        spool.publish();
        if total_bytes > 0 {
            tracing::warn!(
                dir = %dir.display(),
                segments = spool.closed.len(),
                bytes = total_bytes,
                "spool holds records from a previous run; replaying them into the database"
            );
        }
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The figures this spool publishes after every operation.
    pub fn stats(&self) -> Arc<SpoolStats> {
        self.stats.clone()
    }

    /// Bytes on disk in every segment, including the one being written.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.total_bytes == 0
    }

    pub fn segment_count(&self) -> usize {
        self.closed.len() + usize::from(self.active.is_some())
    }

    /// The last failed write, unless a later write or probe succeeded.
    pub fn last_failure(&self) -> Option<&SpoolFailure> {
        self.last_failure.as_ref()
    }

    /// Appends the records and fsyncs them before returning: on `Ok` they survive a crash. On an
    /// error none of them count as spooled (a partly written batch is harmless: replay skips a
    /// torn frame, and a complete one is a duplicate that the database ignores).
    pub fn append(&mut self, records: &[LogRecord], reason: SpoolReason) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        let result = self.try_append(records);
        match &result {
            Ok(()) => {
                self.metrics
                    .spool_records
                    .with_label_values(&[reason.label()])
                    .inc_by(records.len() as u64);
                self.last_failure = None;
            }
            Err(e) => {
                self.metrics
                    .spool_write_errors
                    .with_label_values(&[e.metric_reason()])
                    .inc();
                self.last_failure = Some(SpoolFailure {
                    message: e.to_string(),
                    full: matches!(e, SpoolError::Full { .. }),
                    at: SystemTime::now(),
                });
            }
        }
        self.publish();
        result
    }

    fn try_append(&mut self, records: &[LogRecord]) -> Result<(), SpoolError> {
        let mut buf = Vec::with_capacity(records.len() * 1024);
        for r in records {
            encode_frame(r, &mut buf)?;
        }
        let needed = buf.len() as u64;
        if self.total_bytes + needed > self.max_bytes {
            return Err(SpoolError::Full {
                bytes: self.total_bytes,
                max_bytes: self.max_bytes,
                needed,
            });
        }
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.segment.bytes >= self.segment_bytes)
        {
            self.close_active();
        }
        if self.active.is_none() {
            self.active = Some(self.create_segment()?);
        }
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let path = active.segment.path.clone();
        if let Err((source, cut_back)) =
            append_durably(&mut active.file, &buf, active.segment.bytes)
        {
            if !cut_back {
                // The file may now end in a partial frame; never append after it.
                let size = fs::metadata(&path)
                    .map(|m| m.len())
                    .unwrap_or(active.segment.bytes);
                self.total_bytes = self.total_bytes - active.segment.bytes + size;
                active.segment.bytes = size;
                self.close_active();
            }
            return Err(SpoolError::Io { path, source });
        }
        active.segment.bytes += needed;
        self.total_bytes += needed;
        Ok(())
    }

    fn create_segment(&mut self) -> Result<Active, SpoolError> {
        let seq = self.next_seq;
        let path = self.dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.next_seq += 1;
        // The new directory entry must be durable too, or a crash could lose the whole file.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok(Active {
            file,
            segment: Segment {
                seq,
                path,
                bytes: 0,
            },
        })
    }

    fn close_active(&mut self) {
        if let Some(active) = self.active.take() {
            if active.segment.bytes > 0 {
                self.closed.push_back(active.segment);
            } else {
                // Nothing was ever written: not worth a replay.
                let _ = fs::remove_file(&active.segment.path);
            }
        }
    }

    /// The oldest segment to replay, closing the one being written if it is the only one left.
    /// Stays listed (and counted) until [`Spool::remove`].
    pub fn oldest(&mut self) -> Option<Segment> {
        if self.closed.is_empty() {
            self.close_active();
            self.publish();
        }
        self.closed.front().cloned()
    }

    /// Deletes a replayed segment. It leaves the list even if the file cannot be deleted (it is
    /// then replayed again on the next start, which the database ignores as duplicates).
    pub fn remove(&mut self, segment: &Segment) -> Result<(), SpoolError> {
        let Some(pos) = self.closed.iter().position(|s| s.seq == segment.seq) else {
            return Ok(());
        };
        if let Some(s) = self.closed.remove(pos) {
            self.total_bytes = self.total_bytes.saturating_sub(s.bytes);
        }
        self.publish();
        match fs::remove_file(&segment.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SpoolError::Io {
                path: segment.path.clone(),
                source,
            }),
        }
    }

    /// Clears a recorded failure once writing would work again: a full spool has room, or a
    /// probe file can be written and synced. Lets `/ready` recover without waiting for traffic.
    pub fn recheck(&mut self) {
        let Some(failure) = &self.last_failure else {
            return;
        };
        let healthy = if failure.full {
            // A batch of a few hundred records needs well under this.
            self.total_bytes + self.segment_bytes.min(self.max_bytes / 4) <= self.max_bytes
        } else {
            let probe = self.dir.join(".probe");
            let ok = File::create(&probe)
                .and_then(|mut f| f.write_all(b"ok").and_then(|()| f.sync_data()))
                .is_ok();
            let _ = fs::remove_file(&probe);
            ok
        };
        if healthy {
            tracing::info!(dir = %self.dir.display(), "spool is writable again");
            self.last_failure = None;
            self.publish();
        }
    }

    fn publish(&self) {
        self.metrics.spool_bytes.set(clamp_i64(self.total_bytes));
        self.stats.bytes.store(self.total_bytes, Ordering::Release);
        self.stats
            .segments
            .store(self.segment_count(), Ordering::Release);
        *self.stats.failure.lock().unwrap_or_else(|p| p.into_inner()) =
            self.last_failure.as_ref().map(|f| f.message.clone());
    }
}

/// A segment file as appends see it (a trait so tests can cut a write short).
trait SegmentFile: Write {
    fn sync(&mut self) -> std::io::Result<()>;
    /// Truncates to `len` bytes and syncs.
    fn cut_to(&mut self, len: u64) -> std::io::Result<()>;
}

impl SegmentFile for File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }

    fn cut_to(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len).and_then(|()| self.sync_data())
    }
}

/// Writes `buf` at the end of `file` (`len_before` bytes long) and syncs it. A write cut short
/// (a full disk) is undone by truncating back to `len_before`, so no torn frame is left for
/// replay to count as a lost record: those records were never acknowledged as spooled, the
/// caller still holds them. Err carries the error and whether the undo worked.
fn append_durably(
    file: &mut impl SegmentFile,
    buf: &[u8],
    len_before: u64,
) -> Result<(), (std::io::Error, bool)> {
    match file.write_all(buf).and_then(|()| file.sync()) {
        Ok(()) => Ok(()),
        Err(e) => {
            let cut_back = file.cut_to(len_before).is_ok();
            Err((e, cut_back))
        }
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Appends one frame (header + JSON payload) to `buf`.
pub fn encode_frame(record: &LogRecord, buf: &mut Vec<u8>) -> Result<(), SpoolError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    serde_json::to_writer(&mut *buf, record).map_err(|e| SpoolError::Encode(e.to_string()))?;
    let payload_len = buf.len() - start - HEADER_LEN;
    let len = u32::try_from(payload_len).map_err(|_| {
        buf.truncate(start);
        SpoolError::Encode(format!("record of {payload_len} bytes is too large"))
    })?;
    let crc = crc32fast::hash(&buf[start + HEADER_LEN..]);
    buf[start..start + 4].copy_from_slice(&MAGIC);
    buf[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reads every intact record of a segment file, skipping damaged regions.
pub fn read_segment(path: &Path) -> Result<SegmentContents, SpoolError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    Ok(decode_frames(&bytes))
}

/// Decodes frames from a segment's bytes; a damaged frame is skipped by scanning for the next
/// magic whose checksum holds, so one bad region never hides the records after it.
pub fn decode_frames(buf: &[u8]) -> SegmentContents {
    let mut out = SegmentContents::default();
    let mut pos = 0;
    while pos < buf.len() {
        match frame_at(buf, pos) {
            Ok((payload, next)) => {
                match serde_json::from_slice::<LogRecord>(payload) {
                    Ok(r) => out.records.push(r),
                    Err(_) => out.damaged.push(Damage {
                        offset: pos,
                        bytes: next - pos,
                        what: "checksum ok but not a log record",
                    }),
                }
                pos = next;
            }
            Err(what) => {
                let resume = find_frame(buf, pos + 1).unwrap_or(buf.len());
                out.damaged.push(Damage {
                    offset: pos,
                    bytes: resume - pos,
                    what,
                });
                pos = resume;
            }
        }
    }
    out
}

/// The payload of an intact frame starting at `pos` and where the next one starts.
fn frame_at(buf: &[u8], pos: usize) -> Result<(&[u8], usize), &'static str> {
    let header = buf
        .get(pos..pos + HEADER_LEN)
        .ok_or("torn frame header at the end of the segment")?;
    if header[..4] != MAGIC {
        return Err("not a frame start");
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let start = pos + HEADER_LEN;
    let payload = buf
        .get(start..start + len)
        .ok_or("torn frame at the end of the segment")?;
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch");
    }
    Ok((payload, start + len))
}

/// The next position at or after `from` where an intact frame starts.
fn find_frame(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < buf.len() {
        let offset = buf[at..].windows(MAGIC.len()).position(|w| w == MAGIC)?;
        let candidate = at + offset;
        if frame_at(buf, candidate).is_ok() {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

#[cfg(test)]
mod tests;
