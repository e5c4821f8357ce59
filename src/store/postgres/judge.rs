//! The judge queue on PostgreSQL: `FOR UPDATE SKIP LOCKED` claims, the server's clock, scores
//! inserted with one `UNNEST`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::PgStore;
use crate::store::codec::{job_from_row, score_from_row};
use crate::store::judge::{
    no_nul, secs, Candidate, CandidateScan, ClaimedJob, JobRow, JudgeJobs, JudgeMaterial, NewJob,
    NewScore, Outcome, ScoreRow, Spend,
};
use crate::store::record::{decode_word, LogStatus};
use crate::store::{sql, StoreError};

const ENQUEUE: &str = "INSERT INTO judge_jobs (request_id, model_version) \
     SELECT * FROM UNNEST($1::uuid[], $2::text[]) ON CONFLICT (request_id) DO NOTHING";
/// Claimable: pending and due, or running under a lease that ran out (its worker died).
/// `$4` limits a backfill to the jobs that existed when it started.
const CLAIM: &str = "UPDATE judge_jobs SET status = 'running', claimed_at = now(), \
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
const DEFER: &str = "UPDATE judge_jobs SET status = 'pending', \
     available_at = now() + make_interval(secs => $3), claimed_at = NULL, claim_id = NULL, \
     attempts = $4, error_type = $5, last_error = $6, judge_model = COALESCE($7, judge_model), \
     input_tokens = input_tokens + $8, output_tokens = output_tokens + $9, \
     cost_usd = cost_usd + $10, updated_at = now() \
     WHERE request_id = $1 AND claim_id = $2";
const FAIL: &str = "UPDATE judge_jobs SET status = 'error', attempts = $3, error_type = $4, \
     last_error = $5, judge_model = COALESCE($6, judge_model), \
     input_tokens = input_tokens + $7, output_tokens = output_tokens + $8, \
     cost_usd = cost_usd + $9, claim_id = NULL, updated_at = now() \
     WHERE request_id = $1 AND claim_id = $2";
const DONE: &str = "UPDATE judge_jobs SET status = 'done', attempts = $3, error_type = NULL, \
     last_error = NULL, judge_model = $4, input_tokens = input_tokens + $5, \
     output_tokens = output_tokens + $6, cost_usd = cost_usd + $7, claim_id = NULL, \
     updated_at = now() WHERE request_id = $1 AND claim_id = $2";
const SCORES: &str = "INSERT INTO judge_scores \
     (request_id, criterion, score, rationale, judge_model, model_version) \
     SELECT $1, u.criterion, u.score, u.rationale, $5, $6 \
     FROM UNNEST($2::text[], $3::int2[], $4::text[]) AS u(criterion, score, rationale) \
     ON CONFLICT (request_id, criterion) DO NOTHING";
const RELEASE: &str = "UPDATE judge_jobs SET status = 'pending', available_at = now(), \
     claimed_at = NULL, claim_id = NULL, attempts = GREATEST(attempts - 1, 0), updated_at = now() \
     WHERE request_id = $1 AND claim_id = $2";
const RETRY_ERRORS: &str = "UPDATE judge_jobs SET status = 'pending', attempts = 0, \
     available_at = now(), error_type = NULL, last_error = NULL, created_at = now(), \
     updated_at = now() \
     WHERE status = 'error' AND ($3::text IS NULL OR model_version = $3) AND request_id IN ( \
       SELECT request_id FROM llm_logs WHERE created_at >= $1 AND created_at < $2)";

#[async_trait]
impl JudgeJobs for PgStore {
    async fn enqueue(&self, jobs: &[NewJob]) -> Result<u64, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.request_id).collect();
        let versions: Vec<&str> = jobs.iter().map(|j| j.model_version.as_str()).collect();
        let r = sqlx::query(ENQUEUE)
            .bind(ids)
            .bind(versions)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        created_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let rows = sqlx::query(CLAIM)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(secs(lease))
            .bind(Uuid::new_v4())
            .bind(created_before)
            .fetch_all(&self.pool)
            .await?;
        let mut jobs = rows
            .iter()
            .map(|r| {
                Ok(ClaimedJob {
                    request_id: r.try_get("request_id")?,
                    model_version: r.try_get("model_version")?,
                    attempts: r.try_get("attempts")?,
                    claim_id: r.try_get("claim_id")?,
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
            .bind(request_id)
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
        let n = sqlx::query(DEFER)
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
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn fail(&self, job: &ClaimedJob, o: &Outcome<'_>) -> Result<bool, StoreError> {
        let n = sqlx::query(FAIL)
            .bind(job.request_id)
            .bind(job.claim_id)
            .bind(o.attempts)
            .bind(o.error_type)
            .bind(o.last_error)
            .bind(o.judge_model)
            .bind(o.spend.input_tokens)
            .bind(o.spend.output_tokens)
            .bind(o.spend.cost_usd)
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
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(DONE)
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
            .map(|s| no_nul(s.rationale.as_deref()))
            .collect();
        sqlx::query(SCORES)
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

    async fn release(&self, job: &ClaimedJob) -> Result<bool, StoreError> {
        let n = sqlx::query(RELEASE)
            .bind(job.request_id)
            .bind(job.claim_id)
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
        Ok(sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await?)
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
            .bind(after_id)
            .bind(i64::try_from(scan.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
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
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn job(&self, request_id: Uuid) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(sql::JOB_OF)
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_from_row(&r, request_id)).transpose()
    }

    async fn scores(&self, request_id: Uuid) -> Result<Vec<ScoreRow>, StoreError> {
        let rows = sqlx::query(sql::SCORES_OF)
            .bind(request_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(score_from_row).collect()
    }
}
