//! Every Prometheus metric the gateway exposes, defined in this one module.
//! Rules, dashboards and docs/METRICS.md are checked against `CATALOG` and the live `/metrics`.

use std::sync::OnceLock;

mod series;
pub use series::{EndpointSeries, ModelSeries};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Name, type, labels and help of one metric, for docs and contract checks.
#[derive(Debug, Clone, Copy)]
pub struct MetricDesc {
    pub name: &'static str,
    pub kind: &'static str,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

macro_rules! catalog {
    ($($ident:ident = ($name:literal, $kind:literal, [$($label:literal),*], $help:literal);)*) => {
        $(pub const $ident: MetricDesc = MetricDesc { name: $name, kind: $kind, labels: &[$($label),*], help: $help };)*
        /// Every metric, in the order docs/METRICS.md lists them.
        pub const CATALOG: &[MetricDesc] = &[$($ident),*];
    };
}

catalog! {
    REQUEST_DURATION = ("lqo_request_duration_seconds", "histogram", ["model_version", "endpoint", "status"],
        "End-to-end duration of a model call through the gateway, in seconds (OTel gen_ai.client.operation.duration).");
    TIME_TO_FIRST_TOKEN = ("lqo_time_to_first_token_seconds", "histogram", ["model_version", "endpoint"],
        "Time from request start to the first content token of a streamed answer, in seconds (OTel gen_ai.server.time_to_first_token).");
    TIME_PER_OUTPUT_TOKEN = ("lqo_time_per_output_token_seconds", "histogram", ["model_version"],
        "Time per output token after the first one of a successful streamed answer, in seconds: (duration - time to first token) / (output tokens - 1) (OTel gen_ai.server.time_per_output_token).");
    TOKENS_PER_REQUEST = ("lqo_tokens_per_request", "histogram", ["model_version", "token_type"],
        "Tokens used by one request, by token_type input|output (OTel gen_ai.client.token.usage).");
    COST_PER_REQUEST = ("lqo_cost_per_request_usd", "histogram", ["model_version"],
        "Cost of one request in US dollars, from the configured prices.");
    GATEWAY_OVERHEAD = ("lqo_gateway_overhead_seconds", "histogram", ["model_version", "endpoint"],
        "Time the gateway itself added to a request (total minus upstream time), in seconds.");
    REQUESTS = ("lqo_requests_total", "counter", ["model_version", "endpoint", "status"],
        "Model calls handled, by status: ok (answered), error (the gateway or the provider failed: the error budget), rejected (the upstream refused the client's request, its 4xx passed on) or cancelled (the client went away first).");
    ERRORS = ("lqo_errors_total", "counter", ["model_version", "endpoint", "error_type"],
        "Model calls that ended without an answer, by error_type: timeout, upstream_status (5xx), upstream_rate_limited (429), upstream_auth (401/403: the gateway's credentials), connect, invalid_response, stream_interrupted (broke mid-answer) — status error; upstream_rejected (another 4xx, passed to the client) — status rejected; client_disconnected — status cancelled.");
    TOKENS = ("lqo_tokens_total", "counter", ["model_version", "token_type"],
        "Tokens used, by token_type input|cached_input|output.");
    COST = ("lqo_cost_usd_total", "counter", ["model_version"],
        "Total cost in US dollars.");
    UPSTREAM_RETRIES = ("lqo_upstream_retries_total", "counter", ["model_version"],
        "Upstream attempts repeated by the gateway after a 429, 5xx or connect error, including those of calls that failed in the end.");
    UPSTREAM_INVALID_USAGE = ("lqo_upstream_invalid_usage_total", "counter", ["model_version"],
        "Answers whose upstream-reported usage was beyond sane bounds (over 100,000,000 tokens of a kind); the gateway counted their tokens itself instead.");
    IN_FLIGHT = ("lqo_in_flight_requests", "gauge", ["endpoint"],
        "Model calls in progress.");
    HTTP_REQUESTS = ("lqo_http_requests_total", "counter", ["route", "status_code"],
        "HTTP responses by route template and status code, including rejected requests that never reached a model.");
    WRITER_QUEUE_DEPTH = ("lqo_writer_queue_depth", "gauge", [],
        "Log records waiting in the channel to the database writer.");
    WRITER_BATCH_SIZE = ("lqo_writer_batch_size", "histogram", [],
        "Records per batch written to the database.");
    WRITER_ROWS_WRITTEN = ("lqo_writer_rows_written_total", "counter", [],
        "Log records written to the database.");
    WRITER_ERRORS = ("lqo_writer_errors_total", "counter", [],
        "Failed batch writes to the database (the batch is retried).");
    WRITER_DROPPED = ("lqo_writer_dropped_total", "counter", ["reason"],
        "Log records lost: neither the database nor the spool took them, by reason queue_full|closed|shutdown (the spool failed too), rejected (the database refused the data) or spool_corrupt (unreadable in the spool).");
    SPOOL_BYTES = ("lqo_spool_bytes", "gauge", [],
        "Bytes in the writer's append-only spool on disk, waiting to be replayed into the database.");
    SPOOL_MAX_BYTES = ("lqo_spool_max_bytes", "gauge", [],
        "Configured spool capacity (writer.spool_max_bytes); beyond it records are dropped.");
    SPOOL_RECORDS = ("lqo_spool_records_total", "counter", ["reason"],
        "Log records written to the spool, by reason db_error (the database failed or timed out), queue_full (the writer queue was full) or closed (after shutdown).");
    SPOOL_REPLAYED = ("lqo_spool_replayed_total", "counter", [],
        "Log records replayed from the spool into the database (duplicates of stored rows included).");
    SPOOL_WRITE_ERRORS = ("lqo_spool_write_errors_total", "counter", ["reason"],
        "Failed writes to the spool, by reason full|io; the records involved are retried or dropped.");
    RETENTION_PARTITIONS_DROPPED = ("lqo_retention_partitions_dropped_total", "counter", [],
        "Daily llm_logs partitions dropped by the retention job (PostgreSQL).");
    RETENTION_ROWS_DELETED = ("lqo_retention_rows_deleted_total", "counter", [],
        "llm_logs rows deleted one by one by the retention job (SQLite; PostgreSQL's default and pre-partitioning partitions).");
    RETENTION_ERRORS = ("lqo_retention_errors_total", "counter", [],
        "Retention or partition maintenance runs that failed (retried at the next run).");
    AUTH_FAILURES = ("lqo_auth_failures_total", "counter", ["reason"],
        "Requests refused by authentication, by reason: missing, malformed, invalid, expired, revoked, missing_scope, metrics_token or unavailable.");
    RATE_LIMITED = ("lqo_rate_limited_total", "counter", ["key_name", "limit"],
        "Requests refused with 429 by a per-key rate limit, by key name (anonymous when auth is off) and limit (requests or tokens).");
    RATE_LIMIT_STORE_ERRORS = ("lqo_rate_limit_store_errors_total", "counter", [],
        "Calls to the shared rate-limit store (Redis: a limit check, a token charge or the readiness PING) that failed or timed out.");
    RATE_LIMIT_STORE_BYPASSED = ("lqo_rate_limit_store_bypassed_total", "counter", ["failure_mode"],
        "Rate-limit checks decided without Redis because it was failing, by failure_mode open (this replica's own limiter decided) or closed (refused with 429).");
    HEURISTIC_CHECKS = ("lqo_heuristic_checks_total", "counter", ["model_version", "check", "result"],
        "Heuristic checks run on successful answers, by check (empty, length, forbidden_terms, refusal, json_valid, truncated) and result pass|fail.");
    HEURISTIC_LABELS = ("lqo_heuristic_label_total", "counter", ["model_version", "label"],
        "Successful answers by heuristic label good|warn|bad (the worst failed check decides).");
    JUDGE_SCORE = ("lqo_judge_score", "histogram", ["model_version", "criterion"],
        "LLM-judge scores 1–5 of sampled answers, by criterion (overall, instruction_following, truthfulness, or as configured).");
    JUDGE_REQUESTS = ("lqo_judge_requests_total", "counter", ["model_version", "status"],
        "Records the LLM judge finished, by status ok (scores stored) or error (no scores after the last attempt).");
    JUDGE_ERRORS = ("lqo_judge_errors_total", "counter", ["model_version", "error_type"],
        "Records the LLM judge gave up on, by error_type invalid_output|timeout|upstream_status|connect|invalid_response|record_missing|no_content|abandoned.");
    JUDGE_RETRIES = ("lqo_judge_retries_total", "counter", ["model_version", "reason"],
        "Judge calls repeated for one record, by reason invalid_output (the reply was unusable) or upstream_error.");
    JUDGE_BACKLOG = ("lqo_judge_backlog", "gauge", [],
        "Judge jobs waiting or in progress (pending or running in the database, shared by all replicas, plus this process's unsaved ones).");
    JUDGE_JOBS_DROPPED = ("lqo_judge_jobs_dropped_total", "counter", [],
        "Sampled records whose judge job could not be queued (queue full or the database refused it); `lqo judge --since` picks them up again.");
    JUDGE_DURATION = ("lqo_judge_duration_seconds", "histogram", ["judge_model"],
        "Duration of one call to the judge model, in seconds (judge traffic, apart from user traffic).");
    JUDGE_TOKENS = ("lqo_judge_tokens_total", "counter", ["judge_model", "token_type"],
        "Tokens spent on judge calls, by token_type input|output.");
    JUDGE_COST = ("lqo_judge_cost_usd_total", "counter", ["judge_model"],
        "Cost of judge calls in US dollars, from the judge model's configured prices.");
    FEEDBACK = ("lqo_feedback_total", "counter", ["model_version", "rating"],
        "Human feedback received (POST /v1/feedback), by rating positive|neutral|negative.");
    JUDGE_HUMAN_AGREEMENT = ("lqo_judge_human_agreement_total", "counter", ["model_version", "agreement"],
        "Human ratings compared with the judge's overall score of the same answer, by agreement agree|disagree (neutral on either side is not compared).");
    BUILD_INFO = ("lqo_build_info", "gauge", ["version"],
        "Always 1; the version label says which build is running.");
}

/// The `status` values of `lqo_requests_total` and `lqo_request_duration_seconds`: how a model
/// call ended (the record's `status`). Only `error` burns the error budget.
pub const REQUEST_STATUSES: [&str; 4] = ["ok", "error", "rejected", "cancelled"];

/// Every `error_type` of `lqo_errors_total` (the gateway's `ProviderError::error_type` values).
pub const ERROR_TYPES: [&str; 9] = [
    "timeout",
    "upstream_status",
    "upstream_rate_limited",
    "upstream_rejected",
    "upstream_auth",
    "connect",
    "invalid_response",
    "stream_interrupted",
    "client_disconnected",
];

// Bucket bounds are literal decimals: computed bounds (1e-6 * 10 * 10 ...) print on /metrics as
// `le="0.000009999999999999999"`, which dashboards and `le` matchers then have to spell exactly.

/// Request duration: 0.01 s doubling to 81.92 s (OTel gen_ai.client.operation.duration).
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Time to first token: OTel's gen_ai.server.time_to_first_token bounds, extended from 10 s to
/// 60 s because reasoning models think longer than that before their first token.
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    15.0, 20.0, 30.0, 45.0, 60.0,
];

/// Time per output token, as OTel's gen_ai.server.time_per_output_token recommends.
pub const TIME_PER_OUTPUT_TOKEN_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// Judge scores: the 1–5 scale, one bucket per score.
pub const JUDGE_SCORE_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0];

/// Gateway overhead: 50 µs doubling to ~1.6 s, for a cost that should stay under a millisecond.
pub const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512,
    0.1024, 0.2048, 0.4096, 0.8192, 1.6384,
];

/// Tokens: powers of 4 from 1 to 4^10.
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
];

/// Cost in USD: a 1–2.5–5 series from 1e-6 to 10 USD. Neighbouring bounds are at most 2.5x
/// apart, so a quantile interpolated inside a bucket is off by less than 2.5x (decades were 10x).
pub const COST_BUCKETS: &[f64] = &[
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Records per database batch: powers of 2 from 1 to 2048.
pub const WRITER_BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

/// All gateway metrics, registered in their own registry.
pub struct Metrics {
    pub registry: Registry,
    pub request_duration: HistogramVec,
    pub time_to_first_token: HistogramVec,
    pub time_per_output_token: HistogramVec,
    pub tokens_per_request: HistogramVec,
    pub cost_per_request: HistogramVec,
    pub gateway_overhead: HistogramVec,
    pub requests: IntCounterVec,
    pub errors: IntCounterVec,
    pub tokens: IntCounterVec,
    /// Counted in micro-dollars would lose the unit; a float counter keeps USD.
    pub cost: prometheus::CounterVec,
    pub upstream_retries: IntCounterVec,
    pub upstream_invalid_usage: IntCounterVec,
    pub in_flight: IntGaugeVec,
    pub http_requests: IntCounterVec,
    pub writer_queue_depth: IntGauge,
    pub writer_batch_size: Histogram,
    pub writer_rows_written: IntCounter,
    pub writer_errors: IntCounter,
    pub writer_dropped: IntCounterVec,
    pub spool_bytes: IntGauge,
    pub spool_max_bytes: IntGauge,
    pub spool_records: IntCounterVec,
    pub spool_replayed: IntCounter,
    pub spool_write_errors: IntCounterVec,
    pub retention_partitions_dropped: IntCounter,
    pub retention_rows_deleted: IntCounter,
    pub retention_errors: IntCounter,
    pub auth_failures: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub rate_limit_store_errors: IntCounter,
    pub rate_limit_store_bypassed: IntCounterVec,
    pub heuristic_checks: IntCounterVec,
    pub heuristic_labels: IntCounterVec,
    pub judge_score: HistogramVec,
    pub judge_requests: IntCounterVec,
    pub judge_errors: IntCounterVec,
    pub judge_retries: IntCounterVec,
    pub judge_backlog: IntGauge,
    pub judge_jobs_dropped: IntCounter,
    pub judge_duration: HistogramVec,
    pub judge_tokens: IntCounterVec,
    pub judge_cost: prometheus::CounterVec,
    pub feedback: IntCounterVec,
    pub judge_human_agreement: IntCounterVec,
    pub build_info: IntGaugeVec,
}

fn hist(d: &MetricDesc, buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(d.name, d.help).buckets(buckets),
        d.labels,
    )
    .unwrap_or_else(|e| panic!("metric {} is malformed: {e}", d.name))
}

fn counter(d: &MetricDesc) -> IntCounterVec {
    IntCounterVec::new(Opts::new(d.name, d.help), d.labels)
        .unwrap_or_else(|e| panic!("metric {} is malformed: {e}", d.name))
}

fn plain_counter(d: &MetricDesc) -> IntCounter {
    IntCounter::new(d.name, d.help)
        .unwrap_or_else(|e| panic!("metric {} is malformed: {e}", d.name))
}

fn plain_gauge(d: &MetricDesc) -> IntGauge {
    IntGauge::new(d.name, d.help).unwrap_or_else(|e| panic!("metric {} is malformed: {e}", d.name))
}

fn gauge(d: &MetricDesc) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(d.name, d.help), d.labels)
        .unwrap_or_else(|e| panic!("metric {} is malformed: {e}", d.name))
}

impl Metrics {
    /// Builds every metric in a fresh registry. Panics only on a programming error in this module
    /// (a malformed name or a duplicate), which the unit tests catch.
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Metrics {
            request_duration: hist(&REQUEST_DURATION, DURATION_BUCKETS.to_vec()),
            time_to_first_token: hist(&TIME_TO_FIRST_TOKEN, TTFT_BUCKETS.to_vec()),
            time_per_output_token: hist(
                &TIME_PER_OUTPUT_TOKEN,
                TIME_PER_OUTPUT_TOKEN_BUCKETS.to_vec(),
            ),
            tokens_per_request: hist(&TOKENS_PER_REQUEST, TOKEN_BUCKETS.to_vec()),
            cost_per_request: hist(&COST_PER_REQUEST, COST_BUCKETS.to_vec()),
            gateway_overhead: hist(&GATEWAY_OVERHEAD, OVERHEAD_BUCKETS.to_vec()),
            requests: counter(&REQUESTS),
            errors: counter(&ERRORS),
            tokens: counter(&TOKENS),
            cost: prometheus::CounterVec::new(Opts::new(COST.name, COST.help), COST.labels)
                .unwrap_or_else(|e| panic!("metric {} is malformed: {e}", COST.name)),
            upstream_retries: counter(&UPSTREAM_RETRIES),
            upstream_invalid_usage: counter(&UPSTREAM_INVALID_USAGE),
            in_flight: gauge(&IN_FLIGHT),
            http_requests: counter(&HTTP_REQUESTS),
            writer_queue_depth: IntGauge::new(WRITER_QUEUE_DEPTH.name, WRITER_QUEUE_DEPTH.help)
                .unwrap_or_else(|e| panic!("{e}")),
            writer_batch_size: Histogram::with_opts(
                HistogramOpts::new(WRITER_BATCH_SIZE.name, WRITER_BATCH_SIZE.help)
                    .buckets(WRITER_BATCH_BUCKETS.to_vec()),
            )
            .unwrap_or_else(|e| panic!("{e}")),
            writer_rows_written: IntCounter::new(
                WRITER_ROWS_WRITTEN.name,
                WRITER_ROWS_WRITTEN.help,
            )
            .unwrap_or_else(|e| panic!("{e}")),
            writer_errors: IntCounter::new(WRITER_ERRORS.name, WRITER_ERRORS.help)
                .unwrap_or_else(|e| panic!("{e}")),
            writer_dropped: counter(&WRITER_DROPPED),
            spool_bytes: plain_gauge(&SPOOL_BYTES),
            spool_max_bytes: plain_gauge(&SPOOL_MAX_BYTES),
            spool_records: counter(&SPOOL_RECORDS),
            spool_replayed: plain_counter(&SPOOL_REPLAYED),
            spool_write_errors: counter(&SPOOL_WRITE_ERRORS),
            retention_partitions_dropped: plain_counter(&RETENTION_PARTITIONS_DROPPED),
            retention_rows_deleted: plain_counter(&RETENTION_ROWS_DELETED),
            retention_errors: plain_counter(&RETENTION_ERRORS),
            auth_failures: counter(&AUTH_FAILURES),
            rate_limited: counter(&RATE_LIMITED),
            rate_limit_store_errors: plain_counter(&RATE_LIMIT_STORE_ERRORS),
            rate_limit_store_bypassed: counter(&RATE_LIMIT_STORE_BYPASSED),
            heuristic_checks: counter(&HEURISTIC_CHECKS),
            heuristic_labels: counter(&HEURISTIC_LABELS),
            judge_score: hist(&JUDGE_SCORE, JUDGE_SCORE_BUCKETS.to_vec()),
            judge_requests: counter(&JUDGE_REQUESTS),
            judge_errors: counter(&JUDGE_ERRORS),
            judge_retries: counter(&JUDGE_RETRIES),
            judge_backlog: IntGauge::new(JUDGE_BACKLOG.name, JUDGE_BACKLOG.help)
                .unwrap_or_else(|e| panic!("{e}")),
            judge_jobs_dropped: IntCounter::new(JUDGE_JOBS_DROPPED.name, JUDGE_JOBS_DROPPED.help)
                .unwrap_or_else(|e| panic!("{e}")),
            judge_duration: hist(&JUDGE_DURATION, DURATION_BUCKETS.to_vec()),
            judge_tokens: counter(&JUDGE_TOKENS),
            judge_cost: prometheus::CounterVec::new(
                Opts::new(JUDGE_COST.name, JUDGE_COST.help),
                JUDGE_COST.labels,
            )
            .unwrap_or_else(|e| panic!("metric {} is malformed: {e}", JUDGE_COST.name)),
            feedback: counter(&FEEDBACK),
            judge_human_agreement: counter(&JUDGE_HUMAN_AGREEMENT),
            build_info: gauge(&BUILD_INFO),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.request_duration.clone()),
            Box::new(m.time_to_first_token.clone()),
            Box::new(m.time_per_output_token.clone()),
            Box::new(m.tokens_per_request.clone()),
            Box::new(m.cost_per_request.clone()),
            Box::new(m.gateway_overhead.clone()),
            Box::new(m.requests.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.tokens.clone()),
            Box::new(m.cost.clone()),
            Box::new(m.upstream_retries.clone()),
            Box::new(m.upstream_invalid_usage.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.writer_queue_depth.clone()),
            Box::new(m.writer_batch_size.clone()),
            Box::new(m.writer_rows_written.clone()),
            Box::new(m.writer_errors.clone()),
            Box::new(m.writer_dropped.clone()),
            Box::new(m.spool_bytes.clone()),
            Box::new(m.spool_max_bytes.clone()),
            Box::new(m.spool_records.clone()),
            Box::new(m.spool_replayed.clone()),
            Box::new(m.spool_write_errors.clone()),
            Box::new(m.retention_partitions_dropped.clone()),
            Box::new(m.retention_rows_deleted.clone()),
            Box::new(m.retention_errors.clone()),
            Box::new(m.auth_failures.clone()),
            Box::new(m.rate_limited.clone()),
            Box::new(m.rate_limit_store_errors.clone()),
            Box::new(m.rate_limit_store_bypassed.clone()),
            Box::new(m.heuristic_checks.clone()),
            Box::new(m.heuristic_labels.clone()),
            Box::new(m.judge_score.clone()),
            Box::new(m.judge_requests.clone()),
            Box::new(m.judge_errors.clone()),
            Box::new(m.judge_retries.clone()),
            Box::new(m.judge_backlog.clone()),
            Box::new(m.judge_jobs_dropped.clone()),
            Box::new(m.judge_duration.clone()),
            Box::new(m.judge_tokens.clone()),
            Box::new(m.judge_cost.clone()),
            Box::new(m.feedback.clone()),
            Box::new(m.judge_human_agreement.clone()),
            Box::new(m.build_info.clone()),
        ];
        for c in collectors {
            m.registry
                .register(c)
                .unwrap_or_else(|e| panic!("metric registered twice: {e}"));
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for reason in [
            "queue_full",
            "rejected",
            "closed",
            "shutdown",
            "spool_corrupt",
        ] {
            m.writer_dropped.with_label_values(&[reason]);
        }
        for reason in ["db_error", "queue_full", "closed"] {
            m.spool_records.with_label_values(&[reason]);
        }
        for reason in ["full", "io"] {
            m.spool_write_errors.with_label_values(&[reason]);
        }
        for mode in ["open", "closed"] {
            m.rate_limit_store_bypassed.with_label_values(&[mode]);
        }
        m
    }

    /// Creates the series of one model version at zero, so rates and ratios exist before the
    /// first error and dashboards show every configured version.
    pub fn init_model_version(&self, model_version: &str, endpoints: &[&str]) {
        for endpoint in endpoints {
            for status in REQUEST_STATUSES {
                self.requests
                    .with_label_values(&[model_version, endpoint, status]);
            }
        }
        for endpoint in endpoints {
            for error_type in ERROR_TYPES {
                self.errors
                    .with_label_values(&[model_version, endpoint, error_type]);
            }
            for status in REQUEST_STATUSES {
                self.request_duration
                    .with_label_values(&[model_version, endpoint, status]);
            }
            self.time_to_first_token
                .with_label_values(&[model_version, endpoint]);
            self.gateway_overhead
                .with_label_values(&[model_version, endpoint]);
        }
        for token_type in ["input", "cached_input", "output"] {
            self.tokens.with_label_values(&[model_version, token_type]);
        }
        for token_type in ["input", "output"] {
            self.tokens_per_request
                .with_label_values(&[model_version, token_type]);
        }
        self.time_per_output_token
            .with_label_values(&[model_version]);
        self.cost.with_label_values(&[model_version]);
        self.cost_per_request.with_label_values(&[model_version]);
        self.upstream_retries.with_label_values(&[model_version]);
        self.upstream_invalid_usage
            .with_label_values(&[model_version]);
    }

    /// Creates one model version's quality series at zero: every heuristic check × pass|fail,
    /// every label, every feedback rating and agreement outcome.
    pub fn init_quality_series(&self, model_version: &str, checks: &[&str]) {
        for check in checks {
            for result in ["pass", "fail"] {
                self.heuristic_checks
                    .with_label_values(&[model_version, check, result]);
            }
        }
        for label in ["good", "warn", "bad"] {
            self.heuristic_labels
                .with_label_values(&[model_version, label]);
        }
        for rating in ["positive", "neutral", "negative"] {
            self.feedback.with_label_values(&[model_version, rating]);
        }
        for agreement in ["agree", "disagree"] {
            self.judge_human_agreement
                .with_label_values(&[model_version, agreement]);
        }
    }

    /// Creates one model version's judge series at zero (scores per criterion, outcomes, errors
    /// by type, retries).
    pub fn init_judge_series(&self, model_version: &str, criteria: &[&str], error_types: &[&str]) {
        for criterion in criteria {
            self.judge_score
                .with_label_values(&[model_version, criterion]);
        }
        for status in ["ok", "error"] {
            self.judge_requests
                .with_label_values(&[model_version, status]);
        }
        for error_type in error_types {
            self.judge_errors
                .with_label_values(&[model_version, error_type]);
        }
        for reason in ["invalid_output", "upstream_error"] {
            self.judge_retries
                .with_label_values(&[model_version, reason]);
        }
    }

    /// Creates the judge model's own metering series at zero.
    pub fn init_judge_model(&self, judge_model: &str) {
        self.judge_duration.with_label_values(&[judge_model]);
        for token_type in ["input", "output"] {
            self.judge_tokens
                .with_label_values(&[judge_model, token_type]);
        }
        self.judge_cost.with_label_values(&[judge_model]);
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// docs/METRICS.md, generated from `CATALOG` (a test keeps the file in step).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Metrics\n\n\
         Generated from `src/metrics.rs` (`CATALOG`); `cargo test` fails when this file is stale \
         (regenerate with `LQO_UPDATE_DOCS=1 cargo test --lib metrics`).\n\n\
         Every metric about a model call carries `model_version`, which only takes configured \
         values: an unknown version is a 404, never a new series.\n\n\
         | metric | type | labels | meaning |\n|---|---|---|---|\n",
    );
    for d in CATALOG {
        let labels = if d.labels.is_empty() {
            "—".to_string()
        } else {
            d.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            d.name, d.kind, labels, d.help
        ));
    }
    let fmt = |b: &[f64]| {
        b.iter()
            .map(|v| format!("{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str("\n## Histogram buckets\n\n");
    for (what, bounds) in [
        (
            "request duration, judge call duration (s)",
            DURATION_BUCKETS,
        ),
        ("time to first token (s)", TTFT_BUCKETS),
        ("time per output token (s)", TIME_PER_OUTPUT_TOKEN_BUCKETS),
        ("gateway overhead (s)", OVERHEAD_BUCKETS),
        ("tokens", TOKEN_BUCKETS),
        ("cost (USD)", COST_BUCKETS),
        ("judge score", JUDGE_SCORE_BUCKETS),
        ("writer batch size (records)", WRITER_BATCH_BUCKETS),
    ] {
        out.push_str(&format!("- {what}: {}\n", fmt(bounds)));
    }
    out.push_str(
        "\nThe response header `x-lqo-overhead-ms` carries the gateway overhead of each request.\n\n\
         What the overhead (histogram and header) counts: from the request's arrival in the router \
         to the upstream call, and from the upstream's answer to the queued record. It leaves out \
         hyper's reading of the request before the router, the writing of the answer after the \
         record, and the HTTP client's own work inside the upstream call (its request \
         building and response handling, the wake-ups on the way), which count as upstream time. \
         So it is a lower bound: at one connection in front of a 0 ms mock upstream, half the \
         calls showed under 0.05 ms of overhead while the gateway added 0.18-0.20 ms at p50 to \
         the direct call (a proxy that only forwards, on the same stack, adds 0.08-0.09 ms there; \
         `bench/README.md`, \"The floor\"). `bench/overhead.py` measures the whole of it.\n",
    );
    out
}

/// A process-wide instance for code paths without app state (the CLI). The server passes its own.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_catalog_metric_is_registered_once() {
        let m = Metrics::new();
        m.init_model_version("v1", &["chat"]);
        m.request_duration
            .with_label_values(&["v1", "chat", "ok"])
            .observe(0.5);
        m.time_to_first_token
            .with_label_values(&["v1", "chat"])
            .observe(0.1);
        m.tokens_per_request
            .with_label_values(&["v1", "input"])
            .observe(10.0);
        m.cost_per_request.with_label_values(&["v1"]).observe(0.001);
        m.gateway_overhead
            .with_label_values(&["v1", "chat"])
            .observe(0.0001);
        m.errors.with_label_values(&["v1", "chat", "timeout"]).inc();
        m.upstream_retries.with_label_values(&["v1"]).inc();
        m.in_flight.with_label_values(&["chat"]).set(0);
        m.http_requests.with_label_values(&["/chat", "200"]).inc();
        m.writer_batch_size.observe(1.0);
        m.init_quality_series("v1", &["empty"]);
        m.init_judge_series("v1", &["overall"], &["timeout"]);
        m.init_judge_model("judge");
        m.judge_score
            .with_label_values(&["v1", "overall"])
            .observe(4.0);
        m.judge_duration.with_label_values(&["judge"]).observe(0.1);
        m.auth_failures.with_label_values(&["invalid"]).inc();
        m.rate_limited.with_label_values(&["key", "requests"]).inc();
        let text = m.render();
        for d in CATALOG {
            assert!(
                text.contains(&format!("# TYPE {} {}", d.name, d.kind)),
                "{} missing from exposition",
                d.name
            );
        }
    }

    #[test]
    fn metrics_doc_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/METRICS.md");
        let want = markdown();
        if std::env::var_os("LQO_UPDATE_DOCS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/METRICS.md is stale: run LQO_UPDATE_DOCS=1 cargo test --lib metrics"
        );
    }

    #[test]
    fn buckets_follow_the_otel_genai_recommendation() {
        assert_eq!(DURATION_BUCKETS.first().copied(), Some(0.01));
        assert_eq!(DURATION_BUCKETS.last().copied(), Some(81.92));
        assert_eq!(TOKEN_BUCKETS.last().copied(), Some(4f64.powi(10)));
        // OTel's TTFT bounds stop at 10 s; ours go on to 60 s for reasoning models.
        assert!(TTFT_BUCKETS.starts_with(&[0.001, 0.005, 0.01]));
        assert!(TTFT_BUCKETS.contains(&10.0));
        assert_eq!(TTFT_BUCKETS.last().copied(), Some(60.0));
        assert_eq!(TIME_PER_OUTPUT_TOKEN_BUCKETS.last().copied(), Some(2.5));
    }

    #[test]
    fn bucket_bounds_ascend_and_cost_buckets_keep_quantiles_within_2_5x() {
        for bounds in [
            DURATION_BUCKETS,
            TTFT_BUCKETS,
            TIME_PER_OUTPUT_TOKEN_BUCKETS,
            JUDGE_SCORE_BUCKETS,
            OVERHEAD_BUCKETS,
            TOKEN_BUCKETS,
            COST_BUCKETS,
            WRITER_BATCH_BUCKETS,
        ] {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        }
        // A quantile interpolated inside a bucket lies between its bounds: at most their ratio off.
        for w in COST_BUCKETS.windows(2) {
            assert!(w[1] / w[0] <= 2.5 + 1e-9, "{} -> {}", w[0], w[1]);
        }
        assert_eq!(COST_BUCKETS.first().copied(), Some(0.000001));
        assert_eq!(COST_BUCKETS.last().copied(), Some(10.0));
    }

    /// Every `le` on /metrics is a short decimal, as written in the source: `le="0.00001"`, never
    /// `le="0.000009999999999999999"`.
    #[test]
    fn metrics_show_clean_decimal_bucket_bounds() {
        let m = Metrics::new();
        m.init_model_version("v1", &["chat_completions"]);
        m.init_judge_model("judge");
        m.cost_per_request
            .with_label_values(&["v1"])
            .observe(0.00002);
        ModelSeries::new(&m, "v1", &[], &[], &[]).observe_time_per_output_token(
            Duration::from_millis(1500),
            Duration::from_millis(500),
            21,
        );
        m.writer_batch_size.observe(3.0);
        let text = m.render();
        for want in [
            r#"lqo_cost_per_request_usd_bucket{model_version="v1",le="0.00001"} 0"#,
            r#"lqo_cost_per_request_usd_bucket{model_version="v1",le="0.000025"} 1"#,
            r#"lqo_cost_per_request_usd_bucket{model_version="v1",le="0.0000025"} 0"#,
            r#"lqo_time_to_first_token_seconds_bucket{endpoint="chat_completions",model_version="v1",le="60"} 0"#,
            // (1.5 s - 0.5 s) / 20 tokens after the first = 50 ms per token.
            r#"lqo_time_per_output_token_seconds_bucket{model_version="v1",le="0.05"} 1"#,
            r#"lqo_time_per_output_token_seconds_bucket{model_version="v1",le="0.025"} 0"#,
            r#"lqo_gateway_overhead_seconds_bucket{endpoint="chat_completions",model_version="v1",le="0.1024"} 0"#,
        ] {
            assert!(text.contains(want), "missing {want}");
        }
        let mut n = 0;
        for le in text.split("le=\"").skip(1) {
            let le = &le[..le.find('"').unwrap_or(0)];
            n += 1;
            if le == "+Inf" {
                continue;
            }
            let digits: String = le.chars().filter(char::is_ascii_digit).collect();
            let significant = digits.trim_start_matches('0').trim_end_matches('0');
            assert!(
                significant.len() <= 7 && !le.contains('e'),
                "bucket bound le=\"{le}\" is not a short decimal"
            );
        }
        assert!(n > 100, "only {n} bucket lines");
    }

    #[test]
    fn time_per_output_token_needs_two_tokens() {
        let m = Metrics::new();
        let count = |m: &Metrics| {
            m.time_per_output_token
                .with_label_values(&["v1"])
                .get_sample_count()
        };
        let second = Duration::from_secs(1);
        let s = ModelSeries::new(&m, "v1", &[], &[], &[]);
        s.observe_time_per_output_token(second * 2, second, 1);
        assert_eq!(count(&m), 0);
        s.observe_time_per_output_token(second * 2, second, 2);
        assert_eq!(count(&m), 1);
        // A clock that says the first token came after the end counts as no decode time.
        s.observe_time_per_output_token(second, second * 2, 5);
        assert_eq!(count(&m), 2);
    }
}
