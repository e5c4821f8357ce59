//! The HTTP side of the OpenAI providers: one pooled client per upstream (the direct client
//! keeps one pool per connection thread, `DirectClient`), one attempt per call
//! (retries are `retry::with_retries`' job), upstream error bodies turned into error objects with
//! secrets scrubbed. Streams are decoded by `sse.rs`.
//!
//! Two clients: hyper-util's, for upstreams no proxy from the environment applies to (http, and
//! https through rustls with the webpki roots, ALPN h2 or http/1.1, as reqwest has them) —
//! reqwest's layers (a redirect policy that formats and parses every request's URL, boxing, its
//! timeout wrapper) were ~20 % of the gateway's CPU per call (bench/README.md) — and reqwest for
//! proxies (it honours `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`). `http_client:
//! reqwest` forces reqwest. `ca_file` adds trusted roots to either.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyDataStream, BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::config::{HttpClient, ProviderConfig};
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

const USER_AGENT_VALUE: &str = concat!("lqo/", env!("CARGO_PKG_VERSION"));

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An upstream's answer, whichever client fetched it, and the deadline of its call: a
/// non-streamed call's body must have arrived by then.
pub struct UpstreamResponse {
    inner: hyper::Response<Body>,
    deadline: Instant,
}

/// A URL of the upstream, parsed once for each client.
#[derive(Debug, Clone)]
pub struct Endpoint {
    url: reqwest::Url,
    uri: hyper::Uri,
}

type DirectConnector = HttpsConnector<HttpConnector>;

enum Transport {
    Direct(Box<DirectClient>),
    Reqwest(reqwest::Client),
}

/// hyper-util's pooled client, plus one more per thread that runs a single-threaded runtime
/// (the connection threads of `server.connection_threads`): a call made there uses upstream
/// connections whose tasks run on the same thread, so it never wakes another. Calls from the
/// shared multi-threaded runtime share one pool, as before.
struct DirectClient {
    shared: Client<DirectConnector, Full<Bytes>>,
    builder: hyper_util::client::legacy::Builder,
    connector: DirectConnector,
    per_thread: thread_local::ThreadLocal<Client<DirectConnector, Full<Bytes>>>,
}

impl DirectClient {
    fn new(builder: hyper_util::client::legacy::Builder, connector: DirectConnector) -> Self {
        DirectClient {
            shared: builder.build(connector.clone()),
            builder,
            connector,
            per_thread: thread_local::ThreadLocal::new(),
        }
    }

    fn client(&self) -> &Client<DirectConnector, Full<Bytes>> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::CurrentThread => self
                .per_thread
                .get_or(|| self.builder.build(self.connector.clone())),
            _ => &self.shared,
        }
    }
}

/// One upstream server: a pooled client, the auth header, timeouts and the retry policy.
pub struct HttpUpstream {
    client: Transport,
    base_url: String,
    /// The headers of every call but `accept`: content type, user agent and, when there is a key,
    /// `Bearer <key>` (marked sensitive so it never shows in debug output). Built once:
    /// `Request::builder().header(…)` parsed and inserted them one by one per call.
    headers: hyper::HeaderMap,
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
        let connect_timeout = Duration::from_secs(cfg.connect_timeout_secs.max(1));
        // No client-wide read timeout: reqwest's starts and drops a timer for every chunk (~7 %
        // of the CPU of saturated streaming). A call has one deadline for its head and, when not
        // streamed, its body; a stream an idle limit between chunks (`IdleTimeout`).
        let ca = match &cfg.ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        let client = if cfg.http_client == HttpClient::Auto
            && direct_eligible(&base_url, |k| std::env::var(k).ok())
        {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(connect_timeout));
            connector.set_keepalive(Some(Duration::from_secs(30)));
            connector.set_nodelay(true);
            connector.enforce_http(false); // https URLs reach the TLS layer around it
            let connector = HttpsConnectorBuilder::new()
                .with_tls_config(tls_config(&ca)?)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(connector);
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_timer(TokioTimer::new());
            Transport::Direct(Box::new(DirectClient::new(builder, connector)))
        } else {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_keepalive(Duration::from_secs(30));
            for cert in &ca {
                let cert = reqwest::Certificate::from_der(cert)
                    .map_err(|e| ca_error(cfg.ca_file.as_deref(), &e))?;
                builder = builder.add_root_certificate(cert);
            }
            Transport::Reqwest(builder.build().map_err(|e| {
                ProviderError::Connect(format!("cannot build the HTTP client: {e}"))
            })?)
        };
        let api_key = cfg
            .api_key
            .clone()
            .filter(|k| !k.expose_secret().is_empty());
        let mut headers = hyper::HeaderMap::with_capacity(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if let Some(key) = &api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                .map_err(|_| {
                    ProviderError::Connect(
                        "the API key contains characters not allowed in an HTTP header".into(),
                    )
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(HttpUpstream {
            client,
            base_url,
            headers,
            api_key,
            timeout,
            policy: RetryPolicy::from_config(cfg),
        })
    }

    /// `{base_url}{path}` (`path` like `/chat/completions`), parsed once: parsing it per call
    /// (IDNA included) was ~3 % of the gateway's CPU at saturation.
    pub fn endpoint(&self, path: &str) -> Result<Endpoint, ProviderError> {
        let text = format!("{}{path}", self.base_url);
        let invalid =
            || ProviderError::Connect(format!("base_url {:?} is not a valid URL", self.base_url));
        Ok(Endpoint {
            url: reqwest::Url::parse(&text).map_err(|_| invalid())?,
            uri: text.parse().map_err(|_| invalid())?,
        })
    }

    /// Whether calls go through the direct (hyper-util) client.
    pub fn is_direct(&self) -> bool {
        matches!(self.client, Transport::Direct(_))
    }

    /// One POST of a JSON body; a non-2xx answer becomes `ProviderError::Status` with the
    /// upstream's error object and Retry-After.
    pub async fn post(
        &self,
        url: &Endpoint,
        body: Bytes,
        streaming: bool,
    ) -> Result<UpstreamResponse, ProviderError> {
        let deadline = Instant::now() + self.timeout;
        let accept = if streaming {
            "text/event-stream"
        } else {
            "*/*"
        };
        let response = match &self.client {
            Transport::Direct(client) => {
                let mut request = hyper::Request::new(Full::new(body));
                *request.method_mut() = hyper::Method::POST;
                *request.uri_mut() = url.uri.clone();
                let headers = request.headers_mut();
                *headers = self.headers.clone();
                headers.insert(ACCEPT, HeaderValue::from_static(accept));
                tokio::time::timeout_at(deadline, client.client().request(request))
                    .await
                    .map_err(|_| ProviderError::Timeout(self.timeout))?
                    .map_err(|e| self.scrub(ProviderError::Connect(error_chain(&e))))?
                    .map(|b| b.map_err(BoxError::from).boxed_unsync())
            }
            Transport::Reqwest(client) => {
                let request = client
                    .post(url.url.clone())
                    .headers(self.headers.clone())
                    .header(ACCEPT, accept)
                    .body(body);
                let response = tokio::time::timeout_at(deadline, request.send())
                    .await
                    .map_err(|_| ProviderError::Timeout(self.timeout))?
                    .map_err(|e| self.scrub(ProviderError::Connect(error_chain(&e))))?;
                hyper::Response::<reqwest::Body>::from(response)
                    .map(|b| b.map_err(BoxError::from).boxed_unsync())
            }
        };
        let response = UpstreamResponse {
            inner: response,
            deadline,
        };
        let status = response.inner.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry::retry_after(response.inner.headers());
        // The error body gets what is left of the call's time (a stream's error body the whole
        // limit again, as its head's wait is over).
        let until = if streaming {
            Instant::now() + self.timeout
        } else {
            deadline
        };
        let body = tokio::time::timeout_at(
            until,
            read_limited(response.inner.into_body(), MAX_ERROR_BODY_BYTES),
        )
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
    pub async fn read_body(&self, response: UpstreamResponse) -> Result<Bytes, ProviderError> {
        let read = read_limited(response.inner.into_body(), MAX_BODY_BYTES);
        let (body, complete) = tokio::time::timeout_at(response.deadline, read)
            .await
            .map_err(|_| ProviderError::Timeout(self.timeout))?
            .map_err(|e| self.scrub(self.map_body_error(&*e)))?;
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
        response: UpstreamResponse,
        handler: D,
    ) -> CompletionStream {
        let bytes = BodyDataStream::new(response.inner.into_body())
            .map(|r| r.map_err(|e| ProviderError::StreamInterrupted(error_chain(&*e))));
        let bytes = IdleTimeout::new(bytes, self.timeout);
        let scrubber = self.scrubber();
        drive(bytes, handler)
            .map(move |item| item.map_err(|e| scrubber.error(e)))
            .boxed()
    }

    fn map_body_error(&self, e: &(dyn std::error::Error + 'static)) -> ProviderError {
        ProviderError::StreamInterrupted(format!("reading the response failed: {}", error_chain(e)))
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

/// Whether an upstream can go through the direct client: http or https, and none of the proxy
/// variables reqwest would honour for its scheme set (`HTTP_PROXY` or `HTTPS_PROXY`, and
/// `ALL_PROXY`, either case; with one set, reqwest decides, `NO_PROXY` included).
fn direct_eligible(base_url: &str, env: impl Fn(&str) -> Option<String>) -> bool {
    let starts = |prefix: &str| {
        base_url
            .get(..prefix.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(prefix))
    };
    let proxies: [&str; 4] = if starts("http://") {
        ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    } else if starts("https://") {
        ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        return false;
    };
    proxies
        .iter()
        .all(|k| env(k).is_none_or(|v| v.trim().is_empty()))
}

/// rustls as reqwest's `rustls-tls` sets it up: the ring provider, TLS 1.2 and 1.3, the webpki
/// roots (plus `ca_file`'s), ALPN h2 and http/1.1 (set by the connector builder).
fn tls_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, ProviderError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_roots {
        roots.add(cert.clone()).map_err(|e| ca_error(None, &e))?;
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| ProviderError::Connect(format!("cannot set up TLS: {e}")))
}

/// The certificates of `ca_file`, parsed once for either client (and for config validation);
/// a file that cannot be read, holds broken PEM or no certificate at all is an error.
pub(super) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ProviderError> {
    let pem = std::fs::read(path).map_err(|e| ca_error(Some(path), &e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_error(Some(path), &e))?;
    if certs.is_empty() {
        return Err(ca_error(Some(path), &"no PEM certificate in it"));
    }
    Ok(certs)
}

fn ca_error(path: Option<&Path>, e: &dyn std::fmt::Display) -> ProviderError {
    let path = path.map_or(String::new(), |p| format!(" {}", p.display()));
    ProviderError::Connect(format!("cannot read the CA file{path}: {e}"))
}

/// Reads at most `limit` bytes of a body; the flag says whether the body ended within the limit.
async fn read_limited(mut body: Body, limit: usize) -> Result<(Vec<u8>, bool), BoxError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame?.into_data() else {
            continue; // trailers
        };
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

/// An HTTP client's error with its causes (they hold the useful part, e.g. "Connection refused");
/// the URL reqwest puts in its message is left out because it is known and may carry credentials.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
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
