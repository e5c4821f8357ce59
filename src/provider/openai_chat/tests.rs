use std::net::SocketAddr;

use crate::provider::Role;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{json, Value};

use super::*;
use crate::mock_upstream::{self, MockUpstreamConfig};
use crate::provider::retry::with_retries;
use crate::provider::sse::SseDecoder;
use crate::provider::wire::JsonBody;
use crate::provider::ClientRequest;

pub const FAKE_KEY: &str = "sk-test-FAKE-KEY-0123456789abcdef";

pub async fn upstream() -> SocketAddr {
    upstream_with(MockUpstreamConfig {
        port: 0,
        ..MockUpstreamConfig::default()
    })
    .await
}

pub async fn upstream_with(cfg: MockUpstreamConfig) -> SocketAddr {
    let (addr, _handle) = mock_upstream::spawn(MockUpstreamConfig { port: 0, ..cfg })
        .await
        .unwrap();
    addr
}

pub fn config(addr: SocketAddr) -> ProviderConfig {
    ProviderConfig {
        kind: crate::provider::config::ProviderKind::OpenaiChat,
        base_url: format!("http://{addr}/v1"),
        api_key: Some(SecretString::from(FAKE_KEY)),
        timeout_secs: 5,
        connect_timeout_secs: 1,
        max_retries: 2,
        retry_backoff_ms: 1,
        ..ProviderConfig::default()
    }
}

pub fn request(prompt: &str) -> CompletionRequest {
    CompletionRequest {
        model: "gpt-test".into(),
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: "You are terse.".into(),
            },
            ChatMessage {
                role: Role::User,
                content: prompt.into(),
            },
        ],
        ..CompletionRequest::default()
    }
}

/// A request carrying a client's own body in `api`.
pub fn client_request(api: Api, body: Value) -> CompletionRequest {
    let stream = body["stream"].as_bool().unwrap_or(false);
    let include_usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let mut r = request(&mock_prompt(&body));
    r.client = Some(Arc::new(ClientRequest {
        api,
        body: JsonBody::parse(bytes::Bytes::from(body.to_string())).unwrap(),
        stream,
        include_usage,
    }));
    r
}

fn mock_prompt(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .or_else(|| body["input"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// What a stream yielded.
#[derive(Debug, Default)]
pub struct Collected {
    pub text: String,
    pub end: Option<StreamEnd>,
    pub error: Option<ProviderError>,
    /// Every frame for the client, the trailer included.
    pub wire: String,
}

pub async fn collect(mut s: CompletionStream) -> Collected {
    let mut c = Collected::default();
    while let Some(item) = s.next().await {
        match item {
            Ok(StreamEvent::Chunk { frame, text, .. }) => {
                c.text.push_str(&text);
                c.wire.push_str(std::str::from_utf8(&frame).unwrap());
            }
            Ok(StreamEvent::Done(end)) => {
                c.wire.push_str(std::str::from_utf8(&end.trailer).unwrap());
                c.end = Some(end);
            }
            Err(e) => c.error = Some(e),
        }
    }
    c
}

/// The `data:` payloads of SSE text, parsed (`[DONE]` as a string).
pub fn data_of(wire: &str) -> Vec<Value> {
    wire.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| json!(d)))
        .collect()
}

/// One provider call with the provider's retry policy, as the gateway makes it.
pub async fn retrying<P: Provider>(
    p: &P,
    req: &CompletionRequest,
) -> (Result<Completion, ProviderError>, u32) {
    let retries = AtomicU32::new(0);
    let r = with_retries(&p.retry_policy(), None, &retries, || p.complete(req)).await;
    (r, retries.into_inner())
}

fn chat(addr: SocketAddr) -> OpenAiChat {
    OpenAiChat::new(&config(addr)).unwrap()
}

#[tokio::test]
async fn completes_with_text_finish_reason_and_usage() {
    let addr = upstream().await;
    let c = chat(addr).complete(&request("What is 2+2?")).await.unwrap();
    assert!(
        c.text.starts_with("This is a mock answer to: What is 2+2?"),
        "{}",
        c.text
    );
    assert_eq!(c.finish_reason, "stop");
    assert_eq!(c.upstream_model, "gpt-test");
    assert!(
        c.body.is_none(),
        "a gateway-built request gets no client body"
    );
    let usage = c.usage.unwrap();
    assert_eq!(
        usage.output_tokens,
        crate::provider::tokens::count_tokens(&c.text)
    );
    assert_eq!(
        usage.input_tokens,
        crate::provider::tokens::count_message_tokens(&request("What is 2+2?").messages)
    );
}

#[tokio::test]
async fn json_mode_gets_a_json_answer() {
    let addr = upstream().await;
    let mut r = request("json please");
    r.json_mode = true;
    let c = chat(addr).complete(&r).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&c.text).unwrap();
    assert!(v.is_object());
}

#[tokio::test]
async fn a_client_body_goes_up_rewritten_and_its_answer_comes_back_whole() {
    let addr = upstream().await;
    let body = json!({"model": "alias", "messages": [{"role": "user", "content": "Weather in Lima?"}],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "seed": 7, "x_unknown": {"a": [1]}});
    let c = chat(addr)
        .complete(&client_request(Api::Chat, body.clone()))
        .await
        .unwrap();
    assert_eq!(c.finish_reason, "tool_calls");
    assert_eq!(c.tool_calls[0].name, "weather");
    let answer: Value = serde_json::from_slice(c.body.as_ref().unwrap()).unwrap();
    assert_eq!(answer["system_fingerprint"], "fp_lqo_mock");
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "weather"
    );
    let seen = last_request(addr).await;
    let mut expected = body;
    expected["model"] = json!("gpt-test");
    assert_eq!(seen, expected);
}

/// The body of the last completion request the mock upstream received.
pub async fn last_request(addr: SocketAddr) -> Value {
    let v: Value = reqwest::get(format!("http://{addr}/mock/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array().unwrap().last().unwrap()["body"].clone()
}

#[tokio::test]
async fn streams_pass_through_and_hide_the_usage_chunk_nobody_asked_for() {
    let addr = upstream().await;
    let p = chat(addr);
    let full = p.complete(&request("Stream this")).await.unwrap();
    let body = json!({"model": "x", "stream": true, "messages": [{"role": "user", "content": "Stream this"}]});
    let got = collect(p.stream(&client_request(Api::Chat, body)).await.unwrap()).await;
    assert!(got.error.is_none(), "{:?}", got.error);
    let end = got.end.unwrap();
    assert_eq!(end.finish_reason, "stop");
    assert_eq!(
        end.usage.unwrap().output_tokens,
        full.usage.unwrap().output_tokens
    );
    let seen = last_request(addr).await;
    assert_eq!(seen["stream_options"], json!({"include_usage": true}));
    let data = data_of(&got.wire);
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(
        data.iter()
            .all(|d| d.get("usage").is_none_or(Value::is_null)),
        "{data:?}"
    );
    let text: String = data
        .iter()
        .filter_map(|d| d["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, got.text);
    // Asked for, the usage chunk is there, and the client's other stream options stay.
    let body = json!({"model": "x", "stream": true, "stream_options": {"include_usage": true, "include_obfuscation": false},
            "messages": [{"role": "user", "content": "Stream this"}]});
    let got = collect(p.stream(&client_request(Api::Chat, body)).await.unwrap()).await;
    let data = data_of(&got.wire);
    assert!(
        data[data.len() - 2]["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        last_request(addr).await["stream_options"],
        json!({"include_usage": true, "include_obfuscation": false})
    );
}

#[tokio::test]
async fn fail_first_two_succeeds_with_two_retries() {
    let addr = upstream().await;
    let (c, retries) = retrying(&chat(addr), &request("flaky [mock:fail_first=2]")).await;
    assert!(c.is_ok());
    assert_eq!(retries, 2);
}

/// Completion requests the mock upstream has seen so far.
pub async fn requests_seen(addr: SocketAddr) -> u64 {
    let stats: serde_json::Value = reqwest::get(format!("http://{addr}/mock/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["requests"].as_u64().unwrap()
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_then_reported_with_their_object() {
    let addr = upstream().await;
    for status in [429u16, 500] {
        let before = requests_seen(addr).await;
        let prompt = format!("always failing [mock:status={status}]");
        let (r, retries) = retrying(&chat(addr), &request(&prompt)).await;
        match r.unwrap_err() {
            ProviderError::Status {
                status: s,
                message,
                error,
                ..
            } => {
                assert_eq!(s, status);
                assert!(message.contains("requested by the prompt"), "{message}");
                assert!(error.unwrap().kind.is_some());
            }
            other => panic!("expected Status, got {other:?}"),
        }
        // 1 attempt + max_retries (2) retries, all counted.
        assert_eq!(requests_seen(addr).await - before, 3, "status {status}");
        assert_eq!(retries, 2);
    }
}

#[tokio::test]
async fn bad_request_is_not_retried_and_keeps_its_code() {
    let addr = upstream().await;
    let (r, retries) = retrying(&chat(addr), &request("bad [mock:status=400]")).await;
    let err = r.unwrap_err();
    match &err {
        ProviderError::Status {
            status: 400,
            error: Some(e),
            ..
        } => {
            assert_eq!(e.code.as_deref(), Some("invalid_request"));
            assert_eq!(e.kind.as_deref(), Some("invalid_request_error"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(retries, 0);
    assert_eq!(requests_seen(addr).await, 1);
}

/// An address nothing listens on: a port the system handed out and that was closed again.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn closed_port_is_a_connect_error() {
    let addr = closed_port().await;
    let err = OpenAiChat::new(&config(addr))
        .unwrap()
        .complete(&request("anyone?"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Connect(_)), "{err:?}");
    assert!(!err.to_string().contains(FAKE_KEY));
}

#[tokio::test]
async fn slow_upstream_is_a_timeout() {
    let addr = upstream().await;
    let mut cfg = config(addr);
    cfg.timeout_secs = 1;
    let p = OpenAiChat::new(&cfg).unwrap();
    let err = p
        .complete(&request("slow [mock:delay_ms=3000]"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Timeout(_)), "{err:?}");
    let err = match p.stream(&request("slow stream [mock:delay_ms=3000]")).await {
        Err(e) => e,
        Ok(s) => collect(s).await.error.unwrap(),
    };
    assert!(matches!(err, ProviderError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn truncated_answer_finishes_with_length() {
    let addr = upstream().await;
    let p = chat(addr);
    let c = p
        .complete(&request("cut me [mock:truncate]"))
        .await
        .unwrap();
    assert_eq!(c.finish_reason, "length");
    let got = collect(p.stream(&request("cut me [mock:truncate]")).await.unwrap()).await;
    assert_eq!(got.end.unwrap().finish_reason, "length");
}

#[tokio::test]
async fn broken_stream_is_interrupted_not_a_connect_error() {
    let addr = upstream().await;
    let s = chat(addr)
        .stream(&request("break [mock:stream_error]"))
        .await
        .unwrap();
    let got = collect(s).await;
    assert!(!got.text.is_empty());
    assert!(got.end.is_none());
    let err = got.error.unwrap();
    assert!(
        matches!(err, ProviderError::StreamInterrupted(_)),
        "{err:?}"
    );
    assert_eq!(err.error_type(), "stream_interrupted");
}

#[tokio::test]
async fn api_key_never_appears_in_errors() {
    let addr = upstream().await;
    // The mock echoes the bearer token in its 401 message, as the worst real upstream might.
    let err = chat(addr)
        .complete(&request("who am I [mock:status=401]"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Status { status: 401, .. }),
        "{err:?}"
    );
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains(FAKE_KEY), "{shown}");
        assert!(!shown.contains("FAKE-KEY"), "{shown}");
    }
    // Also when the key is not sk- shaped.
    let mut cfg = config(addr);
    cfg.api_key = Some(SecretString::from("plain-secret-value-42"));
    let err = OpenAiChat::new(&cfg)
        .unwrap()
        .complete(&request("who am I [mock:status=401]"))
        .await
        .unwrap_err();
    assert!(
        !format!("{err} {err:?}").contains("plain-secret-value-42"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_responses_client_is_translated_both_ways() {
    let addr = upstream().await;
    let p = chat(addr);
    let tool = json!({"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let body = json!({"model": "m", "instructions": "Be brief.", "input": "Weather in Lima?", "tools": [tool],
            "max_output_tokens": 77, "reasoning": {"effort": "low"}});
    let c = p
        .complete(&client_request(Api::Responses, body.clone()))
        .await
        .unwrap();
    let r: Value = serde_json::from_slice(c.body.as_ref().unwrap()).unwrap();
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"][0]["type"], "function_call");
    assert_eq!(r["output"][0]["name"], "weather");
    assert_eq!(r["instructions"], "Be brief.");
    assert!(r["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let sent = last_request(addr).await;
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(sent["tools"][0]["function"]["name"], "weather");
    assert_eq!(sent["max_completion_tokens"], 77);
    assert_eq!(sent["reasoning_effort"], "low");
    // Streamed: a Responses event sequence, ending in response.completed with the whole call.
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let got = collect(
        p.stream(&client_request(Api::Responses, streamed))
            .await
            .unwrap(),
    )
    .await;
    assert!(got.error.is_none(), "{:?}", got.error);
    let kinds: Vec<&str> = got
        .wire
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds[..2], ["response.created", "response.in_progress"]);
    assert!(
        kinds.contains(&"response.function_call_arguments.delta"),
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let end = got.end.unwrap();
    assert_eq!(end.finish_reason, "tool_calls");
    let last: Value = data_of(&got.wire).last().unwrap().clone();
    assert_eq!(
        last["response"]["output"][0]["arguments"],
        end.tool_calls[0].arguments.as_str()
    );
    assert_eq!(
        last_request(addr).await["stream_options"],
        json!({"include_usage": true})
    );
    // What a Chat Completions upstream cannot keep is refused before anything is sent.
    let before = requests_seen(addr).await;
    let err = p
        .complete(&client_request(
            Api::Responses,
            json!({"input": "hi", "previous_response_id": "resp_1"}),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Unsupported { ref param, .. } if param == "previous_response_id"),
        "{err:?}"
    );
    assert_eq!(requests_seen(addr).await, before);
}

#[tokio::test]
async fn embeddings_pass_through() {
    let addr = upstream().await;
    let body = json!({"model": "alias", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 4});
    let req = EmbeddingsRequest {
        model: "text-embedding-3-small".into(),
        body: JsonBody::parse(bytes::Bytes::from(body.to_string())).unwrap(),
        inputs: vec!["a".into(), "b".into()],
    };
    let e = chat(addr).embed(&req).await.unwrap();
    assert_eq!(e.count, 2);
    assert!(e.usage.unwrap().input_tokens > 0);
    let v: Value = serde_json::from_slice(&e.body).unwrap();
    assert!(v["data"][0]["embedding"].is_string());
    let seen = last_request(addr).await;
    assert_eq!(seen["model"], "text-embedding-3-small");
    assert_eq!(seen["encoding_format"], "base64");
}

#[test]
fn request_body_maps_fields() {
    let mut r = request("hi");
    r.max_tokens = Some(64);
    r.temperature = Some(0.2);
    r.stop = vec!["END".into()];
    r.json_mode = true;
    r.user = Some("u-1".into());
    let v = serde_json::to_value(ChatBody::new(&r, true)).unwrap();
    assert_eq!(v["max_completion_tokens"], 64);
    assert_eq!(v["temperature"], 0.2);
    assert_eq!(v["stop"][0], "END");
    assert_eq!(v["response_format"]["type"], "json_object");
    assert_eq!(v["user"], "u-1");
    assert_eq!(v["stream"], true);
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["messages"][1]["content"], "hi");
    let v = serde_json::to_value(ChatBody::new(&request("hi"), false)).unwrap();
    for absent in [
        "stream",
        "stream_options",
        "stop",
        "response_format",
        "max_completion_tokens",
    ] {
        assert!(v.get(absent).is_none(), "{absent} in {v}");
    }
}

const CHAT_FIXTURE: &str = r#"{
      "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
      "object": "chat.completion",
      "created": 1741570283,
      "model": "gpt-4o-2024-08-06",
      "choices": [
        {
          "index": 0,
          "message": {
            "role": "assistant",
            "content": "The image shows a wooden boardwalk path running through a lush green field.",
            "refusal": null,
            "annotations": []
          },
          "logprobs": null,
          "finish_reason": "stop"
        }
      ],
      "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": { "cached_tokens": 1024, "audio_tokens": 0 },
        "completion_tokens_details": {
          "reasoning_tokens": 0, "audio_tokens": 0,
          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
      },
      "service_tier": "default",
      "system_fingerprint": "fp_fc9f1d7035"
    }"#;

#[test]
fn parses_a_real_chat_completion() {
    let c = read_chat_completion(CHAT_FIXTURE.as_bytes(), "gpt-4o").unwrap();
    assert!(c.text.starts_with("The image shows"));
    assert_eq!(c.finish_reason, "stop");
    assert_eq!(c.upstream_model, "gpt-4o-2024-08-06");
    assert_eq!(
        c.usage,
        Some(Usage {
            input_tokens: 1117,
            cached_input_tokens: 1024,
            output_tokens: 46
        })
    );
    assert!(matches!(
        read_chat_completion(br#"{"choices": []}"#, "m"),
        Err(ProviderError::InvalidResponse(_))
    ));
    // The body is checked for UTF-8 once; non-ASCII text (and its escapes) reads as before.
    let c = read_chat_completion(
        "{\"choices\":[{\"message\":{\"content\":\"Héllo \\u00e9 🌍\"}}]}".as_bytes(),
        "m",
    )
    .unwrap();
    assert_eq!(c.text, "Héllo é 🌍");
    let mut bad = br#"{"choices":[{"message":{"content":"Hxllo"}}]}"#.to_vec();
    bad[36] = 0xff;
    match read_chat_completion(&bad, "m") {
        Err(ProviderError::InvalidResponse(m)) => {
            assert!(m.contains("not UTF-8 (at byte 36)"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

const CHAT_SSE_FIXTURE: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        ": keep-alive comment\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Héllo\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" wörld 🌍\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

/// Feeds `fixture` split at the given byte offsets through the SSE decoder and `handler`.
pub fn decode_split<H: SseHandler>(
    fixture: &str,
    cuts: &[usize],
    mut handler: H,
) -> Vec<Result<StreamEvent, ProviderError>> {
    let bytes = fixture.as_bytes();
    let mut decoder = SseDecoder::default();
    let mut out = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|c| *c < bytes.len()).collect();
    bounds.sort_unstable();
    bounds.push(bytes.len());
    let mut events = Vec::new();
    for end in bounds {
        if end < start {
            continue;
        }
        for ev in decoder.feed(&bytes[start..end]).unwrap() {
            match handler.on_event(ev, &mut events) {
                Ok(()) => {
                    let done = events.iter().any(|i| matches!(i, StreamEvent::Done(_)));
                    out.extend(events.drain(..).map(Ok));
                    if done {
                        return out;
                    }
                }
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
        start = end;
    }
    if let Some(ev) = decoder.finish().unwrap() {
        if handler.on_event(ev, &mut events).is_ok() {
            out.extend(events.drain(..).map(Ok));
        }
    }
    out.push(handler.on_eof());
    out
}

pub fn summarize(
    items: &[Result<StreamEvent, ProviderError>],
) -> (String, Option<(String, Option<Usage>)>) {
    let mut text = String::new();
    let mut done = None;
    for item in items {
        match item {
            Ok(StreamEvent::Chunk { text: t, .. }) => text.push_str(t),
            Ok(StreamEvent::Done(end)) => done = Some((end.finish_reason.clone(), end.usage)),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    (text, done)
}

#[test]
fn sse_parsing_survives_any_chunk_boundaries() {
    let expected = (
        "Héllo wörld 🌍".to_string(),
        Some((
            "length".to_string(),
            Some(Usage {
                input_tokens: 9,
                cached_input_tokens: 0,
                output_tokens: 3,
            }),
        )),
    );
    let len = CHAT_SSE_FIXTURE.len();
    // Every single cut point, then many pseudo-random multi-cut splits.
    for cut in 0..len {
        let items = decode_split(CHAT_SSE_FIXTURE, &[cut], ChatStream::new(true));
        assert_eq!(summarize(&items), expected, "cut at {cut}");
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        let cuts: Vec<usize> = (0..12)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % len as u64) as usize
            })
            .collect();
        let items = decode_split(CHAT_SSE_FIXTURE, &cuts, ChatStream::new(true));
        assert_eq!(summarize(&items), expected, "cuts {cuts:?}");
    }
    // Byte by byte.
    let all: Vec<usize> = (1..len).collect();
    let items = decode_split(CHAT_SSE_FIXTURE, &all, ChatStream::new(true));
    assert_eq!(summarize(&items), expected);
}

#[test]
fn frames_are_the_upstream_events_minus_the_hidden_usage_chunk() {
    let wire = |include_usage| -> String {
        decode_split(CHAT_SSE_FIXTURE, &[], ChatStream::new(include_usage))
            .into_iter()
            .map(|i| match i.unwrap() {
                StreamEvent::Chunk { frame, .. } => String::from_utf8(frame.to_vec()).unwrap(),
                StreamEvent::Done(end) => String::from_utf8(end.trailer.to_vec()).unwrap(),
            })
            .collect()
    };
    // Every data payload byte for byte; comments and \r\n line ends normalised.
    let expected: String = CHAT_SSE_FIXTURE
        .replace("\r\n", "\n")
        .split("\n\n")
        .filter(|f| f.starts_with("data: "))
        .map(|f| format!("{f}\n\n"))
        .collect();
    assert_eq!(wire(true), expected);
    let hidden = wire(false);
    assert!(!hidden.contains("\"prompt_tokens\""));
    assert_eq!(
        hidden.matches("data: ").count(),
        expected.matches("data: ").count() - 1
    );
}

#[test]
fn stream_without_final_chunk_is_interrupted_and_mid_stream_errors_surface() {
    let items = decode_split(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        &[],
        ChatStream::default(),
    );
    assert!(matches!(
        items.last(),
        Some(Err(ProviderError::StreamInterrupted(_)))
    ));
    let items = decode_split(
        "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n",
        &[],
        ChatStream::default(),
    );
    assert!(
        matches!(items.last(), Some(Err(ProviderError::InvalidResponse(m))) if m.contains("server had an error"))
    );
    // No [DONE] but a finish_reason and no trailing blank line: still complete.
    let items = decode_split(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}",
            &[],
            ChatStream::default(),
        );
    assert_eq!(
        summarize(&items),
        ("Hi".into(), Some(("stop".into(), None)))
    );
}

/// A call, a stream of the same prompt with the same text, and an upstream 400 passed on: what
/// every client set-up must do against the mock upstream.
pub async fn call_stream_and_get_a_400(p: &OpenAiChat, prompt: &str) {
    let c = p.complete(&request(prompt)).await.unwrap();
    assert!(
        c.text
            .starts_with(&format!("This is a mock answer to: {prompt}")),
        "{c:?}"
    );
    assert_eq!(c.finish_reason, "stop");
    let got = collect(p.stream(&request(prompt)).await.unwrap()).await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.text, c.text);
    let err = p
        .complete(&request("bad [mock:status=400]"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Status { status: 400, .. }),
        "{err:?}"
    );
}

/// Both HTTP clients — the direct one (plain http, no proxy) and reqwest (https, proxies, or
/// `http_client: reqwest`) — answer, stream, pass an upstream's error status on, and time out and
/// fail to connect the same way.
#[tokio::test]
async fn both_http_clients_answer_stream_and_fail_alike() {
    use crate::provider::config::HttpClient;
    let addr = upstream().await;
    let closed = closed_port().await;
    for client in [HttpClient::Auto, HttpClient::Reqwest] {
        let cfg = ProviderConfig {
            http_client: client,
            max_retries: 0,
            ..config(addr)
        };
        let p = OpenAiChat::new(&cfg).unwrap();
        assert_eq!(p.http.is_direct(), client == HttpClient::Auto);
        call_stream_and_get_a_400(&p, "hello").await;
        let err = OpenAiChat::new(&ProviderConfig {
            http_client: client,
            ..config(closed)
        })
        .unwrap()
        .complete(&request("anyone?"))
        .await
        .unwrap_err();
        assert!(matches!(err, ProviderError::Connect(_)), "{err:?}");
        let slow = OpenAiChat::new(&ProviderConfig {
            timeout_secs: 1,
            ..cfg
        })
        .unwrap();
        let err = slow
            .complete(&request("slow [mock:delay_ms=3000]"))
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::Timeout(_)), "{err:?}");
    }
}
