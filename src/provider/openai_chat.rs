//! OpenAI Chat Completions client (`POST {base_url}/chat/completions`), streaming and not, for OpenAI
//! and any compatible server; also the HTTP transport and SSE decoding that `openai_responses` reuses.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::config::ProviderConfig;
use super::retry::{self, AttemptError, RetryPolicy};
use super::{
    ChatMessage, Completion, CompletionRequest, CompletionStream, Provider, ProviderError,
    StreamEvent, Usage,
};

/// Upstream error messages are cut to this many characters before they reach logs and records.
const MAX_ERROR_MESSAGE_CHARS: usize = 500;
/// An error body larger than this is not read further; the message is in the first bytes anyway.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// A completion body larger than this is refused rather than buffered.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// One SSE line (or event) larger than this means a broken upstream, not a long answer.
const MAX_SSE_EVENT_BYTES: usize = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Shared HTTP transport (also used by openai_responses).
// ---------------------------------------------------------------------------------------------

/// One upstream endpoint: a pooled client, the auth header, timeouts and the retry policy.
pub(super) struct HttpUpstream {
    client: reqwest::Client,
    /// `{base_url}{path}`, parsed once: parsing it per call (IDNA included) was ~3 % of the
    /// gateway's CPU at saturation.
    url: reqwest::Url,
    /// `Bearer <key>`, marked sensitive so it never shows in debug output.
    auth: Option<HeaderValue>,
    /// Kept only to scrub the key from upstream error text that might echo it.
    api_key: Option<SecretString>,
    /// Whole-call limit for non-streaming calls; read (idle) limit for streams.
    timeout: Duration,
    policy: RetryPolicy,
}

impl HttpUpstream {
    /// An upstream at `{base_url}{path}` (`path` like `/chat/completions`).
    pub fn new(cfg: &ProviderConfig, path: &str) -> Result<Self, ProviderError> {
        let base_url = cfg.base_url.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base_url}{path}")).map_err(|_| {
            ProviderError::Connect(format!("base_url {base_url:?} is not a valid URL"))
        })?;
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs.max(1)))
            // A read timeout, not a total one, so long streams live as long as tokens keep coming;
            // non-streaming requests add a total timeout per request.
            .read_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("lqo/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Connect(format!("cannot build the HTTP client: {e}")))?;
        let api_key = cfg
            .api_key
            .clone()
            .filter(|k| !k.expose_secret().is_empty());
        let auth = match &api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                    .map_err(|_| {
                    ProviderError::Connect(
                        "the API key contains characters not allowed in an HTTP header".into(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(HttpUpstream {
            client,
            url,
            auth,
            api_key,
            timeout,
            policy: RetryPolicy::from_config(cfg),
        })
    }

    /// POSTs `body` as JSON to the endpoint with retries; returns the 2xx response and the
    /// number of retries. For streams only this initial exchange is retried.
    pub async fn post_json<B: Serialize>(
        &self,
        body: &B,
        streaming: bool,
    ) -> Result<(reqwest::Response, u32), ProviderError> {
        let body =
            Bytes::from(serde_json::to_vec(body).map_err(|e| {
                ProviderError::InvalidResponse(format!("cannot encode request: {e}"))
            })?);
        let result =
            retry::with_retries(&self.policy, || self.attempt(body.clone(), streaming)).await;
        result.map_err(|e| self.scrub(e))
    }

    async fn attempt(
        &self,
        body: Bytes,
        streaming: bool,
    ) -> Result<reqwest::Response, AttemptError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        request = if streaming {
            request.header(ACCEPT, "text/event-stream")
        } else {
            request.timeout(self.timeout)
        };
        let response = request
            .send()
            .await
            .map_err(|e| AttemptError::from(self.map_send_error(e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry::retry_after(response.headers());
        let body = read_limited(response, MAX_ERROR_BODY_BYTES)
            .await
            .map(|(bytes, _)| bytes)
            .unwrap_or_default();
        Err(AttemptError {
            error: ProviderError::Status {
                status: status.as_u16(),
                message: self.clean_message(&error_message(&body, status)),
            },
            retry_after,
        })
    }

    /// Reads a whole 2xx body and parses it as `T`.
    pub async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, ProviderError> {
        let (body, complete) = read_limited(response, MAX_BODY_BYTES)
            .await
            .map_err(|e| self.scrub(self.map_body_error(e)))?;
        if !complete {
            return Err(ProviderError::InvalidResponse(format!(
                "response body larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        serde_json::from_slice(&body).map_err(|e| {
            self.scrub(ProviderError::InvalidResponse(format!(
                "cannot parse the response body: {e}"
            )))
        })
    }

    /// The response body as SSE events, and the function that turns them into stream events.
    pub fn stream_events<D: SseHandler>(
        &self,
        response: reqwest::Response,
        handler: D,
    ) -> CompletionStream {
        let timeout = self.timeout;
        let bytes = response.bytes_stream().map(move |r| {
            r.map_err(|e| {
                if e.is_timeout() {
                    ProviderError::Timeout(timeout)
                } else {
                    ProviderError::Connect(format!(
                        "upstream stream interrupted: {}",
                        error_chain(&e)
                    ))
                }
            })
        });
        let scrubber = Scrubber {
            api_key: self.api_key.clone(),
        };
        drive(sse_events(bytes), handler)
            .map(move |item| item.map_err(|e| scrubber.error(e)))
            .boxed()
    }

    fn map_send_error(&self, e: reqwest::Error) -> ProviderError {
        // A connect timeout is both; it is a connect problem (and worth a retry).
        if e.is_connect() {
            ProviderError::Connect(error_chain(&e))
        } else if e.is_timeout() {
            ProviderError::Timeout(self.timeout)
        } else {
            ProviderError::Connect(error_chain(&e))
        }
    }

    fn map_body_error(&self, e: reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            ProviderError::Timeout(self.timeout)
        } else {
            ProviderError::Connect(format!("reading the response failed: {}", error_chain(&e)))
        }
    }

    fn clean_message(&self, message: &str) -> String {
        let scrubbed = Scrubber {
            api_key: self.api_key.clone(),
        }
        .text(message);
        truncate_chars(&scrubbed, MAX_ERROR_MESSAGE_CHARS)
    }

    pub fn scrub(&self, e: ProviderError) -> ProviderError {
        Scrubber {
            api_key: self.api_key.clone(),
        }
        .error(e)
    }
}

/// Reads at most `limit` bytes of a body; the flag says whether the body ended within the limit.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > limit {
            out.extend_from_slice(&chunk[..limit - out.len()]);
            return Ok((out, false));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, true))
}

/// `error.message` of an OpenAI-style error body (with `code` when present), else the raw body text,
/// else the status reason.
fn error_message(body: &[u8], status: reqwest::StatusCode) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: ErrorDetail,
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        if let Some(message) = env.error.describe() {
            return message;
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no error message")
            .to_string()
    } else {
        text.to_string()
    }
}

/// The `error` object OpenAI puts in error bodies and error stream events.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorDetail {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub code: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl ErrorDetail {
    pub fn describe(&self) -> Option<String> {
        let code = match &self.code {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => self.kind.clone(),
        };
        match (&self.message, code) {
            (Some(m), Some(c)) => Some(format!("{m} ({c})")),
            (Some(m), None) => Some(m.clone()),
            (None, Some(c)) => Some(c),
            (None, None) => None,
        }
    }
}

/// Removes API keys from text that came from (or passed through) the upstream: the configured key
/// wherever it appears, and anything shaped like an OpenAI key (`sk-…`), since an upstream may echo
/// the key it was sent.
struct Scrubber {
    api_key: Option<SecretString>,
}

impl Scrubber {
    fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        if let Some(key) = &self.api_key {
            let key = key.expose_secret();
            if key.len() >= 4 {
                out = out.replace(key, "***");
            }
        }
        mask_sk_tokens(&out)
    }

    fn error(&self, e: ProviderError) -> ProviderError {
        match e {
            ProviderError::Status { status, message } => ProviderError::Status {
                status,
                message: self.text(&message),
            },
            ProviderError::Connect(m) => ProviderError::Connect(self.text(&m)),
            ProviderError::InvalidResponse(m) => ProviderError::InvalidResponse(self.text(&m)),
            ProviderError::Timeout(d) => ProviderError::Timeout(d),
        }
    }
}

/// Replaces `sk-…` tokens (6+ key characters after the prefix) by `sk-***`.
fn mask_sk_tokens(text: &str) -> String {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("sk-") {
        let at_word_start = rest[..pos]
            .chars()
            .next_back()
            .is_none_or(|c| !is_key_char(c));
        let after = &rest[pos + 3..];
        let key_len = after.find(|c: char| !is_key_char(c)).unwrap_or(after.len());
        out.push_str(&rest[..pos]);
        if at_word_start && key_len >= 6 {
            out.push_str("sk-***");
        } else {
            out.push_str(&rest[pos..pos + 3 + key_len]);
        }
        rest = &after[key_len..];
    }
    out.push_str(rest);
    out
}

/// `text` cut to `max` characters, marked with `…` when cut.
pub(super) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// A reqwest error with its causes (they hold the useful part, e.g. "Connection refused"); the URL
/// is left out because it is known and may carry credentials.
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    // reqwest puts the URL in its own message: "error sending request for url (http://…)".
    if let Some(start) = text.find(" for url (") {
        if let Some(len) = text[start..].find(')') {
            text.replace_range(start..start + len + 1, "");
        }
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Server-sent events.
// ---------------------------------------------------------------------------------------------

/// One server-sent event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental SSE parser: bytes in, complete events out, whatever the chunk boundaries (inside a
/// line, inside a UTF-8 character, between `\r` and `\n`).
#[derive(Debug, Default)]
pub(super) struct SseDecoder {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    /// The previous chunk ended with `\r`; a `\n` right after it is the same line ending.
    after_cr: bool,
}

impl SseDecoder {
    /// Splits on line endings with `memchr` and copies whole runs: a byte-at-a-time loop showed
    /// in profiles of saturated streaming (one token is one ~200-byte event).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        let mut events = Vec::new();
        if std::mem::take(&mut self.after_cr) {
            if let [b'\n', rest @ ..] = bytes {
                bytes = rest;
            }
        }
        while !bytes.is_empty() {
            let end = memchr::memchr2(b'\n', b'\r', bytes);
            let run = end.unwrap_or(bytes.len());
            if self.line.len() + run > MAX_SSE_EVENT_BYTES {
                return Err(ProviderError::InvalidResponse(
                    "stream line exceeds the size limit".into(),
                ));
            }
            let Some(i) = end else {
                self.line.extend_from_slice(bytes);
                break;
            };
            let event = if self.line.is_empty() {
                self.end_line(&bytes[..i])?
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&bytes[..i]);
                let event = self.end_line(&line);
                line.clear();
                self.line = line;
                event?
            };
            events.extend(event);
            let cr = bytes[i] == b'\r';
            bytes = &bytes[i + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        Ok(events)
    }

    /// End of input: a last event without the closing blank line still counts.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            if let Some(ev) = self.end_line(&line)? {
                return Ok(Some(ev));
            }
        }
        Ok(self.dispatch())
    }

    fn end_line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, ProviderError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| ProviderError::InvalidResponse("stream is not valid UTF-8".into()))?;
        if line.starts_with(':') {
            return Ok(None); // comment / keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                let data = self.data.get_or_insert_with(String::new);
                if data.len() + value.len() > MAX_SSE_EVENT_BYTES {
                    return Err(ProviderError::InvalidResponse(
                        "stream event exceeds the size limit".into(),
                    ));
                }
                // Every data line ends with a newline; dispatch drops the last one (as the spec does).
                data.push_str(value);
                data.push('\n');
            }
            "event" => self.event = Some(value.to_string()),
            _ => {} // id, retry and unknown fields do not matter here
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        self.data.take().map(|mut data| {
            data.pop();
            SseEvent { event, data }
        })
    }
}

/// Byte chunks → SSE events.
pub(super) fn sse_events<S>(bytes: S) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + 'static,
{
    async_stream::stream! {
        let mut bytes = std::pin::pin!(bytes);
        let mut decoder = SseDecoder::default();
        while let Some(chunk) = bytes.next().await {
            match chunk.and_then(|c| decoder.feed(&c)) {
                Ok(events) => {
                    for ev in events {
                        yield Ok(ev);
                    }
                }
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
        match decoder.finish() {
            Ok(Some(ev)) => yield Ok(ev),
            Ok(None) => {}
            Err(e) => yield Err(e),
        }
    }
}

/// Turns one API's SSE events into stream events.
pub(super) trait SseHandler: Send + 'static {
    /// Events to emit for `ev`; a `Done` among them ends the stream.
    fn on_event(&mut self, ev: SseEvent) -> Result<Vec<StreamEvent>, ProviderError>;
    /// The upstream closed the stream before a `Done`.
    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError>;
}

/// Runs `handler` over `events` until `Done`, an error, or the end of the stream (after which
/// nothing more is read).
pub(super) fn drive<S, H>(
    events: S,
    mut handler: H,
) -> impl Stream<Item = Result<StreamEvent, ProviderError>> + Send
where
    S: Stream<Item = Result<SseEvent, ProviderError>> + Send + 'static,
    H: SseHandler,
{
    async_stream::stream! {
        let mut events = std::pin::pin!(events);
        while let Some(ev) = events.next().await {
            match ev.and_then(|ev| handler.on_event(ev)) {
                Ok(out) => {
                    for item in out {
                        let done = matches!(item, StreamEvent::Done { .. });
                        yield Ok(item);
                        if done {
                            return;
                        }
                    }
                }
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
        yield handler.on_eof();
    }
}

// ---------------------------------------------------------------------------------------------
// Chat Completions.
// ---------------------------------------------------------------------------------------------

/// Client for `POST {base_url}/chat/completions`.
pub struct OpenAiChat {
    http: HttpUpstream,
}

impl OpenAiChat {
    pub fn new(cfg: &ProviderConfig) -> Result<Self, ProviderError> {
        Ok(OpenAiChat {
            http: HttpUpstream::new(cfg, "/chat/completions")?,
        })
    }
}

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

#[derive(Debug, Deserialize)]
struct ChatCompletionBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChatChoice>,
    #[serde(default)]
    usage: Option<ChatUsage>,
}

#[derive(Debug, Deserialize)]
struct ChatChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    message: Option<ChatChoiceMessage>,
    #[serde(default)]
    delta: Option<ChatChoiceMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatChoiceMessage {
    /// A string from OpenAI; some compatible servers send an array of text parts.
    #[serde(default)]
    content: Option<serde_json::Value>,
    #[serde(default)]
    refusal: Option<String>,
}

impl ChatChoiceMessage {
    fn text(&self) -> String {
        let content = match &self.content {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                .collect(),
            _ => String::new(),
        };
        if content.is_empty() {
            self.refusal.clone().unwrap_or_default()
        } else {
            content
        }
    }
}

#[derive(Debug, Deserialize)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl ChatUsage {
    fn to_usage(&self) -> Option<Usage> {
        if self.prompt_tokens.is_none() && self.completion_tokens.is_none() {
            return None;
        }
        Some(Usage {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            cached_input_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            output_tokens: self.completion_tokens.unwrap_or(0),
        })
    }
}

/// A parsed non-streaming answer (model name missing → the requested one).
fn completion_from_body(
    body: ChatCompletionBody,
    requested_model: &str,
) -> Result<Completion, ProviderError> {
    let choice = body
        .choices
        .iter()
        .find(|c| c.index == 0)
        .or_else(|| body.choices.first())
        .ok_or_else(|| ProviderError::InvalidResponse("the response has no choices".into()))?;
    let text = choice
        .message
        .as_ref()
        .or(choice.delta.as_ref())
        .map(ChatChoiceMessage::text)
        .unwrap_or_default();
    Ok(Completion {
        text,
        finish_reason: choice
            .finish_reason
            .clone()
            .unwrap_or_else(|| "stop".into()),
        usage: body.usage.as_ref().and_then(ChatUsage::to_usage),
        upstream_model: body.model.unwrap_or_else(|| requested_model.to_string()),
        retries: 0,
    })
}

/// Chat Completions chunks → stream events. `Done` comes with `[DONE]`, after the usage chunk.
#[derive(Debug, Default)]
struct ChatStreamHandler {
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl ChatStreamHandler {
    fn done(&mut self) -> StreamEvent {
        StreamEvent::Done {
            finish_reason: self.finish_reason.take().unwrap_or_else(|| "stop".into()),
            usage: self.usage.take(),
        }
    }
}

impl SseHandler for ChatStreamHandler {
    fn on_event(&mut self, ev: SseEvent) -> Result<Vec<StreamEvent>, ProviderError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        if data == "[DONE]" {
            return Ok(vec![self.done()]);
        }
        #[derive(Deserialize)]
        struct Chunk {
            #[serde(default)]
            choices: Vec<ChatChoice>,
            #[serde(default)]
            usage: Option<ChatUsage>,
            #[serde(default)]
            error: Option<ErrorDetail>,
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            ProviderError::InvalidResponse(format!("cannot parse a stream chunk: {e}"))
        })?;
        if let Some(err) = chunk.error {
            return Err(ProviderError::InvalidResponse(format!(
                "upstream reported an error mid-stream: {}",
                truncate_chars(&err.describe().unwrap_or_default(), MAX_ERROR_MESSAGE_CHARS)
            )));
        }
        let mut out = Vec::new();
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(delta) = &choice.delta {
                let text = delta.text();
                if !text.is_empty() {
                    out.push(StreamEvent::Delta(text));
                }
            }
            if let Some(reason) = &choice.finish_reason {
                self.finish_reason = Some(reason.clone());
            }
        }
        if let Some(usage) = chunk.usage.as_ref().and_then(ChatUsage::to_usage) {
            self.usage = Some(usage);
        }
        Ok(out)
    }

    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError> {
        // Some compatible servers never send [DONE]; a finish_reason is enough to call it complete.
        if self.finish_reason.is_some() {
            Ok(self.done())
        } else {
            Err(ProviderError::InvalidResponse(
                "the stream ended before the final chunk".into(),
            ))
        }
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiChat {
    fn kind(&self) -> &'static str {
        "openai_chat"
    }

    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        let (response, retries) = self
            .http
            .post_json(&ChatBody::new(req, false), false)
            .await?;
        let body: ChatCompletionBody = self.http.read_json(response).await?;
        let mut completion =
            completion_from_body(body, &req.model).map_err(|e| self.http.scrub(e))?;
        completion.retries = retries;
        Ok(completion)
    }

    async fn stream(&self, req: &CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let (response, _retries) = self.http.post_json(&ChatBody::new(req, true), true).await?;
        Ok(self
            .http
            .stream_events(response, ChatStreamHandler::default()))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::mock_upstream::{self, MockUpstreamConfig};

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
                    role: "system".into(),
                    content: "You are terse.".into(),
                },
                ChatMessage {
                    role: "user".into(),
                    content: prompt.into(),
                },
            ],
            ..CompletionRequest::default()
        }
    }

    /// Collects a stream: text, the final event, and whether an error ended it.
    pub async fn collect(
        mut s: CompletionStream,
    ) -> (
        String,
        Option<(String, Option<Usage>)>,
        Option<ProviderError>,
    ) {
        let mut text = String::new();
        let mut done = None;
        let mut error = None;
        while let Some(item) = s.next().await {
            match item {
                Ok(StreamEvent::Delta(d)) => text.push_str(&d),
                Ok(StreamEvent::Done {
                    finish_reason,
                    usage,
                }) => done = Some((finish_reason, usage)),
                Err(e) => error = Some(e),
            }
        }
        (text, done, error)
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
        assert_eq!(c.retries, 0);
        let usage = c.usage.unwrap();
        assert_eq!(usage.output_tokens, crate::tokens::count_tokens(&c.text));
        assert_eq!(
            usage.input_tokens,
            crate::tokens::count_message_tokens(&request("What is 2+2?").messages)
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
    async fn streams_text_finish_reason_and_usage() {
        let addr = upstream().await;
        let p = chat(addr);
        let full = p.complete(&request("Stream this")).await.unwrap();
        let (text, done, err) = collect(p.stream(&request("Stream this")).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, full.text);
        let (finish, usage) = done.unwrap();
        assert_eq!(finish, "stop");
        assert_eq!(usage, full.usage);
    }

    #[tokio::test]
    async fn fail_first_two_succeeds_with_two_retries() {
        let addr = upstream().await;
        let c = chat(addr)
            .complete(&request("flaky [mock:fail_first=2]"))
            .await
            .unwrap();
        assert_eq!(c.retries, 2);
        // Streams retry their initial request the same way.
        let (text, done, err) = collect(
            chat(addr)
                .stream(&request("flaky stream [mock:fail_first=2]"))
                .await
                .unwrap(),
        )
        .await;
        assert!(err.is_none() && done.is_some() && !text.is_empty());
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
    async fn rate_limits_and_server_errors_are_retried_then_reported() {
        let addr = upstream().await;
        for status in [429u16, 500] {
            let before = requests_seen(addr).await;
            let prompt = format!("always failing [mock:status={status}]");
            let err = chat(addr).complete(&request(&prompt)).await.unwrap_err();
            match &err {
                ProviderError::Status { status: s, message } => {
                    assert_eq!(*s, status);
                    assert!(message.contains("requested by the prompt"), "{message}");
                }
                other => panic!("expected Status, got {other:?}"),
            }
            // 1 attempt + max_retries (2) retries.
            assert_eq!(requests_seen(addr).await - before, 3, "status {status}");
        }
        // fail_first=3 outlasts the 3 attempts; the next call is the 4th attempt and succeeds.
        let err = chat(addr)
            .complete(&request("three failures [mock:fail_first=3]"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Status { status: 503, .. }),
            "{err:?}"
        );
        let c = chat(addr)
            .complete(&request("three failures [mock:fail_first=3]"))
            .await
            .unwrap();
        assert_eq!(c.retries, 0);
    }

    #[tokio::test]
    async fn bad_request_is_not_retried() {
        let addr = upstream().await;
        let err = chat(addr)
            .complete(&request("bad [mock:status=400]"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Status { status: 400, .. }),
            "{err:?}"
        );
        assert_eq!(requests_seen(addr).await, 1);
    }

    #[tokio::test]
    async fn closed_port_is_a_connect_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut cfg = config(addr);
        cfg.max_retries = 1;
        let err = OpenAiChat::new(&cfg)
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
            Ok(s) => collect(s).await.2.unwrap(),
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
        let (_, done, _) =
            collect(p.stream(&request("cut me [mock:truncate]")).await.unwrap()).await;
        assert_eq!(done.unwrap().0, "length");
    }

    #[tokio::test]
    async fn broken_stream_yields_an_error_item() {
        let addr = upstream().await;
        let s = chat(addr)
            .stream(&request("break [mock:stream_error]"))
            .await
            .unwrap();
        let (text, done, err) = collect(s).await;
        assert!(!text.is_empty());
        assert!(done.is_none());
        assert!(err.is_some());
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
        let body: ChatCompletionBody = serde_json::from_str(CHAT_FIXTURE).unwrap();
        let c = completion_from_body(body, "gpt-4o").unwrap();
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
        let empty: ChatCompletionBody = serde_json::from_str(r#"{"choices": []}"#).unwrap();
        assert!(matches!(
            completion_from_body(empty, "m"),
            Err(ProviderError::InvalidResponse(_))
        ));
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
        for end in bounds {
            if end < start {
                continue;
            }
            for ev in decoder.feed(&bytes[start..end]).unwrap() {
                match handler.on_event(ev) {
                    Ok(items) => {
                        let done = items.iter().any(|i| matches!(i, StreamEvent::Done { .. }));
                        out.extend(items.into_iter().map(Ok));
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
            if let Ok(items) = handler.on_event(ev) {
                out.extend(items.into_iter().map(Ok));
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
                Ok(StreamEvent::Delta(d)) => text.push_str(d),
                Ok(StreamEvent::Done {
                    finish_reason,
                    usage,
                }) => done = Some((finish_reason.clone(), *usage)),
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
            let items = decode_split(CHAT_SSE_FIXTURE, &[cut], ChatStreamHandler::default());
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
            let items = decode_split(CHAT_SSE_FIXTURE, &cuts, ChatStreamHandler::default());
            assert_eq!(summarize(&items), expected, "cuts {cuts:?}");
        }
        // Byte by byte.
        let all: Vec<usize> = (1..len).collect();
        let items = decode_split(CHAT_SSE_FIXTURE, &all, ChatStreamHandler::default());
        assert_eq!(summarize(&items), expected);
    }

    #[test]
    fn stream_without_final_chunk_is_an_error_and_mid_stream_errors_surface() {
        let items = decode_split(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            &[],
            ChatStreamHandler::default(),
        );
        assert!(matches!(
            items.last(),
            Some(Err(ProviderError::InvalidResponse(_)))
        ));
        let items = decode_split(
            "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n",
            &[],
            ChatStreamHandler::default(),
        );
        assert!(
            matches!(items.last(), Some(Err(ProviderError::InvalidResponse(m))) if m.contains("server had an error"))
        );
        // No [DONE] but a finish_reason and no trailing blank line: still complete.
        let items = decode_split(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}",
            &[],
            ChatStreamHandler::default(),
        );
        assert_eq!(
            summarize(&items),
            ("Hi".into(), Some(("stop".into(), None)))
        );
    }

    #[test]
    fn sse_decoder_follows_the_spec_details() {
        let mut d = SseDecoder::default();
        let evs = d
            .feed(b"event: ping\ndata: a\ndata: b\nid: 1\n\ndata:no-space\r\rdata\n\n")
            .unwrap();
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: Some("ping".into()),
                    data: "a\nb".into()
                },
                SseEvent {
                    event: None,
                    data: "no-space".into()
                },
                SseEvent {
                    event: None,
                    data: "".into()
                },
            ]
        );
        assert!(d.feed(&[0xff, b'\n']).is_err());
    }

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
        let msg = error_message(
            format!("{{\"error\":{{\"message\":\"{long}\",\"code\":\"c\"}}}}").as_bytes(),
            reqwest::StatusCode::BAD_REQUEST,
        );
        assert!(msg.ends_with("(c)"));
        assert_eq!(
            truncate_chars(&msg, MAX_ERROR_MESSAGE_CHARS)
                .chars()
                .count(),
            501
        );
        assert_eq!(
            error_message(b"", reqwest::StatusCode::BAD_GATEWAY),
            "Bad Gateway"
        );
        assert_eq!(
            error_message(b"upstream down", reqwest::StatusCode::BAD_GATEWAY),
            "upstream down"
        );
    }
}
