//! Quality evaluation: heuristics on every answer, an LLM judge on a deterministic sample, human
//! feedback, and how often judge and humans agree. Knows nothing about HTTP.
//!
//! - `heuristics`: cheap checks run by the gateway on every successful answer.
//! - `sampling`, `queue`: which records are judged, and how their jobs reach `judge_jobs`
//!   without a database call on the request path.
//! - `judge`: rubric prompt, lenient verdict parser, metered judge-model call.
//! - `worker`: claims jobs (`FOR UPDATE SKIP LOCKED`), judges, stores scores; `backfill` runs
//!   it over stored records (`lqo judge`).
//! - `feedback`: human ratings and judge–human agreement.
//! - `db`: the SQL of all of the above, for PostgreSQL and SQLite.

pub mod backfill;
pub mod db;
pub mod feedback;
pub mod heuristics;
pub mod judge;
pub mod queue;
pub mod sampling;
pub mod worker;

use serde::Serialize;
use uuid::Uuid;

use crate::store::{Store, StoreError};
pub use db::{FeedbackRow, JobRow, ScoreRow};
pub use worker::{init_metrics, JudgeRuntime};

/// What the evaluation knows about one record: the judge's job and scores, and human feedback.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EvalDetails {
    /// The judge's work on this record; null when the record was not sampled.
    pub judge: Option<JudgeDetails>,
    /// Human ratings, oldest first.
    pub feedback: Vec<FeedbackRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JudgeDetails {
    /// pending, running, done or error (null for scores stored without a job).
    pub status: Option<String>,
    pub job: Option<JobRow>,
    /// One score per criterion once the judge is done.
    pub scores: Vec<ScoreRow>,
}

/// The judge's job and scores and the feedback of one record (empty when there are none; the
/// caller decides whether the record itself exists).
pub async fn details(store: &Store, request_id: Uuid) -> Result<EvalDetails, StoreError> {
    // One after the other, the job first: a job is marked done in the transaction that stores
    // its scores, so scores read after a `done` job are all there. Read concurrently, on two
    // connections, the scores could come from before that commit and the job from after it.
    let job = db::job(store, request_id).await?;
    let scores = db::scores(store, request_id).await?;
    let feedback = db::feedback_of(store, request_id).await?;
    let judge = (job.is_some() || !scores.is_empty()).then(|| JudgeDetails {
        status: job.as_ref().map(|j| j.status.clone()),
        job,
        scores,
    });
    Ok(EvalDetails { judge, feedback })
}
