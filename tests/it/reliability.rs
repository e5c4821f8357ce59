//! Issue 14: nothing a client does loses a record, stalls other clients or exhausts the gateway.
//! A test per finding of the hostile-client probe, on PostgreSQL and SQLite where both apply.

use crate::common::Harness;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
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
