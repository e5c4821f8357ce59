//! The human-feedback concern (`feedback`) and what agreement with the judge reads: a record's
//! model version, its overall judge score, and the counts behind the agreement report.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::record::{Agreement, Rating, Scale};
use super::StoreError;

#[async_trait]
pub trait FeedbackStore: Send + Sync {
    /// The model version of a stored record (the row `LogStore::get_log` returns), or None when
    /// there is no such record (yet).
    async fn logged_model_version(&self, request_id: Uuid) -> Result<Option<String>, StoreError>;

    /// The gateway's id and the model version of the newest record whose client sent this
    /// `x-request-id`, or None.
    async fn client_logged_model_version(
        &self,
        client_request_id: &str,
    ) -> Result<Option<(Uuid, String)>, StoreError>;

    /// Stores a rating, replacing the one the same rater (`user_id`, or the anonymous rater
    /// without one) gave the same answer, whose comparison with the judge then starts over;
    /// returns its id and time.
    async fn insert_feedback(&self, f: &NewFeedback) -> Result<(i64, DateTime<Utc>), StoreError>;

    /// The judge's overall score of a record, if it has one.
    async fn overall_score(&self, request_id: Uuid) -> Result<Option<i16>, StoreError>;

    /// Ratings of a record not yet compared with the judge: (feedback id, rating), oldest first.
    async fn unsettled_feedback(&self, request_id: Uuid) -> Result<Vec<(i64, Rating)>, StoreError>;

    /// Records the agreement of one rating, once: false when another process did it first.
    async fn settle(&self, feedback_id: i64, agreement: Agreement) -> Result<bool, StoreError>;

    /// Marks an answer's agreement as counted in the metric: true for the first caller only.
    async fn claim_agreement_count(&self, request_id: Uuid) -> Result<bool, StoreError>;

    /// Compared answers by model version and verdict (each answer once, the majority of its
    /// ratings), for ratings given in the window.
    async fn answer_agreements(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<Vec<AnswerAgreements>, StoreError>;

    /// Feedback counts by model version and rating for feedback given in the window.
    async fn feedback_counts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<Vec<FeedbackCount>, StoreError>;

    /// Records judged (overall score stored) in the window, with their mean overall score.
    async fn judged_counts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<Vec<JudgedCount>, StoreError>;

    /// The human ratings of a record, oldest first.
    async fn feedback_of(&self, request_id: Uuid) -> Result<Vec<FeedbackRow>, StoreError>;
}

/// One stored human rating.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FeedbackRow {
    pub id: i64,
    pub request_id: Uuid,
    pub model_version: String,
    pub score: i16,
    pub scale: Scale,
    pub rating: Rating,
    pub comment: Option<String>,
    pub user_id: Option<String>,
    /// Set once the judge's overall score exists; null before.
    pub agreement: Option<Agreement>,
    pub created_at: DateTime<Utc>,
}

/// A human rating to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFeedback {
    pub request_id: Uuid,
    pub model_version: String,
    pub score: i16,
    pub scale: Scale,
    pub rating: Rating,
    pub comment: Option<String>,
    pub user_id: Option<String>,
}

/// Counts for the agreement report: feedback by (model_version, rating).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackCount {
    pub model_version: String,
    pub rating: Rating,
    pub count: i64,
}

/// Compared answers of one model version with one verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerAgreements {
    pub model_version: String,
    pub agreement: Agreement,
    pub answers: i64,
}

/// Judged records and their mean overall score per model version.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgedCount {
    pub model_version: String,
    pub judged: i64,
    pub mean_overall: Option<f64>,
}
