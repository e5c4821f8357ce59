//! The batching writer: request handlers hand records over without waiting; one task inserts them
//! in batches by count or time window. A batch the database cannot take goes to the on-disk spool
//! (`spool.rs`) and a replay task feeds the spool back, in order, once the database answers, so
//! records survive outages, overload and crashes and land exactly once (inserts are idempotent).
//!
//! States: while the database takes writes, batches go straight to it and only overflow (a full
//! queue) is spooled. After a failed write the writer is *spooling*: every batch is appended to
//! the spool behind what is already there, and only the replay task talks to the database. It
//! leaves that state once it has drained the spool and the database answers.
//!
//! Spool I/O (appends with their fsync, deletes, probes) never runs on a runtime worker thread:
//! the writer and the replay task use `spawn_blocking`, and `submit` — synchronous, called on the
//! request path and from `Drop` — hands its thread over with `block_in_place` first. The spool's
//! figures for `/ready` are read without its lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::WriterConfig;
use super::logs::LogStore;
use super::spool::{Spool, SpoolError, SpoolReason, SpoolStats};
use super::{LogRecord, StoreError};
use crate::metrics::Metrics;

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the idle replay task looks again: re-checks a recorded spool failure (so `/ready`
/// recovers without traffic) and notices a spooling state it was not woken for.
const SPOOL_RECHECK: Duration = Duration::from_secs(5);
/// At most one log line per this interval for per-record events (overflow, drops).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where a submitted record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Into the queue of the writer task.
    Queued,
    /// The queue was full (or closed): onto the spool on disk, fsync'd, to be replayed.
    Spooled,
}

/// The record is lost: neither the queue nor the spool took it. The caller's request goes on
/// regardless; the writer has already counted and logged the loss.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("writer queue is full ({capacity} records) and the spool failed ({spool_error}); log record {request_id} dropped")]
    QueueFull {
        request_id: uuid::Uuid,
        capacity: usize,
        spool_error: String,
    },
    #[error(
        "writer is shut down and the spool failed ({spool_error}); log record {request_id} dropped"
    )]
    Closed {
        request_id: uuid::Uuid,
        spool_error: String,
    },
}

/// What `/ready` reports about the write path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterStatus {
    pub queue_depth: usize,
    /// The database failed and records are going to the spool until it is drained.
    pub spooling: bool,
    /// The last database error, while writes have not recovered from it.
    pub db_error: Option<String>,
    pub spool_bytes: u64,
    pub spool_segments: usize,
    /// The last failed spool write (full or I/O), until a write or re-check succeeds.
    pub spool_error: Option<String>,
}

/// Logs a repeating event at most once per [`LOG_EVERY`], with how many were not logged.
#[derive(Default)]
struct Throttle {
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    fn check(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < LOG_EVERY.as_millis() as u64 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// State shared by every handle, the writer task and the replay task.
struct Shared {
    metrics: Arc<Metrics>,
    /// Held during disk I/O, so only ever locked on a blocking thread (see [`Shared::with_spool`]).
    spool: Mutex<Spool>,
    /// The spool's figures, readable without its lock.
    spool_stats: Arc<SpoolStats>,
    /// The last write error while the database has not yet accepted a write since.
    last_error: Mutex<Option<String>>,
    spooling: AtomicBool,
    /// Wakes the replay task when something was spooled.
    replay_wake: Notify,
    /// Wakes the writer before its flush interval is over: a batch's worth is queued.
    batch_full: Notify,
    /// Records per batch (`writer.batch_size`, at least one).
    batch_size: usize,
    /// Set once to ask the tasks to stop taking records, flush what is queued and exit, even
    /// while clones of the handle (and so senders) are still alive.
    shutdown: watch::Sender<bool>,
    overflow_log: Throttle,
    drop_log: Throttle,
}

impl Shared {
    fn lock_spool(&self) -> MutexGuard<'_, Spool> {
        // A panic elsewhere while holding the lock leaves the spool's bookkeeping usable.
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the spool on a blocking thread. None only when the runtime is shutting down
    /// before the blocking task ran, or `f` panicked (logged).
    async fn with_spool<R, F>(self: &Arc<Self>, f: F) -> Option<R>
    where
        F: FnOnce(&Shared, &mut Spool) -> R + Send + 'static,
        R: Send + 'static,
    {
        let shared = self.clone();
        match tokio::task::spawn_blocking(move || {
            let mut spool = shared.lock_spool();
            f(&shared, &mut spool)
        })
        .await
        {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "spool operation failed");
                None
            }
        }
    }

    fn set_last_error(&self, error: Option<String>) -> Option<String> {
        let mut guard = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, error)
    }

    fn spooling(&self) -> bool {
        self.spooling.load(Ordering::Acquire)
    }

    /// Appends and fsyncs; wakes the replay task on success, logs loudly on failure. Blocks on
    /// disk I/O: call it on a blocking thread.
    fn spool_append(&self, records: &[LogRecord], reason: SpoolReason) -> Result<(), SpoolError> {
        let result = self.lock_spool().append(records, reason);
        match &result {
            Ok(()) => self.replay_wake.notify_one(),
            Err(e) => {
                if let Some(suppressed) = self.drop_log.check() {
                    tracing::error!(
                        error = %e,
                        records = records.len(),
                        similar_errors_not_logged = suppressed,
                        "SPOOL WRITE FAILED: log records cannot be kept on disk"
                    );
                }
            }
        }
        result
    }

    fn record_success(&self, batch_len: usize, inserted: u64) {
        let m = &self.metrics;
        m.writer_batch_size.observe(batch_len as f64);
        m.writer_rows_written.inc_by(inserted);
        if let Some(previous) = self.set_last_error(None) {
            tracing::info!(previous_error = %previous, "log writes recovered");
        }
    }

    /// A database write failed: count it, remember it for `/ready`, and send further batches
    /// to the spool until the replay task has drained it.
    fn db_failed(&self, e: &WriteError, records: usize, who: &'static str) {
        self.metrics.writer_errors.inc();
        self.set_last_error(Some(e.to_string()));
        let was_spooling = self.spooling.swap(true, Ordering::AcqRel);
        // The replay task probes the database while spooling; it may be waiting for work.
        self.replay_wake.notify_one();
        if was_spooling {
            tracing::warn!(error = %e, records, who, "database write failed again; records stay in the spool");
        } else {
            tracing::error!(
                error = %e,
                records,
                who,
                "database write failed; spooling log records to disk until it is back"
            );
        }
    }

    fn dropped(&self, reason: &'static str, n: usize, detail: &dyn std::fmt::Display) {
        self.metrics
            .writer_dropped
            .with_label_values(&[reason])
            .inc_by(n as u64);
        if let Some(suppressed) = self.drop_log.check() {
            tracing::error!(
                reason,
                records = n,
                error = %detail,
                similar_errors_not_logged = suppressed,
                "LOG RECORDS LOST: neither the database nor the spool took them"
            );
        }
    }
}

/// Submits records to the writer task. Cheap to clone; never waits for the database.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<LogRecord>,
    shared: Arc<Shared>,
}

impl WriterHandle {
    /// Queues a record for the database without waiting. When the queue is full (the database is
    /// slower than traffic) or closed (shutdown), the record is appended to the spool instead
    /// (one fsync; this is the only case where the request path touches the disk). `Err` only
    /// when the spool failed too; the loss is already counted and logged.
    pub fn submit(&self, record: LogRecord) -> Result<Submitted, SubmitError> {
        match self.tx.try_send(record) {
            Ok(()) => {
                // The writer sleeps through its flush interval instead of waking per record;
                // a full batch wakes it early.
                if self.queue_depth() >= self.shared.batch_size {
                    self.shared.batch_full.notify_one();
                }
                Ok(Submitted::Queued)
            }
            Err(mpsc::error::TrySendError::Full(record)) => {
                self.overflow(record, SpoolReason::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(record)) => {
                self.overflow(record, SpoolReason::Closed)
            }
        }
    }

    fn overflow(&self, record: LogRecord, reason: SpoolReason) -> Result<Submitted, SubmitError> {
        let appended = off_the_runtime(|| {
            self.shared
                .spool_append(std::slice::from_ref(&record), reason)
        });
        match appended {
            Ok(()) => {
                if let Some(suppressed) = self.shared.overflow_log.check() {
                    tracing::warn!(
                        request_id = %record.request_id,
                        ?reason,
                        similar_not_logged = suppressed,
                        "writer queue unavailable; log record spooled to disk"
                    );
                }
                Ok(Submitted::Spooled)
            }
            Err(e) => {
                let request_id = record.request_id;
                let spool_error = e.to_string();
                if reason == SpoolReason::Closed {
                    self.shared.dropped("closed", 1, &e);
                    Err(SubmitError::Closed {
                        request_id,
                        spool_error,
                    })
                } else {
                    self.shared.dropped("queue_full", 1, &e);
                    Err(SubmitError::QueueFull {
                        request_id,
                        capacity: self.tx.max_capacity(),
                        spool_error,
                    })
                }
            }
        }
    }

    /// Records waiting in the queue (not counting the batch being written).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The last database error, while writes have not recovered from it; `None` once a write
    /// succeeds again.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Queue, spool and error state, for `/ready`. Never waits for disk I/O.
    pub fn status(&self) -> WriterStatus {
        let stats = &self.shared.spool_stats;
        WriterStatus {
            queue_depth: self.queue_depth(),
            spooling: self.shared.spooling(),
            db_error: self.last_error(),
            spool_bytes: stats.bytes(),
            spool_segments: stats.segments(),
            spool_error: stats.failure(),
        }
    }

    /// Asks the writer to stop accepting records, flush the queue and exit; returns at once.
    /// Later `submit`s go to the spool (replayed on the next start).
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// Runs blocking I/O from synchronous code that may be on a runtime worker thread: on the
/// multi-threaded runtime (the gateway's) the worker first hands its other tasks to another
/// thread (`block_in_place`), so they do not wait for the disk. Elsewhere (no runtime, a blocking
/// thread, the current-thread runtime of some tests) it runs inline.
fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Opens the spool (replaying what a previous run left there) and starts the writer and replay
/// tasks on the current runtime. The returned task ends after both.
pub fn spawn(
    store: Arc<dyn LogStore>,
    cfg: &WriterConfig,
    metrics: Arc<Metrics>,
) -> Result<(WriterHandle, JoinHandle<()>), SpoolError> {
    let spool =
        off_the_runtime(|| Spool::open(&cfg.spool_dir, cfg.spool_max_bytes, metrics.clone()))?;
    let spool_stats = spool.stats();
    // A zero capacity or batch size would panic or spin; one is the least that works.
    let (tx, rx) = mpsc::channel(cfg.channel_capacity.max(1));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let batch_size = cfg.batch_size.max(1);
    let shared = Arc::new(Shared {
        metrics,
        spool: Mutex::new(spool),
        spool_stats,
        last_error: Mutex::new(None),
        spooling: AtomicBool::new(false),
        replay_wake: Notify::new(),
        batch_full: Notify::new(),
        batch_size,
        shutdown,
        overflow_log: Throttle::default(),
        drop_log: Throttle::default(),
    });
    let db_timeout = Duration::from_millis(cfg.db_timeout_ms.max(1));
    let writer = Writer {
        store: store.clone(),
        rx,
        shutdown: shutdown_rx.clone(),
        shared: shared.clone(),
        flush_interval: Duration::from_millis(cfg.flush_interval_ms),
        db_timeout,
        closing: false,
        close_deadline: None,
    };
    let replayer = replay::Replayer {
        store,
        shared: shared.clone(),
        // Replay is catching up, not latency-bound: bigger statements go faster.
        chunk: batch_size.max(2_000),
        db_timeout,
        shutdown: shutdown_rx,
    };
    let task = tokio::spawn(async move {
        let replay = tokio::spawn(replayer.run());
        writer.run().await;
        if let Err(e) = replay.await {
            tracing::error!(error = %e, "spool replay task failed");
        }
    });
    Ok((WriterHandle { tx, shared }, task))
}

/// Signals shutdown, then waits until every queued record is in the database or the spool and
/// both tasks have exited. Bounded: once the database has failed, the rest goes to the spool; if
/// the spool fails too, records still unwritten `writer.db_timeout_ms` after the signal are
/// dropped (counted as `shutdown`). Works while other clones of the handle still exist.
pub async fn close_and_wait(handle: WriterHandle, task: JoinHandle<()>) {
    handle.shutdown();
    drop(handle);
    if let Err(e) = task.await {
        tracing::error!(error = %e, "log writer task failed");
    }
}

/// A failed database write.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database write timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
}

async fn timed_insert(
    store: &dyn LogStore,
    records: &[LogRecord],
    limit: Duration,
) -> Result<u64, WriteError> {
    match tokio::time::timeout(limit, store.insert_batch(records)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(WriteError::Timeout(limit)),
    }
}

/// Inserts a batch. When the database refuses something in it (which no retry can fix), the
/// offending rows are found by inserting one at a time and dropped alone, so one bad record
/// cannot stall the others. Returns how many were dropped that way. On an outage-type error
/// returns how many leading records are done and how many of those were dropped; the rest may
/// or may not have landed, and sending them again is safe.
async fn insert_isolating(
    store: &dyn LogStore,
    records: &[LogRecord],
    limit: Duration,
    shared: &Shared,
) -> Result<usize, (WriteError, usize, usize)> {
    match timed_insert(store, records, limit).await {
        Ok(inserted) => {
            shared.record_success(records.len(), inserted);
            Ok(0)
        }
        Err(WriteError::Store(e)) if e.is_data_rejected() => {
            let mut rejected = 0;
            for (i, record) in records.iter().enumerate() {
                match timed_insert(store, std::slice::from_ref(record), limit).await {
                    Ok(inserted) => shared.record_success(1, inserted),
                    Err(WriteError::Store(e)) if e.is_data_rejected() => {
                        rejected += 1;
                        shared
                            .metrics
                            .writer_dropped
                            .with_label_values(&["rejected"])
                            .inc();
                        tracing::error!(
                            request_id = %record.request_id,
                            model_version = %record.model_version,
                            error = %e,
                            "database rejected a log record; dropped"
                        );
                    }
                    Err(e) => return Err((e, i, rejected)),
                }
            }
            Ok(rejected)
        }
        Err(e) => Err((e, 0, 0)),
    }
}

/// Waits for `pause` unless shutdown comes first; true if shutdown came.
async fn pause_or_shutdown(shutdown: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => true,
        _ = tokio::time::sleep(pause) => false,
    }
}

struct Writer {
    store: Arc<dyn LogStore>,
    rx: mpsc::Receiver<LogRecord>,
    shutdown: watch::Receiver<bool>,
    shared: Arc<Shared>,
    flush_interval: Duration,
    db_timeout: Duration,
    closing: bool,
    close_deadline: Option<Instant>,
}

/// Why the writer stopped waiting for more records.
enum Wake {
    Shutdown,
    BatchFull,
    Deadline,
}

impl Writer {
    async fn run(mut self) {
        tracing::info!(batch_size = self.shared.batch_size, "log writer started");
        let mut batch = Vec::with_capacity(self.shared.batch_size);
        while self.fill(&mut batch).await {
            self.shared
                .metrics
                .writer_queue_depth
                .set(self.rx.len() as i64);
            self.write(&mut batch).await;
        }
        self.shared.metrics.writer_queue_depth.set(0);
        let spool_bytes = self.shared.spool_stats.bytes();
        if spool_bytes > 0 {
            tracing::warn!(
                spool_bytes,
                "log writer stopped with records in the spool; they are replayed on the next start"
            );
        } else {
            tracing::info!("log writer drained and stopped");
        }
    }

    /// Waits for the first record, then collects more until the batch is full or the flush
    /// interval has passed. False when the queue is closed and empty: time to exit.
    async fn fill(&mut self, batch: &mut Vec<LogRecord>) -> bool {
        let limit = self.shared.batch_size;
        if !self.closing {
            let stop = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stop| *stop) => true,
                n = self.rx.recv_many(batch, limit) => {
                    if n == 0 {
                        return false;
                    }
                    false
                }
            };
            if stop {
                self.begin_closing();
            }
        }
        if self.closing {
            // The queue refuses new records now, so this only drains what is left, up to a batch.
            return self.rx.recv_many(batch, limit - batch.len()).await > 0 || !batch.is_empty();
        }
        // Sleeps until the interval is over or a batch's worth is queued, then takes what is
        // there: one wake-up per batch, not one per record (each is a thread hand-off on the
        // request path's cores).
        let deadline = Instant::now() + self.flush_interval;
        loop {
            self.take_queued(batch, limit);
            if batch.len() >= limit {
                break;
            }
            let wake = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stop| *stop) => Wake::Shutdown,
                _ = self.shared.batch_full.notified() => Wake::BatchFull,
                _ = tokio::time::sleep_until(deadline) => Wake::Deadline,
            };
            match wake {
                Wake::BatchFull => continue,
                Wake::Deadline => {}
                Wake::Shutdown => self.begin_closing(),
            }
            self.take_queued(batch, limit);
            break;
        }
        true
    }

    /// Moves queued records into the batch, up to `limit`, without waiting.
    fn take_queued(&mut self, batch: &mut Vec<LogRecord>, limit: usize) {
        while batch.len() < limit {
            match self.rx.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
    }

    fn begin_closing(&mut self) {
        if !self.closing {
            self.closing = true;
            self.close_deadline = Some(Instant::now() + self.db_timeout);
            // Buffered records stay receivable; new submits go to the spool instead of waiting
            // for a writer that is about to exit.
            self.rx.close();
            tracing::info!(queued = self.rx.len(), "log writer closing; flushing queue");
        }
    }

    /// Writes the batch to the database, or to the spool while the database is failing; leaves
    /// it empty. If neither takes it, holds it and retries (so the queue fills and overflow is
    /// counted) — until the shutdown deadline, after which it is dropped and counted.
    async fn write(&mut self, batch: &mut Vec<LogRecord>) {
        let mut backoff = INITIAL_BACKOFF;
        let mut try_db = !self.shared.spooling();
        while !batch.is_empty() {
            if try_db {
                match insert_isolating(self.store.as_ref(), batch, self.db_timeout, &self.shared)
                    .await
                {
                    Ok(_) => {
                        batch.clear();
                        return;
                    }
                    Err((e, done, _)) => {
                        batch.drain(..done);
                        self.shared.db_failed(&e, batch.len(), "writer");
                    }
                }
            }
            if self.spool(batch).await {
                return;
            }
            if !try_db {
                // Skipped because the database looked down; with the spool failing, ask it
                // again at once before waiting.
                try_db = true;
                continue;
            }
            if self.closing && self.close_deadline.is_some_and(|d| Instant::now() >= d) {
                let n = batch.len();
                batch.clear();
                self.shared.dropped(
                    "shutdown",
                    n,
                    &"shutdown deadline (writer.db_timeout_ms) passed while the database and the spool both failed",
                );
                return;
            }
            let mut pause = backoff;
            if let Some(deadline) = self.close_deadline {
                pause = pause.min(deadline.saturating_duration_since(Instant::now()));
            }
            if !self.closing && pause_or_shutdown(&mut self.shutdown, pause).await {
                self.begin_closing();
            } else if self.closing {
                tokio::time::sleep(pause).await;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            try_db = true;
            self.shared
                .metrics
                .writer_queue_depth
                .set(self.rx.len() as i64);
        }
    }

    /// Appends the batch to the spool off the async threads (one fsync); true when it is durable.
    async fn spool(&self, batch: &mut Vec<LogRecord>) -> bool {
        let shared = self.shared.clone();
        let records = std::mem::take(batch);
        let n = records.len();
        let outcome = tokio::task::spawn_blocking(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                shared.spool_append(&records, SpoolReason::DbError)
            }));
            (records, result)
        })
        .await;
        match outcome {
            Ok((_, Ok(Ok(())))) => true,
            Ok((records, Ok(Err(_)))) => {
                *batch = records;
                false
            }
            Ok((records, Err(_panic))) => {
                tracing::error!("spool append panicked; keeping the batch in memory");
                *batch = records;
                false
            }
            Err(e) => {
                // Only when the runtime is shutting down before the blocking task ran.
                self.shared.dropped("shutdown", n, &e);
                true
            }
        }
    }
}

mod replay;
#[cfg(test)]
mod tests;
