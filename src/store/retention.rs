//! Retention and partition upkeep of `llm_logs`. PostgreSQL: daily partitions are created a week
//! ahead and dropped whole once past the retention; SQLite: old rows are deleted in chunks.
//!
//! Retention is by UTC day: with `retention_days = 30`, a record is removed once its whole day is
//! more than 30 days old (the cutoff is midnight UTC, 30 days before today), so a day is never
//! half-deleted and on PostgreSQL only rows outside daily partitions (the DEFAULT partition and
//! the pre-partitioning `llm_logs_before_*`) are ever deleted one by one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use sqlx::{PgPool, SqlitePool};
use tokio::task::JoinHandle;

use super::{Store, StoreError};
use crate::metrics::Metrics;

/// Daily partitions exist from today to this many days ahead, so a maintenance job that stops
/// running for a while does not push inserts into the DEFAULT partition.
pub const PARTITIONS_AHEAD_DAYS: u64 = 7;
/// How often the job runs.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);
/// Rows per DELETE, so a large backlog never holds one long lock or a huge transaction.
const DELETE_CHUNK: i64 = 10_000;
/// DDL on the partitioned table waits at most this for its lock, so a long-running read cannot
/// make every insert queue behind a waiting DROP; the next run tries again.
const SET_LOCK_TIMEOUT: &str = "SELECT set_config('lock_timeout', '5s', true)";
/// The advisory lock `lqo_create_log_partition` (migration 0002) takes: partition DDL of all
/// replicas runs one at a time.
const PARTITION_LOCK: &str = "SELECT pg_advisory_xact_lock(7305162548001)";

const PARTITION_PREFIX: &str = "llm_logs_p";
const BEFORE_PREFIX: &str = "llm_logs_before_";

/// What one maintenance run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub partitions_created: usize,
    pub partitions_dropped: Vec<String>,
    pub rows_deleted: u64,
}

/// Midnight UTC of the first day that is kept; None when retention is off.
pub fn cutoff(retention_days: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if retention_days == 0 {
        return None;
    }
    let day = now
        .date_naive()
        .checked_sub_days(Days::new(u64::from(retention_days)))?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// The exclusive upper bound (a UTC day) of a partition this module or migration 0002 named.
fn partition_end(name: &str) -> Option<NaiveDate> {
    let parse = |digits: &str| {
        if digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()) {
            NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
        } else {
            None
        }
    };
    if let Some(d) = name.strip_prefix(BEFORE_PREFIX) {
        return parse(d);
    }
    parse(name.strip_prefix(PARTITION_PREFIX)?)?.checked_add_days(Days::new(1))
}

impl Store {
    /// Creates the coming days' partitions (PostgreSQL) and enforces the retention (0 = keep
    /// everything). Safe to run from several replicas at once.
    pub async fn maintain_logs(
        &self,
        retention_days: u32,
        now: DateTime<Utc>,
    ) -> Result<MaintenanceReport, StoreError> {
        match self {
            Store::Postgres(pool) => maintain_postgres(pool, retention_days, now).await,
            Store::Sqlite(pool) => {
                let mut report = MaintenanceReport::default();
                if let Some(cutoff) = cutoff(retention_days, now) {
                    report.rows_deleted = delete_sqlite(pool, cutoff).await?;
                }
                Ok(report)
            }
        }
    }

    /// The partitions of `llm_logs` by name (PostgreSQL; empty on SQLite).
    pub async fn log_partitions(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Postgres(pool) => pg_partitions(pool).await,
            Store::Sqlite(_) => Ok(Vec::new()),
        }
    }
}

async fn pg_partitions(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'llm_logs'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await?)
}

async fn maintain_postgres(
    pool: &PgPool,
    retention_days: u32,
    now: DateTime<Utc>,
) -> Result<MaintenanceReport, StoreError> {
    let mut report = MaintenanceReport::default();
    let today = now.date_naive();
    // One day failing (a lock timeout, a clock far off) must not stop the others or the
    // retention; the first error is returned at the end so the run counts as failed.
    let mut first_error = None;
    for ahead in 0..=PARTITIONS_AHEAD_DAYS {
        let Some(day) = today.checked_add_days(Days::new(ahead)) else {
            continue;
        };
        match create_partition(pool, day).await {
            Ok(true) => report.partitions_created += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%day, error = %e, "could not create the llm_logs partition of a day");
                first_error.get_or_insert(e);
            }
        }
    }
    let Some(cutoff) = cutoff(retention_days, now) else {
        return first_error.map_or(Ok(report), Err);
    };
    let cutoff_day = cutoff.date_naive();
    let names = pg_partitions(pool).await?;
    for name in names {
        let Some(end) = partition_end(&name) else {
            continue;
        };
        if end > cutoff_day {
            continue;
        }
        // The name was parsed as prefix + 8 digits above, so it is safe to splice.
        let mut tx = pool.begin().await?;
        let drop_sql = format!("DROP TABLE IF EXISTS \"{name}\"");
        sqlx::query(SET_LOCK_TIMEOUT).execute(&mut *tx).await?;
        sqlx::query(PARTITION_LOCK).execute(&mut *tx).await?;
        sqlx::query(&drop_sql).execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(partition = %name, %cutoff, "retention: dropped a partition of llm_logs");
        report.partitions_dropped.push(name);
    }
    // What is left before the cutoff sits outside daily partitions; the created_at condition on
    // both sides lets partition pruning keep the statement away from every other partition.
    loop {
        let deleted = sqlx::query(
            "DELETE FROM llm_logs WHERE created_at < $1 AND (request_id, created_at) IN \
             (SELECT request_id, created_at FROM llm_logs WHERE created_at < $1 LIMIT $2)",
        )
        .bind(cutoff)
        .bind(DELETE_CHUNK)
        .execute(pool)
        .await?
        .rows_affected();
        report.rows_deleted += deleted;
        if deleted < DELETE_CHUNK as u64 {
            break;
        }
    }
    first_error.map_or(Ok(report), Err)
}

/// `lqo_create_log_partition` (migration 0002) in a transaction with a lock timeout.
async fn create_partition(pool: &PgPool, day: NaiveDate) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(SET_LOCK_TIMEOUT).execute(&mut *tx).await?;
    let created: bool = sqlx::query_scalar("SELECT lqo_create_log_partition($1)")
        .bind(day)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(created)
}

async fn delete_sqlite(pool: &SqlitePool, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM llm_logs WHERE id IN \
             (SELECT id FROM llm_logs WHERE created_at < ?1 LIMIT ?2)",
        )
        .bind(cutoff)
        .bind(DELETE_CHUNK)
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < DELETE_CHUNK as u64 {
            return Ok(total);
        }
    }
}

/// The periodic maintenance job: [`Store::maintain_logs`] at start and every
/// [`MAINTENANCE_INTERVAL`]. Failures are counted, logged and retried at the next run.
pub struct Maintenance {
    task: JoinHandle<()>,
}

impl Maintenance {
    pub fn start(store: Store, retention_days: u32, metrics: Arc<Metrics>) -> Maintenance {
        let task = tokio::spawn(async move {
            loop {
                run_once(&store, retention_days, &metrics).await;
                tokio::time::sleep(MAINTENANCE_INTERVAL).await;
            }
        });
        Maintenance { task }
    }

    /// Stops the job, interrupting a run in progress: its statements are transactions that roll
    /// back, and the next start does the work again.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn run_once(store: &Store, retention_days: u32, metrics: &Metrics) {
    match store.maintain_logs(retention_days, Utc::now()).await {
        Ok(report) => {
            metrics
                .retention_partitions_dropped
                .inc_by(report.partitions_dropped.len() as u64);
            metrics.retention_rows_deleted.inc_by(report.rows_deleted);
            if report != MaintenanceReport::default() {
                tracing::info!(
                    partitions_created = report.partitions_created,
                    partitions_dropped = report.partitions_dropped.len(),
                    rows_deleted = report.rows_deleted,
                    retention_days,
                    "llm_logs maintenance done"
                );
            }
        }
        Err(e) => {
            metrics.retention_errors.inc();
            tracing::error!(error = %e, "llm_logs maintenance (partitions, retention) failed; retrying at the next run");
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::testing::{empty_postgres, fresh_postgres, fresh_sqlite, sample_record};
    use crate::store::LogRecord;

    fn at(day: NaiveDate, hour: u32) -> DateTime<Utc> {
        day.and_hms_opt(hour, 0, 0).unwrap().and_utc()
    }

    fn record_at(i: usize, created_at: DateTime<Utc>) -> LogRecord {
        LogRecord {
            created_at,
            ..sample_record(i)
        }
    }

    fn pg(store: &Store) -> &PgPool {
        match store {
            Store::Postgres(p) => p,
            Store::Sqlite(_) => panic!("not postgres"),
        }
    }

    /// Which partition holds the record.
    async fn partition_of(store: &Store, r: &LogRecord) -> String {
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM llm_logs WHERE request_id = $1")
            .bind(r.request_id)
            .fetch_one(pg(store))
            .await
            .unwrap()
    }

    #[test]
    fn cutoff_is_midnight_utc_retention_days_ago() {
        let now = Utc.with_ymd_and_hms(2025, 3, 31, 17, 45, 0).unwrap();
        assert_eq!(cutoff(0, now), None);
        assert_eq!(
            cutoff(30, now),
            Some(Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap())
        );
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert_eq!(partition_end("llm_logs_p20250301"), Some(d(2025, 3, 2)));
        assert_eq!(
            partition_end("llm_logs_before_20250301"),
            Some(d(2025, 3, 1))
        );
        for other in [
            "llm_logs_default",
            "llm_logs_p2025030",
            "llm_logs_p2025030x",
            "llm_logs_p20251301",
            "x",
        ] {
            assert_eq!(partition_end(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn postgres_records_land_in_daily_partitions_and_old_days_are_dropped_whole() {
        let (store, _db) = fresh_postgres().await.unwrap();
        let now = Utc::now();
        let today = now.date_naive();
        let day = |back: u64| today.checked_sub_days(Days::new(back)).unwrap();
        let parts = store.log_partitions().await.unwrap();
        for ahead in 0..=PARTITIONS_AHEAD_DAYS {
            let d = today.checked_add_days(Days::new(ahead)).unwrap();
            let name = format!("llm_logs_p{}", d.format("%Y%m%d"));
            assert!(parts.contains(&name), "{name} missing from {parts:?}");
        }
        assert!(parts.contains(&"llm_logs_default".to_string()));

        let fresh = record_at(1, at(today, 0));
        let old = record_at(2, at(day(40), 12));
        let older = record_at(3, at(day(45), 1));
        let edge_kept = record_at(4, at(day(30), 0));
        let edge_gone = record_at(5, at(day(31), 23));
        let all = [
            fresh.clone(),
            old.clone(),
            older.clone(),
            edge_kept.clone(),
            edge_gone.clone(),
        ];
        assert_eq!(store.insert_batch(&all).await.unwrap(), 5);
        assert_eq!(
            partition_of(&store, &fresh).await,
            format!("llm_logs_p{}", today.format("%Y%m%d"))
        );
        // No partition for that day: the DEFAULT one takes it, the insert does not fail.
        assert_eq!(partition_of(&store, &old).await, "llm_logs_default");
        // Creating that day's partition later moves its rows out of DEFAULT.
        let created: bool = sqlx::query_scalar("SELECT lqo_create_log_partition($1)")
            .bind(day(40))
            .fetch_one(pg(&store))
            .await
            .unwrap();
        assert!(created);
        let p40 = format!("llm_logs_p{}", day(40).format("%Y%m%d"));
        assert_eq!(partition_of(&store, &old).await, p40);
        assert_eq!(partition_of(&store, &older).await, "llm_logs_default");
        // Idempotent, and a replay of the moved record is still a no-op.
        assert_eq!(store.insert_batch(&all).await.unwrap(), 0);

        let report = store.maintain_logs(30, now).await.unwrap();
        assert_eq!(report.partitions_created, 0);
        assert_eq!(report.partitions_dropped, vec![p40.clone()]);
        // `older` and `edge_gone` sat in DEFAULT: deleted row by row.
        assert_eq!(report.rows_deleted, 2);
        let left: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT request_id FROM llm_logs ORDER BY created_at DESC")
                .fetch_all(pg(&store))
                .await
                .unwrap();
        assert_eq!(left, vec![fresh.request_id, edge_kept.request_id]);
        assert!(!store.log_partitions().await.unwrap().contains(&p40));
        // Nothing more to do on a second run; retention 0 keeps everything.
        assert_eq!(
            store.maintain_logs(30, now).await.unwrap(),
            MaintenanceReport::default()
        );
        assert_eq!(
            store.maintain_logs(0, now).await.unwrap(),
            MaintenanceReport::default()
        );
        assert_eq!(store.count_logs().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn postgres_upgrading_a_seed_table_keeps_its_rows_and_ids_and_retires_them_whole() {
        let (store, _db) = empty_postgres().await.unwrap();
        // The original Python service's table, with rows from long ago, one without a time.
        sqlx::raw_sql(
            "CREATE TABLE llm_logs (id SERIAL PRIMARY KEY, created_at TIMESTAMP DEFAULT now(), \
             user_id VARCHAR NOT NULL, prompt TEXT NOT NULL, response TEXT NOT NULL, \
             model_version VARCHAR NOT NULL, latency_ms DOUBLE PRECISION NOT NULL, \
             status VARCHAR NOT NULL); \
             INSERT INTO llm_logs (created_at, user_id, prompt, response, model_version, latency_ms, status) VALUES \
             ('2024-05-01 10:00:00', 'u1', 'hi', 'hello', 'gpt-5-mini', 4735.19, 'ok'), \
             ('2024-05-02 11:00:00', 'u2', 'yo', 'hey', 'gpt-5-mini', 12.5, 'ok'), \
             (NULL, 'u3', 'when?', 'unknown', 'gpt-5-mini', 1.0, 'error');",
        )
        .execute(pg(&store))
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let today = Utc::now().date_naive();
        let before = format!("llm_logs_before_{}", today.format("%Y%m%d"));
        let parts = store.log_partitions().await.unwrap();
        assert!(parts.contains(&before), "{parts:?}");
        assert_eq!(store.count_logs().await.unwrap(), 3);
        let rows: Vec<(i64, String, DateTime<Utc>)> =
            sqlx::query_as("SELECT id, prompt, created_at FROM llm_logs ORDER BY id")
                .fetch_all(pg(&store))
                .await
                .unwrap();
        assert_eq!(rows[0].0, 1);
        assert_eq!(rows[0].2.to_rfc3339(), "2024-05-01T10:00:00+00:00");
        assert_eq!(rows[2].2.timestamp(), 0, "no time → 1970");
        // New rows continue the old ids and land in today's partition.
        let new = record_at(7, Utc::now());
        store
            .insert_batch(std::slice::from_ref(&new))
            .await
            .unwrap();
        let id: i64 = sqlx::query_scalar("SELECT id FROM llm_logs WHERE request_id = $1")
            .bind(new.request_id)
            .fetch_one(pg(&store))
            .await
            .unwrap();
        assert_eq!(id, 4);
        assert_eq!(
            partition_of(&store, &new).await,
            format!("llm_logs_p{}", today.format("%Y%m%d"))
        );
        // 30-day retention today: the old rows are deleted one by one (the pre-migration
        // partition also holds days that are not expired yet).
        let report = store.maintain_logs(30, Utc::now()).await.unwrap();
        assert_eq!(report.rows_deleted, 3);
        assert!(report.partitions_dropped.is_empty());
        // 40 days later, the pre-migration partition is dropped whole with the daily ones.
        let later = Utc::now() + chrono::Duration::days(40);
        let report = store.maintain_logs(30, later).await.unwrap();
        assert!(report.partitions_dropped.contains(&before), "{report:?}");
        assert_eq!(report.partitions_created, 8);
        assert_eq!(store.count_logs().await.unwrap(), 0);
        // A table with a column nobody knows about is refused, not silently truncated.
        let (store2, _db2) = empty_postgres().await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE llm_logs (id SERIAL PRIMARY KEY, created_at TIMESTAMP DEFAULT now(), \
             user_id VARCHAR, prompt TEXT NOT NULL, response TEXT, model_version VARCHAR NOT NULL, \
             latency_ms DOUBLE PRECISION NOT NULL, status VARCHAR NOT NULL, team TEXT)",
        )
        .execute(pg(&store2))
        .await
        .unwrap();
        let err = store2.migrate().await.unwrap_err().to_string();
        assert!(err.contains("team"), "{err}");
    }

    #[tokio::test]
    async fn sqlite_retention_deletes_rows_of_expired_days_only() {
        let (store, _dir) = fresh_sqlite().await.unwrap();
        let now = Utc.with_ymd_and_hms(2025, 6, 30, 15, 0, 0).unwrap();
        let today = now.date_naive();
        let day = |back: u64| today.checked_sub_days(Days::new(back)).unwrap();
        let mut records = Vec::new();
        for i in 0..25_000 {
            // 25,000 expired rows: more than two DELETE chunks.
            records.push(record_at(i, at(day(31 + (i as u64 % 10)), 5)));
        }
        let keep = [
            record_at(90_001, at(day(30), 0)),
            record_at(90_002, now),
            record_at(90_003, at(day(29), 23)),
        ];
        records.extend(keep.iter().cloned());
        for chunk in records.chunks(5_000) {
            store.insert_batch(chunk).await.unwrap();
        }
        let report = store.maintain_logs(30, now).await.unwrap();
        assert_eq!(report.rows_deleted, 25_000);
        assert_eq!(store.count_logs().await.unwrap(), 3);
        for r in &keep {
            assert!(store.get_log(r.request_id).await.unwrap().is_some());
        }
        assert_eq!(
            store.maintain_logs(0, now).await.unwrap(),
            MaintenanceReport::default()
        );
    }
}
