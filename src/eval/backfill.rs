//! `lqo judge`: judge records that are already stored. Walks `llm_logs` in a time range in
//! (created_at, request_id) order, queues the records the sampler picks (the same ones live
//! sampling picks, since it is deterministic) that have no job yet, optionally re-queues failed
//! jobs, then works until every job created so far is done — alongside any running gateways,
//! which claim from the same queue.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};

use super::config::EvalSettings;
use super::judge::{JudgeBuildError, JudgeModel};
use super::sampling::Sampler;
use super::worker::{self, EvalStores, Mode, Worker, WorkerStats};
use crate::metrics::Metrics;
use crate::store::config::DatabaseConfig;
use crate::store::judge::{CandidateScan, NewJob};
use crate::store::{Store, StoreError};
use crate::timespec::{parse_time, Toward};

/// Records read per page of the scan.
const PAGE: usize = 1_000;

/// What to backfill.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Only this model version.
    pub model_version: Option<String>,
    /// Overrides the configured sample rates for every model version (1.0 = judge everything).
    pub sample_rate: Option<f64>,
    /// Also re-queue records whose judging failed, with fresh attempts.
    pub retry_errors: bool,
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillSummary {
    /// Successful records with an answer in the range.
    pub scanned: u64,
    /// Of those, picked by the sampler.
    pub sampled: u64,
    /// Of those, newly queued (the others already had a job).
    pub queued: u64,
    /// Records of model versions no longer configured (not judged).
    pub skipped_unconfigured: u64,
    /// Failed jobs put back in the queue (`retry_errors`).
    pub requeued_errors: u64,
    /// What this process's worker then did.
    pub worker: WorkerStats,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("{0}")]
    Judge(#[from] JudgeBuildError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// Queues and judges the records of `opts`; returns when no job created up to the end of the
/// queueing is left open (or `shutdown` is set).
pub async fn run(
    settings: Arc<EvalSettings>,
    stores: EvalStores,
    metrics: Arc<Metrics>,
    opts: &BackfillOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<BackfillSummary, BackfillError> {
    if opts.since >= opts.until {
        return Err(BackfillError::Invalid(format!(
            "--since ({}) must be before --until ({})",
            opts.since.to_rfc3339(),
            opts.until.to_rfc3339()
        )));
    }
    if let Some(r) = opts.sample_rate {
        if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
            return Err(BackfillError::Invalid(format!(
                "--sample-rate must be between 0 and 1, got {r}"
            )));
        }
    }
    if let Some(mv) = &opts.model_version {
        if !settings.is_model(mv) {
            return Err(BackfillError::Invalid(format!(
                "model version {mv:?} is not configured"
            )));
        }
    }
    let judge = JudgeModel::from_settings(&settings)?;
    worker::init_metrics(&settings, &metrics);
    let sampler = match opts.sample_rate {
        Some(r) => Sampler::new(r, Default::default()),
        None => worker::sampler(&settings),
    };
    let jobs_store = stores.judge.clone();
    let mut summary = BackfillSummary::default();
    if opts.retry_errors {
        summary.requeued_errors = jobs_store
            .retry_errors(opts.since, opts.until, opts.model_version.as_deref())
            .await?;
    }
    let mut scan = CandidateScan {
        since: opts.since,
        until: opts.until,
        model_version: opts.model_version.clone(),
        after: None,
        limit: PAGE,
    };
    loop {
        let page = jobs_store.candidates(&scan).await?;
        let Some(last) = page.last() else { break };
        scan.after = Some((last.created_at, last.request_id));
        let mut jobs = Vec::new();
        for c in &page {
            summary.scanned += 1;
            if !settings.is_model(&c.model_version) {
                summary.skipped_unconfigured += 1;
                continue;
            }
            if sampler.sampled(c.request_id, &c.model_version) {
                summary.sampled += 1;
                jobs.push(NewJob {
                    request_id: c.request_id,
                    model_version: c.model_version.clone(),
                });
            }
        }
        summary.queued += jobs_store.enqueue(&jobs).await?;
        if page.len() < PAGE || *shutdown.borrow() {
            break;
        }
    }
    let mark = jobs_store.now().await?;
    let worker = Worker::new(
        stores,
        judge,
        metrics,
        settings,
        Arc::new(Notify::new()),
        None,
    );
    summary.worker = worker
        .run(
            Mode::Drain {
                created_before: mark,
            },
            shutdown,
        )
        .await;
    Ok(summary)
}

/// `lqo judge` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct JudgeArgs {
    /// Judge records created at or after this time: RFC 3339 (2025-05-01T00:00:00Z) or a span
    /// back from now (90m, 24h, 7d, 2w).
    #[arg(long)]
    pub since: String,
    /// …and before this time (same forms; default now).
    #[arg(long)]
    pub until: Option<String>,
    /// Only records of this model version.
    #[arg(long)]
    pub model_version: Option<String>,
    /// Judge this share of the records (0.0–1.0) instead of the configured sample rates; 1.0
    /// judges every record.
    #[arg(long)]
    pub sample_rate: Option<f64>,
    /// Also judge again the records whose judging failed before.
    #[arg(long)]
    pub retry_errors: bool,
}

impl std::fmt::Display for BackfillSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines = [
            ("records scanned", self.scanned),
            ("sampled", self.sampled),
            ("newly queued", self.queued),
            ("failed jobs re-queued", self.requeued_errors),
            ("skipped (model not configured)", self.skipped_unconfigured),
            ("judged by this run", self.worker.judged),
            ("judge errors in this run", self.worker.failed),
            ("judge calls retried", self.worker.retries),
        ];
        for (i, (label, n)) in lines.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{:<32}{n}", format!("{label}:"))?;
        }
        Ok(())
    }
}

/// `lqo judge`: opens the configured database, backfills, and returns the summary. Stops early
/// (handing claimed jobs back) when `stop` resolves.
pub async fn command(
    settings: EvalSettings,
    database: &DatabaseConfig,
    args: JudgeArgs,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<BackfillSummary, BackfillError> {
    let now = Utc::now();
    let time = |s: &str, flag: &str| {
        parse_time(s, now, Toward::Past).map_err(|e| BackfillError::Invalid(format!("{flag} {e}")))
    };
    let since = time(&args.since, "--since")?;
    let until = match &args.until {
        Some(u) => time(u, "--until")?,
        None => now,
    };
    let store = Store::connect(&database.url, database.max_connections).await?;
    if database.run_migrations {
        store.migrate().await?;
    }
    let opts = BackfillOptions {
        since,
        until,
        model_version: args.model_version,
        sample_rate: args.sample_rate,
        retry_errors: args.retry_errors,
    };
    let (tx, rx) = watch::channel(false);
    let stopper = tokio::spawn(async move {
        stop.await;
        tx.send_replace(true);
    });
    let result = run(
        Arc::new(settings),
        EvalStores::of(&store),
        Arc::new(Metrics::new()),
        &opts,
        rx,
    )
    .await;
    stopper.abort();
    store.close().await;
    result
}
