//! [`Kv`]: opens the store, then serves it until shutdown; [`run`] does both.

use std::future::Future;
use std::sync::Arc;

use fenced_gate::{Gate, SledBackend};
use fenced_proto::kv::v1::gated_kv_server::GatedKvServer;
use fenced_types::sequencer::PublicKeys;
use fenced_types::service::audit_log::AuditLog;
use fenced_types::service::bearer::{Authenticator, Identity, UNAUTHENTICATED_CODE};
use fenced_types::service::certificate::{identify, CertificateIdentity};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity as TlsIdentity, ServerTlsConfig};

use crate::audit::Audit;
use crate::config::{Config, TlsFiles};
use crate::error::Error;
use crate::service::KvService;
use crate::stop::StoreStop;

/// Reads and parses the public-keys file.
fn read_keys(path: &std::path::Path) -> Result<Arc<PublicKeys>, Error> {
    let unusable = |problem: String| Error::VerifyKeys {
        path: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| unusable(e.to_string()))?;
    let keys = PublicKeys::parse(&text).map_err(|e| unusable(e.to_string()))?;
    Ok(Arc::new(keys))
}

/// Reads the TLS identity and, with a client CA, the CA clients' certificates are checked
/// against (optional: a client without one needs a bearer token).
fn read_tls(
    files: &TlsFiles,
    client_ca: Option<&std::path::Path>,
) -> Result<ServerTlsConfig, Error> {
    let read = |flag: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::Tls {
            flag,
            path: path.display().to_string(),
            problem: e.to_string(),
        })
    };
    let cert = read("--tls-cert", &files.cert)?;
    let key = read("--tls-key", &files.key)?;
    let mut tls = ServerTlsConfig::new().identity(TlsIdentity::from_pem(cert, key));
    if let Some(ca) = client_ca {
        tls = tls
            .client_ca_root(Certificate::from_pem(read("--client-ca", ca)?))
            .client_auth_optional(true);
    }
    Ok(tls)
}

/// The interceptor in front of `GatedKv`: with authentication on (a tokens file, client
/// certificates, or both), a call is refused with `UNAUTHENTICATED` (`fenced-error:
/// unauthenticated`) before the gate sees it unless a listed bearer token or its
/// connection's client certificate (verified against the client CA in the TLS handshake)
/// names its client; a call that carries a token is judged by the token alone, as by
/// `fenced`. Without authentication every call passes. Health stays open.
#[derive(Debug, Clone)]
struct ClientCheck {
    /// Bearer tokens, if they authenticate.
    tokens: Option<Arc<Authenticator>>,
    /// Whether client certificates authenticate.
    certificates: bool,
    /// Where refusals are recorded.
    audit: Audit,
}

impl ClientCheck {
    /// The identity the request names, or why it names none (the rule fenced's is:
    /// `fenced_types::service::certificate::identify`).
    fn check(&self, request: &tonic::Request<()>) -> Result<Identity, String> {
        let header = request
            .metadata()
            .get("authorization")
            .map(tonic::metadata::MetadataValue::as_bytes);
        identify(self.tokens.as_deref(), self.certificates, header, || {
            let chain = request.peer_certs()?;
            chain
                .first()
                .map(|leaf| CertificateIdentity::of(leaf.as_ref()))
        })
    }
}

impl tonic::service::Interceptor for ClientCheck {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if self.tokens.is_none() && !self.certificates {
            return Ok(request);
        }
        match self.check(&request) {
            Ok(identity) => Ok(named(request, Some(identity))),
            Err(why) => {
                self.audit.unauthenticated(request.remote_addr(), &why);
                let mut status = tonic::Status::unauthenticated(why);
                status.metadata_mut().insert(
                    fenced_proto::metadata::ERROR_CODE,
                    tonic::metadata::MetadataValue::from_static(UNAUTHENTICATED_CODE),
                );
                Err(status)
            }
        }
    }
}

/// Puts the identity a bearer token or certificate named on the request, for the audit
/// log.
fn named(mut request: tonic::Request<()>, identity: Option<Identity>) -> tonic::Request<()> {
    if let Some(identity) = identity {
        request.extensions_mut().insert(identity);
    }
    request
}

/// An opened store, ready to serve. Opening and serving are two steps so the binary can
/// announce "listening" only after recovery (sled's open) has finished.
#[derive(Debug)]
pub struct Kv {
    /// The gate over the sled store.
    gate: Gate<SledBackend>,
    /// The config it was opened with.
    config: Config,
    /// The public keys every write's sequencer is verified with (`--verify-keys`), if any.
    keys: Option<Arc<PublicKeys>>,
    /// Who may call (`--auth-tokens`, `--client-ca`).
    auth: ClientCheck,
    /// The TLS it serves (`--tls-cert`), if any.
    tls: Option<ServerTlsConfig>,
    /// Where refused calls and writes are recorded (`--audit-log`).
    audit: Audit,
    /// Where a request that finds the store stopped says so; the health service, the
    /// admin listener and the serve loop watch it.
    stop: StoreStop,
}

impl Kv {
    /// Validates the config and opens (or recovers) the store. Blocking: sled replays its
    /// log here.
    pub fn open(config: Config) -> Result<Kv, Error> {
        config.validate()?;
        let keys = config.verify_keys.as_deref().map(read_keys).transpose()?;
        let auth = config
            .auth_tokens
            .as_deref()
            .map(Authenticator::from_file)
            .transpose()
            .map_err(|error| Error::AuthTokens(error.to_string()))?
            .map(Arc::new);
        let audit = Audit::new(
            config
                .audit_log
                .as_deref()
                .map(|path| AuditLog::open(path, config.audit_max_bytes))
                .transpose()
                .map_err(|error| Error::Audit(error.to_string()))?,
        );
        let auth = ClientCheck {
            tokens: auth,
            certificates: config.client_ca.is_some(),
            audit: audit.clone(),
        };
        let tls = config
            .tls
            .as_ref()
            .map(|files| read_tls(files, config.client_ca.as_deref()))
            .transpose()?;
        let backend = SledBackend::open(&config.data_dir).map_err(fenced_gate::Error::from)?;
        let gate = Gate::with_config(backend, config.gate.clone())
            .map_err(|e| Error::Config(e.to_string()))?;
        if config.unfenced() {
            tracing::warn!(
                "!!! THE GATE IS OFF (--unfenced): stale writes are ACCEPTED; fencing tokens \
                 are only recorded. This mode exists for the zombie demo's counterfactual \
                 run. Never use it for data you care about. !!!"
            );
        }
        // One duration per sync into the `fenced_kv_sync_seconds` histogram (a no-op until
        // a metrics recorder is installed).
        gate.backend()
            .group_commit()
            .observe_syncs(crate::metrics::record_sync);
        if let Some(keys) = &keys {
            let ids: Vec<&str> = keys.key_ids().into_iter().map(|id| id.as_str()).collect();
            tracing::info!(
                keys = %ids.join(","),
                "every write must carry a sequencer signed by one of these keys"
            );
        }
        Ok(Kv {
            gate,
            config,
            keys,
            auth,
            tls,
            audit,
            stop: StoreStop::new(),
        })
    }

    /// The handle that tells whether the store stopped at a failed sync (for `/healthz`).
    pub fn store_stop(&self) -> StoreStop {
        self.stop.clone()
    }

    /// The gate (for in-process use and tests).
    pub fn gate(&self) -> &Gate<SledBackend> {
        &self.gate
    }

    /// Serves `fenced.kv.v1.GatedKv` and the standard gRPC health service on `listener`
    /// until `shutdown` completes, then reports NOT_SERVING, stops accepting, lets
    /// in-flight requests finish, and flushes the store.
    ///
    /// Health: SERVING (for `""` and `fenced.kv.v1.GatedKv`) from the start, since the
    /// store is open by then; NOT_SERVING once shutdown starts or the store stops.
    ///
    /// If the store stops at a failed sync, it shuts down the same way by itself (every
    /// request is refused by then), leaves the store unflushed and open (closing it would
    /// make sled write and sync once more), and returns that failure as the error: the
    /// caller exits.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let stop = self.stop.clone();
        let service = tonic::service::interceptor::InterceptedService::new(
            GatedKvServer::new(
                KvService::new(self.gate.clone(), stop.clone())
                    .with_keys(self.keys.clone())
                    .with_audit(self.audit.clone()),
            )
            .max_decoding_message_size(self.config.max_message_bytes()),
            self.auth.clone(),
        );
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<GatedKvServer<KvService>>().await;
        // Tell the drain timer when shutdown starts.
        let (started, shutdown_started) = tokio::sync::oneshot::channel::<()>();
        let shutdown = {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = stop.stopped() => {}
                }
                // Not-serving first: a health check made during the drain is told.
                health.set_not_serving::<GatedKvServer<KvService>>().await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                let _ = started.send(());
            }
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls.clone() {
            builder = builder.tls_config(tls).map_err(|e| Error::Tls {
                flag: "--tls-cert",
                path: self
                    .config
                    .tls
                    .as_ref()
                    .map(|files| files.cert.display().to_string())
                    .unwrap_or_default(),
                problem: e.to_string(),
            })?;
        }
        let serving = builder
            .layer(fenced_gate::grpc::layer())
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown);
        let drain_timeout = self.config.drain_timeout;
        let drain_deadline = async move {
            if shutdown_started.await.is_ok() {
                tokio::time::sleep(drain_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let served = tokio::select! {
            served = serving => served,
            () = drain_deadline => {
                tracing::warn!(?drain_timeout, "connections did not drain in time; closing them");
                Ok(())
            }
        };
        if let Some(failure) = stop.failure() {
            // A stopped store is left as it is, neither flushed nor closed: closing makes
            // sled flush and sync once more (and sled 0.34 panics if that sync fails), and
            // nothing more may reach a store that stopped. The process is about to exit.
            std::mem::forget(self.gate);
            return Err(Error::Storage(failure.into()));
        }
        // Flush even if serving failed: whatever was accepted is durable already, this only
        // settles sled's own state for a quick next open.
        let gate = self.gate.clone();
        let flushed = tokio::task::spawn_blocking(move || gate.flush())
            .await
            .map_err(|e| Error::Serve(format!("the flush task failed: {e}")))?;
        served.map_err(|e| Error::Serve(e.to_string()))?;
        flushed?;
        tracing::info!("fenced-kv stopped");
        Ok(())
    }
}

/// Opens the store in `config.data_dir` and serves it on `listener` until `shutdown`:
/// fenced-kv in-process.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let kv = tokio::task::spawn_blocking(move || Kv::open(config))
        .await
        .map_err(|e| Error::Serve(format!("the open task failed: {e}")))??;
    kv.serve(listener, shutdown).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use fenced_gate::{Error as GateError, StorageError};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;

    // checks: none (operations)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_is_serving_while_the_store_works_and_not_serving_once_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            // Far longer than the test: the health stream must be told before the drain ends.
            drain_timeout: Duration::from_secs(300),
            ..Config::default()
        };
        let kv = Kv::open(config).unwrap();
        let stop = kv.store_stop();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = tokio::spawn(kv.serve(listener, std::future::pending()));

        // Phase 1: an open store is SERVING, as a whole and as the GatedKv service.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        for service in ["", "fenced.kv.v1.GatedKv"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        let mut watch = health
            .watch(HealthCheckRequest {
                service: "fenced.kv.v1.GatedKv".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::Serving as i32);

        // Phase 2: a request meets a failed sync (reported as the service reports it): the
        // watcher is told NOT_SERVING, and the server stops with that failure.
        let failure = StorageError::new("fdatasync of sled's data file", "EIO").into_stopped();
        stop.report(&GateError::Storage(failure.clone()));
        let next = tokio::time::timeout(Duration::from_secs(60), watch.message())
            .await
            .expect("the health stream is told within a minute")
            .unwrap()
            .unwrap();
        assert_eq!(next.status, ServingStatus::NotServing as i32);
        // The open stream would hold the drain until its timeout: close the connection.
        drop((watch, health));
        let served = tokio::time::timeout(Duration::from_secs(60), serving)
            .await
            .expect("the server stops once its connections close")
            .unwrap();
        assert_eq!(served, Err(Error::Storage(failure.into())));
    }
}
