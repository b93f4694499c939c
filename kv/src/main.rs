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
    let shutdown = shutdown_signal()?;
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
    kv.serve(listener, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// Installs the SIGINT and SIGTERM handlers now (before the "listening" line, so a
/// SIGTERM sent right after it shuts down in order instead of killing the process by the
/// default action), and returns what completes on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind: SignalKind| {
        signal(kind).map_err(|e| format!("cannot install the handler of signal {kind:?}: {e}"))
    };
    let mut interrupt = install(SignalKind::interrupt())?;
    let mut terminate = install(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
    })
}
