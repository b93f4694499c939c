//! The admin HTTP listener (`--admin-listen`): plain HTTP/1.1 for operators, beside the
//! gRPC one.
//!
//! # Routes
//! - `GET /metrics`: Prometheus text ([`crate::telemetry`] lists the metrics).
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 once recovery is done and the gRPC listener serves; 503 before
//!   and from the moment shutdown begins.
//! - `GET /`: the status page (`status.html`, built into the binary): live locks with their
//!   time left ticking down, events as they happen, each lock's recent holders.
//! - `GET /api/locks`: what the page shows, as JSON: the first page of `List` (read as
//!   `List` reads, after due expiries, once durable) and the [`history`].
//! - `GET /events`: server-sent events, one per durable lock event. Each stream is a
//!   watcher, under the same `max_watchers` cap as `Watch` streams.
//!
//! With authentication on (`--auth-tokens`), `/api/locks` and `/events` show lock and
//! holder names only to a request with `authorization: Bearer TOKEN` of a listed token,
//! and, with a policy, only the locks its identity may `read` (as `List` and `Watch` do);
//! anything else gets 401 and is audited. `/metrics`, `/healthz`, `/readyz` and the page
//! itself name no lock and stay open, for probes and scrapers.
//!
//! Bounds: connections under `max_connections` (their own count, as each listener has),
//! a request's head within `handshake_timeout`, event streams under `max_watchers` (and
//! per identity, `max_watchers_per_identity`), the history as [`history`] says. It has no
//! TLS: keep it on a trusted network, or authentication on.
//!
//! # Layout
//! - this file: the listener and its connections;
//! - [`routes`]: the handlers;
//! - [`history`]: each lock's recent holders.

pub mod history;
pub mod routes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::admission::{accept, ConnectionLimit};
use crate::auth::AuthLayer;
use crate::config::Config;
use crate::error::Error;
use crate::event_log::RevisedEvent;
use crate::policy::Policy;
use crate::serving::Serving;
use crate::watch::Watchers;
use history::History;

/// How long a connection's open requests get to finish once the listener stops.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The admin listener, bound and with its metrics recorder installed, not yet serving.
pub struct AdminListener {
    /// The bound socket (std, so it can be bound before the runtime serves).
    listener: std::net::TcpListener,
    /// Renders the metrics.
    metrics: PrometheusHandle,
}

impl AdminListener {
    /// Installs the metrics recorder and binds `addr`.
    pub fn bind(addr: SocketAddr) -> Result<AdminListener, Error> {
        let metrics = crate::telemetry::install_recorder()?;
        // Registers every counter now, so `/metrics` shows them from the start (at 0).
        crate::telemetry::telemetry();
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|listener| {
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .map_err(|source| Error::AdminListen { addr, source })?;
        Ok(AdminListener { listener, metrics })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    /// The lock table that answers now, read as `List` reads it.
    pub serving: Serving,
    /// The limits (the page size of `/api/locks`).
    pub config: Arc<Config>,
    /// The `Watch` streams' cap, which event streams count against.
    pub watchers: Watchers,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Whether `/readyz` says ready.
    pub ready: Arc<AtomicBool>,
    /// Each lock's recent holders.
    pub history: Arc<History>,
    /// Cancelled when the admin listener stops: event streams end.
    pub stop: CancellationToken,
    /// Who may see lock data: the gRPC listener's authentication (bearer tokens only).
    pub auth: AuthLayer,
    /// What each identity may read; `None`: everything.
    pub policy: Option<Arc<Policy>>,
}

/// The running admin listener: says ready or not, and stops.
pub struct Admin {
    /// Whether `/readyz` says ready.
    ready: Arc<AtomicBool>,
    /// Stops the listener, its connections and the history's feeder.
    stop: CancellationToken,
    /// The accept loop.
    task: tokio::task::JoinHandle<()>,
}

impl Admin {
    /// Starts serving `listener` (not ready yet: see [`Admin::set_ready`]).
    pub fn start(
        listener: AdminListener,
        serving: Serving,
        config: Arc<Config>,
        watchers: Watchers,
        auth: AuthLayer,
        policy: Option<Arc<Policy>>,
    ) -> Result<Admin, Error> {
        let addr = listener.local_addr().ok();
        let tcp =
            TcpListener::from_std(listener.listener).map_err(|source| Error::AdminListen {
                addr: addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                source,
            })?;
        let stop = CancellationToken::new();
        let ready = Arc::new(AtomicBool::new(false));
        let history = Arc::new(History::default());
        tokio::spawn(feed_history(
            serving.event_log().live(),
            history.clone(),
            stop.clone(),
        ));
        tokio::spawn(crate::telemetry::run_upkeep(
            listener.metrics.clone(),
            stop.clone(),
        ));
        let limit = ConnectionLimit::new("admin", config.max_connections);
        let header_timeout = config.handshake_timeout;
        let state = AdminState {
            serving,
            config,
            watchers,
            metrics: listener.metrics,
            ready: ready.clone(),
            history,
            stop: stop.clone(),
            auth,
            policy,
        };
        let task = tokio::spawn(serve(tcp, state, limit, header_timeout, stop.clone()));
        Ok(Admin { ready, stop, task })
    }

    /// Says whether the server is ready (`/readyz`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// A handle that says whether the server is ready, for whoever starts the shutdown.
    pub fn readiness(&self) -> Readiness {
        Readiness(self.ready.clone())
    }

    /// Stops accepting, ends event streams, gives open requests a moment, and waits for
    /// the accept loop.
    pub async fn stop(self) {
        self.set_ready(false);
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the admin listener failed");
        }
    }
}

/// Says whether the server is ready (`/readyz`); cheap to clone.
#[derive(Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Sets what `/readyz` says.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
}

/// Accepts connections under `limit` and serves each on its own task until `stop`.
async fn serve(
    listener: TcpListener,
    state: AdminState,
    limit: ConnectionLimit,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let router = routes::router(state);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = accept(&listener, "admin") => accepted,
        };
        let Some(slot) = limit.admit(peer) else {
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(CLOSE_GRACE, connection.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "admin connection ended");
            }
        });
    }
}

/// Records every durable lock event in `history` until `stop`, from this node's event log
/// (a cluster member's is fed whether or not it leads). If it falls behind the event ring
/// it skips what it missed (the history is a convenience, not a record) and says so in the
/// log.
async fn feed_history(
    mut events: broadcast::Receiver<Arc<RevisedEvent>>,
    history: Arc<History>,
    stop: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = events.recv() => received,
        };
        match received {
            Ok(revised) => history.record(&revised.event, SystemTime::now()),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "the status page's history missed events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
