//! Daily partitions of `llm_logs` on PostgreSQL: created a week ahead, dropped whole once past
//! the retention; rows outside daily partitions are deleted in chunks.

use async_trait::async_trait;
use chrono::{DateTime, Days, NaiveDate, Utc};
use sqlx::PgPool;

use super::PgStore;
use crate::store::retention::{
    cutoff, LogRetention, MaintenanceReport, DELETE_CHUNK, PARTITIONS_AHEAD_DAYS,
};
use crate::store::StoreError;

/// DDL on the partitioned table waits at most this for its lock, so a long-running read cannot
/// make every insert queue behind a waiting DROP; the next run tries again.
const SET_LOCK_TIMEOUT: &str = "SELECT set_config('lock_timeout', '5s', true)";
/// The advisory lock `lqo_create_log_partition` (migration 0002) takes: partition DDL of all
/// replicas runs one at a time.
const PARTITION_LOCK: &str = "SELECT pg_advisory_xact_lock(7305162548001)";
const PARTITIONS: &str = "SELECT c.relname::text FROM pg_inherits i \
     JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'llm_logs'::regclass ORDER BY 1";
/// What is left before the cutoff sits outside daily partitions; the created_at condition on
/// both sides lets partition pruning keep the statement away from every other partition.
const DELETE_EXPIRED: &str = "DELETE FROM llm_logs WHERE created_at < $1 \
     AND (request_id, created_at) IN \
     (SELECT request_id, created_at FROM llm_logs WHERE created_at < $1 LIMIT $2)";

const PARTITION_PREFIX: &str = "llm_logs_p";
const BEFORE_PREFIX: &str = "llm_logs_before_";

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

#[async_trait]
impl LogRetention for PgStore {
    async fn maintain_logs(
        &self,
        retention_days: u32,
        now: DateTime<Utc>,
    ) -> Result<MaintenanceReport, StoreError> {
        maintain(&self.pool, retention_days, now).await
    }

    async fn log_partitions(&self) -> Result<Vec<String>, StoreError> {
        partitions(&self.pool).await
    }
}

async fn partitions(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(PARTITIONS).fetch_all(pool).await?)
}

async fn maintain(
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
    for name in partitions(pool).await? {
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
    loop {
        let deleted = sqlx::query(DELETE_EXPIRED)
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::testing::{
        empty_postgres, execute, fetch_i64, fetch_texts, fresh_postgres, sample_record,
    };
    use crate::store::{LogRecord, Store};

    fn at(day: NaiveDate, hour: u32) -> DateTime<Utc> {
        day.and_hms_opt(hour, 0, 0).unwrap().and_utc()
    }

    fn record_at(i: usize, created_at: DateTime<Utc>) -> LogRecord {
        LogRecord {
            created_at,
            ..sample_record(i)
        }
    }

    /// Which partition holds the record.
    async fn partition_of(store: &Store, r: &LogRecord) -> String {
        let sql = format!(
            "SELECT tableoid::regclass::text FROM llm_logs WHERE request_id = '{}'",
            r.request_id
        );
        fetch_texts(store, &sql).await.remove(0)
    }

    #[test]
    fn partition_names_give_their_end_day() {
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
        let parts = store.retention.log_partitions().await.unwrap();
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
        assert_eq!(store.logs.insert_batch(&all).await.unwrap(), 5);
        assert_eq!(
            partition_of(&store, &fresh).await,
            format!("llm_logs_p{}", today.format("%Y%m%d"))
        );
        // No partition for that day: the DEFAULT one takes it, the insert does not fail.
        assert_eq!(partition_of(&store, &old).await, "llm_logs_default");
        // Creating that day's partition later moves its rows out of DEFAULT.
        let created = fetch_texts(
            &store,
            &format!("SELECT lqo_create_log_partition('{}')::text", day(40)),
        )
        .await;
        assert_eq!(created, vec!["true".to_string()]);
        let p40 = format!("llm_logs_p{}", day(40).format("%Y%m%d"));
        assert_eq!(partition_of(&store, &old).await, p40);
        assert_eq!(partition_of(&store, &older).await, "llm_logs_default");
        // Idempotent, and a replay of the moved record is still a no-op.
        assert_eq!(store.logs.insert_batch(&all).await.unwrap(), 0);

        let report = store.retention.maintain_logs(30, now).await.unwrap();
        assert_eq!(report.partitions_created, 0);
        assert_eq!(report.partitions_dropped, vec![p40.clone()]);
        // `older` and `edge_gone` sat in DEFAULT: deleted row by row.
        assert_eq!(report.rows_deleted, 2);
        let left = fetch_texts(
            &store,
            "SELECT request_id::text FROM llm_logs ORDER BY created_at DESC",
        )
        .await;
        let want = [fresh.request_id, edge_kept.request_id].map(|id| id.to_string());
        assert_eq!(left, want);
        assert!(!store
            .retention
            .log_partitions()
            .await
            .unwrap()
            .contains(&p40));
        // Nothing more to do on a second run; retention 0 keeps everything.
        for days in [30, 0] {
            assert_eq!(
                store.retention.maintain_logs(days, now).await.unwrap(),
                MaintenanceReport::default()
            );
        }
        assert_eq!(store.logs.count_logs().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn postgres_upgrading_a_seed_table_keeps_its_rows_and_ids_and_retires_them_whole() {
        let (store, _db) = empty_postgres().await.unwrap();
        // The original Python service's table, with rows from long ago, one without a time.
        execute(
            &store,
            "CREATE TABLE llm_logs (id SERIAL PRIMARY KEY, created_at TIMESTAMP DEFAULT now(), \
             user_id VARCHAR NOT NULL, prompt TEXT NOT NULL, response TEXT NOT NULL, \
             model_version VARCHAR NOT NULL, latency_ms DOUBLE PRECISION NOT NULL, \
             status VARCHAR NOT NULL); \
             INSERT INTO llm_logs (created_at, user_id, prompt, response, model_version, latency_ms, status) VALUES \
             ('2024-05-01 10:00:00', 'u1', 'hi', 'hello', 'gpt-5-mini', 4735.19, 'ok'), \
             ('2024-05-02 11:00:00', 'u2', 'yo', 'hey', 'gpt-5-mini', 12.5, 'ok'), \
             (NULL, 'u3', 'when?', 'unknown', 'gpt-5-mini', 1.0, 'error');",
        )
        .await;
        store.migrate().await.unwrap();
        let today = Utc::now().date_naive();
        let before = format!("llm_logs_before_{}", today.format("%Y%m%d"));
        let parts = store.retention.log_partitions().await.unwrap();
        assert!(parts.contains(&before), "{parts:?}");
        assert_eq!(store.logs.count_logs().await.unwrap(), 3);
        let rows = fetch_texts(
            &store,
            "SELECT id || ' ' || prompt || ' ' || extract(epoch FROM created_at)::bigint \
             FROM llm_logs ORDER BY id",
        )
        .await;
        let first = Utc
            .with_ymd_and_hms(2024, 5, 1, 10, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(rows[0], format!("1 hi {first}"));
        assert_eq!(rows[2], "3 when? 0", "no time → 1970");
        // New rows continue the old ids and land in today's partition.
        let new = record_at(7, Utc::now());
        store
            .logs
            .insert_batch(std::slice::from_ref(&new))
            .await
            .unwrap();
        let id_sql = format!(
            "SELECT id FROM llm_logs WHERE request_id = '{}'",
            new.request_id
        );
        assert_eq!(fetch_i64(&store, &id_sql).await, 4);
        assert_eq!(
            partition_of(&store, &new).await,
            format!("llm_logs_p{}", today.format("%Y%m%d"))
        );
        // 30-day retention today: the old rows are deleted one by one (the pre-migration
        // partition also holds days that are not expired yet).
        let report = store.retention.maintain_logs(30, Utc::now()).await.unwrap();
        assert_eq!(report.rows_deleted, 3);
        assert!(report.partitions_dropped.is_empty());
        // 40 days later, the pre-migration partition is dropped whole with the daily ones.
        let later = Utc::now() + chrono::Duration::days(40);
        let report = store.retention.maintain_logs(30, later).await.unwrap();
        assert!(report.partitions_dropped.contains(&before), "{report:?}");
        assert_eq!(report.partitions_created, 8);
        assert_eq!(store.logs.count_logs().await.unwrap(), 0);
        // A table with a column nobody knows about is refused, not silently truncated.
        let (store2, _db2) = empty_postgres().await.unwrap();
        execute(
            &store2,
            "CREATE TABLE llm_logs (id SERIAL PRIMARY KEY, created_at TIMESTAMP DEFAULT now(), \
             user_id VARCHAR, prompt TEXT NOT NULL, response TEXT, model_version VARCHAR NOT NULL, \
             latency_ms DOUBLE PRECISION NOT NULL, status VARCHAR NOT NULL, team TEXT)",
        )
        .await;
        let err = store2.migrate().await.unwrap_err().to_string();
        assert!(err.contains("team"), "{err}");
    }
}
