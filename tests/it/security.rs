//! Secret hygiene and input limits: the upstream API key never shows in logs (even at debug),
//! HTTP bodies, /metrics, check-config or Debug prints; stored content is redacted when asked;
//! too many messages, slow bodies and whole-request timeouts get clear JSON errors; the start-up
//! log says how the gateway is protected.

use std::io::Read;
use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::Harness;
use llm_quality_observer::config::{Config, ContentLogging};
use llm_quality_observer::mock_upstream::{self, MockUpstreamConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Unique per run, so a hit can only come from this test's key.
fn marker() -> String {
    format!("sk-LEAKCANARY-{}", Uuid::new_v4().simple())
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn lqo(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lqo"));
    for var in [
        "LLM_API_KEY",
        "OPENAI_MODEL_MAIN",
        "LLM_API_BASE_URL",
        "LLM_API_KIND",
        "LQO_CONFIG",
        "PORT",
        "LQO_AUTH",
        "LQO_METRICS_TOKEN",
        "APP_ENV",
    ] {
        c.env_remove(var);
    }
    c.current_dir(dir).env(
        "DATABASE_URL",
        format!("sqlite://{}", dir.join("lqo.db").display()),
    );
    c
}

/// Starts `lqo serve` with stdout/stderr captured to files in `dir`; waits until /health answers.
async fn serve(mut cmd: Command, dir: &Path, port: u16) -> Child {
    let out = std::fs::File::create(dir.join("stdout.log")).unwrap();
    let err = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut child = cmd
        .args(["serve", "--port", &port.to_string()])
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("lqo starts");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
        {
            if r.status() == 200 {
                return child;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "lqo exited with {status}:\n{}",
                std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lqo never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then wait (bounded) for the graceful exit.
async fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() {
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.wait();
}

fn read_all(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let mut bytes = Vec::new();
            if let Ok(mut f) = std::fs::File::open(&path) {
                let _ = f.read_to_end(&mut bytes);
            }
            all.push_str(&String::from_utf8_lossy(&bytes));
            all.push('\n');
        }
    }
    all
}

#[tokio::test]
async fn the_upstream_key_never_leaks_anywhere() {
    let secret = marker();
    let (up, _task) = mock_upstream::spawn(MockUpstreamConfig {
        port: 0,
        ..MockUpstreamConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = lqo(dir.path());
    cmd.env("LLM_API_KEY", &secret)
        .env("LLM_API_KIND", "chat")
        .env("LLM_API_BASE_URL", format!("http://{up}/v1"))
        .env("OPENAI_MODEL_MAIN", "gpt-test")
        .env("LOG_LEVEL", "debug");
    let child = serve(cmd, dir.path(), port).await;

    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let mut seen = String::new();
    let mut record =
        |status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap, body: &str| {
            seen.push_str(&format!("{status} {headers:?} {body}\n"));
        };
    let calls: Vec<(&str, Value)> = vec![
        ("/chat", json!({"prompt": "hello", "user_id": "u"})),
        // The mock upstream echoes the bearer token it got in its 401 message, like the worst
        // real upstream might; the provider must scrub it before it reaches any log or body.
        (
            "/chat",
            json!({"prompt": "who am I [mock:status=401]", "user_id": "u"}),
        ),
        (
            "/chat",
            json!({"prompt": "boom [mock:status=500]", "user_id": "u"}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "401 again [mock:status=401]"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"stream": true, "messages": [{"role": "user", "content": "stream [mock:status=401]"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"stream": true, "messages": [{"role": "user", "content": "ok"}]}),
        ),
        ("/chat", json!({"prompt": "not json"})),
    ];
    let mut statuses = Vec::new();
    for (path, body) in calls {
        let r = http.post(url(path)).json(&body).send().await.unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        statuses.push(s.as_u16());
        let text = r.text().await.unwrap();
        record(s, &h, &text);
    }
    assert_eq!(statuses[0], 200, "{seen}");
    assert_eq!(statuses[1], 502, "{seen}");
    for path in ["/metrics", "/ready", "/v1/models", "/openapi.json"] {
        let r = http.get(url(path)).send().await.unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        let text = r.text().await.unwrap();
        record(s, &h, &text);
    }
    stop(child).await;

    let check = lqo(dir.path())
        .arg("check-config")
        .env("LLM_API_KEY", &secret)
        .env("LLM_API_KIND", "chat")
        .env("LLM_API_BASE_URL", format!("http://{up}/v1"))
        .env("LOG_LEVEL", "debug")
        .output()
        .unwrap();
    assert!(check.status.success());
    let checked = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(checked.contains("set (hidden)"), "{checked}");

    let env = |k: &str| match k {
        "LLM_API_KEY" => Some(secret.clone()),
        "LLM_API_KIND" => Some("chat".to_string()),
        _ => None,
    };
    let cfg = Config::load_with(None, &env).unwrap();
    let debug = format!("{cfg:?} {:?}", cfg.providers);

    // Everything the process wrote (logs at debug, the SQLite database and its WAL) plus every
    // HTTP answer, /metrics, check-config and Debug output: not one occurrence of the key.
    let logs = read_all(dir.path());
    assert!(
        logs.contains("authentication is off: any client can call the gateway"),
        "the start-up warning is missing:\n{logs}"
    );
    assert!(
        logs.contains("upstream call failed"),
        "the failures were logged"
    );
    for (what, text) in [
        ("process output and files", &logs),
        ("HTTP answers", &seen),
        ("check-config", &checked),
        ("Debug", &debug),
    ] {
        let hits = text.matches(&secret).count();
        assert_eq!(hits, 0, "the upstream key appears {hits}× in {what}");
        // Not even a recognisable part of it.
        assert!(
            !text.contains(&secret[3..20]),
            "part of the key appears in {what}"
        );
    }
}

/// Logs written to a file carry no terminal colour codes, and both kinds of `LOG_LEVEL` filter:
/// a plain level, and a span directive that turns on debug inside each request's span only.
#[tokio::test]
async fn logs_in_a_file_are_plain_text_and_span_directives_still_filter() {
    for (level, handled_logged) in [
        ("debug", true),
        ("info", false),
        ("warn,[request]=debug", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = lqo(dir.path());
        cmd.env("LOG_LEVEL", level);
        let child = serve(cmd, dir.path(), port).await;
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/chat"))
            .json(&json!({"prompt": "log me", "user_id": "u"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        stop(child).await;
        let out = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
        assert!(
            !out.contains('\u{1b}'),
            "colour codes in a log file ({level}):\n{out}"
        );
        let handled = out
            .lines()
            .any(|l| l.contains("handled") && l.contains("request_id"));
        assert_eq!(handled, handled_logged, "LOG_LEVEL={level}:\n{out}");
    }
}

#[tokio::test]
async fn auth_required_without_any_key_says_so_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = lqo(dir.path());
    cmd.env("LQO_AUTH", "required");
    let child = serve(cmd, dir.path(), port).await;
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/chat"))
        .json(&json!({"prompt": "x", "user_id": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    stop(child).await;
    let logs = read_all(dir.path());
    assert!(logs.contains("ERROR"), "{logs}");
    assert!(
        logs.contains("authentication is required but no API key exists"),
        "{logs}"
    );
    assert!(!logs.contains("authentication is off"), "{logs}");
}

#[tokio::test]
async fn redacted_content_mode_masks_what_is_stored_but_not_what_is_answered() {
    let h = Harness::sqlite_with(|c| c.logging.content = ContentLogging::Redacted).await;
    let prompt = "Mail bob@example.com or +1 415-555-0132, card 4111 1111 1111 1111, key sk-abcdefghijklmnop1234";
    let r = h
        .post_json(
            "/chat",
            json!({"prompt": prompt, "user_id": "u", "model_version": "mock-local"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    // The client gets the model's answer untouched (the mock quotes the prompt).
    assert!(
        body["response"]
            .as_str()
            .unwrap()
            .contains("bob@example.com"),
        "{body}"
    );
    let id = Uuid::parse_str(body["request_id"].as_str().unwrap()).unwrap();
    let rec = h.record(id).await;
    assert_eq!(
        rec.prompt,
        "Mail [EMAIL] or [PHONE], card [CARD], key [SECRET]"
    );
    let stored = rec.response.unwrap();
    assert!(
        stored.contains("[EMAIL]") && !stored.contains("bob@example.com"),
        "{stored}"
    );

    // A conversation is stored as a JSON array that stays valid after masking.
    let r = h
        .post_json(
            "/v1/chat/completions",
            json!({"model": "mock-local", "messages": [
                {"role": "system", "content": "Use token \"Bearer abc.def.ghi.jkl\" \\ carefully"},
                {"role": "user", "content": "my mail is jane@corp.io\nthanks"}
            ]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = Uuid::parse_str(r.headers()["x-request-id"].to_str().unwrap()).unwrap();
    let rec = h.record(id).await;
    let msgs: Value = serde_json::from_str(&rec.prompt).expect("stored prompt is valid JSON");
    assert_eq!(
        msgs[0]["content"],
        "Use token \"Bearer [SECRET]\" \\ carefully"
    );
    assert_eq!(msgs[1]["content"], "my mail is [EMAIL]\nthanks");
    h.app.stop().await;
}

#[tokio::test]
async fn too_many_messages_is_400_naming_the_limit() {
    let h = Harness::sqlite_with(|c| c.limits.max_messages = 3).await;
    let msgs: Vec<Value> = (0..4)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let r = h
        .post_json("/v1/chat/completions", json!({"messages": msgs}))
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "messages");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 3"),
        "{body}"
    );
    let r = h
        .post_json("/v1/chat/completions", json!({"messages": &msgs[..3]}))
        .await;
    assert_eq!(r.status(), 200);
    h.app.stop().await;
}

/// Sends headers and part of a body, then stalls: the whole-request timeout answers 408.
#[tokio::test]
async fn a_body_that_never_finishes_is_408_json() {
    let h = Harness::sqlite_with(|c| c.server.request_timeout_secs = 1).await;
    let mut s = tokio::net::TcpStream::connect(h.app.addr).await.unwrap();
    s.write_all(b"POST /chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"prompt\": ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.ends_with(b"}}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    h.app.stop().await;
}

/// `server.request_timeout_secs` bounds the whole request from its arrival, whatever the
/// provider's own timeout; the call is still recorded (the gateway's deadline fires before the
/// middleware's backstop).
#[tokio::test]
async fn the_whole_request_deadline_counts_from_arrival() {
    // A provider allowing 30 s, a 1 s whole-request limit, an upstream taking 5 s: 504 after ~1 s.
    let h = Harness::sqlite_with(|c| {
        c.server.request_timeout_secs = 1;
        if let Some(p) = c.providers.get_mut("chat") {
            p.timeout_secs = 30;
        }
    })
    .await;
    let started = std::time::Instant::now();
    let r = h
        .post_json(
            "/chat",
            json!({"prompt": "slow [mock:delay_ms=5000]", "user_id": "u"}),
        )
        .await;
    assert_eq!(r.status(), 504);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let id = Uuid::parse_str(r.headers()["x-request-id"].to_str().unwrap()).unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout", "{body}");
    assert_eq!(h.record(id).await.http_status, 504);
    h.app.stop().await;
}

/// Constant-time comparison is a property of the code, not of one timing run: every place that
/// compares a presented secret goes through `hashes_equal` (subtle's `ct_eq`), and nothing in
/// the auth code compares hashes or tokens with `==`.
#[test]
fn secrets_are_compared_in_constant_time() {
    let keys_rs = include_str!("../../src/auth/keys.rs");
    let auth_rs = include_str!("../../src/auth/mod.rs");
    assert!(
        keys_rs.contains("a.ct_eq(b).into()"),
        "hashes_equal must use subtle"
    );
    assert!(
        auth_rs.matches("hashes_equal(").count() >= 3,
        "config keys, stored keys and the metrics token are all compared with hashes_equal"
    );
    for (file, text) in [("auth/mod.rs", auth_rs), ("auth/keys.rs", keys_rs)] {
        for (i, line) in text.lines().enumerate() {
            let l = line.to_lowercase();
            let compares = l.contains("==") || l.contains("!=") || l.contains(".eq(");
            let secretish = l.contains("hash") || l.contains("token") || l.contains("key ");
            let ignored = l.trim_start().starts_with("//") || l.contains("assert");
            let suspicious = compares && secretish && !ignored;
            assert!(
                !suspicious,
                "{file}:{} compares a secret with ==: {line}",
                i + 1
            );
        }
    }
    // The real thing, behaviourally.
    use llm_quality_observer::auth::keys::{hash_key, hashes_equal};
    assert!(hashes_equal(&hash_key("a"), &hash_key("a")));
    assert!(!hashes_equal(&hash_key("a"), &hash_key("b")));
}
