//! Retries of upstream calls: exponential backoff with jitter, honouring a `Retry-After` no longer
//! than the cap and the caller's deadline, only for errors `ProviderError::is_retryable` accepts.
//! The gateway and the LLM judge run every provider attempt through [`with_retries`], so retries of
//! calls that fail in the end are counted too.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use super::ProviderError;
use crate::config::ProviderConfig;

/// No single wait between attempts is longer than this; a server asking for more (Retry-After) is
/// not retried: the client gets the upstream's answer with its Retry-After instead.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// Wait before the first retry; doubles with each further one.
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    pub fn from_config(cfg: &ProviderConfig) -> Self {
        RetryPolicy {
            max_retries: cfg.max_retries,
            base: Duration::from_millis(cfg.retry_backoff_ms),
            cap: MAX_BACKOFF,
        }
    }

    /// No retries at all (the in-process mock).
    pub const fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            base: Duration::ZERO,
            cap: Duration::ZERO,
        }
    }

    /// The wait before retry number `retry` (0-based): `base·2^retry` capped, then "equal jitter"
    /// (half fixed, half random) so replicas that failed together do not retry together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.cap);
        let half = exp / 2;
        let jitter_ms = half.as_millis() as u64;
        let jitter = if jitter_ms == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms))
        };
        half + jitter
    }
}

/// Runs `attempt` until it succeeds, fails with a non-retryable error, `max_retries` retries are
/// spent, or the next wait would end after `deadline`. Returns the outcome and the number of
/// retries made, also when the call failed in the end.
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    deadline: Option<tokio::time::Instant>,
    retries: &std::sync::atomic::AtomicU32,
    mut attempt: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    use std::sync::atomic::Ordering;
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let done = retries.load(Ordering::Relaxed);
        if !error.is_retryable() || done >= policy.max_retries {
            return Err(error);
        }
        let wait = match &error {
            ProviderError::Status {
                retry_after: Some(asked),
                ..
            } => {
                if *asked > policy.cap {
                    tracing::debug!(?asked, "upstream asked for a long wait; not retrying");
                    return Err(error);
                }
                *asked
            }
            _ => policy.backoff(done),
        };
        if deadline.is_some_and(|d| tokio::time::Instant::now() + wait >= d) {
            // The retry could not finish in time; the upstream's own answer is more useful.
            return Err(error);
        }
        tracing::debug!(error = %error, retry = done + 1, ?wait, "retrying upstream call");
        tokio::time::sleep(wait).await;
        retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// The wait a response asks for: `retry-after-ms` (OpenAI's) or `retry-after` in seconds. HTTP dates
/// are ignored; the backoff applies then.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    if let Some(ms) = value("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms.min(1e9) / 1000.0));
    }
    value("retry-after").map(|s| Duration::from_secs_f64(s.min(1e6)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base: Duration::from_millis(1),
            cap: MAX_BACKOFF,
        }
    }

    fn status(status: u16) -> ProviderError {
        ProviderError::status(status, "x")
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 10,
            base: Duration::from_millis(200),
            cap: MAX_BACKOFF,
        };
        for retry in 0..8 {
            let full = Duration::from_millis(200 * (1 << retry)).min(MAX_BACKOFF);
            for _ in 0..20 {
                let d = p.backoff(retry);
                assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
            }
        }
        assert!(p.backoff(u32::MAX) <= MAX_BACKOFF);
    }

    #[tokio::test]
    async fn retryable_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        let v = with_retries(&policy(3), None, &retries, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(status(503))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!((v, retries.load(Ordering::SeqCst)), (7, 2));
    }

    #[tokio::test]
    async fn gives_up_after_max_retries_and_counts_them() {
        let calls = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        let err = with_retries(&policy(2), None, &retries, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(status(429))
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ProviderError::Status { status: 429, .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(retries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn non_retryable_errors_fail_at_once() {
        let calls = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        let err = with_retries(&policy(5), None, &retries, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(status(400))
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ProviderError::Status { status: 400, .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(retries.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_long_retry_after_is_not_waited_for() {
        let calls = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        let started = std::time::Instant::now();
        let _ = with_retries(&policy(5), None, &retries, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(ProviderError::Status {
                status: 429,
                message: "slow down".into(),
                error: None,
                retry_after: Some(Duration::from_secs(60)),
            })
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_short_retry_after_is_honoured() {
        let calls = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        let started = std::time::Instant::now();
        let v = with_retries(&policy(2), None, &retries, || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(ProviderError::Status {
                    status: 429,
                    message: "slow down".into(),
                    error: None,
                    retry_after: Some(Duration::from_millis(120)),
                })
            } else {
                Ok(1)
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 1);
        assert!(started.elapsed() >= Duration::from_millis(120));
    }

    #[tokio::test]
    async fn no_retry_is_started_that_would_end_after_the_deadline() {
        let calls = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        let p = RetryPolicy {
            max_retries: 5,
            base: Duration::from_secs(2),
            cap: MAX_BACKOFF,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        let err = with_retries(&p, Some(deadline), &retries, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(status(503))
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ProviderError::Status { status: 503, .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn retry_after_headers_are_read() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
