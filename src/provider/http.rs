//! The HTTP side of the OpenAI providers: one pooled client per upstream, one attempt per call
//! (retries are `retry::with_retries`' job), upstream error bodies turned into error objects with
//! secrets scrubbed, and incremental server-sent-event decoding.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};

use super::retry::{self, RetryPolicy};
use super::wire::parse_error_body;
use super::{CompletionStream, ProviderError, StreamEvent};
use crate::config::ProviderConfig;

/// Upstream error messages are cut to this many characters before they reach logs and records.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 500;
/// An error body larger than this is not read further; the message is in the first bytes anyway.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// A completion body larger than this is refused rather than buffered.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// One SSE line (or event) larger than this means a broken upstream, not a long answer.
const MAX_SSE_EVENT_BYTES: usize = 16 * 1024 * 1024;

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
        request = if streaming {
            request.header(ACCEPT, "text/event-stream")
        } else {
            request.timeout(self.timeout)
        };
        let response = request
            .send()
            .await
            .map_err(|e| self.scrub(self.map_send_error(e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry::retry_after(response.headers());
        let body = read_limited(response, MAX_ERROR_BODY_BYTES)
            .await
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
        let scrubber = self.scrubber();
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

// ---------------------------------------------------------------------------------------------
// Server-sent events.
// ---------------------------------------------------------------------------------------------

/// One server-sent event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental SSE parser: bytes in, complete events out, whatever the chunk boundaries (inside a
/// line, inside a UTF-8 character, between `\r` and `\n`).
#[derive(Debug, Default)]
pub struct SseDecoder {
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
pub fn sse_events<S>(bytes: S) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send
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
pub trait SseHandler: Send + 'static {
    /// Pushes the events `ev` makes to `out`; a `Done` among them ends the stream.
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError>;
    /// The upstream closed the stream before a `Done`.
    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError>;
}

/// Runs `handler` over `events` until `Done`, an error, or the end of the stream (after which
/// nothing more is read).
pub fn drive<S, H>(
    events: S,
    mut handler: H,
) -> impl Stream<Item = Result<StreamEvent, ProviderError>> + Send
where
    S: Stream<Item = Result<SseEvent, ProviderError>> + Send + 'static,
    H: SseHandler,
{
    async_stream::stream! {
        let mut events = std::pin::pin!(events);
        let mut out = Vec::with_capacity(4);
        while let Some(ev) = events.next().await {
            match ev.and_then(|ev| handler.on_event(ev, &mut out)) {
                Ok(()) => {
                    for item in out.drain(..) {
                        let done = matches!(item, StreamEvent::Done(_));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
