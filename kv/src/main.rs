//! The `fenced-kv` binary: flags (and a `--config` file), logging, signals, the admin
//! listener, systemd's readiness notification; everything else is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fenced_gate::Admission;
use fenced_kv::admin::Admin;
use fenced_kv::{Config, Kv};
use fenced_types::service::{config_file, sd_notify};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// A key-value gRPC store whose writes are fenced per resource.
#[derive(Debug, Parser)]
#[command(name = "fenced-kv", version)]
struct Args {
    /// Read settings from this TOML file. Its keys are the long flags in snake_case
    /// (`listen`, `data_dir`, `admin_listen`, ...; packaging/fenced-kv.toml lists them
    /// all); flags and environment variables override it. Read once at start: a change
    /// takes a restart.
    #[arg(long, env = "FENCED_KV_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve gRPC on (the store and the standard health service).
    #[arg(long, env = "FENCED_KV_LISTEN", default_value = "127.0.0.1:7600")]
    listen: SocketAddr,
    /// Directory for the data and the marks.
    #[arg(long, env = "FENCED_KV_DATA_DIR", default_value = "./fenced-kv-data")]
    data_dir: PathBuf,
    /// Turn the gate OFF: accept every write, stale or not (tokens are still recorded).
    /// Only for the zombie demo's counterfactual run.
    #[arg(long, env = "FENCED_KV_UNFENCED")]
    unfenced: bool,
    /// The largest value a Put may carry, in bytes.
    #[arg(long, env = "FENCED_KV_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    max_value_bytes: usize,
    /// On SIGINT/SIGTERM, how long to let requests drain before closing connections.
    #[arg(long, env = "FENCED_KV_DRAIN_TIMEOUT_MS", default_value_t = 5000)]
    drain_timeout_ms: u64,
    /// Demand a signed sequencer with every write and verify it, offline, against the
    /// public keys in this file (one `KEY_ID BASE64URL_PUBLIC_KEY` per line, `#` comments;
    /// every key listed is accepted, so keys rotate). A bare fencing token is then refused.
    /// Off by default: bare tokens are taken.
    #[arg(long, env = "FENCED_KV_VERIFY_KEYS")]
    verify_keys: Option<PathBuf>,
    /// Turn authentication on: every call but health must carry `authorization: Bearer
    /// TOKEN` for a token this file lists (lines `IDENTITY SHA256-OF-TOKEN`, as for
    /// `fenced --auth-tokens`). Off by default.
    #[arg(long, env = "FENCED_KV_AUTH_TOKENS")]
    auth_tokens: Option<PathBuf>,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "FENCED_KV_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM); needs --tls-cert.
    #[arg(long, env = "FENCED_KV_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Turn authentication by client certificates on: a client that presents a certificate
    /// this CA (PEM) signed is let in; one without a certificate needs a bearer token
    /// (--auth-tokens) or is refused. Needs --tls-cert.
    #[arg(long, env = "FENCED_KV_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Append an audit log to this file: one JSON line for every call refused for want of
    /// authentication and every write refused (stale token, missing or forged sequencer,
    /// bad request). Off by default.
    #[arg(long, env = "FENCED_KV_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Rotate the audit log when it reaches this many bytes (FILE.1 ... FILE.5 kept).
    #[arg(long, env = "FENCED_KV_AUDIT_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    audit_max_bytes: u64,
    /// Serve HTTP on this address (port 0 picks a free port): Prometheus `/metrics` and
    /// `/healthz`. Off by default.
    #[arg(long, env = "FENCED_KV_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Args = config_file::parse();
    let mut config = Config {
        data_dir: args.data_dir,
        drain_timeout: std::time::Duration::from_millis(args.drain_timeout_ms),
        verify_keys: args.verify_keys,
        auth_tokens: args.auth_tokens,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(fenced_kv::config::TlsFiles { cert, key }),
            _ => None,
        },
        client_ca: args.client_ca,
        audit_log: args.audit_log,
        audit_max_bytes: args.audit_max_bytes,
        ..Config::default()
    };
    config.gate.max_value_bytes = args.max_value_bytes;
    if args.unfenced {
        config.gate.admission = Admission::Unfenced;
    }
    match serve(config, args.listen, args.admin_listen).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("fenced-kv: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    config: Config,
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
) -> Result<(), String> {
    let shutdown = shutdown_signal()?;
    // The recorder goes in before the store opens, so the first sync is measured too.
    let metrics = match admin_listen {
        Some(_) => Some(
            fenced_kv::metrics::install().map_err(|e| format!("cannot set up the metrics: {e}"))?,
        ),
        None => None,
    };
    let kv = tokio::task::spawn_blocking(move || Kv::open(config))
        .await
        .map_err(|e| format!("opening the store failed: {e}"))?
        .map_err(|e| e.to_string())?;
    if let (Some(addr), Some(metrics)) = (admin_listen, metrics) {
        let admin = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (--admin-listen): {e}"))?;
        let addr = admin
            .local_addr()
            .map_err(|e| format!("cannot read the admin listener's address: {e}"))?;
        println!("fenced-kv admin on {addr}");
        // It ends with the process: it holds nothing that needs closing.
        let routes = Admin::new(metrics, kv.store_stop());
        tokio::spawn(routes.serve(admin, std::future::pending()));
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    // The one stdout line tests and the demo wait for.
    println!("fenced-kv listening on {addr}");
    tracing::info!(%addr, "serving");
    // Under systemd (Type=notify): ready now that the store is open and the port bound.
    notify_systemd(&format!(
        "{}\nSTATUS=serving gRPC on {addr}",
        sd_notify::READY
    ));
    let shutdown = async move {
        shutdown.await;
        notify_systemd(&format!("{}\nSTATUS=shutting down", sd_notify::STOPPING));
    };
    kv.serve(listener, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// Tells systemd `state` when it runs us as a `Type=notify` service (`NOTIFY_SOCKET` set);
/// a failure to do so is logged, not fatal.
fn notify_systemd(state: &str) {
    if let Some(problem) = sd_notify::notify_or_explain(state) {
        tracing::warn!("{problem}");
    }
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use fenced_types::service::config_file;

    use super::Args;

    // checks: none (operations)
    #[test]
    fn every_flag_is_a_config_key_and_the_example_config_lists_each_with_its_default() {
        let example = include_str!("../../packaging/fenced-kv.toml");
        config_file::check_binary(&Args::command(), "packaging/fenced-kv.toml", example)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
