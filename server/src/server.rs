//! Running the server: [`OpenServer::open`] recovers the store, then
//! [`OpenServer::serve`] serves gRPC (and, with [`OpenServer::serve_with_sessions`], the
//! framed `Session` protocol too) until the shutdown future completes, in three steps:
//! start (restore the table, start the committer and the reaper), serve, and shut down in
//! order.
//!
//! Shutdown order (STYLE point 5): health says NOT_SERVING (and the admin listener's
//! `/readyz` 503), the listeners stop accepting and in-flight requests drain, the admin
//! listener stops, the reaper stops, the committer flushes one last time.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fenced_proto::v1::admin_service_server::AdminServiceServer;
use fenced_proto::v1::cluster_service_server::ClusterServiceServer;
use fenced_proto::v1::lock_service_server::LockServiceServer;
use fenced_types::sequencer::SigningKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};

use crate::admin::{Admin, AdminListener};
use crate::admission::ConnectionLimit;
use crate::auth::{AuthLayer, Authenticator};
use crate::clock::Clock;
use crate::cluster::member::OpenMember;
use crate::cluster::membership::Membership;
use crate::committer::{run_reaper, spawn_committer};
use crate::config::Config;
use crate::engine::Engine;
use crate::error::Error;
use crate::event_log::{self, EventLog};
use crate::framed;
use crate::grpc_incoming;
use crate::policy::Policy;
use crate::revocation::Revocations;
use crate::service::LockServer;
use crate::serving::Serving;
use crate::signing;
use crate::store::{Recovered, Store};
use crate::table::{Limits, LockTable};
use crate::tls::ServerTls;

/// A server whose store is open and recovered, not yet serving.
pub struct OpenServer {
    /// The validated configuration.
    config: Arc<Config>,
    /// A single node's store, or a cluster member's.
    mode: Mode,
    /// The TLS identity, if the server serves TLS.
    tls: Option<ServerTls>,
    /// The admin listener, bound, if `admin_listen` is set.
    admin: Option<AdminListener>,
    /// Who may call: bearer tokens and client certificates, or nobody checked.
    auth: AuthLayer,
    /// What each identity may do, when a policy file is given.
    policy: Option<Arc<Policy>>,
    /// The key that signs grants' sequencers, if one is configured.
    signer: Option<Arc<SigningKey>>,
}

impl OpenServer {
    /// Validates the configuration and opens and reads the data directory. Fails with a
    /// clear error on a corrupt or unreadable directory.
    pub fn open(config: Config) -> Result<OpenServer, Error> {
        config.validate()?;
        let tls = config
            .tls
            .as_ref()
            .map(|files| ServerTls::load(files, config.client_ca.as_deref()))
            .transpose()?;
        if let Some(path) = &config.audit_log {
            crate::audit::install(path, config.audit_max_bytes)?;
        }
        let auth = config
            .auth_tokens
            .as_deref()
            .map(Authenticator::from_file)
            .transpose()?
            .map(Arc::new);
        let auth = AuthLayer::new(auth, config.client_ca.is_some());
        let policy = config
            .policy
            .as_deref()
            .map(Policy::from_file)
            .transpose()?
            .map(Arc::new);
        if auth.is_on() && policy.is_none() {
            tracing::warn!(
                "authentication is on without a policy file (--policy): every authenticated \
                 identity may lock, read and administer every lock; a policy grants only what \
                 it lists and denies the rest"
            );
        }
        let signer = config.signing_key.as_ref().map(signing::load).transpose()?;
        if let Some(signer) = &signer {
            tracing::info!(
                public_keys_line = %signer.public_line(),
                "signing every grant's sequencer with key {}",
                signer.key_id()
            );
        }
        // Before anything is counted: the metric handles register with the recorder
        // installed at their first use.
        let admin = config.admin_listen.map(AdminListener::bind).transpose()?;
        if let Some(settings) = config.cluster.clone() {
            let member = OpenMember::open(&config, settings)?;
            tracing::info!(dir = %config.data_dir.display(), "opened the cluster member's storage");
            return Ok(OpenServer {
                config: Arc::new(config),
                mode: Mode::Member(Box::new(member)),
                tls,
                admin,
                auth,
                policy,
                signer,
            });
        }
        let (store, recovered) = Store::open(
            &config.data_dir,
            config.fdatasync,
            config.cache_bytes,
            config.checkpoint_interval,
        )?;
        tracing::info!(
            dir = %config.data_dir.display(),
            leases = recovered.leases.len(),
            locks = recovered.locks.len(),
            lock_delays = recovered.delays.len(),
            next_token = %recovered.next_token,
            "recovered"
        );
        Ok(OpenServer {
            config: Arc::new(config),
            mode: Mode::Single {
                store: Box::new(store),
                recovered,
            },
            tls,
            admin,
            auth,
            policy,
            signer,
        })
    }

    /// The admin listener's address, if it has one (port 0 picks a free port).
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin
            .as_ref()
            .and_then(|admin| admin.local_addr().ok())
    }

    /// How many leases were restored (a cluster member restores them when it is
    /// promoted, not at start: 0).
    pub fn restored_leases(&self) -> usize {
        match &self.mode {
            Mode::Single { recovered, .. } => recovered.leases.len(),
            Mode::Member(_) => 0,
        }
    }

    /// Serves gRPC on `listener` until `shutdown` completes or a fatal error occurs.
    /// Restored leases get their full TTL counted from now, the moment serving starts (S2).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        self.serve_with_sessions(listener, None, shutdown).await
    }

    /// As [`OpenServer::serve`], and also the framed `Session` protocol ([`crate::framed`])
    /// on `sessions` when given, over TLS when the server serves TLS.
    pub async fn serve_with_sessions(
        self,
        listener: TcpListener,
        sessions: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let OpenServer {
            config,
            mode,
            tls,
            admin,
            auth,
            policy,
            signer,
        } = self;
        if auth.is_on() && sessions.is_some() {
            return Err(Error::FramedWithoutAuthentication);
        }
        let listeners = Listeners {
            grpc: listener,
            sessions,
            tls,
            admin,
            auth,
            policy,
            signer,
        };
        let (store, recovered) = match mode {
            Mode::Single { store, recovered } => (store, recovered),
            Mode::Member(member) => {
                return serve_member(config, *member, listeners, shutdown).await;
            }
        };
        let started = Started::start(config, *store, recovered)?;
        let serving = Serving::single(started.engine.clone(), started.event_log.clone());
        let served = serve_clients(
            &started.config,
            serving,
            None,
            &started.fatal,
            listeners,
            shutdown,
        )
        .await;
        started.shut_down(served).await
    }
}

/// A single node's store and what it recovered, or a cluster member's storage.
enum Mode {
    /// A single node.
    Single {
        /// The open store (boxed: it is far larger than a member's handle).
        store: Box<Store>,
        /// What was on disk.
        recovered: Recovered,
    },
    /// A cluster member (boxed: its storage handles are larger than a store's).
    Member(Box<OpenMember>),
}

/// Where clients reach the server.
struct Listeners {
    /// The gRPC listener.
    grpc: TcpListener,
    /// The framed `Session` listener, if any.
    sessions: Option<TcpListener>,
    /// The TLS identity, if the server serves TLS.
    tls: Option<ServerTls>,
    /// The admin listener, if any.
    admin: Option<AdminListener>,
    /// Who may call.
    auth: AuthLayer,
    /// What each identity may do, when a policy file is given.
    policy: Option<Arc<Policy>>,
    /// The key that signs grants' sequencers, if any.
    signer: Option<Arc<SigningKey>>,
}

/// What clients are served besides the lock service: a cluster member's `ClusterService`.
type ClusterServices = Option<InterceptedService<ClusterServiceServer<Membership>, AuthLayer>>;

/// Runs a cluster member: starts its raft core and terms, serves clients from whichever
/// term's engine is current until `shutdown` (or a fatal error), then stops the member.
async fn serve_member(
    config: Arc<Config>,
    member: OpenMember,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let fatal = CancellationToken::new();
    let member = member.start(config.clone(), fatal.clone()).await?;
    let membership = Some(ClusterServiceServer::with_interceptor(
        member.membership().with_policy(listeners.policy.clone()),
        listeners.auth.clone(),
    ));
    let served = serve_clients(
        &config,
        member.serving(),
        membership,
        &fatal,
        listeners,
        shutdown,
    )
    .await;
    let stopped = member.stop().await;
    served?;
    stopped?;
    if fatal.is_cancelled() {
        return Err(Error::StoppedByFatalError);
    }
    Ok(())
}

/// Serves gRPC on `listener` (and framed sessions on `sessions`) until `shutdown`
/// completes or a fatal error occurs; then says NOT_SERVING, stops accepting and
/// drains in-flight requests within the drain timeout. Returns once every framed
/// session's undo is staged, so the committer's last commit holds it.
async fn serve_clients(
    config: &Arc<Config>,
    serving: Serving,
    cluster_services: ClusterServices,
    fatal: &CancellationToken,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let Listeners {
        grpc: listener,
        sessions,
        tls,
        admin,
        auth,
        policy,
        signer,
    } = listeners;
    crate::audit::follow(serving.event_log());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<LockServiceServer<LockServer>>()
        .await;
    let reflection = reflection_service(fenced_proto::FILE_DESCRIPTOR_SET)?;

    let revocations = AdminServiceServer::with_interceptor(
        Revocations::new(serving.clone(), config.clone()).with_policy(policy.clone()),
        auth.clone(),
    );
    let service = LockServer::new(serving.clone(), config.clone())
        .with_signer(signer)
        .with_policy(policy.clone());
    let admin = admin
        .map(|admin| {
            Admin::start(
                admin,
                serving,
                config.clone(),
                service.watchers().clone(),
                auth.clone(),
                policy,
            )
        })
        .transpose()?;
    let stop_sessions = CancellationToken::new();
    let framed_sessions = sessions.map(|listener| {
        tokio::spawn(framed::serve(
            listener,
            service.clone(),
            tls.as_ref().map(|tls| tls.framed.clone()),
            stop_sessions.clone(),
            framed::Settings {
                keepalive: framed::Keepalive {
                    interval: config.keepalive_interval,
                    timeout: config.keepalive_timeout,
                },
                handshake_timeout: config.handshake_timeout,
                max_connections: config.max_connections,
                max_in_flight: config.max_session_in_flight,
                drain_timeout: config.drain_timeout,
            },
        ))
    });
    let (drain, draining) = tokio::sync::oneshot::channel::<()>();
    let stopping = {
        let (fatal, stop_sessions) = (fatal.clone(), stop_sessions.clone());
        let readiness = admin.as_ref().map(Admin::readiness);
        async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutting down"),
                _ = fatal.cancelled() => tracing::error!("stopping after a fatal error"),
            }
            if let Some(readiness) = &readiness {
                readiness.set(false);
            }
            health_reporter
                .set_not_serving::<LockServiceServer<LockServer>>()
                .await;
            stop_sessions.cancel();
            let _ = drain.send(());
        }
    };
    // The accept loop, the connection limit, TLS and the handshake timeout are ours
    // (`grpc_incoming`), so tonic's own TCP and TLS settings are not used.
    let incoming = grpc_incoming::incoming(
        listener,
        tls.map(|tls| tls.grpc),
        ConnectionLimit::new("gRPC", config.max_connections),
        config.handshake_timeout,
    );
    let serving = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .max_concurrent_streams(config.max_concurrent_streams)
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection, auth.clone()))
        .add_service(LockServiceServer::with_interceptor(service, auth))
        .add_service(revocations)
        .add_optional_service(cluster_services)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = draining.await;
        });
    tokio::pin!(serving);
    // Recovery is done and the gRPC listener is bound and served from here on.
    if let Some(admin) = &admin {
        admin.set_ready(true);
    }
    let served = tokio::select! {
        served = &mut serving => served,
        _ = stopping => {
            // Drain in-flight requests, but not forever: an HTTP/2 graceful close waits
            // for every client to acknowledge it, and a stuck client must not keep the
            // server (and its final flush) from stopping.
            match tokio::time::timeout(config.drain_timeout, &mut serving).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!(timeout = ?config.drain_timeout, "drain timed out; closing remaining connections");
                    Ok(())
                }
            }
        }
    };
    // The framed sessions have been draining alongside gRPC, within the same timeout
    // (after which their connections are cut, undoing what they had in flight); wait
    // for that, so every undo is staged before the committer's last commit.
    stop_sessions.cancel();
    if let Some(framed_sessions) = framed_sessions {
        if let Err(error) = framed_sessions.await {
            tracing::error!(%error, "the framed session listener failed");
        }
    }
    // The admin listener stops last, so `/readyz` says 503 through the drain.
    if let Some(admin) = admin {
        admin.stop().await;
    }
    served.map_err(Error::Transport)
}

impl Started {
    /// Restores the lock table from what was on disk and starts the background tasks: the
    /// committer thread and the reaper. Restored leases get their full TTL from now.
    fn start(config: Arc<Config>, store: Store, recovered: Recovered) -> Result<Started, Error> {
        let clock = Clock::start();
        let table = LockTable::restore(
            Limits::from(config.as_ref()),
            recovered.next_token,
            recovered.leases,
            recovered.locks,
            recovered.delays,
            recovered.waiters,
            clock.now(),
        )
        .map_err(|source| Error::Inconsistent {
            dir: config.data_dir.clone(),
            source,
        })?;
        let fatal = CancellationToken::new();
        let event_log = EventLog::new(event_log::DEFAULT_CAPACITY, recovered.last_revision);
        let engine = Arc::new(Engine::new(
            table,
            store,
            clock,
            fatal.clone(),
            recovered.last_revision,
            Some(event_log.clone()),
        ));

        let stop_reaper = CancellationToken::new();
        let stop_committer = Arc::new(AtomicBool::new(false));
        let committer =
            spawn_committer(engine.clone(), stop_committer.clone()).map_err(|source| {
                Error::SpawnThread {
                    thread: "committer",
                    source,
                }
            })?;
        let reaper = tokio::spawn(run_reaper(engine.clone(), stop_reaper.clone()));
        Ok(Started {
            config,
            engine,
            event_log,
            fatal,
            committer,
            stop_committer,
            reaper,
            stop_reaper,
        })
    }
}

/// A single node whose table is restored and whose background tasks run: it serves
/// clients through [`serve_clients`], then stops them in order with
/// [`Started::shut_down`].
struct Started {
    /// The validated configuration.
    config: Arc<Config>,
    /// The table and the store.
    engine: Arc<Engine>,
    /// Where the engine publishes its events.
    event_log: Arc<EventLog>,
    /// Cancelled when a background task fails: the server stops.
    fatal: CancellationToken,
    /// The committer thread.
    committer: std::thread::JoinHandle<Result<(), Error>>,
    /// Tells the committer to commit once more and stop.
    stop_committer: Arc<AtomicBool>,
    /// The reaper task.
    reaper: tokio::task::JoinHandle<Result<(), Error>>,
    /// Stops the reaper.
    stop_reaper: CancellationToken,
}

impl Started {
    /// Stops the background tasks in order, once serving has ended (`served`): the reaper,
    /// then the committer, which commits what is left and moves it into sled. Returns the
    /// first failure: serving's, a task's, or the fatal error that stopped the server.
    async fn shut_down(self, served: Result<(), Error>) -> Result<(), Error> {
        let Started {
            engine,
            fatal,
            committer,
            stop_committer,
            reaper,
            stop_reaper,
            ..
        } = self;
        stop_reaper.cancel();
        let reaper_result = reaper.await;
        stop_committer.store(true, Ordering::SeqCst);
        engine.store().kick_committer();
        let committer_result = tokio::task::spawn_blocking(move || committer.join())
            .await
            .map_err(|source| Error::TaskFailed {
                task: "task joining the committer thread",
                source,
            })
            .and_then(|joined| {
                joined.map_err(|_| Error::ThreadPanicked {
                    thread: "committer",
                })
            });
        served?;
        let reaper_result = reaper_result.map_err(|source| Error::TaskFailed {
            task: "reaper",
            source,
        });
        for result in [reaper_result, committer_result] {
            result??;
        }
        if fatal.is_cancelled() {
            return Err(Error::StoppedByFatalError);
        }
        Ok(())
    }
}

/// The gRPC reflection service for `descriptors` (an encoded `FileDescriptorSet`: the
/// protocol's).
fn reflection_service(
    descriptors: &'static [u8],
) -> Result<ServerReflectionServer<impl ServerReflection>, Error> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptors)
        .build_v1()
        .map_err(Error::Reflection)
}

/// Opens the data directory and serves until `shutdown`: the whole server in one call.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    OpenServer::open(config)?.serve(listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    // A reflection service that cannot be built is reported as such, naming what failed,
    // not as a storage failure (nothing was wrong with the disk).
    #[test]
    fn a_reflection_failure_is_not_a_storage_failure() {
        let Err(error) = reflection_service(b"not a descriptor set") else {
            panic!("built a reflection service from garbage");
        };
        assert!(matches!(error, Error::Reflection(_)), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("reflection"), "{message}");
        assert!(!message.contains("storage"), "{message}");
    }
}
