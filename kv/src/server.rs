//! [`Kv`]: opens the store, then serves it until shutdown; [`run`] does both.

use std::future::Future;

use fenced_gate::{Gate, SledBackend};
use fenced_proto::kv::v1::gated_kv_server::GatedKvServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::Config;
use crate::error::Error;
use crate::service::KvService;
use crate::stop::StoreStop;

/// An opened store, ready to serve. Opening and serving are two steps so the binary can
/// announce "listening" only after recovery (sled's open) has finished.
#[derive(Debug)]
pub struct Kv {
    /// The gate over the sled store.
    gate: Gate<SledBackend>,
    /// The config it was opened with.
    config: Config,
}

impl Kv {
    /// Validates the config and opens (or recovers) the store. Blocking: sled replays its
    /// log here.
    pub fn open(config: Config) -> Result<Kv, Error> {
        config.validate()?;
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
        Ok(Kv { gate, config })
    }

    /// The gate (for in-process use and tests).
    pub fn gate(&self) -> &Gate<SledBackend> {
        &self.gate
    }

    /// Serves `fenced.kv.v1.GatedKv` on `listener` until `shutdown` completes, then stops
    /// accepting, lets in-flight requests finish, and flushes the store.
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
        let stop = StoreStop::new();
        let service = GatedKvServer::new(KvService::new(self.gate.clone(), stop.clone()))
            .max_decoding_message_size(self.config.max_message_bytes());
        // Tell the drain timer when shutdown starts.
        let (started, shutdown_started) = tokio::sync::oneshot::channel::<()>();
        let shutdown = {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = stop.stopped() => {}
                }
                let _ = started.send(());
            }
        };
        let serving = tonic::transport::Server::builder()
            .layer(fenced_gate::grpc::layer())
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
