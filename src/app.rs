//! Startup and shutdown: connect the store, apply migrations, start the writer, build the gateway
//! and the router, serve until a signal, then drain the writer so no record is lost.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::gateway::{BuildError, Gateway};
use crate::metrics::Metrics;
use crate::store::{writer, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Build(#[from] BuildError),
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
}

impl App {
    /// Connects and migrates the database given in the config.
    pub async fn build(config: Config) -> Result<App, StartError> {
        let store = Store::connect(&config.database.url, config.database.max_connections).await?;
        if config.database.run_migrations {
            store.migrate().await?;
        }
        Self::with_store(config, store)
    }

    /// Builds on an existing store (tests hand in a fresh database).
    pub fn with_store(config: Config, store: Store) -> Result<App, StartError> {
        // Building the tokenizer takes a moment; do it off the request path.
        tokio::task::spawn_blocking(crate::tokens::warm_up);
        let metrics = Arc::new(Metrics::new());
        let (writer_handle, writer_task) =
            writer::spawn(store.clone(), &config.writer, metrics.clone());
        let gateway = Arc::new(Gateway::new(
            &config,
            metrics.clone(),
            writer_handle.clone(),
        )?);
        let state = AppState {
            config: Arc::new(config),
            gateway,
            store,
            writer: writer_handle,
            metrics,
        };
        Ok(App { state, writer_task })
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
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let mut stop_rx2 = stop_rx.clone();
        let result = tokio::select! {
            r = server => r,
            _ = async move {
                let _ = stop_rx2.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish within the grace period");
                Ok(())
            }
        };
        drop(stop_rx);
        let App { state, writer_task } = self;
        let AppState {
            writer, gateway, ..
        } = state;
        drop(gateway);
        writer::close_and_wait(writer, writer_task).await;
        tracing::info!("writer drained; bye");
        result
    }
}

/// A gateway serving on a random loopback port, for tests and benchmarks.
pub struct RunningApp {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

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
