//! Quality evaluation end to end: heuristics on every answer, the LLM judge worker against the
//! real mock upstream (valid, fenced, malformed and failing judge replies), two workers on one
//! database, crash recovery, backfill, human feedback and judge–human agreement — on real
//! PostgreSQL and SQLite, through the real HTTP app.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{sample, Harness};
use llm_quality_observer::config::Config;
use llm_quality_observer::eval::backfill::{self, BackfillOptions};
use llm_quality_observer::eval::judge::JudgeModel;
use llm_quality_observer::eval::worker::{EvalStores, Mode, Worker, WorkerSettings};
use llm_quality_observer::eval::EvalSettings;
use llm_quality_observer::eval::{self, EvalDetails};
use llm_quality_observer::metrics::Metrics;
use llm_quality_observer::mock_upstream::{self, MockUpstreamConfig};
use llm_quality_observer::store::judge::{NewJob, Spend};
use llm_quality_observer::store::{testing, LogRecord, Store};
use llm_quality_observer::timespec::{parse_time, Toward};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// Judge every answer with short waits, so tests see results in milliseconds.
fn judge_everything(cfg: &mut Config) {
    cfg.judge.enabled = true;
    cfg.judge.sample_rate = Some(1.0);
    cfg.judge.poll_interval_ms = 50;
    cfg.judge.retry_backoff_ms = 10;
    cfg.judge.timeout_secs = 10;
    cfg.judge.lease_secs = 60;
}

fn request_id(body: &Value) -> Uuid {
    Uuid::parse_str(body["request_id"].as_str().expect("request_id")).expect("uuid")
}

async fn chat(h: &Harness, prompt: &str) -> Uuid {
    let resp = h
        .post_json("/chat", json!({"prompt": prompt, "user_id": "u-eval"}))
        .await;
    assert_eq!(resp.status(), 200, "{prompt}");
    request_id(&resp.json().await.unwrap())
}

/// Waits until the judge has finished with a record (done or error).
async fn judged(store: &Store, id: Uuid) -> EvalDetails {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = eval::details(store, id).await.expect("details");
        let status = d.judge.as_ref().and_then(|j| j.status);
        if matches!(status.map(|s| s.as_str()), Some("done" | "error")) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "record {id} never judged: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn scores_of(d: &EvalDetails) -> Vec<(String, i16)> {
    d.judge
        .as_ref()
        .map(|j| {
            j.scores
                .iter()
                .map(|s| (s.criterion.clone(), s.score))
                .collect()
        })
        .unwrap_or_default()
}

fn metric(m: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(m, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} missing"))
}

// ---------------------------------------------------------------------------------------------
// Heuristics.
// ---------------------------------------------------------------------------------------------

async fn heuristics_label_every_answer(h: &Harness) {
    let good = chat(h, "What is the capital of France?").await;
    let truncated = chat(h, "Tell me a long story [mock:truncate]").await;
    let forbidden = chat(h, "Say the codename Project Falcon please").await;
    let resp = h
        .post_json(
            "/v1/chat/completions",
            json!({
                "messages": [{"role": "user", "content": "Answer in JSON [mock:bad_json]"}],
                "response_format": {"type": "json_object"},
            }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let bad_json = Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).unwrap();
    let resp = h
        .post_json(
            "/v1/chat/completions",
            json!({
                "messages": [{"role": "user", "content": "Answer in JSON"}],
                "response_format": {"type": "json_object"},
                "stream": true,
            }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let streamed_json = Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).unwrap();
    let _ = resp.text().await.unwrap();
    let failed = h
        .post_json(
            "/chat",
            json!({"prompt": "boom [mock:status=500]", "user_id": "u"}),
        )
        .await;
    assert_eq!(failed.status(), 502);
    let failed = Uuid::parse_str(failed.headers()["x-request-id"].to_str().unwrap()).unwrap();

    let rec = h.record(good).await;
    assert_eq!(rec.heuristic_label.map(|l| l.as_str()), Some("good"));
    assert_eq!(rec.heuristic_results, json!([]));

    let rec = h.record(truncated).await;
    assert_eq!(rec.heuristic_label.map(|l| l.as_str()), Some("warn"));
    assert_eq!(rec.heuristic_results[0]["check"], "truncated");
    assert_eq!(rec.heuristic_results[0]["result"], "warn");

    let rec = h.record(forbidden).await;
    assert_eq!(rec.heuristic_label.map(|l| l.as_str()), Some("bad"));
    assert_eq!(rec.heuristic_results[0]["check"], "forbidden_terms");
    assert!(rec.heuristic_results[0]["reason"]
        .as_str()
        .unwrap()
        .contains("project falcon"));

    let rec = h.record(bad_json).await;
    assert_eq!(rec.heuristic_label.map(|l| l.as_str()), Some("bad"));
    assert_eq!(rec.heuristic_results[0]["check"], "json_valid");

    let rec = h.record(streamed_json).await;
    assert!(rec.streamed);
    assert_eq!(
        rec.heuristic_label.map(|l| l.as_str()),
        Some("good"),
        "{rec:?}"
    );

    // Failed calls have no answer to check.
    let rec = h.record(failed).await;
    assert_eq!(rec.heuristic_label, None);

    let m = h.metrics().await;
    let label = |l| {
        metric(
            &m,
            "lqo_heuristic_label_total",
            &[("model_version", "gpt-test"), ("label", l)],
        )
    };
    assert_eq!(label("good"), 2.0);
    assert_eq!(label("warn"), 1.0);
    assert_eq!(label("bad"), 2.0);
    let check = |c, r| {
        metric(
            &m,
            "lqo_heuristic_checks_total",
            &[("model_version", "gpt-test"), ("check", c), ("result", r)],
        )
    };
    assert_eq!(check("empty", "pass"), 5.0);
    assert_eq!(check("truncated", "fail"), 1.0);
    assert_eq!(check("forbidden_terms", "fail"), 1.0);
    assert_eq!(check("json_valid", "fail"), 1.0);
    assert_eq!(check("json_valid", "pass"), 1.0);
    assert_eq!(check("refusal", "fail"), 0.0);
    // Series of other configured versions exist at zero.
    assert_eq!(
        metric(
            &m,
            "lqo_heuristic_label_total",
            &[("model_version", "gpt-resp"), ("label", "bad")]
        ),
        0.0
    );
}

fn forbid_falcon(cfg: &mut Config) {
    cfg.heuristics.forbidden_terms = vec!["Project Falcon".into()];
    cfg.judge.enabled = false;
}

#[tokio::test]
async fn heuristics_label_every_answer_in_postgres() {
    let h = Harness::postgres_with(forbid_falcon).await;
    heuristics_label_every_answer(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn heuristics_label_every_answer_in_sqlite() {
    let h = Harness::sqlite_with(forbid_falcon).await;
    heuristics_label_every_answer(&h).await;
    h.app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The judge inside the gateway.
// ---------------------------------------------------------------------------------------------

async fn judge_scores_sampled_answers(h: &Harness) {
    let plain = chat(h, "What is the capital of France?").await;
    let fenced = chat(h, "Explain DNS [mock:judge_fenced]").await;
    let once = chat(h, "Explain TCP [mock:judge_malformed_once]").await;
    let forced = chat(h, "Explain UDP [mock:judge_score=2]").await;
    let malformed = chat(h, "Explain IP [mock:judge_malformed]").await;
    let failing = chat(h, "Explain BGP [mock:judge_status=503]").await;
    let broken = h
        .post_json(
            "/chat",
            json!({"prompt": "x [mock:status=500]", "user_id": "u"}),
        )
        .await;
    assert_eq!(broken.status(), 502);
    let broken = Uuid::parse_str(broken.headers()["x-request-id"].to_str().unwrap()).unwrap();

    for id in [plain, fenced, once] {
        let d = judged(&h.store, id).await;
        let job = d.judge.as_ref().unwrap().job.as_ref().unwrap();
        assert_eq!(job.status.as_str(), "done", "{d:?}");
        let s = scores_of(&d);
        assert_eq!(
            s.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
            vec!["instruction_following", "overall", "truthfulness"]
        );
        assert!(s.iter().all(|(_, v)| (3..=5).contains(v)), "{s:?}");
        assert_eq!(job.judge_model.as_deref(), Some("gpt-test"));
        assert!(job.input_tokens > 0 && job.output_tokens > 0 && job.cost_usd > 0.0);
        let r = &d.judge.as_ref().unwrap().scores[0];
        assert!(r.rationale.as_deref().unwrap().contains("Mock judge"));
    }
    let d = judged(&h.store, once).await;
    assert_eq!(d.judge.unwrap().job.unwrap().attempts, 2);
    let d = judged(&h.store, forced).await;
    assert!(scores_of(&d).iter().all(|(_, v)| *v == 2));

    let d = judged(&h.store, malformed).await;
    let job = d.judge.as_ref().unwrap().job.clone().unwrap();
    assert_eq!(job.status.as_str(), "error");
    assert_eq!(job.error_type.as_deref(), Some("invalid_output"));
    assert_eq!(job.attempts, 3);
    assert!(job.last_error.unwrap().contains("no JSON object"));
    assert!(scores_of(&d).is_empty());

    let d = judged(&h.store, failing).await;
    let job = d.judge.as_ref().unwrap().job.clone().unwrap();
    assert_eq!(job.status.as_str(), "error");
    assert_eq!(job.error_type.as_deref(), Some("upstream_status"));
    assert_eq!(job.attempts, 3);
    assert!(job.last_error.unwrap().contains("503"));

    // Failed calls are not sampled.
    h.record(broken).await;
    assert_eq!(eval::details(&h.store, broken).await.unwrap().judge, None);

    // GET /v1/logs/{id} carries the evaluation next to the record.
    let body: Value = h
        .http
        .get(h.url(&format!("/v1/logs/{forced}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["heuristic_label"], "good");
    assert_eq!(body["judge"]["status"], "done");
    assert_eq!(body["judge"]["scores"].as_array().unwrap().len(), 3);
    assert_eq!(body["judge"]["scores"][1]["criterion"], "overall");
    assert_eq!(body["judge"]["scores"][1]["score"], 2);
    assert_eq!(body["feedback"], json!([]));

    let m = h.metrics().await;
    let mv = ("model_version", "gpt-test");
    assert_eq!(
        metric(&m, "lqo_judge_score_count", &[mv, ("criterion", "overall")]),
        4.0
    );
    assert_eq!(
        metric(
            &m,
            "lqo_judge_score_bucket",
            &[mv, ("criterion", "overall"), ("le", "2")]
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "lqo_judge_requests_total", &[mv, ("status", "ok")]),
        4.0
    );
    assert_eq!(
        metric(&m, "lqo_judge_requests_total", &[mv, ("status", "error")]),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "lqo_judge_errors_total",
            &[mv, ("error_type", "invalid_output")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "lqo_judge_errors_total",
            &[mv, ("error_type", "upstream_status")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "lqo_judge_retries_total",
            &[mv, ("reason", "invalid_output")]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            "lqo_judge_retries_total",
            &[mv, ("reason", "upstream_error")]
        ),
        2.0
    );
    // Judge traffic is metered on its own series, never as user traffic.
    let judge = ("judge_model", "gpt-test");
    assert!(
        metric(
            &m,
            "lqo_judge_tokens_total",
            &[judge, ("token_type", "input")]
        ) > 0.0
    );
    assert!(metric(&m, "lqo_judge_cost_usd_total", &[judge]) > 0.0);
    // plain, fenced, forced: 1 call each; once: 2; malformed and failing: 3 each.
    assert_eq!(
        metric(&m, "lqo_judge_duration_seconds_count", &[judge]),
        11.0
    );
    assert_eq!(
        metric(
            &m,
            "lqo_requests_total",
            &[mv, ("endpoint", "chat"), ("status", "ok")]
        ),
        6.0
    );
    // Every series of another configured version exists at zero.
    assert_eq!(
        metric(
            &m,
            "lqo_judge_score_count",
            &[("model_version", "gpt-resp"), ("criterion", "truthfulness")]
        ),
        0.0
    );
    // The backlog empties (refreshed by the idle worker every poll).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metric(&h.metrics().await, "lqo_judge_backlog", &[]) != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "backlog never emptied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn judge_scores_sampled_answers_in_postgres() {
    let h = Harness::postgres_with(judge_everything).await;
    judge_scores_sampled_answers(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn judge_scores_sampled_answers_in_sqlite() {
    let h = Harness::sqlite_with(judge_everything).await;
    judge_scores_sampled_answers(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn sample_rate_zero_for_a_version_judges_none_of_it() {
    let h = Harness::postgres_with(|cfg| {
        judge_everything(cfg);
        cfg.judge
            .per_model_sample_rate
            .insert("gpt-test".into(), 0.0);
    })
    .await;
    let skipped = chat(&h, "not sampled").await;
    let resp = h
        .post_json(
            "/chat",
            json!({"prompt": "sampled", "user_id": "u", "model_version": "mock-local"}),
        )
        .await;
    let sampled = request_id(&resp.json().await.unwrap());
    judged(&h.store, sampled).await;
    h.record(skipped).await;
    assert_eq!(eval::details(&h.store, skipped).await.unwrap().judge, None);
    h.app.stop().await;
}

#[tokio::test]
async fn shutdown_hands_an_in_progress_job_back_to_the_queue() {
    let h = Harness::postgres_with(judge_everything).await;
    let id = chat(&h, "slow judge [mock:judge_delay_ms=5000]").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = eval::details(&h.store, id).await.unwrap();
        if d.judge.and_then(|j| j.status).map(|s| s.as_str()) == Some("running") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    let store = h.store.clone();
    h.app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown waited for the judge"
    );
    let job = eval::details(&store, id)
        .await
        .unwrap()
        .judge
        .unwrap()
        .job
        .unwrap();
    assert_eq!(job.status.as_str(), "pending");
    assert_eq!(job.attempts, 0);
}

// ---------------------------------------------------------------------------------------------
// Workers against the queue directly.
// ---------------------------------------------------------------------------------------------

/// A mock upstream with some latency, so concurrent workers overlap; returns its address.
async fn slow_upstream() -> std::net::SocketAddr {
    let (addr, _task) = mock_upstream::spawn(MockUpstreamConfig {
        port: 0,
        latency_ms: 5,
        ..MockUpstreamConfig::default()
    })
    .await
    .unwrap();
    addr
}

async fn upstream_requests(addr: std::net::SocketAddr) -> u64 {
    let v: Value = reqwest::get(format!("http://{addr}/mock/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["requests"].as_u64().unwrap()
}

fn worker_config(upstream: std::net::SocketAddr) -> Arc<Config> {
    let mut cfg = crate::common::config(upstream);
    judge_everything(&mut cfg);
    cfg.judge.batch_size = 5;
    cfg.judge.concurrency = 3;
    cfg.validate().unwrap();
    Arc::new(cfg)
}

fn eval_of(cfg: &Config) -> Arc<EvalSettings> {
    Arc::new(cfg.eval_settings())
}

fn worker(store: &Store, cfg: &Arc<Config>, metrics: Arc<Metrics>) -> Worker {
    let eval = eval_of(cfg);
    let judge = JudgeModel::from_settings(&eval).unwrap();
    Worker::new(
        EvalStores::of(store),
        judge,
        metrics,
        eval,
        Arc::new(Notify::new()),
        None,
    )
}

/// `n` successful records of gpt-test, stored.
async fn stored_records(store: &Store, n: usize) -> Vec<LogRecord> {
    let records: Vec<LogRecord> = (0..n)
        .map(|i| {
            let mut r = testing::sample_record(i * 5 + 1);
            r.model_version = "gpt-test".into();
            r.status = llm_quality_observer::store::record::LogStatus::Ok;
            r.response = Some(format!("answer {i}"));
            r
        })
        .collect();
    assert_eq!(store.logs.insert_batch(&records).await.unwrap(), n as u64);
    records
}

async fn enqueue_all(store: &Store, records: &[LogRecord]) {
    let jobs: Vec<NewJob> = records
        .iter()
        .map(|r| NewJob {
            request_id: r.request_id,
            model_version: r.model_version.clone(),
        })
        .collect();
    assert_eq!(store.judge.enqueue(&jobs).await.unwrap(), jobs.len() as u64);
    // A second enqueue of the same records is a no-op.
    assert_eq!(store.judge.enqueue(&jobs).await.unwrap(), 0);
}

async fn count(store: &Store, sql: &str) -> i64 {
    testing::fetch_i64(store, sql).await
}

async fn two_workers_judge_every_record_exactly_once(store: Store) {
    let up = slow_upstream().await;
    let cfg = worker_config(up);
    let n = 120;
    let records = stored_records(&store, n).await;
    enqueue_all(&store, &records).await;
    let mark = store.judge.now().await.unwrap();
    let (m1, m2) = (Arc::new(Metrics::new()), Arc::new(Metrics::new()));
    let (w1, w2) = (
        worker(&store, &cfg, m1.clone()),
        worker(&store, &cfg, m2.clone()),
    );
    let (_tx, rx) = watch::channel(false);
    let mode = Mode::Drain {
        created_before: mark,
    };
    let (s1, s2) = tokio::join!(w1.run(mode, rx.clone()), w2.run(mode, rx.clone()));
    assert_eq!(s1.judged + s2.judged, n as u64, "{s1:?} {s2:?}");
    assert!(
        s1.judged > 0 && s2.judged > 0,
        "one worker did everything: {s1:?} {s2:?}"
    );
    assert_eq!(s1.lost_claims + s2.lost_claims, 0);
    // Exactly one judge call per record reached the upstream.
    assert_eq!(upstream_requests(up).await, n as u64);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM judge_scores").await,
        3 * n as i64
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(DISTINCT request_id) FROM judge_scores"
        )
        .await,
        n as i64
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM judge_jobs WHERE status = 'done' AND attempts = 1"
        )
        .await,
        n as i64
    );
    // Each worker observed what it judged, and together everything once.
    let observed = |m: &Metrics| {
        m.judge_score
            .with_label_values(&["gpt-test", "overall"])
            .get_sample_count()
    };
    assert_eq!(observed(&m1) + observed(&m2), n as u64);
    assert_eq!(observed(&m1), s1.judged);
}

#[tokio::test]
async fn two_workers_on_one_postgres_judge_every_record_exactly_once() {
    let (store, _db) = testing::fresh_postgres().await.unwrap();
    two_workers_judge_every_record_exactly_once(store).await;
}

#[tokio::test]
async fn two_workers_on_one_sqlite_file_judge_every_record_exactly_once() {
    let (store, _dir) = testing::fresh_sqlite().await.unwrap();
    two_workers_judge_every_record_exactly_once(store).await;
}

async fn a_dead_workers_jobs_are_taken_over_after_the_lease(store: Store) {
    let up = slow_upstream().await;
    let cfg = worker_config(up);
    let records = stored_records(&store, 4).await;
    enqueue_all(&store, &records).await;
    // A worker claims everything and dies without a word.
    let lease = Duration::from_millis(300);
    let claimed = store.judge.claim(10, lease, None).await.unwrap();
    assert_eq!(claimed.len(), 4);
    assert!(store.judge.claim(10, lease, None).await.unwrap().is_empty());
    let mark = store.judge.now().await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let settings = WorkerSettings {
        lease,
        ..WorkerSettings::from_judge(&cfg.judge)
    };
    let w = worker(&store, &cfg, metrics).with_settings(settings);
    let (_tx, rx) = watch::channel(false);
    let stats = w
        .run(
            Mode::Drain {
                created_before: mark,
            },
            rx,
        )
        .await;
    assert_eq!(stats.judged, 4);
    // The dead claim counted as an attempt.
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM judge_jobs WHERE status = 'done' AND attempts = 2"
        )
        .await,
        4
    );
    // The dead worker coming back cannot finish what it no longer holds.
    let late = store
        .judge
        .complete(&claimed[0], 1, "gpt-test", Spend::default(), &[])
        .await
        .unwrap();
    assert!(!late);
}

#[tokio::test]
async fn a_dead_workers_jobs_are_taken_over_in_postgres() {
    let (store, _db) = testing::fresh_postgres().await.unwrap();
    a_dead_workers_jobs_are_taken_over_after_the_lease(store).await;
}

#[tokio::test]
async fn a_dead_workers_jobs_are_taken_over_in_sqlite() {
    let (store, _dir) = testing::fresh_sqlite().await.unwrap();
    a_dead_workers_jobs_are_taken_over_after_the_lease(store).await;
}

#[tokio::test]
async fn a_job_waits_for_its_record_and_gives_up_when_it_never_comes() {
    let (store, _db) = testing::fresh_postgres().await.unwrap();
    let up = slow_upstream().await;
    let cfg = worker_config(up);
    let record = {
        let mut r = testing::sample_record(1);
        r.model_version = "gpt-test".into();
        r
    };
    let ghost = Uuid::now_v7();
    store
        .judge
        .enqueue(&[
            NewJob {
                request_id: record.request_id,
                model_version: "gpt-test".into(),
            },
            NewJob {
                request_id: ghost,
                model_version: "gpt-test".into(),
            },
        ])
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let settings = WorkerSettings {
        record_wait: Duration::from_millis(800),
        ..WorkerSettings::from_judge(&cfg.judge)
    };
    let w = worker(&store, &cfg, metrics.clone()).with_settings(settings);
    let (tx, rx) = watch::channel(false);
    let run = tokio::spawn(async move { w.run(Mode::Serve, rx).await });
    // The record reaches the database after its job was queued.
    tokio::time::sleep(Duration::from_millis(200)).await;
    store
        .logs
        .insert_batch(std::slice::from_ref(&record))
        .await
        .unwrap();
    let d = judged(&store, record.request_id).await;
    assert_eq!(d.judge.unwrap().job.unwrap().attempts, 1);
    let d = judged(&store, ghost).await;
    let job = d.judge.unwrap().job.unwrap();
    assert_eq!(job.error_type.as_deref(), Some("record_missing"));
    assert_eq!(job.attempts, 0);
    tx.send_replace(true);
    let stats = run.await.unwrap();
    assert_eq!((stats.judged, stats.failed), (1, 1));
    assert!(stats.waiting_for_record >= 2, "{stats:?}");
    assert_eq!(
        metrics
            .judge_errors
            .with_label_values(&["gpt-test", "record_missing"])
            .get(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Backfill.
// ---------------------------------------------------------------------------------------------

async fn backfill_judges_stored_records(store: Store) {
    let up = slow_upstream().await;
    let cfg = worker_config(up);
    let records = stored_records(&store, 30).await;
    let mut unconfigured = testing::sample_record(2);
    unconfigured.model_version = "retired-model".into();
    store.logs.insert_batch(&[unconfigured]).await.unwrap();
    let opts = BackfillOptions {
        since: parse_time("2023-11-01T00:00:00Z", chrono::Utc::now(), Toward::Past).unwrap(),
        until: chrono::Utc::now(),
        model_version: None,
        sample_rate: None,
        retry_errors: false,
    };
    let (_tx, rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let s = backfill::run(
        eval_of(&cfg),
        EvalStores::of(&store),
        metrics.clone(),
        &opts,
        rx.clone(),
    )
    .await
    .unwrap();
    assert_eq!(s.scanned, 31);
    assert_eq!(s.skipped_unconfigured, 1);
    assert_eq!((s.sampled, s.queued, s.worker.judged), (30, 30, 30));
    for r in &records {
        let d = eval::details(&store, r.request_id).await.unwrap();
        assert_eq!(scores_of(&d).len(), 3);
    }
    // Again: nothing new to do.
    let again = backfill::run(
        eval_of(&cfg),
        EvalStores::of(&store),
        metrics.clone(),
        &opts,
        rx.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        (again.sampled, again.queued, again.worker.judged),
        (30, 0, 0)
    );

    // A sample rate picks a deterministic subset: the same one every time.
    let (fresh, _guard) = testing::fresh_sqlite().await.unwrap();
    let copies: Vec<LogRecord> = records.clone();
    fresh.logs.insert_batch(&copies).await.unwrap();
    let half = BackfillOptions {
        sample_rate: Some(0.5),
        ..opts.clone()
    };
    let s1 = backfill::run(
        eval_of(&cfg),
        EvalStores::of(&fresh),
        metrics.clone(),
        &half,
        rx.clone(),
    )
    .await
    .unwrap();
    let picked = records
        .iter()
        .filter(|r| {
            eval::sampling::Sampler::new(0.5, Default::default()).sampled(r.request_id, "gpt-test")
        })
        .count() as u64;
    assert_eq!(s1.sampled, picked);
    assert!(s1.sampled < 30);

    let bad = BackfillOptions {
        since: opts.until,
        ..opts.clone()
    };
    let stores = EvalStores::of(&store);
    assert!(backfill::run(eval_of(&cfg), stores, metrics, &bad, rx)
        .await
        .is_err());
}

#[tokio::test]
async fn backfill_judges_stored_records_in_postgres() {
    let (store, _db) = testing::fresh_postgres().await.unwrap();
    backfill_judges_stored_records(store).await;
}

#[tokio::test]
async fn backfill_judges_stored_records_in_sqlite() {
    let (store, _dir) = testing::fresh_sqlite().await.unwrap();
    backfill_judges_stored_records(store).await;
}

#[tokio::test]
async fn backfill_retries_failed_jobs_on_request() {
    let (store, _db) = testing::fresh_postgres().await.unwrap();
    let up = slow_upstream().await;
    let cfg = worker_config(up);
    let r = stored_records(&store, 1).await.remove(0);
    let (_tx, rx) = watch::channel(false);
    let opts = BackfillOptions {
        since: parse_time("2023-11-01T00:00:00Z", chrono::Utc::now(), Toward::Past).unwrap(),
        until: chrono::Utc::now(),
        model_version: Some("gpt-test".into()),
        sample_rate: Some(1.0),
        retry_errors: true,
    };
    // Make the first judging fail for good: a single attempt, and a malformed reply.
    let mut strict = (*cfg).clone();
    strict.judge.max_attempts = 1;
    sqlx_exec(
        &store,
        &format!(
            "UPDATE llm_logs SET prompt = 'p [mock:judge_malformed]' WHERE request_id = '{}'",
            r.request_id
        ),
    )
    .await;
    let s = backfill::run(
        eval_of(&strict),
        EvalStores::of(&store),
        Arc::new(Metrics::new()),
        &opts,
        rx.clone(),
    )
    .await
    .unwrap();
    assert_eq!((s.worker.judged, s.worker.failed), (0, 1));
    sqlx_exec(
        &store,
        &format!(
            "UPDATE llm_logs SET prompt = 'p' WHERE request_id = '{}'",
            r.request_id
        ),
    )
    .await;
    let stores = EvalStores::of(&store);
    let s = backfill::run(eval_of(&cfg), stores, Arc::new(Metrics::new()), &opts, rx)
        .await
        .unwrap();
    assert_eq!((s.requeued_errors, s.queued, s.worker.judged), (1, 0, 1));
    let job = eval::details(&store, r.request_id)
        .await
        .unwrap()
        .judge
        .unwrap()
        .job
        .unwrap();
    assert_eq!((job.status.as_str(), job.attempts), ("done", 1));
}

async fn sqlx_exec(store: &Store, sql: &str) {
    testing::execute(store, sql).await;
}

// ---------------------------------------------------------------------------------------------
// Feedback and agreement.
// ---------------------------------------------------------------------------------------------

async fn feedback(h: &Harness, body: Value) -> (u16, Value) {
    let resp = h.post_json("/v1/feedback", body).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn feedback_is_validated_stored_and_counted(h: &Harness) {
    let id = chat(h, "Rate me").await;
    let (status, body) = feedback(
        h,
        json!({"request_id": id, "score": 1, "comment": "great", "user_id": "alice"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["scale"], "thumbs");
    assert_eq!(body["rating"], "positive");
    assert_eq!(body["model_version"], "gpt-test");
    assert_eq!(body["comment"], "great");
    assert!(body["id"].as_i64().unwrap() > 0);
    let (_, body) = feedback(h, json!({"request_id": id, "score": 3, "user_id": "bob"})).await;
    assert_eq!(
        (body["scale"].as_str(), body["rating"].as_str()),
        (Some("stars"), Some("neutral"))
    );
    let (_, body) = feedback(
        h,
        json!({"request_id": id, "score": 1, "scale": "stars", "user_id": "carol"}),
    )
    .await;
    assert_eq!(body["rating"], "negative");
    let (_, body) = feedback(h, json!({"request_id": id, "score": -1})).await;
    assert_eq!(body["rating"], "negative");

    for unknown in [json!(Uuid::now_v7()), json!("not-a-uuid")] {
        let (status, body) = feedback(h, json!({"request_id": unknown, "score": 1})).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "request_not_found");
        assert_eq!(body["error"]["param"], "request_id");
    }

    for (bad, param) in [
        (json!({"request_id": id, "score": 0}), "score"),
        (json!({"request_id": id, "score": 6}), "score"),
        (json!({"request_id": id, "score": -2}), "score"),
        (json!({"request_id": id, "score": 4.5}), "score"),
        (json!({"request_id": id, "score": "5"}), "score"),
        (
            json!({"request_id": id, "score": 3, "scale": "thumbs"}),
            "score",
        ),
        (
            json!({"request_id": id, "score": 1, "scale": "hearts"}),
            "scale",
        ),
        // Not an id this gateway can have given or taken (a client's is 1 to 128 characters).
        (
            json!({"request_id": "x".repeat(129), "score": 1}),
            "request_id",
        ),
        (json!({"request_id": " ", "score": 1}), "request_id"),
        (
            json!({"request_id": id, "score": 1, "comment": "x".repeat(4001)}),
            "comment",
        ),
        (
            json!({"request_id": id, "score": 1, "user_id": "u".repeat(257)}),
            "user_id",
        ),
        (json!({"request_id": id, "score": 1, "stars": 5}), ""),
        (json!({"score": 1}), ""),
    ] {
        let (status, body) = feedback(h, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        if !param.is_empty() {
            assert_eq!(body["error"]["param"], param, "{bad}: {body}");
        }
    }
    let resp = h
        .http
        .post(h.url("/v1/feedback"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let m = h.metrics().await;
    let rating = |r| {
        metric(
            &m,
            "lqo_feedback_total",
            &[("model_version", "gpt-test"), ("rating", r)],
        )
    };
    assert_eq!(
        (rating("positive"), rating("neutral"), rating("negative")),
        (1.0, 1.0, 2.0)
    );

    let body: Value = h
        .http
        .get(h.url(&format!("/v1/logs/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fb = body["feedback"].as_array().unwrap();
    assert_eq!(fb.len(), 4);
    assert_eq!(fb[0]["user_id"], "alice");
    assert_eq!(fb[0]["score"], 1);
    assert_eq!(fb[3]["score"], -1);
    assert_eq!(body["judge"], Value::Null);

    // Documented in the OpenAPI spec, the evaluation included in the single-log view.
    let spec: Value = h
        .http
        .get(h.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"]["/v1/feedback"]["post"].is_object());
    assert!(spec["paths"]["/v1/feedback/agreement"]["get"].is_object());
    let schemas = &spec["components"]["schemas"];
    for name in [
        "FeedbackRequest",
        "FeedbackRow",
        "EvalDetails",
        "AgreementBody",
    ] {
        assert!(schemas[name].is_object(), "{name} missing from openapi");
    }
    assert!(
        spec["components"]["schemas"]["LogDetail"]
            .to_string()
            .contains("EvalDetails"),
        "{}",
        spec["components"]["schemas"]["LogDetail"]
    );
}

fn no_judge(cfg: &mut Config) {
    cfg.judge.enabled = false;
}

#[tokio::test]
async fn feedback_is_validated_stored_and_counted_in_postgres() {
    let h = Harness::postgres_with(no_judge).await;
    feedback_is_validated_stored_and_counted(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn feedback_is_validated_stored_and_counted_in_sqlite() {
    let h = Harness::sqlite_with(no_judge).await;
    feedback_is_validated_stored_and_counted(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn feedback_sent_right_after_the_answer_finds_its_record() {
    let h = Harness::postgres_with(|cfg| {
        no_judge(cfg);
        // The record takes up to 300 ms to reach the database.
        cfg.writer.flush_interval_ms = 300;
        cfg.writer.batch_size = 10_000;
    })
    .await;
    let id = chat(&h, "quick").await;
    let (status, body) = feedback(&h, json!({"request_id": id, "score": 5})).await;
    assert_eq!(status, 201, "{body}");
    h.app.stop().await;
}

async fn judge_and_humans_agreement_is_counted_once(h: &Harness) {
    // Judged first, rated after: the rating settles it.
    let high = chat(h, "A [mock:judge_score=5]").await;
    judged(&h.store, high).await;
    let (_, body) = feedback(h, json!({"request_id": high, "score": -1, "user_id": "u1"})).await;
    assert_eq!(body["agreement"], "disagree");
    let (_, body) = feedback(h, json!({"request_id": high, "score": 5, "user_id": "u2"})).await;
    assert_eq!(body["agreement"], "agree");

    // Rated first, judged after: the judge settles it.
    let low = chat(h, "B [mock:judge_score=1] [mock:judge_delay_ms=700]").await;
    let (_, body) = feedback(h, json!({"request_id": low, "score": -1, "user_id": "u1"})).await;
    assert_eq!(body["agreement"], Value::Null);
    judged(&h.store, low).await;
    // The worker compares right after it commits the scores.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let agreement = loop {
        let d = eval::details(&h.store, low).await.unwrap();
        if let Some(a) = d.feedback[0].agreement {
            break a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never compared: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(agreement.as_str(), "agree");

    // Neutral on either side is not compared.
    let mid = chat(h, "C [mock:judge_score=3]").await;
    judged(&h.store, mid).await;
    let (_, body) = feedback(h, json!({"request_id": mid, "score": 1, "user_id": "u1"})).await;
    assert_eq!(body["agreement"], "not_comparable");
    let (_, body) = feedback(h, json!({"request_id": high, "score": 3, "user_id": "u3"})).await;
    assert_eq!(body["agreement"], "not_comparable");

    // Each answer counts once. `high`: one rating agrees, one disagrees (a tie: not compared);
    // the metric counted it once, when its first rating (a disagreement) was compared. `low`
    // agrees. `mid`: the judge was neutral.
    let m = h.metrics().await;
    let a = |x| {
        metric(
            &m,
            "lqo_judge_human_agreement_total",
            &[("model_version", "gpt-test"), ("agreement", x)],
        )
    };
    assert_eq!((a("agree"), a("disagree")), (1.0, 1.0));

    let report: Value = h
        .http
        .get(h.url("/v1/feedback/agreement?since=1h"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = report["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    let row = &rows[0];
    assert_eq!(row["model_version"], "gpt-test");
    assert_eq!(row["feedback"], 5);
    assert_eq!(row["judged"], 3);
    assert_eq!(row["compared"], 1);
    assert_eq!(row["agree"], 1);
    assert_eq!(row["disagree"], 0);
    assert_eq!(row["not_comparable"], 2);
    assert_eq!(row["agreement_rate"], 1.0);
    assert_eq!(row["mean_judge_score"], 3.0);

    for (q, param) in [
        ("since=yesterday", "since"),
        ("since=1h&until=2h", "since"),
        ("model_version=nope", "model_version"),
    ] {
        let resp = h
            .http
            .get(h.url(&format!("/v1/feedback/agreement?{q}")))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert!(status == 400 || status == 404, "{q}: {status}");
        assert_eq!(body["error"]["param"], param, "{q}: {body}");
    }
    let resp = h
        .http
        .get(h.url("/v1/feedback/agreement?bogus=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn judge_and_humans_agreement_is_counted_once_in_postgres() {
    let h = Harness::postgres_with(judge_everything).await;
    judge_and_humans_agreement_is_counted_once(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn judge_and_humans_agreement_is_counted_once_in_sqlite() {
    let h = Harness::sqlite_with(judge_everything).await;
    judge_and_humans_agreement_is_counted_once(&h).await;
    h.app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Zero setup.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn zero_setup_judges_every_answer_with_the_builtin_mock() {
    let mut cfg = Config::load_with(None, &|_| None).unwrap();
    assert!(cfg.judge.enabled);
    assert_eq!(cfg.judge_model(), "mock-1");
    assert_eq!(cfg.judge_sample_rate(), 1.0);
    let spool = tempfile::tempdir().unwrap();
    cfg.writer.spool_dir = spool.path().join("spool");
    let (store, _dir) = testing::fresh_sqlite().await.unwrap();
    let app = llm_quality_observer::app::App::with_store(cfg, store).unwrap();
    let app = llm_quality_observer::app::RunningApp::start(app)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .post(app.url("/chat"))
        .json(&json!({"prompt": "hello", "user_id": "newcomer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let n = sample(
            &m,
            "lqo_judge_score_count",
            &[("model_version", "mock-1"), ("criterion", "overall")],
        );
        if n == Some(1.0) {
            assert_eq!(
                sample(
                    &m,
                    "lqo_heuristic_label_total",
                    &[("model_version", "mock-1"), ("label", "good")]
                ),
                Some(1.0)
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no judge score on /metrics:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[test]
fn a_real_judge_model_samples_a_tenth_by_default() {
    let cfg =
        Config::load_with(None, &|k| (k == "LLM_API_KEY").then(|| "sk-x".to_string())).unwrap();
    assert_eq!(cfg.judge_model(), "gpt-5-mini");
    assert_eq!(cfg.judge_sample_rate(), 0.1);
}

#[test]
fn judge_and_heuristics_config_problems_are_reported_with_their_paths() {
    let yaml = r#"
heuristics: { min_chars: 10, max_chars: 5, forbidden_terms: ["ok", " "] }
judge:
  model: nope
  sample_rate: 1.5
  per_model_sample_rate: { ghost: 0.5, mock-1: -1 }
  criteria: [truthfulness, Tone, truthfulness, style]
  rubric: { other: "x" }
  max_attempts: 0
  lease_secs: 10
"#;
    let mut cfg = Config::from_yaml(yaml).unwrap();
    cfg.apply_env(&|_| None).unwrap();
    let Err(llm_quality_observer::config::ConfigError::Invalid(problems)) = cfg.validate() else {
        panic!("expected problems")
    };
    let all = problems.join("\n");
    for needle in [
        "heuristics.max_chars must be > 0 and ≥ heuristics.min_chars",
        "heuristics.forbidden_terms[1] must not be blank",
        "judge.model \"nope\"",
        "judge.sample_rate must be between 0 and 1, got 1.5",
        "judge.per_model_sample_rate.ghost: not one of the configured models",
        "judge.per_model_sample_rate.mock-1 must be between 0 and 1",
        "judge.criteria must include overall",
        "judge.criteria[1] \"Tone\"",
        "judge.criteria[2] \"truthfulness\" is listed twice",
        "judge.criteria[3] \"style\" has no built-in description: add judge.rubric.style",
        "judge.rubric.other: not one of judge.criteria",
        "judge.max_attempts must be > 0",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    let err = Config::from_yaml("judge: { sampel_rate: 0.5 }").unwrap_err();
    assert!(err.contains("unknown field `sampel_rate`"), "{err}");
}

#[test]
fn lqo_judge_backfills_a_sqlite_database_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("lqo.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ids = runtime.block_on(async {
        let store = Store::connect(&db_path.to_string_lossy(), 2).await.unwrap();
        store.migrate().await.unwrap();
        let records: Vec<LogRecord> = (0..3)
            .map(|i| {
                let mut r = testing::sample_record(i * 2 + 1);
                r.model_version = "mock-1".into();
                r.status = llm_quality_observer::store::record::LogStatus::Ok;
                r.response = Some(format!("answer {i}"));
                r.created_at = chrono::Utc::now() - chrono::Duration::hours(1);
                r
            })
            .collect();
        store.logs.insert_batch(&records).await.unwrap();
        store.close().await;
        records.iter().map(|r| r.request_id).collect::<Vec<_>>()
    });
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lqo"));
    for var in [
        "LLM_API_KEY",
        "OPENAI_MODEL_MAIN",
        "LLM_API_BASE_URL",
        "LQO_CONFIG",
        "PORT",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .current_dir(dir.path())
        .env("DATABASE_URL", format!("sqlite://{}", db_path.display()))
        .args(["judge", "--since", "24h"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("judged by this run:             3"),
        "{stdout}"
    );
    runtime.block_on(async {
        let store = Store::connect(&db_path.to_string_lossy(), 2).await.unwrap();
        for id in ids {
            assert_eq!(
                scores_of(&eval::details(&store, id).await.unwrap()).len(),
                3
            );
        }
    });
    let out = cmd.args(["--until", "48h"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--since"),
        "{out:?}"
    );
}
