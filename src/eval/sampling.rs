//! Which records the LLM judge looks at: a deterministic function of the request id and the
//! model version's configured rate, so every replica, a restarted gateway and `lqo judge`
//! backfills all pick exactly the same records.

use std::collections::BTreeMap;

use uuid::Uuid;

/// Where a request id falls in [0, 1): a fixed hash (FNV-1a, then the splitmix64 finaliser so
/// the time-ordered bits of a UUIDv7 are spread out). Never changes between builds or hosts.
pub fn sample_point(request_id: Uuid) -> f64 {
    let fnv = request_id
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    let mut z = fnv.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // 53 random bits make an exactly representable fraction.
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Sample rates per model version.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampler {
    default_rate: f64,
    per_model: BTreeMap<String, f64>,
}

impl Sampler {
    pub fn new(default_rate: f64, per_model: BTreeMap<String, f64>) -> Sampler {
        Sampler {
            default_rate,
            per_model,
        }
    }

    /// The share of `model_version`'s records that are judged, 0.0–1.0.
    pub fn rate(&self, model_version: &str) -> f64 {
        self.per_model
            .get(model_version)
            .copied()
            .unwrap_or(self.default_rate)
    }

    /// True when this record is in the sample. Rate 1.0 takes everything, 0.0 nothing.
    pub fn sampled(&self, request_id: Uuid, model_version: &str) -> bool {
        let rate = self.rate(model_version);
        rate >= 1.0 || sample_point(request_id) < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_point_is_fixed_for_an_id() {
        let id = Uuid::parse_str("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap();
        let p = sample_point(id);
        assert_eq!(p, sample_point(id));
        assert!((0.0..1.0).contains(&p));
        // Pinned: a changed hash would make backfills and replicas pick different records.
        assert_eq!(format!("{p:.6}"), "0.565761");
        assert_eq!(sample_point(Uuid::nil()), sample_point(Uuid::nil()));
    }

    #[test]
    fn rates_are_honoured_over_many_time_ordered_ids() {
        let s = Sampler::new(
            0.1,
            BTreeMap::from([("all".into(), 1.0), ("none".into(), 0.0)]),
        );
        let ids: Vec<Uuid> = (0..20_000).map(|_| Uuid::now_v7()).collect();
        let hits = ids.iter().filter(|id| s.sampled(**id, "other")).count();
        assert!((1_700..2_300).contains(&hits), "{hits} of 20000 at 10%");
        assert!(ids.iter().all(|id| s.sampled(*id, "all")));
        assert!(!ids.iter().any(|id| s.sampled(*id, "none")));
        assert_eq!(s.rate("all"), 1.0);
        assert_eq!(s.rate("other"), 0.1);
    }

    #[test]
    fn a_lower_rate_samples_a_subset_of_a_higher_one() {
        let low = Sampler::new(0.05, BTreeMap::new());
        let high = Sampler::new(0.3, BTreeMap::new());
        for _ in 0..5_000 {
            let id = Uuid::new_v4();
            if low.sampled(id, "m") {
                assert!(high.sampled(id, "m"));
            }
        }
    }
}
