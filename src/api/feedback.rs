//! `POST /v1/feedback` (a human rating of a logged answer) and `GET /v1/feedback/agreement`
//! (how often the LLM judge agrees with those ratings, per model version). The rules live in
//! `eval::feedback`; this file parses and shapes.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ErrorBody};
use super::{time_param, AppState};
use crate::eval::feedback::{self, AgreementRow, FeedbackInput, Scale};
use crate::eval::FeedbackRow;

/// A rating of one answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// Which answer: the gateway's `request_id` (in the body of `/chat`, the `x-lqo-request-id`
    /// header of every model call, and `x-request-id` when the client sent none), or the
    /// client's own `x-request-id` when it sent one (its newest call, if it reused the id).
    #[schema(example = "0193f3a4-5b6c-7d8e-9f00-112233445566")]
    pub request_id: String,
    /// -1 (thumbs down) or 1 (thumbs up), or 1 to 5 stars. Without `scale`, -1 and 1 are
    /// thumbs and 2–5 stars; send `scale: "stars"` for a 1-star rating. 0 and anything else is
    /// a 400.
    #[schema(example = 1)]
    pub score: i64,
    /// `thumbs` or `stars`; optional, see `score`.
    #[serde(default)]
    pub scale: Option<Scale>,
    /// Free text, at most 4000 characters.
    #[serde(default)]
    pub comment: Option<String>,
    /// Who rated, at most 256 characters.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// How long an unknown `request_id` is looked up again: the answer's record reaches the
/// database a writer flush interval after the answer.
fn lookup_wait(state: &AppState) -> Duration {
    let flush = Duration::from_millis(state.config.writer.flush_interval_ms);
    (flush * 2 + Duration::from_millis(200)).min(Duration::from_secs(2))
}

/// Rates a logged answer. Ratings map to positive (thumbs up, 4–5 stars), neutral (3 stars) or
/// negative (thumbs down, 1–2 stars), are counted in `lqo_feedback_total`, and are compared with
/// the LLM judge's overall score once both exist. Send feedback after the answer arrived: its
/// record lands in the database a few milliseconds later (the gateway waits briefly for it).
#[utoipa::path(post, path = "/v1/feedback", tag = "feedback",
    request_body = FeedbackRequest,
    responses(
        (status = 201, description = "Stored; the rating as interpreted", body = FeedbackRow),
        (status = 400, description = "Malformed JSON, invalid score/scale or a field too long (named in `param`)", body = ErrorBody),
        (status = 404, description = "No logged request with that id", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub async fn submit_feedback(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<FeedbackRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let input = FeedbackInput {
        request_id: req.request_id,
        score: req.score,
        scale: req.scale,
        comment: req.comment,
        user_id: req.user_id,
    };
    let row = feedback::record(
        state.store.feedback.as_ref(),
        &state.metrics,
        &state.eval,
        input,
        lookup_wait(&state),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row)))
}

/// Query parameters of `GET /v1/feedback/agreement`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AgreementParams {
    /// Start of the window: RFC 3339, or a span back from now such as `24h` or `7d` (default 7d).
    pub since: Option<String>,
    /// End of the window (exclusive), same forms; default now.
    pub until: Option<String>,
    /// Only this model version.
    pub model_version: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgreementBody {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// One row per model version with feedback or judge scores in the window.
    pub data: Vec<AgreementRow>,
}

/// How often the LLM judge agrees with human ratings, per model version, for ratings given in
/// the window: a rating and the judge's overall score agree when both are positive (4–5 stars or
/// thumbs up vs a score of 4–5) or both negative; neutral on either side is not compared. Use it
/// to decide how far to trust the judge's scores for a model version.
#[utoipa::path(get, path = "/v1/feedback/agreement", tag = "feedback", params(AgreementParams),
    responses(
        (status = 200, description = "Agreement per model version", body = AgreementBody),
        (status = 400, description = "An invalid or unknown parameter (named in `param`)", body = ErrorBody),
        (status = 404, description = "Unknown model version", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub async fn agreement(
    State(state): State<AppState>,
    query: Result<Query<AgreementParams>, QueryRejection>,
) -> Result<Json<AgreementBody>, ApiError> {
    let Query(p) = query.map_err(|e| {
        ApiError::bad_request(format!("Invalid query string: {}", e.body_text()))
            .code("invalid_query")
    })?;
    let now = Utc::now();
    let since = time_param("since", p.since.as_deref())?.unwrap_or(now - chrono::Duration::days(7));
    let until = time_param("until", p.until.as_deref())?.unwrap_or(now);
    if since >= until {
        return Err(ApiError::bad_request("`since` must be before `until`.")
            .param("since")
            .code("invalid_value"));
    }
    if let Some(mv) = &p.model_version {
        if !state.config.models.contains_key(mv) {
            return Err(ApiError::not_found(format!(
                "The model version `{mv}` does not exist; GET /v1/models lists the configured ones."
            ))
            .param("model_version")
            .code("model_not_found"));
        }
    }
    let store = state.store.feedback.as_ref();
    let data = feedback::agreement_report(store, since, until, p.model_version.as_deref())
        .await
        .map_err(ApiError::from_store)?;
    Ok(Json(AgreementBody { since, until, data }))
}
