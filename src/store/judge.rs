//! The judge's queue and scores (`judge_jobs`, `judge_scores`) and what it reads of `llm_logs`:
//! claim with a lease fenced by a claim id, read the record, store scores and finish in one
//! transaction. Backfill scans and the evaluation view of one record live here too.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::record::{JobStatus, LogStatus};
use super::StoreError;

/// The judge's queries. PostgreSQL claims with `FOR UPDATE SKIP LOCKED` and uses its own clock;
/// SQLite, which has one writer, runs the same steps inside `BEGIN IMMEDIATE` with this process's
/// clock.
#[async_trait]
pub trait JudgeJobs: Send + Sync {
    /// Queues jobs; a record that already has a job (any state) is skipped. Returns how many
    /// were new.
    async fn enqueue(&self, jobs: &[NewJob]) -> Result<u64, StoreError>;

    /// Claims up to `limit` jobs for this worker, oldest first: pending and due, or running under
    /// a lease that ran out (its worker died). `created_before` limits a backfill to the jobs that
    /// existed when it started. Concurrent workers never get the same job while its lease holds.
    async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        created_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// The prompt and answer of a record (the same row `LogStore::get_log` returns), or None
    /// while it has not reached the database.
    async fn material(&self, request_id: Uuid) -> Result<Option<JudgeMaterial>, StoreError>;

    /// Puts a claimed job back in the queue, due after `delay`. False when the claim was lost.
    async fn defer(
        &self,
        job: &ClaimedJob,
        delay: Duration,
        outcome: &Outcome<'_>,
    ) -> Result<bool, StoreError>;

    /// Marks a claimed job as failed for good. False when the claim was lost.
    async fn fail(&self, job: &ClaimedJob, outcome: &Outcome<'_>) -> Result<bool, StoreError>;

    /// Stores the scores and marks the job done, in one transaction, only while this worker
    /// still holds the claim. False (nothing stored) when the claim was lost to another worker.
    async fn complete(
        &self,
        job: &ClaimedJob,
        attempts: i32,
        judge_model: &str,
        spend: Spend,
        scores: &[NewScore],
    ) -> Result<bool, StoreError>;

    /// Hands a claimed job back untouched (shutdown): due at once, the claim's attempt not
    /// counted.
    async fn release(&self, job: &ClaimedJob) -> Result<bool, StoreError>;

    /// Jobs pending or running (optionally only those created up to a time): the backlog.
    async fn open_jobs(&self, created_before: Option<DateTime<Utc>>) -> Result<i64, StoreError>;

    /// The database's clock (PostgreSQL's `now()`; this process's for SQLite), so marks compared
    /// with `created_at` columns are on the same clock as the rows.
    async fn now(&self) -> Result<DateTime<Utc>, StoreError>;

    /// One page of successful records with a stored answer in `[since, until)` (optionally of
    /// one model version), after `after` in (created_at, request_id) order.
    async fn candidates(&self, scan: &CandidateScan) -> Result<Vec<Candidate>, StoreError>;

    /// Puts the failed jobs of records in `[since, until)` back in the queue with fresh attempts.
    async fn retry_errors(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<u64, StoreError>;

    /// The judge job of a record, if it was sampled.
    async fn job(&self, request_id: Uuid) -> Result<Option<JobRow>, StoreError>;

    /// The judge scores of a record, by criterion.
    async fn scores(&self, request_id: Uuid) -> Result<Vec<ScoreRow>, StoreError>;
}

/// A sampled record to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub request_id: Uuid,
    pub model_version: String,
}

/// A job this worker holds. `claim_id` fences out a worker whose lease ran out: only the holder
/// of the current claim can finish the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub request_id: Uuid,
    pub model_version: String,
    /// Judge calls counted so far, including the one this claim is for.
    pub attempts: i32,
    pub claim_id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// What a record offers the judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeMaterial {
    pub prompt: String,
    pub response: Option<String>,
    pub status: LogStatus,
    pub model_version: String,
}

/// Tokens and cost of the judge calls made for one job (added to the job's totals).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// One score to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScore {
    pub criterion: String,
    pub score: i16,
    pub rationale: Option<String>,
}

/// What to write back when a job goes back to the queue or fails.
#[derive(Debug, Clone, Default)]
pub struct Outcome<'a> {
    /// Judge calls counted for the job after this claim.
    pub attempts: i32,
    pub error_type: Option<&'a str>,
    pub last_error: Option<&'a str>,
    pub judge_model: Option<&'a str>,
    pub spend: Spend,
}

/// A job's state, for the evaluation view of a record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct JobRow {
    pub status: JobStatus,
    pub attempts: i32,
    pub error_type: Option<String>,
    pub last_error: Option<String>,
    pub judge_model: Option<String>,
    /// Tokens and cost of judging this record (all attempts).
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub updated_at: DateTime<Utc>,
}

/// One stored judge score.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ScoreRow {
    pub criterion: String,
    /// 1–5.
    pub score: i16,
    pub rationale: Option<String>,
    pub judge_model: String,
    pub created_at: DateTime<Utc>,
}

/// Which stored records a backfill looks at, one page at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateScan {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub model_version: Option<String>,
    /// The last (created_at, request_id) of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: usize,
}

/// A record a backfill may enqueue, in (created_at, request_id) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub request_id: Uuid,
    pub model_version: String,
    pub created_at: DateTime<Utc>,
}

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub(crate) fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// PostgreSQL text cannot hold NUL; rationales and errors are stored with U+FFFD instead.
pub(crate) fn no_nul(s: Option<&str>) -> Option<String> {
    s.map(|s| s.replace('\0', "\u{FFFD}"))
}
