//! OpenAI Responses API client (`POST {base_url}/responses`) — the API the original service used.
//! A client's Responses body is forwarded as it came but for `model`, and the answer and stream
//! events go back as sent; a Chat Completions client's body is translated (`translate`) both
//! ways. Also `POST {base_url}/embeddings`.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::http::{truncate_chars, HttpUpstream, SseEvent, SseHandler};
use super::openai_chat::embed_via;
use super::translate;
use super::wire::{self, sse_frame, ErrorDetail};
use super::{
    Api, Completion, CompletionRequest, CompletionStream, Embeddings, EmbeddingsRequest, Provider,
    ProviderError, RetryPolicy, StreamEnd, StreamEvent, ToolCall, Usage,
};
use crate::config::ProviderConfig;

/// Client for `POST {base_url}/responses` and `/embeddings`.
pub struct OpenAiResponses {
    http: HttpUpstream,
    responses_url: reqwest::Url,
    embeddings_url: reqwest::Url,
}

impl OpenAiResponses {
    pub fn new(cfg: &ProviderConfig) -> Result<Self, ProviderError> {
        let http = HttpUpstream::new(cfg)?;
        Ok(OpenAiResponses {
            responses_url: http.endpoint("/responses")?,
            embeddings_url: http.endpoint("/embeddings")?,
            http,
        })
    }

    fn body(&self, req: &CompletionRequest, stream: bool) -> Result<Bytes, ProviderError> {
        match &req.client {
            Some(c) if c.api == Api::Responses => {
                let model = wire::json_string(&req.model);
                Ok(Bytes::from(c.body.rewrite(&[("model", Some(&model))])))
            }
            Some(c) => translate::chat_to_responses(&c.body, &req.model, stream).map(Bytes::from),
            None => serde_json::to_vec(&ResponsesRequest::new(req, stream))
                .map(Bytes::from)
                .map_err(|e| ProviderError::InvalidResponse(format!("cannot encode request: {e}"))),
        }
    }
}

#[derive(Serialize)]
struct InputMessage<'a> {
    role: &'a str,
    content: &'a str,
}

/// The body of a request the gateway builds itself. `stop` has no Responses equivalent.
#[derive(Serialize)]
struct ResponsesRequest<'a> {
    model: &'a str,
    input: Vec<InputMessage<'a>>,
    /// System messages, joined: the Responses API takes them here rather than in `input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

impl<'a> ResponsesRequest<'a> {
    fn new(req: &'a CompletionRequest, stream: bool) -> Self {
        let system: Vec<&str> = req
            .messages
            .iter()
            .filter(|m| m.role == "system")
            .map(|m| m.content.as_str())
            .collect();
        ResponsesRequest {
            model: &req.model,
            input: req
                .messages
                .iter()
                .filter(|m| m.role != "system")
                .map(|m| InputMessage {
                    role: &m.role,
                    content: &m.content,
                })
                .collect(),
            instructions: (!system.is_empty()).then(|| system.join("\n\n")),
            max_output_tokens: req.max_tokens,
            temperature: req.temperature,
            top_p: req.top_p,
            text: req
                .json_mode
                .then(|| serde_json::json!({ "format": { "type": "json_object" } })),
            user: req.user.as_deref(),
            stream,
        }
    }
}

/// A response object, as returned whole or inside `response.completed` stream events.
#[derive(Debug, Deserialize)]
pub struct ResponseObject {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// Kept loose: besides messages and function calls there are reasoning, tool-call and other
    /// items of various shapes.
    #[serde(default)]
    pub output: Vec<serde_json::Value>,
    #[serde(default)]
    pub usage: Option<ResponsesUsage>,
    #[serde(default)]
    pub incomplete_details: Option<IncompleteDetails>,
    #[serde(default)]
    pub error: Option<ErrorDetail>,
    #[serde(default)]
    pub service_tier: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct IncompleteDetails {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ResponsesUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub input_tokens_details: Option<InputTokensDetails>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens_details: Option<OutputTokensDetails>,
}

#[derive(Debug, Deserialize)]
pub struct InputTokensDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct OutputTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl ResponsesUsage {
    pub fn to_usage(&self) -> Option<Usage> {
        if self.input_tokens.is_none() && self.output_tokens.is_none() {
            return None;
        }
        Some(Usage {
            input_tokens: self.input_tokens.unwrap_or(0),
            cached_input_tokens: self
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
        })
    }
}

fn str_field<'v>(v: &'v serde_json::Value, name: &str) -> Option<&'v str> {
    v.get(name).and_then(|t| t.as_str())
}

impl ResponseObject {
    fn part_text(&self, kind: &str, field: &str) -> String {
        self.output
            .iter()
            .filter(|item| str_field(item, "type") == Some("message"))
            .filter_map(|item| item.get("content").and_then(|c| c.as_array()))
            .flatten()
            .filter(|p| str_field(p, "type") == Some(kind))
            .filter_map(|p| str_field(p, field))
            .collect()
    }

    /// The answer: every `output_text` part of every `message` item, in order.
    pub fn output_text(&self) -> String {
        self.part_text("output_text", "text")
    }

    /// Every `refusal` part of every `message` item.
    pub fn refusal(&self) -> String {
        self.part_text("refusal", "refusal")
    }

    /// The answer text, or the refusal when there is no text.
    pub fn text(&self) -> String {
        let text = self.output_text();
        if text.is_empty() {
            self.refusal()
        } else {
            text
        }
    }

    /// The `function_call` items: call id, name and arguments.
    pub fn tool_calls(&self) -> Vec<ToolCall> {
        self.output
            .iter()
            .filter(|item| str_field(item, "type") == Some("function_call"))
            .map(|item| ToolCall {
                id: str_field(item, "call_id")
                    .or_else(|| str_field(item, "id"))
                    .unwrap_or_default()
                    .to_string(),
                name: str_field(item, "name").unwrap_or_default().to_string(),
                arguments: str_field(item, "arguments").unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// `completed` → `stop` (`tool_calls` when the model called functions); `incomplete` →
    /// `length` for the token limit, `content_filter`, else its reason; failed, cancelled or
    /// unfinished responses are errors.
    pub fn finish_reason(&self) -> Result<String, ProviderError> {
        match self.status.as_deref() {
            None | Some("completed") => Ok(if self.tool_calls().is_empty() {
                "stop".into()
            } else {
                "tool_calls".into()
            }),
            Some("incomplete") => {
                let reason = self
                    .incomplete_details
                    .as_ref()
                    .and_then(|d| d.reason.as_deref());
                Ok(match reason {
                    Some("max_output_tokens") => "length".into(),
                    Some(other) => other.to_string(),
                    None => "incomplete".into(),
                })
            }
            Some(status) => {
                let detail = self
                    .error
                    .as_ref()
                    .and_then(ErrorDetail::describe)
                    .map(|d| format!(": {}", truncate_chars(&d, 500)))
                    .unwrap_or_default();
                Err(ProviderError::InvalidResponse(format!(
                    "the response ended with status {status}{detail}"
                )))
            }
        }
    }

    pub fn into_completion(self, requested_model: &str) -> Result<Completion, ProviderError> {
        let finish_reason = self.finish_reason()?;
        Ok(Completion {
            text: self.text(),
            tool_calls: self.tool_calls(),
            finish_reason,
            usage: self.usage.as_ref().and_then(ResponsesUsage::to_usage),
            upstream_model: self
                .model
                .clone()
                .unwrap_or_else(|| requested_model.to_string()),
            body: None,
        })
    }
}

/// The fields of a Responses stream event the gateway reads.
#[derive(Deserialize)]
pub struct EventView<'a> {
    #[serde(default, rename = "type", borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub delta: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub response: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub item: Option<&'a RawValue>,
    #[serde(default)]
    pub output_index: Option<usize>,
    #[serde(default, borrow)]
    pub item_id: Option<Cow<'a, str>>,
}

/// An `error` stream event: its fields at the top level, or under `error` in older shapes.
pub fn stream_error(data: &str) -> ProviderError {
    let mut v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
    let detail: ErrorDetail = serde_json::from_value(match v.get_mut("error") {
        Some(inner) if inner.is_object() => inner.take(),
        _ => v,
    })
    .unwrap_or_default();
    ProviderError::InvalidResponse(format!(
        "upstream reported an error mid-stream: {}",
        truncate_chars(&detail.describe().unwrap_or_default(), 500)
    ))
}

/// The final response of a `response.completed` / `.incomplete` / `.failed` event.
pub fn final_response(raw: Option<&RawValue>) -> Result<ResponseObject, ProviderError> {
    serde_json::from_str(raw.map_or("{}", RawValue::get)).map_err(|e| {
        ProviderError::InvalidResponse(format!("cannot parse the final response: {e}"))
    })
}

/// Responses stream events, forwarded as they came (or, for requests the gateway built, only
/// read); the gateway reads the text deltas and the final response.
#[derive(Debug, Default)]
pub struct ResponsesStream {
    /// Forward frames (a Responses client); false for gateway-built requests.
    forward: bool,
}

impl SseHandler for ResponsesStream {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let data = ev.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(());
        }
        let view: EventView = serde_json::from_str(data).map_err(|e| {
            ProviderError::InvalidResponse(format!("cannot parse a stream event: {e}"))
        })?;
        let kind = view
            .kind
            .as_deref()
            .or(ev.event.as_deref())
            .unwrap_or_default();
        let frame = || {
            if self.forward {
                sse_frame(Some(kind), data)
            } else {
                Bytes::new()
            }
        };
        match kind {
            "response.completed" | "response.incomplete" | "response.failed" => {
                let response = final_response(view.response)?;
                let finish_reason = response.finish_reason()?;
                if kind == "response.failed" {
                    // A failed response without a failed status is still a failure.
                    return Err(ProviderError::InvalidResponse(
                        "the response failed without details".into(),
                    ));
                }
                out.push(StreamEvent::Done(StreamEnd {
                    finish_reason,
                    usage: response.usage.as_ref().and_then(ResponsesUsage::to_usage),
                    tool_calls: response.tool_calls(),
                    upstream_model: response.model.clone(),
                    trailer: frame(),
                }));
            }
            "error" => return Err(stream_error(data)),
            _ => {
                let (text, content) = match kind {
                    "response.output_text.delta" => {
                        let d = view.delta.as_deref().unwrap_or_default();
                        (d.to_string(), !d.is_empty())
                    }
                    "response.refusal.delta" | "response.function_call_arguments.delta" => {
                        (String::new(), true)
                    }
                    _ => (String::new(), false),
                };
                out.push(StreamEvent::Chunk {
                    frame: frame(),
                    text,
                    content,
                });
            }
        }
        Ok(())
    }

    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError> {
        Err(ProviderError::StreamInterrupted(
            "the stream ended before response.completed".into(),
        ))
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiResponses {
    fn kind(&self) -> &'static str {
        "openai_responses"
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.http.policy
    }

    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        let body = self.body(req, false)?;
        let response = self.http.post(&self.responses_url, body, false).await?;
        let bytes = self.http.read_body(response).await?;
        let object: ResponseObject = serde_json::from_slice(&bytes).map_err(|e| {
            self.http.scrub(ProviderError::InvalidResponse(format!(
                "cannot parse the response body: {e}"
            )))
        })?;
        match req.api() {
            Api::Responses if req.client.is_some() => {
                let mut c = object
                    .into_completion(&req.model)
                    .map_err(|e| self.http.scrub(e))?;
                c.body = Some(bytes);
                Ok(c)
            }
            _ => {
                let chat_body = req
                    .client
                    .is_some()
                    .then(|| translate::response_to_chat_completion(&object));
                let mut c = object
                    .into_completion(&req.model)
                    .map_err(|e| self.http.scrub(e))?;
                c.body = chat_body.map(Bytes::from);
                Ok(c)
            }
        }
    }

    async fn stream(&self, req: &CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let body = self.body(req, true)?;
        let response = self.http.post(&self.responses_url, body, true).await?;
        Ok(match &req.client {
            Some(c) if c.api == Api::Responses => self
                .http
                .stream_events(response, ResponsesStream { forward: true }),
            Some(c) => self.http.stream_events(
                response,
                translate::ResponsesToChatStream::new(c.include_usage),
            ),
            None => self
                .http
                .stream_events(response, ResponsesStream { forward: false }),
        })
    }

    async fn embed(&self, req: &EmbeddingsRequest) -> Result<Embeddings, ProviderError> {
        embed_via(&self.http, &self.embeddings_url, req).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use serde_json::json;

    use super::super::openai_chat::tests::{
        client_request, collect, config, data_of, decode_split, last_request, request,
        requests_seen, retrying, summarize, upstream, FAKE_KEY,
    };
    use super::*;
    use crate::config::ProviderKind;

    fn responses(addr: std::net::SocketAddr) -> OpenAiResponses {
        let mut cfg = config(addr);
        cfg.kind = ProviderKind::OpenaiResponses;
        OpenAiResponses::new(&cfg).unwrap()
    }

    #[tokio::test]
    async fn completes_with_text_finish_reason_and_usage() {
        let addr = upstream().await;
        let c = responses(addr)
            .complete(&request("Capital of Peru?"))
            .await
            .unwrap();
        assert!(
            c.text
                .starts_with("This is a mock answer to: Capital of Peru?"),
            "{}",
            c.text
        );
        assert_eq!(c.finish_reason, "stop");
        assert_eq!(c.upstream_model, "gpt-test");
        let usage = c.usage.unwrap();
        assert_eq!(usage.output_tokens, crate::tokens::count_tokens(&c.text));
        // The system message travelled as `instructions` and is counted by the mock.
        assert_eq!(
            usage.input_tokens,
            crate::tokens::count_message_tokens(&request("Capital of Peru?").messages)
        );
    }

    #[tokio::test]
    async fn streams_text_finish_reason_and_usage() {
        let addr = upstream().await;
        let p = responses(addr);
        let full = p.complete(&request("Stream it")).await.unwrap();
        let got = collect(p.stream(&request("Stream it")).await.unwrap()).await;
        assert!(got.error.is_none(), "{:?}", got.error);
        assert_eq!(got.text, full.text);
        let end = got.end.unwrap();
        assert_eq!(end.finish_reason, "stop");
        assert_eq!(end.usage, full.usage);
        assert!(
            got.wire.is_empty(),
            "a gateway-built request forwards nothing"
        );
    }

    #[tokio::test]
    async fn json_mode_gets_a_json_answer() {
        let addr = upstream().await;
        let mut r = request("json please");
        r.json_mode = true;
        let c = responses(addr).complete(&r).await.unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&c.text)
            .unwrap()
            .is_object());
    }

    #[tokio::test]
    async fn fail_first_two_succeeds_with_two_retries() {
        let addr = upstream().await;
        let (c, retries) = retrying(&responses(addr), &request("flaky [mock:fail_first=2]")).await;
        assert!(c.is_ok());
        assert_eq!(retries, 2);
    }

    #[tokio::test]
    async fn errors_map_like_chat() {
        let addr = upstream().await;
        let p = responses(addr);
        let err = p
            .complete(&request("no [mock:status=429]"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProviderError::Status { status: 429, retry_after: Some(d), .. } if d.is_zero()),
            "{err:?}"
        );
        let err = p
            .complete(&request("no [mock:status=400]"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Status { status: 400, .. }),
            "{err:?}"
        );
        let err = p
            .complete(&request("who [mock:status=401]"))
            .await
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains(FAKE_KEY), "{err:?}");

        let mut cfg = config(addr);
        cfg.timeout_secs = 1;
        cfg.api_key = Some(SecretString::from(FAKE_KEY));
        let slow = OpenAiResponses::new(&cfg).unwrap();
        let err = slow
            .complete(&request("slow [mock:delay_ms=3000]"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Timeout(d) if d == Duration::from_secs(1)),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn truncated_answer_finishes_with_length() {
        let addr = upstream().await;
        let p = responses(addr);
        let c = p.complete(&request("cut [mock:truncate]")).await.unwrap();
        assert_eq!(c.finish_reason, "length");
        let got = collect(p.stream(&request("cut [mock:truncate]")).await.unwrap()).await;
        assert!(got.error.is_none(), "{:?}", got.error);
        assert_eq!(got.end.unwrap().finish_reason, "length");
    }

    #[tokio::test]
    async fn broken_stream_is_interrupted() {
        let addr = upstream().await;
        let got = collect(
            responses(addr)
                .stream(&request("break [mock:stream_error]"))
                .await
                .unwrap(),
        )
        .await;
        assert!(!got.text.is_empty());
        assert!(got.end.is_none());
        assert!(
            matches!(got.error, Some(ProviderError::StreamInterrupted(_))),
            "{:?}",
            got.error
        );
    }

    #[tokio::test]
    async fn a_responses_body_passes_through_and_its_events_come_back_as_sent() {
        let addr = upstream().await;
        let p = responses(addr);
        let body = json!({"model": "alias", "input": "Weather in Lima?", "stream": true, "store": false,
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "reasoning": {"effort": "low"}});
        let got = collect(
            p.stream(&client_request(Api::Responses, body.clone()))
                .await
                .unwrap(),
        )
        .await;
        assert!(got.error.is_none(), "{:?}", got.error);
        let end = got.end.unwrap();
        assert_eq!(end.finish_reason, "tool_calls");
        assert_eq!(end.tool_calls[0].name, "weather");
        assert!(
            got.wire
                .contains("event: response.function_call_arguments.delta\ndata: "),
            "{}",
            got.wire
        );
        assert!(got.wire.ends_with("\n\n") && got.wire.contains("event: response.completed"));
        let mut expected = body;
        expected["model"] = json!("gpt-test");
        assert_eq!(last_request(addr).await, expected);
    }

    #[tokio::test]
    async fn a_chat_client_is_translated_both_ways() {
        let addr = upstream().await;
        let p = responses(addr);
        let body = json!({"model": "alias", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Lima?"}],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "max_completion_tokens": 99, "reasoning_effort": "low"});
        let c = p
            .complete(&client_request(Api::Chat, body.clone()))
            .await
            .unwrap();
        let chat: serde_json::Value = serde_json::from_slice(c.body.as_ref().unwrap()).unwrap();
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            chat["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "weather"
        );
        let sent = last_request(addr).await;
        assert_eq!(sent["max_output_tokens"], 99);
        assert_eq!(sent["reasoning"]["effort"], "low");
        assert_eq!(sent["tools"][0]["name"], "weather");
        // Streamed: tool-call deltas as a Chat Completions client expects them.
        let mut body = body;
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let got = collect(p.stream(&client_request(Api::Chat, body)).await.unwrap()).await;
        let data = data_of(&got.wire);
        assert_eq!(data.last().unwrap(), "[DONE]");
        let args: String = data
            .iter()
            .filter_map(|d| {
                d["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(args, got.end.as_ref().unwrap().tool_calls[0].arguments);
        assert!(
            data[data.len() - 2]["usage"]["total_tokens"]
                .as_u64()
                .unwrap()
                > 0
        );
        // What cannot be carried is refused before anything is sent.
        let before = requests_seen(addr).await;
        let err = p
            .complete(&client_request(
                Api::Chat,
                json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Unsupported { ref param, .. } if param == "n"),
            "{err:?}"
        );
        assert_eq!(requests_seen(addr).await, before);
    }

    #[test]
    fn request_body_moves_system_messages_to_instructions() {
        let mut r = request("hi");
        r.max_tokens = Some(100);
        r.json_mode = true;
        let v = serde_json::to_value(ResponsesRequest::new(&r, true)).unwrap();
        assert_eq!(v["instructions"], "You are terse.");
        assert_eq!(v["input"].as_array().unwrap().len(), 1);
        assert_eq!(v["input"][0]["role"], "user");
        assert_eq!(v["input"][0]["content"], "hi");
        assert_eq!(v["max_output_tokens"], 100);
        assert_eq!(v["text"]["format"]["type"], "json_object");
        assert_eq!(v["stream"], true);
        assert!(v.get("stop").is_none());
    }

    /// Shaped like a real gpt-5-mini answer: a reasoning item before the message.
    const RESPONSES_FIXTURE: &str = r#"{
      "id": "resp_68af4030592c81938ec0a5fbab4a3e9f05438e46b5f69a3b",
      "object": "response",
      "created_at": 1756315696,
      "status": "completed",
      "background": false,
      "error": null,
      "incomplete_details": null,
      "instructions": null,
      "max_output_tokens": null,
      "model": "gpt-5-mini-2025-08-07",
      "output": [
        {
          "id": "rs_68af4030baa48193b0b43b4c2a176a1a05438e46b5f69a3b",
          "type": "reasoning",
          "summary": []
        },
        {
          "id": "msg_68af40337e58819392e2b8c8ef4e5bc005438e46b5f69a3b",
          "type": "message",
          "status": "completed",
          "content": [
            {
              "type": "output_text",
              "annotations": [],
              "logprobs": [],
              "text": "Lima is the capital of Peru."
            },
            {
              "type": "output_text",
              "annotations": [],
              "text": " It sits on the Pacific coast."
            }
          ],
          "role": "assistant"
        }
      ],
      "parallel_tool_calls": true,
      "previous_response_id": null,
      "reasoning": { "effort": "medium", "summary": null },
      "store": true,
      "temperature": 1.0,
      "text": { "format": { "type": "text" }, "verbosity": "medium" },
      "tool_choice": "auto",
      "tools": [],
      "top_p": 1.0,
      "truncation": "disabled",
      "usage": {
        "input_tokens": 1536,
        "input_tokens_details": { "cached_tokens": 1280 },
        "output_tokens": 204,
        "output_tokens_details": { "reasoning_tokens": 192 },
        "total_tokens": 1740
      },
      "user": null,
      "metadata": {}
    }"#;

    #[test]
    fn parses_a_real_response_with_reasoning_items() {
        let body: ResponseObject = serde_json::from_str(RESPONSES_FIXTURE).unwrap();
        let c = body.into_completion("gpt-5-mini").unwrap();
        assert_eq!(
            c.text,
            "Lima is the capital of Peru. It sits on the Pacific coast."
        );
        assert_eq!(c.finish_reason, "stop");
        assert_eq!(c.upstream_model, "gpt-5-mini-2025-08-07");
        assert_eq!(
            c.usage,
            Some(Usage {
                input_tokens: 1536,
                cached_input_tokens: 1280,
                output_tokens: 204
            })
        );
    }

    #[test]
    fn incomplete_and_failed_statuses() {
        let incomplete: ResponseObject = serde_json::from_str(
            r#"{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[]}"#,
        )
        .unwrap();
        let c = incomplete.into_completion("m").unwrap();
        assert_eq!(c.finish_reason, "length");
        assert_eq!(c.text, "");
        let failed: ResponseObject = serde_json::from_str(
            r#"{"status":"failed","error":{"code":"server_error","message":"The model failed"},"output":[]}"#,
        )
        .unwrap();
        let err = failed.into_completion("m").unwrap_err();
        assert!(
            matches!(&err, ProviderError::InvalidResponse(m) if m.contains("The model failed")),
            "{err:?}"
        );
    }

    const RESPONSES_SSE_FIXTURE: &str = concat!(
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-5-mini-2025-08-07\",\"output\":[],\"usage\":null}}\n\n",
        "event: response.output_item.added\n",
        "data: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[]}}\n\n",
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"delta\":\"Lima\",\"logprobs\":[]}\n\n",
        "event: response.output_text.delta\r\n",
        "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"delta\":\" is the capital — ¡sí! 🇵🇪\",\"logprobs\":[]}\r\n\r\n",
        "event: response.output_text.done\n",
        "data: {\"type\":\"response.output_text.done\",\"sequence_number\":6,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"text\":\"Lima is the capital — ¡sí! 🇵🇪\"}\n\n",
        "event: response.completed\n",
        "data: {\"type\":\"response.completed\",\"sequence_number\":7,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-5-mini-2025-08-07\",\"output\":[{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[]},{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"status\":\"completed\",\"content\":[{\"type\":\"output_text\",\"text\":\"Lima is the capital — ¡sí! 🇵🇪\",\"annotations\":[]}]}],\"usage\":{\"input_tokens\":20,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":80,\"output_tokens_details\":{\"reasoning_tokens\":64},\"total_tokens\":100}}}\n\n",
    );

    #[test]
    fn sse_parsing_survives_any_chunk_boundaries() {
        let expected = (
            "Lima is the capital — ¡sí! 🇵🇪".to_string(),
            Some((
                "stop".to_string(),
                Some(Usage {
                    input_tokens: 20,
                    cached_input_tokens: 0,
                    output_tokens: 80,
                }),
            )),
        );
        for cut in 0..RESPONSES_SSE_FIXTURE.len() {
            let items = decode_split(RESPONSES_SSE_FIXTURE, &[cut], ResponsesStream::default());
            assert_eq!(summarize(&items), expected, "cut at {cut}");
        }
        let all: Vec<usize> = (1..RESPONSES_SSE_FIXTURE.len()).collect();
        let items = decode_split(RESPONSES_SSE_FIXTURE, &all, ResponsesStream::default());
        assert_eq!(summarize(&items), expected);
    }

    #[test]
    fn failed_and_error_events_are_errors() {
        let items = decode_split(
            "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"boom\"},\"output\":[]}}\n\n",
            &[],
            ResponsesStream::default(),
        );
        assert!(
            matches!(items.last(), Some(Err(ProviderError::InvalidResponse(m))) if m.contains("boom")),
            "{items:?}"
        );
        let items = decode_split(
            "event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\",\"param\":null}\n\n",
            &[],
            ResponsesStream::default(),
        );
        assert!(
            matches!(items.last(), Some(Err(ProviderError::InvalidResponse(m))) if m.contains("slow down")),
            "{items:?}"
        );
        let items = decode_split(
            "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
            &[],
            ResponsesStream::default(),
        );
        assert!(matches!(
            items.last(),
            Some(Err(ProviderError::StreamInterrupted(_)))
        ));
        let incomplete = decode_split(
            "data: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"output\":[]}}\n\n",
            &[],
            ResponsesStream::default(),
        );
        assert_eq!(summarize(&incomplete).1.unwrap().0, "length");
    }
}
