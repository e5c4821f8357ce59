//! Property tests over everything that parses untrusted input: arbitrary bytes and arbitrary JSON
//! (random and near-valid) into the request parsers, and whole requests with random bodies,
//! headers and credentials through the real router. Nothing may panic, and every answer is a
//! 2xx, 4xx or 5xx; every non-2xx answer is OpenAI-style JSON.

mod common;

use axum::body::Body;
use axum::http::{HeaderValue, Request};
use common::Harness;
use llm_quality_observer::api::chat::ChatRequest;
use llm_quality_observer::api::error::{parse_json, ApiError};
use llm_quality_observer::api::openai::parse_chat_completion;
use llm_quality_observer::api::responses::parse_responses;
use llm_quality_observer::auth::config::ConfigKey;
use llm_quality_observer::auth::keys::hash_key_hex;
use llm_quality_observer::config::Config;
use llm_quality_observer::provider::wire::JsonBody;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY: &str = "proptest-key-0123456789abcdef0123456789";

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("[mock:status=500]")),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field that is usually right, sometimes any JSON at all, sometimes missing.
fn field(name: &'static str, good: Value) -> impl Strategy<Value = Option<(String, Value)>> {
    prop_oneof![
        12 => Just(Some((name.to_string(), good))),
        1 => arb_json().prop_map(move |v| Some((name.to_string(), v))),
        1 => Just(None),
    ]
}

fn object(fields: Vec<Option<(String, Value)>>) -> Value {
    Value::Object(fields.into_iter().flatten().collect())
}

/// `/chat` bodies, mostly valid, so parsing gets past the first field and into the handler.
fn near_valid_chat() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just(json!("What is 2+2?")),
            ".{0,60}".prop_map(Value::String),
            Just(json!("fail [mock:status=500]")),
        ]
        .prop_flat_map(|p| field("prompt", p)),
        field("user_id", json!("u1")),
        prop_oneof![
            Just(json!("mock-local")),
            Just(json!("gpt-test")),
            Just(json!("nope"))
        ]
        .prop_flat_map(|m| field("model_version", m)),
        field("tags", json!(["a", "b"])),
        field("metadata", json!({"team": "x"})),
    )
        .prop_map(|(a, b, c, d, e)| object(vec![a, b, c, d, e]))
}

/// `/v1/chat/completions` bodies, mostly valid.
fn near_valid_completion() -> impl Strategy<Value = Value> {
    let message = prop_oneof![
        4 => ".{0,40}".prop_map(|t| json!({"role": "user", "content": t})),
        1 => Just(json!({"role": "system", "content": [{"type": "text", "text": "be brief"}]})),
        1 => Just(json!({"role": "wizard", "content": "x"})),
        1 => arb_json(),
    ];
    (
        prop_oneof![
            Just(json!("mock-local")),
            Just(json!("gpt-test")),
            Just(json!("nope"))
        ]
        .prop_flat_map(|m| field("model", m)),
        prop::collection::vec(message, 0..4).prop_flat_map(|m| field("messages", Value::Array(m))),
        any::<bool>().prop_flat_map(|b| field("stream", json!(b))),
        (-1.0f64..3.0).prop_flat_map(|t| field("temperature", json!(t))),
        (0u32..64).prop_flat_map(|n| field("max_tokens", json!(n))),
        field("metadata", json!({"tags": "a,b"})),
        field("stop", json!(["\n"])),
        field("user", json!("u2")),
    )
        .prop_map(|(a, b, c, d, e, f, g, h)| object(vec![a, b, c, d, e, f, g, h]))
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
        near_valid_chat().prop_map(|v| v.to_string().into_bytes()),
        near_valid_completion().prop_map(|v| v.to_string().into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_and_name_what_is_wrong(bytes in body_bytes()) {
        let config = Config::default();
        let body = || JsonBody::parse(bytes.clone().into()).map_err(ApiError::from);
        for result in [
            parse_json::<ChatRequest>(&bytes).map(|_| ()),
            body().and_then(|b| parse_chat_completion(&b, &config).map(|_| ())),
            body().and_then(|b| parse_responses(&b).map(|_| ())),
        ] {
            if let Err(e) = result {
                prop_assert_eq!(e.status.as_u16(), 400);
                prop_assert!(!e.message.is_empty());
                prop_assert!(matches!(e.code, Some("invalid_json") | Some("invalid_value")));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The pass-through splice: any JSON object, whatever its spacing, comes out of `rewrite`
    /// equal to what went in but for the replaced and removed members.
    #[test]
    fn rewrites_change_only_the_named_members(
        fields in prop::collection::btree_map("[a-z_]{1,12}", arb_json(), 0..10),
        pretty in any::<bool>(),
        model in ".{0,20}",
    ) {
        let original = Value::Object(fields.into_iter().collect());
        let text = if pretty {
            serde_json::to_string_pretty(&original).unwrap()
        } else {
            original.to_string()
        };
        let body = JsonBody::parse(text.into_bytes().into()).expect("a JSON object parses");
        let same: Value = serde_json::from_slice(&body.rewrite(&[])).unwrap();
        prop_assert_eq!(&same, &original);
        let new_model = serde_json::to_vec(&model).unwrap();
        let rewritten: Value =
            serde_json::from_slice(&body.rewrite(&[("model", Some(&new_model)), ("messages", None)]))
                .unwrap();
        let mut expected = original.clone();
        expected["model"] = json!(model);
        if let Some(o) = expected.as_object_mut() {
            o.remove("messages");
        }
        prop_assert_eq!(rewritten, expected);
        let all: Value = serde_json::from_slice(&body.filtered(|_, _| true)).unwrap();
        prop_assert_eq!(all, original);
    }
}

fn credential() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        6 => Just(Some(format!("Bearer {KEY}").into_bytes())),
        1 => Just(None),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Some),
        1 => ".{0,30}".prop_map(|s| Some(format!("Bearer {s}").into_bytes())),
    ]
}

fn path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("/chat"),
        Just("/v1/chat/completions"),
        Just("/v1/responses"),
        Just("/v1/embeddings"),
        Just("/v1/feedback"),
        Just("/v1/logs"),
        Just("/v1/admin/keys"),
        Just("/nowhere"),
    ]
}

fn method() -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => Just("POST"), 1 => Just("GET"), 1 => Just("DELETE")]
}

type Case = (
    ((&'static str, &'static str), Vec<u8>),
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
);

/// One gateway for all cases (auth on, `KEY` valid), driven in-process with `oneshot`; the
/// runner is explicit so the gateway and its database are torn down after the last case.
#[test]
fn the_router_answers_every_request_with_a_status_and_json_errors() {
    // Generating the nested request strategies recurses deeply in unoptimised builds; the
    // default 2 MiB test thread is not enough.
    let worker = std::thread::Builder::new()
        .stack_size(64 * 1024 * 1024)
        .spawn(router_cases)
        .expect("test thread");
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

fn router_cases() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let h = rt.block_on(Harness::sqlite_with(|c| {
        c.auth.required = true;
        c.auth.keys = vec![ConfigKey {
            name: "fuzz".into(),
            sha256: hash_key_hex(KEY),
            scopes: vec!["chat".into(), "feedback".into(), "logs:read".into()],
            expires_at: None,
        }];
    }));
    let json_bytes = |v: Value| v.to_string().into_bytes();
    // Mostly bodies made for their route, so requests get deep into the handlers and the
    // gateway; the rest any body on any route.
    let target = prop_oneof![
        3 => near_valid_chat().prop_map(move |v| (("POST", "/chat"), json_bytes(v))),
        3 => near_valid_completion()
            .prop_map(move |v| (("POST", "/v1/chat/completions"), json_bytes(v))),
        2 => ((method(), path()), body_bytes()),
    ];
    let strategy = (
        target,
        credential(),
        prop::option::of(".{0,40}"),
        prop::option::of(".{0,80}"),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    });
    let result = runner.run(
        &strategy,
        |(((method, path), body), auth, request_id, tags): Case| {
            let router = llm_quality_observer::api::router(h.app.state.clone());
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json");
            if let Some(a) = auth.and_then(|a| HeaderValue::from_bytes(&a).ok()) {
                req = req.header("authorization", a);
            }
            if let Some(v) = request_id.and_then(|s| HeaderValue::from_str(&s).ok()) {
                req = req.header("x-request-id", v);
            }
            if let Some(v) = tags.and_then(|s| HeaderValue::from_str(&s).ok()) {
                req = req.header("x-lqo-tags", v);
            }
            let req = req.body(Body::from(body)).expect("request builds");
            let (status, content_type, bytes) = rt.block_on(async move {
                let resp = router.oneshot(req).await.expect("infallible");
                let status = resp.status();
                let ct = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let bytes = axum::body::to_bytes(resp.into_body(), 4 * 1024 * 1024).await;
                (status, ct, bytes)
            });
            let bytes = bytes.expect("the body streams to the end");
            prop_assert!(
                status.is_success() || status.is_client_error() || status.is_server_error(),
                "{status}"
            );
            if !status.is_success() {
                prop_assert!(
                    content_type.starts_with("application/json"),
                    "{status} {content_type}"
                );
                let v: Value = serde_json::from_slice(&bytes).expect("error bodies are JSON");
                prop_assert!(v["error"]["message"].is_string(), "{v}");
                prop_assert!(v["error"]["type"].is_string(), "{v}");
            }
            Ok(())
        },
    );
    rt.block_on(h.app.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
}
