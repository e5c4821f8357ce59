//! Readiness of the write path, decided here rather than in the HTTP handler: a database outage
//! alone keeps the gateway in rotation (`Degraded`: calls are still served and their records are
//! safe in the spool, and failing readiness on every replica at once would turn a database outage
//! into a gateway outage). Only when records cannot be kept at all — database and spool both
//! failing — is it `NotReady`. The database and the other subsystems are asked by a background
//! probe every [`PROBE_INTERVAL`]; `/ready` reads what it found, so it answers in microseconds
//! even while the database does not answer at all (it took 2 s per call, and a 1 s probe timeout
//! marked every replica unready).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::writer::{WriterHandle, WriterStatus};
use super::Store;

/// How long the readiness ping may take before the database counts as unreachable.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the background probe asks.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long `/ready` waits for the very first probe after start before answering without it.
pub const FIRST_PROBE_WAIT: Duration = Duration::from_millis(500);

/// Problems of other subsystems (shared rate limits, key-change listening, pending migrations)
/// that degrade the gateway but never lose a record; asked with every probe.
pub type OtherProblems = Arc<dyn Fn() -> BoxFuture<'static, Vec<String>> + Send + Sync>;

/// What one probe found.
#[derive(Debug, Clone)]
struct Probed {
    ping: Result<(), String>,
    others: Vec<String>,
    at: Instant,
}

/// The background readiness probe and what it last found.
pub struct HealthProbe {
    found: watch::Receiver<Option<Probed>>,
    database: &'static str,
    task: JoinHandle<()>,
}

impl HealthProbe {
    /// Starts probing `store` and `others` now and every [`PROBE_INTERVAL`].
    pub fn start(store: Store, others: OtherProblems) -> HealthProbe {
        let (tx, found) = watch::channel(None);
        let database = store.backend();
        let task = tokio::spawn(async move {
            loop {
                let (ping, others) = tokio::join!(ping(&store), others());
                tx.send_replace(Some(Probed {
                    ping,
                    others,
                    at: Instant::now(),
                }));
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        });
        HealthProbe {
            found,
            database,
            task,
        }
    }

    /// The verdict from the last probe and the writer's state now. Waits only for the very
    /// first probe after start, at most [`FIRST_PROBE_WAIT`].
    pub async fn readiness(&self, writer: &WriterHandle) -> Readiness {
        let mut found = self.found.clone();
        let probed =
            match tokio::time::timeout(FIRST_PROBE_WAIT, found.wait_for(Option::is_some)).await {
                Ok(Ok(p)) => p.clone(),
                _ => None,
            };
        let (ping, mut others) = match probed {
            None => (
                Err("not checked yet (the gateway has just started)".to_string()),
                vec![],
            ),
            Some(p) => {
                let mut others = p.others;
                let age = p.at.elapsed();
                if age > PROBE_INTERVAL * 3 + PING_TIMEOUT {
                    others.push(format!("readiness last checked {} s ago", age.as_secs()));
                }
                (p.ping, others)
            }
        };
        let writer = writer.status();
        let (state, reasons) = assess(ping, &writer, std::mem::take(&mut others));
        Readiness {
            state,
            database: self.database,
            writer,
            reasons,
        }
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for HealthProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A round trip to the database, bounded by [`PING_TIMEOUT`].
async fn ping(store: &Store) -> Result<(), String> {
    match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("ping timed out after {} s", PING_TIMEOUT.as_secs())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadinessState {
    Ready,
    /// Serving, with something wrong (see the reasons): records still safe.
    Degraded,
    /// Records are being lost: the database and the spool both fail.
    NotReady,
}

impl ReadinessState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadinessState::Ready => "ready",
            ReadinessState::Degraded => "degraded",
            ReadinessState::NotReady => "not_ready",
        }
    }
}

/// What readiness found, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub state: ReadinessState,
    /// `postgres` or `sqlite`.
    pub database: &'static str,
    pub writer: WriterStatus,
    /// What is wrong, when the state is not `Ready`.
    pub reasons: Vec<String>,
}

/// The rules: from the ping's outcome, the writer's state and other subsystems' problems to a
/// verdict with its reasons.
pub fn assess(
    ping: Result<(), String>,
    writer: &WriterStatus,
    others: Vec<String>,
) -> (ReadinessState, Vec<String>) {
    let mut reasons = Vec::new();
    let mut db_failing = match ping {
        Ok(()) => false,
        Err(e) => {
            reasons.push(format!("database unreachable: {e}"));
            true
        }
    };
    if let Some(e) = &writer.db_error {
        reasons.push(format!("writer cannot write to the database: {e}"));
        db_failing = true;
    }
    if writer.spooling {
        reasons.push(format!(
            "log records go to the spool on disk until the database takes writes again ({} bytes waiting)",
            writer.spool_bytes
        ));
    }
    reasons.extend(others);
    let spool_failing = writer.spool_error.is_some();
    if let Some(e) = &writer.spool_error {
        reasons.push(format!(
            "LOG RECORDS CAN BE LOST: the spool cannot be written: {e}"
        ));
    }
    let state = if db_failing && spool_failing {
        ReadinessState::NotReady
    } else if reasons.is_empty() {
        ReadinessState::Ready
    } else {
        ReadinessState::Degraded
    };
    (state, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> WriterStatus {
        WriterStatus {
            queue_depth: 3,
            spooling: false,
            db_error: None,
            spool_bytes: 0,
            spool_segments: 0,
            spool_error: None,
        }
    }

    #[test]
    fn only_a_failing_database_and_spool_together_are_not_ready() {
        let (state, reasons) = assess(Ok(()), &healthy(), vec![]);
        assert_eq!((state, reasons.len()), (ReadinessState::Ready, 0));

        let down = || Err("connection refused".to_string());
        let (state, reasons) = assess(down(), &healthy(), vec![]);
        assert_eq!(state, ReadinessState::Degraded);
        assert!(reasons[0].contains("connection refused"), "{reasons:?}");

        let spooling = WriterStatus {
            spooling: true,
            db_error: Some("timed out".into()),
            spool_bytes: 4096,
            ..healthy()
        };
        let (state, reasons) = assess(Ok(()), &spooling, vec![]);
        assert_eq!(state, ReadinessState::Degraded);
        assert!(
            reasons.iter().any(|r| r.contains("4096 bytes")),
            "{reasons:?}"
        );

        let spool_broken = WriterStatus {
            spool_error: Some("disk full".into()),
            ..healthy()
        };
        // The spool failing while the database takes writes loses nothing yet.
        assert_eq!(
            assess(Ok(()), &spool_broken, vec![]).0,
            ReadinessState::Degraded
        );
        let (state, reasons) = assess(down(), &spool_broken, vec![]);
        assert_eq!(state, ReadinessState::NotReady);
        assert!(
            reasons.iter().any(|r| r.contains("CAN BE LOST")),
            "{reasons:?}"
        );
        let both = WriterStatus {
            db_error: Some("refused".into()),
            ..spool_broken
        };
        assert_eq!(assess(Ok(()), &both, vec![]).0, ReadinessState::NotReady);
        // Another subsystem's trouble (Redis for rate limits) degrades, never fails readiness.
        let (state, reasons) = assess(Ok(()), &healthy(), vec!["redis down".into()]);
        assert_eq!(
            (state, reasons),
            (ReadinessState::Degraded, vec!["redis down".to_string()])
        );
    }
}
