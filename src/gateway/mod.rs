//! The gateway core: one function per use case (complete a chat, stream a chat, embed), shared by
//! `/chat`, `/v1/chat/completions`, `/v1/responses` and `/v1/embeddings`. Knows nothing about
//! axum; handlers only parse and shape. Every call that reaches a model is metered and recorded
//! exactly once, retries included. `record.rs`: the metrics and the record a call leaves behind.

mod record;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::auth::Caller;
use crate::config::{Config, ContentLogging, Pricing};
use crate::eval::heuristics::{AnswerContext, Heuristics};
use crate::eval::queue::JudgeQueue;
use crate::metrics::Metrics;
use crate::provider::tokens;
use crate::provider::{
    self, retry, Api, ClientRequest, Completion, CompletionRequest, Embeddings, EmbeddingsRequest,
    Provider, ProviderError, StreamEnd, StreamEvent, ToolCall, Usage,
};
use crate::store::writer::WriterHandle;
use record::RecordMeta;

/// Which public route a call came through; the `endpoint` label and column.
pub use crate::store::record::Endpoint;

/// A configured model version, resolved to its client and prices.
pub struct ModelRoute {
    pub name: String,
    pub provider_name: String,
    pub provider: Arc<dyn Provider>,
    pub upstream_model: String,
    pub pricing: Pricing,
}

impl ModelRoute {
    /// USD for the given usage at this model's prices per 1M tokens.
    pub fn cost_usd(&self, u: &Usage) -> f64 {
        let cached = u.cached_input_tokens.min(u.input_tokens);
        let uncached = u.input_tokens - cached;
        (uncached as f64 * self.pricing.input_per_1m
            + cached as f64 * self.pricing.cached_input_per_1m
            + u.output_tokens as f64 * self.pricing.output_per_1m)
            / 1_000_000.0
    }
}

/// Everything a handler parsed out of a request, in the core's terms.
#[derive(Debug, Clone)]
pub struct ChatInput {
    /// The gateway's id of the call: the record's key, what judge sampling hashes.
    pub request_id: Uuid,
    /// The client's own `x-request-id`, stored beside it.
    pub client_request_id: Option<String>,
    pub endpoint: Endpoint,
    /// None → the default model version.
    pub model_version: Option<String>,
    pub request: CompletionRequest,
    pub user_id: Option<String>,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    /// When the request arrived, so latency includes parsing; `server.request_timeout_secs`
    /// counts from here too.
    pub started: Instant,
    /// The API key that called (its name goes on the record; its token budget is charged).
    pub caller: Option<Caller>,
    /// The schema of a `json_schema` answer, as the client sent it, for the heuristics.
    pub json_schema: Option<Box<RawValue>>,
}

/// An embeddings call, as the handler parsed it.
#[derive(Debug, Clone)]
pub struct EmbeddingsInput {
    pub request_id: Uuid,
    pub client_request_id: Option<String>,
    pub model_version: Option<String>,
    pub request: EmbeddingsRequest,
    pub user_id: Option<String>,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    pub started: Instant,
    pub caller: Option<Caller>,
}

#[derive(Debug, Clone)]
pub struct ChatOutput {
    pub request_id: Uuid,
    pub model_version: String,
    pub text: String,
    pub finish_reason: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub latency_ms: f64,
    /// Time the gateway added on top of the upstream call.
    pub overhead_ms: f64,
    pub cost_usd: f64,
    /// The answer in the client's API, as the provider gave it (None for `/chat`).
    pub body: Option<Bytes>,
}

#[derive(Debug, Clone)]
pub struct EmbeddingsOutput {
    pub model_version: String,
    pub body: Bytes,
    pub overhead_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("model version {0:?} is not configured")]
    UnknownModel(String),
    /// The upstream call failed (after `retries` retries by the gateway).
    #[error("{error}")]
    Upstream {
        error: ProviderError,
        provider: String,
        retries: u32,
    },
    /// The request asks for something the model version's provider cannot express.
    #[error("{message}")]
    Unsupported { param: String, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("provider {name}: {source}")]
    Provider { name: String, source: ProviderError },
}

pub struct Gateway {
    models: BTreeMap<String, Arc<ModelRoute>>,
    /// Other names clients may use for a model version (`models.<name>.aliases`).
    aliases: BTreeMap<String, Arc<ModelRoute>>,
    default_model: String,
    metrics: Arc<Metrics>,
    writer: WriterHandle,
    content: ContentLogging,
    request_timeout: Duration,
    heuristics: Heuristics,
    /// Sampled records go to the LLM judge through here; None when the judge is off.
    judge_queue: Option<JudgeQueue>,
}

/// What a failed or finished call leaves for its record, besides the answer.
struct Attempted {
    retries: u32,
}

impl Gateway {
    pub fn new(
        cfg: &Config,
        metrics: Arc<Metrics>,
        writer: WriterHandle,
    ) -> Result<Gateway, BuildError> {
        let mut providers: BTreeMap<&str, Arc<dyn Provider>> = BTreeMap::new();
        for (name, p) in &cfg.providers {
            let client = provider::build(p).map_err(|source| BuildError::Provider {
                name: name.clone(),
                source,
            })?;
            providers.insert(name.as_str(), client);
        }
        let mut models = BTreeMap::new();
        let mut aliases = BTreeMap::new();
        for (name, m) in &cfg.models {
            // Validation guarantees the provider exists; skip defensively rather than panic.
            let Some(client) = providers.get(m.provider.as_str()) else {
                continue;
            };
            metrics.init_model_version(name, Endpoint::NAMES);
            let route = Arc::new(ModelRoute {
                name: name.clone(),
                provider_name: m.provider.clone(),
                provider: client.clone(),
                upstream_model: m.upstream_model.clone().unwrap_or_else(|| name.clone()),
                pricing: m.pricing.clone(),
            });
            for alias in &m.aliases {
                aliases.insert(alias.clone(), route.clone());
            }
            models.insert(name.clone(), route);
        }
        Ok(Gateway {
            models,
            aliases,
            default_model: cfg.default_model.clone(),
            metrics,
            writer,
            content: cfg.logging.content,
            request_timeout: cfg.request_timeout(),
            heuristics: Heuristics::new(&cfg.heuristics),
            judge_queue: None,
        })
    }

    /// Sends sampled successful records to the LLM judge (set once at start-up).
    pub fn set_judge_queue(&mut self, queue: JudgeQueue) {
        self.judge_queue = Some(queue);
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelRoute> {
        self.models.values().map(|m| m.as_ref())
    }

    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// The model version a client's name stands for: a version's own name or one of its aliases.
    pub fn resolve(&self, model_version: Option<&str>) -> Result<Arc<ModelRoute>, CoreError> {
        let name = model_version.unwrap_or(&self.default_model);
        self.models
            .get(name)
            .or_else(|| self.aliases.get(name))
            .cloned()
            .ok_or_else(|| CoreError::UnknownModel(name.to_string()))
    }

    /// Resolves the model version and counts the call in flight until the guard drops.
    fn begin(&self, input: &mut ChatInput) -> Result<(Arc<ModelRoute>, InFlight), CoreError> {
        let route = self.resolve(input.model_version.as_deref())?;
        input.request.model = route.upstream_model.clone();
        let in_flight = InFlight::new(&self.metrics, input.endpoint.as_str());
        Ok((route, in_flight))
    }

    /// Runs a provider call, with the provider's retries, under the request's deadline (counted
    /// from its arrival). Returns the outcome and the retries made, also for calls that failed.
    async fn call<T, F, Fut>(
        &self,
        route: &ModelRoute,
        started: Instant,
        attempt: F,
    ) -> (Result<T, ProviderError>, Attempted)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let deadline = self.deadline(started);
        let retries = AtomicU32::new(0);
        let policy = route.provider.retry_policy();
        let result = tokio::time::timeout_at(
            deadline,
            retry::with_retries(&policy, Some(deadline), &retries, attempt),
        )
        .await
        .unwrap_or(Err(ProviderError::Timeout(self.request_timeout)));
        let retries = retries.into_inner();
        if retries > 0 {
            self.metrics
                .upstream_retries
                .with_label_values(&[&route.name])
                .inc_by(u64::from(retries));
        }
        (result, Attempted { retries })
    }

    fn upstream_error(
        route: &ModelRoute,
        error: ProviderError,
        attempted: &Attempted,
    ) -> CoreError {
        match error {
            ProviderError::Unsupported { param, message } => {
                CoreError::Unsupported { param, message }
            }
            error => CoreError::Upstream {
                error,
                provider: route.provider_name.clone(),
                retries: attempted.retries,
            },
        }
    }

    /// Non-streaming call: forward, meter, queue the record, answer.
    pub async fn complete_chat(&self, mut input: ChatInput) -> Result<ChatOutput, CoreError> {
        let (route, _in_flight) = self.begin(&mut input)?;
        let upstream_start = Instant::now();
        let (result, attempted) = self
            .call(&route, input.started, || {
                route.provider.complete(&input.request)
            })
            .await;
        let upstream = upstream_start.elapsed();
        match result {
            Ok(c) => Ok(self.finish_ok(&route, &input, c, upstream, None, false)),
            Err(e @ ProviderError::Unsupported { .. }) => {
                Err(Self::upstream_error(&route, e, &attempted))
            }
            Err(e) => {
                self.finish_err(&route, &input, &e, String::new(), None, false);
                Err(Self::upstream_error(&route, e, &attempted))
            }
        }
    }

    /// Streaming call. Errors before the first byte come back here so the handler can answer
    /// with a proper status; the returned stream yields the client's frames and records the call
    /// when it ends — normally, on an upstream error, or when the client goes away and the stream
    /// is dropped.
    pub async fn stream_chat(
        self: &Arc<Self>,
        mut input: ChatInput,
    ) -> Result<
        (
            String,
            futures::stream::BoxStream<'static, GatewayStreamItem>,
        ),
        CoreError,
    > {
        let (route, in_flight) = self.begin(&mut input)?;
        let upstream_start = Instant::now();
        let (started, attempted) = self
            .call(&route, input.started, || {
                route.provider.stream(&input.request)
            })
            .await;
        let upstream_stream = match started {
            Ok(s) => s,
            Err(e @ ProviderError::Unsupported { .. }) => {
                return Err(Self::upstream_error(&route, e, &attempted))
            }
            Err(e) => {
                self.finish_err(&route, &input, &e, String::new(), None, true);
                return Err(Self::upstream_error(&route, e, &attempted));
            }
        };
        let model_version = route.name.clone();
        let mut rec = StreamRecorder {
            gateway: self.clone(),
            route,
            input,
            text: String::new(),
            ttft: None,
            upstream_start,
            done: false,
            _in_flight: in_flight,
        };
        let deadline = self.deadline(rec.input.started);
        let out = async_stream::stream! {
            let mut upstream_stream = upstream_stream;
            // One timer for the whole stream: a `timeout_at` per chunk would insert and remove a
            // timer entry for every token.
            let deadline = tokio::time::sleep_until(deadline);
            tokio::pin!(deadline);
            loop {
                let next = tokio::select! {
                    biased;
                    n = upstream_stream.next() => n,
                    _ = &mut deadline => Some(Err(ProviderError::Timeout(rec.gateway.request_timeout))),
                };
                match next {
                    Some(Ok(StreamEvent::Chunk { frame, text, content })) => {
                        if content && rec.ttft.is_none() {
                            rec.ttft = Some(rec.input.started.elapsed());
                        }
                        rec.text.push_str(&text);
                        if !frame.is_empty() {
                            yield GatewayStreamItem::Frame(frame);
                        }
                    }
                    Some(Ok(StreamEvent::Done(end))) => {
                        // Recorded before the last frame goes out: a client that hangs up on
                        // `[DONE]` still gets a complete record.
                        let trailer = end.trailer.clone();
                        rec.finish_ok(end);
                        if !trailer.is_empty() {
                            yield GatewayStreamItem::Frame(trailer);
                        }
                        break;
                    }
                    Some(Err(e)) => {
                        rec.finish_err(&e);
                        yield GatewayStreamItem::Error(e);
                        break;
                    }
                    None => {
                        let e = ProviderError::StreamInterrupted("the stream ended without a final event".into());
                        rec.finish_err(&e);
                        yield GatewayStreamItem::Error(e);
                        break;
                    }
                }
            }
        };
        Ok((model_version, out.boxed()))
    }

    /// `POST /v1/embeddings`: forward, meter tokens and cost, record (no heuristics, no judge).
    pub async fn embed(&self, mut input: EmbeddingsInput) -> Result<EmbeddingsOutput, CoreError> {
        let route = self.resolve(input.model_version.as_deref())?;
        input.request.model = route.upstream_model.clone();
        let endpoint = Endpoint::Embeddings;
        let _in_flight = InFlight::new(&self.metrics, endpoint.as_str());
        let upstream_start = Instant::now();
        let (result, attempted) = self
            .call(&route, input.started, || {
                route.provider.embed(&input.request)
            })
            .await;
        let upstream = upstream_start.elapsed();
        let total = input.started.elapsed();
        let mv = route.name.as_str();
        let prompt = self.stored_inputs(&input.request.inputs);
        let params = self.stored_params(&input.request.body, &["input"]);
        let meta = RecordMeta {
            request_id: input.request_id,
            client_request_id: &input.client_request_id,
            endpoint,
            user_id: &input.user_id,
            tags: &input.tags,
            metadata: &input.metadata,
            caller: &input.caller,
            prompt,
            params,
            streamed: false,
        };
        match result {
            Ok(e) => {
                let Embeddings {
                    body,
                    usage,
                    upstream_model,
                    ..
                } = e;
                let usage = usage.unwrap_or_else(|| Usage {
                    input_tokens: input
                        .request
                        .inputs
                        .iter()
                        .map(|t| tokens::count_tokens(t))
                        .sum(),
                    cached_input_tokens: 0,
                    output_tokens: 0,
                });
                let cost_usd = route.cost_usd(&usage);
                let overhead = total.saturating_sub(upstream);
                self.observe_ok(mv, endpoint.as_str(), total, overhead, None, 0);
                self.observe_tokens(mv, &usage, cost_usd, false);
                let mut record = self.base_record(&route, meta, total, &usage, cost_usd);
                record.upstream_model = upstream_model;
                self.submit(record);
                Ok(EmbeddingsOutput {
                    model_version: route.name.clone(),
                    body,
                    overhead_ms: overhead.as_secs_f64() * 1000.0,
                })
            }
            Err(e @ ProviderError::Unsupported { .. }) => {
                Err(Self::upstream_error(&route, e, &attempted))
            }
            Err(e) => {
                self.observe_err(mv, endpoint.as_str(), total, &e);
                let usage = Usage::default();
                let mut record = self.base_record(&route, meta, total, &usage, 0.0);
                self.mark_failed(&mut record, &e);
                self.submit(record);
                Err(Self::upstream_error(&route, e, &attempted))
            }
        }
    }

    /// The whole request's deadline: `server.request_timeout_secs` after it arrived, so time
    /// spent reading the body counts too.
    fn deadline(&self, started: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(started) + self.request_timeout
    }

    fn usage_or_counted(
        &self,
        input: &ChatInput,
        text: &str,
        tool_calls: &[ToolCall],
        usage: Option<Usage>,
    ) -> Usage {
        usage.unwrap_or_else(|| Usage {
            input_tokens: tokens::count_message_tokens(&input.request.messages),
            cached_input_tokens: 0,
            output_tokens: tokens::count_tokens(text)
                + tool_calls
                    .iter()
                    .map(|t| tokens::count_tokens(&t.name) + tokens::count_tokens(&t.arguments))
                    .sum::<u64>(),
        })
    }

    fn finish_ok(
        &self,
        route: &ModelRoute,
        input: &ChatInput,
        c: Completion,
        upstream: Duration,
        ttft: Option<Duration>,
        streamed: bool,
    ) -> ChatOutput {
        let usage = self.usage_or_counted(input, &c.text, &c.tool_calls, c.usage);
        let cost_usd = route.cost_usd(&usage);
        // Before the clock stops, so the checks' cost shows in the gateway overhead.
        let checked = self.heuristics.enabled().then(|| {
            let outcome = self.heuristics.evaluate(
                &c.text,
                AnswerContext {
                    finish_reason: &c.finish_reason,
                    json_requested: input.request.json_mode,
                    tool_calls: &c.tool_calls,
                    json_schema: input.json_schema.as_deref(),
                },
            );
            outcome.observe(&self.metrics, &route.name);
            outcome
        });
        let total = input.started.elapsed();
        let overhead = total.saturating_sub(upstream);
        let endpoint = input.endpoint.as_str();
        let mv = route.name.as_str();
        self.observe_ok(mv, endpoint, total, overhead, ttft, usage.output_tokens);
        self.observe_tokens(mv, &usage, cost_usd, true);
        let latency_ms = total.as_secs_f64() * 1000.0;
        let mut record = self.base_record(
            route,
            self.chat_meta(input, streamed),
            total,
            &usage,
            cost_usd,
        );
        record.response = self.stored_text(&c.text);
        if !c.upstream_model.is_empty() {
            record.upstream_model = c.upstream_model.clone();
        }
        record.ttft_ms = ttft.map(|t| t.as_secs_f64() * 1000.0);
        record.finish_reason = Some(c.finish_reason.clone());
        record.tool_calls = self.stored_tool_calls(&c.tool_calls);
        record.heuristic_label = checked.as_ref().map(|o| o.label);
        record.heuristic_results = checked
            .as_ref()
            .map_or_else(|| serde_json::Value::Array(vec![]), |o| o.results_json());
        self.submit(record);
        // The judge scores text; an answer that only calls tools has none to score.
        let judgeable = !c.text.trim().is_empty() || c.tool_calls.is_empty();
        if let Some(q) = self.judge_queue.as_ref().filter(|_| judgeable) {
            q.offer(input.request_id, &route.name);
        }
        ChatOutput {
            request_id: input.request_id,
            model_version: route.name.clone(),
            text: c.text,
            finish_reason: c.finish_reason,
            tool_calls: c.tool_calls,
            usage,
            latency_ms,
            overhead_ms: overhead.as_secs_f64() * 1000.0,
            cost_usd,
            body: c.body,
        }
    }

    fn finish_err(
        &self,
        route: &ModelRoute,
        input: &ChatInput,
        e: &ProviderError,
        partial_text: String,
        ttft: Option<Duration>,
        streamed: bool,
    ) {
        let total = input.started.elapsed();
        let endpoint = input.endpoint.as_str();
        let mv = route.name.as_str();
        self.observe_err(mv, endpoint, total, e);
        // Input tokens were spent even when the answer failed mid-stream; count what we know.
        let usage = if partial_text.is_empty() {
            Usage::default()
        } else {
            self.usage_or_counted(input, &partial_text, &[], None)
        };
        let cost_usd = route.cost_usd(&usage);
        if !partial_text.is_empty() {
            self.observe_tokens(mv, &usage, cost_usd, true);
        }
        let mut record = self.base_record(
            route,
            self.chat_meta(input, streamed),
            total,
            &usage,
            cost_usd,
        );
        if !partial_text.is_empty() {
            record.response = self.stored_text(&partial_text);
        }
        record.ttft_ms = ttft.map(|t| t.as_secs_f64() * 1000.0);
        self.mark_failed(&mut record, e);
        self.submit(record);
    }
}

/// What a gateway stream yields to the handler.
#[derive(Debug)]
pub enum GatewayStreamItem {
    /// A whole server-sent event for the client, as the provider shaped it.
    Frame(Bytes),
    /// The stream failed after it started; the handler tells the client in its API's way.
    Error(ProviderError),
}

/// State of one streamed call; records it exactly once — at the end, or on drop if the client
/// disconnected first.
struct StreamRecorder {
    gateway: Arc<Gateway>,
    route: Arc<ModelRoute>,
    input: ChatInput,
    text: String,
    ttft: Option<Duration>,
    upstream_start: Instant,
    done: bool,
    _in_flight: InFlight,
}

impl StreamRecorder {
    fn finish_ok(&mut self, end: StreamEnd) -> ChatOutput {
        self.done = true;
        let c = Completion {
            text: std::mem::take(&mut self.text),
            finish_reason: end.finish_reason,
            usage: end.usage,
            upstream_model: end.upstream_model.unwrap_or_default(),
            tool_calls: end.tool_calls,
            body: None,
        };
        let upstream = self.upstream_start.elapsed();
        self.gateway.finish_ok(
            &self.route,
            &self.input,
            c,
            upstream,
            self.ttft.or(Some(self.input.started.elapsed())),
            true,
        )
    }

    fn finish_err(&mut self, e: &ProviderError) {
        self.done = true;
        let text = std::mem::take(&mut self.text);
        self.gateway
            .finish_err(&self.route, &self.input, e, text, self.ttft, true);
    }
}

impl Drop for StreamRecorder {
    fn drop(&mut self) {
        if !self.done {
            self.finish_err(&ProviderError::ClientDisconnected);
        }
    }
}

/// Keeps the in-flight gauge right on every exit path.
struct InFlight {
    gauge: prometheus::IntGauge,
}

impl InFlight {
    fn new(m: &Metrics, endpoint: &str) -> Self {
        let gauge = m.in_flight.with_label_values(&[endpoint]);
        gauge.inc();
        InFlight { gauge }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The status the client sees for an upstream failure: the upstream's own 4xx (its meaning is
/// the client's to act on), except 401/403 — the gateway's credentials, not the client's — which
/// like 5xx, connection and protocol failures are 502; timeouts are 504.
pub fn http_status_for(e: &ProviderError) -> u16 {
    match e {
        ProviderError::Timeout(_) => 504,
        ProviderError::Status { status, .. }
            if (400..500).contains(status) && !matches!(status, 401 | 403) =>
        {
            *status
        }
        ProviderError::Unsupported { .. } => 400,
        // nginx's "client closed request": nobody saw this status, the record keeps why.
        ProviderError::ClientDisconnected => 499,
        _ => 502,
    }
}

pub(super) fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A client's own request, wrapped for the provider.
pub fn client_request(
    api: Api,
    body: provider::wire::JsonBody,
    stream: bool,
    include_usage: bool,
) -> Option<Arc<ClientRequest>> {
    Some(Arc::new(ClientRequest {
        api,
        body,
        stream,
        include_usage,
    }))
}

#[cfg(test)]
mod tests;
