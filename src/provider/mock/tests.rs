use super::*;

fn req(prompt: &str) -> CompletionRequest {
    CompletionRequest {
        model: "mock-1".into(),
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: "Be brief.".into(),
            },
            ChatMessage {
                role: Role::User,
                content: prompt.into(),
            },
        ],
        ..CompletionRequest::default()
    }
}

#[test]
fn answer_is_deterministic_and_has_the_requested_word_count() {
    let a = answer_text("What is the capital of France?", 32);
    assert_eq!(a, answer_text("What is the capital of France?", 32));
    assert!(a.starts_with("This is a mock answer to: What is the capital of France?."));
    assert_eq!(a.split_whitespace().count(), 32);
    assert_eq!(answer_text("x", 3), "This is a");
    assert_eq!(answer_text("x", 0), "");
    assert_ne!(answer_text("a", 20), answer_text("b", 20));
    let long = "word ".repeat(100);
    assert!(answer_text(&long, 200).len() < 200 * 12);
}

#[test]
fn triggers_are_parsed_and_bad_ones_ignored() {
    let t = Triggers::parse(
            "hi [mock:status=429] [mock:delay_ms=15][mock:fail_first=2] [mock:truncate] [mock:stream_error] [mock:cached_tokens=7]",
        );
    assert_eq!(t.status, Some(429));
    assert_eq!(t.delay_ms, Some(15));
    assert_eq!(t.fail_first, Some(2));
    assert!(t.truncate && t.stream_error);
    assert_eq!(t.cached_tokens, Some(7));
    let bad = Triggers::parse(
        "[mock:status=200] [mock:status=abc] [mock:delay_ms=-1] [mock:nope] [mock:status=5",
    );
    assert_eq!(bad, Triggers::default());
}

#[test]
fn deltas_concatenate_to_the_answer() {
    let text = answer_text("streaming please", 13);
    let deltas = word_deltas(&text, 4);
    assert_eq!(deltas.len(), 4);
    assert_eq!(deltas.concat(), text);
}

#[tokio::test]
async fn completes_with_model_echo_and_counted_usage() {
    let c = MockProvider::new(0)
        .complete(&req("Hello there"))
        .await
        .unwrap();
    assert!(c.text.contains("Hello there"));
    assert_eq!(c.finish_reason, "stop");
    let usage = c.usage.unwrap();
    assert_eq!(
        usage.output_tokens,
        crate::provider::tokens::count_tokens(&c.text)
    );
    assert_eq!(
        usage.input_tokens,
        crate::provider::tokens::count_message_tokens(&req("Hello there").messages)
    );
    assert_eq!(c.upstream_model, "mock-1");
    assert!(c.body.is_none());
    let quiet = MockProvider::new(0)
        .complete(&req("Hello there [mock:no_usage]"))
        .await
        .unwrap();
    assert!(quiet.usage.is_none());
}

#[tokio::test]
async fn a_client_body_is_answered_in_its_api() {
    use crate::provider::wire::JsonBody;
    let body = serde_json::json!({"messages": [{"role": "user", "content": "Weather?"}],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}], "n": 2});
    let mut r = req("Weather?");
    r.client = Some(std::sync::Arc::new(crate::provider::ClientRequest {
        api: Api::Chat,
        body: JsonBody::parse(bytes::Bytes::from(body.to_string())).unwrap(),
        stream: false,
        include_usage: false,
    }));
    let c = MockProvider::new(0).complete(&r).await.unwrap();
    assert_eq!(c.finish_reason, "tool_calls");
    assert_eq!(c.tool_calls[0].name, "weather");
    let v: serde_json::Value = serde_json::from_slice(c.body.as_ref().unwrap()).unwrap();
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["model"], "mock-1");
}

#[tokio::test]
async fn json_mode_answers_a_json_object() {
    let mut r = req("give me json");
    r.json_mode = true;
    let c = MockProvider::new(0).complete(&r).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&c.text).unwrap();
    assert!(v["answer"].as_str().unwrap().contains("give me json"));
}

#[tokio::test]
async fn status_trigger_is_a_status_error() {
    let err = MockProvider::new(0)
        .complete(&req("boom [mock:status=503]"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn truncate_and_max_tokens_finish_with_length() {
    let c = MockProvider::new(0)
        .complete(&req("cut [mock:truncate]"))
        .await
        .unwrap();
    assert_eq!(c.finish_reason, "length");
    assert_eq!(c.text.split_whitespace().count(), DEFAULT_OUTPUT_WORDS / 2);
    let mut r = req("short please");
    r.max_tokens = Some(5);
    let c = MockProvider::new(0).complete(&r).await.unwrap();
    assert_eq!(c.finish_reason, "length");
    assert_eq!(c.text.split_whitespace().count(), 5);
}

#[tokio::test]
async fn stream_yields_deltas_then_done() {
    let p = MockProvider::new(1);
    let full = p.complete(&req("stream me")).await.unwrap().text;
    let mut s = p.stream(&req("stream me")).await.unwrap();
    let mut text = String::new();
    let mut deltas = 0;
    let mut done = None;
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            StreamEvent::Chunk {
                text: t, content, ..
            } => {
                if content {
                    deltas += 1;
                }
                text.push_str(&t);
            }
            StreamEvent::Done(end) => {
                assert!(end.usage.is_some());
                assert_eq!(&end.trailer[..], DONE_FRAME);
                done = Some(end.finish_reason);
            }
        }
    }
    assert!(deltas > 2);
    assert_eq!(text, full);
    assert_eq!(done.as_deref(), Some("stop"));
}

#[tokio::test]
async fn stream_error_trigger_yields_an_err_item() {
    let mut s = MockProvider::new(0)
        .stream(&req("break [mock:stream_error]"))
        .await
        .unwrap();
    let items: Vec<_> = s.by_ref().collect().await;
    let content = items
        .iter()
        .filter(|i| matches!(i, Ok(StreamEvent::Chunk { content: true, .. })))
        .count();
    assert_eq!(content, CHUNKS_BEFORE_STREAM_ERROR);
    assert!(matches!(
        items.last(),
        Some(Err(ProviderError::StreamInterrupted(_)))
    ));
}

fn judge_req(material: &str) -> Vec<ChatMessage> {
    vec![
            ChatMessage {
                role: Role::System,
                content: format!(
                    "{JUDGE_MARKER} rubric\n{JUDGE_CRITERIA_PREFIX} overall, truthfulness\nReply in JSON."
                ),
            },
            ChatMessage {
                role: Role::User,
                content: material.into(),
            },
        ]
}

#[test]
fn judge_calls_get_a_deterministic_verdict_for_the_rubric_criteria() {
    let m = judge_req("<prompt>hi</prompt><answer>hello</answer>");
    assert!(is_judge_request(&m));
    let (text, finish) = answer_for(&m, 32, Some(3), true);
    assert_eq!(finish, "stop");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let scores = v["scores"].as_object().unwrap();
    assert_eq!(
        scores.keys().collect::<Vec<_>>(),
        vec!["overall", "truthfulness"]
    );
    assert!(scores
        .values()
        .all(|s| (3..=5).contains(&s.as_u64().unwrap())));
    assert!(v["rationale"].as_str().unwrap().contains("Mock judge"));
    assert_eq!(answer_for(&m, 32, None, true).0, text);
    assert!(!is_judge_request(&[m[1].clone()]));
}

#[test]
fn judge_triggers_apply_only_to_judge_calls() {
    let forced = judge_req("prompt [mock:judge_score=2] [mock:truncate] [mock:status=500]");
    let t = Triggers::for_messages(&forced);
    assert_eq!(t.judge_score, Some(2));
    assert!(!t.truncate);
    assert_eq!(t.status, None);
    let v: serde_json::Value =
        serde_json::from_str(&answer_for(&forced, 32, None, true).0).unwrap();
    assert_eq!(v["scores"]["overall"], 2);

    let failing = judge_req("x [mock:judge_status=503] [mock:judge_delay_ms=5]");
    let t = Triggers::for_messages(&failing);
    assert_eq!((t.status, t.delay_ms), (Some(503), Some(5)));
    // In an ordinary request the judge triggers are inert.
    let plain = Triggers::parse("x [mock:judge_status=503] [mock:judge_malformed]");
    assert_eq!(plain, Triggers::default());

    let malformed = judge_req("x [mock:judge_malformed]");
    let reply = answer_for(&malformed, 32, None, true).0;
    assert!(serde_json::from_str::<serde_json::Value>(&reply).is_err());

    let mut once = judge_req("x [mock:judge_malformed_once]");
    assert!(
        serde_json::from_str::<serde_json::Value>(&answer_for(&once, 32, None, true).0).is_err()
    );
    once.push(ChatMessage {
        role: Role::Assistant,
        content: "bad".into(),
    });
    once.push(ChatMessage {
        role: Role::User,
        content: "again, as JSON".into(),
    });
    assert!(
        serde_json::from_str::<serde_json::Value>(&answer_for(&once, 32, None, true).0).is_ok()
    );

    let fenced = answer_for(&judge_req("x [mock:judge_fenced]"), 32, None, true).0;
    assert!(fenced.contains("```json\n{"), "{fenced}");
}

#[test]
fn bad_json_trigger_breaks_json_mode() {
    let m = vec![ChatMessage {
        role: Role::User,
        content: "json please [mock:bad_json]".into(),
    }];
    let (text, _) = answer_for(&m, 8, None, true);
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
    assert!(text.starts_with("This is a mock answer"));
}

#[tokio::test]
async fn delay_trigger_waits() {
    let started = std::time::Instant::now();
    MockProvider::new(0)
        .complete(&req("slow [mock:delay_ms=50]"))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
}
