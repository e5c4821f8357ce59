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
    // Broken PEM is refused when the file is read, naming the file; bytes that are no
    // certificate are refused as a root.
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = read_ca_file(&broken).unwrap_err().to_string();
    assert!(err.contains("broken.pem"), "{err}");
    assert!(tls_config(&[CertificateDer::from(vec![1u8, 2, 3])]).is_err());
}

/// What reaches the upstream: the same headers through either client, the key as a bearer token.
#[tokio::test]
async fn both_clients_send_the_same_headers() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads_tx, mut heads) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let heads_tx = heads_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                read_head(&mut tcp, &mut buf)
                    .await
                    .expect("connection closed before the head");
                let head = String::from_utf8_lossy(&buf).to_lowercase();
                let _ = heads_tx.send(head);
                let body = "{}";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    for client in [HttpClient::Auto, HttpClient::Reqwest] {
        for streaming in [false, true] {
            let up = HttpUpstream::new(&ProviderConfig {
                base_url: format!("http://{addr}/v1"),
                api_key: Some(SecretString::from("test-key-123456")),
                http_client: client,
                ..ProviderConfig::default()
            })
            .unwrap();
            assert_eq!(up.is_direct(), client == HttpClient::Auto);
            post_and_read_back(&up, streaming).await;
            let head = heads.recv().await.unwrap();
            assert!(
                head.starts_with("post /v1/chat/completions http/1.1\r\n"),
                "{head}"
            );
            let accept = if streaming {
                "text/event-stream"
            } else {
                "*/*"
            };
            for want in [
                "authorization: bearer test-key-123456\r\n".to_string(),
                "content-type: application/json\r\n".to_string(),
                format!("accept: {accept}\r\n"),
                format!("user-agent: {}\r\n", USER_AGENT_VALUE.to_lowercase()),
                "content-length: 2\r\n".to_string(),
            ] {
                assert!(
                    head.contains(&want),
                    "{client:?} streaming={streaming}: no {want:?} in {head}"
                );
            }
        }
    }
}

/// Posts `{}` as a chat completion request and checks that the answer's body is `{}`.
async fn post_and_read_back(up: &HttpUpstream, streaming: bool) {
    let ep = up.endpoint("/chat/completions").unwrap();
    let response = up
        .post(&ep, Bytes::from_static(b"{}"), streaming)
        .await
        .unwrap();
    assert_eq!(&up.read_body(response).await.unwrap()[..], b"{}");
}

/// Reads from `tcp` into `buf` until it holds a whole request head; where the head ends (after its
/// blank line), or None if the connection closes first.
async fn read_head(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An upstream that keeps connections open and records the client address of every request.
async fn keep_alive_upstream() -> (
    std::net::SocketAddr,
    Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = peers.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, peer)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: its head, then the body its content-length announces.
                    let Some(head_end) = read_head(&mut tcp, &mut buf).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + length {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    seen.lock().unwrap().push(peer);
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, peers)
}

/// On the connection threads (`server.connection_threads`, a single-threaded runtime each) a
/// call uses an upstream connection of its own thread, whose task runs there: two threads taking
/// turns never share one. (One pool for all would hand the second thread the first one's idle
/// connection.)
#[test]
fn single_threaded_runtimes_keep_their_own_upstream_connections() {
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
    let upstream_runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, peers) = upstream_runtime.block_on(keep_alive_upstream());
    let up = Arc::new(
        HttpUpstream::new(&ProviderConfig {
            base_url: format!("http://{addr}/v1"),
            ..ProviderConfig::default()
        })
        .unwrap(),
    );
    assert!(up.is_direct());
    // Each thread calls when handed the turn, then hands it to the other.
    let turns =
        |up: Arc<HttpUpstream>, mut mine: UnboundedReceiver<()>, other: UnboundedSender<()>| {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    for _ in 0..3 {
                        mine.recv().await.unwrap();
                        post_and_read_back(&up, false).await;
                        let _ = other.send(());
                    }
                });
            })
        };
    let (a_tx, a_rx) = unbounded_channel();
    let (b_tx, b_rx) = unbounded_channel();
    a_tx.send(()).unwrap();
    let a = turns(up.clone(), a_rx, b_tx);
    let b = turns(up.clone(), b_rx, a_tx);
    a.join().unwrap();
    b.join().unwrap();
    let peers = peers.lock().unwrap().clone();
    // Calls alternate A, B, A, B, A, B.
    assert_eq!(peers.len(), 6, "{peers:?}");
    assert!(peers[0] == peers[2] && peers[2] == peers[4], "{peers:?}");
    assert!(peers[1] == peers[3] && peers[3] == peers[5], "{peers:?}");
    assert_ne!(peers[0], peers[1], "{peers:?}");
}
