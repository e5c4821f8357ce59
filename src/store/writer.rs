//! The batching writer: request handlers hand records over without waiting, and one task inserts
//! them in batches by count or time window, keeping a failed batch and retrying until it lands.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{LogRecord, Store, StoreError};
use crate::config::WriterConfig;
use crate::metrics::Metrics;

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a record was not queued. The caller's request goes on regardless; the writer has already
/// counted and logged the loss.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("writer queue is full ({capacity} records); log record {request_id} dropped")]
    QueueFull {
        request_id: uuid::Uuid,
        capacity: usize,
    },
    #[error("writer is shut down; log record {request_id} dropped")]
    Closed { request_id: uuid::Uuid },
}

/// State shared by every handle and the writer task.
struct Shared {
    metrics: Arc<Metrics>,
    /// The last write error while the database has not yet accepted a write since.
    last_error: Mutex<Option<String>>,
    /// Set once to ask the task to stop taking records, flush what is queued and exit, even
    /// while clones of the handle (and so senders) are still alive.
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn set_last_error(&self, error: Option<String>) -> Option<String> {
        // A panic elsewhere while holding the lock does not make the string invalid.
        let mut guard = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, error)
    }
}

/// Submits records to the writer task. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<LogRecord>,
    shared: Arc<Shared>,
}

impl WriterHandle {
    /// Queues a record for the database without waiting. A full queue (the database is slower
    /// than traffic, or down long enough) refuses the record at once so requests never stall.
    pub fn submit(&self, record: LogRecord) -> Result<(), SubmitError> {
        match self.tx.try_send(record) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(record)) => {
                let capacity = self.tx.max_capacity();
                self.shared
                    .metrics
                    .writer_dropped
                    .with_label_values(&["queue_full"])
                    .inc();
                tracing::error!(
                    request_id = %record.request_id,
                    model_version = %record.model_version,
                    capacity,
                    "writer queue full; log record dropped"
                );
                Err(SubmitError::QueueFull {
                    request_id: record.request_id,
                    capacity,
                })
            }
            Err(mpsc::error::TrySendError::Closed(record)) => {
                self.shared
                    .metrics
                    .writer_dropped
                    .with_label_values(&["closed"])
                    .inc();
                tracing::error!(
                    request_id = %record.request_id,
                    "writer is shut down; log record dropped"
                );
                Err(SubmitError::Closed {
                    request_id: record.request_id,
                })
            }
        }
    }

    /// Records waiting in the queue (not counting the batch being written).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The last database error, while writes have not recovered from it; `None` once a write
    /// succeeds again. `/ready` reports it.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the writer to stop accepting records, flush the queue and exit; returns at once.
    /// Later `submit`s fail with [`SubmitError::Closed`].
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// Starts the writer task on the current runtime.
pub fn spawn(
    store: Store,
    cfg: &WriterConfig,
    metrics: Arc<Metrics>,
) -> (WriterHandle, JoinHandle<()>) {
    // A zero capacity or batch size would panic or spin; one is the least that works.
    let (tx, rx) = mpsc::channel(cfg.channel_capacity.max(1));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        metrics,
        last_error: Mutex::new(None),
        shutdown,
    });
    let writer = Writer {
        store,
        rx,
        shutdown: shutdown_rx,
        shared: shared.clone(),
        batch_size: cfg.batch_size.max(1),
        flush_interval: Duration::from_millis(cfg.flush_interval_ms),
        closing: false,
    };
    let task = tokio::spawn(writer.run());
    (WriterHandle { tx, shared }, task)
}

/// Signals shutdown, then waits until every queued record is written and the task has exited.
/// Works while other clones of the handle still exist. It waits as long as the database needs,
/// so a caller with a deadline wraps it in `tokio::time::timeout`.
pub async fn close_and_wait(handle: WriterHandle, task: JoinHandle<()>) {
    handle.shutdown();
    drop(handle);
    if let Err(e) = task.await {
        tracing::error!(error = %e, "log writer task failed");
    }
}

struct Writer {
    store: Store,
    rx: mpsc::Receiver<LogRecord>,
    shutdown: watch::Receiver<bool>,
    shared: Arc<Shared>,
    batch_size: usize,
    flush_interval: Duration,
    closing: bool,
}

impl Writer {
    async fn run(mut self) {
        tracing::info!(
            backend = self.store.backend(),
            batch_size = self.batch_size,
            "log writer started"
        );
        let mut batch = Vec::with_capacity(self.batch_size);
        while self.fill(&mut batch).await {
            self.shared
                .metrics
                .writer_queue_depth
                .set(self.rx.len() as i64);
            self.write(&mut batch).await;
        }
        self.shared.metrics.writer_queue_depth.set(0);
        tracing::info!("log writer drained and stopped");
    }

    /// Waits for the first record, then collects more until the batch is full or the flush
    /// interval has passed. False when the queue is closed and empty: time to exit.
    async fn fill(&mut self, batch: &mut Vec<LogRecord>) -> bool {
        let limit = self.batch_size;
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
        let deadline = Instant::now() + self.flush_interval;
        while batch.len() < limit {
            let room = limit - batch.len();
            let stop = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stop| *stop) => true,
                // recv_many is cancellation safe: a timeout loses no record.
                received = tokio::time::timeout_at(deadline, self.rx.recv_many(batch, room)) => {
                    match received {
                        Ok(0) | Err(_) => break,
                        Ok(_) => false,
                    }
                }
            };
            if stop {
                self.begin_closing();
                self.rx.recv_many(batch, room).await;
                break;
            }
        }
        true
    }

    fn begin_closing(&mut self) {
        if !self.closing {
            self.closing = true;
            // Buffered records stay receivable; new submits fail fast instead of waiting for a
            // writer that is about to exit.
            self.rx.close();
            tracing::info!(queued = self.rx.len(), "log writer closing; flushing queue");
        }
    }

    /// Writes the batch, retrying with backoff until the database takes it; leaves it empty.
    async fn write(&mut self, batch: &mut Vec<LogRecord>) {
        let mut backoff = INITIAL_BACKOFF;
        let mut attempt = 0u32;
        while !batch.is_empty() {
            attempt += 1;
            let result = match self.store.insert_batch(batch).await {
                Ok(inserted) => {
                    self.record_success(batch.len(), inserted);
                    batch.clear();
                    return;
                }
                Err(e) if e.is_data_rejected() => self.write_one_by_one(batch).await,
                Err(e) => Err(e),
            };
            let Err(e) = result else { continue };
            self.record_failure(&e, batch.len(), attempt, backoff);
            let pause = tokio::time::sleep(backoff);
            tokio::pin!(pause);
            if !self.closing {
                let stop = tokio::select! {
                    _ = self.shutdown.wait_for(|stop| *stop) => true,
                    _ = &mut pause => false,
                };
                if stop {
                    self.begin_closing();
                }
            }
            // Shutdown does not shorten the pause: the database still needs the time.
            pause.await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            self.shared
                .metrics
                .writer_queue_depth
                .set(self.rx.len() as i64);
        }
    }

    /// The database refused something in the batch itself, which no retry can fix: find the
    /// offending rows by inserting one at a time and drop only those, so one bad record cannot
    /// stall every later one. Stops at the first outage-type error, leaving the rest in `batch`.
    async fn write_one_by_one(&mut self, batch: &mut Vec<LogRecord>) -> Result<(), StoreError> {
        let mut records = std::mem::take(batch).into_iter();
        while let Some(record) = records.next() {
            match self.store.insert_batch(std::slice::from_ref(&record)).await {
                Ok(inserted) => self.record_success(1, inserted),
                Err(e) if e.is_data_rejected() => {
                    self.shared
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
                Err(e) => {
                    batch.push(record);
                    batch.extend(records);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn record_success(&self, batch_len: usize, inserted: u64) {
        let m = &self.shared.metrics;
        m.writer_batch_size.observe(batch_len as f64);
        m.writer_rows_written.inc_by(inserted);
        if let Some(previous) = self.shared.set_last_error(None) {
            tracing::info!(previous_error = %previous, "log writes recovered");
        }
    }

    fn record_failure(&self, e: &StoreError, batch_len: usize, attempt: u32, backoff: Duration) {
        self.shared.metrics.writer_errors.inc();
        self.shared.set_last_error(Some(e.to_string()));
        tracing::error!(
            error = %e,
            batch_len,
            attempt,
            retry_in_ms = backoff.as_millis() as u64,
            "writing log batch failed; keeping it and retrying"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{fresh_postgres, fresh_sqlite, sample_record};

    fn config(channel_capacity: usize, batch_size: usize, flush_interval_ms: u64) -> WriterConfig {
        WriterConfig {
            channel_capacity,
            batch_size,
            flush_interval_ms,
        }
    }

    async fn run_sql(store: &Store, sql: &str) {
        match store {
            Store::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
            Store::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
        }
        .unwrap();
    }

    /// Polls `check` every 20 ms for up to 15 s.
    async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn records_from_many_tasks_all_land(store: Store) {
        let metrics = Arc::new(Metrics::new());
        let (handle, task) = spawn(store.clone(), &config(10_000, 500, 50), metrics.clone());
        let mut producers = Vec::new();
        for p in 0..8 {
            let handle = handle.clone();
            producers.push(tokio::spawn(async move {
                for i in 0..625 {
                    handle.submit(sample_record(p * 625 + i)).unwrap();
                    if i % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for p in producers {
            p.await.unwrap();
        }
        close_and_wait(handle, task).await;
        assert_eq!(store.count_logs().await.unwrap(), 5_000);
        assert_eq!(metrics.writer_rows_written.get(), 5_000);
        assert_eq!(metrics.writer_errors.get(), 0);
        assert_eq!(metrics.writer_queue_depth.get(), 0);
        assert!(metrics.writer_batch_size.get_sample_count() >= 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_5000_records_from_many_tasks_all_land_after_shutdown() {
        let (store, _db) = fresh_postgres().await.unwrap();
        records_from_many_tasks_all_land(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_5000_records_from_many_tasks_all_land_after_shutdown() {
        let (store, _dir) = fresh_sqlite().await.unwrap();
        records_from_many_tasks_all_land(store).await;
    }

    #[tokio::test]
    async fn full_queue_refuses_the_record_and_counts_it() {
        let (store, _dir) = fresh_sqlite().await.unwrap();
        let metrics = Arc::new(Metrics::new());
        // On the current-thread runtime the writer cannot run between these two submits,
        // so it is stalled for exactly as long as the test needs.
        let (handle, task) = spawn(store.clone(), &config(1, 10, 10), metrics.clone());
        let first = sample_record(1);
        let second = sample_record(2);
        handle.submit(first).unwrap();
        assert_eq!(handle.queue_depth(), 1);
        let err = handle.submit(second.clone()).unwrap_err();
        assert_eq!(
            err,
            SubmitError::QueueFull {
                request_id: second.request_id,
                capacity: 1
            }
        );
        let dropped = metrics.writer_dropped.with_label_values(&["queue_full"]);
        assert_eq!(dropped.get(), 1);
        close_and_wait(handle, task).await;
        assert_eq!(store.count_logs().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn records_are_flushed_by_the_time_window_without_shutdown() {
        let (store, _dir) = fresh_sqlite().await.unwrap();
        let (handle, task) = spawn(store.clone(), &config(100, 1_000, 20), Arc::default());
        for i in 0..3 {
            handle.submit(sample_record(i)).unwrap();
        }
        eventually("3 rows", || async {
            store.count_logs().await.unwrap() == 3
        })
        .await;
        assert_eq!(handle.queue_depth(), 0);
        close_and_wait(handle, task).await;
    }

    #[tokio::test]
    async fn shutdown_drains_while_other_handles_still_exist() {
        let (store, _dir) = fresh_sqlite().await.unwrap();
        let metrics = Arc::new(Metrics::new());
        // A long window: only the shutdown can make these records land in time.
        let (handle, task) = spawn(store.clone(), &config(100, 1_000, 60_000), metrics.clone());
        let other = handle.clone();
        for i in 0..10 {
            other.submit(sample_record(i)).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), close_and_wait(handle, task))
            .await
            .unwrap();
        assert_eq!(store.count_logs().await.unwrap(), 10);
        let late = sample_record(11);
        assert_eq!(
            other.submit(late.clone()),
            Err(SubmitError::Closed {
                request_id: late.request_id
            })
        );
        assert_eq!(
            metrics.writer_dropped.with_label_values(&["closed"]).get(),
            1
        );
    }

    async fn writer_retries_until_the_table_is_back(store: Store) {
        let metrics = Arc::new(Metrics::new());
        run_sql(&store, "ALTER TABLE llm_logs RENAME TO llm_logs_away").await;
        let (handle, task) = spawn(store.clone(), &config(1_000, 20, 10), metrics.clone());
        let records: Vec<_> = (0..50).map(sample_record).collect();
        for r in &records {
            handle.submit(r.clone()).unwrap();
        }
        eventually("a failed write", || async {
            handle.last_error().is_some() && metrics.writer_errors.get() >= 2
        })
        .await;
        assert_eq!(metrics.writer_rows_written.get(), 0);
        assert!(handle.last_error().unwrap_or_default().contains("llm_logs"));
        run_sql(&store, "ALTER TABLE llm_logs_away RENAME TO llm_logs").await;
        eventually("all 50 rows", || async {
            store.count_logs().await.unwrap() == 50
        })
        .await;
        eventually("recovery", || async { handle.last_error().is_none() }).await;
        close_and_wait(handle, task).await;
        assert_eq!(metrics.writer_rows_written.get(), 50);
        for r in &records {
            assert!(store.get_log(r.request_id).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn postgres_writer_keeps_the_batch_and_retries_until_the_table_is_back() {
        let (store, _db) = fresh_postgres().await.unwrap();
        writer_retries_until_the_table_is_back(store).await;
    }

    #[tokio::test]
    async fn sqlite_writer_keeps_the_batch_and_retries_until_the_table_is_back() {
        let (store, _dir) = fresh_sqlite().await.unwrap();
        writer_retries_until_the_table_is_back(store).await;
    }

    async fn a_rejected_record_is_dropped_alone(store: Store, poison: LogRecord) {
        let metrics = Arc::new(Metrics::new());
        let (handle, task) = spawn(store.clone(), &config(100, 100, 10), metrics.clone());
        for i in 0..5 {
            handle.submit(sample_record(i)).unwrap();
        }
        handle.submit(poison.clone()).unwrap();
        for i in 5..10 {
            handle.submit(sample_record(i)).unwrap();
        }
        close_and_wait(handle, task).await;
        assert_eq!(store.count_logs().await.unwrap(), 10);
        assert_eq!(store.get_log(poison.request_id).await.unwrap(), None);
        assert_eq!(
            metrics
                .writer_dropped
                .with_label_values(&["rejected"])
                .get(),
            1
        );
        assert_eq!(metrics.writer_rows_written.get(), 10);
    }

    #[tokio::test]
    async fn postgres_a_record_the_database_rejects_does_not_stall_the_others() {
        let (store, _db) = fresh_postgres().await.unwrap();
        // Incompressible and far above the btree limit of the (user_id, created_at) index.
        let mut poison = sample_record(99);
        poison.user_id = Some(
            (0..2_000)
                .map(|_| uuid::Uuid::new_v4().simple().to_string())
                .collect(),
        );
        a_rejected_record_is_dropped_alone(store, poison).await;
    }

    #[tokio::test]
    async fn sqlite_a_record_the_database_rejects_does_not_stall_the_others() {
        let (store, _dir) = fresh_sqlite().await.unwrap();
        // SQLite stores NaN as NULL, which the NOT NULL column refuses.
        let mut poison = sample_record(99);
        poison.latency_ms = f64::NAN;
        a_rejected_record_is_dropped_alone(store, poison).await;
    }
}
