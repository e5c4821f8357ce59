//! The gateway core: one function per use case (complete a chat, stream a chat), shared by
//! `/chat` and `/v1/chat/completions`. Knows nothing about axum; handlers only parse and shape.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use uuid::Uuid;

use crate::auth::Caller;
use crate::config::{Config, ContentLogging, Pricing};
use crate::eval::heuristics::{AnswerContext, Heuristics};
use crate::eval::queue::JudgeQueue;
use crate::metrics::Metrics;
use crate::provider::{
    self, ChatMessage, Completion, CompletionRequest, Provider, ProviderError, StreamEvent, Usage,
};
use crate::redact::redact;
use crate::store::writer::WriterHandle;
use crate::store::LogRecord;
use crate::tokens;

/// Which public route a call came through; the `endpoint` label and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    ChatCompletions,
}

impl Endpoint {
    pub const ALL: [&'static str; 2] = ["chat", "chat_completions"];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::ChatCompletions => "chat_completions",
        }
    }
}

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
    pub request_id: Uuid,
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
}

#[derive(Debug, Clone)]
pub struct ChatOutput {
    pub request_id: Uuid,
    pub model_version: String,
    pub text: String,
    pub finish_reason: String,
    pub usage: Usage,
    pub latency_ms: f64,
    /// Time the gateway added on top of the upstream call.
    pub overhead_ms: f64,
    pub cost_usd: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("model version {0:?} is not configured")]
    UnknownModel(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("provider {name}: {source}")]
    Provider { name: String, source: ProviderError },
}

pub struct Gateway {
    models: BTreeMap<String, Arc<ModelRoute>>,
    default_model: String,
    metrics: Arc<Metrics>,
    writer: WriterHandle,
    content: ContentLogging,
    request_timeout: Duration,
    heuristics: Heuristics,
    /// Sampled records go to the LLM judge through here; None when the judge is off.
    judge_queue: Option<JudgeQueue>,
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
        for (name, m) in &cfg.models {
            // Validation guarantees the provider exists; skip defensively rather than panic.
            let Some(client) = providers.get(m.provider.as_str()) else {
                continue;
            };
            metrics.init_model_version(name, &Endpoint::ALL);
            models.insert(
                name.clone(),
                Arc::new(ModelRoute {
                    name: name.clone(),
                    provider_name: m.provider.clone(),
                    provider: client.clone(),
                    upstream_model: m.upstream_model.clone().unwrap_or_else(|| name.clone()),
                    pricing: m.pricing.clone(),
                }),
            );
        }
        Ok(Gateway {
            models,
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

    pub fn resolve(&self, model_version: Option<&str>) -> Result<Arc<ModelRoute>, CoreError> {
        let name = model_version.unwrap_or(&self.default_model);
        self.models
            .get(name)
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

    /// Runs an upstream call under the request's deadline (counted from its arrival).
    async fn within_deadline<T>(
        &self,
        input: &ChatInput,
        call: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        tokio::time::timeout_at(self.deadline(input), call)
            .await
            .unwrap_or(Err(ProviderError::Timeout(self.request_timeout)))
    }

    /// Non-streaming call: forward, meter, queue the record, answer.
    pub async fn complete_chat(&self, mut input: ChatInput) -> Result<ChatOutput, CoreError> {
        let (route, _in_flight) = self.begin(&mut input)?;
        let upstream_start = Instant::now();
        let result = self
            .within_deadline(&input, route.provider.complete(&input.request))
            .await;
        let upstream = upstream_start.elapsed();

        match result {
            Ok(c) => {
                let out = self.finish_ok(&route, &input, c, upstream, None, false);
                Ok(out)
            }
            Err(e) => {
                self.finish_err(&route, &input, &e, String::new(), None, false);
                Err(CoreError::Provider(e))
            }
        }
    }

    /// Streaming call. Errors before the first byte come back here so the handler can answer
    /// with a proper status; the returned stream records the call when it ends — normally, on an
    /// upstream error, or when the client goes away and the stream is dropped.
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
        let started = self
            .within_deadline(&input, route.provider.stream(&input.request))
            .await;
        let upstream_stream = match started {
            Ok(s) => s,
            Err(e) => {
                self.finish_err(&route, &input, &e, String::new(), None, true);
                return Err(CoreError::Provider(e));
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
        let deadline = self.deadline(&rec.input);
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
                    Some(Ok(StreamEvent::Delta(d))) => {
                        if d.is_empty() { continue; }
                        if rec.ttft.is_none() {
                            rec.ttft = Some(rec.input.started.elapsed());
                        }
                        rec.text.push_str(&d);
                        yield GatewayStreamItem::Delta(d);
                    }
                    Some(Ok(StreamEvent::Done { finish_reason, usage })) => {
                        let out = rec.finish_ok(finish_reason, usage);
                        yield GatewayStreamItem::Done(out);
                        break;
                    }
                    Some(Err(e)) => {
                        rec.finish_err(&e);
                        yield GatewayStreamItem::Error(e);
                        break;
                    }
                    None => {
                        // The upstream closed without a final event: keep what arrived.
                        let out = rec.finish_ok("stop".into(), None);
                        yield GatewayStreamItem::Done(out);
                        break;
                    }
                }
            }
        };
        Ok((model_version, out.boxed()))
    }

    /// The whole request's deadline: `server.request_timeout_secs` after it arrived, so time
    /// spent reading the body counts too.
    fn deadline(&self, input: &ChatInput) -> tokio::time::Instant {
        tokio::time::Instant::from_std(input.started) + self.request_timeout
    }

    /// The key's name for the record, and its tokens charged to its rate limit.
    fn account(&self, input: &ChatInput, usage: &Usage) -> Option<String> {
        let caller = input.caller.as_ref()?;
        caller.charge_tokens(usage.input_tokens + usage.output_tokens);
        caller.key_name().map(str::to_string)
    }

    fn usage_or_counted(&self, input: &ChatInput, text: &str, usage: Option<Usage>) -> Usage {
        usage.unwrap_or_else(|| Usage {
            input_tokens: tokens::count_message_tokens(&input.request.messages),
            cached_input_tokens: 0,
            output_tokens: tokens::count_tokens(text),
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
        let usage = self.usage_or_counted(input, &c.text, c.usage);
        let cost_usd = route.cost_usd(&usage);
        // Before the clock stops, so the checks' cost shows in the gateway overhead.
        let checked = self.heuristics.enabled().then(|| {
            let outcome = self.heuristics.evaluate(
                &c.text,
                AnswerContext {
                    finish_reason: &c.finish_reason,
                    json_requested: input.request.json_mode,
                },
            );
            outcome.observe(&self.metrics, &route.name);
            outcome
        });
        let total = input.started.elapsed();
        let overhead = total.saturating_sub(upstream);
        let endpoint = input.endpoint.as_str();
        let mv = route.name.as_str();
        let m = &self.metrics;
        m.request_duration
            .with_label_values(&[mv, endpoint, "ok"])
            .observe(total.as_secs_f64());
        m.gateway_overhead
            .with_label_values(&[mv, endpoint])
            .observe(overhead.as_secs_f64());
        if let Some(t) = ttft {
            m.time_to_first_token
                .with_label_values(&[mv, endpoint])
                .observe(t.as_secs_f64());
            m.observe_time_per_output_token(mv, total, t, usage.output_tokens);
        }
        m.requests.with_label_values(&[mv, endpoint, "ok"]).inc();
        if c.retries > 0 {
            m.upstream_retries
                .with_label_values(&[mv])
                .inc_by(u64::from(c.retries));
        }
        self.observe_usage(mv, &usage, cost_usd);
        let latency_ms = total.as_secs_f64() * 1000.0;
        let record = LogRecord {
            request_id: input.request_id,
            created_at: Utc::now(),
            endpoint: endpoint.to_string(),
            user_id: input.user_id.clone(),
            prompt: self.stored_prompt(&input.request.messages),
            response: self.stored_text(&c.text),
            model_version: route.name.clone(),
            provider: route.provider.kind().to_string(),
            upstream_model: if c.upstream_model.is_empty() {
                route.upstream_model.clone()
            } else {
                c.upstream_model.clone()
            },
            latency_ms,
            ttft_ms: ttft.map(|t| t.as_secs_f64() * 1000.0),
            input_tokens: usage.input_tokens as i64,
            cached_input_tokens: usage.cached_input_tokens as i64,
            output_tokens: usage.output_tokens as i64,
            cost_usd,
            status: "ok".into(),
            http_status: 200,
            error_type: None,
            error_message: None,
            finish_reason: Some(c.finish_reason.clone()),
            streamed,
            tags: input.tags.clone(),
            metadata: input.metadata.clone(),
            heuristic_label: checked.as_ref().map(|o| o.label.as_str().to_string()),
            heuristic_results: checked
                .as_ref()
                .map_or_else(|| serde_json::Value::Array(vec![]), |o| o.results_json()),
            api_key_name: self.account(input, &usage),
        };
        self.submit(record);
        if let Some(q) = &self.judge_queue {
            q.offer(input.request_id, &route.name);
        }
        ChatOutput {
            request_id: input.request_id,
            model_version: route.name.clone(),
            text: c.text,
            finish_reason: c.finish_reason,
            usage,
            latency_ms,
            overhead_ms: overhead.as_secs_f64() * 1000.0,
            cost_usd,
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
        let m = &self.metrics;
        m.request_duration
            .with_label_values(&[mv, endpoint, "error"])
            .observe(total.as_secs_f64());
        m.requests.with_label_values(&[mv, endpoint, "error"]).inc();
        m.errors
            .with_label_values(&[mv, endpoint, e.error_type()])
            .inc();
        // Input tokens were spent even when the answer failed mid-stream; count what we know.
        let usage = if partial_text.is_empty() {
            Usage::default()
        } else {
            self.usage_or_counted(input, &partial_text, None)
        };
        let cost_usd = route.cost_usd(&usage);
        if !partial_text.is_empty() {
            self.observe_usage(mv, &usage, cost_usd);
        }
        tracing::warn!(request_id = %input.request_id, model_version = mv, error_type = e.error_type(), error = %e, "upstream call failed");
        let record = LogRecord {
            request_id: input.request_id,
            created_at: Utc::now(),
            endpoint: endpoint.to_string(),
            user_id: input.user_id.clone(),
            prompt: self.stored_prompt(&input.request.messages),
            response: if partial_text.is_empty() {
                None
            } else {
                self.stored_text(&partial_text)
            },
            model_version: route.name.clone(),
            provider: route.provider.kind().to_string(),
            upstream_model: route.upstream_model.clone(),
            latency_ms: total.as_secs_f64() * 1000.0,
            ttft_ms: ttft.map(|t| t.as_secs_f64() * 1000.0),
            input_tokens: usage.input_tokens as i64,
            cached_input_tokens: 0,
            output_tokens: usage.output_tokens as i64,
            cost_usd,
            status: "error".into(),
            http_status: i32::from(http_status_for(e)),
            error_type: Some(e.error_type().into()),
            error_message: Some(self.stored_error(&truncate(&e.to_string(), 1000))),
            finish_reason: None,
            streamed,
            tags: input.tags.clone(),
            metadata: input.metadata.clone(),
            heuristic_label: None,
            heuristic_results: serde_json::Value::Array(vec![]),
            api_key_name: self.account(input, &usage),
        };
        self.submit(record);
    }

    fn observe_usage(&self, mv: &str, usage: &Usage, cost_usd: f64) {
        let m = &self.metrics;
        m.tokens_per_request
            .with_label_values(&[mv, "input"])
            .observe(usage.input_tokens as f64);
        m.tokens_per_request
            .with_label_values(&[mv, "output"])
            .observe(usage.output_tokens as f64);
        m.tokens
            .with_label_values(&[mv, "input"])
            .inc_by(usage.input_tokens);
        m.tokens
            .with_label_values(&[mv, "cached_input"])
            .inc_by(usage.cached_input_tokens);
        m.tokens
            .with_label_values(&[mv, "output"])
            .inc_by(usage.output_tokens);
        m.cost_per_request
            .with_label_values(&[mv])
            .observe(cost_usd);
        m.cost.with_label_values(&[mv]).inc_by(cost_usd);
    }

    fn submit(&self, record: LogRecord) {
        // The writer counts and logs a record it cannot queue; the answer goes out regardless.
        let _ = self.writer.submit(record);
    }

    /// The prompt as stored: a single message's text, or the conversation as a JSON array.
    /// With `logging.content: redacted` each message is masked before the array is built, so
    /// the stored JSON stays valid.
    fn stored_prompt(&self, messages: &[ChatMessage]) -> String {
        match (self.content, messages) {
            (ContentLogging::None, _) => String::new(),
            (ContentLogging::Full, [only]) => only.content.clone(),
            (ContentLogging::Redacted, [only]) => redact(&only.content).into_owned(),
            (ContentLogging::Full, many) => serde_json::to_string(many).unwrap_or_default(),
            (ContentLogging::Redacted, many) => {
                let masked: Vec<ChatMessage> = many
                    .iter()
                    .map(|m| ChatMessage {
                        role: m.role.clone(),
                        content: redact(&m.content).into_owned(),
                    })
                    .collect();
                serde_json::to_string(&masked).unwrap_or_default()
            }
        }
    }

    fn stored_text(&self, text: &str) -> Option<String> {
        match self.content {
            ContentLogging::None => None,
            ContentLogging::Full => Some(text.to_string()),
            ContentLogging::Redacted => Some(redact(text).into_owned()),
        }
    }

    /// Upstream error messages can quote the prompt; they are masked like it.
    fn stored_error(&self, message: &str) -> String {
        match self.content {
            ContentLogging::Redacted => redact(message).into_owned(),
            _ => message.to_string(),
        }
    }
}

/// What a gateway stream yields to the handler.
#[derive(Debug)]
pub enum GatewayStreamItem {
    Delta(String),
    Done(ChatOutput),
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
    fn finish_ok(&mut self, finish_reason: String, usage: Option<Usage>) -> ChatOutput {
        self.done = true;
        let c = Completion {
            text: std::mem::take(&mut self.text),
            finish_reason,
            usage,
            upstream_model: String::new(),
            retries: 0,
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
            let e = ProviderError::InvalidResponse("client disconnected before the end".into());
            self.finish_err(&e);
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

/// The status the client sees for an upstream failure.
pub fn http_status_for(e: &ProviderError) -> u16 {
    match e {
        ProviderError::Timeout(_) => 504,
        _ => 502,
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_uses_cached_and_uncached_prices() {
        let route = ModelRoute {
            name: "m".into(),
            provider_name: "mock".into(),
            provider: Arc::new(crate::provider::mock::MockProvider::new(0)),
            upstream_model: "m".into(),
            pricing: Pricing {
                input_per_1m: 1.0,
                cached_input_per_1m: 0.1,
                output_per_1m: 10.0,
            },
        };
        let u = Usage {
            input_tokens: 1_000_000,
            cached_input_tokens: 500_000,
            output_tokens: 100_000,
        };
        let cost = route.cost_usd(&u);
        assert!((cost - (0.5 + 0.05 + 1.0)).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("ok", 5), "ok");
    }
}
