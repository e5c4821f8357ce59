//! The whole path: HTTP request → real reqwest provider → mock upstream over loopback → record in
//! SQLite / PostgreSQL → histograms on /metrics.

use crate::common::{sample, Harness};
use serde_json::{json, Value};
use uuid::Uuid;

fn request_id(body: &Value) -> Uuid {
    Uuid::parse_str(body["request_id"].as_str().expect("request_id")).expect("uuid")
}

async fn chat_lands_a_complete_record(h: &Harness) {
    let resp = h
        .post_json(
            "/chat",
            json!({"prompt": "What is the capital of France?", "user_id": "u-1", "tags": ["geo"]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-lqo-overhead-ms"));
    let header_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model_version"], "gpt-test");
    assert!(body["response"]
        .as_str()
        .unwrap()
        .contains("capital of France"));
    assert!(body["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(body["request_id"], header_id);

    let rec = h.record(request_id(&body)).await;
    assert_eq!(rec.model_version, "gpt-test");
    assert_eq!(rec.endpoint.as_str(), "chat");
    assert_eq!(rec.provider, "openai_chat");
    assert_eq!(rec.upstream_model, "gpt-5-mini");
    assert_eq!(rec.user_id.as_deref(), Some("u-1"));
    assert_eq!(rec.prompt, "What is the capital of France?");
    assert_eq!(rec.response.as_deref(), body["response"].as_str());
    assert_eq!(rec.status.as_str(), "ok");
    assert_eq!(rec.http_status, 200);
    assert_eq!(rec.tags, vec!["geo".to_string()]);
    assert!(rec.input_tokens > 0 && rec.output_tokens > 0, "{rec:?}");
    let expected_cost =
        (rec.input_tokens as f64 * 0.25 + rec.output_tokens as f64 * 2.0) / 1_000_000.0;
    assert!((rec.cost_usd - expected_cost).abs() < 1e-12, "{rec:?}");
    assert!(rec.latency_ms > 0.0);
    assert!(!rec.streamed);
}

#[tokio::test]
async fn chat_record_lands_in_sqlite() {
    let h = Harness::sqlite().await;
    chat_lands_a_complete_record(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn chat_record_lands_in_postgres() {
    let h = Harness::postgres().await;
    chat_lands_a_complete_record(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn chat_completions_non_streaming_is_openai_shaped() {
    let h = Harness::postgres().await;
    let resp = h
        .post_json(
            "/v1/chat/completions",
            json!({
                "model": "gpt-test",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
                "user": "u-2",
                "metadata": {"tags": "a, b", "team": "search"},
                "max_tokens": 50,
            }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let id = Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).unwrap();
    assert_eq!(resp.headers()["x-lqo-model-version"], "gpt-test");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    // The upstream's answer as it came: its own model name and fingerprint.
    assert_eq!(body["model"], "gpt-5-mini");
    assert_eq!(body["system_fingerprint"], "fp_lqo_mock");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_i64().unwrap(),
        usage["completion_tokens"].as_i64().unwrap(),
    );
    assert_eq!(usage["total_tokens"].as_i64().unwrap(), p + c);

    let rec = h.record(id).await;
    assert_eq!(rec.endpoint.as_str(), "chat_completions");
    assert_eq!(
        rec.input_tokens, p,
        "the upstream's usage is what is stored"
    );
    assert_eq!(rec.output_tokens, c);
    assert_eq!(rec.user_id.as_deref(), Some("u-2"));
    assert_eq!(rec.tags, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(rec.metadata["team"], "search");
    let msgs: Vec<Value> = serde_json::from_str(&rec.prompt).unwrap();
    assert_eq!(
        msgs.len(),
        2,
        "a conversation is stored as its JSON messages"
    );
    h.app.stop().await;
}

/// Reads an SSE body into its `data:` payloads.
async fn sse_data(resp: reqwest::Response) -> Vec<String> {
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let text = resp.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_string)
        .collect()
}

async fn streaming_round_trip(h: &Harness, model: &str, provider: &str, upstream_model: &str) {
    let resp = h
        .post_json(
            "/v1/chat/completions",
            json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "Stream me a story"}]}),
        )
        .await;
    let id = Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).unwrap();
    assert_eq!(resp.headers()["x-lqo-model-version"], model);
    let data = sse_data(resp).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == upstream_model));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.contains("Stream me a story"), "{text}");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, "stop");
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["completion_tokens"].as_i64().unwrap() > 0, "{usage}");

    let rec = h.record(id).await;
    assert!(rec.streamed);
    assert_eq!(rec.provider, provider);
    assert_eq!(rec.response.as_deref(), Some(text.as_str()));
    assert_eq!(
        rec.output_tokens,
        usage["completion_tokens"].as_i64().unwrap()
    );
    assert!(rec.ttft_ms.unwrap() > 0.0);
    assert!(rec.ttft_ms.unwrap() <= rec.latency_ms);
}

#[tokio::test]
async fn streaming_through_chat_completions_and_responses_providers() {
    let h = Harness::sqlite().await;
    streaming_round_trip(&h, "gpt-test", "openai_chat", "gpt-5-mini").await;
    streaming_round_trip(&h, "gpt-resp", "openai_responses", "gpt-5-mini").await;
    streaming_round_trip(&h, "mock-local", "mock", "mock-local").await;
    let m = h.metrics().await;
    for mv in ["gpt-test", "gpt-resp", "mock-local"] {
        let n = sample(
            &m,
            "lqo_time_to_first_token_seconds_count",
            &[("model_version", mv), ("endpoint", "chat_completions")],
        );
        assert_eq!(n, Some(1.0), "ttft for {mv}");
        let n = sample(
            &m,
            "lqo_time_per_output_token_seconds_count",
            &[("model_version", mv)],
        );
        assert_eq!(n, Some(1.0), "time per output token for {mv}");
    }
    h.app.stop().await;
}

#[tokio::test]
async fn responses_api_provider_answers_chat() {
    let h = Harness::sqlite().await;
    let resp = h
        .post_json(
            "/chat",
            json!({"prompt": "hi via responses", "user_id": "u", "model_version": "gpt-resp"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["response"]
        .as_str()
        .unwrap()
        .contains("hi via responses"));
    let rec = h.record(request_id(&body)).await;
    assert_eq!(rec.provider, "openai_responses");
    assert!(rec.input_tokens > 0);
    let expected = (rec.input_tokens as f64 * 1.0 + rec.output_tokens as f64 * 4.0) / 1e6;
    assert!((rec.cost_usd - expected).abs() < 1e-12);
    h.app.stop().await;
}

#[tokio::test]
async fn builtin_mock_counts_tokens_itself() {
    let h = Harness::sqlite().await;
    let body: Value = h
        .post_json(
            "/chat",
            json!({"prompt": "count me", "user_id": "u", "model_version": "mock-local"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let rec = h.record(request_id(&body)).await;
    assert_eq!(rec.provider, "mock");
    assert!(
        rec.input_tokens > 0 && rec.output_tokens > 0,
        "tiktoken counted: {rec:?}"
    );
    assert!(rec.cost_usd > 0.0);
    h.app.stop().await;
}

#[tokio::test]
async fn metrics_show_histograms_after_calls() {
    let h = Harness::sqlite().await;
    for _ in 0..3 {
        let r = h
            .post_json("/chat", json!({"prompt": "p", "user_id": "u"}))
            .await;
        assert_eq!(r.status(), 200);
    }
    let m = h.metrics().await;
    let ok = [
        ("model_version", "gpt-test"),
        ("endpoint", "chat"),
        ("status", "ok"),
    ];
    assert_eq!(
        sample(&m, "lqo_request_duration_seconds_count", &ok),
        Some(3.0)
    );
    assert_eq!(sample(&m, "lqo_requests_total", &ok), Some(3.0));
    assert_eq!(
        sample(
            &m,
            "lqo_request_duration_seconds_bucket",
            &[
                ("model_version", "gpt-test"),
                ("endpoint", "chat"),
                ("status", "ok"),
                ("le", "+Inf")
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &m,
            "lqo_tokens_per_request_count",
            &[("model_version", "gpt-test"), ("token_type", "output")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &m,
            "lqo_cost_per_request_usd_count",
            &[("model_version", "gpt-test")]
        ),
        Some(3.0)
    );
    assert!(sample(&m, "lqo_cost_usd_total", &[("model_version", "gpt-test")]).unwrap() > 0.0);
    assert!(
        sample(
            &m,
            "lqo_tokens_total",
            &[("model_version", "gpt-test"), ("token_type", "input")]
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        sample(
            &m,
            "lqo_gateway_overhead_seconds_count",
            &[("model_version", "gpt-test"), ("endpoint", "chat")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &m,
            "lqo_http_requests_total",
            &[("route", "/chat"), ("status_code", "200")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, "lqo_in_flight_requests", &[("endpoint", "chat")]),
        Some(0.0)
    );
    assert!(sample(&m, "lqo_build_info", &[]).is_some());
    // Every configured version has its counters at zero before any traffic.
    assert_eq!(
        sample(
            &m,
            "lqo_requests_total",
            &[("model_version", "gpt-slow"), ("status", "error")]
        ),
        Some(0.0)
    );
    h.app.stop().await;
}

#[tokio::test]
async fn health_ready_models_and_docs() {
    let h = Harness::sqlite().await;
    let get = |p: &str| h.http.get(h.url(p)).send();
    let r = get("/health").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let r = get("/ready").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["database"], "sqlite");
    let models: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["gpt-resp", "gpt-slow", "gpt-test", "mock-local"]);
    let spec: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    for path in [
        "/chat",
        "/v1/chat/completions",
        "/v1/models",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from openapi"
        );
    }
    let docs = get("/docs/").await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "Swagger UI is served from the binary"
    );
    h.app.stop().await;
}

#[tokio::test]
async fn ready_is_degraded_but_serving_when_the_database_is_gone() {
    let (store, db) = llm_quality_observer::store::testing::fresh_postgres()
        .await
        .unwrap();
    let up = crate::common::upstream().await;
    let cfg = crate::common::config(up);
    let _spool = crate::common::SpoolDir(cfg.writer.spool_dir.clone());
    let app = llm_quality_observer::app::App::with_store(cfg, store).unwrap();
    let app = llm_quality_observer::app::RunningApp::start(app)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(app.url("/ready")).send().await.unwrap().status(),
        200
    );
    // Drop the database under the running gateway. It stays in rotation: records go to the
    // spool (503 only when the spool fails too, see tests/durability.rs).
    drop(db);
    // The background probe notices within a second or two; /ready answers at once meanwhile.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let body = loop {
        let r = http.get(app.url("/ready")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        if body["status"] == "degraded" {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        body["reasons"][0].as_str().unwrap().contains("database"),
        "{body}"
    );
    // Liveness is unaffected, and chat still answers.
    assert_eq!(
        http.get(app.url("/health")).send().await.unwrap().status(),
        200
    );
    let r = http
        .post(app.url("/chat"))
        .json(&json!({"prompt": "still here?", "user_id": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
