//! Retention and partition upkeep of `llm_logs`. PostgreSQL: daily partitions are created a week
//! ahead and dropped whole once past the retention; SQLite: old rows are deleted in chunks.
//!
//! Retention is by UTC day: with `retention_days = 30`, a record is removed once its whole day is
//! more than 30 days old (the cutoff is midnight UTC, 30 days before today), so a day is never
//! half-deleted and on PostgreSQL only rows outside daily partitions (the DEFAULT partition and
//! the pre-partitioning `llm_logs_before_*`) are ever deleted one by one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Days, Utc};
use tokio::task::JoinHandle;

use super::StoreError;
use crate::metrics::Metrics;

/// Daily partitions exist from today to this many days ahead, so a maintenance job that stops
/// running for a while does not push inserts into the DEFAULT partition.
pub const PARTITIONS_AHEAD_DAYS: u64 = 7;
/// How often the job runs.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);
/// Rows per DELETE, so a large backlog never holds one long lock or a huge transaction.
pub(crate) const DELETE_CHUNK: i64 = 10_000;

#[async_trait]
pub trait LogRetention: Send + Sync {
    /// Creates the coming days' partitions (PostgreSQL) and enforces the retention (0 = keep
    /// everything). Safe to run from several replicas at once.
    async fn maintain_logs(
        &self,
        retention_days: u32,
        now: DateTime<Utc>,
    ) -> Result<MaintenanceReport, StoreError>;

    /// The partitions of `llm_logs` by name (PostgreSQL; empty on SQLite).
    async fn log_partitions(&self) -> Result<Vec<String>, StoreError>;
}

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

/// The periodic maintenance job: [`LogRetention::maintain_logs`] at start and every
/// [`MAINTENANCE_INTERVAL`]. Failures are counted, logged and retried at the next run.
pub struct Maintenance {
    task: JoinHandle<()>,
}

impl Maintenance {
    /// Starts once `migrated` turns true (the schema is there to maintain).
    pub fn start(
        store: Arc<dyn LogRetention>,
        retention_days: u32,
        metrics: Arc<Metrics>,
        mut migrated: tokio::sync::watch::Receiver<bool>,
    ) -> Maintenance {
        let task = tokio::spawn(async move {
            if migrated.wait_for(|done| *done).await.is_err() {
                return;
            }
            loop {
                run_once(store.as_ref(), retention_days, &metrics).await;
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

async fn run_once(store: &dyn LogRetention, retention_days: u32, metrics: &Metrics) {
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

    #[test]
    fn cutoff_is_midnight_utc_retention_days_ago() {
        let now = Utc.with_ymd_and_hms(2025, 3, 31, 17, 45, 0).unwrap();
        assert_eq!(cutoff(0, now), None);
        assert_eq!(
            cutoff(30, now),
            Some(Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap())
        );
    }
}
