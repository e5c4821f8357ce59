//! Startup and shutdown: connect the store, apply migrations, start the writer, build the gateway
//! and the router, serve until a signal, then drain the writer so no record is lost.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::{self, AppState, AppStateInner};
use crate::auth::shared_limits::SharedLimits;
use crate::auth::Auth;
use crate::config::Config;
use crate::eval::judge::JudgeBuildError;
use crate::eval::worker::EvalStores;
use crate::eval::JudgeRuntime;
use crate::gateway::{BuildError, Gateway};
use crate::metrics::Metrics;
use crate::store::health::{HealthProbe, OtherProblems};
use crate::store::retention::Maintenance;
use crate::store::spool::SpoolError;
use crate::store::{writer, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("writer spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("LLM judge: {0}")]
    Judge(#[from] JudgeBuildError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A built, not yet serving, gateway.
pub struct App {
    pub state: AppState,
    writer_task: JoinHandle<()>,
    /// The LLM judge's queue and worker; None when the judge is off.
    judge: Option<JudgeRuntime>,
    /// Partitions ahead and retention of llm_logs, hourly.
    maintenance: Maintenance,
    /// Follows key changes made by other replicas (PostgreSQL with auth on).
    key_changes: Option<JoinHandle<()>>,
    /// Migrations the database was not there for at start, retried until it answers.
    migrations: Migrations,
}

/// Migrations that could not run at start (the database did not answer), retried in the
/// background; what `/ready` says meanwhile, and a signal for what must wait for them.
struct Migrations {
    /// Why they are pending; None once applied.
    pending: Arc<std::sync::Mutex<Option<String>>>,
    done: tokio::sync::watch::Receiver<bool>,
    task: Option<JoinHandle<()>>,
}

impl Migrations {
    fn start(store: Store, pending: Option<StoreError>) -> Migrations {
        let Some(first) = pending else {
            let (_, done) = tokio::sync::watch::channel(true);
            return Migrations {
                pending: Arc::default(),
                done,
                task: None,
            };
        };
        let reason =
            |e: &StoreError| format!("database migrations pending until the database answers: {e}");
        let pending = Arc::new(std::sync::Mutex::new(Some(reason(&first))));
        let (tx, done) = tokio::sync::watch::channel(false);
        let shared = pending.clone();
        let task = tokio::spawn(async move {
            let mut backoff = MIGRATE_RETRY_MIN;
            loop {
                tokio::time::sleep(backoff).await;
                let outcome = store.migrate().await;
                let mut slot = shared.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(()) => {
                        *slot = None;
                        tx.send_replace(true);
                        tracing::info!("the database answers: migrations applied");
                        return;
                    }
                    Err(e) => {
                        if !e.is_unreachable() {
                            tracing::error!(error = %e, "database migrations failed; retrying");
                        }
                        *slot = Some(reason(&e));
                    }
                }
                backoff = (backoff * 2).min(MIGRATE_RETRY_MAX);
            }
        });
        Migrations {
            pending,
            done,
            task: Some(task),
        }
    }

    /// Turns true once the schema is up to date.
    fn done(&self) -> tokio::sync::watch::Receiver<bool> {
        self.done.clone()
    }

    fn stop(&self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Backoff of the migrations retried in the background.
const MIGRATE_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(500);
const MIGRATE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

impl App {
    /// Connects and migrates the database given in the config. A PostgreSQL database that does
    /// not answer does not stop the start: the gateway serves into the spool, `/ready` says
    /// `degraded`, and the migrations run (and the spool is replayed) once it answers.
    pub async fn build(config: Config) -> Result<App, StartError> {
        let (store, unreachable) =
            Store::open(&config.database.url, config.database.max_connections).await?;
        let pending = match (config.database.run_migrations, unreachable) {
            (false, _) => None,
            (true, Some(e)) => Some(e),
            (true, None) => match store.migrate().await {
                Ok(()) => None,
                Err(e) if e.is_unreachable() => Some(e),
                Err(e) => return Err(e.into()),
            },
        };
        if let Some(e) = &pending {
            tracing::error!(
                error = %e,
                "the database cannot be reached: serving anyway, records go to the spool on disk; migrations run and the spool is replayed once it answers"
            );
        }
        Self::start(config, store, pending)
    }

    /// Builds on an existing, migrated store (tests hand in a fresh database).
    pub fn with_store(config: Config, store: Store) -> Result<App, StartError> {
        Self::start(config, store, None)
    }

    /// Builds on `store`; `pending_migrations` says why they could not run yet (they are retried
    /// in the background until the database answers).
    pub fn start(
        config: Config,
        store: Store,
        pending_migrations: Option<StoreError>,
    ) -> Result<App, StartError> {
        // Building the tokenizer takes a moment; do it off the request path.
        tokio::task::spawn_blocking(crate::provider::tokens::warm_up);
        let metrics = Arc::new(Metrics::new());
        // Opening the spool also starts replaying what a crashed run left in it.
        let (writer_handle, writer_task) =
            writer::spawn(store.logs.clone(), &config.writer, metrics.clone())?;
        let migrations = Migrations::start(store.clone(), pending_migrations);
        let maintenance = Maintenance::start(
            store.retention.clone(),
            config.logging.retention_days,
            metrics.clone(),
            migrations.done(),
        );
        let mut gateway = Gateway::new(&config, metrics.clone(), writer_handle.clone())?;
        let eval = Arc::new(config.eval_settings());
        crate::eval::init_metrics(&eval, &metrics);
        let judge = JudgeRuntime::start(eval.clone(), EvalStores::of(&store), metrics.clone())?;
        if let Some(j) = &judge {
            gateway.set_judge_queue(j.queue());
        }
        let gateway = Arc::new(gateway);
        let shared_limits = SharedLimits::from_config(&config.redis, metrics.clone());
        let auth = Arc::new(Auth::new(
            &config.auth,
            store.keys.clone(),
            metrics.clone(),
            shared_limits,
        ));
        let listen_url = Some(config.database.listen_url.clone()).filter(|u| !u.is_empty());
        let key_changes = crate::auth::follow_key_changes(auth.clone(), listen_url);
        let others: OtherProblems = {
            let auth = auth.clone();
            let pending = migrations.pending.clone();
            Arc::new(move || {
                let auth = auth.clone();
                let pending = pending.clone();
                Box::pin(async move {
                    // Limits fail open or closed as configured, never a lost record: degraded
                    // at worst.
                    let mut problems = Vec::new();
                    problems.extend(auth.shared_limits_problem().await);
                    problems.extend(auth.key_changes_problem());
                    problems.extend(pending.lock().unwrap_or_else(|p| p.into_inner()).clone());
                    problems
                })
            })
        };
        let health = Arc::new(HealthProbe::start(store.clone(), others));
        let state = AppState::new(AppStateInner {
            config: Arc::new(config),
            eval,
            gateway,
            store,
            writer: writer_handle,
            metrics,
            auth,
            health,
        });
        Ok(App {
            state,
            writer_task,
            judge,
            maintenance,
            key_changes,
            migrations,
        })
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, lets in-flight requests finish (bounded by the grace
    /// period), then flushes every queued record before returning.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        let grace = std::time::Duration::from_secs(self.state.config.server.shutdown_grace_secs);
        let limits = self.state.config.connection_limits();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = crate::server::serve(listener, router, limits, async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let mut stop_rx2 = stop_rx.clone();
        tokio::select! {
            () = server => {},
            _ = async move {
                let _ = stop_rx2.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish within the grace period");
            }
        };
        drop(stop_rx);
        let App {
            state,
            writer_task,
            judge,
            maintenance,
            key_changes,
            migrations,
        } = self;
        migrations.stop();
        state.health.stop();
        if let Some(task) = key_changes {
            task.abort();
        }
        maintenance.stop().await;
        if let Some(judge) = judge {
            // No new records arrive now; in-progress judge jobs go back to the queue.
            judge.stop().await;
        }
        let writer = state.writer.clone();
        drop(state);
        // Bounded: with the database down the queue goes to the spool (writer.db_timeout_ms).
        writer::close_and_wait(writer, writer_task).await;
        tracing::info!("writer drained; bye");
        Ok(())
    }
}

/// A gateway serving on a random loopback port, for tests (only with `cfg(test)` or the
/// `testing` feature).
#[cfg(any(test, feature = "testing"))]
pub struct RunningApp {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

#[cfg(any(test, feature = "testing"))]
impl RunningApp {
    pub async fn start(app: App) -> Result<RunningApp, StartError> {
        let listener =
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| StartError::Bind {
                    addr: "127.0.0.1:0".into(),
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: "127.0.0.1:0".into(),
            source,
        })?;
        let state = app.state.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(app.serve(listener, async move {
            let _ = rx.await;
        }));
        Ok(RunningApp {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful stop: returns once every queued record is written.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// An error and its causes on one line, `a: b: c`, leaving out a cause whose text the line
/// already holds (most of our errors quote their source in their own message, and printing the
/// chain as well said everything twice).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!(
        "shutdown signal received: finishing in-flight requests and draining the writer"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_says_each_thing_once() {
        let locked = SpoolError::Locked("/var/lib/lqo/spool".into());
        let e = StartError::from(locked);
        let line = error_chain(&e);
        assert_eq!(
            line.matches("is used by another gateway process").count(),
            1,
            "{line}"
        );
        assert!(
            line.starts_with("writer spool: spool directory /var/lib/lqo/spool"),
            "{line}"
        );
        // A cause the message does not quote is still shown.
        let io = std::io::Error::other("disk on fire");
        let e = SpoolError::Io {
            path: "/x".into(),
            source: io,
        };
        assert!(error_chain(&e).contains("disk on fire"));
    }
}
