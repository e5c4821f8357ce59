//! `lqo judge`: judge records that are already stored. Walks `llm_logs` in a time range in
//! (created_at, request_id) order, queues the records the sampler picks (the same ones live
//! sampling picks, since it is deterministic) that have no job yet, optionally re-queues failed
//! jobs, then works until every job created so far is done — alongside any running gateways,
//! which claim from the same queue.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};

use super::db::{self, NewJob};
use super::judge::{JudgeBuildError, JudgeModel};
use super::sampling::Sampler;
use super::worker::{self, Mode, Worker, WorkerStats};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

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
    config: Arc<Config>,
    store: Store,
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
        if !config.models.contains_key(mv) {
            return Err(BackfillError::Invalid(format!(
                "model version {mv:?} is not configured"
            )));
        }
    }
    let judge = JudgeModel::from_config(&config)?;
    worker::init_metrics(&config, &metrics);
    let sampler = match opts.sample_rate {
        Some(r) => Sampler::new(r, Default::default()),
        None => worker::sampler(&config),
    };
    let mut summary = BackfillSummary::default();
    if opts.retry_errors {
        summary.requeued_errors = db::retry_errors(
            &store,
            opts.since,
            opts.until,
            opts.model_version.as_deref(),
        )
        .await?;
    }
    let mut after = None;
    loop {
        let page = db::candidates(
            &store,
            opts.since,
            opts.until,
            opts.model_version.as_deref(),
            after,
            PAGE,
        )
        .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.request_id));
        let mut jobs = Vec::new();
        for c in &page {
            summary.scanned += 1;
            if !config.models.contains_key(&c.model_version) {
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
        summary.queued += db::enqueue(&store, &jobs).await?;
        if page.len() < PAGE || *shutdown.borrow() {
            break;
        }
    }
    let mark = db::now(&store).await?;
    let worker = Worker::new(store, judge, metrics, config, Arc::new(Notify::new()), None);
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
    config: Config,
    args: JudgeArgs,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<BackfillSummary, BackfillError> {
    let now = Utc::now();
    let since =
        parse_time(&args.since, now).map_err(|e| BackfillError::Invalid(format!("--since {e}")))?;
    let until = match &args.until {
        Some(u) => {
            parse_time(u, now).map_err(|e| BackfillError::Invalid(format!("--until {e}")))?
        }
        None => now,
    };
    let store = Store::connect(&config.database.url, config.database.max_connections).await?;
    if config.database.run_migrations {
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
        Arc::new(config),
        store.clone(),
        Arc::new(Metrics::new()),
        &opts,
        rx,
    )
    .await;
    stopper.abort();
    store.close().await;
    result
}

/// `2024-05-01T00:00:00Z` (RFC 3339) or a span back from `now`: `90s`, `30m`, `24h`, `7d`, `2w`.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: add a unit (s, m, h, d, w) or give an RFC 3339 time"))?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a span like 24h"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}; use s, m, h, d or w, or an RFC 3339 time"
            ))
        }
    };
    let span = n
        .checked_mul(secs)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| format!("{s:?} is too long a span"))?;
    now.checked_sub_signed(span)
        .ok_or_else(|| format!("{s:?} is too long a span"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_spans_back_from_now() {
        let now = DateTime::parse_from_rfc3339("2025-01-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s| parse_time(s, now).unwrap().to_rfc3339();
        assert_eq!(at("24h"), "2025-01-09T12:00:00+00:00");
        assert_eq!(at("90s"), "2025-01-10T11:58:30+00:00");
        assert_eq!(at("30m"), "2025-01-10T11:30:00+00:00");
        assert_eq!(at("7d"), "2025-01-03T12:00:00+00:00");
        assert_eq!(at("1w"), "2025-01-03T12:00:00+00:00");
        assert_eq!(at("2025-01-01T00:00:00+02:00"), "2024-12-31T22:00:00+00:00");
        for bad in [
            "",
            "24",
            "h",
            "24y",
            "-5h",
            "1.5h",
            "99999999999999999999d",
            "yesterday",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad:?}");
        }
        assert!(parse_time("9999999999999w", now).is_err());
    }
}
