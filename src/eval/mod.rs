//! Quality evaluation: heuristics on every answer, an LLM judge on a deterministic sample, human
//! feedback, and how often judge and humans agree. Knows nothing about HTTP, and asks the store
//! through its traits (`JudgeJobs`, `FeedbackStore`) — never SQL, never a backend.
//!
//! - `config`: the `heuristics` and `judge` sections and their checks; `EvalSettings`.
//! - `heuristics`: cheap checks run by the gateway on every successful answer.
//! - `sampling`, `queue`: which records are judged, and how their jobs reach `judge_jobs`
//!   without a database call on the request path.
//! - `judge`: rubric prompt, lenient verdict parser, metered judge-model call.
//! - `worker`: claims jobs, judges, stores scores; `backfill` runs it over stored records
//!   (`lqo judge`).
//! - `feedback`: human ratings and judge–human agreement.

pub mod backfill;
pub mod config;
pub mod feedback;
pub mod heuristics;
pub mod judge;
pub mod queue;
pub mod sampling;
pub mod worker;

use serde::Serialize;
use uuid::Uuid;

pub use crate::store::feedback::FeedbackRow;
pub use crate::store::judge::{JobRow, ScoreRow};
use crate::store::record::JobStatus;
use crate::store::{Store, StoreError};
pub use config::EvalSettings;
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
    /// Null for scores stored without a job.
    pub status: Option<JobStatus>,
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
    let job = store.judge.job(request_id).await?;
    let scores = store.judge.scores(request_id).await?;
    let feedback = store.feedback.feedback_of(request_id).await?;
    let judge = (job.is_some() || !scores.is_empty()).then(|| JudgeDetails {
        status: job.as_ref().map(|j| j.status),
        job,
        scores,
    });
    Ok(EvalDetails { judge, feedback })
}
