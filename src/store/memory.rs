//! An in-memory store of the judge's and the feedback's concerns, for tests of the logic above
//! the store (the judge worker, agreement) without a database: the same contract as the real
//! backends, kept in a mutex, with a switch that makes every call fail like an outage.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::feedback::{
    AnswerAgreements, FeedbackCount, FeedbackRow, FeedbackStore, JudgedCount, NewFeedback,
};
use super::judge::{
    chrono_dur, Candidate, CandidateScan, ClaimedJob, JobRow, JudgeJobs, JudgeMaterial, NewJob,
    NewScore, Outcome, ScoreRow, Spend,
};
use super::record::{Agreement, JobStatus, LogRecord, LogStatus, Rating};
use super::StoreError;

#[derive(Debug, Clone)]
struct Job {
    model_version: String,
    status: JobStatus,
    attempts: i32,
    claim_id: Option<Uuid>,
    claimed_at: Option<DateTime<Utc>>,
    available_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    error_type: Option<String>,
    last_error: Option<String>,
    judge_model: Option<String>,
    spend: Spend,
}

#[derive(Default)]
struct Tables {
    logs: Vec<LogRecord>,
    jobs: BTreeMap<Uuid, Job>,
    scores: Vec<(Uuid, String, ScoreRow)>,
    feedback: Vec<FeedbackRow>,
    /// Answers already counted in the agreement metric (`judge_jobs.agreement_counted`).
    agreement_counted: std::collections::BTreeSet<Uuid>,
}

/// Judge jobs, scores, feedback and the records they refer to, in memory.
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    down: AtomicBool,
    refused: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A record as the writer would have stored it.
    pub fn add_log(&self, record: LogRecord) {
        self.lock().logs.push(record);
    }

    /// While set, every call fails as if the database were unreachable.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Calls refused while down, so a test can see its subject ran into the outage.
    pub fn refused_calls(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tables(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        Ok(self.lock())
    }
}

impl Tables {
    /// The newest record of an id, as every real backend reads it.
    fn newest_log(&self, request_id: Uuid) -> Option<&LogRecord> {
        self.logs
            .iter()
            .filter(|r| r.request_id == request_id)
            .max_by_key(|r| r.created_at)
    }

    /// The job, if `claim_id` still holds it.
    fn claimed(&mut self, job: &ClaimedJob) -> Option<&mut Job> {
        self.jobs
            .get_mut(&job.request_id)
            .filter(|j| j.claim_id == Some(job.claim_id))
    }
}

fn add_spend(total: &mut Spend, more: Spend) {
    total.input_tokens += more.input_tokens;
    total.output_tokens += more.output_tokens;
    total.cost_usd += more.cost_usd;
}

#[async_trait]
impl JudgeJobs for MemoryStore {
    async fn enqueue(&self, jobs: &[NewJob]) -> Result<u64, StoreError> {
        let mut t = self.tables()?;
        let now = Utc::now();
        let mut n = 0;
        for j in jobs {
            if t.jobs.contains_key(&j.request_id) {
                continue;
            }
            n += 1;
            t.jobs.insert(
                j.request_id,
                Job {
                    model_version: j.model_version.clone(),
                    status: JobStatus::Pending,
                    attempts: 0,
                    claim_id: None,
                    claimed_at: None,
                    available_at: now,
                    created_at: now,
                    updated_at: now,
                    error_type: None,
                    last_error: None,
                    judge_model: None,
                    spend: Spend::default(),
                },
            );
        }
        Ok(n)
    }

    async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        created_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let mut t = self.tables()?;
        let now = Utc::now();
        let expired = now - chrono_dur(lease);
        let mut due: Vec<(DateTime<Utc>, Uuid)> = t
            .jobs
            .iter()
            .filter(|(_, j)| match j.status {
                JobStatus::Pending => j.available_at <= now,
                JobStatus::Running => j.claimed_at.is_some_and(|c| c < expired),
                JobStatus::Done | JobStatus::Error => false,
            })
            .filter(|(_, j)| created_before.is_none_or(|b| j.created_at <= b))
            .map(|(id, j)| (j.created_at, *id))
            .collect();
        due.sort();
        due.truncate(limit);
        let claim_id = Uuid::new_v4();
        let mut claimed = Vec::with_capacity(due.len());
        for (_, id) in due {
            if let Some(j) = t.jobs.get_mut(&id) {
                j.status = JobStatus::Running;
                j.claimed_at = Some(now);
                j.claim_id = Some(claim_id);
                j.attempts += 1;
                j.updated_at = now;
                claimed.push(ClaimedJob {
                    request_id: id,
                    model_version: j.model_version.clone(),
                    attempts: j.attempts,
                    claim_id,
                    created_at: j.created_at,
                });
            }
        }
        Ok(claimed)
    }

    async fn material(&self, request_id: Uuid) -> Result<Option<JudgeMaterial>, StoreError> {
        let t = self.tables()?;
        let Some(r) = t.newest_log(request_id) else {
            return Ok(None);
        };
        Ok(Some(JudgeMaterial {
            prompt: r.prompt.clone(),
            response: r.response.clone(),
            status: r.status,
            model_version: r.model_version.clone(),
        }))
    }

    async fn defer(
        &self,
        job: &ClaimedJob,
        delay: Duration,
        o: &Outcome<'_>,
    ) -> Result<bool, StoreError> {
        let mut t = self.tables()?;
        let now = Utc::now();
        let Some(j) = t.claimed(job) else {
            return Ok(false);
        };
        j.status = JobStatus::Pending;
        j.available_at = now + chrono_dur(delay);
        j.claimed_at = None;
        j.claim_id = None;
        j.attempts = o.attempts;
        j.error_type = o.error_type.map(str::to_string);
        j.last_error = o.last_error.map(str::to_string);
        if let Some(m) = o.judge_model {
            j.judge_model = Some(m.to_string());
        }
        add_spend(&mut j.spend, o.spend);
        j.updated_at = now;
        Ok(true)
    }

    async fn fail(&self, job: &ClaimedJob, o: &Outcome<'_>) -> Result<bool, StoreError> {
        let mut t = self.tables()?;
        let Some(j) = t.claimed(job) else {
            return Ok(false);
        };
        j.status = JobStatus::Error;
        j.attempts = o.attempts;
        j.error_type = o.error_type.map(str::to_string);
        j.last_error = o.last_error.map(str::to_string);
        if let Some(m) = o.judge_model {
            j.judge_model = Some(m.to_string());
        }
        add_spend(&mut j.spend, o.spend);
        j.claim_id = None;
        j.updated_at = Utc::now();
        Ok(true)
    }

    async fn complete(
        &self,
        job: &ClaimedJob,
        attempts: i32,
        judge_model: &str,
        spend: Spend,
        scores: &[NewScore],
    ) -> Result<bool, StoreError> {
        let mut t = self.tables()?;
        let now = Utc::now();
        let Some(j) = t.claimed(job) else {
            return Ok(false);
        };
        j.status = JobStatus::Done;
        j.attempts = attempts;
        j.error_type = None;
        j.last_error = None;
        j.judge_model = Some(judge_model.to_string());
        add_spend(&mut j.spend, spend);
        j.claim_id = None;
        j.updated_at = now;
        for s in scores {
            let exists = t
                .scores
                .iter()
                .any(|(id, _, row)| *id == job.request_id && row.criterion == s.criterion);
            if !exists {
                t.scores.push((
                    job.request_id,
                    job.model_version.clone(),
                    ScoreRow {
                        criterion: s.criterion.clone(),
                        score: s.score,
                        rationale: s.rationale.clone(),
                        judge_model: judge_model.to_string(),
                        created_at: now,
                    },
                ));
            }
        }
        Ok(true)
    }

    async fn release(&self, job: &ClaimedJob) -> Result<bool, StoreError> {
        let mut t = self.tables()?;
        let now = Utc::now();
        let Some(j) = t.claimed(job) else {
            return Ok(false);
        };
        j.status = JobStatus::Pending;
        j.available_at = now;
        j.claimed_at = None;
        j.claim_id = None;
        j.attempts = (j.attempts - 1).max(0);
        j.updated_at = now;
        Ok(true)
    }

    async fn open_jobs(&self, created_before: Option<DateTime<Utc>>) -> Result<i64, StoreError> {
        let t = self.tables()?;
        let n = t
            .jobs
            .values()
            .filter(|j| matches!(j.status, JobStatus::Pending | JobStatus::Running))
            .filter(|j| created_before.is_none_or(|b| j.created_at <= b))
            .count();
        Ok(n as i64)
    }

    async fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        drop(self.tables()?);
        Ok(Utc::now())
    }

    async fn candidates(&self, scan: &CandidateScan) -> Result<Vec<Candidate>, StoreError> {
        let t = self.tables()?;
        let mut found: Vec<Candidate> = t
            .logs
            .iter()
            .filter(|r| r.created_at >= scan.since && r.created_at < scan.until)
            .filter(|r| r.status == LogStatus::Ok && r.response.is_some())
            .filter(|r| {
                scan.model_version
                    .as_ref()
                    .is_none_or(|m| *m == r.model_version)
            })
            .filter(|r| scan.after.is_none_or(|a| (r.created_at, r.request_id) > a))
            .map(|r| Candidate {
                request_id: r.request_id,
                model_version: r.model_version.clone(),
                created_at: r.created_at,
            })
            .collect();
        found.sort_by_key(|c| (c.created_at, c.request_id));
        found.truncate(scan.limit);
        Ok(found)
    }

    async fn retry_errors(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut t = self.tables()?;
        let now = Utc::now();
        let in_range: Vec<Uuid> = t
            .logs
            .iter()
            .filter(|r| r.created_at >= since && r.created_at < until)
            .map(|r| r.request_id)
            .collect();
        let mut n = 0;
        for (id, j) in t.jobs.iter_mut() {
            let wanted = j.status == JobStatus::Error
                && model_version.is_none_or(|m| m == j.model_version)
                && in_range.contains(id);
            if wanted {
                j.status = JobStatus::Pending;
                j.attempts = 0;
                j.available_at = now;
                j.error_type = None;
                j.last_error = None;
                j.created_at = now;
                j.updated_at = now;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn job(&self, request_id: Uuid) -> Result<Option<JobRow>, StoreError> {
        let t = self.tables()?;
        Ok(t.jobs.get(&request_id).map(|j| JobRow {
            status: j.status,
            attempts: j.attempts,
            error_type: j.error_type.clone(),
            last_error: j.last_error.clone(),
            judge_model: j.judge_model.clone(),
            input_tokens: j.spend.input_tokens,
            output_tokens: j.spend.output_tokens,
            cost_usd: j.spend.cost_usd,
            updated_at: j.updated_at,
        }))
    }

    async fn scores(&self, request_id: Uuid) -> Result<Vec<ScoreRow>, StoreError> {
        let t = self.tables()?;
        let mut rows: Vec<ScoreRow> = t
            .scores
            .iter()
            .filter(|(id, _, _)| *id == request_id)
            .map(|(_, _, row)| row.clone())
            .collect();
        rows.sort_by(|a, b| a.criterion.cmp(&b.criterion));
        Ok(rows)
    }
}

#[async_trait]
impl FeedbackStore for MemoryStore {
    async fn logged_model_version(&self, request_id: Uuid) -> Result<Option<String>, StoreError> {
        let t = self.tables()?;
        Ok(t.newest_log(request_id).map(|r| r.model_version.clone()))
    }

    async fn client_logged_model_version(
        &self,
        client_request_id: &str,
    ) -> Result<Option<(Uuid, String)>, StoreError> {
        let t = self.tables()?;
        Ok(t.logs
            .iter()
            .filter(|r| r.client_request_id.as_deref() == Some(client_request_id))
            .max_by_key(|r| r.created_at)
            .map(|r| (r.request_id, r.model_version.clone())))
    }

    async fn insert_feedback(&self, f: &NewFeedback) -> Result<(i64, DateTime<Utc>), StoreError> {
        let mut t = self.tables()?;
        let created_at = Utc::now();
        let rater = f.user_id.clone().unwrap_or_default();
        let same = t.feedback.iter().position(|old| {
            old.request_id == f.request_id && old.user_id.clone().unwrap_or_default() == rater
        });
        let id = match same {
            Some(i) => t.feedback[i].id,
            None => t.feedback.len() as i64 + 1,
        };
        let row = FeedbackRow {
            id,
            request_id: f.request_id,
            model_version: f.model_version.clone(),
            score: f.score,
            scale: f.scale,
            rating: f.rating,
            comment: f.comment.clone(),
            user_id: f.user_id.clone(),
            agreement: None,
            created_at,
        };
        match same {
            Some(i) => t.feedback[i] = row,
            None => t.feedback.push(row),
        }
        Ok((id, created_at))
    }

    async fn overall_score(&self, request_id: Uuid) -> Result<Option<i16>, StoreError> {
        let t = self.tables()?;
        Ok(t.scores
            .iter()
            .find(|(id, _, row)| *id == request_id && row.criterion == "overall")
            .map(|(_, _, row)| row.score))
    }

    async fn unsettled_feedback(&self, request_id: Uuid) -> Result<Vec<(i64, Rating)>, StoreError> {
        let t = self.tables()?;
        Ok(t.feedback
            .iter()
            .filter(|f| f.request_id == request_id && f.agreement.is_none())
            .map(|f| (f.id, f.rating))
            .collect())
    }

    async fn settle(&self, feedback_id: i64, agreement: Agreement) -> Result<bool, StoreError> {
        let mut t = self.tables()?;
        match t
            .feedback
            .iter_mut()
            .find(|f| f.id == feedback_id && f.agreement.is_none())
        {
            Some(f) => {
                f.agreement = Some(agreement);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn claim_agreement_count(&self, request_id: Uuid) -> Result<bool, StoreError> {
        let mut t = self.tables()?;
        Ok(t.agreement_counted.insert(request_id))
    }

    async fn answer_agreements(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<Vec<AnswerAgreements>, StoreError> {
        let t = self.tables()?;
        let mut per_answer: BTreeMap<(String, Uuid), Vec<Agreement>> = BTreeMap::new();
        for f in &t.feedback {
            let wanted = f.created_at >= since
                && f.created_at < until
                && model_version.is_none_or(|m| m == f.model_version);
            if let (true, Some(a)) = (wanted, f.agreement) {
                per_answer
                    .entry((f.model_version.clone(), f.request_id))
                    .or_default()
                    .push(a);
            }
        }
        let mut counts: BTreeMap<(String, &'static str), AnswerAgreements> = BTreeMap::new();
        for ((mv, _), agreements) in per_answer {
            let verdict = Agreement::of_answer(agreements.into_iter());
            counts
                .entry((mv.clone(), verdict.as_str()))
                .or_insert_with(|| AnswerAgreements {
                    model_version: mv,
                    agreement: verdict,
                    answers: 0,
                })
                .answers += 1;
        }
        Ok(counts.into_values().collect())
    }

    async fn feedback_counts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<Vec<FeedbackCount>, StoreError> {
        let t = self.tables()?;
        let mut counts: BTreeMap<(String, &'static str), FeedbackCount> = BTreeMap::new();
        for f in &t.feedback {
            let wanted = f.created_at >= since
                && f.created_at < until
                && model_version.is_none_or(|m| m == f.model_version);
            if !wanted {
                continue;
            }
            counts
                .entry((f.model_version.clone(), f.rating.as_str()))
                .or_insert_with(|| FeedbackCount {
                    model_version: f.model_version.clone(),
                    rating: f.rating,
                    count: 0,
                })
                .count += 1;
        }
        Ok(counts.into_values().collect())
    }

    async fn judged_counts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        model_version: Option<&str>,
    ) -> Result<Vec<JudgedCount>, StoreError> {
        let t = self.tables()?;
        let mut sums: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (_, mv, row) in &t.scores {
            let wanted = row.criterion == "overall"
                && row.created_at >= since
                && row.created_at < until
                && model_version.is_none_or(|m| m == mv);
            if wanted {
                let e = sums.entry(mv.clone()).or_default();
                e.0 += 1;
                e.1 += i64::from(row.score);
            }
        }
        Ok(sums
            .into_iter()
            .map(|(model_version, (n, total))| JudgedCount {
                model_version,
                judged: n,
                mean_overall: Some(total as f64 / n as f64),
            })
            .collect())
    }

    async fn feedback_of(&self, request_id: Uuid) -> Result<Vec<FeedbackRow>, StoreError> {
        let t = self.tables()?;
        Ok(t.feedback
            .iter()
            .filter(|f| f.request_id == request_id)
            .cloned()
            .collect())
    }
}
