//! Upstream model clients behind one trait: OpenAI Chat Completions, OpenAI Responses, and the
//! built-in deterministic mock. Knows nothing about HTTP handlers or storage.

pub mod config;
pub mod mock;
pub mod openai_chat;
pub mod openai_responses;
mod retry;

use std::sync::Arc;

use futures::stream::BoxStream;

use config::{ProviderConfig, ProviderKind};

/// One chat message as the gateway passes it upstream (text content only).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A provider-neutral completion request.
#[derive(Debug, Clone, Default)]
pub struct CompletionRequest {
    /// Model name sent upstream.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    /// The client asked for a JSON object (`response_format: {type: json_object|json_schema}`).
    pub json_mode: bool,
    /// End-user id forwarded upstream (OpenAI `user`).
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All prompt tokens, cached ones included (OpenAI semantics).
    pub input_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    /// `stop`, `length`, `content_filter`, …
    pub finish_reason: String,
    /// None when the upstream did not report usage; the core then counts tokens itself.
    pub usage: Option<Usage>,
    /// The model name the upstream says answered.
    pub upstream_model: String,
    /// Number of retries the call needed.
    pub retries: u32,
}

/// One event of a streamed completion.
#[derive(Debug, Clone)]
pub enum StreamEvent {
    Delta(String),
    /// Last event: why it ended and, when the upstream sent it, the usage.
    Done {
        finish_reason: String,
        usage: Option<Usage>,
    },
}

pub type CompletionStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("upstream timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("upstream returned HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("cannot connect to upstream: {0}")]
    Connect(String),
    #[error("upstream sent an invalid response: {0}")]
    InvalidResponse(String),
}

impl ProviderError {
    /// The `error_type` label value; a small fixed set.
    pub fn error_type(&self) -> &'static str {
        match self {
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Status { .. } => "upstream_status",
            ProviderError::Connect(_) => "connect",
            ProviderError::InvalidResponse(_) => "invalid_response",
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
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError>;
    /// Starts a streamed completion; errors before the first byte come back here, later ones in
    /// the stream.
    async fn stream(&self, req: &CompletionRequest) -> Result<CompletionStream, ProviderError>;
}

/// Builds the client for one configured provider.
pub fn build(cfg: &ProviderConfig) -> Result<Arc<dyn Provider>, ProviderError> {
    Ok(match cfg.kind {
        ProviderKind::Mock => Arc::new(mock::MockProvider::new(cfg.mock_latency_ms)),
        ProviderKind::OpenaiChat => Arc::new(openai_chat::OpenAiChat::new(cfg)?),
        ProviderKind::OpenaiResponses => Arc::new(openai_responses::OpenAiResponses::new(cfg)?),
    })
}
