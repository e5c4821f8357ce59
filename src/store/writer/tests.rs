//! The writer against real databases: batching, overflow, outages, crashes, rejected records.

use std::path::Path;

use super::*;
use crate::store::testing::{execute as run_sql, fresh_postgres, fresh_sqlite, sample_record};
use crate::store::Store;

fn config(
    channel_capacity: usize,
    batch_size: usize,
    flush_interval_ms: u64,
    spool_dir: &Path,
) -> WriterConfig {
    WriterConfig {
        channel_capacity,
        batch_size,
        flush_interval_ms,
        spool_dir: spool_dir.to_path_buf(),
        spool_max_bytes: 64 * 1024 * 1024,
        db_timeout_ms: 2_000,
    }
}

/// Polls `check` every 20 ms for up to 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spooled(m: &Metrics, reason: &str) -> u64 {
    m.spool_records.with_label_values(&[reason]).get()
}

fn dropped(m: &Metrics, reason: &str) -> u64 {
    m.writer_dropped.with_label_values(&[reason]).get()
}

async fn records_from_many_tasks_all_land(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(10_000, 500, 50, dir.path()),
        metrics.clone(),
    )
    .unwrap();
    let mut producers = Vec::new();
    for p in 0..8 {
        let handle = handle.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..625 {
                assert_eq!(
                    handle.submit(sample_record(p * 625 + i)),
                    Ok(Submitted::Queued)
                );
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
    assert_eq!(store.logs.count_logs().await.unwrap(), 5_000);
    assert_eq!(metrics.writer_rows_written.get(), 5_000);
    assert_eq!(metrics.writer_errors.get(), 0);
    assert_eq!(metrics.writer_queue_depth.get(), 0);
    assert_eq!(metrics.spool_bytes.get(), 0);
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
async fn full_queue_spools_the_record_and_a_restart_replays_it() {
    let (store, _db) = fresh_sqlite().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    // On the current-thread runtime neither task can run between these submits, so the
    // queue of one stays full for exactly as long as the test needs.
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(1, 10, 10, dir.path()),
        metrics.clone(),
    )
    .unwrap();
    let first = sample_record(1);
    let second = sample_record(2);
    assert_eq!(handle.submit(first.clone()), Ok(Submitted::Queued));
    assert_eq!(handle.queue_depth(), 1);
    assert_eq!(handle.submit(second.clone()), Ok(Submitted::Spooled));
    assert_eq!(spooled(&metrics, "queue_full"), 1);
    assert!(handle.status().spool_bytes > 0);
    // Shutdown wins over replay here: the spooled record waits for the next start.
    close_and_wait(handle, task).await;
    assert_eq!(store.logs.count_logs().await.unwrap(), 1);
    assert_eq!(dropped(&metrics, "queue_full"), 0);

    let metrics = Arc::new(Metrics::new());
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(100, 10, 10, dir.path()),
        metrics.clone(),
    )
    .unwrap();
    eventually("the spooled record", || async {
        store
            .logs
            .get_log(second.request_id)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    eventually("an empty spool", || async {
        handle.status().spool_bytes == 0
    })
    .await;
    assert_eq!(metrics.spool_replayed.get(), 1);
    close_and_wait(handle, task).await;
    assert_eq!(store.logs.count_logs().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_is_replayed_while_the_writer_keeps_running() {
    let (store, _db) = fresh_postgres().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    // A tiny queue: a burst overflows into the spool, and the replay task catches up live.
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(8, 8, 5, dir.path()),
        metrics.clone(),
    )
    .unwrap();
    let mut outcomes = Vec::new();
    for i in 0..2_000 {
        outcomes.push(handle.submit(sample_record(i)).unwrap());
    }
    assert!(outcomes.contains(&Submitted::Spooled), "nothing overflowed");
    eventually("all 2000 rows", || async {
        store.logs.count_logs().await.unwrap() == 2_000
    })
    .await;
    eventually("an empty spool", || async {
        handle.status().spool_bytes == 0
    })
    .await;
    let spooled_n = outcomes
        .iter()
        .filter(|o| **o == Submitted::Spooled)
        .count() as u64;
    assert_eq!(spooled(&metrics, "queue_full"), spooled_n);
    assert_eq!(metrics.spool_replayed.get(), spooled_n);
    assert_eq!(metrics.writer_rows_written.get(), 2_000);
    close_and_wait(handle, task).await;
}

#[tokio::test]
async fn records_are_flushed_by_the_time_window_without_shutdown() {
    let (store, _dir) = fresh_sqlite().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(100, 1_000, 20, dir.path()),
        Arc::default(),
    )
    .unwrap();
    for i in 0..3 {
        handle.submit(sample_record(i)).unwrap();
    }
    eventually("3 rows", || async {
        store.logs.count_logs().await.unwrap() == 3
    })
    .await;
    assert_eq!(handle.queue_depth(), 0);
    close_and_wait(handle, task).await;
}

#[tokio::test]
async fn shutdown_drains_while_other_handles_still_exist_and_late_records_are_spooled() {
    let (store, _dir) = fresh_sqlite().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    // A long window: only the shutdown can make these records land in time.
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(100, 1_000, 60_000, dir.path()),
        metrics.clone(),
    )
    .unwrap();
    let other = handle.clone();
    for i in 0..10 {
        other.submit(sample_record(i)).unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), close_and_wait(handle, task))
        .await
        .unwrap();
    assert_eq!(store.logs.count_logs().await.unwrap(), 10);
    let late = sample_record(11);
    assert_eq!(other.submit(late.clone()), Ok(Submitted::Spooled));
    assert_eq!(spooled(&metrics, "closed"), 1);
    assert_eq!(dropped(&metrics, "closed"), 0);
    drop(other);
    // The next run replays it.
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(100, 10, 10, dir.path()),
        Arc::default(),
    )
    .unwrap();
    eventually("the late record", || async {
        store.logs.get_log(late.request_id).await.unwrap().is_some()
    })
    .await;
    close_and_wait(handle, task).await;
    assert_eq!(store.logs.count_logs().await.unwrap(), 11);
}

async fn outage_spools_then_replays_everything_once(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    run_sql(&store, "ALTER TABLE llm_logs RENAME TO llm_logs_away").await;
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(1_000, 20, 10, dir.path()),
        metrics.clone(),
    )
    .unwrap();
    let records: Vec<_> = (0..50).map(sample_record).collect();
    for r in &records {
        handle.submit(r.clone()).unwrap();
    }
    eventually("all 50 records on disk", || async {
        spooled(&metrics, "db_error") == 50
    })
    .await;
    let status = handle.status();
    assert!(status.spooling, "{status:?}");
    assert!(status.spool_bytes > 0);
    assert!(
        status.db_error.unwrap_or_default().contains("llm_logs"),
        "the cause is shown"
    );
    assert_eq!(metrics.writer_rows_written.get(), 0);
    // Records arriving during the outage queue up behind the spool.
    let more: Vec<_> = (50..60).map(sample_record).collect();
    for r in &more {
        handle.submit(r.clone()).unwrap();
    }
    run_sql(&store, "ALTER TABLE llm_logs_away RENAME TO llm_logs").await;
    eventually("all 60 rows", || async {
        store.logs.count_logs().await.unwrap() == 60
    })
    .await;
    eventually("recovery", || async {
        let s = handle.status();
        !s.spooling && s.db_error.is_none() && s.spool_bytes == 0
    })
    .await;
    assert_eq!(metrics.spool_replayed.get(), 60);
    assert_eq!(metrics.writer_rows_written.get(), 60);
    // Back to direct writes.
    let after = sample_record(61);
    handle.submit(after.clone()).unwrap();
    eventually("a direct write", || async {
        store
            .logs
            .get_log(after.request_id)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert_eq!(spooled(&metrics, "db_error"), 60);
    close_and_wait(handle, task).await;
    for r in records.iter().chain(&more) {
        assert!(store.logs.get_log(r.request_id).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn postgres_outage_spools_then_replays_every_record_once() {
    let (store, _db) = fresh_postgres().await.unwrap();
    outage_spools_then_replays_everything_once(store).await;
}

#[tokio::test]
async fn sqlite_outage_spools_then_replays_every_record_once() {
    let (store, _dir) = fresh_sqlite().await.unwrap();
    outage_spools_then_replays_everything_once(store).await;
}

#[tokio::test]
async fn shutdown_with_the_database_down_is_bounded_and_keeps_everything_on_disk() {
    let (store, _db) = fresh_postgres().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    run_sql(&store, "ALTER TABLE llm_logs RENAME TO llm_logs_away").await;
    // A long window: the records are still queued when the shutdown comes.
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(1_000, 30, 60_000, dir.path()),
        metrics.clone(),
    )
    .unwrap();
    for i in 0..100 {
        handle.submit(sample_record(i)).unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), close_and_wait(handle, task))
        .await
        .expect("shutdown is bounded while the database is down");
    assert_eq!(spooled(&metrics, "db_error"), 100);
    assert!(metrics.spool_bytes.get() > 0);
    run_sql(&store, "ALTER TABLE llm_logs_away RENAME TO llm_logs").await;
    let metrics = Arc::new(Metrics::new());
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(1_000, 30, 10, dir.path()),
        metrics.clone(),
    )
    .unwrap();
    eventually("100 replayed rows", || async {
        store.logs.count_logs().await.unwrap() == 100
    })
    .await;
    eventually("an empty spool", || async {
        handle.status().spool_bytes == 0
    })
    .await;
    assert_eq!(metrics.spool_replayed.get(), 100);
    close_and_wait(handle, task).await;
}

/// Makes the spool directory unusable under an open spool: the directory is moved away and
/// a file takes its name. Returns the moved directory to put back.
fn break_spool_dir(dir: &Path) -> std::path::PathBuf {
    let moved = dir.with_extension("moved");
    std::fs::rename(dir, &moved).unwrap();
    std::fs::write(dir, b"in the way").unwrap();
    moved
}

#[tokio::test]
async fn with_the_database_and_the_spool_down_losses_are_counted_and_shutdown_still_ends() {
    let (store, _db) = fresh_sqlite().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let metrics = Arc::new(Metrics::new());
    run_sql(&store, "ALTER TABLE llm_logs RENAME TO llm_logs_away").await;
    let mut cfg = config(1, 5, 10, &spool_dir);
    cfg.db_timeout_ms = 300;
    let (handle, task) = spawn(store.logs.clone(), &cfg, metrics.clone()).unwrap();
    let moved = break_spool_dir(&spool_dir);
    handle.submit(sample_record(1)).unwrap();
    // Current-thread runtime: the writer has not run yet, so the queue of one is full.
    let lost = sample_record(2);
    let err = handle.submit(lost.clone()).unwrap_err();
    assert!(
        matches!(&err, SubmitError::QueueFull { request_id, .. } if *request_id == lost.request_id),
        "{err}"
    );
    assert_eq!(dropped(&metrics, "queue_full"), 1);
    eventually("both failures visible", || async {
        let s = handle.status();
        s.db_error.is_some() && s.spool_error.is_some()
    })
    .await;
    assert!(metrics.spool_write_errors.with_label_values(&["io"]).get() >= 2);
    tokio::time::timeout(Duration::from_secs(10), close_and_wait(handle, task))
        .await
        .expect("shutdown is bounded even when nothing can take the records");
    assert_eq!(dropped(&metrics, "shutdown"), 1);
    std::fs::remove_file(&spool_dir).unwrap();
    std::fs::rename(moved, &spool_dir).unwrap();
}

async fn a_rejected_record_is_dropped_alone(store: Store, poison: LogRecord) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(100, 100, 10, dir.path()),
        metrics.clone(),
    )
    .unwrap();
    for i in 0..5 {
        handle.submit(sample_record(i)).unwrap();
    }
    handle.submit(poison.clone()).unwrap();
    for i in 5..10 {
        handle.submit(sample_record(i)).unwrap();
    }
    close_and_wait(handle, task).await;
    assert_eq!(store.logs.count_logs().await.unwrap(), 10);
    assert_eq!(store.logs.get_log(poison.request_id).await.unwrap(), None);
    assert_eq!(dropped(&metrics, "rejected"), 1);
    assert_eq!(metrics.writer_rows_written.get(), 10);
    assert_eq!(metrics.spool_bytes.get(), 0);
}

fn pg_poison() -> LogRecord {
    // Incompressible and far above the btree limit of the (user_id, created_at) index.
    let mut poison = sample_record(99);
    poison.user_id = Some(
        (0..2_000)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect(),
    );
    poison
}

#[tokio::test]
async fn postgres_a_record_the_database_rejects_does_not_stall_the_others() {
    let (store, _db) = fresh_postgres().await.unwrap();
    a_rejected_record_is_dropped_alone(store, pg_poison()).await;
}

#[tokio::test]
async fn sqlite_a_record_the_database_rejects_does_not_stall_the_others() {
    let (store, _dir) = fresh_sqlite().await.unwrap();
    // SQLite stores NaN as NULL, which the NOT NULL column refuses.
    let mut poison = sample_record(99);
    poison.latency_ms = f64::NAN;
    a_rejected_record_is_dropped_alone(store, poison).await;
}

async fn a_replay_cut_short_by_a_crash_is_redone_without_duplicates(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..300).map(sample_record).collect();
    {
        let mut spool = Spool::open(dir.path(), 64 * 1024 * 1024, Arc::default()).unwrap();
        spool.append(&records, SpoolReason::DbError).unwrap();
    }
    // What a crash mid-replay leaves: part of the segment committed, the segment still there.
    store.logs.insert_batch(&records[..120]).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(100, 100, 10, dir.path()),
        metrics.clone(),
    )
    .unwrap();
    eventually("an empty spool", || async {
        handle.status().spool_bytes == 0
    })
    .await;
    close_and_wait(handle, task).await;
    assert_eq!(store.logs.count_logs().await.unwrap(), 300);
    assert_eq!(metrics.spool_replayed.get(), 300);
    // Only the 180 missing rows were new.
    assert_eq!(metrics.writer_rows_written.get(), 180);
    assert_eq!(metrics.writer_errors.get(), 0);
}

#[tokio::test]
async fn postgres_a_replay_cut_short_by_a_crash_is_redone_without_duplicates() {
    let (store, _db) = fresh_postgres().await.unwrap();
    a_replay_cut_short_by_a_crash_is_redone_without_duplicates(store).await;
}

#[tokio::test]
async fn sqlite_a_replay_cut_short_by_a_crash_is_redone_without_duplicates() {
    let (store, _dir) = fresh_sqlite().await.unwrap();
    a_replay_cut_short_by_a_crash_is_redone_without_duplicates(store).await;
}

#[tokio::test]
async fn a_rejected_record_in_the_spool_is_dropped_alone_on_replay() {
    let (store, _db) = fresh_postgres().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let poison = pg_poison();
    {
        let mut spool = Spool::open(dir.path(), 64 * 1024 * 1024, Arc::default()).unwrap();
        let mut batch: Vec<_> = (0..10).map(sample_record).collect();
        batch.insert(4, poison.clone());
        spool.append(&batch, SpoolReason::DbError).unwrap();
    }
    let metrics = Arc::new(Metrics::new());
    let (handle, task) = spawn(
        store.logs.clone(),
        &config(100, 100, 10, dir.path()),
        metrics.clone(),
    )
    .unwrap();
    eventually("an empty spool", || async {
        handle.status().spool_bytes == 0
    })
    .await;
    close_and_wait(handle, task).await;
    assert_eq!(store.logs.count_logs().await.unwrap(), 10);
    assert_eq!(dropped(&metrics, "rejected"), 1);
    assert_eq!(metrics.spool_replayed.get(), 10);
}
