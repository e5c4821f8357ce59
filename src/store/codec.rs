//! Row decoders shared by both backends, for rows whose columns decode the same way on each
//! (text, integers, floats, timestamps). Rows holding a uuid or JSON decode per backend
//! (`postgres/`, `sqlite/`): those are native types on PostgreSQL and text on SQLite.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use super::feedback::{AnswerAgreements, FeedbackCount, FeedbackRow, JudgedCount};
use super::judge::{JobRow, ScoreRow};
use super::keys::{split_scopes, StoredKey};
use super::record::{decode_word, Agreement, JobStatus, Rating, Scale};
use super::StoreError;

/// A text column holding one of an enum's stored words (`endpoint`, `status`, …).
pub(crate) fn word_column<R, T>(
    row: &R,
    column: &str,
    parse: fn(&str) -> Option<T>,
    id: impl std::fmt::Display,
) -> Result<T, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'a> String: Decode<'a, R::Database> + Type<R::Database>,
{
    let text: String = row.try_get(column)?;
    decode_word(parse, &text, column, id)
}

/// A nullable text column holding one of an enum's stored words.
pub(crate) fn opt_word_column<R, T>(
    row: &R,
    column: &str,
    parse: fn(&str) -> Option<T>,
    id: impl std::fmt::Display,
) -> Result<Option<T>, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'a> String: Decode<'a, R::Database> + Type<R::Database>,
{
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| decode_word(parse, &t, column, id)).transpose()
}

/// `judge_jobs` columns of the evaluation view.
pub(crate) fn job_from_row<R>(r: &R, request_id: Uuid) -> Result<JobRow, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'a> String: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> i32: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> i64: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> f64: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> DateTime<Utc>: Decode<'a, R::Database> + Type<R::Database>,
{
    let status: String = r.try_get("status")?;
    Ok(JobRow {
        status: decode_word(JobStatus::parse, &status, "judge_jobs.status", request_id)?,
        attempts: r.try_get("attempts")?,
        error_type: r.try_get("error_type")?,
        last_error: r.try_get("last_error")?,
        judge_model: r.try_get("judge_model")?,
        input_tokens: r.try_get("input_tokens")?,
        output_tokens: r.try_get("output_tokens")?,
        cost_usd: r.try_get("cost_usd")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// One `judge_scores` row.
pub(crate) fn score_from_row<R>(r: &R) -> Result<ScoreRow, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'a> String: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> i16: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> DateTime<Utc>: Decode<'a, R::Database> + Type<R::Database>,
{
    Ok(ScoreRow {
        criterion: r.try_get("criterion")?,
        score: r.try_get("score")?,
        rationale: r.try_get("rationale")?,
        judge_model: r.try_get("judge_model")?,
        created_at: r.try_get("created_at")?,
    })
}

/// One `api_keys` row (scopes are one comma-separated text column on both backends).
pub(crate) fn key_from_row<R>(row: &R) -> Result<StoredKey, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'a> String: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> DateTime<Utc>: Decode<'a, R::Database> + Type<R::Database>,
{
    let scopes: String = row.try_get("scopes")?;
    Ok(StoredKey {
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        key_hash: row.try_get("key_hash")?,
        scopes: split_scopes(&scopes),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

/// One `feedback` row of a record (`request_id` is the one asked for: it is a uuid on PostgreSQL
/// and text on SQLite).
pub(crate) fn feedback_from_row<R>(r: &R, request_id: Uuid) -> Result<FeedbackRow, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'a> String: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> i16: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> i64: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> DateTime<Utc>: Decode<'a, R::Database> + Type<R::Database>,
{
    let id: i64 = r.try_get("id")?;
    let scale: String = r.try_get("scale")?;
    let rating: String = r.try_get("rating")?;
    let agreement: Option<String> = r.try_get("agreement")?;
    Ok(FeedbackRow {
        id,
        request_id,
        model_version: r.try_get("model_version")?,
        score: r.try_get("score")?,
        scale: decode_word(Scale::parse, &scale, "feedback.scale", id)?,
        rating: decode_word(Rating::parse, &rating, "feedback.rating", id)?,
        comment: r.try_get("comment")?,
        user_id: r.try_get("user_id")?,
        agreement: agreement
            .map(|a| decode_word(Agreement::parse, &a, "feedback.agreement", id))
            .transpose()?,
        created_at: r.try_get("created_at")?,
    })
}

/// A `(model_version, rating, count)` row of the agreement report.
pub(crate) fn feedback_count(
    (model_version, rating, count): (String, String, i64),
) -> Result<FeedbackCount, StoreError> {
    Ok(FeedbackCount {
        rating: decode_word(Rating::parse, &rating, "feedback.rating", &model_version)?,
        model_version,
        count,
    })
}

/// A `(model_version, verdict, answers)` row of the agreement report.
pub(crate) fn answer_agreements(
    (model_version, verdict, answers): (String, String, i64),
) -> Result<AnswerAgreements, StoreError> {
    Ok(AnswerAgreements {
        agreement: decode_word(
            Agreement::parse,
            &verdict,
            "feedback.agreement",
            &model_version,
        )?,
        model_version,
        answers,
    })
}

/// A `(model_version, judged, mean overall score)` row of the agreement report.
pub(crate) fn judged_count(
    (model_version, judged, mean_overall): (String, i64, Option<f64>),
) -> JudgedCount {
    JudgedCount {
        model_version,
        judged,
        mean_overall,
    }
}

/// `(id, rating)` of a rating not yet compared with the judge.
pub(crate) fn unsettled((id, rating): (i64, String)) -> Result<(i64, Rating), StoreError> {
    Ok((
        id,
        decode_word(Rating::parse, &rating, "feedback.rating", id)?,
    ))
}
