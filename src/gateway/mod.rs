//! The gateway core: one function per use case (complete a chat, stream a chat, embed), shared by
//! `/chat`, `/v1/chat/completions`, `/v1/responses` and `/v1/embeddings`. Knows nothing about
//! axum; handlers only parse and shape. Every call that reaches a model is metered and recorded
//! exactly once, retries included — also when its client hangs up (status `cancelled`).
//! `record.rs`: how a call is finished (its metrics and its record, CPU-heavy parts on the
//! blocking pool); `stream.rs`: streamed calls.

mod record;
mod stream;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::auth::Caller;
use crate::config::{Config, ContentLogging, Pricing};
use crate::eval::heuristics::Heuristics;
use crate::eval::queue::JudgeQueue;
use crate::metrics::Metrics;
use crate::provider::{
    self, retry, Api, ClientRequest, CompletionRequest, EmbeddingsRequest, Provider, ProviderError,
    ToolCall, Usage,
};
use crate::store::record::LogStatus;
use crate::store::writer::WriterHandle;
pub use stream::GatewayStreamItem;

/// Which public route a call came through; the `endpoint` label and column.
pub use crate::store::record::Endpoint;

/// A model version's per-call series, indexed by `Endpoint as usize` and
/// `HeuristicLabel as usize` (the order of their `NAMES`).
pub fn model_series(metrics: &Metrics, model_version: &str) -> crate::metrics::ModelSeries {
    crate::metrics::ModelSeries::new(
        metrics,
        model_version,
        Endpoint::NAMES,
        &crate::eval::heuristics::CHECKS,
        crate::store::record::HeuristicLabel::NAMES,
    )
}

/// A configured model version, resolved to its client and prices.
pub struct ModelRoute {
    pub name: String,
    pub provider_name: String,
    pub provider: Arc<dyn Provider>,
    pub upstream_model: String,
    pub pricing: Pricing,
    /// Its series for answered calls, resolved once (`metrics::ModelSeries`).
    pub series: crate::metrics::ModelSeries,
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
    /// `server.finish_abandoned_calls`: a call whose client hangs up runs on to its end, so its
    /// record has the usage and cost; else the upstream call is dropped with the client.
    finish_abandoned: bool,
    /// The runtime the gateway was built on (the process's shared one), for work that outlives
    /// a request: a connection thread (`server.connection_threads`) stops once its connections
    /// are done, and a record still being finished there would be lost with it.
    background: Option<tokio::runtime::Handle>,
}

/// What a failed or finished call leaves for its record, besides the answer.
struct Attempted {
    retries: u32,
}

impl Gateway {
    /// The runtime for work that outlives its request: the one the gateway was built on, else
    /// the current one; None outside any runtime.
    fn background_runtime(&self) -> Option<tokio::runtime::Handle> {
        self.background
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
    }

    /// Spawns `task` on [`Self::background_runtime`] (the current runtime when there is none).
    fn spawn_background<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.background_runtime() {
            Some(rt) => rt.spawn(task),
            None => tokio::spawn(task),
        }
    }

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
                series: model_series(&metrics, name),
            });
            for alias in &m.aliases {
                aliases.insert(alias.clone(), route.clone());
            }
            models.insert(name.clone(), route);
        }
        Ok(Gateway {
            background: tokio::runtime::Handle::try_current().ok(),
            models,
            aliases,
            default_model: cfg.default_model.clone(),
            metrics,
            writer,
            content: cfg.logging.content,
            request_timeout: cfg.request_timeout(),
            heuristics: Heuristics::new(&cfg.heuristics),
            judge_queue: None,
            finish_abandoned: cfg.server.finish_abandoned_calls,
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

    /// Non-streaming call: forward, meter, queue the record, answer. A client that hangs up
    /// leaves a `cancelled` record: at once (the upstream call is dropped with it), or with
    /// `server.finish_abandoned_calls` once the call has run to its end on its own task, with its
    /// usage and cost.
    pub async fn complete_chat(
        self: &Arc<Self>,
        input: ChatInput,
    ) -> Result<ChatOutput, CoreError> {
        if !self.finish_abandoned {
            return self.run_complete(input, None).await;
        }
        let gone = Arc::new(AtomicBool::new(false));
        let mark = SetOnDrop(Some(gone.clone()));
        let this = self.clone();
        let task = self.spawn_background(async move { this.run_complete(input, Some(gone)).await });
        let out = join(task).await;
        mark.disarm();
        out
    }

    async fn run_complete(
        self: &Arc<Self>,
        mut input: ChatInput,
        gone: Option<Arc<AtomicBool>>,
    ) -> Result<ChatOutput, CoreError> {
        let (route, _in_flight) = self.begin(&mut input)?;
        let input = Arc::new(input);
        // Dropped with the handler when the client hangs up first (unless the call runs on its
        // own task), it records the call as cancelled.
        let guard = gone
            .is_none()
            .then(|| Abandoned::new(self, &route, &input, false));
        let upstream_start = Instant::now();
        let (result, attempted) = self
            .call(&route, input.started, || {
                route.provider.complete(&input.request)
            })
            .await;
        disarm(guard);
        let upstream = upstream_start.elapsed();
        let client_gone = gone.is_some_and(|g| g.load(Ordering::Acquire));
        match result {
            Ok(c) => Ok(self
                .finish_ok(&route, &input, c, upstream, None, false, client_gone)
                .await),
            Err(e @ ProviderError::Unsupported { .. }) => {
                Err(Self::upstream_error(&route, e, &attempted))
            }
            Err(e) => {
                self.finish_err(&route, &input, &e, String::new(), None, false)
                    .await;
                Err(Self::upstream_error(&route, e, &attempted))
            }
        }
    }

    /// `POST /v1/embeddings`: forward, meter tokens and cost, record (no heuristics, no judge);
    /// a client that hangs up leaves a `cancelled` record, as a chat does.
    pub async fn embed(
        self: &Arc<Self>,
        mut input: EmbeddingsInput,
    ) -> Result<EmbeddingsOutput, CoreError> {
        let route = self.resolve(input.model_version.as_deref())?;
        input.request.model = route.upstream_model.clone();
        let _in_flight = InFlight::new(&self.metrics, Endpoint::Embeddings.as_str());
        let input = Arc::new(input);
        let guard = Some(Abandoned {
            gateway: self.clone(),
            route: route.clone(),
            call: AbandonedCall::Embeddings(input.clone()),
            armed: true,
        });
        let upstream_start = Instant::now();
        let (result, attempted) = self
            .call(&route, input.started, || {
                route.provider.embed(&input.request)
            })
            .await;
        disarm(guard);
        let upstream = upstream_start.elapsed();
        match result {
            Ok(e) => Ok(self.finish_embed_ok(&route, &input, e, upstream).await),
            Err(e @ ProviderError::Unsupported { .. }) => {
                Err(Self::upstream_error(&route, e, &attempted))
            }
            Err(e) => {
                self.finish_embed_err(&route, &input, &e).await;
                Err(Self::upstream_error(&route, e, &attempted))
            }
        }
    }

    /// The whole request's deadline: `server.request_timeout_secs` after it arrived, so time
    /// spent reading the body counts too.
    fn deadline(&self, started: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(started) + self.request_timeout
    }
}

/// Records a call as `cancelled` when dropped armed: the handler's future was dropped because
/// its client hung up before the call ended. Finishing the record runs on a task of its own
/// (the blocking pool for a large prompt), never in the dropping thread.
struct Abandoned {
    gateway: Arc<Gateway>,
    route: Arc<ModelRoute>,
    call: AbandonedCall,
    armed: bool,
}

enum AbandonedCall {
    Chat {
        input: Arc<ChatInput>,
        streamed: bool,
    },
    Embeddings(Arc<EmbeddingsInput>),
}

impl Abandoned {
    fn new(
        gateway: &Arc<Gateway>,
        route: &Arc<ModelRoute>,
        input: &Arc<ChatInput>,
        streamed: bool,
    ) -> Abandoned {
        Abandoned {
            gateway: gateway.clone(),
            route: route.clone(),
            call: AbandonedCall::Chat {
                input: input.clone(),
                streamed,
            },
            armed: true,
        }
    }
}

/// The call ended while its client was still there: nothing to record on drop.
fn disarm(guard: Option<Abandoned>) {
    if let Some(mut g) = guard {
        g.armed = false;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match &self.call {
            AbandonedCall::Chat { input, streamed } => self.gateway.record_abandoned(
                self.route.clone(),
                input.clone(),
                String::new(),
                None,
                *streamed,
            ),
            AbandonedCall::Embeddings(input) => self
                .gateway
                .record_abandoned_embedding(self.route.clone(), input.clone()),
        }
    }
}

/// Sets the flag when dropped before [`SetOnDrop::disarm`]: the handler's future is gone, so is
/// its client.
struct SetOnDrop(Option<Arc<AtomicBool>>);

impl SetOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Release);
        }
    }
}

/// The result of a call running on its own task; a panic in it resumes here.
async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    match task.await {
        Ok(t) => t,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: only when the runtime shuts down, which drops this future too.
            Err(_) => std::future::pending().await,
        },
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

/// How a failed call counts: `cancelled` when the client went away, `rejected` when the upstream
/// refused the client's request (its 4xx other than 401/403, the gateway's credentials, and 429,
/// the provider's capacity), else `error` — the gateway's or the provider's failure, the only
/// kind the error budget counts.
pub fn status_for(e: &ProviderError) -> LogStatus {
    match e {
        ProviderError::ClientDisconnected => LogStatus::Cancelled,
        ProviderError::Status { status, .. }
            if (400..500).contains(status) && !matches!(status, 401 | 403 | 429) =>
        {
            LogStatus::Rejected
        }
        _ => LogStatus::Error,
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
