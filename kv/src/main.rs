//! The `fenced-kv` binary: flags, logging, signals; everything else is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fenced_gate::Admission;
use fenced_kv::{Config, Kv};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// A key-value gRPC store whose writes are fenced per resource.
#[derive(Debug, Parser)]
#[command(name = "fenced-kv", version)]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, default_value = "127.0.0.1:7600")]
    listen: SocketAddr,
    /// Directory for the data and the marks.
    #[arg(long, default_value = "./fenced-kv-data")]
    data_dir: PathBuf,
    /// Turn the gate OFF: accept every write, stale or not (tokens are still recorded).
    /// Only for the zombie demo's counterfactual run.
    #[arg(long)]
    unfenced: bool,
    /// The largest value a Put may carry, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_value_bytes: usize,
    /// On SIGINT/SIGTERM, how long to let requests drain before closing connections.
    #[arg(long, default_value_t = 5000)]
    drain_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = Config {
        data_dir: args.data_dir,
        drain_timeout: std::time::Duration::from_millis(args.drain_timeout_ms),
        ..Config::default()
    };
    config.gate.max_value_bytes = args.max_value_bytes;
    if args.unfenced {
        config.gate.admission = Admission::Unfenced;
    }
    match serve(config, args.listen).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("fenced-kv: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, listen: SocketAddr) -> Result<(), String> {
    let kv = tokio::task::spawn_blocking(move || Kv::open(config))
        .await
        .map_err(|e| format!("opening the store failed: {e}"))?
        .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    // The one stdout line tests and the demo wait for.
    println!("fenced-kv listening on {addr}");
    tracing::info!(%addr, "serving");
    kv.serve(listener, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}
