//! From the request path to the judge queue without touching the database there: the gateway
//! offers each successful record, the deterministic sampler decides, and a sampled record's job
//! goes through a bounded channel to a task that inserts jobs in batches
//! (`ON CONFLICT DO NOTHING`) and wakes the local worker.
//!
//! A job that cannot be queued (channel full, database refusing) is counted in
//! `lqo_judge_jobs_dropped_total` and logged; because sampling is deterministic, `lqo judge
//! --since …` finds exactly those records again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::sampling::Sampler;
use crate::metrics::Metrics;
use crate::store::judge::NewJob;
use crate::store::JudgeJobs;

/// Jobs waiting for the enqueuer at most; beyond that, sampled records are dropped (counted).
pub const QUEUE_CAPACITY: usize = 10_000;
/// Jobs per insert at most.
const INSERT_BATCH: usize = 500;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long shutdown waits to save the jobs still queued.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway's handle on the judge queue. Cheap to clone; `offer` never blocks.
#[derive(Clone)]
pub struct JudgeQueue {
    tx: mpsc::Sender<NewJob>,
    sampler: Arc<Sampler>,
    metrics: Arc<Metrics>,
}

impl JudgeQueue {
    /// Queues the record for judging if the sampler picks it; true when it was queued.
    pub fn offer(&self, request_id: Uuid, model_version: &str) -> bool {
        if !self.sampler.sampled(request_id, model_version) {
            return false;
        }
        let job = NewJob {
            request_id,
            model_version: model_version.to_string(),
        };
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(e) => {
                self.metrics.judge_jobs_dropped.inc();
                let reason = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "judge stopped",
                };
                tracing::warn!(%request_id, model_version, reason, "judge job dropped; `lqo judge --since` can backfill it");
                false
            }
        }
    }

    /// Jobs waiting to be inserted.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }
}

/// Starts the task that inserts queued jobs; it wakes `notify` after each insert and, once
/// `shutdown` is set, inserts what is still queued and exits.
pub fn spawn(
    store: Arc<dyn JudgeJobs>,
    metrics: Arc<Metrics>,
    sampler: Sampler,
    notify: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) -> (JudgeQueue, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let queue = JudgeQueue {
        tx,
        sampler: Arc::new(sampler),
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(run(store, metrics, rx, notify, shutdown));
    (queue, task)
}

async fn run(
    store: Arc<dyn JudgeJobs>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<NewJob>,
    notify: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = Vec::with_capacity(INSERT_BATCH);
    loop {
        let stopping = tokio::select! {
            n = rx.recv_many(&mut buf, INSERT_BATCH) => n == 0,
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => true,
        };
        if stopping {
            rx.close();
            while let Ok(job) = rx.try_recv() {
                buf.push(job);
            }
            // Bounded, so a database outage cannot hold up shutdown; what is left is counted
            // as dropped (a backfill finds those records again).
            let mut left = buf.len();
            let flush = async {
                for chunk in buf.chunks(INSERT_BATCH) {
                    insert(store.as_ref(), &metrics, chunk, &notify, None).await;
                    left -= chunk.len();
                }
            };
            if tokio::time::timeout(FINAL_FLUSH_TIMEOUT, flush)
                .await
                .is_err()
            {
                metrics.judge_jobs_dropped.inc_by(left as u64);
                tracing::warn!(
                    jobs = left,
                    "judge jobs not saved at shutdown (database too slow)"
                );
            }
            return;
        }
        insert(store.as_ref(), &metrics, &buf, &notify, Some(&mut shutdown)).await;
        buf.clear();
    }
}

/// Inserts one batch, retrying database outages with backoff until it lands, the data is
/// refused, or (with a shutdown receiver) shutdown begins; lost jobs are counted.
async fn insert(
    store: &dyn JudgeJobs,
    metrics: &Metrics,
    jobs: &[NewJob],
    notify: &Notify,
    mut shutdown: Option<&mut watch::Receiver<bool>>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.enqueue(jobs).await {
            Ok(_) => {
                notify.notify_one();
                return;
            }
            Err(e) => {
                let give_up = e.is_data_rejected() || shutdown.is_none();
                tracing::warn!(jobs = jobs.len(), error = %e, give_up, "could not queue judge jobs");
                if give_up {
                    metrics.judge_jobs_dropped.inc_by(jobs.len() as u64);
                    return;
                }
                let mut stopping = false;
                if let Some(rx) = shutdown.as_deref_mut() {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = async { let _ = rx.wait_for(|s| *s).await; } => stopping = true,
                    }
                }
                if stopping {
                    // One last try, without waiting again.
                    shutdown = None;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
