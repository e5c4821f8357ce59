use super::*;

#[test]
fn secrets_are_masked_and_messages_truncated() {
    let s = Scrubber {
        api_key: Some(SecretString::from("my-secret-key")),
    };
    assert_eq!(
        s.text("bad key my-secret-key and sk-proj-abcdef123456 but not task-force or sk-1"),
        "bad key *** and sk-*** but not task-force or sk-1"
    );
    assert_eq!(truncate_chars("héllo", 2), "hé…");
    assert_eq!(truncate_chars("ok", 2), "ok");
    let long = "x".repeat(2000);
    let (msg, _) = parse_error_body(
        format!("{{\"error\":{{\"message\":\"{long}\",\"code\":\"c\"}}}}").as_bytes(),
        "Bad Request",
    );
    assert_eq!(
        truncate_chars(&msg, MAX_ERROR_MESSAGE_CHARS)
            .chars()
            .count(),
        501
    );
}

/// A stream that stalls after its first chunk ends with a timeout once the idle limit passes,
/// and not before.
#[tokio::test(start_paused = true)]
async fn idle_stream_times_out_after_the_limit() {
    let limit = Duration::from_secs(5);
    let chunks = futures::stream::iter([Ok(Bytes::from_static(b"data: 1\n\n"))])
        .chain(futures::stream::pending());
    let mut s = IdleTimeout::new(chunks, limit);
    let start = tokio::time::Instant::now();
    assert_eq!(s.next().await.unwrap().unwrap(), "data: 1\n\n");
    let err = s.next().await.unwrap().unwrap_err();
    assert!(
        matches!(err, ProviderError::Timeout(d) if d == limit),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), limit);
    assert!(s.next().await.is_none(), "a timed-out stream ends");
}

/// Chunks that keep coming inside the limit never time out, however long the whole stream
/// takes: the limit is on the gap, not the total.
#[tokio::test(start_paused = true)]
async fn chunks_inside_the_idle_limit_do_not_time_out() {
    let limit = Duration::from_secs(5);
    let chunks = futures::stream::unfold(0u32, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        Some((Ok(Bytes::from(format!("data: {i}\n\n"))), i + 1))
    })
    .boxed();
    let start = tokio::time::Instant::now();
    let got: Vec<_> = IdleTimeout::new(chunks, limit).collect().await;
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(40));
}

#[test]
fn upstreams_no_proxy_applies_to_go_direct_and_the_rest_through_reqwest() {
    let none = |_: &str| None;
    assert!(direct_eligible("http://127.0.0.1:8000/v1", none));
    assert!(direct_eligible("HTTP://vllm:8000/v1", none));
    assert!(direct_eligible("https://api.openai.com/v1", none));
    assert!(direct_eligible("HTTPS://api.openai.com/v1", none));
    assert!(!direct_eligible("ftp://example.com/v1", none));
    let proxied = |var: &'static str| move |k: &str| (k == var).then(|| "http://proxy:3128".into());
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        assert!(
            !direct_eligible("http://vllm:8000/v1", proxied(var)),
            "{var}"
        );
    }
    for var in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        assert!(
            !direct_eligible("https://api.openai.com/v1", proxied(var)),
            "{var}"
        );
    }
    // Each scheme has its own variable; an empty variable sets no proxy.
    assert!(direct_eligible(
        "http://vllm:8000/v1",
        proxied("HTTPS_PROXY")
    ));
    assert!(direct_eligible(
        "https://api.openai.com/v1",
        proxied("HTTP_PROXY")
    ));
    assert!(direct_eligible("http://vllm:8000/v1", |k: &str| {
        (k == "HTTP_PROXY").then(String::new)
    }));
}

#[test]
fn a_ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = read_ca_file(&missing).unwrap_err().to_string();
    assert!(
        err.contains("cannot read the CA file") && err.contains("missing.pem"),
        "{err}"
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = read_ca_file(&junk).unwrap_err().to_string();
    assert!(err.contains("no PEM certificate"), "{err}");
    // `lqo check-config` and start-up validation say so before any call.
    let cfg = ProviderConfig {
        ca_file: Some(missing),
        ..ProviderConfig::default()
    };
    let problems = cfg.problems("internal");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("providers.internal.ca_file:") && p.contains("missing.pem")),
        "{problems:?}"
    );
    let bad = b"-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n";
    assert!(tls_config(Some(bad)).is_err());
}
