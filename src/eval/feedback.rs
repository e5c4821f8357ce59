//! Human feedback on logged answers, and how often the LLM judge agrees with it.
//!
//! A score is `-1`/`1` on the thumbs scale or `1`–`5` on the stars scale. Without an explicit
//! `scale`, -1 and 1 are thumbs and 2–5 are stars (so a 1-star rating must say `scale: stars`).
//! Ratings: thumbs up and 4–5 stars are positive, 3 stars neutral, thumbs down and 1–2 stars
//! negative. The judge's overall score maps the same way (4–5 positive, 3 neutral, 1–2
//! negative); a rating is compared with it once both exist — whichever arrives second settles it —
//! and only polar pairs count: same side → agree, opposite sides → disagree.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::db::{self, FeedbackRow, NewFeedback};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Longest accepted comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 4_000;
/// Longest accepted user id, in characters.
pub const MAX_USER_ID_CHARS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// -1 (thumbs down) or 1 (thumbs up).
    Thumbs,
    /// 1 to 5.
    Stars,
}

impl Scale {
    pub fn as_str(self) -> &'static str {
        match self {
            Scale::Thumbs => "thumbs",
            Scale::Stars => "stars",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Positive,
    Neutral,
    Negative,
}

impl Rating {
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Positive => "positive",
            Rating::Neutral => "neutral",
            Rating::Negative => "negative",
        }
    }

    fn parse(s: &str) -> Option<Rating> {
        match s {
            "positive" => Some(Rating::Positive),
            "neutral" => Some(Rating::Neutral),
            "negative" => Some(Rating::Negative),
            _ => None,
        }
    }

    /// What a judge's 1–5 score says, on the same terms as a star rating.
    pub fn of_judge_score(score: i16) -> Rating {
        match score {
            4.. => Rating::Positive,
            3 => Rating::Neutral,
            _ => Rating::Negative,
        }
    }
}

/// Whether a human rating and the judge's overall score say the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    Agree,
    Disagree,
    /// One side is neutral: nothing to compare.
    NotComparable,
}

impl Agreement {
    pub fn between(judge_overall: i16, human: Rating) -> Agreement {
        match (Rating::of_judge_score(judge_overall), human) {
            (Rating::Neutral, _) | (_, Rating::Neutral) => Agreement::NotComparable,
            (j, h) if j == h => Agreement::Agree,
            _ => Agreement::Disagree,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Agreement::Agree => "agree",
            Agreement::Disagree => "disagree",
            Agreement::NotComparable => "not_comparable",
        }
    }
}

/// Why feedback was refused.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    #[error("no logged request has id {0}")]
    UnknownRequest(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(param: &'static str, message: impl Into<String>) -> FeedbackError {
    FeedbackError::Invalid {
        param,
        message: message.into(),
    }
}

/// The scale a score is on and the rating it means; `Err` for anything outside the definition.
pub fn interpret(score: i64, scale: Option<Scale>) -> Result<(Scale, Rating), FeedbackError> {
    let scale = match (scale, score) {
        (Some(s), _) => s,
        (None, -1 | 1) => Scale::Thumbs,
        (None, 2..=5) => Scale::Stars,
        (None, _) => {
            return Err(invalid(
                "score",
                format!("`score` must be -1 or 1 (thumbs) or 1 to 5 (stars); got {score}."),
            ))
        }
    };
    let rating = match (scale, score) {
        (Scale::Thumbs, 1) => Rating::Positive,
        (Scale::Thumbs, -1) => Rating::Negative,
        (Scale::Thumbs, _) => {
            return Err(invalid(
                "score",
                format!("On the thumbs scale `score` must be -1 or 1; got {score}."),
            ))
        }
        (Scale::Stars, 4 | 5) => Rating::Positive,
        (Scale::Stars, 3) => Rating::Neutral,
        (Scale::Stars, 1 | 2) => Rating::Negative,
        (Scale::Stars, _) => {
            return Err(invalid(
                "score",
                format!("On the stars scale `score` must be 1 to 5; got {score}."),
            ))
        }
    };
    Ok((scale, rating))
}

/// A rating as the API received it.
#[derive(Debug, Clone)]
pub struct FeedbackInput {
    pub request_id: Uuid,
    pub score: i64,
    pub scale: Option<Scale>,
    pub comment: Option<String>,
    pub user_id: Option<String>,
}

/// Checks and stores a rating, counts it, and settles its agreement with the judge if the record
/// is already judged. The record may still be on its way to the database (the writer batches
/// for `writer.flush_interval_ms`), so an unknown id is looked up again for up to `wait`.
pub async fn record(
    store: &Store,
    metrics: &Metrics,
    cfg: &Config,
    input: FeedbackInput,
    wait: Duration,
) -> Result<FeedbackRow, FeedbackError> {
    let (scale, rating) = interpret(input.score, input.scale)?;
    let comment = input.comment.filter(|c| !c.trim().is_empty());
    if let Some(c) = &comment {
        if c.chars().count() > MAX_COMMENT_CHARS {
            return Err(invalid(
                "comment",
                format!("`comment` may have at most {MAX_COMMENT_CHARS} characters."),
            ));
        }
    }
    let user_id = input.user_id.filter(|u| !u.trim().is_empty());
    if let Some(u) = &user_id {
        if u.chars().count() > MAX_USER_ID_CHARS {
            return Err(invalid(
                "user_id",
                format!("`user_id` may have at most {MAX_USER_ID_CHARS} characters."),
            ));
        }
    }
    let model_version = lookup_with_wait(store, input.request_id, wait)
        .await?
        .ok_or(FeedbackError::UnknownRequest(input.request_id))?;
    let new = NewFeedback {
        request_id: input.request_id,
        model_version: model_version.clone(),
        score: input.score as i16,
        scale: scale.as_str(),
        rating: rating.as_str(),
        comment,
        user_id,
    };
    let (id, created_at) = db::insert_feedback(store, &new).await?;
    if cfg.models.contains_key(&model_version) {
        metrics
            .feedback
            .with_label_values(&[&model_version, rating.as_str()])
            .inc();
    }
    let agreement = match settle_agreement(store, metrics, cfg, input.request_id, &model_version)
        .await
    {
        Ok(()) => db::feedback_of(store, input.request_id)
            .await?
            .into_iter()
            .find(|f| f.id == id)
            .and_then(|f| f.agreement),
        Err(e) => {
            // The rating is stored; the judge path settles it later if this failed.
            tracing::warn!(request_id = %input.request_id, error = %e, "could not compare feedback with the judge");
            None
        }
    };
    Ok(FeedbackRow {
        id,
        request_id: input.request_id,
        model_version,
        score: new.score,
        scale: new.scale.to_string(),
        rating: new.rating.to_string(),
        comment: new.comment,
        user_id: new.user_id,
        agreement,
        created_at,
    })
}

async fn lookup_with_wait(
    store: &Store,
    request_id: Uuid,
    wait: Duration,
) -> Result<Option<String>, StoreError> {
    // No signal says "this record was written", so poll briefly with a deadline.
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(v) = db::log_model_version(store, request_id).await? {
            return Ok(Some(v));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50).min(deadline - now)).await;
    }
}

/// Compares a judged record's unsettled ratings with its overall score, once each: the first
/// process to record a rating's agreement counts it. Called after a rating is stored and after
/// the judge stores scores, so whichever comes second settles it.
pub async fn settle_agreement(
    store: &Store,
    metrics: &Metrics,
    cfg: &Config,
    request_id: Uuid,
    model_version: &str,
) -> Result<(), StoreError> {
    let Some(overall) = db::overall_score(store, request_id).await? else {
        return Ok(());
    };
    for (id, rating) in db::unsettled_feedback(store, request_id).await? {
        let Some(rating) = Rating::parse(&rating) else {
            continue;
        };
        let agreement = Agreement::between(overall, rating);
        if db::settle(store, id, agreement.as_str()).await?
            && agreement != Agreement::NotComparable
            && cfg.models.contains_key(model_version)
        {
            metrics
                .judge_human_agreement
                .with_label_values(&[model_version, agreement.as_str()])
                .inc();
        }
    }
    Ok(())
}

/// Judge–human agreement of one model version over a window.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AgreementRow {
    pub model_version: String,
    /// Ratings received in the window.
    pub feedback: i64,
    pub positive: i64,
    pub neutral: i64,
    pub negative: i64,
    /// Records whose overall judge score was stored in the window.
    pub judged: i64,
    /// Mean overall judge score of those records.
    pub mean_judge_score: Option<f64>,
    /// Ratings compared with a judge score (both sides polar).
    pub compared: i64,
    pub agree: i64,
    pub disagree: i64,
    /// Ratings of judged records where one side was neutral.
    pub not_comparable: i64,
    /// agree / compared; null when nothing was compared.
    pub agreement_rate: Option<f64>,
}

/// Agreement per model version for feedback given in `[since, until)`.
pub async fn agreement_report(
    store: &Store,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    model_version: Option<&str>,
) -> Result<Vec<AgreementRow>, StoreError> {
    use std::collections::BTreeMap;
    let mut rows: BTreeMap<String, AgreementRow> = BTreeMap::new();
    for c in db::feedback_counts(store, since, until, model_version).await? {
        let row = row_for(&mut rows, &c.model_version);
        row.feedback += c.count;
        match c.rating.as_str() {
            "positive" => row.positive += c.count,
            "neutral" => row.neutral += c.count,
            _ => row.negative += c.count,
        }
        match c.agreement.as_deref() {
            Some("agree") => row.agree += c.count,
            Some("disagree") => row.disagree += c.count,
            Some("not_comparable") => row.not_comparable += c.count,
            _ => {}
        }
    }
    for j in db::judged_counts(store, since, until, model_version).await? {
        let row = row_for(&mut rows, &j.model_version);
        row.judged = j.judged;
        row.mean_judge_score = j.mean_overall.map(|m| (m * 100.0).round() / 100.0);
    }
    Ok(rows
        .into_values()
        .map(|mut r| {
            r.compared = r.agree + r.disagree;
            r.agreement_rate =
                (r.compared > 0).then(|| (r.agree as f64 / r.compared as f64 * 1e4).round() / 1e4);
            r
        })
        .collect())
}

fn row_for<'a>(
    rows: &'a mut std::collections::BTreeMap<String, AgreementRow>,
    mv: &str,
) -> &'a mut AgreementRow {
    rows.entry(mv.to_string()).or_insert_with(|| AgreementRow {
        model_version: mv.to_string(),
        feedback: 0,
        positive: 0,
        neutral: 0,
        negative: 0,
        judged: 0,
        mean_judge_score: None,
        compared: 0,
        agree: 0,
        disagree: 0,
        not_comparable: 0,
        agreement_rate: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_map_to_scales_and_ratings_as_documented() {
        let ok = |score, scale| interpret(score, scale).unwrap();
        assert_eq!(ok(1, None), (Scale::Thumbs, Rating::Positive));
        assert_eq!(ok(-1, None), (Scale::Thumbs, Rating::Negative));
        assert_eq!(ok(2, None), (Scale::Stars, Rating::Negative));
        assert_eq!(ok(3, None), (Scale::Stars, Rating::Neutral));
        assert_eq!(ok(4, None), (Scale::Stars, Rating::Positive));
        assert_eq!(ok(5, None), (Scale::Stars, Rating::Positive));
        assert_eq!(ok(1, Some(Scale::Stars)), (Scale::Stars, Rating::Negative));
        assert_eq!(
            ok(1, Some(Scale::Thumbs)),
            (Scale::Thumbs, Rating::Positive)
        );
        for (score, scale) in [
            (0, None),
            (6, None),
            (-2, None),
            (i64::MAX, None),
            (i64::MIN, None),
            (0, Some(Scale::Stars)),
            (-1, Some(Scale::Stars)),
            (6, Some(Scale::Stars)),
            (0, Some(Scale::Thumbs)),
            (3, Some(Scale::Thumbs)),
        ] {
            let err = interpret(score, scale).unwrap_err();
            assert!(
                matches!(err, FeedbackError::Invalid { param: "score", .. }),
                "{score} {scale:?}: {err:?}"
            );
        }
    }

    #[test]
    fn only_polar_pairs_are_compared() {
        use Agreement::*;
        assert_eq!(Agreement::between(5, Rating::Positive), Agree);
        assert_eq!(Agreement::between(4, Rating::Positive), Agree);
        assert_eq!(Agreement::between(1, Rating::Negative), Agree);
        assert_eq!(Agreement::between(2, Rating::Negative), Agree);
        assert_eq!(Agreement::between(5, Rating::Negative), Disagree);
        assert_eq!(Agreement::between(2, Rating::Positive), Disagree);
        assert_eq!(Agreement::between(3, Rating::Positive), NotComparable);
        assert_eq!(Agreement::between(3, Rating::Negative), NotComparable);
        assert_eq!(Agreement::between(5, Rating::Neutral), NotComparable);
    }
}
