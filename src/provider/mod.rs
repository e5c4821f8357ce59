//! Upstream model clients behind one trait: OpenAI Chat Completions, OpenAI Responses, and the
//! built-in deterministic mock. Knows nothing about HTTP handlers or storage.
//!
//! A client's OpenAI body travels as bytes (`wire::JsonBody`): a provider that speaks the client's
//! API forwards it with only the documented rewrites and hands the upstream's answer back as it
//! came; one that speaks the other API translates (`translate`), refusing what it cannot carry.

pub mod http;
pub mod mock;
pub mod openai_chat;
pub mod openai_responses;
pub mod retry;
pub mod translate;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::config::{ProviderConfig, ProviderKind};
pub use retry::RetryPolicy;

/// One chat message as the gateway sees it: its role and its text (text parts joined; other parts
/// shown as `[type]`). Used for token counts, the stored prompt, the judge and the mock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Which OpenAI API a client spoke, and so the shape of the answer it gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/responses`.
    Responses,
}

/// A client's own OpenAI request: the body as it came, and the few fields the gateway read from it.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub api: Api,
    pub body: wire::JsonBody,
    pub stream: bool,
    /// Chat Completions: `stream_options.include_usage` as the client sent it. The upstream is
    /// always asked for usage; the usage chunk reaches only clients that asked for it.
    pub include_usage: bool,
}

/// A provider-neutral completion request.
#[derive(Debug, Clone, Default)]
pub struct CompletionRequest {
    /// Model name sent upstream.
    pub model: String,
    /// The conversation as text (for counting, recording and the mock). With `client` set, the
    /// body is what goes upstream; these are a read-only view of it.
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    /// The client asked for a JSON answer (`response_format` / `text.format` json_object or
    /// json_schema).
    pub json_mode: bool,
    /// End-user id forwarded upstream (OpenAI `user`).
    pub user: Option<String>,
    /// The client's own body, forwarded (or translated); None for requests the gateway builds
    /// itself (`POST /chat`, the LLM judge), which use the fields above.
    pub client: Option<Arc<ClientRequest>>,
}

impl CompletionRequest {
    /// The API the answer must be shaped for (requests built by the gateway get Chat Completions).
    pub fn api(&self) -> Api {
        self.client.as_ref().map_or(Api::Chat, |c| c.api)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All prompt tokens, cached ones included (OpenAI semantics).
    pub input_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
}

/// A function call the model asked for: its id, the function's name and the JSON arguments as the
/// model wrote them (not necessarily valid JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone)]
pub struct Completion {
    /// The first choice's text (its refusal when it has no text).
    pub text: String,
    /// `stop`, `length`, `tool_calls`, `content_filter`, …
    pub finish_reason: String,
    /// None when the upstream did not report usage; the core then counts tokens itself.
    pub usage: Option<Usage>,
    /// The model name the upstream says answered.
    pub upstream_model: String,
    /// The first choice's tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// The answer as the client's API shapes it (a `chat.completion` or `response` object), to be
    /// sent back as is; None for requests the gateway built itself.
    pub body: Option<Bytes>,
}

/// One event of a streamed completion.
#[derive(Debug, Clone)]
pub enum StreamEvent {
    /// `frame` is one whole server-sent event for the client, in its API, as it goes out (empty
    /// when the event is not for the client, e.g. a usage chunk it did not ask for). `text` is the
    /// answer text it adds; `content` says whether it carries any answer content at all (text,
    /// refusal or a tool call), for the time to first token.
    Chunk {
        frame: Bytes,
        text: String,
        content: bool,
    },
    /// Last event: how the answer ended. `trailer` goes to the client after the call is recorded
    /// (`data: [DONE]`, or the Responses `response.completed` event).
    Done(StreamEnd),
}

#[derive(Debug, Clone, Default)]
pub struct StreamEnd {
    pub finish_reason: String,
    pub usage: Option<Usage>,
    pub tool_calls: Vec<ToolCall>,
    pub upstream_model: Option<String>,
    pub trailer: Bytes,
}

pub type CompletionStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// A client's `POST /v1/embeddings` body.
#[derive(Debug, Clone)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub body: wire::JsonBody,
    /// The inputs as text, for counting and recording.
    pub inputs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Embeddings {
    /// The upstream's `list` object, sent back as is.
    pub body: Bytes,
    pub usage: Option<Usage>,
    pub upstream_model: String,
    /// How many vectors came back.
    pub count: usize,
}

/// The upstream's own error object, kept so that its meaning reaches the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamError {
    pub kind: Option<String>,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("upstream timed out after {0:?}")]
    Timeout(Duration),
    #[error("upstream returned HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// The error object's type, param and code, when the upstream sent one.
        error: Option<Box<UpstreamError>>,
        /// How long the upstream asked to wait (`retry-after-ms` / `retry-after`).
        retry_after: Option<Duration>,
    },
    #[error("cannot connect to upstream: {0}")]
    Connect(String),
    #[error("upstream sent an invalid response: {0}")]
    InvalidResponse(String),
    /// The answer had started streaming when the upstream connection broke.
    #[error("upstream stream interrupted: {0}")]
    StreamInterrupted(String),
    /// The client went away before the answer was complete.
    #[error("client disconnected before the end")]
    ClientDisconnected,
    /// The request uses something this provider's API cannot express; nothing was sent.
    #[error("{message}")]
    Unsupported { param: String, message: String },
}

impl ProviderError {
    /// A status error without details (the mock's and tests').
    pub fn status(status: u16, message: impl Into<String>) -> Self {
        ProviderError::Status {
            status,
            message: message.into(),
            error: None,
            retry_after: None,
        }
    }

    /// The `error_type` label value; one of `metrics::ERROR_TYPES`.
    pub fn error_type(&self) -> &'static str {
        match self {
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Status { status, .. } => match status {
                401 | 403 => "upstream_auth",
                429 => "upstream_rate_limited",
                400..=499 => "upstream_rejected",
                _ => "upstream_status",
            },
            ProviderError::Connect(_) => "connect",
            ProviderError::InvalidResponse(_) | ProviderError::Unsupported { .. } => {
                "invalid_response"
            }
            ProviderError::StreamInterrupted(_) => "stream_interrupted",
            ProviderError::ClientDisconnected => "client_disconnected",
        }
    }

    /// 429, 5xx and connect errors are worth another try.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
            ProviderError::Connect(_) => true,
            _ => false,
        }
    }
}

#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// `openai_chat`, `openai_responses` or `mock`: stored with each record.
    fn kind(&self) -> &'static str;
    /// How failed attempts are retried (`retry::with_retries`); the mock never retries.
    fn retry_policy(&self) -> RetryPolicy;
    /// One attempt at a whole answer.
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError>;
    /// One attempt at starting a streamed answer; errors before the first byte come back here,
    /// later ones in the stream.
    async fn stream(&self, req: &CompletionRequest) -> Result<CompletionStream, ProviderError>;
    /// One attempt at `POST /embeddings`.
    async fn embed(&self, req: &EmbeddingsRequest) -> Result<Embeddings, ProviderError>;
}

/// Builds the client for one configured provider.
pub fn build(cfg: &ProviderConfig) -> Result<Arc<dyn Provider>, ProviderError> {
    Ok(match cfg.kind {
        ProviderKind::Mock => Arc::new(mock::MockProvider::new(cfg.mock_latency_ms)),
        ProviderKind::OpenaiChat => Arc::new(openai_chat::OpenAiChat::new(cfg)?),
        ProviderKind::OpenaiResponses => Arc::new(openai_responses::OpenAiResponses::new(cfg)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_type_is_a_known_label_value() {
        let errors = [
            ProviderError::Timeout(Duration::from_secs(1)),
            ProviderError::status(500, "x"),
            ProviderError::status(429, "x"),
            ProviderError::status(400, "x"),
            ProviderError::status(401, "x"),
            ProviderError::Connect("x".into()),
            ProviderError::InvalidResponse("x".into()),
            ProviderError::StreamInterrupted("x".into()),
            ProviderError::ClientDisconnected,
        ];
        let seen: std::collections::BTreeSet<&str> =
            errors.iter().map(ProviderError::error_type).collect();
        let known: std::collections::BTreeSet<&str> =
            crate::metrics::ERROR_TYPES.into_iter().collect();
        assert_eq!(seen, known);
    }
}
