//! LLM Quality Observer: an LLM gateway that logs every call durably and exposes latency, tokens,
//! cost and quality per model version to Prometheus.

pub mod api;
pub mod app;
pub mod auth;
pub mod blocking;
pub mod config;
pub mod eval;
pub mod gateway;
pub mod logfmt;
pub mod metrics;
pub mod mock_upstream;
pub mod provider;
pub mod redact;
pub mod server;
pub mod store;
pub mod timespec;
