//! Correctness under load: thousands of concurrent calls through the real app, every one answered
//! and every one in PostgreSQL exactly once. (Speed is measured in bench/, never asserted here.)

use std::collections::HashSet;

use crate::common::Harness;
use futures::future::join_all;
use llm_quality_observer::store::testing;
use serde_json::{json, Value};

const CALLS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_calls_all_land_exactly_once() {
    let h = Harness::postgres().await;
    let calls = (0..CALLS).map(|i| {
        let h = &h;
        async move {
            // A mix of both routes, streaming and not, the real reqwest provider and the built-in mock.
            let (path, body) = match i % 4 {
                0 => ("/chat", json!({"prompt": format!("load {i}"), "user_id": "load"})),
                1 => ("/chat", json!({"prompt": format!("load {i}"), "user_id": "load", "model_version": "mock-local"})),
                2 => ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": format!("load {i}")}]})),
                _ => ("/v1/chat/completions", json!({"model": "mock-local", "stream": true,
                        "messages": [{"role": "user", "content": format!("load {i}")}]})),
            };
            let resp = h.post_json(path, body).await;
            assert_eq!(resp.status(), 200, "call {i}");
            let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
            let text = resp.text().await.unwrap();
            if path == "/chat" {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["request_id"], id);
            }
            id
        }
    });
    let ids: Vec<String> = join_all(calls).await;
    let sent: HashSet<String> = ids.into_iter().collect();
    assert_eq!(sent.len(), CALLS, "every call got its own request id");

    // A graceful stop flushes the writer: afterwards every record must be in the table.
    let store = h.store.clone();
    h.app.stop().await;
    let stored = testing::fetch_texts(&store, "SELECT request_id::text FROM llm_logs").await;
    assert_eq!(stored.len(), CALLS, "no record lost or duplicated");
    let stored: HashSet<String> = stored.into_iter().collect();
    assert_eq!(stored, sent);
}
