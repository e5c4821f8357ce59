//! OpenAI Chat Completions client (`POST {base_url}/chat/completions`), for OpenAI and any
//! compatible server. A client's Chat Completions body is forwarded as it came but for `model`
//! and, on streams, `stream_options.include_usage`; the answer and every stream chunk go back as
//! the upstream sent them. Also `POST {base_url}/embeddings`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::config::ProviderConfig;
use super::http::{truncate_chars, Endpoint, HttpUpstream, MAX_ERROR_MESSAGE_CHARS};
use super::sse::{SseEvent, SseHandler};
use super::wire::{self, sse_frame, ChatView, ToolCallParts, DONE_FRAME};
use super::{
    Api, ChatMessage, Completion, CompletionRequest, CompletionStream, Embeddings,
    EmbeddingsRequest, Provider, ProviderError, RetryPolicy, StreamEnd, StreamEvent, Usage,
};

/// Client for `POST {base_url}/chat/completions` and `/embeddings`.
pub struct OpenAiChat {
    http: HttpUpstream,
    chat_url: Endpoint,
    embeddings_url: Endpoint,
}

impl OpenAiChat {
    pub fn new(cfg: &ProviderConfig) -> Result<Self, ProviderError> {
        let http = HttpUpstream::new(cfg)?;
        Ok(OpenAiChat {
            chat_url: http.endpoint("/chat/completions")?,
            embeddings_url: http.endpoint("/embeddings")?,
            http,
        })
    }

    /// The body to send: the client's own with `model` (and on streams `stream_options`)
    /// rewritten, or one built from the neutral fields.
    fn body(&self, req: &CompletionRequest, stream: bool) -> Result<Bytes, ProviderError> {
        match &req.client {
            Some(c) if c.api == Api::Chat => {
                let model = wire::json_string(&req.model);
                let body = if stream {
                    let options = wire::stream_options_with_usage(c.body.get("stream_options"));
                    c.body
                        .rewrite(&[("model", Some(&model)), ("stream_options", Some(&options))])
                } else {
                    c.body.rewrite(&[("model", Some(&model))])
                };
                Ok(Bytes::from(body))
            }
            Some(c) => {
                super::translate::responses_to_chat(&c.body, &req.model, stream).map(Bytes::from)
            }
            None => serde_json::to_vec(&ChatBody::new(req, stream))
                .map(Bytes::from)
                .map_err(|e| ProviderError::InvalidResponse(format!("cannot encode request: {e}"))),
        }
    }
}

/// The body of a request the gateway builds itself (`/chat`, the judge).
#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<serde_json::Value>,
}

impl<'a> ChatBody<'a> {
    fn new(req: &'a CompletionRequest, stream: bool) -> Self {
        ChatBody {
            model: &req.model,
            messages: &req.messages,
            max_completion_tokens: req.max_tokens,
            temperature: req.temperature,
            top_p: req.top_p,
            stop: &req.stop,
            response_format: req
                .json_mode
                .then(|| serde_json::json!({ "type": "json_object" })),
            user: req.user.as_deref(),
            stream,
            // Always ask for usage so a streamed call's cost is known.
            stream_options: stream.then(|| serde_json::json!({ "include_usage": true })),
        }
    }
}

/// What the gateway reads from a `chat.completion` body (model name missing → the requested one).
pub fn read_chat_completion(
    body: &[u8],
    requested_model: &str,
) -> Result<Completion, ProviderError> {
    // One UTF-8 pass over the body; `from_str` then skips the check per string.
    let view: ChatView = std::str::from_utf8(body)
        .map_err(|e| format!("it is not UTF-8 (at byte {})", e.valid_up_to()))
        .and_then(|text| serde_json::from_str(text).map_err(|e| e.to_string()))
        .map_err(|e| {
            ProviderError::InvalidResponse(format!("cannot parse the response body: {e}"))
        })?;
    let choice = view
        .first_choice()
        .ok_or_else(|| ProviderError::InvalidResponse("the response has no choices".into()))?;
    let message = choice.message.as_ref().or(choice.delta.as_ref());
    Ok(Completion {
        text: message.map(|m| m.text().to_string()).unwrap_or_default(),
        finish_reason: choice
            .finish_reason
            .as_deref()
            .unwrap_or("stop")
            .to_string(),
        usage: view.usage.as_ref().and_then(wire::ChatUsage::to_usage),
        upstream_model: view.model.as_deref().unwrap_or(requested_model).to_string(),
        tool_calls: message.map(wire::tool_calls_of).unwrap_or_default(),
        body: None,
    })
}

/// Chat Completions chunks, forwarded as they came; the gateway reads the first choice's text,
/// tool calls and finish reason, and the usage. `Done` comes with `[DONE]`, after the usage chunk.
#[derive(Debug, Default)]
pub struct ChatStream {
    /// The client asked for the usage chunk; otherwise it is read and not forwarded.
    include_usage: bool,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    tool_calls: ToolCallParts,
    model: Option<String>,
}

impl ChatStream {
    pub fn new(include_usage: bool) -> Self {
        ChatStream {
            include_usage,
            ..ChatStream::default()
        }
    }

    fn end(&mut self, trailer: Bytes) -> StreamEvent {
        StreamEvent::Done(StreamEnd {
            finish_reason: self.finish_reason.take().unwrap_or_else(|| "stop".into()),
            usage: self.usage.take(),
            tool_calls: std::mem::take(&mut self.tool_calls).finish(),
            upstream_model: self.model.take(),
            trailer,
        })
    }
}

impl SseHandler for ChatStream {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            out.push(self.end(Bytes::from_static(DONE_FRAME)));
            return Ok(());
        }
        let chunk: ChatView = serde_json::from_str(data).map_err(|e| {
            ProviderError::InvalidResponse(format!("cannot parse a stream chunk: {e}"))
        })?;
        if let Some(err) = &chunk.error {
            return Err(ProviderError::InvalidResponse(format!(
                "upstream reported an error mid-stream: {}",
                truncate_chars(&err.describe().unwrap_or_default(), MAX_ERROR_MESSAGE_CHARS)
            )));
        }
        if self.model.is_none() {
            self.model = chunk.model.as_deref().map(str::to_string);
        }
        let mut text = String::new();
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(delta) = &choice.delta {
                text.push_str(delta.text());
                for t in delta.tool_calls.iter().flatten() {
                    self.tool_calls.add(t);
                }
            }
            if let Some(reason) = &choice.finish_reason {
                self.finish_reason = Some(reason.to_string());
            }
        }
        let usage = chunk.usage.as_ref().and_then(wire::ChatUsage::to_usage);
        let usage_only = chunk.choices.is_empty() && usage.is_some();
        if usage.is_some() {
            self.usage = usage;
        }
        let frame = if usage_only && !self.include_usage {
            Bytes::new()
        } else {
            sse_frame(ev.event.as_deref(), data)
        };
        out.push(StreamEvent::Chunk {
            frame,
            content: chunk.has_content(),
            text,
        });
        Ok(())
    }

    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError> {
        // Some compatible servers never send [DONE]; a finish_reason is enough to call it complete.
        if self.finish_reason.is_some() {
            Ok(self.end(Bytes::new()))
        } else {
            Err(ProviderError::StreamInterrupted(
                "the stream ended before the final chunk".into(),
            ))
        }
    }
}

/// What the gateway reads from an embeddings `list` object.
pub fn read_embeddings(body: Bytes, requested_model: &str) -> Result<Embeddings, ProviderError> {
    #[derive(Deserialize)]
    struct View<'a> {
        #[serde(default)]
        data: Vec<serde::de::IgnoredAny>,
        #[serde(default, borrow)]
        model: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        usage: Option<wire::ChatUsage>,
    }
    let view: View = serde_json::from_slice(&body).map_err(|e| {
        ProviderError::InvalidResponse(format!("cannot parse the embeddings body: {e}"))
    })?;
    let usage = view.usage.and_then(|u| {
        u.prompt_tokens.map(|p| Usage {
            input_tokens: p,
            cached_input_tokens: 0,
            output_tokens: 0,
        })
    });
    let upstream_model = view.model.as_deref().unwrap_or(requested_model).to_string();
    let count = view.data.len();
    Ok(Embeddings {
        body,
        usage,
        upstream_model,
        count,
    })
}

/// One embeddings call through `http`, shared by both OpenAI providers.
pub(super) async fn embed_via(
    http: &HttpUpstream,
    url: &Endpoint,
    req: &EmbeddingsRequest,
) -> Result<Embeddings, ProviderError> {
    let model = wire::json_string(&req.model);
    let body = Bytes::from(req.body.rewrite(&[("model", Some(&model))]));
    let response = http.post(url, body, false).await?;
    let bytes = http.read_body(response).await?;
    read_embeddings(bytes, &req.model).map_err(|e| http.scrub(e))
}

#[async_trait::async_trait]
impl Provider for OpenAiChat {
    fn kind(&self) -> &'static str {
        "openai_chat"
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.http.policy
    }

    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        let body = self.body(req, false)?;
        let response = self.http.post(&self.chat_url, body, false).await?;
        let bytes = self.http.read_body(response).await?;
        let mut completion =
            read_chat_completion(&bytes, &req.model).map_err(|e| self.http.scrub(e))?;
        completion.body = match &req.client {
            Some(c) if c.api == Api::Responses => Some(Bytes::from(
                super::translate::chat_completion_to_response(&bytes, &c.body),
            )),
            Some(_) => Some(bytes),
            None => None,
        };
        Ok(completion)
    }

    async fn stream(&self, req: &CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let body = self.body(req, true)?;
        let response = self.http.post(&self.chat_url, body, true).await?;
        Ok(match &req.client {
            Some(c) if c.api == Api::Responses => self.http.stream_events(
                response,
                super::translate::ChatToResponsesStream::new(&c.body),
            ),
            c => {
                let include_usage = c.as_ref().is_some_and(|c| c.include_usage);
                self.http
                    .stream_events(response, ChatStream::new(include_usage))
            }
        })
    }

    async fn embed(&self, req: &EmbeddingsRequest) -> Result<Embeddings, ProviderError> {
        embed_via(&self.http, &self.embeddings_url, req).await
    }
}

#[cfg(test)]
pub(super) mod tests;
#[cfg(test)]
mod tls_tests;
