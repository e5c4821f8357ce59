//! Issue 14: nothing a client does loses a record, stalls other clients or exhausts the gateway.
//! A test per finding of the hostile-client probe, on PostgreSQL and SQLite where both apply.

use crate::common::Harness;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;

async fn get(h: &Harness, path_and_query: &str) -> (u16, Value) {
    let r = h.http.get(h.url(path_and_query)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Finding 10: values PostgreSQL cannot compare with (a NUL, an instant before 4713 BC, a
/// span of 222,000 years) were answered 503; they are the client's mistake, a 400 naming the
/// parameter, on both backends. Year 10000 (an offset past the last day of 9999) is refused too:
/// SQLite compared it as text before 2025.
async fn bad_query_values_are_400_naming_the_parameter(h: Harness) {
    let before_4713_bc =
        URL_SAFE_NO_PAD.encode(format!("{}:{}", -210_000_000_000_000_000i64, Uuid::nil()));
    for (q, param) in [
        ("/v1/logs?user_id=%00".to_string(), "user_id"),
        ("/v1/logs?model_version=%00".to_string(), "model_version"),
        ("/v1/logs?tag=%00".to_string(), "tag"),
        (format!("/v1/logs?cursor={before_4713_bc}"), "cursor"),
        ("/v1/logs?since=7000000000000s".to_string(), "since"),
        (
            "/v1/logs?until=9999-12-31T23:00:00-02:00".to_string(),
            "until",
        ),
        (
            "/v1/feedback/agreement?since=7000000000000s".to_string(),
            "since",
        ),
        (
            "/v1/feedback/agreement?until=9999-12-31T23:00:00-02:00".to_string(),
            "until",
        ),
    ] {
        let (status, body) = get(&h, &q).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["error"]["param"], param, "{q}: {body}");
    }
    // The widest window both databases hold still works.
    let (status, body) = get(
        &h,
        "/v1/logs?since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59Z",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    h.app.stop().await;
}

#[tokio::test]
async fn bad_query_values_are_400_on_postgres() {
    bad_query_values_are_400_naming_the_parameter(Harness::postgres().await).await;
}

#[tokio::test]
async fn bad_query_values_are_400_on_sqlite() {
    bad_query_values_are_400_naming_the_parameter(Harness::sqlite().await).await;
}

/// Finding 12: a JSON body with data after the object was accepted on /chat; the 405 message
/// said "allowed: ." while the `Allow` header said POST.
#[tokio::test]
async fn trailing_json_is_refused_and_405_does_not_contradict_allow() {
    let h = Harness::sqlite().await;
    for body in [
        r#"{"prompt": "hi", "user_id": "u"} trailing"#,
        r#"{"prompt": "hi", "user_id": "u"}{"prompt": "again", "user_id": "u"}"#,
    ] {
        let r = h
            .http
            .post(h.url("/chat"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_json", "{e}");
    }
    let r = h.http.get(h.url("/chat")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let e: Value = r.json().await.unwrap();
    let message = e["error"]["message"].as_str().unwrap();
    assert!(!message.contains("allowed: ."), "{message}");
    assert!(message.contains("Allow"), "{message}");
    h.app.stop().await;
}

/// Finding 2: a reused `x-request-id` cost records (SQLite stored 1 of 20 calls answered 200;
/// PostgreSQL kept them but `GET /v1/logs/{id}` showed one). Records are keyed by the gateway's
/// own id; the client's is stored beside it, found by `GET /v1/logs/{id}` (its newest call),
/// by the `client_request_id` filter, and accepted by feedback.
async fn a_reused_client_request_id_loses_nothing(h: Harness) {
    let client_id = "order-4711";
    let mut gateway_ids = Vec::new();
    for i in 0..20 {
        let r = h
            .http
            .post(h.url("/chat"))
            .header("x-request-id", client_id)
            .json(&json!({"prompt": format!("call {i}"), "user_id": "u"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-request-id"], client_id);
        let id: Uuid = r.headers()["x-lqo-request-id"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        gateway_ids.push(id);
    }
    for id in &gateway_ids {
        let record = h.record(*id).await;
        assert_eq!(record.client_request_id.as_deref(), Some(client_id));
    }
    let (status, page) = get(
        &h,
        &format!("/v1/logs?client_request_id={client_id}&limit=100"),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 20, "{page}");
    // By the client's id: its newest call; by the gateway's id: that call.
    let (status, newest) = get(&h, &format!("/v1/logs/{client_id}")).await;
    assert_eq!(status, 200, "{newest}");
    assert_eq!(newest["request_id"], gateway_ids[19].to_string());
    assert_eq!(newest["prompt"], "call 19");
    let (status, first) = get(&h, &format!("/v1/logs/{}", gateway_ids[0])).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["prompt"], "call 0");
    assert_eq!(first["client_request_id"], client_id);
    // Feedback by either id.
    for named in [client_id.to_string(), gateway_ids[3].to_string()] {
        let r = h
            .post_json("/v1/feedback", json!({"request_id": named, "score": 1}))
            .await;
        assert_eq!(r.status(), 201, "{named}");
    }
    let (status, _) = get(&h, "/v1/logs/no-such-client-id").await;
    assert_eq!(status, 404);
    h.app.stop().await;
}

#[tokio::test]
async fn a_reused_client_request_id_loses_nothing_on_postgres() {
    a_reused_client_request_id_loses_nothing(Harness::postgres().await).await;
}

#[tokio::test]
async fn a_reused_client_request_id_loses_nothing_on_sqlite() {
    a_reused_client_request_id_loses_nothing(Harness::sqlite().await).await;
}

/// Finding 2: the client's id decided judge sampling, so ids chosen to fall in the sample were
/// judged 100 times in 100 at `sample_rate: 0.1`. Sampling hashes the gateway's id: exactly the
/// records whose gateway id is in the sample get a job, whatever ids the client sends.
#[tokio::test]
async fn judge_sampling_hashes_the_gateways_id_not_the_clients() {
    use llm_quality_observer::eval::sampling::sample_point;
    let h = Harness::sqlite_with(|c| {
        c.judge.enabled = true;
        c.judge.sample_rate = Some(0.1);
        c.judge.poll_interval_ms = 50;
    })
    .await;
    let chosen: Vec<Uuid> = std::iter::repeat_with(Uuid::new_v4)
        .filter(|id| sample_point(*id) < 0.1)
        .take(100)
        .collect();
    let mut expected = 0;
    for id in &chosen {
        let r = h
            .http
            .post(h.url("/chat"))
            .header("x-request-id", id.to_string())
            .json(&json!({"prompt": "judge me", "user_id": "u"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let gateway_id: Uuid = r.headers()["x-lqo-request-id"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        if sample_point(gateway_id) < 0.1 {
            expected += 1;
        }
    }
    // Every call is recorded, then the queue's batches land; the jobs are exactly the sample.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let records = llm_quality_observer::store::testing::fetch_i64(
            &h.store,
            "SELECT COUNT(*) FROM llm_logs",
        )
        .await;
        let jobs = llm_quality_observer::store::testing::fetch_i64(
            &h.store,
            "SELECT COUNT(*) FROM judge_jobs",
        )
        .await;
        if records == 100 && jobs == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{records} records, {jobs} judge jobs, {expected} expected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(expected < 50, "{expected} of 100 sampled at rate 0.1");
    h.app.stop().await;
}

/// Finding 11: 500 thumbs-down from one user on one answer moved a version's judge agreement
/// rate. One rating per answer and rater (a new one replaces the old), and agreement counts each
/// answer once (the majority of its ratings), in the report and the metric alike.
async fn one_rater_counts_once(h: Harness) {
    let chat = |prompt: &'static str| {
        let h = &h;
        async move {
            let r = h
                .post_json("/chat", json!({"prompt": prompt, "user_id": "asker"}))
                .await;
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            body["request_id"].as_str().unwrap().to_string()
        }
    };
    let a = chat("A [mock:judge_score=5]").await;
    let b = chat("B [mock:judge_score=5]").await;
    // Both judged (their overall score stored) before the ratings come.
    for id in [&a, &b] {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (_, d) = get(&h, &format!("/v1/logs/{id}")).await;
            if d["judge"]["status"] == "done" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{d}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    for id in [&a, &b] {
        let r = h
            .post_json(
                "/v1/feedback",
                json!({"request_id": id, "score": 1, "user_id": "alice"}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    // One user hammers answer A with thumbs-down.
    for chunk in 0..10 {
        let sent = (0..10).map(|i| {
            h.post_json(
                "/v1/feedback",
                json!({"request_id": a, "score": -1, "user_id": "mallory", "comment": format!("{chunk}-{i}")}),
            )
        });
        for r in futures::future::join_all(sent).await {
            assert_eq!(r.status(), 201);
        }
    }
    let (_, detail) = get(&h, &format!("/v1/logs/{a}")).await;
    let ratings = detail["feedback"].as_array().unwrap();
    assert_eq!(ratings.len(), 2, "{detail}");
    // A: alice agrees, mallory disagrees — a tie, not compared. B: agrees. Rate 1 of 1.
    let (status, report) = get(&h, "/v1/feedback/agreement?since=1h").await;
    assert_eq!(status, 200, "{report}");
    let row = &report["data"][0];
    assert_eq!(row["feedback"], 3, "{report}");
    assert_eq!(row["compared"], 1, "{report}");
    assert_eq!(row["not_comparable"], 1, "{report}");
    assert_eq!(row["agreement_rate"], 1.0, "{report}");
    let m = h.metrics().await;
    let counted = |x| {
        crate::common::sample(
            &m,
            "lqo_judge_human_agreement_total",
            &[("model_version", "gpt-test"), ("agreement", x)],
        )
    };
    // Each answer once, as first compared (alice's agreement): mallory's 100 add nothing.
    assert_eq!(
        (counted("agree"), counted("disagree")),
        (Some(2.0), Some(0.0))
    );
    h.app.stop().await;
}

fn judge_everything(c: &mut llm_quality_observer::config::Config) {
    c.judge.enabled = true;
    c.judge.sample_rate = Some(1.0);
    c.judge.poll_interval_ms = 50;
}

#[tokio::test]
async fn one_rater_counts_once_on_postgres() {
    one_rater_counts_once(Harness::postgres_with(judge_everything).await).await;
}

#[tokio::test]
async fn one_rater_counts_once_on_sqlite() {
    one_rater_counts_once(Harness::sqlite_with(judge_everything).await).await;
}

/// Finding 8: values answered 200 and then refused by the database (a 3,000-character
/// `user_id` exceeded PostgreSQL's index row size; the record was dropped as `rejected`).
/// What the database cannot hold is a 400 naming the field; what is answered 200 is stored.
async fn what_the_database_cannot_hold_is_refused_at_the_edge(h: Harness) {
    let long = "u".repeat(3000);
    for (path, body, param) in [
        ("/chat", json!({"prompt": "hi", "user_id": long}), "user_id"),
        (
            "/chat",
            json!({"prompt": "hi", "user_id": "a\u{0}b"}),
            "user_id",
        ),
        (
            "/chat",
            json!({"prompt": "hi", "user_id": "u", "tags": ["a\u{0}"]}),
            "tags",
        ),
        (
            "/chat",
            json!({"prompt": "hi", "user_id": "u", "metadata": {"k": ["v\u{0}"]}}),
            "metadata",
        ),
        (
            "/chat",
            json!({"prompt": "hi", "user_id": "u", "metadata": {"k\u{0}": 1}}),
            "metadata",
        ),
        (
            "/chat",
            json!({"prompt": "hi", "user_id": "u", "metadata": {"k": "v".repeat(20_000)}}),
            "metadata",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "user": long}),
            "user",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "metadata": {"k": "v".repeat(513)}}),
            "metadata",
        ),
        (
            "/v1/embeddings",
            json!({"model": "gpt-test", "input": "hi", "user": long}),
            "user",
        ),
    ] {
        let r = h.post_json(path, body.clone()).await;
        assert_eq!(r.status(), 400, "{path} {body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{path}: {e}");
    }
    assert_eq!(
        h.store.logs.count_logs().await.unwrap(),
        0,
        "refused before any call"
    );
    // At the limits, and with what the store keeps for the database (a NUL in the prompt, an
    // escaped NUL and a lone surrogate in a forwarded parameter): 200, and the record lands.
    let mut ids = Vec::new();
    for body in [
        json!({"prompt": "nul \u{0} in the prompt", "user_id": "é".repeat(256), "tags": ["t".repeat(64)]}),
        json!({"model": "mock-local", "messages": [{"role": "user", "content": "hi"}], "user": "u".repeat(256),
               "metadata": {"k": "v".repeat(512)}, "stop": ["\u{0}"]}),
    ] {
        let path = if body.get("prompt").is_some() {
            "/chat"
        } else {
            "/v1/chat/completions"
        };
        let r = h.post_json(path, body.clone()).await;
        assert_eq!(r.status(), 200, "{body}");
        ids.push(
            r.headers()["x-lqo-request-id"]
                .to_str()
                .unwrap()
                .parse::<Uuid>()
                .unwrap(),
        );
    }
    let r = h
        .http
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(r#"{"model": "mock-local", "messages": [{"role": "user", "content": "hi"}], "stop": "\ud800"}"#)
        .send()
        .await
        .unwrap();
    // Forwarded, it would have been answered and its record (the body is its parameters)
    // refused by jsonb; now refused before any call.
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_json", "{e}");
    for id in ids {
        h.record(id).await;
    }
    let m = h.metrics().await;
    assert_eq!(
        crate::common::sample(&m, "lqo_writer_dropped_total", &[("reason", "rejected")]),
        Some(0.0)
    );
    h.app.stop().await;
}

#[tokio::test]
async fn what_the_database_cannot_hold_is_refused_at_the_edge_on_postgres() {
    what_the_database_cannot_hold_is_refused_at_the_edge(Harness::postgres().await).await;
}

#[tokio::test]
async fn what_the_database_cannot_hold_is_refused_at_the_edge_on_sqlite() {
    what_the_database_cannot_hold_is_refused_at_the_edge(Harness::sqlite().await).await;
}

/// Finding 1: `GET /v1/logs` built a whole page in memory (three `limit=500` pages of 1 MB
/// records took the gateway to 2.15 GB). A page is cut by bytes (`MAX_PAGE_BYTES` of records,
/// at least one), rows are streamed from the database, and `next_cursor` continues as usual.
async fn large_records_page_by_bytes(h: Harness) {
    use llm_quality_observer::store::logs::MAX_PAGE_BYTES;
    let mut records = Vec::new();
    for i in 0..12 {
        let mut r = llm_quality_observer::store::testing::sample_record(i);
        r.prompt = format!("{i}:{}", "p".repeat(1024 * 1024));
        records.push(r);
    }
    for chunk in records.chunks(3) {
        h.store.logs.insert_batch(chunk).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut q = "/v1/logs?limit=500".to_string();
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let r = h.http.get(h.url(&q)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        assert!(
            body.len() < MAX_PAGE_BYTES + 2 * 1024 * 1024,
            "a page of {} bytes",
            body.len()
        );
        let page: Value = serde_json::from_slice(&body).unwrap();
        pages += 1;
        let data = page["data"].as_array().unwrap();
        assert!(
            !data.is_empty() && data.len() < 12,
            "{} records",
            data.len()
        );
        for rec in data {
            seen.push(rec["request_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 20);
    }
    // Every record once, newest first, over several pages.
    records.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.request_id)));
    let want: Vec<String> = records.iter().map(|r| r.request_id.to_string()).collect();
    assert_eq!(seen, want);
    assert!(pages >= 3, "{pages} pages");
    h.app.stop().await;
}

#[tokio::test]
async fn large_records_page_by_bytes_on_postgres() {
    large_records_page_by_bytes(Harness::postgres().await).await;
}

#[tokio::test]
async fn large_records_page_by_bytes_on_sqlite() {
    large_records_page_by_bytes(Harness::sqlite().await).await;
}

/// The newest record a client's own x-request-id names, once the writer has it.
async fn record_of_client(h: &Harness, client_id: &str) -> llm_quality_observer::store::LogRecord {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Some(r) = h.store.logs.get_log_by_client_id(client_id).await.unwrap() {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no record for {client_id}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends a call and hangs up after `after` (before the delayed answer's first byte).
async fn hang_up(h: &Harness, client_id: &str, path: &str, body: Value) {
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .post(h.url(path))
        .header("x-request-id", client_id)
        .json(&body)
        .send()
        .await;
    assert!(r.is_err(), "the client gave up before the answer");
}

/// Finding 3: a client that hung up before the first byte (plain or stream) left no record and
/// no metric, though the upstream was called. It is recorded once as `cancelled` (HTTP 499) and
/// counted under that status, which the error budget leaves out.
async fn hang_ups_are_recorded_as_cancelled(h: Harness) {
    let slow = "[mock:delay_ms=3000] are you there?";
    hang_up(
        &h,
        "gone-plain",
        "/chat",
        json!({"prompt": slow, "user_id": "u", "model_version": "mock-local"}),
    )
    .await;
    hang_up(
        &h,
        "gone-stream",
        "/v1/chat/completions",
        json!({"model": "mock-local", "stream": true, "messages": [{"role": "user", "content": slow}]}),
    )
    .await;
    hang_up(
        &h,
        "gone-embed",
        "/v1/embeddings",
        json!({"model": "mock-local", "input": slow}),
    )
    .await;
    let r = record_of_client(&h, "gone-embed").await;
    assert_eq!((r.status.as_str(), r.http_status), ("cancelled", 499));
    assert_eq!(r.endpoint.as_str(), "embeddings");
    for (id, streamed) in [("gone-plain", false), ("gone-stream", true)] {
        let r = record_of_client(&h, id).await;
        assert_eq!(r.status.as_str(), "cancelled", "{id}");
        assert_eq!(r.http_status, 499, "{id}");
        assert_eq!(r.error_type.as_deref(), Some("client_disconnected"));
        assert_eq!(r.streamed, streamed);
        assert!(r.prompt.contains("are you there"));
    }
    let (status, page) = get(&h, "/v1/logs?status=cancelled").await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 3, "{page}");
    let m = h.metrics().await;
    let calls = |endpoint, status| {
        crate::common::sample(
            &m,
            "lqo_requests_total",
            &[
                ("model_version", "mock-local"),
                ("endpoint", endpoint),
                ("status", status),
            ],
        )
    };
    assert_eq!(calls("chat", "cancelled"), Some(1.0));
    assert_eq!(calls("chat_completions", "cancelled"), Some(1.0));
    assert_eq!(
        calls("chat", "error"),
        Some(0.0),
        "not the gateway's failure"
    );
    h.app.stop().await;
}

#[tokio::test]
async fn hang_ups_are_recorded_as_cancelled_on_postgres() {
    hang_ups_are_recorded_as_cancelled(Harness::postgres().await).await;
}

#[tokio::test]
async fn hang_ups_are_recorded_as_cancelled_on_sqlite() {
    hang_ups_are_recorded_as_cancelled(Harness::sqlite().await).await;
}

/// The same with connections served on connection threads, which stop with the server: the
/// records of calls whose clients left are finished on the gateway's own runtime.
#[tokio::test]
async fn hang_ups_are_recorded_as_cancelled_on_connection_threads() {
    let h = Harness::sqlite_with(|c| c.server.connection_threads = 2).await;
    hang_ups_are_recorded_as_cancelled(h).await;
}

/// With `server.finish_abandoned_calls` the call runs on to its end after the client left, and
/// its `cancelled` record has the answer, its usage and its cost.
#[tokio::test]
async fn abandoned_calls_can_be_finished_for_their_usage() {
    for threads in [0, 2] {
        let h = Harness::sqlite_with(|c| {
            c.server.finish_abandoned_calls = true;
            c.server.connection_threads = threads;
        })
        .await;
        abandoned_calls_are_finished(h).await;
    }
}

async fn abandoned_calls_are_finished(h: Harness) {
    let slow = "[mock:delay_ms=800] finish me anyway";
    hang_up(
        &h,
        "finish-plain",
        "/chat",
        json!({"prompt": slow, "user_id": "u", "model_version": "mock-local"}),
    )
    .await;
    hang_up(
        &h,
        "finish-stream",
        "/v1/chat/completions",
        json!({"model": "mock-local", "stream": true, "messages": [{"role": "user", "content": slow}]}),
    )
    .await;
    for id in ["finish-plain", "finish-stream"] {
        let r = record_of_client(&h, id).await;
        assert_eq!(
            (r.status.as_str(), r.http_status),
            ("cancelled", 499),
            "{id}"
        );
        assert!(r.input_tokens > 0 && r.output_tokens > 0, "{id}: {r:?}");
        assert!(r.cost_usd > 0.0, "{id}");
        assert!(r.response.as_deref().is_some_and(|t| !t.is_empty()), "{id}");
    }
    // A client that stays gets its answer as usual.
    let r = h
        .post_json(
            "/chat",
            json!({"prompt": "hi", "user_id": "u", "model_version": "mock-local"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let m = h.metrics().await;
    let cost = crate::common::sample(&m, "lqo_cost_usd_total", &[("model_version", "mock-local")]);
    assert!(cost.unwrap() > 0.0);
    h.app.stop().await;
}

/// The error budget counts only the gateway's and the provider's failures: an upstream's refusal
/// of the client's request (its 4xx, passed on) is `rejected`, a 5xx or a 429 is `error`.
#[tokio::test]
async fn refusals_of_the_clients_request_do_not_burn_the_error_budget() {
    let h = Harness::sqlite().await;
    for (prompt, code, status) in [
        ("[mock:status=400] bad request", 400, "rejected"),
        ("[mock:status=422] unprocessable", 422, "rejected"),
        ("[mock:status=500] broken", 502, "error"),
        ("fine", 200, "ok"),
    ] {
        let r = h
            .post_json(
                "/chat",
                json!({"prompt": prompt, "user_id": "u", "model_version": "mock-local"}),
            )
            .await;
        assert_eq!(r.status(), code, "{prompt}");
        let id = r.headers()["x-lqo-request-id"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(h.record(id).await.status.as_str(), status, "{prompt}");
    }
    let m = h.metrics().await;
    let calls = |status| {
        crate::common::sample(
            &m,
            "lqo_requests_total",
            &[
                ("model_version", "mock-local"),
                ("endpoint", "chat"),
                ("status", status),
            ],
        )
    };
    assert_eq!(calls("rejected"), Some(2.0));
    assert_eq!(calls("error"), Some(1.0));
    assert_eq!(calls("ok"), Some(1.0));
    assert_eq!(calls("cancelled"), Some(0.0));
    let (_, page) = get(&h, "/v1/logs?status=rejected").await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2), "{page}");
    h.app.stop().await;
}

/// Finding 12: upstream usage of 2^64 − 1 was stored as −1 tokens and added 5.5e13 USD to the
/// cost counter. Usage beyond sane bounds is refused as invalid (counted), and the tokens are
/// counted by the gateway instead — over the real HTTP client, plain and streamed.
#[tokio::test]
async fn insane_upstream_usage_is_refused_and_counted() {
    let h = Harness::sqlite().await;
    let prompt = format!("[mock:usage_tokens={}] how many?", u64::MAX);
    let plain = h
        .post_json("/chat", json!({"prompt": prompt, "user_id": "u"}))
        .await;
    assert_eq!(plain.status(), 200);
    let streamed = h
        .post_json(
            "/v1/chat/completions",
            json!({"stream": true, "messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
    assert_eq!(streamed.status(), 200);
    let ids = [
        plain.headers()["x-lqo-request-id"]
            .to_str()
            .unwrap()
            .to_string(),
        streamed.headers()["x-lqo-request-id"]
            .to_str()
            .unwrap()
            .to_string(),
    ];
    let _ = streamed.text().await.unwrap();
    // Translated between the two OpenAI APIs (a total of both would overflow): no panic.
    let translated = h
        .post_json(
            "/v1/chat/completions",
            json!({"model": "gpt-resp", "messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
    assert_eq!(translated.status(), 200);
    let body: Value = translated.json().await.unwrap();
    assert_eq!(
        body["usage"]["total_tokens"],
        u64::MAX,
        "passed on as the upstream said"
    );
    for id in ids {
        let r = h.record(id.parse().unwrap()).await;
        assert!(r.input_tokens > 0 && r.input_tokens < 1000, "{r:?}");
        assert!(r.output_tokens > 0 && r.output_tokens < 1000, "{r:?}");
        assert!(r.cost_usd < 0.01, "{}", r.cost_usd);
    }
    let m = h.metrics().await;
    assert_eq!(
        crate::common::sample(
            &m,
            "lqo_upstream_invalid_usage_total",
            &[("model_version", "gpt-test")]
        ),
        Some(2.0)
    );
    let cost = crate::common::sample(&m, "lqo_cost_usd_total", &[("model_version", "gpt-test")]);
    assert!(cost.unwrap() < 0.01, "{cost:?}");
    h.app.stop().await;
}

/// Finding 4: token counting ran on the request workers (a 390,000-character prompt of one letter
/// cost 0.65 s of tiktoken), and eight such calls stalled `/health` for 0.5–2.5 s. Shown by order,
/// not by a clock: on this test's single-threaded runtime, work on the worker would finish each
/// call within one poll, so eight could never be in flight at once; off the worker, all eight are
/// inside the gateway, `/health` answers, and they are still there afterwards.
#[tokio::test]
async fn health_answers_while_heavy_calls_are_in_flight() {
    let h = Harness::sqlite_with(|c| {
        c.limits.max_prompt_chars = 1_000_000;
        c.server.max_body_bytes = 4 * 1024 * 1024;
        // Redaction of the stored prompt makes each call's finishing CPU-heavy too.
        c.logging.content = llm_quality_observer::config::ContentLogging::Redacted;
    })
    .await;
    let prompt = "a".repeat(390_000);
    let in_flight = |m: &str| {
        crate::common::sample(m, "lqo_in_flight_requests", &[("endpoint", "chat")]).unwrap_or(0.0)
    };
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let http = h.http.clone();
            let url = h.url("/chat");
            let body = json!({"prompt": prompt, "user_id": "u", "model_version": "mock-local"});
            tokio::spawn(async move { http.post(url).json(&body).send().await.unwrap().status() })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while in_flight(&h.metrics().await) < 8.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "eight heavy calls were never in flight together"
        );
        tokio::task::yield_now().await;
    }
    let health = h.http.get(h.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        in_flight(&h.metrics().await) > 0.0,
        "/health answered only after the heavy calls"
    );
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    h.app.stop().await;
}

/// Finding 5: half-sent and idle connections were never closed, and 1,200 connections that never
/// finished their headers made every new client time out (`accept error: Too many open files`).
/// Connections are capped below the open-file limit, and one that does not finish its head in
/// time is closed, so a new client is served after the hogs are cut off.
#[tokio::test]
async fn half_sent_connections_are_closed_and_new_clients_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::sqlite_with(|c| {
        c.server.max_connections = 40;
        c.server.header_read_timeout_secs = 1;
    })
    .await;
    let mut hogs = Vec::new();
    for _ in 0..120 {
        let mut tcp = tokio::net::TcpStream::connect(h.app.addr).await.unwrap();
        tcp.write_all(b"POST /chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
            .await
            .unwrap();
        hogs.push(tcp);
    }
    let r = h
        .post_json("/chat", json!({"prompt": "still served?", "user_id": "u"}))
        .await;
    assert_eq!(r.status(), 200);
    // Every hog was closed by the gateway, none answered.
    for mut hog in hogs {
        let mut rest = Vec::new();
        let _ = hog.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    h.app.stop().await;
}

/// `/ready` until `want(status)` holds (the probe runs every second).
async fn ready_until(http: &reqwest::Client, url: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = http.get(url).send().await.unwrap();
        let body: Value = r.json().await.unwrap();
        if want(&body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Finding 6: the gateway refused to start while the database was down (exit 1), so a deploy or
/// a crash during an outage became a full outage. It starts, serves calls into the spool, says
/// `degraded`, and once the database answers migrates it and replays the spool.
#[tokio::test]
async fn the_gateway_starts_and_serves_with_the_database_down() {
    use crate::common::{PgProxy, ProxyMode};
    use llm_quality_observer::app::{App, RunningApp};
    let (_unmigrated, db) = llm_quality_observer::store::testing::empty_postgres()
        .await
        .unwrap();
    let proxy = PgProxy::start(ProxyMode::Refuse).await;
    let mut cfg = crate::common::config(crate::common::upstream().await);
    cfg.database.url = proxy.url_for(db.url());
    let _spool = crate::common::SpoolDir(cfg.writer.spool_dir.clone());
    let app = App::build(cfg)
        .await
        .expect("starts with the database down");
    let app = RunningApp::start(app).await.unwrap();
    let http = reqwest::Client::new();
    let ready = ready_until(&http, &app.url("/ready"), |b| b["status"] == "degraded").await;
    assert!(
        ready["reasons"].to_string().contains("migrations pending"),
        "{ready}"
    );
    let r = http
        .post(app.url("/chat"))
        .header("x-request-id", "during-the-outage")
        .json(&json!({"prompt": "anyone there?", "user_id": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id: Uuid = r.headers()["x-lqo-request-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The database comes back: migrated, the spool replayed, ready.
    proxy.set(ProxyMode::Up);
    ready_until(&http, &app.url("/ready"), |b| b["status"] == "ready").await;
    let store = llm_quality_observer::store::Store::connect(db.url(), 2)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let record = loop {
        if let Some(r) = store.logs.get_log(id).await.unwrap() {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record never landed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        record.client_request_id.as_deref(),
        Some("during-the-outage")
    );
    app.stop().await;
}

/// Finding 7: `/ready` took 2.0 s per call during an outage (a 1 s probe timeout marked every
/// replica unready). It answers from the background probe's findings: while connections to a
/// database that accepts and never answers hang, a kubelet-like client with a 1 s timeout gets
/// its answer every time.
#[tokio::test]
async fn ready_answers_while_the_database_ping_hangs() {
    use crate::common::{PgProxy, ProxyMode};
    use llm_quality_observer::app::{App, RunningApp};
    let (_store, db) = llm_quality_observer::store::testing::fresh_postgres()
        .await
        .unwrap();
    let proxy = PgProxy::start(ProxyMode::Up).await;
    let mut cfg = crate::common::config(crate::common::upstream().await);
    cfg.database.url = proxy.url_for(db.url());
    let _spool = crate::common::SpoolDir(cfg.writer.spool_dir.clone());
    let app = RunningApp::start(App::build(cfg).await.unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    ready_until(&http, &app.url("/ready"), |b| b["status"] == "ready").await;
    proxy.set(ProxyMode::Blackhole);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while proxy.hung() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe never pinged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let kubelet = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(1))
        .build()
        .unwrap();
    for _ in 0..5 {
        let r = kubelet.get(app.url("/ready")).send().await;
        assert_eq!(r.expect("answered within the probe timeout").status(), 200);
    }
    assert!(proxy.hung() > 0, "the database was still not answering");
    // And once the probe gives up on it, /ready says so.
    ready_until(&http, &app.url("/ready"), |b| b["status"] == "degraded").await;
    proxy.set(ProxyMode::Up);
    app.stop().await;
}

/// Riding out an outage is not hiding a mistake: a database that answers and refuses (here: no
/// such database) still fails the start, with the URL's secrets masked.
#[tokio::test]
async fn a_database_that_answers_and_refuses_still_fails_the_start() {
    let server = std::env::var("LQO_TEST_PG_URL")
        .unwrap_or_else(|_| llm_quality_observer::store::testing::DEFAULT_TEST_PG_URL.to_string());
    let base = server.rsplit_once('/').unwrap().0;
    let mut cfg = crate::common::config(crate::common::upstream().await);
    cfg.database.url = format!(
        "{base}/lqo_no_such_db_{}?password=hunter22",
        Uuid::new_v4().simple()
    );
    let _spool = crate::common::SpoolDir(cfg.writer.spool_dir.clone());
    let err = match llm_quality_observer::app::App::build(cfg).await {
        Ok(_) => panic!("started on a database that does not exist"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains("hunter22"), "{err}");
}
