//! The HTTP side of the OpenAI providers: one pooled client per upstream, one attempt per call
//! (retries are `retry::with_retries`' job), upstream error bodies turned into error objects with
//! secrets scrubbed. Streams are decoded by `sse.rs`.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};

use super::config::ProviderConfig;
use super::retry::{self, RetryPolicy};
use super::sse::{drive, SseHandler};
use super::wire::parse_error_body;
use super::{CompletionStream, ProviderError};

/// Upstream error messages are cut to this many characters before they reach logs and records.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 500;
/// An error body larger than this is not read further; the message is in the first bytes anyway.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// A completion body larger than this is refused rather than buffered.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// One upstream server: a pooled client, the auth header, timeouts and the retry policy.
pub struct HttpUpstream {
    client: reqwest::Client,
    base_url: String,
    /// `Bearer <key>`, marked sensitive so it never shows in debug output.
    auth: Option<HeaderValue>,
    /// Kept only to scrub the key from upstream error text that might echo it.
    api_key: Option<SecretString>,
    /// Whole-call limit for non-streaming calls; read (idle) limit for streams.
    timeout: Duration,
    pub policy: RetryPolicy,
}

impl HttpUpstream {
    pub fn new(cfg: &ProviderConfig) -> Result<Self, ProviderError> {
        let base_url = cfg.base_url.trim_end_matches('/').to_string();
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs.max(1)))
            // No client-wide read timeout: reqwest's starts and drops a timer for every chunk
            // (~7 % of the CPU of saturated streaming). Non-streaming requests get a total
            // timeout each; streams a limit on the wait for their head and an idle limit
            // between chunks (`IdleTimeout`).
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
            base_url,
            auth,
            api_key,
            timeout,
            policy: RetryPolicy::from_config(cfg),
        })
    }

    /// `{base_url}{path}` (`path` like `/chat/completions`), parsed once: parsing it per call
    /// (IDNA included) was ~3 % of the gateway's CPU at saturation.
    pub fn endpoint(&self, path: &str) -> Result<reqwest::Url, ProviderError> {
        reqwest::Url::parse(&format!("{}{path}", self.base_url)).map_err(|_| {
            ProviderError::Connect(format!("base_url {:?} is not a valid URL", self.base_url))
        })
    }

    /// One POST of a JSON body; a non-2xx answer becomes `ProviderError::Status` with the
    /// upstream's error object and Retry-After.
    pub async fn post(
        &self,
        url: &reqwest::Url,
        body: Bytes,
        streaming: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut request = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = if streaming {
            let send = request.header(ACCEPT, "text/event-stream").send();
            tokio::time::timeout(self.timeout, send)
                .await
                .map_err(|_| ProviderError::Timeout(self.timeout))?
        } else {
            request.timeout(self.timeout).send().await
        }
        .map_err(|e| self.scrub(self.map_send_error(e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry::retry_after(response.headers());
        // A non-streaming request's total timeout covers its body; a stream's error body gets
        // the same limit here.
        let body = tokio::time::timeout(self.timeout, read_limited(response, MAX_ERROR_BODY_BYTES))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|(bytes, _)| bytes)
            .unwrap_or_default();
        let (message, error) = parse_error_body(
            &body,
            status.canonical_reason().unwrap_or("no error message"),
        );
        let scrubber = self.scrubber();
        Err(ProviderError::Status {
            status: status.as_u16(),
            message: truncate_chars(&scrubber.text(&message), MAX_ERROR_MESSAGE_CHARS),
            error: error.map(|mut e| {
                e.param = e.param.map(|p| scrubber.text(&p));
                e.code = e.code.map(|c| scrubber.text(&c));
                Box::new(e)
            }),
            retry_after,
        })
    }

    /// Reads a whole 2xx body.
    pub async fn read_body(&self, response: reqwest::Response) -> Result<Bytes, ProviderError> {
        let (body, complete) = read_limited(response, MAX_BODY_BYTES)
            .await
            .map_err(|e| self.scrub(self.map_body_error(e)))?;
        if !complete {
            return Err(ProviderError::InvalidResponse(format!(
                "response body larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        Ok(Bytes::from(body))
    }

    /// The response body as SSE events, turned into stream events by `handler`.
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
                    ProviderError::StreamInterrupted(error_chain(&e))
                }
            })
        });
        let bytes = IdleTimeout::new(bytes, timeout);
        let scrubber = self.scrubber();
        drive(bytes, handler)
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
            ProviderError::StreamInterrupted(format!(
                "reading the response failed: {}",
                error_chain(&e)
            ))
        }
    }

    fn scrubber(&self) -> Scrubber {
        Scrubber {
            api_key: self.api_key.clone(),
        }
    }

    pub fn scrub(&self, e: ProviderError) -> ProviderError {
        self.scrubber().error(e)
    }
}

/// Ends a stream with `ProviderError::Timeout` when no chunk arrives for `limit`. One timer for
/// the whole stream, moved on only when it fires early (the last chunk came after it was set) and
/// polled only while the stream has nothing ready: no timer work per chunk.
struct IdleTimeout<S> {
    inner: S,
    limit: Duration,
    last_chunk: tokio::time::Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, limit: Duration) -> Self {
        let now = tokio::time::Instant::now();
        IdleTimeout {
            inner,
            limit,
            last_chunk: now,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
            done: false,
        }
    }
}

impl<S> futures::Stream for IdleTimeout<S>
where
    S: futures::Stream<Item = Result<Bytes, ProviderError>> + Unpin,
{
    type Item = Result<Bytes, ProviderError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = this.inner.poll_next_unpin(cx) {
            this.last_chunk = tokio::time::Instant::now();
            return Poll::Ready(item);
        }
        loop {
            std::task::ready!(std::future::Future::poll(this.timer.as_mut(), cx));
            let due = this.last_chunk + this.limit;
            if due <= tokio::time::Instant::now() {
                this.done = true;
                return Poll::Ready(Some(Err(ProviderError::Timeout(this.limit))));
            }
            this.timer.as_mut().reset(due);
        }
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
            ProviderError::Status {
                status,
                message,
                error,
                retry_after,
            } => ProviderError::Status {
                status,
                message: self.text(&message),
                error,
                retry_after,
            },
            ProviderError::Connect(m) => ProviderError::Connect(self.text(&m)),
            ProviderError::InvalidResponse(m) => ProviderError::InvalidResponse(self.text(&m)),
            ProviderError::StreamInterrupted(m) => ProviderError::StreamInterrupted(self.text(&m)),
            other => other,
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
pub fn truncate_chars(text: &str, max: usize) -> String {
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

#[cfg(test)]
mod tests;
