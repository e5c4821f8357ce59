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
        series: model_series(&crate::metrics::Metrics::new(), "m"),
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

#[test]
fn upstream_errors_keep_their_status_but_credentials_and_outages_are_502() {
    for (status, shown) in [
        (400, 400),
        (404, 404),
        (422, 422),
        (429, 429),
        (401, 502),
        (403, 502),
        (500, 502),
        (503, 502),
    ] {
        assert_eq!(
            http_status_for(&ProviderError::status(status, "x")),
            shown,
            "{status}"
        );
    }
    assert_eq!(
        http_status_for(&ProviderError::Timeout(Duration::from_secs(1))),
        504
    );
    assert_eq!(
        http_status_for(&ProviderError::StreamInterrupted("x".into())),
        502
    );
    assert_eq!(http_status_for(&ProviderError::Connect("x".into())), 502);
}

/// `ModelSeries` is indexed by the enums' positions; their `NAMES` must be in the same order.
#[test]
fn series_indices_follow_the_names() {
    for e in Endpoint::ALL {
        assert_eq!(Endpoint::NAMES[*e as usize], e.as_str());
    }
    use crate::store::record::HeuristicLabel;
    for l in HeuristicLabel::ALL {
        assert_eq!(HeuristicLabel::NAMES[*l as usize], l.as_str());
    }
}
