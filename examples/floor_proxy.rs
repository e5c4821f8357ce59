//! The floor under the gateway's overhead: an HTTP proxy that does nothing but read each request,
//! send it to one upstream and stream the answer back — no parsing, no record, no metrics, no
//! heuristics — on the gateway's own stack: tokio's multi-threaded runtime, hyper-util's server
//! (HTTP/1 and HTTP/2, TCP_NODELAY), mimalloc, and as its client either reqwest, configured as
//! the gateway's providers configure it, or hyper-util's client without reqwest's layers.
//!
//! `bench/overhead.py --floor` runs both beside the gateway in the same scenarios: what any proxy
//! built this way adds on this machine in latency and CPU per call, so how much of the gateway's
//! overhead is its own work and how much is the second HTTP exchange every proxy pays.
//!
//!     cargo run --release --example floor_proxy -- --port 18100 \
//!         --upstream http://127.0.0.1:18001 [--client reqwest|hyper]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::http::uri::{Authority, Scheme};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The largest request body read (the gateway's default limit).
const MAX_BODY: usize = 1 << 20;

#[derive(Clone, Copy, ValueEnum)]
enum ClientKind {
    /// reqwest, as the gateway's providers build it (connect timeout, pool idle timeout,
    /// keep-alive, a total timeout per request).
    Reqwest,
    /// hyper-util's pooled client, without reqwest's layers (redirects, URL handling).
    Hyper,
}

#[derive(Parser)]
#[command(about = "A forward-only proxy: the floor under the gateway's overhead (bench/README.md)")]
struct Args {
    /// Port to listen on (127.0.0.1).
    #[arg(long)]
    port: u16,
    /// Base URL of the upstream, e.g. http://127.0.0.1:18001 (http only).
    #[arg(long)]
    upstream: String,
    #[arg(long, value_enum, default_value = "reqwest")]
    client: ClientKind,
}

enum Upstream {
    Reqwest {
        client: reqwest::Client,
        base: reqwest::Url,
    },
    Hyper {
        client: Box<Client<HttpConnector, Body>>,
        scheme: Scheme,
        authority: Authority,
    },
}

impl Upstream {
    fn new(kind: ClientKind, upstream: &str) -> anyhow::Result<Self> {
        Ok(match kind {
            ClientKind::Reqwest => Upstream::Reqwest {
                client: reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .pool_idle_timeout(Duration::from_secs(90))
                    .tcp_keepalive(Duration::from_secs(30))
                    .build()?,
                base: upstream.parse()?,
            },
            ClientKind::Hyper => {
                let uri: Uri = upstream.parse()?;
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_keepalive(Some(Duration::from_secs(30)));
                connector.set_connect_timeout(Some(Duration::from_secs(10)));
                Upstream::Hyper {
                    client: Box::new(
                        Client::builder(TokioExecutor::new())
                            .pool_idle_timeout(Duration::from_secs(90))
                            .build(connector),
                    ),
                    scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTP),
                    authority: uri
                        .authority()
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("--upstream needs a host"))?,
                }
            }
        })
    }

    /// Reads the whole request (as the gateway must, to parse it), sends it upstream with the
    /// same method, path, query and headers, and streams the answer back.
    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let body = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("request body: {e}")),
        };
        parts.headers.remove(HOST);
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| "/".parse().expect("a valid path"));
        match self {
            Upstream::Reqwest { client, base } => {
                let mut url = base.clone();
                url.set_path(path_and_query.path());
                url.set_query(path_and_query.query());
                let sent = client
                    .request(parts.method, url)
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(answer) => Response::<reqwest::Body>::from(answer).map(Body::new),
                    Err(e) => error(StatusCode::BAD_GATEWAY, format!("upstream: {e}")),
                }
            }
            Upstream::Hyper {
                client,
                scheme,
                authority,
            } => {
                parts.uri = match Uri::builder()
                    .scheme(scheme.clone())
                    .authority(authority.clone())
                    .path_and_query(path_and_query)
                    .build()
                {
                    Ok(uri) => uri,
                    Err(e) => return error(StatusCode::BAD_REQUEST, format!("uri: {e}")),
                };
                match client
                    .request(Request::from_parts(parts, Body::from(body)))
                    .await
                {
                    Ok(answer) => answer.map(Body::new),
                    Err(e) => error(StatusCode::BAD_GATEWAY, format!("upstream: {e}")),
                }
            }
        }
    }
}

fn error(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(Body::from(Bytes::from(message)));
    *response.status_mut() = status;
    response
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let upstream = Arc::new(Upstream::new(args.client, &args.upstream)?);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("floor_proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let upstream = upstream.clone();
        let service = hyper::service::service_fn(move |req| {
            let upstream = upstream.clone();
            async move { Ok::<_, std::convert::Infallible>(upstream.forward(req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(tcp), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
