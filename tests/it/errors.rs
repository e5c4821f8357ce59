//! Bad input and failing upstreams: a clear OpenAI-style JSON error with the right status, a
//! record for every call that reached a model, and no new metric label for unknown versions.

use crate::common::{sample, Harness};
use serde_json::{json, Value};
use uuid::Uuid;

async fn error_of(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.expect("error bodies are JSON");
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string(), "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
    e.clone()
}

async fn raw(h: &Harness, path: &str, body: &'static str) -> reqwest::Response {
    h.http
        .post(h.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_json_is_400() {
    let h = Harness::sqlite().await;
    for path in ["/chat", "/v1/chat/completions"] {
        let e = error_of(raw(&h, path, "{\"prompt\": ").await, 400).await;
        assert_eq!(e["code"], "invalid_json");
        let e = error_of(raw(&h, path, "").await, 400).await;
        assert_eq!(e["code"], "invalid_json");
        let e = error_of(raw(&h, path, "[1,2]").await, 400).await;
        assert_eq!(e["code"], "invalid_value");
    }
    h.app.stop().await;
}

#[tokio::test]
async fn missing_and_wrong_typed_fields_are_400_with_param() {
    let h = Harness::sqlite().await;
    let e = error_of(h.post_json("/chat", json!({"user_id": "u"})).await, 400).await;
    assert!(e["message"].as_str().unwrap().contains("prompt"), "{e}");
    let e = error_of(
        h.post_json("/chat", json!({"prompt": 42, "user_id": "u"}))
            .await,
        400,
    )
    .await;
    assert_eq!(e["param"], "prompt");
    let e = error_of(
        h.post_json("/chat", json!({"prompt": "  ", "user_id": "u"}))
            .await,
        400,
    )
    .await;
    assert_eq!(e["param"], "prompt");
    let e = error_of(
        h.post_json("/chat", json!({"prompt": "x", "user_id": "u", "bogus": 1}))
            .await,
        400,
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("bogus"), "{e}");
    let e = error_of(
        h.post_json("/v1/chat/completions", json!({"messages": []}))
            .await,
        400,
    )
    .await;
    assert_eq!(e["param"], "messages");
    let e = error_of(
        h.post_json(
            "/v1/chat/completions",
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(e["param"], "messages[0].role");
    let e = error_of(
        h.post_json(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(e["param"], "temperature");
    let e = error_of(
        h.post_json(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(e["param"], "messages[0].content[0]");
    for n in [0, 129] {
        let e = error_of(
            h.post_json(
                "/v1/chat/completions",
                json!({"messages": [{"role": "user", "content": "x"}], "n": n}),
            )
            .await,
            400,
        )
        .await;
        assert_eq!(e["param"], "n");
    }
    let e = error_of(
        raw(
            &h,
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "x"}], "model": "gpt-test", "mod\u0065l": "mock-local"}"#,
        )
        .await,
        400,
    )
    .await;
    assert_eq!(
        e["param"], "model",
        "a body naming the model twice is refused"
    );
    h.app.stop().await;
}

#[tokio::test]
async fn unknown_model_version_is_404_and_never_a_label() {
    let h = Harness::sqlite().await;
    let e = error_of(
        h.post_json(
            "/chat",
            json!({"prompt": "x", "user_id": "u", "model_version": "gpt-9000"}),
        )
        .await,
        404,
    )
    .await;
    assert_eq!(e["code"], "model_not_found");
    let e = error_of(
        h.post_json(
            "/v1/chat/completions",
            json!({"model": "evil\"label", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await,
        404,
    )
    .await;
    assert_eq!(e["param"], "model");
    let m = h.metrics().await;
    assert!(
        !m.contains("gpt-9000") && !m.contains("evil"),
        "unknown versions must not become labels"
    );
    assert_eq!(
        sample(
            &m,
            "lqo_http_requests_total",
            &[("route", "/chat"), ("status_code", "404")]
        ),
        Some(1.0)
    );
    h.app.stop().await;
}

#[tokio::test]
async fn huge_bodies_and_prompts_are_413() {
    let h = Harness::sqlite().await;
    let big = "x".repeat(100_000); // over max_body_bytes (64 KiB) in the test config
    let e = error_of(
        h.post_json("/chat", json!({"prompt": big, "user_id": "u"}))
            .await,
        413,
    )
    .await;
    assert_eq!(e["code"], "body_too_large");
    let long = "y".repeat(30_000); // under the body limit, over max_prompt_chars (20,000)
    let e = error_of(
        h.post_json("/chat", json!({"prompt": long, "user_id": "u"}))
            .await,
        413,
    )
    .await;
    assert_eq!(e["code"], "prompt_too_long");
    h.app.stop().await;
}

#[tokio::test]
async fn upstream_failure_is_502_and_logged_as_error() {
    let h = Harness::sqlite().await;
    let resp = h
        .post_json(
            "/chat",
            json!({"prompt": "fail please [mock:status=500]", "user_id": "u"}),
        )
        .await;
    let id = Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).unwrap();
    let e = error_of(resp, 502).await;
    assert_eq!(e["code"], "upstream_error");
    assert!(!e["message"]
        .as_str()
        .unwrap()
        .contains(crate::common::API_KEY));
    let rec = h.record(id).await;
    assert_eq!(rec.status.as_str(), "error");
    assert_eq!(rec.http_status, 502);
    assert_eq!(rec.error_type.as_deref(), Some("upstream_status"));
    assert!(rec.response.is_none());
    let m = h.metrics().await;
    let labels = [
        ("model_version", "gpt-test"),
        ("endpoint", "chat"),
        ("error_type", "upstream_status"),
    ];
    assert_eq!(sample(&m, "lqo_errors_total", &labels), Some(1.0));
    h.app.stop().await;
}

#[tokio::test]
async fn transient_upstream_errors_are_retried() {
    let h = Harness::sqlite().await;
    let resp = h
        .post_json(
            "/chat",
            json!({"prompt": "flaky [mock:fail_first=2]", "user_id": "u"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "lqo_upstream_retries_total",
            &[("model_version", "gpt-test")]
        ),
        Some(2.0)
    );
    h.app.stop().await;
}

#[tokio::test]
async fn upstream_timeout_is_504_and_logged() {
    let h = Harness::postgres().await;
    let resp = h
        .post_json("/chat", json!({"prompt": "slow [mock:delay_ms=3000]", "user_id": "u", "model_version": "gpt-slow"}))
        .await;
    let id = Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).unwrap();
    let e = error_of(resp, 504).await;
    assert_eq!(e["code"], "upstream_timeout");
    let rec = h.record(id).await;
    assert_eq!(rec.error_type.as_deref(), Some("timeout"));
    assert_eq!(rec.http_status, 504);
    h.app.stop().await;
}

#[tokio::test]
async fn streaming_upstream_errors_before_and_during_the_stream() {
    let h = Harness::sqlite().await;
    // Before the first byte: a proper status, the upstream's own for its 4xx.
    let e = error_of(
        h.post_json(
            "/v1/chat/completions",
            json!({"stream": true, "messages": [{"role": "user", "content": "[mock:status=400]"}]}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(e["code"], "invalid_request");
    let e = error_of(
        h.post_json(
            "/v1/chat/completions",
            json!({"stream": true, "messages": [{"role": "user", "content": "[mock:status=500]"}]}),
        )
        .await,
        502,
    )
    .await;
    assert_eq!(e["code"], "upstream_error");
    // Mid-stream: an error event, no [DONE], and an error record with the partial answer.
    let resp = h
        .post_json("/v1/chat/completions", json!({"stream": true, "messages": [{"role": "user", "content": "break [mock:stream_error]"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let id = Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(text.contains("\"stream_interrupted\""), "{text}");
    let rec = h.record(id).await;
    assert_eq!(rec.status.as_str(), "error");
    assert!(rec.streamed);
    assert_eq!(rec.error_type.as_deref(), Some("stream_interrupted"));
    assert!(
        rec.response.is_some_and(|r| !r.is_empty()),
        "the partial answer is kept"
    );
    h.app.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_json_404() {
    let h = Harness::sqlite().await;
    let r = h.http.get(h.url("/nope")).send().await.unwrap();
    let e = error_of(r, 404).await;
    assert_eq!(e["code"], "route_not_found");
    h.app.stop().await;
}

#[tokio::test]
async fn client_request_id_is_echoed_and_stored_beside_the_gateways_id() {
    let h = Harness::sqlite().await;
    let id = Uuid::new_v4();
    let r = h
        .http
        .post(h.url("/chat"))
        .header("x-request-id", id.to_string())
        .json(&json!({"prompt": "p", "user_id": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], id.to_string().as_str());
    let gateway_id = Uuid::parse_str(r.headers()["x-lqo-request-id"].to_str().unwrap()).unwrap();
    assert_ne!(
        gateway_id, id,
        "the record is keyed by the gateway's own id"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], gateway_id.to_string());
    let record = h.record(gateway_id).await;
    assert_eq!(record.client_request_id, Some(id.to_string()));
    // Too long, or not visible ASCII: a 400 naming the header, before any model call.
    for bad in ["x".repeat(129), "tab\there".to_string()] {
        let r = h
            .http
            .post(h.url("/chat"))
            .header("x-request-id", bad)
            .json(&json!({"prompt": "p", "user_id": "u"}))
            .send()
            .await
            .unwrap();
        let e = error_of(r, 400).await;
        assert_eq!(e["param"], "x-request-id", "{e}");
    }
    h.app.stop().await;
}
