//! One model version's series on the path of every answered call, resolved once when its route
//! is built. `MetricVec::with_label_values` hashes the label values (SipHash) and takes a lock on
//! every call; the ~19 lookups of an answered call were ~3 % of the gateway's instructions per
//! call (callgrind). Error paths stay on `with_label_values`: they are rare, and their labels
//! (error types, statuses) many.

use prometheus::{Counter, Histogram, IntCounter};

use super::Metrics;

/// An endpoint's series of one model version for answered calls (`status="ok"`).
#[derive(Clone)]
pub struct EndpointSeries {
    pub requests_ok: IntCounter,
    pub duration_ok: Histogram,
    pub overhead: Histogram,
    pub time_to_first_token: Histogram,
}

/// A model version's per-call series; see the module's doc.
#[derive(Clone)]
pub struct ModelSeries {
    /// In the order of the endpoint names it was built with.
    endpoints: Vec<EndpointSeries>,
    pub input_tokens: IntCounter,
    pub cached_input_tokens: IntCounter,
    pub output_tokens: IntCounter,
    pub input_tokens_per_request: Histogram,
    pub output_tokens_per_request: Histogram,
    pub time_per_output_token: Histogram,
    pub cost: Counter,
    pub cost_per_request: Histogram,
    /// The heuristic checks' names and their `pass` and `fail` counters, in the same order.
    check_names: &'static [&'static str],
    checks: Vec<[IntCounter; 2]>,
    /// In the order of the heuristic label names it was built with.
    labels: Vec<IntCounter>,
}

impl std::fmt::Debug for ModelSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSeries").finish_non_exhaustive()
    }
}

impl ModelSeries {
    /// Resolves (creating them at zero, if need be) `model_version`'s series for every endpoint
    /// in `endpoints`, its token and cost series and its heuristic series for `checks` and
    /// `labels`. The gateway passes `Endpoint::NAMES` and `HeuristicLabel::NAMES` and indexes by
    /// the enums' positions (metrics does not import the store, where they are defined).
    pub fn new(
        m: &Metrics,
        model_version: &str,
        endpoints: &[&str],
        checks: &'static [&'static str],
        labels: &[&str],
    ) -> ModelSeries {
        let mv = model_version;
        let endpoints = endpoints
            .iter()
            .map(|e| {
                let e = *e;
                EndpointSeries {
                    requests_ok: m.requests.with_label_values(&[mv, e, "ok"]),
                    duration_ok: m.request_duration.with_label_values(&[mv, e, "ok"]),
                    overhead: m.gateway_overhead.with_label_values(&[mv, e]),
                    time_to_first_token: m.time_to_first_token.with_label_values(&[mv, e]),
                }
            })
            .collect();
        ModelSeries {
            endpoints,
            input_tokens: m.tokens.with_label_values(&[mv, "input"]),
            cached_input_tokens: m.tokens.with_label_values(&[mv, "cached_input"]),
            output_tokens: m.tokens.with_label_values(&[mv, "output"]),
            input_tokens_per_request: m.tokens_per_request.with_label_values(&[mv, "input"]),
            output_tokens_per_request: m.tokens_per_request.with_label_values(&[mv, "output"]),
            time_per_output_token: m.time_per_output_token.with_label_values(&[mv]),
            cost: m.cost.with_label_values(&[mv]),
            cost_per_request: m.cost_per_request.with_label_values(&[mv]),
            check_names: checks,
            checks: checks
                .iter()
                .map(|c| {
                    [
                        m.heuristic_checks.with_label_values(&[mv, c, "pass"]),
                        m.heuristic_checks.with_label_values(&[mv, c, "fail"]),
                    ]
                })
                .collect(),
            labels: labels
                .iter()
                .map(|l| m.heuristic_labels.with_label_values(&[mv, l]))
                .collect(),
        }
    }

    /// The series of the endpoint at `index` in the names the series was built with.
    pub fn endpoint(&self, index: usize) -> &EndpointSeries {
        &self.endpoints[index]
    }

    /// Counts one heuristic check's result; a check this series was not built with is counted
    /// through the metric vector.
    pub fn count_check(&self, m: &Metrics, model_version: &str, check: &str, passed: bool) {
        match self.check_names.iter().position(|c| *c == check) {
            Some(i) => self.checks[i][usize::from(!passed)].inc(),
            None => m
                .heuristic_checks
                .with_label_values(&[model_version, check, if passed { "pass" } else { "fail" }])
                .inc(),
        }
    }

    /// Counts the heuristic label at `index` in the names the series was built with.
    pub fn count_label(&self, index: usize) {
        self.labels[index].inc();
    }

    /// The time per output token of a streamed answer: the time after its first token, spread
    /// over the tokens that followed it. Answers of fewer than two tokens say nothing.
    pub fn observe_time_per_output_token(
        &self,
        total: std::time::Duration,
        ttft: std::time::Duration,
        output_tokens: u64,
    ) {
        if output_tokens > 1 {
            let decode = total.saturating_sub(ttft).as_secs_f64();
            self.time_per_output_token
                .observe(decode / (output_tokens - 1) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_count_into_the_same_series_as_the_vectors() {
        let m = Metrics::new();
        let endpoints = ["chat", "responses"];
        let labels = ["good", "bad"];
        let s = ModelSeries::new(&m, "v1", &endpoints, &["empty", "length"], &labels);
        for (i, e) in endpoints.iter().enumerate() {
            s.endpoint(i).requests_ok.inc();
            assert_eq!(
                m.requests.with_label_values(&["v1", e, "ok"]).get(),
                1,
                "{e}"
            );
        }
        s.endpoint(1).duration_ok.observe(0.5);
        let h = m
            .request_duration
            .with_label_values(&["v1", "responses", "ok"]);
        assert_eq!(h.get_sample_count(), 1);
        s.count_check(&m, "v1", "length", false);
        s.count_check(&m, "v1", "json_valid", true); // not pre-resolved: through the vector
        assert_eq!(
            m.heuristic_checks
                .with_label_values(&["v1", "length", "fail"])
                .get(),
            1
        );
        assert_eq!(
            m.heuristic_checks
                .with_label_values(&["v1", "length", "pass"])
                .get(),
            0
        );
        assert_eq!(
            m.heuristic_checks
                .with_label_values(&["v1", "json_valid", "pass"])
                .get(),
            1
        );
        for (i, l) in labels.iter().enumerate() {
            s.count_label(i);
            assert_eq!(m.heuristic_labels.with_label_values(&["v1", l]).get(), 1);
        }
        s.output_tokens.inc_by(7);
        assert_eq!(m.tokens.with_label_values(&["v1", "output"]).get(), 7);
    }
}
