//! The HTTP server: the accept loop in front of the router, so that no client can exhaust the
//! gateway. At most `max_connections` are open at once (kept below the open-file limit, whose
//! soft value is raised to the hard one at start; beyond the cap new clients wait in the listen
//! backlog, and reaching it is logged). A connection that has not sent a whole request head
//! within the header timeout, or has been idle (nothing read or written, no request being
//! handled) for the idle timeout, is closed: 1,200 connections that never finished their headers
//! made every new client time out before. Accepted connections are served on connection
//! threads, a single-threaded runtime each, in turn (`ConnectionThreads`), or on the caller's
//! runtime when there are none. On shutdown, accepting stops and open connections finish their
//! requests. Imports nothing of ours.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Open files kept free of client connections: the database pool, the spool, logs, and the
/// connection to the upstream that each client's call may open.
const FD_RESERVE: u64 = 256;
/// At most one log line per this interval about the connection cap.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);

/// How many connections, and for how long, a client may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// From the connection's start, or the first byte of a request after an idle spell, until
    /// its head (request line and headers) is complete.
    pub header_read_timeout: Duration,
    /// Nothing read or written while no request is being handled (a keep-alive connection
    /// between requests, or a response the client stopped reading).
    pub idle_timeout: Duration,
    /// Connection threads (`server.connection_threads`); 0 serves connections on the runtime
    /// that calls [`serve`].
    pub threads: usize,
}

/// Raises the soft open-file limit to the hard one and returns the connection cap that fits
/// below it: `wanted`, or half of what is left after [`FD_RESERVE`] (a client's call may open an
/// upstream connection too), at least 16.
pub fn connection_cap(wanted: usize) -> usize {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    let fits = usize::try_from(soft.saturating_sub(FD_RESERVE) / 2).unwrap_or(usize::MAX);
    let cap = wanted.min(fits).max(16);
    tracing::info!(
        open_file_limit = soft,
        max_connections = cap,
        "accepting at most {cap} connections"
    );
    cap
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests and returns once they are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header and idle timeouts are enforced here per connection (hyper's own header timer
    // also runs on idle keep-alive connections, so it cannot tell the two apart).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let threads = match ConnectionThreads::start(limits.threads) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the connection threads; serving on the shared runtime");
            None
        }
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_cap_log: Option<Instant> = None;
    loop {
        if slots.available_permits() == 0 {
            let now = Instant::now();
            if last_cap_log.is_none_or(|t| now.duration_since(t) >= CAP_LOG_EVERY) {
                last_cap_log = Some(now);
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit reached: new clients wait until a connection closes"
                );
            }
        }
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // On a connection thread, the socket is registered with that thread's runtime, so its
        // readiness wakes that thread and no other.
        let (tcp, runtime) = match &threads {
            Some(t) => match t.adopt(tcp) {
                Ok((tcp, handle)) => (tcp, Some(handle)),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot move a connection to a connection thread");
                    continue;
                }
            },
            None => (tcp, None),
        };
        // Small SSE frames must leave at once: without TCP_NODELAY, Nagle's algorithm and
        // delayed ACKs hold streamed chunks back by ~40 ms.
        let _ = tcp.set_nodelay(true);
        let state = Arc::new(ConnState::new());
        let io = TokioIo::new(Tracked {
            inner: tcp,
            state: state.clone(),
        });
        let service = hyper::service::service_fn({
            let router = router.clone();
            let state = state.clone();
            move |req: Request<hyper::body::Incoming>| {
                let busy = Busy::new(state.clone());
                let router = router.clone();
                async move {
                    let response = router.oneshot(req.map(Body::new)).await;
                    drop(busy);
                    response
                }
            }
        });
        let conn = graceful.watch(builder.serve_connection(io, service).into_owned());
        let task = async move {
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                why = state.expired(limits) => {
                    tracing::debug!(reason = why, "connection closed");
                }
            }
            drop(slot);
        };
        match runtime {
            Some(handle) => drop(handle.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
    drop(listener);
    graceful.shutdown().await;
    // Dropping `threads` now stops them; every connection has finished.
}

/// Threads with a single-threaded runtime each, which serve the connections handed to them in
/// turn. A connection, its requests and the upstream connections they use (the direct upstream
/// client keeps a pool per such thread) stay on one thread, so a call needs no wake-up of
/// another thread: on a 2-core VM the shared runtime's cross-thread wake-ups (a futex call and
/// a context switch each, several per call) were a large part of the gateway's CPU per call.
struct ConnectionThreads {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicUsize,
    /// Dropped with the struct: each thread's runtime then returns from `block_on` and stops.
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl ConnectionThreads {
    fn start(n: usize) -> io::Result<Option<ConnectionThreads>> {
        if n == 0 {
            return Ok(None);
        }
        let mut handles = Vec::with_capacity(n);
        let mut stop = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("lqo-conn-{i}"))
                .spawn(move || {
                    let _ = runtime.block_on(rx);
                })?;
        }
        tracing::info!(threads = n, "serving connections on {n} connection threads");
        Ok(Some(ConnectionThreads {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        }))
    }

    /// Moves an accepted connection to the next thread: the socket leaves the accepting
    /// runtime's I/O driver and joins the thread's.
    fn adopt(&self, tcp: TcpStream) -> io::Result<(TcpStream, tokio::runtime::Handle)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        let handle = self.handles[i].clone();
        let std = tcp.into_std()?;
        let _in_thread_runtime = handle.enter();
        Ok((TcpStream::from_std(std)?, handle))
    }
}

/// An accept error: the client's own (reset before it was accepted) is skipped; running out of
/// file descriptors (which the cap should prevent) is logged and waited out.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// What the watchdog of one connection knows about it.
#[derive(Debug)]
struct ConnState {
    epoch: Instant,
    /// Requests whose handler is running.
    busy: AtomicUsize,
    /// Milliseconds since `epoch` of the last byte read or written.
    last_io: AtomicU64,
    /// Milliseconds since `epoch` (plus one, so 0 means none) when the head of the request now
    /// arriving started: the connection's start, or the first byte after an idle spell.
    head_started: AtomicU64,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            epoch: Instant::now(),
            busy: AtomicUsize::new(0),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(1),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn read(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) == 0 {
            let _ = self.head_started.compare_exchange(
                0,
                now + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Resolves when the connection should be closed, saying why. A request being handled
    /// keeps it open: its own deadline (`server.request_timeout_secs`) bounds that.
    async fn expired(&self, limits: ConnectionLimits) -> &'static str {
        let header_ms = limits.header_read_timeout.as_millis() as u64;
        let idle_ms = limits.idle_timeout.as_millis() as u64;
        loop {
            let now = self.now_ms();
            let mut next = now + header_ms.min(idle_ms).max(1);
            if self.busy.load(Ordering::Relaxed) == 0 {
                let head = self.head_started.load(Ordering::Relaxed);
                if head != 0 {
                    let due = head - 1 + header_ms;
                    if now >= due {
                        return "the request head did not arrive within the header timeout";
                    }
                    next = next.min(due);
                } else {
                    let due = self.last_io.load(Ordering::Relaxed) + idle_ms;
                    if now >= due {
                        return "idle for the idle timeout";
                    }
                    next = next.min(due);
                }
            }
            let wait = Duration::from_millis(next.saturating_sub(now).max(1));
            tokio::time::sleep(wait).await;
        }
    }
}

/// Marks a request as being handled until dropped; its head is complete.
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(state: Arc<ConnState>) -> Busy {
        state.busy.fetch_add(1, Ordering::Relaxed);
        state.head_started.store(0, Ordering::Relaxed);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        // The idle clock starts when the handler is done.
        self.0.wrote();
    }
}

/// The connection's socket, noting when bytes move.
struct Tracked {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.state.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.state.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SHORT: Duration = Duration::from_millis(300);
    /// A `/slow-signalled` request has reached its handler.
    static SLOW_STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

    async fn start(
        limits: ConnectionLimits,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let (addr, tx, _) = start_joinable(limits).await;
        (addr, tx)
    }

    async fn start_joinable(
        limits: ConnectionLimits,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(SHORT * 3).await;
                    "slow but fine"
                }),
            )
            .route(
                "/slow-signalled",
                get(|| async {
                    SLOW_STARTED.notify_one();
                    tokio::time::sleep(SHORT * 3).await;
                    "slow but fine"
                }),
            )
            .route(
                "/thread",
                get(|| async { std::thread::current().name().unwrap_or("").to_string() }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, limits, async move {
            let _ = rx.await;
        }));
        (addr, tx, server)
    }

    fn limits(max_connections: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            header_read_timeout: SHORT,
            idle_timeout: SHORT,
            threads: 0,
        }
    }

    /// Reads until the server closes the connection; what it sent.
    async fn until_closed(tcp: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn request(tcp: &mut TcpStream, path: &str) -> String {
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn half_sent_heads_and_idle_connections_are_closed_but_busy_ones_are_not() {
        for threads in [0, 2] {
            timeouts_apply(ConnectionLimits {
                threads,
                ..limits(100)
            })
            .await;
        }
    }

    /// Each connection is served on one connection thread, in turn; requests finish on shutdown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connection_threads_serve_each_connection_on_one_of_them() {
        let (addr, stop, server) = start_joinable(ConnectionLimits {
            threads: 2,
            ..limits(100)
        })
        .await;
        let mut names = Vec::new();
        for _ in 0..4 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let first = request(&mut tcp, "/thread").await;
            let second = request(&mut tcp, "/thread").await;
            let name = first.rsplit("\r\n").next().unwrap().to_string();
            assert!(name.starts_with("lqo-conn-"), "{first}");
            assert!(second.ends_with(&name), "{second}");
            names.push(name);
        }
        assert_eq!(
            names,
            ["lqo-conn-0", "lqo-conn-1", "lqo-conn-0", "lqo-conn-1"]
        );
        // A request in flight when shutdown begins is answered, then the server returns.
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET /slow-signalled HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        SLOW_STARTED.notified().await;
        stop.send(()).unwrap();
        assert!(until_closed(&mut busy).await.ends_with("slow but fine"));
        tokio::time::timeout(SHORT * 10, server)
            .await
            .expect("the server returns once its connections are done")
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }

    async fn timeouts_apply(limits: ConnectionLimits) {
        let (addr, _stop) = start(limits).await;
        // Never finishes its head: closed without an answer.
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        assert_eq!(until_closed(&mut half).await, "");
        // Sends nothing at all: the same.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert_eq!(until_closed(&mut silent).await, "");
        // Keep-alive: answered, then closed once idle.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut idle, "/").await.ends_with("ok"));
        assert_eq!(until_closed(&mut idle).await, "");
        // A handler that outlasts both timeouts keeps its connection.
        let mut busy = TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut busy, "/slow").await.ends_with("slow but fine"));
    }

    #[tokio::test]
    async fn beyond_the_cap_clients_wait_and_are_served_when_a_slot_frees() {
        let (addr, _stop) = start(limits(2)).await;
        let mut hogs = Vec::new();
        for _ in 0..2 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            hogs.push(tcp);
        }
        // The third connects (the kernel's backlog) and is answered once a hog is cut off.
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut third, "/").await.ends_with("ok"));
        for mut hog in hogs {
            assert_eq!(until_closed(&mut hog).await, "");
        }
    }

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        let cap = connection_cap(usize::MAX);
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert!((cap as u64) < soft, "{cap} of {soft}");
        assert_eq!(connection_cap(100), 100.min(cap));
    }
}
