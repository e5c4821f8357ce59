//! The judge queue on SQLite: claims and completions inside `BEGIN IMMEDIATE` (one writer), this
//! process's clock.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{parse_uuid, SqliteStore};
use crate::store::codec::{job_from_row, score_from_row};
use crate::store::judge::{
    chrono_dur, Candidate, CandidateScan, ClaimedJob, JobRow, JudgeJobs, JudgeMaterial, NewJob,
    NewScore, Outcome, ScoreRow, Spend,
};
use crate::store::record::{decode_word, LogStatus};
use crate::store::{sql, StoreError};

const ENQUEUE: &str = "INSERT INTO judge_jobs \
     (request_id, model_version, available_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $3, $3) ON CONFLICT (request_id) DO NOTHING";
/// Claimable: pending and due, or running under a lease that ran out (its worker died).
/// `$5` limits a backfill to the jobs that existed when it started.
const CLAIM: &str = "UPDATE judge_jobs SET status = 'running', claimed_at = $2, \
     claim_id = $3, attempts = attempts + 1, updated_at = $2 \
     WHERE request_id IN ( \
       SELECT request_id FROM judge_jobs \
       WHERE status IN ('pending', 'running') \
         AND ((status = 'pending' AND available_at <= $2) \
              OR (status = 'running' AND claimed_at < $4)) \
         AND ($5 IS NULL OR created_at <= $5) \
       ORDER BY created_at \
       LIMIT $1) \
     RETURNING request_id, model_version, attempts, claim_id, created_at";
const DEFER: &str = "UPDATE judge_jobs SET status = 'pending', \
     available_at = $3, claimed_at = NULL, claim_id = NULL, \
     attempts = $4, error_type = $5, last_error = $6, judge_model = COALESCE($7, judge_model), \
     input_tokens = input_tokens + $8, output_tokens = output_tokens + $9, \
     cost_usd = cost_usd + $10, updated_at = $11 \
     WHERE request_id = $1 AND claim_id = $2";
const FAIL: &str = "UPDATE judge_jobs SET status = 'error', attempts = $3, error_type = $4, \
     last_error = $5, judge_model = COALESCE($6, judge_model), \
     input_tokens = input_tokens + $7, output_tokens = output_tokens + $8, \
     cost_usd = cost_usd + $9, claim_id = NULL, updated_at = $10 \
     WHERE request_id = $1 AND claim_id = $2";
const DONE: &str = "UPDATE judge_jobs SET status = 'done', attempts = $3, error_type = NULL, \
     last_error = NULL, judge_model = $4, input_tokens = input_tokens + $5, \
     output_tokens = output_tokens + $6, cost_usd = cost_usd + $7, claim_id = NULL, \
     updated_at = $8 WHERE request_id = $1 AND claim_id = $2";
const SCORE: &str = "INSERT INTO judge_scores \
     (request_id, criterion, score, rationale, judge_model, model_version, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (request_id, criterion) DO NOTHING";
const RELEASE: &str = "UPDATE judge_jobs SET status = 'pending', available_at = $3, \
     claimed_at = NULL, claim_id = NULL, attempts = MAX(attempts - 1, 0), updated_at = $3 \
     WHERE request_id = $1 AND claim_id = $2";
const RETRY_ERRORS: &str = "UPDATE judge_jobs SET status = 'pending', attempts = 0, \
     available_at = $4, error_type = NULL, last_error = NULL, created_at = $4, updated_at = $4 \
     WHERE status = 'error' AND ($3 IS NULL OR model_version = $3) AND request_id IN ( \
       SELECT request_id FROM llm_logs WHERE created_at >= $1 AND created_at < $2)";

#[async_trait]
impl JudgeJobs for SqliteStore {
    async fn enqueue(&self, jobs: &[NewJob]) -> Result<u64, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let now = Utc::now();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut n = 0;
        for j in jobs {
            n += sqlx::query(ENQUEUE)
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

    async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        created_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let now = Utc::now();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(CLAIM)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(now)
            .bind(Uuid::new_v4().to_string())
            .bind(now - chrono_dur(lease))
            .bind(created_before)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut jobs = rows
            .iter()
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
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING does not keep the subquery's order.
        jobs.sort_by_key(|j| j.created_at);
        Ok(jobs)
    }

    async fn material(&self, request_id: Uuid) -> Result<Option<JudgeMaterial>, StoreError> {
        let row = sqlx::query(sql::JUDGE_MATERIAL)
            .bind(request_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let status: String = r.try_get("status")?;
            Ok(JudgeMaterial {
                prompt: r.try_get("prompt")?,
                response: r.try_get("response")?,
                status: decode_word(LogStatus::parse, &status, "llm_logs.status", request_id)?,
                model_version: r.try_get("model_version")?,
            })
        })
        .transpose()
    }

    async fn defer(
        &self,
        job: &ClaimedJob,
        delay: Duration,
        o: &Outcome<'_>,
    ) -> Result<bool, StoreError> {
        let now = Utc::now();
        let n = sqlx::query(DEFER)
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
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn fail(&self, job: &ClaimedJob, o: &Outcome<'_>) -> Result<bool, StoreError> {
        let n = sqlx::query(FAIL)
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
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn complete(
        &self,
        job: &ClaimedJob,
        attempts: i32,
        judge_model: &str,
        spend: Spend,
        scores: &[NewScore],
    ) -> Result<bool, StoreError> {
        let now = Utc::now();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let n = sqlx::query(DONE)
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
            sqlx::query(SCORE)
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

    async fn release(&self, job: &ClaimedJob) -> Result<bool, StoreError> {
        let n = sqlx::query(RELEASE)
            .bind(job.request_id.to_string())
            .bind(job.claim_id.to_string())
            .bind(Utc::now())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn open_jobs(&self, created_before: Option<DateTime<Utc>>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql::OPEN_JOBS)
            .bind(created_before)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(Utc::now())
    }

    async fn candidates(&self, scan: &CandidateScan) -> Result<Vec<Candidate>, StoreError> {
        let (after_at, after_id) = match scan.after {
            Some((t, id)) => (Some(t), id),
            None => (None, Uuid::nil()),
        };
        let rows = sqlx::query(sql::CANDIDATES)
            .bind(scan.since)
            .bind(scan.until)
            .bind(scan.model_version.as_deref())
            .bind(after_at)
            .bind(after_id.to_string())
            .bind(i64::try_from(scan.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
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

    async fn retry_errors(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(RETRY_ERRORS)
            .bind(since)
            .bind(until)
            .bind(model_version)
            .bind(Utc::now())
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn job(&self, request_id: Uuid) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(sql::JOB_OF)
            .bind(request_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r, request_id)).transpose()
    }

    async fn scores(&self, request_id: Uuid) -> Result<Vec<ScoreRow>, StoreError> {
        let rows = sqlx::query(sql::SCORES_OF)
            .bind(request_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(score_from_row).collect()
    }
}
