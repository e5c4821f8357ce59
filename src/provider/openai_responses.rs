//! OpenAI Responses API client (`POST {base_url}/responses`) — the API the original service used.
//! A client's Responses body is forwarded as it came but for `model`, and the answer and stream
//! events go back as sent; a Chat Completions client's body is translated (`translate`) both
//! ways. Also `POST {base_url}/embeddings`.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::config::ProviderConfig;
use super::http::{truncate_chars, Endpoint, HttpUpstream};
use super::openai_chat::embed_via;
use super::sse::{SseEvent, SseHandler};
use super::translate;
use super::wire::{self, sse_frame, ErrorDetail};
use super::{
    Api, Completion, CompletionRequest, CompletionStream, Embeddings, EmbeddingsRequest, Provider,
    ProviderError, RetryPolicy, Role, StreamEnd, StreamEvent, ToolCall, Usage,
};

/// Client for `POST {base_url}/responses` and `/embeddings`.
pub struct OpenAiResponses {
    http: HttpUpstream,
    responses_url: Endpoint,
    embeddings_url: Endpoint,
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
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        ResponsesRequest {
            model: &req.model,
            input: req
                .messages
                .iter()
                .filter(|m| m.role != Role::System)
                .map(|m| InputMessage {
                    role: m.role.as_str(),
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
mod tests;
