//! Human feedback and agreement counts on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::PgStore;
use crate::store::codec::{
    answer_agreements, feedback_count, feedback_from_row, judged_count, unsettled,
};
use crate::store::feedback::{
    AnswerAgreements, FeedbackCount, FeedbackRow, FeedbackStore, JudgedCount, NewFeedback,
};
use crate::store::judge::no_nul;
use crate::store::record::{Agreement, Rating};
use crate::store::{sql, StoreError};

/// One rating per answer and rater: a new one replaces the old and is compared again.
const INSERT_FEEDBACK: &str = "INSERT INTO feedback \
     (request_id, model_version, score, scale, rating, comment, user_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (request_id, (COALESCE(user_id, ''))) DO UPDATE SET \
       model_version = EXCLUDED.model_version, score = EXCLUDED.score, scale = EXCLUDED.scale, \
       rating = EXCLUDED.rating, comment = EXCLUDED.comment, agreement = NULL, created_at = now() \
     RETURNING id, created_at";
/// AVG of a smallint is numeric on PostgreSQL; float8 decodes as f64.
const JUDGED_COUNTS: &str = "SELECT model_version, COUNT(*) AS n, \
     AVG(score)::float8 AS mean FROM judge_scores \
     WHERE criterion = 'overall' AND created_at >= $1 AND created_at < $2 \
       AND ($3::text IS NULL OR model_version = $3) \
     GROUP BY model_version ORDER BY model_version";

#[async_trait]
impl FeedbackStore for PgStore {
    async fn logged_model_version(&self, request_id: Uuid) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(sql::LOG_MODEL_VERSION)
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn client_logged_model_version(
        &self,
        client_request_id: &str,
    ) -> Result<Option<(Uuid, String)>, StoreError> {
        Ok(sqlx::query_as(sql::CLIENT_LOG_MODEL_VERSION)
            .bind(client_request_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn insert_feedback(&self, f: &NewFeedback) -> Result<(i64, DateTime<Utc>), StoreError> {
        let row = sqlx::query(INSERT_FEEDBACK)
            .bind(f.request_id)
            .bind(&f.model_version)
            .bind(f.score)
            .bind(f.scale.as_str())
            .bind(f.rating.as_str())
            .bind(no_nul(f.comment.as_deref()))
            .bind(no_nul(f.user_id.as_deref()))
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("id")?, row.try_get("created_at")?))
    }

    async fn overall_score(&self, request_id: Uuid) -> Result<Option<i16>, StoreError> {
        Ok(sqlx::query_scalar(sql::OVERALL_SCORE)
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn unsettled_feedback(&self, request_id: Uuid) -> Result<Vec<(i64, Rating)>, StoreError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(sql::UNSETTLED_FEEDBACK)
            .bind(request_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(unsettled).collect()
    }

    async fn settle(&self, feedback_id: i64, agreement: Agreement) -> Result<bool, StoreError> {
        let n = sqlx::query(sql::SETTLE)
            .bind(feedback_id)
            .bind(agreement.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn claim_agreement_count(&self, request_id: Uuid) -> Result<bool, StoreError> {
        let n = sqlx::query(sql::CLAIM_AGREEMENT_COUNT)
            .bind(request_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn answer_agreements(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<Vec<AnswerAgreements>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(sql::ANSWER_AGREEMENTS)
            .bind(since)
            .bind(until)
            .bind(model_version)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(answer_agreements).collect()
    }

    async fn feedback_counts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<Vec<FeedbackCount>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(sql::FEEDBACK_COUNTS)
            .bind(since)
            .bind(until)
            .bind(model_version)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(feedback_count).collect()
    }

    async fn judged_counts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<Vec<JudgedCount>, StoreError> {
        let rows: Vec<(String, i64, Option<f64>)> = sqlx::query_as(JUDGED_COUNTS)
            .bind(since)
            .bind(until)
            .bind(model_version)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(judged_count).collect())
    }

    async fn feedback_of(&self, request_id: Uuid) -> Result<Vec<FeedbackRow>, StoreError> {
        let rows = sqlx::query(sql::FEEDBACK_OF)
            .bind(request_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| feedback_from_row(r, request_id))
            .collect()
    }
}
