//! Client API keys end to end: 401 for missing, malformed, invalid, expired and revoked keys, 403 for
//! a missing scope, 429 with Retry-After for per-key limits, the key's name on every record, the
//! admin routes with their audit trail, and `lqo keys` on the command line.

use std::process::Command;
use std::time::Duration;

use crate::common::{sample, Harness};
use chrono::Utc;
use llm_quality_observer::auth::config::{ConfigKey, RateLimit};
use llm_quality_observer::auth::keys::{self, hash_key_hex};
use llm_quality_observer::auth::{access_for, Access};
use llm_quality_observer::config::Config;
use llm_quality_observer::store::keys::NewKey;
use llm_quality_observer::store::testing;
use serde_json::{json, Value};
use uuid::Uuid;

const ADMIN_KEY: &str = "admin-key-from-config-0123456789abcdef";
const CHAT_KEY: &str = "chat-key-from-config-0123456789abcdef";

/// Auth on, with an admin key and a chat key declared in the config by their hashes.
fn auth_on(cfg: &mut Config) {
    cfg.auth.required = true;
    cfg.auth.keys = vec![
        ConfigKey {
            name: "ops-admin".into(),
            sha256: hash_key_hex(ADMIN_KEY),
            scopes: vec!["admin".into()],
            expires_at: None,
        },
        ConfigKey {
            name: "app".into(),
            sha256: hash_key_hex(CHAT_KEY),
            scopes: vec!["chat".into()],
            expires_at: None,
        },
    ];
}

fn chat_body() -> Value {
    json!({"prompt": "hello there", "user_id": "u1"})
}

async fn post_with(h: &Harness, path: &str, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = h.http.post(h.url(path)).json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("request sent")
}

async fn get_with(h: &Harness, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = h.http.get(h.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("request sent")
}

/// Asserts the status and the OpenAI error shape; returns `error`.
async fn error_of(resp: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(resp.status(), status, "{:?}", resp.headers());
    if status == 401 {
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer realm=\"lqo\"",
            "401 names the scheme"
        );
    }
    let body: Value = resp.json().await.expect("JSON error body");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    body["error"].clone()
}

fn request_id(resp: &reqwest::Response) -> Uuid {
    Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).unwrap()
}

#[tokio::test]
async fn missing_malformed_and_unknown_keys_are_401() {
    let h = Harness::sqlite_with(auth_on).await;
    let e = error_of(
        post_with(&h, "/chat", None, chat_body()).await,
        401,
        "authentication_error",
    )
    .await;
    assert_eq!(e["code"], "missing_api_key");
    let r = h
        .http
        .post(h.url("/v1/chat/completions"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let e = error_of(r, 401, "authentication_error").await;
    assert_eq!(e["code"], "invalid_api_key");
    for bad in [
        "nope",
        "lqo_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "sk-an-openai-key-by-mistake",
    ] {
        let e = error_of(
            post_with(&h, "/chat", Some(bad), chat_body()).await,
            401,
            "authentication_error",
        )
        .await;
        assert_eq!(e["code"], "invalid_api_key", "{bad}");
    }
    // The cached verdict answers the same the second time.
    let e = error_of(
        post_with(&h, "/chat", Some("nope"), chat_body()).await,
        401,
        "authentication_error",
    )
    .await;
    assert_eq!(e["code"], "invalid_api_key");
    let m = h.metrics().await;
    assert_eq!(
        sample(&m, "lqo_auth_failures_total", &[("reason", "missing")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "lqo_auth_failures_total", &[("reason", "malformed")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "lqo_auth_failures_total", &[("reason", "invalid")]),
        Some(4.0)
    );
    assert_eq!(
        sample(&m, "lqo_auth_failures_total", &[("reason", "expired")]),
        Some(0.0)
    );
    // Refused requests never reached a model: nothing recorded.
    assert_eq!(h.store.logs.count_logs().await.unwrap(), 0);
    h.app.stop().await;
}

#[tokio::test]
async fn public_routes_stay_open_and_unknown_routes_stay_404_with_auth_on() {
    let h = Harness::sqlite_with(auth_on).await;
    for path in ["/health", "/ready", "/openapi.json", "/docs/", "/metrics"] {
        let r = get_with(&h, path, None).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = get_with(&h, "/no/such/route", None).await;
    assert_eq!(r.status(), 404);
    let r = get_with(&h, "/v1/models", Some(CHAT_KEY)).await;
    assert_eq!(r.status(), 200);
    h.app.stop().await;
}

/// Every route in the OpenAPI document that is not public answers 401 without a key, so a route
/// added later cannot be open by accident (routes missing from `auth::ROUTE_ACCESS` need admin).
#[tokio::test]
async fn every_documented_route_needs_a_key() {
    use llm_quality_observer::api::ApiDoc;
    use utoipa::OpenApi;
    let h = Harness::sqlite_with(auth_on).await;
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if matches!(access_for(path), Access::Public | Access::MetricsToken) {
            continue;
        }
        let concrete = path.replace(['{', '}'], "");
        for method in item.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = h
                .http
                .request(m, h.url(&concrete))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{method} {path} must need a key");
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} routes checked");
    h.app.stop().await;
}

async fn created_key_works_and_is_recorded(h: &Harness) {
    let created = keys::create_key(
        h.store.keys.as_ref(),
        &[],
        "team-a",
        &["chat".into()],
        None,
        "cli",
    )
    .await
    .unwrap();
    assert!(created.key.starts_with("lqo_"));
    let r = post_with(h, "/chat", Some(&created.key), chat_body()).await;
    assert_eq!(r.status(), 200);
    let rec = h.record(request_id(&r)).await;
    assert_eq!(rec.api_key_name.as_deref(), Some("team-a"));
    // OpenAI clients send the same header.
    let r = post_with(
        h,
        "/v1/chat/completions",
        Some(&created.key),
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let _ = r.text().await.unwrap();
    assert_eq!(h.record(id).await.api_key_name.as_deref(), Some("team-a"));
    // A config key's name is recorded too.
    let r = post_with(h, "/chat", Some(CHAT_KEY), chat_body()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.record(request_id(&r)).await.api_key_name.as_deref(),
        Some("app")
    );
    // Only the hash and prefix are stored, and the last use is noted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stored = h.store.keys.list_api_keys().await.unwrap();
        let k = stored.iter().find(|k| k.name == "team-a").unwrap();
        assert_eq!(k.key_hash, hash_key_hex(&created.key));
        assert_eq!(k.prefix, &created.key[..12]);
        assert_ne!(k.key_hash, created.key);
        if k.last_used_at.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "last_used_at never set"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn created_key_authenticates_and_is_recorded_sqlite() {
    let h = Harness::sqlite_with(auth_on).await;
    created_key_works_and_is_recorded(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn created_key_authenticates_and_is_recorded_postgres() {
    let h = Harness::postgres_with(auth_on).await;
    created_key_works_and_is_recorded(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn a_missing_scope_is_403() {
    let h = Harness::sqlite_with(auth_on).await;
    let fb = keys::create_key(
        h.store.keys.as_ref(),
        &[],
        "feedback-only",
        &["feedback".into()],
        None,
        "cli",
    )
    .await
    .unwrap();
    let e = error_of(
        post_with(&h, "/chat", Some(&fb.key), chat_body()).await,
        403,
        "permission_error",
    )
    .await;
    assert_eq!(e["code"], "missing_scope");
    assert!(e["message"].as_str().unwrap().contains("`chat`"), "{e}");
    let e = error_of(
        get_with(&h, "/v1/models", Some(&fb.key)).await,
        403,
        "permission_error",
    )
    .await;
    assert_eq!(e["code"], "missing_scope");
    // A chat key is no admin.
    let e = error_of(
        get_with(&h, "/v1/admin/keys", Some(CHAT_KEY)).await,
        403,
        "permission_error",
    )
    .await;
    assert_eq!(e["code"], "missing_scope");
    // And an admin key is not a chat key: scopes are explicit.
    let e = error_of(
        post_with(&h, "/chat", Some(ADMIN_KEY), chat_body()).await,
        403,
        "permission_error",
    )
    .await;
    assert_eq!(e["code"], "missing_scope");
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "lqo_auth_failures_total",
            &[("reason", "missing_scope")]
        ),
        Some(4.0)
    );
    h.app.stop().await;
}

async fn expired_keys_are_401(h: &Harness) {
    // Stored already expired (as after a long weekend).
    let key = keys::generate_key();
    let scopes = vec!["chat".to_string()];
    h.store
        .keys
        .insert_api_key(&NewKey {
            name: "old",
            prefix: &key[..12],
            key_hash: &hash_key_hex(&key),
            scopes: &scopes,
            created_at: Utc::now() - chrono::Duration::days(10),
            expires_at: Some(Utc::now() - chrono::Duration::days(1)),
        })
        .await
        .unwrap();
    let e = error_of(
        post_with(h, "/chat", Some(&key), chat_body()).await,
        401,
        "authentication_error",
    )
    .await;
    assert_eq!(e["code"], "expired_api_key");
    // Expiring while cached: expiry is checked on every use, not only on lookup.
    let soon = Utc::now() + chrono::Duration::milliseconds(1500);
    let k = keys::create_key(
        h.store.keys.as_ref(),
        &[],
        "short-lived",
        &scopes,
        Some(soon),
        "cli",
    )
    .await
    .unwrap();
    assert_eq!(
        post_with(h, "/chat", Some(&k.key), chat_body())
            .await
            .status(),
        200
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = post_with(h, "/chat", Some(&k.key), chat_body()).await;
        if r.status() == 401 {
            assert!(Utc::now() >= soon, "refused before its expiry");
            let e = error_of(r, 401, "authentication_error").await;
            assert_eq!(e["code"], "expired_api_key");
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn expired_keys_are_401_sqlite() {
    let h = Harness::sqlite_with(auth_on).await;
    expired_keys_are_401(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn expired_keys_are_401_postgres() {
    let h = Harness::postgres_with(auth_on).await;
    expired_keys_are_401(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn expired_config_key_is_401() {
    let h = Harness::sqlite_with(|cfg| {
        auth_on(cfg);
        cfg.auth.keys[1].expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
    })
    .await;
    let e = error_of(
        post_with(&h, "/chat", Some(CHAT_KEY), chat_body()).await,
        401,
        "authentication_error",
    )
    .await;
    assert_eq!(e["code"], "expired_api_key");
    h.app.stop().await;
}

/// Revoked elsewhere (the CLI, another replica): refused within the cache TTL.
async fn revocation_takes_effect_within_the_cache_ttl(h: &Harness) {
    let k = keys::create_key(
        h.store.keys.as_ref(),
        &[],
        "leaky",
        &["chat".into()],
        None,
        "cli",
    )
    .await
    .unwrap();
    assert_eq!(
        post_with(h, "/chat", Some(&k.key), chat_body())
            .await
            .status(),
        200
    );
    let revoked_at = tokio::time::Instant::now();
    keys::revoke_key(h.store.keys.as_ref(), "leaky", "cli")
        .await
        .unwrap();
    loop {
        let r = post_with(h, "/chat", Some(&k.key), chat_body()).await;
        if r.status() == 401 {
            let e = error_of(r, 401, "authentication_error").await;
            assert_eq!(e["code"], "revoked_api_key");
            break;
        }
        assert_eq!(r.status(), 200);
        // cache_ttl_secs is 1 in this test; allow scheduling slack.
        assert!(
            revoked_at.elapsed() < Duration::from_secs(3),
            "still accepted {:?} after revocation",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = h.metrics().await;
    assert_eq!(
        sample(&m, "lqo_auth_failures_total", &[("reason", "revoked")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn revocation_takes_effect_within_the_cache_ttl_sqlite() {
    let h = Harness::sqlite_with(|c| {
        auth_on(c);
        c.auth.cache_ttl_secs = 1;
    })
    .await;
    revocation_takes_effect_within_the_cache_ttl(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn revocation_takes_effect_within_the_cache_ttl_postgres() {
    let h = Harness::postgres_with(|c| {
        auth_on(c);
        c.auth.cache_ttl_secs = 1;
    })
    .await;
    revocation_takes_effect_within_the_cache_ttl(&h).await;
    h.app.stop().await;
}

async fn admin_routes_manage_keys_and_leave_an_audit_trail(h: &Harness) {
    let r = post_with(
        h,
        "/v1/admin/keys",
        Some(ADMIN_KEY),
        json!({"name": "svc", "scopes": ["chat", "logs:read"], "expires": "30d"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("lqo_") && key.len() >= 40);
    assert_eq!(created["scopes"], json!(["chat", "logs:read"]));
    assert!(created["expires_at"].is_string());
    assert_eq!(
        post_with(h, "/chat", Some(&key), chat_body())
            .await
            .status(),
        200
    );

    // Bad input and conflicts.
    let e = error_of(
        post_with(h, "/v1/admin/keys", Some(ADMIN_KEY), json!({"name": "svc"})).await,
        409,
        "invalid_request_error",
    )
    .await;
    assert_eq!(e["code"], "key_name_taken");
    let e = error_of(
        post_with(h, "/v1/admin/keys", Some(ADMIN_KEY), json!({"name": "app"})).await,
        409,
        "invalid_request_error",
    )
    .await;
    assert_eq!(e["code"], "key_name_taken", "config names are taken too");
    let e = error_of(
        post_with(
            h,
            "/v1/admin/keys",
            Some(ADMIN_KEY),
            json!({"name": "x", "scopes": ["root"]}),
        )
        .await,
        400,
        "invalid_request_error",
    )
    .await;
    assert_eq!(e["param"], "scopes");
    let e = error_of(
        post_with(
            h,
            "/v1/admin/keys",
            Some(ADMIN_KEY),
            json!({"name": "bad name!"}),
        )
        .await,
        400,
        "invalid_request_error",
    )
    .await;
    assert_eq!(e["param"], "name");
    let e = error_of(
        post_with(
            h,
            "/v1/admin/keys",
            Some(ADMIN_KEY),
            json!({"name": "x", "expires": "someday"}),
        )
        .await,
        400,
        "invalid_request_error",
    )
    .await;
    assert_eq!(e["param"], "expires");

    // Listing shows names and prefixes, never keys or hashes.
    let r = get_with(h, "/v1/admin/keys", Some(ADMIN_KEY)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(&key) && !text.contains(&hash_key_hex(&key)),
        "{text}"
    );
    let list: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"svc") && names.contains(&"ops-admin"),
        "{names:?}"
    );

    // Revoking through this replica works at once, even though the key is cached.
    let r = h
        .http
        .delete(h.url("/v1/admin/keys/svc"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e = error_of(
        post_with(h, "/chat", Some(&key), chat_body()).await,
        401,
        "authentication_error",
    )
    .await;
    assert_eq!(e["code"], "revoked_api_key");
    let r = h
        .http
        .delete(h.url("/v1/admin/keys/svc"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let e = error_of(r, 404, "not_found_error").await;
    assert_eq!(e["code"], "key_not_found");

    let audit = h.store.keys.recent_audit(20).await.unwrap();
    let actions: Vec<(&str, &str, Option<&str>)> = audit
        .iter()
        .rev()
        .map(|a| (a.actor.as_str(), a.action.as_str(), a.target.as_deref()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("ops-admin", "key.create", Some("svc")),
            ("ops-admin", "key.list", None),
            ("ops-admin", "key.revoke", Some("svc")),
        ]
    );
}

#[tokio::test]
async fn admin_routes_manage_keys_and_leave_an_audit_trail_sqlite() {
    let h = Harness::sqlite_with(auth_on).await;
    admin_routes_manage_keys_and_leave_an_audit_trail(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn admin_routes_manage_keys_and_leave_an_audit_trail_postgres() {
    let h = Harness::postgres_with(auth_on).await;
    admin_routes_manage_keys_and_leave_an_audit_trail(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn with_auth_off_anyone_may_chat_but_nobody_may_administer() {
    let h = Harness::sqlite().await;
    let r = post_with(
        &h,
        "/chat",
        Some("whatever-openai-clients-send"),
        chat_body(),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.record(request_id(&r)).await.api_key_name, None);
    let e = error_of(
        post_with(&h, "/v1/admin/keys", None, json!({"name": "x"})).await,
        403,
        "permission_error",
    )
    .await;
    assert_eq!(e["code"], "auth_disabled");
    h.app.stop().await;
}

#[tokio::test]
async fn requests_per_minute_limit_is_429_with_retry_after_per_key() {
    let h = Harness::sqlite_with(|c| {
        auth_on(c);
        c.auth.rate_limits.per_key.insert(
            "app".into(),
            RateLimit {
                requests_per_minute: 2,
                tokens_per_minute: 0,
            },
        );
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            post_with(&h, "/chat", Some(CHAT_KEY), chat_body())
                .await
                .status(),
            200
        );
    }
    let r = post_with(&h, "/chat", Some(CHAT_KEY), chat_body()).await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let e = error_of(r, 429, "rate_limit_error").await;
    assert_eq!(e["code"], "rate_limit_exceeded");
    // Another key has its own budget.
    let other = keys::create_key(
        h.store.keys.as_ref(),
        &[],
        "other",
        &["chat".into()],
        None,
        "cli",
    )
    .await
    .unwrap();
    assert_eq!(
        post_with(&h, "/chat", Some(&other.key), chat_body())
            .await
            .status(),
        200
    );
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "lqo_rate_limited_total",
            &[("key_name", "app"), ("limit", "requests")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "lqo_rate_limited_total", &[("key_name", "other")]),
        None
    );
    h.app.stop().await;
}

#[tokio::test]
async fn tokens_per_minute_limit_charges_the_real_usage() {
    let h = Harness::sqlite_with(|c| {
        auth_on(c);
        c.auth.rate_limits.default = RateLimit {
            requests_per_minute: 0,
            tokens_per_minute: 40,
        };
    })
    .await;
    // The first call is let through and charged its real usage, which overdraws the bucket.
    let r = post_with(&h, "/chat", Some(CHAT_KEY), json!({"prompt": "a prompt long enough to spend more than forty tokens between the question and the mock's answer", "user_id": "u"})).await;
    assert_eq!(r.status(), 200);
    let rec = h.record(request_id(&r)).await;
    assert!(rec.input_tokens + rec.output_tokens > 40, "{rec:?}");
    let r = post_with(&h, "/chat", Some(CHAT_KEY), chat_body()).await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let e = error_of(r, 429, "rate_limit_error").await;
    assert!(e["message"].as_str().unwrap().contains("tokens"), "{e}");
    // Listing models is no model call: the token budget does not apply.
    assert_eq!(
        get_with(&h, "/v1/models", Some(CHAT_KEY)).await.status(),
        200
    );
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "lqo_rate_limited_total",
            &[("key_name", "app"), ("limit", "tokens")]
        ),
        Some(1.0)
    );
    h.app.stop().await;
}

#[tokio::test]
async fn anonymous_callers_share_one_budget_when_auth_is_off() {
    let h = Harness::sqlite_with(|c| {
        c.auth.rate_limits.default = RateLimit {
            requests_per_minute: 1,
            tokens_per_minute: 0,
        };
    })
    .await;
    assert_eq!(
        post_with(&h, "/chat", None, chat_body()).await.status(),
        200
    );
    let e = error_of(
        post_with(&h, "/chat", None, chat_body()).await,
        429,
        "rate_limit_error",
    )
    .await;
    assert_eq!(e["code"], "rate_limit_exceeded");
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "lqo_rate_limited_total",
            &[("key_name", "anonymous"), ("limit", "requests")]
        ),
        Some(1.0)
    );
    h.app.stop().await;
}

#[tokio::test]
async fn metrics_token_guards_metrics_independently_of_client_keys() {
    let h = Harness::sqlite_with(|c| {
        c.auth.metrics_token = Some(secrecy::SecretString::from("scrape-me-please".to_string()));
    })
    .await;
    let e = error_of(
        get_with(&h, "/metrics", None).await,
        401,
        "authentication_error",
    )
    .await;
    assert_eq!(e["code"], "invalid_metrics_token");
    let e = error_of(
        get_with(&h, "/metrics", Some("wrong")).await,
        401,
        "authentication_error",
    )
    .await;
    assert_eq!(e["code"], "invalid_metrics_token");
    let r = get_with(&h, "/metrics", Some("scrape-me-please")).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(
        sample(
            &text,
            "lqo_auth_failures_total",
            &[("reason", "metrics_token")]
        ),
        Some(2.0)
    );
    // Auth is off here: chat still needs nothing.
    assert_eq!(
        post_with(&h, "/chat", None, chat_body()).await.status(),
        200
    );
    h.app.stop().await;
}

fn lqo(db_url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lqo"));
    for var in [
        "LLM_API_KEY",
        "OPENAI_MODEL_MAIN",
        "LLM_API_BASE_URL",
        "LQO_CONFIG",
        "PORT",
        "LQO_AUTH",
    ] {
        c.env_remove(var);
    }
    c.env("DATABASE_URL", db_url);
    c
}

#[tokio::test]
async fn keys_cli_prints_the_key_once_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let out = lqo(&url)
        .args([
            "keys",
            "create",
            "--name",
            "ci",
            "--scopes",
            "chat,logs:read",
            "--expires",
            "90d",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("lqo_") && key.len() == 47, "{key}");
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("not shown again") && !note.contains(&key),
        "{note}"
    );

    let out = lqo(&url)
        .args(["keys", "create", "--name", "ci"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = lqo(&url)
        .args(["keys", "create", "--name", "x", "--scopes", "root"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scope"));

    let out = lqo(&url).args(["keys", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("ci") && list.contains(&key[..12]) && list.contains("live"),
        "{list}"
    );
    assert!(!list.contains(&key));

    let out = lqo(&url).args(["keys", "revoke", "ci"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lqo(&url).args(["keys", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    let out = lqo(&url).args(["keys", "revoke", "ci"]).output().unwrap();
    assert!(!out.status.success());

    // The database holds the hash, never the key; the audit log names the CLI.
    let store = llm_quality_observer::store::Store::connect(&url, 1)
        .await
        .unwrap();
    let stored = store.keys.list_api_keys().await.unwrap();
    assert_eq!(stored[0].key_hash, hash_key_hex(&key));
    let audit = store.keys.recent_audit(10).await.unwrap();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .rev()
        .map(|a| (a.actor.as_str(), a.action.as_str()))
        .collect();
    assert_eq!(actions, vec![("cli", "key.create"), ("cli", "key.revoke")]);
    store.close().await;
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let f = f.unwrap().path();
        let raw = std::fs::read(&f).unwrap();
        assert!(
            !raw.windows(key.len()).any(|w| w == key.as_bytes()),
            "the key itself is in {}",
            f.display()
        );
    }
}

/// When the key table cannot be read, an unknown-to-the-cache key gets 503 with Retry-After, not
/// a misleading 401; keys declared in the config need no database and keep working.
#[tokio::test]
async fn a_key_database_outage_is_503_and_config_keys_keep_working() {
    let h = Harness::sqlite_with(auth_on).await;
    let k = keys::create_key(
        h.store.keys.as_ref(),
        &[],
        "db-key",
        &["chat".into()],
        None,
        "cli",
    )
    .await
    .unwrap();
    h.store.close().await;
    let r = post_with(&h, "/chat", Some(&k.key), chat_body()).await;
    assert_eq!(r.headers()["retry-after"], "1");
    let e = error_of(r, 503, "server_error").await;
    assert_eq!(e["code"], "auth_unavailable");
    assert_eq!(
        post_with(&h, "/chat", Some(CHAT_KEY), chat_body())
            .await
            .status(),
        200
    );
    let m = h.metrics().await;
    assert_eq!(
        sample(&m, "lqo_auth_failures_total", &[("reason", "unavailable")]),
        Some(1.0)
    );
    h.app.stop().await;
}

/// With Redis, a key's limit holds for all replicas together: two gateways on one database
/// answer 4 of 8 requests under a limit of 4 per minute, not 4 each.
#[tokio::test]
async fn rate_limits_hold_across_replicas_with_redis() {
    let redis = crate::common::test_redis();
    let limited = |c: &mut Config| {
        auth_on(c);
        c.redis = redis.clone();
        c.redis.timeout_ms = 2_000; // the machine is shared with compilers
        c.auth.rate_limits.per_key.insert(
            "app".into(),
            RateLimit {
                requests_per_minute: 4,
                tokens_per_minute: 0,
            },
        );
    };
    let a = Harness::postgres_with(limited).await;
    let b = a.replica(limited).await;
    let mut codes = Vec::new();
    for i in 0..8 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let r = post_with(replica, "/chat", Some(CHAT_KEY), chat_body()).await;
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            let e = error_of(r, 429, "rate_limit_error").await;
            assert_eq!(e["code"], "rate_limit_exceeded");
        }
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 4, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 4, "{codes:?}");
    let refused: f64 = [&a, &b]
        .iter()
        .map(|h| async {
            sample(
                &h.metrics().await,
                "lqo_rate_limited_total",
                &[("key_name", "app"), ("limit", "requests")],
            )
            .unwrap_or(0.0)
        })
        .collect::<futures::future::JoinAll<_>>()
        .await
        .into_iter()
        .sum();
    assert_eq!(refused, 4.0);
    b.app.stop().await;
    a.app.stop().await;
}

/// Tokens used on one replica count on the other.
#[tokio::test]
async fn tokens_used_on_one_replica_count_on_every_replica() {
    let redis = crate::common::test_redis();
    let limited = |c: &mut Config| {
        c.redis = redis.clone();
        c.redis.timeout_ms = 2_000;
        c.auth.rate_limits.default = RateLimit {
            requests_per_minute: 0,
            tokens_per_minute: 40,
        };
    };
    let a = Harness::sqlite_with(limited).await;
    let b = a.replica(limited).await;
    let r = post_with(&a, "/chat", None, json!({"prompt": "a prompt long enough to spend more than forty tokens between the question and the mock's answer", "user_id": "u"})).await;
    assert_eq!(r.status(), 200);
    // The charge reaches Redis right after the call ends, off the request path.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = post_with(&b, "/chat", None, chat_body()).await;
        if r.status() == 429 {
            let e = error_of(r, 429, "rate_limit_error").await;
            assert!(e["message"].as_str().unwrap().contains("tokens"), "{e}");
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica b never saw replica a's tokens"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.app.stop().await;
    a.app.stop().await;
}

/// Redis down: by default each replica's own limiter decides (fail open), counted and named in
/// /ready; with `failure_mode: closed` limited keys get 429. Never a 5xx.
#[tokio::test]
async fn a_redis_outage_fails_open_by_default_and_closed_when_configured() {
    let down = crate::common::nothing_listening_url("redis");
    let h = Harness::sqlite_with(|c| {
        c.redis.url = down.clone();
        c.auth.rate_limits.default = RateLimit {
            requests_per_minute: 2,
            tokens_per_minute: 0,
        };
    })
    .await;
    let codes: Vec<u16> = futures::future::join_all((0..3).map(|_| async {
        post_with(&h, "/chat", None, chat_body())
            .await
            .status()
            .as_u16()
    }))
    .await;
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![200, 200, 429],
        "the local limit of 2 still holds"
    );
    let r = get_with(&h, "/ready", None).await;
    assert_eq!(r.status(), 200);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(
        ready["reasons"].to_string().contains("failure_mode: open"),
        "{ready}"
    );
    let m = h.metrics().await;
    assert!(sample(&m, "lqo_rate_limit_store_errors_total", &[]).unwrap_or(0.0) >= 1.0);
    assert_eq!(
        sample(
            &m,
            "lqo_rate_limit_store_bypassed_total",
            &[("failure_mode", "open")]
        ),
        Some(3.0)
    );
    h.app.stop().await;

    let h = Harness::sqlite_with(|c| {
        c.redis.url = down.clone();
        c.redis.failure_mode = llm_quality_observer::config::RedisFailureMode::Closed;
        c.auth.rate_limits.default = RateLimit {
            requests_per_minute: 100,
            tokens_per_minute: 0,
        };
    })
    .await;
    let r = post_with(&h, "/chat", None, chat_body()).await;
    assert_eq!(r.headers()["retry-after"], "1");
    let e = error_of(r, 429, "rate_limit_error").await;
    assert_eq!(e["code"], "rate_limit_unavailable");
    // Public routes carry no key and no limit.
    assert_eq!(get_with(&h, "/health", None).await.status(), 200);
    h.app.stop().await;
}

/// A key revoked through one replica's admin API (or the CLI, which writes the same row) is
/// refused by every other replica within a second, although the cache TTL is 30 s: PostgreSQL
/// NOTIFY reaches their key caches.
#[tokio::test]
async fn a_revoked_key_is_refused_by_every_replica_within_a_second() {
    let on = |c: &mut Config| {
        auth_on(c);
        c.auth.cache_ttl_secs = 30;
    };
    let a = Harness::postgres_with(on).await;
    let b = a.replica(on).await;
    // The third listens on a connection of its own (database.listen_url), as behind PgBouncer.
    let db = testing::fetch_texts(&a.store, "SELECT current_database()")
        .await
        .remove(0);
    let server = std::env::var("LQO_TEST_PG_URL")
        .unwrap_or_else(|_| testing::DEFAULT_TEST_PG_URL.to_string());
    let listen_url = format!("{}/{db}", server.rsplit_once('/').unwrap().0);
    let c = a
        .replica(|cfg| {
            on(cfg);
            cfg.database.listen_url = listen_url.clone();
        })
        .await;
    // Every replica follows key changes before the key exists (the listener starts in the
    // background; /ready names it until then).
    for h in [&a, &b, &c] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ready: Value = get_with(h, "/ready", None).await.json().await.unwrap();
            if ready["status"] == "ready" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{ready}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let k = keys::create_key(
        a.store.keys.as_ref(),
        &[],
        "roaming",
        &["chat".into()],
        None,
        "cli",
    )
    .await
    .unwrap();
    for h in [&a, &b, &c] {
        assert_eq!(
            post_with(h, "/chat", Some(&k.key), chat_body())
                .await
                .status(),
            200,
            "accepted and cached"
        );
    }
    let r = h_delete(&a, "/v1/admin/keys/roaming", ADMIN_KEY).await;
    assert_eq!(r.status(), 200);
    let revoked_at = tokio::time::Instant::now();
    for h in [&b, &c] {
        loop {
            let r = post_with(h, "/chat", Some(&k.key), chat_body()).await;
            if r.status() == 401 {
                let e = error_of(r, 401, "authentication_error").await;
                assert_eq!(e["code"], "revoked_api_key");
                break;
            }
            assert_eq!(r.status(), 200);
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "still accepted {:?} after revocation",
                revoked_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    eprintln!(
        "revocation reached both other replicas after {:?}",
        revoked_at.elapsed()
    );
    c.app.stop().await;
    b.app.stop().await;
    a.app.stop().await;
}

async fn h_delete(h: &Harness, path: &str, key: &str) -> reqwest::Response {
    h.http
        .delete(h.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("request sent")
}
