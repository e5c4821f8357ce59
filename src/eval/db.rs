//! SQL of the evaluation tables (`judge_jobs`, `judge_scores`, `feedback`) for both backends,
//! next to the code that uses it. PostgreSQL claims jobs with `FOR UPDATE SKIP LOCKED`; SQLite,
//! which has a single writer, runs the same `UPDATE … RETURNING` inside `BEGIN IMMEDIATE`.
//! SQLite keeps uuids and timestamps as TEXT (timestamps in the RFC 3339 form sqlx writes, which
//! sorts correctly as text), and "now" comes from this process; PostgreSQL uses its own clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use crate::store::{Store, StoreError};

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
    pub status: String,
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

/// A job's state, for the evaluation view of a record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct JobRow {
    /// pending, running, done or error.
    pub status: String,
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

/// One stored human rating.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FeedbackRow {
    pub id: i64,
    pub request_id: Uuid,
    pub model_version: String,
    pub score: i16,
    /// thumbs or stars.
    pub scale: String,
    /// positive, neutral or negative.
    pub rating: String,
    pub comment: Option<String>,
    pub user_id: Option<String>,
    /// agree, disagree or not_comparable once the judge's overall score exists; null before.
    pub agreement: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A human rating to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFeedback {
    pub request_id: Uuid,
    pub model_version: String,
    pub score: i16,
    pub scale: &'static str,
    pub rating: &'static str,
    pub comment: Option<String>,
    pub user_id: Option<String>,
}

/// Counts for the agreement report: feedback by (model_version, rating, agreement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackCount {
    pub model_version: String,
    pub rating: String,
    pub agreement: Option<String>,
    pub count: i64,
}

/// Judged records and their mean overall score per model version.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgedCount {
    pub model_version: String,
    pub judged: i64,
    pub mean_overall: Option<f64>,
}

/// A record a backfill may enqueue, in (created_at, request_id) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub request_id: Uuid,
    pub model_version: String,
    pub created_at: DateTime<Utc>,
}

fn parse_uuid(raw: &str, what: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(raw).map_err(|e| StoreError::Corrupt {
        request_id: raw.to_string(),
        reason: format!("{what}: {e}"),
    })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

// ----------------------------------------------------------------------------------------------
// Queue.
// ----------------------------------------------------------------------------------------------

const PG_ENQUEUE: &str = "INSERT INTO judge_jobs (request_id, model_version) \
     SELECT * FROM UNNEST($1::uuid[], $2::text[]) ON CONFLICT (request_id) DO NOTHING";
const SQLITE_ENQUEUE: &str = "INSERT INTO judge_jobs \
     (request_id, model_version, available_at, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?3, ?3) ON CONFLICT (request_id) DO NOTHING";

/// Queues jobs; a record that already has a job (any state) is skipped. Returns how many were new.
pub async fn enqueue(store: &Store, jobs: &[NewJob]) -> Result<u64, StoreError> {
    if jobs.is_empty() {
        return Ok(0);
    }
    match store {
        Store::Postgres(pool) => {
            let ids: Vec<Uuid> = jobs.iter().map(|j| j.request_id).collect();
            let versions: Vec<&str> = jobs.iter().map(|j| j.model_version.as_str()).collect();
            let r = sqlx::query(PG_ENQUEUE)
                .bind(ids)
                .bind(versions)
                .execute(pool)
                .await?;
            Ok(r.rows_affected())
        }
        Store::Sqlite(pool) => {
            let now = Utc::now();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut n = 0;
            for j in jobs {
                n += sqlx::query(SQLITE_ENQUEUE)
                    .bind(j.request_id.to_string())
                    .bind(&j.model_version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok(n)
        }
    }
}

/// Claimable: pending and due, or running under a lease that ran out (its worker died).
/// `$4`/`?4` limits a backfill to the jobs that existed when it started.
const PG_CLAIM: &str = "UPDATE judge_jobs SET status = 'running', claimed_at = now(), \
     claim_id = $3, attempts = attempts + 1, updated_at = now() \
     WHERE request_id IN ( \
       SELECT request_id FROM judge_jobs \
       WHERE status IN ('pending', 'running') \
         AND ((status = 'pending' AND available_at <= now()) \
              OR (status = 'running' AND claimed_at < now() - make_interval(secs => $2))) \
         AND ($4::timestamptz IS NULL OR created_at <= $4) \
       ORDER BY created_at \
       LIMIT $1 \
       FOR UPDATE SKIP LOCKED) \
     RETURNING request_id, model_version, attempts, claim_id, created_at";
const SQLITE_CLAIM: &str = "UPDATE judge_jobs SET status = 'running', claimed_at = ?2, \
     claim_id = ?3, attempts = attempts + 1, updated_at = ?2 \
     WHERE request_id IN ( \
       SELECT request_id FROM judge_jobs \
       WHERE status IN ('pending', 'running') \
         AND ((status = 'pending' AND available_at <= ?2) \
              OR (status = 'running' AND claimed_at < ?4)) \
         AND (?5 IS NULL OR created_at <= ?5) \
       ORDER BY created_at \
       LIMIT ?1) \
     RETURNING request_id, model_version, attempts, claim_id, created_at";

/// Claims up to `limit` jobs for this worker, oldest first. Concurrent workers (other replicas
/// included) never get the same job while its lease holds.
pub async fn claim(
    store: &Store,
    limit: usize,
    lease: Duration,
    created_before: Option<DateTime<Utc>>,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let claim_id = Uuid::new_v4();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut jobs = match store {
        Store::Postgres(pool) => {
            let rows = sqlx::query(PG_CLAIM)
                .bind(limit)
                .bind(secs(lease))
                .bind(claim_id)
                .bind(created_before)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(ClaimedJob {
                        request_id: r.try_get("request_id")?,
                        model_version: r.try_get("model_version")?,
                        attempts: r.try_get("attempts")?,
                        claim_id: r.try_get("claim_id")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?
        }
        Store::Sqlite(pool) => {
            let now = Utc::now();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let rows = sqlx::query(SQLITE_CLAIM)
                .bind(limit)
                .bind(now)
                .bind(claim_id.to_string())
                .bind(now - chrono_dur(lease))
                .bind(created_before)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            rows.iter()
                .map(|r| {
                    let id: String = r.try_get("request_id")?;
                    let claim: String = r.try_get("claim_id")?;
                    Ok(ClaimedJob {
                        request_id: parse_uuid(&id, "judge_jobs.request_id")?,
                        model_version: r.try_get("model_version")?,
                        attempts: r.try_get("attempts")?,
                        claim_id: parse_uuid(&claim, "judge_jobs.claim_id")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?
        }
    };
    // RETURNING does not keep the subquery's order.
    jobs.sort_by_key(|j| j.created_at);
    Ok(jobs)
}

const PG_MATERIAL: &str = "SELECT prompt, response, status, model_version FROM llm_logs \
     WHERE request_id = $1 LIMIT 1";
const SQLITE_MATERIAL: &str = "SELECT prompt, response, status, model_version FROM llm_logs \
     WHERE request_id = ?1 LIMIT 1";

/// The prompt and answer of a record, or None while it has not reached the database.
pub async fn material(
    store: &Store,
    request_id: Uuid,
) -> Result<Option<JudgeMaterial>, StoreError> {
    let decode = |prompt, response, status, model_version| JudgeMaterial {
        prompt,
        response,
        status,
        model_version,
    };
    match store {
        Store::Postgres(pool) => {
            let row = sqlx::query(PG_MATERIAL)
                .bind(request_id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| {
                Ok(decode(
                    r.try_get("prompt")?,
                    r.try_get("response")?,
                    r.try_get("status")?,
                    r.try_get("model_version")?,
                ))
            })
            .transpose()
        }
        Store::Sqlite(pool) => {
            let row = sqlx::query(SQLITE_MATERIAL)
                .bind(request_id.to_string())
                .fetch_optional(pool)
                .await?;
            row.map(|r| {
                Ok(decode(
                    r.try_get("prompt")?,
                    r.try_get("response")?,
                    r.try_get("status")?,
                    r.try_get("model_version")?,
                ))
            })
            .transpose()
        }
    }
}

const PG_DEFER: &str = "UPDATE judge_jobs SET status = 'pending', \
     available_at = now() + make_interval(secs => $3), claimed_at = NULL, claim_id = NULL, \
     attempts = $4, error_type = $5, last_error = $6, judge_model = COALESCE($7, judge_model), \
     input_tokens = input_tokens + $8, output_tokens = output_tokens + $9, \
     cost_usd = cost_usd + $10, updated_at = now() \
     WHERE request_id = $1 AND claim_id = $2";
const SQLITE_DEFER: &str = "UPDATE judge_jobs SET status = 'pending', \
     available_at = ?3, claimed_at = NULL, claim_id = NULL, \
     attempts = ?4, error_type = ?5, last_error = ?6, judge_model = COALESCE(?7, judge_model), \
     input_tokens = input_tokens + ?8, output_tokens = output_tokens + ?9, \
     cost_usd = cost_usd + ?10, updated_at = ?11 \
     WHERE request_id = ?1 AND claim_id = ?2";

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

/// Puts a claimed job back in the queue, due after `delay`. False when the claim was lost.
pub async fn defer(
    store: &Store,
    job: &ClaimedJob,
    delay: Duration,
    o: &Outcome<'_>,
) -> Result<bool, StoreError> {
    let n = match store {
        Store::Postgres(pool) => sqlx::query(PG_DEFER)
            .bind(job.request_id)
            .bind(job.claim_id)
            .bind(secs(delay))
            .bind(o.attempts)
            .bind(o.error_type)
            .bind(o.last_error)
            .bind(o.judge_model)
            .bind(o.spend.input_tokens)
            .bind(o.spend.output_tokens)
            .bind(o.spend.cost_usd)
            .execute(pool)
            .await?
            .rows_affected(),
        Store::Sqlite(pool) => {
            let now = Utc::now();
            sqlx::query(SQLITE_DEFER)
                .bind(job.request_id.to_string())
                .bind(job.claim_id.to_string())
                .bind(now + chrono_dur(delay))
                .bind(o.attempts)
                .bind(o.error_type)
                .bind(o.last_error)
                .bind(o.judge_model)
                .bind(o.spend.input_tokens)
                .bind(o.spend.output_tokens)
                .bind(o.spend.cost_usd)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        }
    };
    Ok(n == 1)
}

const PG_FAIL: &str = "UPDATE judge_jobs SET status = 'error', attempts = $3, error_type = $4, \
     last_error = $5, judge_model = COALESCE($6, judge_model), \
     input_tokens = input_tokens + $7, output_tokens = output_tokens + $8, \
     cost_usd = cost_usd + $9, claim_id = NULL, updated_at = now() \
     WHERE request_id = $1 AND claim_id = $2";
const SQLITE_FAIL: &str =
    "UPDATE judge_jobs SET status = 'error', attempts = ?3, error_type = ?4, \
     last_error = ?5, judge_model = COALESCE(?6, judge_model), \
     input_tokens = input_tokens + ?7, output_tokens = output_tokens + ?8, \
     cost_usd = cost_usd + ?9, claim_id = NULL, updated_at = ?10 \
     WHERE request_id = ?1 AND claim_id = ?2";

/// Marks a claimed job as failed for good. False when the claim was lost.
pub async fn fail(store: &Store, job: &ClaimedJob, o: &Outcome<'_>) -> Result<bool, StoreError> {
    let n = match store {
        Store::Postgres(pool) => sqlx::query(PG_FAIL)
            .bind(job.request_id)
            .bind(job.claim_id)
            .bind(o.attempts)
            .bind(o.error_type)
            .bind(o.last_error)
            .bind(o.judge_model)
            .bind(o.spend.input_tokens)
            .bind(o.spend.output_tokens)
            .bind(o.spend.cost_usd)
            .execute(pool)
            .await?
            .rows_affected(),
        Store::Sqlite(pool) => sqlx::query(SQLITE_FAIL)
            .bind(job.request_id.to_string())
            .bind(job.claim_id.to_string())
            .bind(o.attempts)
            .bind(o.error_type)
            .bind(o.last_error)
            .bind(o.judge_model)
            .bind(o.spend.input_tokens)
            .bind(o.spend.output_tokens)
            .bind(o.spend.cost_usd)
            .bind(Utc::now())
            .execute(pool)
            .await?
            .rows_affected(),
    };
    Ok(n == 1)
}

const PG_DONE: &str = "UPDATE judge_jobs SET status = 'done', attempts = $3, error_type = NULL, \
     last_error = NULL, judge_model = $4, input_tokens = input_tokens + $5, \
     output_tokens = output_tokens + $6, cost_usd = cost_usd + $7, claim_id = NULL, \
     updated_at = now() WHERE request_id = $1 AND claim_id = $2";
const SQLITE_DONE: &str =
    "UPDATE judge_jobs SET status = 'done', attempts = ?3, error_type = NULL, \
     last_error = NULL, judge_model = ?4, input_tokens = input_tokens + ?5, \
     output_tokens = output_tokens + ?6, cost_usd = cost_usd + ?7, claim_id = NULL, \
     updated_at = ?8 WHERE request_id = ?1 AND claim_id = ?2";
const PG_SCORES: &str = "INSERT INTO judge_scores \
     (request_id, criterion, score, rationale, judge_model, model_version) \
     SELECT $1, u.criterion, u.score, u.rationale, $5, $6 \
     FROM UNNEST($2::text[], $3::int2[], $4::text[]) AS u(criterion, score, rationale) \
     ON CONFLICT (request_id, criterion) DO NOTHING";
const SQLITE_SCORE: &str = "INSERT INTO judge_scores \
     (request_id, criterion, score, rationale, judge_model, model_version, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (request_id, criterion) DO NOTHING";

/// Stores the scores and marks the job done, in one transaction, only while this worker still
/// holds the claim. False (nothing stored) when the claim was lost to another worker.
pub async fn complete(
    store: &Store,
    job: &ClaimedJob,
    attempts: i32,
    judge_model: &str,
    spend: Spend,
    scores: &[NewScore],
) -> Result<bool, StoreError> {
    match store {
        Store::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(PG_DONE)
                .bind(job.request_id)
                .bind(job.claim_id)
                .bind(attempts)
                .bind(judge_model)
                .bind(spend.input_tokens)
                .bind(spend.output_tokens)
                .bind(spend.cost_usd)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            let criteria: Vec<&str> = scores.iter().map(|s| s.criterion.as_str()).collect();
            let values: Vec<i16> = scores.iter().map(|s| s.score).collect();
            let rationales: Vec<Option<String>> = scores
                .iter()
                .map(|s| s.rationale.as_deref().map(|r| r.replace('\0', "\u{FFFD}")))
                .collect();
            sqlx::query(PG_SCORES)
                .bind(job.request_id)
                .bind(criteria)
                .bind(values)
                .bind(rationales)
                .bind(judge_model)
                .bind(&job.model_version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        }
        Store::Sqlite(pool) => {
            let now = Utc::now();
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let n = sqlx::query(SQLITE_DONE)
                .bind(job.request_id.to_string())
                .bind(job.claim_id.to_string())
                .bind(attempts)
                .bind(judge_model)
                .bind(spend.input_tokens)
                .bind(spend.output_tokens)
                .bind(spend.cost_usd)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            for s in scores {
                sqlx::query(SQLITE_SCORE)
                    .bind(job.request_id.to_string())
                    .bind(&s.criterion)
                    .bind(s.score)
                    .bind(&s.rationale)
                    .bind(judge_model)
                    .bind(&job.model_version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        }
    }
}

const PG_RELEASE: &str = "UPDATE judge_jobs SET status = 'pending', available_at = now(), \
     claimed_at = NULL, claim_id = NULL, attempts = GREATEST(attempts - 1, 0), updated_at = now() \
     WHERE request_id = $1 AND claim_id = $2";
const SQLITE_RELEASE: &str = "UPDATE judge_jobs SET status = 'pending', available_at = ?3, \
     claimed_at = NULL, claim_id = NULL, attempts = MAX(attempts - 1, 0), updated_at = ?3 \
     WHERE request_id = ?1 AND claim_id = ?2";

/// Hands a claimed job back untouched (shutdown): due at once, the claim's attempt not counted.
pub async fn release(store: &Store, job: &ClaimedJob) -> Result<bool, StoreError> {
    let n = match store {
        Store::Postgres(pool) => sqlx::query(PG_RELEASE)
            .bind(job.request_id)
            .bind(job.claim_id)
            .execute(pool)
            .await?
            .rows_affected(),
        Store::Sqlite(pool) => sqlx::query(SQLITE_RELEASE)
            .bind(job.request_id.to_string())
            .bind(job.claim_id.to_string())
            .bind(Utc::now())
            .execute(pool)
            .await?
            .rows_affected(),
    };
    Ok(n == 1)
}

const PG_OPEN: &str = "SELECT COUNT(*) FROM judge_jobs WHERE status IN ('pending', 'running') \
     AND ($1::timestamptz IS NULL OR created_at <= $1)";
const SQLITE_OPEN: &str = "SELECT COUNT(*) FROM judge_jobs WHERE status IN ('pending', 'running') \
     AND (?1 IS NULL OR created_at <= ?1)";

/// Jobs pending or running (optionally only those created up to a time): the backlog.
pub async fn open_jobs(
    store: &Store,
    created_before: Option<DateTime<Utc>>,
) -> Result<i64, StoreError> {
    Ok(match store {
        Store::Postgres(pool) => {
            sqlx::query_scalar(PG_OPEN)
                .bind(created_before)
                .fetch_one(pool)
                .await?
        }
        Store::Sqlite(pool) => {
            sqlx::query_scalar(SQLITE_OPEN)
                .bind(created_before)
                .fetch_one(pool)
                .await?
        }
    })
}

/// The database's clock (PostgreSQL's `now()`; this process's for SQLite), so marks compared
/// with `created_at` columns are on the same clock as the rows.
pub async fn now(store: &Store) -> Result<DateTime<Utc>, StoreError> {
    Ok(match store {
        Store::Postgres(pool) => sqlx::query_scalar("SELECT now()").fetch_one(pool).await?,
        Store::Sqlite(_) => Utc::now(),
    })
}

// ----------------------------------------------------------------------------------------------
// Backfill.
// ----------------------------------------------------------------------------------------------

const PG_CANDIDATES: &str = "SELECT request_id, model_version, created_at FROM llm_logs \
     WHERE created_at >= $1 AND created_at < $2 AND status = 'ok' AND response IS NOT NULL \
       AND ($3::text IS NULL OR model_version = $3) \
       AND ($4::timestamptz IS NULL OR created_at > $4 OR (created_at = $4 AND request_id > $5)) \
     ORDER BY created_at, request_id LIMIT $6";
const SQLITE_CANDIDATES: &str = "SELECT request_id, model_version, created_at FROM llm_logs \
     WHERE created_at >= ?1 AND created_at < ?2 AND status = 'ok' AND response IS NOT NULL \
       AND (?3 IS NULL OR model_version = ?3) \
       AND (?4 IS NULL OR created_at > ?4 OR (created_at = ?4 AND request_id > ?5)) \
     ORDER BY created_at, request_id LIMIT ?6";

/// One page of successful records with a stored answer in `[since, until)`, after `after`.
pub async fn candidates(
    store: &Store,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    model_version: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: usize,
) -> Result<Vec<Candidate>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (after_at, after_id) = match after {
        Some((t, id)) => (Some(t), id),
        None => (None, Uuid::nil()),
    };
    match store {
        Store::Postgres(pool) => {
            let rows = sqlx::query(PG_CANDIDATES)
                .bind(since)
                .bind(until)
                .bind(model_version)
                .bind(after_at)
                .bind(after_id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Candidate {
                        request_id: r.try_get("request_id")?,
                        model_version: r.try_get("model_version")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect()
        }
        Store::Sqlite(pool) => {
            let rows = sqlx::query(SQLITE_CANDIDATES)
                .bind(since)
                .bind(until)
                .bind(model_version)
                .bind(after_at)
                .bind(after_id.to_string())
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    let id: String = r.try_get("request_id")?;
                    Ok(Candidate {
                        request_id: parse_uuid(&id, "llm_logs.request_id")?,
                        model_version: r.try_get("model_version")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect()
        }
    }
}

const PG_RETRY_ERRORS: &str = "UPDATE judge_jobs SET status = 'pending', attempts = 0, \
     available_at = now(), error_type = NULL, last_error = NULL, created_at = now(), \
     updated_at = now() \
     WHERE status = 'error' AND ($3::text IS NULL OR model_version = $3) AND request_id IN ( \
       SELECT request_id FROM llm_logs WHERE created_at >= $1 AND created_at < $2)";
const SQLITE_RETRY_ERRORS: &str = "UPDATE judge_jobs SET status = 'pending', attempts = 0, \
     available_at = ?4, error_type = NULL, last_error = NULL, created_at = ?4, updated_at = ?4 \
     WHERE status = 'error' AND (?3 IS NULL OR model_version = ?3) AND request_id IN ( \
       SELECT request_id FROM llm_logs WHERE created_at >= ?1 AND created_at < ?2)";

/// Puts the failed jobs of records in `[since, until)` back in the queue with fresh attempts.
pub async fn retry_errors(
    store: &Store,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    model_version: Option<&str>,
) -> Result<u64, StoreError> {
    Ok(match store {
        Store::Postgres(pool) => sqlx::query(PG_RETRY_ERRORS)
            .bind(since)
            .bind(until)
            .bind(model_version)
            .execute(pool)
            .await?
            .rows_affected(),
        Store::Sqlite(pool) => sqlx::query(SQLITE_RETRY_ERRORS)
            .bind(since)
            .bind(until)
            .bind(model_version)
            .bind(Utc::now())
            .execute(pool)
            .await?
            .rows_affected(),
    })
}

// ----------------------------------------------------------------------------------------------
// Feedback and agreement.
// ----------------------------------------------------------------------------------------------

const PG_LOG_VERSION: &str = "SELECT model_version FROM llm_logs WHERE request_id = $1 LIMIT 1";
const SQLITE_LOG_VERSION: &str = "SELECT model_version FROM llm_logs WHERE request_id = ?1 LIMIT 1";

/// The model version of a stored record, or None when there is no such record (yet).
pub async fn log_model_version(
    store: &Store,
    request_id: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(match store {
        Store::Postgres(pool) => {
            sqlx::query_scalar(PG_LOG_VERSION)
                .bind(request_id)
                .fetch_optional(pool)
                .await?
        }
        Store::Sqlite(pool) => {
            sqlx::query_scalar(SQLITE_LOG_VERSION)
                .bind(request_id.to_string())
                .fetch_optional(pool)
                .await?
        }
    })
}

const PG_INSERT_FEEDBACK: &str = "INSERT INTO feedback \
     (request_id, model_version, score, scale, rating, comment, user_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, created_at";
const SQLITE_INSERT_FEEDBACK: &str = "INSERT INTO feedback \
     (request_id, model_version, score, scale, rating, comment, user_id, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id, created_at";

/// Stores one rating; returns its id and time.
pub async fn insert_feedback(
    store: &Store,
    f: &NewFeedback,
) -> Result<(i64, DateTime<Utc>), StoreError> {
    let clean = |s: &Option<String>| s.as_deref().map(|s| s.replace('\0', "\u{FFFD}"));
    match store {
        Store::Postgres(pool) => {
            let row = sqlx::query(PG_INSERT_FEEDBACK)
                .bind(f.request_id)
                .bind(&f.model_version)
                .bind(f.score)
                .bind(f.scale)
                .bind(f.rating)
                .bind(clean(&f.comment))
                .bind(clean(&f.user_id))
                .fetch_one(pool)
                .await?;
            Ok((row.try_get("id")?, row.try_get("created_at")?))
        }
        Store::Sqlite(pool) => {
            let row = sqlx::query(SQLITE_INSERT_FEEDBACK)
                .bind(f.request_id.to_string())
                .bind(&f.model_version)
                .bind(f.score)
                .bind(f.scale)
                .bind(f.rating)
                .bind(&f.comment)
                .bind(&f.user_id)
                .bind(Utc::now())
                .fetch_one(pool)
                .await?;
            Ok((row.try_get("id")?, row.try_get("created_at")?))
        }
    }
}

const PG_OVERALL: &str =
    "SELECT score FROM judge_scores WHERE request_id = $1 AND criterion = 'overall'";
const SQLITE_OVERALL: &str =
    "SELECT score FROM judge_scores WHERE request_id = ?1 AND criterion = 'overall'";

/// The judge's overall score of a record, if it has one.
pub async fn overall_score(store: &Store, request_id: Uuid) -> Result<Option<i16>, StoreError> {
    Ok(match store {
        Store::Postgres(pool) => {
            sqlx::query_scalar(PG_OVERALL)
                .bind(request_id)
                .fetch_optional(pool)
                .await?
        }
        Store::Sqlite(pool) => {
            sqlx::query_scalar(SQLITE_OVERALL)
                .bind(request_id.to_string())
                .fetch_optional(pool)
                .await?
        }
    })
}

const PG_UNSETTLED: &str =
    "SELECT id, rating FROM feedback WHERE request_id = $1 AND agreement IS NULL ORDER BY id";
const SQLITE_UNSETTLED: &str =
    "SELECT id, rating FROM feedback WHERE request_id = ?1 AND agreement IS NULL ORDER BY id";

/// Ratings of a record not yet compared with the judge: (feedback id, rating).
pub async fn unsettled_feedback(
    store: &Store,
    request_id: Uuid,
) -> Result<Vec<(i64, String)>, StoreError> {
    Ok(match store {
        Store::Postgres(pool) => {
            sqlx::query_as(PG_UNSETTLED)
                .bind(request_id)
                .fetch_all(pool)
                .await?
        }
        Store::Sqlite(pool) => {
            sqlx::query_as(SQLITE_UNSETTLED)
                .bind(request_id.to_string())
                .fetch_all(pool)
                .await?
        }
    })
}

const PG_SETTLE: &str = "UPDATE feedback SET agreement = $2 WHERE id = $1 AND agreement IS NULL";
const SQLITE_SETTLE: &str =
    "UPDATE feedback SET agreement = ?2 WHERE id = ?1 AND agreement IS NULL";

/// Records the agreement of one rating, once: false when another process did it first.
pub async fn settle(store: &Store, feedback_id: i64, agreement: &str) -> Result<bool, StoreError> {
    let n = match store {
        Store::Postgres(pool) => sqlx::query(PG_SETTLE)
            .bind(feedback_id)
            .bind(agreement)
            .execute(pool)
            .await?
            .rows_affected(),
        Store::Sqlite(pool) => sqlx::query(SQLITE_SETTLE)
            .bind(feedback_id)
            .bind(agreement)
            .execute(pool)
            .await?
            .rows_affected(),
    };
    Ok(n == 1)
}

const PG_FEEDBACK_COUNTS: &str = "SELECT model_version, rating, agreement, COUNT(*) AS n \
     FROM feedback WHERE created_at >= $1 AND created_at < $2 \
       AND ($3::text IS NULL OR model_version = $3) \
     GROUP BY model_version, rating, agreement ORDER BY model_version";
const SQLITE_FEEDBACK_COUNTS: &str = "SELECT model_version, rating, agreement, COUNT(*) AS n \
     FROM feedback WHERE created_at >= ?1 AND created_at < ?2 \
       AND (?3 IS NULL OR model_version = ?3) \
     GROUP BY model_version, rating, agreement ORDER BY model_version";
const PG_JUDGED_COUNTS: &str = "SELECT model_version, COUNT(*) AS n, \
     AVG(score)::float8 AS mean FROM judge_scores \
     WHERE criterion = 'overall' AND created_at >= $1 AND created_at < $2 \
       AND ($3::text IS NULL OR model_version = $3) \
     GROUP BY model_version ORDER BY model_version";
const SQLITE_JUDGED_COUNTS: &str = "SELECT model_version, COUNT(*) AS n, \
     AVG(score) AS mean FROM judge_scores \
     WHERE criterion = 'overall' AND created_at >= ?1 AND created_at < ?2 \
       AND (?3 IS NULL OR model_version = ?3) \
     GROUP BY model_version ORDER BY model_version";

/// Feedback counts by model version, rating and agreement for feedback given in the window.
pub async fn feedback_counts(
    store: &Store,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    model_version: Option<&str>,
) -> Result<Vec<FeedbackCount>, StoreError> {
    let rows = match store {
        Store::Postgres(pool) => {
            sqlx::query_as::<_, (String, String, Option<String>, i64)>(PG_FEEDBACK_COUNTS)
                .bind(since)
                .bind(until)
                .bind(model_version)
                .fetch_all(pool)
                .await?
        }
        Store::Sqlite(pool) => {
            sqlx::query_as::<_, (String, String, Option<String>, i64)>(SQLITE_FEEDBACK_COUNTS)
                .bind(since)
                .bind(until)
                .bind(model_version)
                .fetch_all(pool)
                .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(model_version, rating, agreement, count)| FeedbackCount {
            model_version,
            rating,
            agreement,
            count,
        })
        .collect())
}

/// Records judged (overall score stored) in the window, with their mean overall score.
pub async fn judged_counts(
    store: &Store,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    model_version: Option<&str>,
) -> Result<Vec<JudgedCount>, StoreError> {
    let rows = match store {
        Store::Postgres(pool) => {
            sqlx::query_as::<_, (String, i64, Option<f64>)>(PG_JUDGED_COUNTS)
                .bind(since)
                .bind(until)
                .bind(model_version)
                .fetch_all(pool)
                .await?
        }
        Store::Sqlite(pool) => {
            sqlx::query_as::<_, (String, i64, Option<f64>)>(SQLITE_JUDGED_COUNTS)
                .bind(since)
                .bind(until)
                .bind(model_version)
                .fetch_all(pool)
                .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(model_version, judged, mean_overall)| JudgedCount {
            model_version,
            judged,
            mean_overall,
        })
        .collect())
}

// ----------------------------------------------------------------------------------------------
// The evaluation view of one record.
// ----------------------------------------------------------------------------------------------

const PG_JOB: &str = "SELECT status, attempts, error_type, last_error, judge_model, \
     input_tokens, output_tokens, cost_usd, updated_at FROM judge_jobs WHERE request_id = $1";
const SQLITE_JOB: &str = "SELECT status, attempts, error_type, last_error, judge_model, \
     input_tokens, output_tokens, cost_usd, updated_at FROM judge_jobs WHERE request_id = ?1";
const PG_SCORES_OF: &str = "SELECT criterion, score, rationale, judge_model, created_at \
     FROM judge_scores WHERE request_id = $1 ORDER BY criterion";
const SQLITE_SCORES_OF: &str = "SELECT criterion, score, rationale, judge_model, created_at \
     FROM judge_scores WHERE request_id = ?1 ORDER BY criterion";
const PG_FEEDBACK_OF: &str = "SELECT id, request_id, model_version, score, scale, rating, \
     comment, user_id, agreement, created_at FROM feedback WHERE request_id = $1 ORDER BY id";
const SQLITE_FEEDBACK_OF: &str = "SELECT id, request_id, model_version, score, scale, rating, \
     comment, user_id, agreement, created_at FROM feedback WHERE request_id = ?1 ORDER BY id";

/// The judge job of a record, if it was sampled.
pub async fn job(store: &Store, request_id: Uuid) -> Result<Option<JobRow>, StoreError> {
    macro_rules! decode {
        ($r:expr) => {
            JobRow {
                status: $r.try_get("status")?,
                attempts: $r.try_get("attempts")?,
                error_type: $r.try_get("error_type")?,
                last_error: $r.try_get("last_error")?,
                judge_model: $r.try_get("judge_model")?,
                input_tokens: $r.try_get("input_tokens")?,
                output_tokens: $r.try_get("output_tokens")?,
                cost_usd: $r.try_get("cost_usd")?,
                updated_at: $r.try_get("updated_at")?,
            }
        };
    }
    match store {
        Store::Postgres(pool) => {
            let row = sqlx::query(PG_JOB)
                .bind(request_id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| Ok(decode!(r))).transpose()
        }
        Store::Sqlite(pool) => {
            let row = sqlx::query(SQLITE_JOB)
                .bind(request_id.to_string())
                .fetch_optional(pool)
                .await?;
            row.map(|r| Ok(decode!(r))).transpose()
        }
    }
}

/// The judge scores of a record, by criterion.
pub async fn scores(store: &Store, request_id: Uuid) -> Result<Vec<ScoreRow>, StoreError> {
    macro_rules! decode {
        ($r:expr) => {
            ScoreRow {
                criterion: $r.try_get("criterion")?,
                score: $r.try_get("score")?,
                rationale: $r.try_get("rationale")?,
                judge_model: $r.try_get("judge_model")?,
                created_at: $r.try_get("created_at")?,
            }
        };
    }
    match store {
        Store::Postgres(pool) => {
            let rows = sqlx::query(PG_SCORES_OF)
                .bind(request_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| Ok(decode!(r))).collect()
        }
        Store::Sqlite(pool) => {
            let rows = sqlx::query(SQLITE_SCORES_OF)
                .bind(request_id.to_string())
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| Ok(decode!(r))).collect()
        }
    }
}

/// The human ratings of a record, oldest first.
pub async fn feedback_of(store: &Store, request_id: Uuid) -> Result<Vec<FeedbackRow>, StoreError> {
    macro_rules! decode {
        ($r:expr, $id:expr) => {
            FeedbackRow {
                id: $r.try_get("id")?,
                request_id: $id,
                model_version: $r.try_get("model_version")?,
                score: $r.try_get("score")?,
                scale: $r.try_get("scale")?,
                rating: $r.try_get("rating")?,
                comment: $r.try_get("comment")?,
                user_id: $r.try_get("user_id")?,
                agreement: $r.try_get("agreement")?,
                created_at: $r.try_get("created_at")?,
            }
        };
    }
    match store {
        Store::Postgres(pool) => {
            let rows = sqlx::query(PG_FEEDBACK_OF)
                .bind(request_id)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| Ok(decode!(r, r.try_get("request_id")?)))
                .collect()
        }
        Store::Sqlite(pool) => {
            let rows = sqlx::query(SQLITE_FEEDBACK_OF)
                .bind(request_id.to_string())
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| Ok(decode!(r, request_id))).collect()
        }
    }
}
