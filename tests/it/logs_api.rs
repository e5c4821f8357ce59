//! GET /v1/logs and GET /v1/logs/{request_id} over HTTP against the real app, on SQLite and
//! PostgreSQL: records made by real calls, every filter, keyset pages, and every bad input.

use std::collections::HashSet;

use crate::common::Harness;
use serde_json::{json, Value};
use uuid::Uuid;

/// What a test call was, to compute the expected answer of each filter.
#[derive(Debug, Clone)]
struct Call {
    id: Uuid,
    model: &'static str,
    user: String,
    tag: &'static str,
    failed: bool,
}

/// 14 calls over two model versions, three users, two tags; every fourth fails upstream.
async fn make_calls(h: &Harness) -> Vec<Call> {
    let mut calls = Vec::new();
    for i in 0..14 {
        let model = if i % 2 == 0 { "gpt-test" } else { "mock-local" };
        let failed = i % 4 == 3;
        let prompt = if failed {
            format!("call {i} [mock:status=500]")
        } else {
            format!("call {i}")
        };
        let user = format!("u{}", i % 3);
        let tag = if i % 3 == 0 { "alpha" } else { "beta" };
        let resp = h
            .post_json(
                "/chat",
                json!({"prompt": prompt, "user_id": user, "model_version": model, "tags": [tag]}),
            )
            .await;
        assert_eq!(resp.status().is_success(), !failed, "call {i}");
        let id = Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).unwrap();
        calls.push(Call {
            id,
            model,
            user,
            tag,
            failed,
        });
    }
    for c in &calls {
        h.record(c.id).await;
    }
    calls
}

async fn get(h: &Harness, path_and_query: &str) -> (u16, Value) {
    let r = h.http.get(h.url(path_and_query)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Follows next_cursor to the end; the ids in order, and the number of pages.
async fn walk(h: &Harness, query: &str) -> (Vec<Uuid>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("/v1/logs?{query}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = get(h, &q).await;
        assert_eq!(status, 200, "{q}: {body}");
        pages += 1;
        for r in body["data"].as_array().unwrap() {
            ids.push(Uuid::parse_str(r["request_id"].as_str().unwrap()).unwrap());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(body["next_cursor"].is_null());
                break;
            }
        }
        assert!(pages < 100, "endless paging");
    }
    (ids, pages)
}

async fn logs_read_back_with_filters_and_pages(h: Harness) {
    let calls = make_calls(&h).await;
    // The order the API promises: newest first, ties by request_id.
    let mut stored = Vec::new();
    for c in &calls {
        stored.push((
            h.store.logs.get_log(c.id).await.unwrap().unwrap(),
            c.clone(),
        ));
    }
    stored.sort_by_key(|(r, _)| std::cmp::Reverse((r.created_at, r.request_id)));
    let expect = |keep: &dyn Fn(&Call) -> bool| -> Vec<Uuid> {
        stored
            .iter()
            .filter(|(_, c)| keep(c))
            .map(|(r, _)| r.request_id)
            .collect()
    };

    // Everything, in pages of 4: 14 records → 4 pages, nothing lost or repeated.
    let (all, pages) = walk(&h, "limit=4").await;
    assert_eq!(all, expect(&|_| true));
    assert_eq!(pages, 4);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 14);
    // The default page holds them all.
    let (status, body) = get(&h, "/v1/logs").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().unwrap().len(), 14);
    assert!(body["next_cursor"].is_null());

    for (query, keep) in [
        (
            "model_version=mock-local",
            Box::new(|c: &Call| c.model == "mock-local") as Box<dyn Fn(&Call) -> bool>,
        ),
        ("user_id=u1", Box::new(|c: &Call| c.user == "u1")),
        ("tag=alpha", Box::new(|c: &Call| c.tag == "alpha")),
        ("status=error", Box::new(|c: &Call| c.failed)),
        ("status=ok", Box::new(|c: &Call| !c.failed)),
        (
            "model_version=gpt-test&status=ok&tag=beta",
            Box::new(|c: &Call| c.model == "gpt-test" && !c.failed && c.tag == "beta"),
        ),
        ("user_id=nobody", Box::new(|_: &Call| false)),
    ] {
        let want = expect(&*keep);
        let (got, _) = walk(&h, &format!("{query}&limit=3")).await;
        assert_eq!(got, want, "{query}");
    }

    // Time range: since is inclusive, until exclusive.
    let mid = &stored[stored.len() / 2].0;
    let since = mid
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (got, _) = walk(&h, &format!("since={since}&limit=5")).await;
    let want: Vec<Uuid> = stored
        .iter()
        .filter(|(r, _)| r.created_at >= mid.created_at)
        .map(|(r, _)| r.request_id)
        .collect();
    assert_eq!(got, want);
    let (got, _) = walk(&h, &format!("until={since}&limit=5")).await;
    let want: Vec<Uuid> = stored
        .iter()
        .filter(|(r, _)| r.created_at < mid.created_at)
        .map(|(r, _)| r.request_id)
        .collect();
    assert_eq!(got, want);

    // One record, every field as stored.
    let failed = calls.iter().find(|c| c.failed).unwrap();
    let (status, body) = get(&h, &format!("/v1/logs/{}", failed.id)).await;
    assert_eq!(status, 200, "{body}");
    let stored_one = h.store.logs.get_log(failed.id).await.unwrap().unwrap();
    // Every stored field at the top level (evaluation adds its own keys beside them).
    let want = serde_json::to_value(&stored_one).unwrap();
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&body[k], v, "field {k}");
    }
    assert_eq!(body["status"], "error");
    assert_eq!(body["model_version"], failed.model);
    assert_eq!(body["tags"], json!([failed.tag]));
    h.app.stop().await;
}

#[tokio::test]
async fn sqlite_logs_read_back_with_filters_and_keyset_pages() {
    logs_read_back_with_filters_and_pages(Harness::sqlite().await).await;
}

#[tokio::test]
async fn postgres_logs_read_back_with_filters_and_keyset_pages() {
    logs_read_back_with_filters_and_pages(Harness::postgres().await).await;
}

async fn bad_input_is_a_400_naming_the_parameter(h: Harness) {
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("status=maybe", "status"),
        ("since=last-week", "since"),
        ("until=2025-01-01T00:00:00+01:00", "until"),
        (
            "since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z",
            "until",
        ),
        ("cursor=not-a-cursor", "cursor"),
        ("user=u1", "user"),
        ("tag=a&tag=b", "tag"),
    ] {
        let (status, body) = get(&h, &format!("/v1/logs?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{query}");
        assert_eq!(body["error"]["param"], param, "{query}: {body}");
    }
    // Not a UUID: a client's own x-request-id, which no record carries.
    let (status, body) = get(&h, "/v1/logs/not-a-uuid").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["param"], "request_id");
    let (status, body) = get(&h, &format!("/v1/logs/{}", "x".repeat(129))).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "request_id");
    let missing = Uuid::new_v4();
    let (status, body) = get(&h, &format!("/v1/logs/{missing}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "log_not_found");
    // Both routes are documented.
    let (_, spec) = get(&h, "/openapi.json").await;
    for path in ["/v1/logs", "/v1/logs/{request_id}"] {
        assert!(
            spec["paths"][path]["get"].is_object(),
            "{path} missing from openapi"
        );
    }
    h.app.stop().await;
}

#[tokio::test]
async fn sqlite_bad_log_queries_are_400s_naming_the_parameter() {
    bad_input_is_a_400_naming_the_parameter(Harness::sqlite().await).await;
}

#[tokio::test]
async fn postgres_bad_log_queries_are_400s_naming_the_parameter() {
    bad_input_is_a_400_naming_the_parameter(Harness::postgres().await).await;
}
