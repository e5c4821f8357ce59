//! Human feedback on logged answers, and how often the LLM judge agrees with it.
//!
//! A score is `-1`/`1` on the thumbs scale or `1`–`5` on the stars scale. Without an explicit
//! `scale`, -1 and 1 are thumbs and 2–5 are stars (so a 1-star rating must say `scale: stars`).
//! Ratings: thumbs up and 4–5 stars are positive, 3 stars neutral, thumbs down and 1–2 stars
//! negative. The judge's overall score maps the same way (4–5 positive, 3 neutral, 1–2
//! negative); a rating is compared with it once both exist — whichever arrives second settles it —
//! and only polar pairs count: same side → agree, opposite sides → disagree. One rating per answer
//! and rater (`user_id`, or the anonymous rater): a new one replaces the old. Agreement counts each
//! answer once, by the majority of its ratings.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::config::EvalSettings;
use crate::metrics::Metrics;
use crate::store::feedback::{FeedbackRow, NewFeedback};
pub use crate::store::record::{Agreement, Rating, Scale};
use crate::store::{FeedbackStore, StoreError};

/// Longest accepted comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 4_000;
/// Longest accepted user id, in characters.
pub const MAX_USER_ID_CHARS: usize = 256;
/// Longest request id a rating may name (a client's `x-request-id` is at most 128 characters).
pub const MAX_REQUEST_ID_CHARS: usize = 128;

impl Rating {
    /// What a judge's 1–5 score says, on the same terms as a star rating.
    pub fn of_judge_score(score: i16) -> Rating {
        match score {
            4.. => Rating::Positive,
            3 => Rating::Neutral,
            _ => Rating::Negative,
        }
    }
}

impl Agreement {
    /// An answer's verdict from its ratings' agreements: more agree than disagree → agree,
    /// fewer → disagree; a tie (or only neutral sides) is not comparable. Each answer counts once
    /// however many people rated it.
    pub fn of_answer(agreements: impl Iterator<Item = Agreement>) -> Agreement {
        let (agree, disagree) = agreements.fold((0u64, 0u64), |(a, d), x| match x {
            Agreement::Agree => (a + 1, d),
            Agreement::Disagree => (a, d + 1),
            Agreement::NotComparable => (a, d),
        });
        match agree.cmp(&disagree) {
            std::cmp::Ordering::Greater => Agreement::Agree,
            std::cmp::Ordering::Less => Agreement::Disagree,
            std::cmp::Ordering::Equal => Agreement::NotComparable,
        }
    }

    /// Only polar pairs compare: same side → agree, opposite sides → disagree.
    pub fn between(judge_overall: i16, human: Rating) -> Agreement {
        match (Rating::of_judge_score(judge_overall), human) {
            (Rating::Neutral, _) | (_, Rating::Neutral) => Agreement::NotComparable,
            (j, h) if j == h => Agreement::Agree,
            _ => Agreement::Disagree,
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
    #[error("no logged request has id {0:?}")]
    UnknownRequest(String),
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
    /// The gateway's request id, or the client's own `x-request-id`.
    pub request_id: String,
    pub score: i64,
    pub scale: Option<Scale>,
    pub comment: Option<String>,
    pub user_id: Option<String>,
}

/// Checks and stores a rating, counts it, and settles its agreement with the judge if the record
/// is already judged. The record may still be on its way to the database (the writer batches
/// for `writer.flush_interval_ms`), so an unknown id is looked up again for up to `wait`.
pub async fn record(
    store: &dyn FeedbackStore,
    metrics: &Metrics,
    settings: &EvalSettings,
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
    let named = input.request_id.trim();
    if named.is_empty() || named.chars().count() > MAX_REQUEST_ID_CHARS || named.contains('\0') {
        return Err(invalid(
            "request_id",
            format!("`request_id` must be 1 to {MAX_REQUEST_ID_CHARS} characters without NUL."),
        ));
    }
    let (request_id, model_version) = lookup_with_wait(store, named, wait)
        .await?
        .ok_or_else(|| FeedbackError::UnknownRequest(named.to_string()))?;
    let new = NewFeedback {
        request_id,
        model_version: model_version.clone(),
        score: input.score as i16,
        scale,
        rating,
        comment,
        user_id,
    };
    let (id, created_at) = store.insert_feedback(&new).await?;
    if settings.is_model(&model_version) {
        metrics
            .feedback
            .with_label_values(&[&model_version, rating.as_str()])
            .inc();
    }
    let settled = settle_agreement(store, metrics, settings, request_id, &model_version);
    let agreement = match settled.await {
        Ok(()) => store
            .feedback_of(request_id)
            .await?
            .into_iter()
            .find(|f| f.id == id)
            .and_then(|f| f.agreement),
        Err(e) => {
            // The rating is stored; the judge path settles it later if this failed.
            tracing::warn!(%request_id, error = %e, "could not compare feedback with the judge");
            None
        }
    };
    Ok(FeedbackRow {
        id,
        request_id,
        model_version,
        score: new.score,
        scale,
        rating,
        comment: new.comment,
        user_id: new.user_id,
        agreement,
        created_at,
    })
}

/// The gateway's id and model version of the answer `named` names: the gateway's own id when it
/// is one, else the client's `x-request-id`.
async fn lookup(
    store: &dyn FeedbackStore,
    named: &str,
) -> Result<Option<(Uuid, String)>, StoreError> {
    if let Ok(id) = Uuid::parse_str(named) {
        if let Some(v) = store.logged_model_version(id).await? {
            return Ok(Some((id, v)));
        }
    }
    store.client_logged_model_version(named).await
}

async fn lookup_with_wait(
    store: &dyn FeedbackStore,
    named: &str,
    wait: Duration,
) -> Result<Option<(Uuid, String)>, StoreError> {
    // No signal says "this record was written", so poll briefly with a deadline.
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(found) = lookup(store, named).await? {
            return Ok(Some(found));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50).min(deadline - now)).await;
    }
}

/// Compares a judged record's unsettled ratings with its overall score, once each, and counts
/// the answer once in `lqo_judge_human_agreement_total`: with the verdict of its ratings when
/// it is first compared with a polar result, by whichever process gets there first. Called
/// after a rating is stored and after the judge stores scores, so whichever comes second
/// settles it.
pub async fn settle_agreement(
    store: &dyn FeedbackStore,
    metrics: &Metrics,
    settings: &EvalSettings,
    request_id: Uuid,
    model_version: &str,
) -> Result<(), StoreError> {
    let Some(overall) = store.overall_score(request_id).await? else {
        return Ok(());
    };
    let mut settled_any = false;
    for (id, rating) in store.unsettled_feedback(request_id).await? {
        let agreement = Agreement::between(overall, rating);
        settled_any |= store.settle(id, agreement).await?;
    }
    if !settled_any || !settings.is_model(model_version) {
        return Ok(());
    }
    let verdict = Agreement::of_answer(
        store
            .feedback_of(request_id)
            .await?
            .iter()
            .filter_map(|f| f.agreement),
    );
    if verdict != Agreement::NotComparable && store.claim_agreement_count(request_id).await? {
        metrics
            .judge_human_agreement
            .with_label_values(&[model_version, verdict.as_str()])
            .inc();
    }
    Ok(())
}

/// Judge–human agreement of one model version over a window.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AgreementRow {
    pub model_version: String,
    /// Ratings in the window (one per answer and rater: a new one replaces the old).
    pub feedback: i64,
    pub positive: i64,
    pub neutral: i64,
    pub negative: i64,
    /// Records whose overall judge score was stored in the window.
    pub judged: i64,
    /// Mean overall judge score of those records.
    pub mean_judge_score: Option<f64>,
    /// Answers compared with their judge score, each once however many people rated it: the
    /// majority of its ratings agrees (`agree`) or disagrees (`disagree`) with the judge.
    pub compared: i64,
    pub agree: i64,
    pub disagree: i64,
    /// Judged answers whose ratings lean neither way against the judge (a tie, or a neutral
    /// side).
    pub not_comparable: i64,
    /// agree / compared; null when nothing was compared.
    pub agreement_rate: Option<f64>,
}

/// Agreement per model version for feedback given in `[since, until)`.
pub async fn agreement_report(
    store: &dyn FeedbackStore,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    model_version: Option<&str>,
) -> Result<Vec<AgreementRow>, StoreError> {
    use std::collections::BTreeMap;
    let mut rows: BTreeMap<String, AgreementRow> = BTreeMap::new();
    for c in store.feedback_counts(since, until, model_version).await? {
        let row = row_for(&mut rows, &c.model_version);
        row.feedback += c.count;
        match c.rating {
            Rating::Positive => row.positive += c.count,
            Rating::Neutral => row.neutral += c.count,
            Rating::Negative => row.negative += c.count,
        }
    }
    for a in store.answer_agreements(since, until, model_version).await? {
        let row = row_for(&mut rows, &a.model_version);
        match a.agreement {
            Agreement::Agree => row.agree += a.answers,
            Agreement::Disagree => row.disagree += a.answers,
            Agreement::NotComparable => row.not_comparable += a.answers,
        }
    }
    for j in store.judged_counts(since, until, model_version).await? {
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
        // An answer counts once: the majority of its ratings' agreements decides.
        assert_eq!(Agreement::of_answer([Disagree; 500].into_iter()), Disagree);
        assert_eq!(
            Agreement::of_answer([Agree, Disagree, Agree].into_iter()),
            Agree
        );
        assert_eq!(
            Agreement::of_answer([Agree, Disagree].into_iter()),
            NotComparable
        );
        assert_eq!(
            Agreement::of_answer([NotComparable].into_iter()),
            NotComparable
        );
        assert_eq!(Agreement::of_answer(std::iter::empty()), NotComparable);
    }
}
