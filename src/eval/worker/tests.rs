//! The worker's logic against the in-memory store and the built-in mock judge: no database, no
//! network, so each rule is shown on its own — a job's life from claim to scores, the ways it
//! is given up, and riding out a store outage.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use super::*;
use crate::eval::config::EvalSettings;
use crate::provider::config::{ModelConfig, Pricing, ProviderConfig};
use crate::store::feedback::NewFeedback;
use crate::store::judge::NewJob;
use crate::store::memory::MemoryStore;
use crate::store::record::{Agreement, JobStatus, LogStatus, Rating, Scale};
use crate::store::testing::sample_record;

const MODEL: &str = "m-1";

fn settings(max_attempts: u32) -> Arc<EvalSettings> {
    let judge = JudgeConfig {
        max_attempts,
        poll_interval_ms: 10,
        retry_backoff_ms: 1,
        ..JudgeConfig::default()
    };
    Arc::new(EvalSettings {
        judge,
        judge_model: MODEL.into(),
        sample_rate: 1.0,
        models: BTreeMap::from([(
            MODEL.to_string(),
            ModelConfig {
                provider: "local".into(),
                upstream_model: None,
                pricing: Pricing::default(),
                aliases: Vec::new(),
            },
        )]),
        providers: BTreeMap::from([("local".to_string(), ProviderConfig::default())]),
        content: ContentLogging::Full,
    })
}

fn worker(store: &Arc<MemoryStore>, eval: Arc<EvalSettings>, metrics: Arc<Metrics>) -> Worker {
    let judge = JudgeModel::from_settings(&eval).expect("the mock judge builds");
    let stores = EvalStores {
        judge: store.clone(),
        feedback: store.clone(),
    };
    Worker::new(stores, judge, metrics, eval, Arc::new(Notify::new()), None)
}

/// A stored record of `MODEL` with this prompt and answer, and its queued job.
async fn queued(store: &MemoryStore, prompt: &str, response: Option<&str>) -> Uuid {
    let mut r = sample_record(2);
    r.model_version = MODEL.into();
    r.prompt = prompt.into();
    r.response = response.map(str::to_string);
    r.status = if response.is_some() {
        LogStatus::Ok
    } else {
        LogStatus::Error
    };
    let id = r.request_id;
    store.add_log(r);
    let job = NewJob {
        request_id: id,
        model_version: MODEL.into(),
    };
    assert_eq!(store.enqueue(&[job]).await.unwrap(), 1);
    id
}

/// Runs one worker until every job queued so far is finished.
async fn drain(w: &Worker, store: &MemoryStore) -> WorkerStats {
    let mark = store.now().await.unwrap();
    let (_tx, rx) = watch::channel(false);
    let mode = Mode::Drain {
        created_before: mark,
    };
    tokio::time::timeout(Duration::from_secs(10), w.run(mode, rx))
        .await
        .expect("the queue drains")
}

#[tokio::test]
async fn a_judged_record_gets_scores_a_done_job_and_settles_earlier_feedback() {
    let store = Arc::new(MemoryStore::new());
    let metrics = Arc::new(Metrics::new());
    let id = queued(
        &store,
        "Capital of France? [mock:judge_score=5]",
        Some("Paris"),
    )
    .await;
    // A thumbs-up that arrived before the judge: the judge settles it.
    let rating = NewFeedback {
        request_id: id,
        model_version: MODEL.into(),
        score: 1,
        scale: Scale::Thumbs,
        rating: Rating::Positive,
        comment: None,
        user_id: None,
    };
    store.insert_feedback(&rating).await.unwrap();

    let w = worker(&store, settings(3), metrics.clone());
    let stats = drain(&w, &store).await;
    assert_eq!((stats.judged, stats.failed, stats.retries), (1, 0, 0));

    let job = store.job(id).await.unwrap().expect("a job");
    assert_eq!(job.status, JobStatus::Done);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.judge_model.as_deref(), Some(MODEL));
    let scores = store.scores(id).await.unwrap();
    let criteria: Vec<&str> = scores.iter().map(|s| s.criterion.as_str()).collect();
    assert_eq!(
        criteria,
        ["instruction_following", "overall", "truthfulness"]
    );
    assert!(scores.iter().all(|s| s.score == 5), "{scores:?}");
    let feedback = store.feedback_of(id).await.unwrap();
    assert_eq!(feedback[0].agreement, Some(Agreement::Agree));
    let agreed = metrics
        .judge_human_agreement
        .with_label_values(&[MODEL, "agree"])
        .get();
    assert_eq!(agreed, 1);
    assert_eq!(store.open_jobs(None).await.unwrap(), 0);
}

#[tokio::test]
async fn a_failed_call_is_given_up_as_no_content_without_asking_the_judge() {
    let store = Arc::new(MemoryStore::new());
    let metrics = Arc::new(Metrics::new());
    let id = queued(&store, "anything", None).await;
    let w = worker(&store, settings(3), metrics.clone());
    let stats = drain(&w, &store).await;
    assert_eq!((stats.judged, stats.failed), (0, 1));
    let job = store.job(id).await.unwrap().expect("a job");
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.error_type.as_deref(), Some("no_content"));
    // Not a judge call: no attempt counted, nothing spent.
    assert_eq!((job.attempts, job.input_tokens), (0, 0));
    let counted = metrics
        .judge_errors
        .with_label_values(&[MODEL, "no_content"])
        .get();
    assert_eq!(counted, 1);
}

#[tokio::test]
async fn unusable_replies_are_retried_then_stored_as_invalid_output() {
    let store = Arc::new(MemoryStore::new());
    let id = queued(&store, "Q [mock:judge_malformed]", Some("A")).await;
    let w = worker(&store, settings(2), Arc::new(Metrics::new()));
    let stats = drain(&w, &store).await;
    assert_eq!((stats.judged, stats.failed, stats.retries), (0, 1, 1));
    let job = store.job(id).await.unwrap().expect("a job");
    assert_eq!(job.status, JobStatus::Error);
    assert_eq!(job.error_type.as_deref(), Some("invalid_output"));
    assert_eq!(job.attempts, 2);
    // Both calls were paid for and are on the job.
    assert!(job.input_tokens > 0 && job.output_tokens > 0, "{job:?}");
    assert!(store.scores(id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_store_outage_is_waited_out_and_the_job_judged_after() {
    let store = Arc::new(MemoryStore::new());
    let id = queued(&store, "Q", Some("A")).await;
    store.set_down(true);
    let w = worker(&store, settings(3), Arc::new(Metrics::new()));
    let (tx, rx) = watch::channel(false);
    let run = tokio::spawn(async move { w.run(Mode::Serve, rx).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // The worker keeps asking through the outage (and neither gives up nor spins)…
    while store.refused_calls() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker stopped asking"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.set_down(false);
    // …and judges the job once the store answers again.
    loop {
        let job = store.job(id).await.unwrap().expect("a job");
        if job.status == JobStatus::Done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never judged: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tx.send_replace(true);
    let stats = run.await.unwrap();
    assert_eq!((stats.judged, stats.failed, stats.lost_claims), (1, 0, 0));
}
