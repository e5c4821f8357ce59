//! Retention on SQLite: rows of expired days deleted in chunks (no partitions).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::SqliteStore;
use crate::store::retention::{cutoff, LogRetention, MaintenanceReport, DELETE_CHUNK};
use crate::store::StoreError;

const DELETE_EXPIRED: &str = "DELETE FROM llm_logs WHERE id IN \
     (SELECT id FROM llm_logs WHERE created_at < $1 LIMIT $2)";

#[async_trait]
impl LogRetention for SqliteStore {
    async fn maintain_logs(
        &self,
        retention_days: u32,
        now: DateTime<Utc>,
    ) -> Result<MaintenanceReport, StoreError> {
        let mut report = MaintenanceReport::default();
        let Some(cutoff) = cutoff(retention_days, now) else {
            return Ok(report);
        };
        loop {
            let deleted = sqlx::query(DELETE_EXPIRED)
                .bind(cutoff)
                .bind(DELETE_CHUNK)
                .execute(&self.pool)
                .await?
                .rows_affected();
            report.rows_deleted += deleted;
            if deleted < DELETE_CHUNK as u64 {
                return Ok(report);
            }
        }
    }

    async fn log_partitions(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Days, NaiveDate, TimeZone};

    use super::*;
    use crate::store::testing::{fresh_sqlite, sample_record};
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
            store.logs.insert_batch(chunk).await.unwrap();
        }
        let report = store.retention.maintain_logs(30, now).await.unwrap();
        assert_eq!(report.rows_deleted, 25_000);
        assert_eq!(store.logs.count_logs().await.unwrap(), 3);
        for r in &keep {
            assert!(store.logs.get_log(r.request_id).await.unwrap().is_some());
        }
        assert_eq!(
            store.retention.maintain_logs(0, now).await.unwrap(),
            MaintenanceReport::default()
        );
    }
}
