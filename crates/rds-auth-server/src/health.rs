//! The health and metrics HTTP server, on its own port.
//!
//! - `/startup`: 200 once the listener is bound and the allowlist loaded;
//! - `/liveness`: 200 while the process answers at all;
//! - `/readiness`: 200 while serving, 503 from the moment shutdown starts, so a load balancer
//!   stops sending new connections before the listener closes. It never dials a database: a
//!   database outage must not take every replica out of the load balancer at once;
//! - `/metrics`: the Prometheus exposition.
//!
//! Anything else is 404. Only GET and HEAD are served.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::ServerConfig;

/// How long a health client may take to send its request.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the health endpoints on `listener` until `stop`.
pub async fn serve_health(listener: TcpListener, config: Arc<ServerConfig>, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(health.addr = %addr, "health and metrics endpoints listening");
    }
    loop {
        let (tcp, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "health accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let config = config.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &config);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            if let Err(e) = builder.serve_connection(TokioIo::new(tcp), service).await {
                debug!(error = %e, "health connection ended");
            }
        });
    }
}

fn respond(request: &Request<Incoming>, config: &ServerConfig) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
    }
    let phase = &config.phase;
    match request.uri().path() {
        "/startup" if phase.is_started() => text(StatusCode::OK, "started\n"),
        "/startup" => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        "/liveness" => text(StatusCode::OK, "alive\n"),
        "/readiness" if phase.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readiness" if phase.is_draining() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readiness" => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(config.metrics.encode())));
            if let Ok(value) = hyper::header::HeaderValue::from_str(OPENMETRICS) {
                response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
            }
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found: /startup, /liveness, /readiness or /metrics\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    response
}

/// Why a probe of the health endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("{path} answered {status}")]
    Status { path: String, status: StatusCode },
}

/// GETs `path` from the health server at `addr`: the `healthcheck` subcommand, for images
/// with no shell or curl. Ok when the answer is 200.
pub async fn probe(addr: std::net::SocketAddr, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| ProbeError::Connect { addr, source })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|_| ProbeError::Status { path: path.to_owned(), status: StatusCode::BAD_REQUEST })?;
        let response = sender.send_request(request).await?;
        match response.status() {
            StatusCode::OK => Ok(()),
            status => Err(ProbeError::Status { path: path.to_owned(), status }),
        }
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(Err(ProbeError::Timeout(timeout)))
}
