//! The judge worker: claims sampled records from `judge_jobs`, asks the judge model, stores the
//! scores and observes them. Runs inside `lqo serve` (started and stopped by the app) and in
//! `lqo judge` backfills, which drain the queue and exit.
//!
//! One job's life: claim (attempts + 1) → read the record (not there yet → back to the queue,
//! not counted) → call the judge → valid verdict: store scores and mark done in one
//! transaction → otherwise retry: an unusable reply at once with the model shown its mistake, an
//! upstream error later with backoff — until `judge.max_attempts` calls, then a judge error.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::db::{self, ClaimedJob, NewScore, Outcome, Spend};
use super::feedback;
use super::judge::{self, Criterion, JudgeBuildError, JudgeModel};
use super::queue::{self, JudgeQueue};
use super::sampling::Sampler;
use crate::config::{Config, ContentLogging};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Every `error_type` of `lqo_judge_errors_total`.
pub const ERROR_TYPES: [&str; 8] = [
    "invalid_output",
    "timeout",
    "upstream_status",
    "connect",
    "invalid_response",
    "record_missing",
    "no_content",
    "abandoned",
];

/// A judge call's failure as one of [`ERROR_TYPES`] (the gateway's finer upstream types — rate
/// limited, rejected, credentials — are all `upstream_status` here).
fn judge_error_type(e: &crate::provider::ProviderError) -> &'static str {
    use crate::provider::ProviderError as E;
    match e {
        E::Timeout(_) => "timeout",
        E::Status { .. } => "upstream_status",
        E::Connect(_) | E::StreamInterrupted(_) => "connect",
        E::InvalidResponse(_) | E::Unsupported { .. } => "invalid_response",
        E::ClientDisconnected => "abandoned",
    }
}

/// Longest `last_error` stored.
const MAX_ERROR_CHARS: usize = 1_000;
/// How long shutdown waits for the worker to hand its jobs back.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between retries after upstream errors.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);

/// How the worker paces itself (from `judge.*`).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub batch_size: usize,
    pub concurrency: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub max_attempts: i32,
    pub retry_backoff: Duration,
    pub record_wait: Duration,
}

impl WorkerSettings {
    pub fn from_config(cfg: &Config) -> WorkerSettings {
        let j = &cfg.judge;
        WorkerSettings {
            batch_size: j.batch_size.max(1),
            concurrency: j.concurrency.max(1),
            lease: Duration::from_secs(j.lease_secs.max(1)),
            poll_interval: Duration::from_millis(j.poll_interval_ms.max(1)),
            max_attempts: i32::try_from(j.max_attempts.max(1)).unwrap_or(10),
            retry_backoff: Duration::from_millis(j.retry_backoff_ms),
            record_wait: Duration::from_secs(j.record_wait_secs),
        }
    }
}

/// Whether the worker serves forever or drains the jobs created up to a time and stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Drain { created_before: DateTime<Utc> },
}

/// What one worker did (summed over its jobs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Records scored.
    pub judged: u64,
    /// Records given up on (judge errors).
    pub failed: u64,
    /// Calls repeated (unusable reply or upstream error).
    pub retries: u64,
    /// Jobs put back because their record was not in the database yet.
    pub waiting_for_record: u64,
    /// Jobs another worker took over before this one finished (lease ran out).
    pub lost_claims: u64,
}

impl WorkerStats {
    fn add(&mut self, o: &WorkerStats) {
        self.judged += o.judged;
        self.failed += o.failed;
        self.retries += o.retries;
        self.waiting_for_record += o.waiting_for_record;
        self.lost_claims += o.lost_claims;
    }
}

/// A judge worker. Several may run on one database (in one process or many).
pub struct Worker {
    store: Store,
    judge: JudgeModel,
    criteria: Vec<Criterion>,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    settings: WorkerSettings,
    /// Model versions the metrics may be labelled with.
    known: BTreeSet<String>,
    notify: Arc<Notify>,
    queue: Option<JudgeQueue>,
}

impl Worker {
    pub fn new(
        store: Store,
        judge: JudgeModel,
        metrics: Arc<Metrics>,
        config: Arc<Config>,
        notify: Arc<Notify>,
        queue: Option<JudgeQueue>,
    ) -> Worker {
        Worker {
            criteria: judge::criteria(&config.judge),
            settings: WorkerSettings::from_config(&config),
            known: config.models.keys().cloned().collect(),
            store,
            judge,
            metrics,
            config,
            notify,
            queue,
        }
    }

    /// Replaces the pacing (tests use short leases and backoffs).
    pub fn with_settings(mut self, settings: WorkerSettings) -> Worker {
        self.settings = settings;
        self
    }

    /// Works until `shutdown` is set (or, draining, until no job created up to the mark is
    /// left). Database trouble is logged and retried; it never ends the loop.
    #[tracing::instrument(name = "judge_worker", skip_all, fields(judge_model = %self.judge.name))]
    pub async fn run(&self, mode: Mode, mut shutdown: watch::Receiver<bool>) -> WorkerStats {
        let mut stats = WorkerStats::default();
        // Consecutive failed claims: the wait grows so an outage is neither hammered nor logged
        // every poll.
        let mut failures: u32 = 0;
        let created_before = match mode {
            Mode::Serve => None,
            Mode::Drain { created_before } => Some(created_before),
        };
        loop {
            if *shutdown.borrow() {
                return stats;
            }
            self.refresh_backlog().await;
            let jobs = match db::claim(
                &self.store,
                self.settings.batch_size,
                self.settings.lease,
                created_before,
            )
            .await
            {
                Ok(jobs) => {
                    if failures > 0 {
                        tracing::info!(failures, "claiming judge jobs works again");
                    }
                    failures = 0;
                    jobs
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = self
                        .settings
                        .poll_interval
                        .saturating_mul(1 << failures.min(6))
                        .min(MAX_RETRY_BACKOFF);
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(error = %e, failures, ?wait, "claiming judge jobs failed; retrying");
                    }
                    let stop = tokio::select! {
                        _ = tokio::time::sleep(wait) => false,
                        _ = stopped(&mut shutdown) => true,
                    };
                    if stop {
                        return stats;
                    }
                    continue;
                }
            };
            if jobs.is_empty() {
                if let Some(mark) = created_before {
                    match db::open_jobs(&self.store, Some(mark)).await {
                        Ok(0) => return stats,
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "counting judge jobs failed"),
                    }
                }
                if self.idle(&mut shutdown).await {
                    return stats;
                }
                continue;
            }
            let results: Vec<WorkerStats> = futures::stream::iter(jobs)
                .map(|job| {
                    let shutdown = shutdown.clone();
                    async move { self.process(job, shutdown).await }
                })
                .buffer_unordered(self.settings.concurrency)
                .collect()
                .await;
            for r in &results {
                stats.add(r);
            }
        }
    }

    /// Waits for new local jobs, the poll interval (other replicas' jobs, backoffs) or shutdown;
    /// true on shutdown.
    async fn idle(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = self.notify.notified() => false,
            _ = tokio::time::sleep(self.settings.poll_interval) => false,
            _ = stopped(shutdown) => true,
        }
    }

    async fn refresh_backlog(&self) {
        match db::open_jobs(&self.store, None).await {
            Ok(n) => {
                let local = self.queue.as_ref().map_or(0, |q| q.depth()) as i64;
                self.metrics.judge_backlog.set(n + local);
            }
            Err(e) => tracing::debug!(error = %e, "judge backlog not refreshed"),
        }
    }

    #[tracing::instrument(skip_all, fields(request_id = %job.request_id, model_version = %job.model_version))]
    async fn process(&self, job: ClaimedJob, shutdown: watch::Receiver<bool>) -> WorkerStats {
        match self.try_process(&job, shutdown).await {
            Ok(stats) => stats,
            Err(e) => {
                // The claim stays; once its lease runs out the job is claimed again.
                tracing::warn!(error = %e, "judge job interrupted by a database error");
                WorkerStats::default()
            }
        }
    }

    async fn try_process(
        &self,
        job: &ClaimedJob,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<WorkerStats, StoreError> {
        let mut stats = WorkerStats::default();
        let max = self.settings.max_attempts;
        if job.attempts > max {
            // Claimed again after its workers vanished mid-call, with every attempt used.
            let msg = format!(
                "gave up after {} claims without an answer (workers stopped or lost their lease)",
                job.attempts - 1
            );
            self.give_up(
                job,
                job.attempts - 1,
                "abandoned",
                &msg,
                Spend::default(),
                &mut stats,
            )
            .await?;
            return Ok(stats);
        }
        let material = match db::material(&self.store, job.request_id).await? {
            Some(m) => m,
            None => {
                let age = Utc::now().signed_duration_since(job.created_at);
                if age.to_std().unwrap_or_default() < self.settings.record_wait {
                    // The writer batches records; this one is on its way. Not an attempt.
                    let o = Outcome {
                        attempts: job.attempts - 1,
                        ..Outcome::default()
                    };
                    let delay = self.settings.poll_interval.min(Duration::from_secs(1));
                    if db::defer(&self.store, job, delay, &o).await? {
                        stats.waiting_for_record += 1;
                    } else {
                        stats.lost_claims += 1;
                    }
                } else {
                    let msg = format!(
                        "the record never reached llm_logs within {} s",
                        self.settings.record_wait.as_secs()
                    );
                    self.give_up(
                        job,
                        job.attempts - 1,
                        "record_missing",
                        &msg,
                        Spend::default(),
                        &mut stats,
                    )
                    .await?;
                }
                return Ok(stats);
            }
        };
        let Some(answer) = material.response.filter(|_| material.status == "ok") else {
            let msg = "the record has no stored answer (failed call, or content logging off)";
            self.give_up(
                job,
                job.attempts - 1,
                "no_content",
                msg,
                Spend::default(),
                &mut stats,
            )
            .await?;
            return Ok(stats);
        };

        let mut messages = judge::build_messages(&self.criteria, &material.prompt, &answer);
        let mut attempts = job.attempts;
        let mut spend = Spend::default();
        loop {
            let call = tokio::select! {
                r = self.judge.call(&messages, &self.metrics) => r,
                _ = stopped(&mut shutdown) => {
                    db::release(&self.store, job).await?;
                    return Ok(stats);
                }
            };
            match call {
                Ok(out) => {
                    spend.input_tokens += out.usage.input_tokens as i64;
                    spend.output_tokens += out.usage.output_tokens as i64;
                    spend.cost_usd += out.cost_usd;
                    match judge::parse_verdict(&out.text, &self.criteria) {
                        Ok(scores) => {
                            let rows: Vec<NewScore> = scores
                                .iter()
                                .map(|s| NewScore {
                                    criterion: s.criterion.clone(),
                                    score: s.score,
                                    rationale: s.rationale.clone(),
                                })
                                .collect();
                            let stored = db::complete(
                                &self.store,
                                job,
                                attempts,
                                &self.judge.name,
                                spend,
                                &rows,
                            )
                            .await?;
                            if !stored {
                                stats.lost_claims += 1;
                                return Ok(stats);
                            }
                            stats.judged += 1;
                            self.observe_scores(&job.model_version, &rows);
                            tracing::debug!(attempts, "judged");
                            if let Err(e) = feedback::settle_agreement(
                                &self.store,
                                &self.metrics,
                                &self.config,
                                job.request_id,
                                &job.model_version,
                            )
                            .await
                            {
                                tracing::warn!(error = %e, "could not compare the judge with feedback; the next rating settles it");
                            }
                            return Ok(stats);
                        }
                        Err(reason) => {
                            if attempts >= max {
                                let msg = format!("unusable judge reply: {reason}");
                                self.give_up(
                                    job,
                                    attempts,
                                    "invalid_output",
                                    &msg,
                                    spend,
                                    &mut stats,
                                )
                                .await?;
                                return Ok(stats);
                            }
                            stats.retries += 1;
                            self.count_retry(&job.model_version, "invalid_output");
                            tracing::debug!(%reason, attempts, "unusable judge reply; asking again");
                            messages = judge::repair_messages(messages, &out.text, &reason);
                            attempts += 1;
                        }
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    if attempts >= max {
                        self.give_up(job, attempts, judge_error_type(&e), &msg, spend, &mut stats)
                            .await?;
                        return Ok(stats);
                    }
                    stats.retries += 1;
                    self.count_retry(&job.model_version, "upstream_error");
                    let exp = u32::try_from(attempts.saturating_sub(1))
                        .unwrap_or(0)
                        .min(16);
                    let delay = self
                        .settings
                        .retry_backoff
                        .saturating_mul(1 << exp)
                        .min(MAX_RETRY_BACKOFF);
                    tracing::debug!(error = %msg, attempts, ?delay, "judge call failed; retrying later");
                    let clipped = clip(&msg);
                    let o = Outcome {
                        attempts,
                        error_type: Some(judge_error_type(&e)),
                        last_error: Some(&clipped),
                        judge_model: Some(&self.judge.name),
                        spend,
                    };
                    if !db::defer(&self.store, job, delay, &o).await? {
                        stats.lost_claims += 1;
                    }
                    return Ok(stats);
                }
            }
        }
    }

    async fn give_up(
        &self,
        job: &ClaimedJob,
        attempts: i32,
        error_type: &str,
        message: &str,
        spend: Spend,
        stats: &mut WorkerStats,
    ) -> Result<(), StoreError> {
        let clipped = clip(message);
        let o = Outcome {
            attempts,
            error_type: Some(error_type),
            last_error: Some(&clipped),
            judge_model: (spend.input_tokens > 0 || spend.output_tokens > 0)
                .then_some(self.judge.name.as_str()),
            spend,
        };
        if !db::fail(&self.store, job, &o).await? {
            stats.lost_claims += 1;
            return Ok(());
        }
        stats.failed += 1;
        tracing::warn!(
            error_type,
            error = message,
            attempts,
            "judge gave up on a record"
        );
        if self.known.contains(&job.model_version) {
            let mv = job.model_version.as_str();
            self.metrics
                .judge_requests
                .with_label_values(&[mv, "error"])
                .inc();
            self.metrics
                .judge_errors
                .with_label_values(&[mv, error_type])
                .inc();
        }
        Ok(())
    }

    fn observe_scores(&self, model_version: &str, scores: &[NewScore]) {
        if !self.known.contains(model_version) {
            return;
        }
        self.metrics
            .judge_requests
            .with_label_values(&[model_version, "ok"])
            .inc();
        for s in scores {
            self.metrics
                .judge_score
                .with_label_values(&[model_version, &s.criterion])
                .observe(f64::from(s.score));
        }
    }

    fn count_retry(&self, model_version: &str, reason: &str) {
        if self.known.contains(model_version) {
            self.metrics
                .judge_retries
                .with_label_values(&[model_version, reason])
                .inc();
        }
    }
}

/// Resolves once shutdown is asked for (holding no borrow of the channel afterwards).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// An error message as stored: bounded, and without NUL (PostgreSQL text cannot hold it).
fn clip(s: &str) -> String {
    judge::clip(s, MAX_ERROR_CHARS).replace('\0', "\u{FFFD}")
}

/// The judge running inside `lqo serve`: the queue the gateway offers records to, the task that
/// inserts jobs, and one worker.
pub struct JudgeRuntime {
    queue: JudgeQueue,
    shutdown: watch::Sender<bool>,
    enqueuer: JoinHandle<()>,
    worker: JoinHandle<WorkerStats>,
}

/// Creates the evaluation series at zero for every configured model version (and the judge
/// model's metering series when the judge runs).
pub fn init_metrics(cfg: &Config, metrics: &Metrics) {
    let criteria: Vec<&str> = cfg.judge.criteria.iter().map(String::as_str).collect();
    for mv in cfg.models.keys() {
        metrics.init_quality_series(mv, &super::heuristics::CHECKS);
        if cfg.judge.enabled {
            metrics.init_judge_series(mv, &criteria, &ERROR_TYPES);
        }
    }
    if cfg.judge.enabled {
        metrics.init_judge_model(cfg.judge_model());
    }
}

/// The sampler the configuration describes.
pub fn sampler(cfg: &Config) -> Sampler {
    Sampler::new(
        cfg.judge_sample_rate(),
        cfg.judge.per_model_sample_rate.clone(),
    )
}

impl JudgeRuntime {
    /// Starts the enqueuer and a worker; None when the judge is off (or cannot see answers).
    pub fn start(
        config: Arc<Config>,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<Option<JudgeRuntime>, JudgeBuildError> {
        if !config.judge.enabled {
            return Ok(None);
        }
        if config.logging.content == ContentLogging::None {
            tracing::warn!(
                "LLM judge off: logging.content is none, so no answer is stored to judge"
            );
            return Ok(None);
        }
        let judge = JudgeModel::from_config(&config)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let notify = Arc::new(Notify::new());
        let (queue, enqueuer) = queue::spawn(
            store.clone(),
            metrics.clone(),
            sampler(&config),
            notify.clone(),
            shutdown_rx.clone(),
        );
        tracing::info!(
            judge_model = %judge.name,
            sample_rate = config.judge_sample_rate(),
            "LLM judge on"
        );
        let worker = Worker::new(store, judge, metrics, config, notify, Some(queue.clone()));
        let worker = tokio::spawn(async move { worker.run(Mode::Serve, shutdown_rx).await });
        Ok(Some(JudgeRuntime {
            queue,
            shutdown,
            enqueuer,
            worker,
        }))
    }

    /// The handle the gateway offers records to.
    pub fn queue(&self) -> JudgeQueue {
        self.queue.clone()
    }

    /// Stops taking jobs, hands in-progress ones back to the queue, and saves queued ones —
    /// within a bound, so a database outage cannot hold up shutdown: a job whose hand-back did
    /// not happen is claimed again once its lease runs out.
    pub async fn stop(self) {
        self.shutdown.send_replace(true);
        let mut worker = self.worker;
        match tokio::time::timeout(STOP_TIMEOUT, &mut worker).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "judge worker panicked"),
            Err(_) => {
                worker.abort();
                tracing::warn!("judge worker did not stop in time (database unreachable?); its claimed jobs return after their lease");
            }
        }
        if let Err(e) = self.enqueuer.await {
            tracing::error!(error = %e, "judge enqueuer panicked");
        }
    }
}
