//! The admin listener (`--admin-listen`, off by default): plain HTTP/1 for operators and
//! their tools, apart from the gRPC port.
//!
//! - `GET /metrics`: Prometheus text ([`crate::metrics`]).
//! - `GET /healthz`: `200 ok` while the store works, `503` naming the failure once a failed
//!   sync stopped it (the process is about to exit then).
//!
//! Kept tiny on hyper (already in the tree through tonic): one request per connection, a
//! bounded number of connections, and a deadline on reading the request, so a client
//! cannot hold the listener.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::stop::StoreStop;

/// Connections served at once; one more is closed at once (a scraper makes one at a time).
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the routes read.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Renders the metrics.
    metrics: PrometheusHandle,
    /// Whether the store stopped.
    stop: StoreStop,
}

impl Admin {
    /// The admin routes over these metrics and this store's stop signal.
    pub fn new(metrics: PrometheusHandle, stop: StoreStop) -> Self {
        Admin { metrics, stop }
    }

    /// Serves the routes on `listener` until `shutdown` completes.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, say: wait a little rather than spin.
                        tracing::warn!(%error, "admin listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "admin listener: too many connections; closed");
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = admin.route(&request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(REQUEST_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(error) = served.await {
                    tracing::debug!(%peer, %error, "admin connection ended");
                }
                drop(slot);
            });
        }
    }

    /// Answers one request.
    fn route<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        }
        match request.uri().path() {
            "/metrics" => {
                self.metrics.run_upkeep();
                let mut response = text(StatusCode::OK, self.metrics.render());
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            "/healthz" => match self.stop.failure() {
                None => text(StatusCode::OK, "ok\n".into()),
                Some(failure) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("stopped: {failure}\n"),
                ),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics or /healthz\n".into(),
            ),
        }
    }
}

/// A plain-text response.
fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
