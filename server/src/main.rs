//! The `fenced` binary: flags, environment and a `--config` file into a
//! [`fenced::Config`], logs, signals, and systemd's readiness notification.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fenced::cluster::settings::{parse_members, ClusterSettings, ClusterSettingsError};
use fenced::{Config, OpenServer};
use fenced_types::service::{config_file, sd_notify};
use fenced_types::KeyId;

/// fenced: a lock service with fencing tokens.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Read settings from this TOML file. Its keys are the long flags in snake_case
    /// (`listen`, `data_dir`, `max_ttl_ms`, ...; packaging/fenced.toml lists them all);
    /// flags and environment variables override it. Read once at start: a change takes a
    /// restart.
    #[arg(long, env = "FENCED_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "FENCED_LISTEN", default_value = "127.0.0.1:7500")]
    listen: SocketAddr,
    /// Also serve the `Session` protocol over framed TCP on this address (port 0
    /// picks a free port): the same requests as the gRPC `Session` call, at less cost per
    /// message. Over TLS when --tls-cert is given, as gRPC. Off by default.
    #[arg(long, env = "FENCED_SESSION_LISTEN")]
    session_listen: Option<SocketAddr>,
    /// Directory for sled's data (leases and the token counter).
    #[arg(long, env = "FENCED_DATA_DIR", default_value = "./fenced-data")]
    data_dir: PathBuf,
    /// Shortest lease TTL accepted, in milliseconds.
    #[arg(long, env = "FENCED_MIN_TTL_MS", default_value_t = 100)]
    min_ttl_ms: u64,
    /// Longest lease TTL accepted, in milliseconds.
    #[arg(long, env = "FENCED_MAX_TTL_MS", default_value_t = 3_600_000)]
    max_ttl_ms: u64,
    /// Longest lock name accepted, in bytes (at most 256).
    #[arg(long, env = "FENCED_MAX_NAME_BYTES", default_value_t = 256)]
    max_name_bytes: usize,
    /// Live leases at most.
    #[arg(long, env = "FENCED_MAX_LEASES", default_value_t = 1_000_000)]
    max_leases: usize,
    /// Held locks at most.
    #[arg(long, env = "FENCED_MAX_LOCKS", default_value_t = 10_000_000)]
    max_locks: usize,
    /// Queued acquirers at most.
    #[arg(long, env = "FENCED_MAX_WAITERS", default_value_t = 100_000)]
    max_waiters: usize,
    /// Acquires that may wait one authenticated identity may have in flight at most (one
    /// more is refused with RESOURCE_EXHAUSTED); 0 sets no limit beyond --max-waiters.
    #[arg(long, env = "FENCED_MAX_WAITERS_PER_IDENTITY", default_value_t = 0)]
    max_waiters_per_identity: usize,
    /// Live leases one authenticated identity may have at most (one more create is refused
    /// with RESOURCE_EXHAUSTED); 0 sets no limit beyond --max-leases.
    #[arg(long, env = "FENCED_MAX_LEASES_PER_IDENTITY", default_value_t = 0)]
    max_leases_per_identity: usize,
    /// Locks one lease may hold at most; an acquire joining a lease that holds this many is
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FENCED_MAX_LOCKS_PER_LEASE", default_value_t = 1_000)]
    max_locks_per_lease: usize,
    /// Concurrent Watch streams at most; one more is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FENCED_MAX_WATCHERS", default_value_t = 1_000)]
    max_watchers: usize,
    /// Concurrent Watch streams one authenticated identity may have open at most (one more
    /// is refused with RESOURCE_EXHAUSTED); 0 sets no limit beyond --max-watchers.
    #[arg(long, env = "FENCED_MAX_WATCHERS_PER_IDENTITY", default_value_t = 0)]
    max_watchers_per_identity: usize,
    /// The most locks one List page returns (and lock entries it examines); larger requests
    /// are clamped to this.
    #[arg(long, env = "FENCED_MAX_LIST_PAGE", default_value_t = 1_000)]
    max_list_page: usize,
    /// How long a queued acquirer restored after a restart or a failover keeps its place
    /// for its client to send its acquire again, in milliseconds; a restored waiter at the
    /// head of a free lock holds the lock that long at most.
    #[arg(long, env = "FENCED_WAITER_GRACE_MS", default_value_t = 5_000)]
    waiter_grace_ms: u64,
    /// Skip the fdatasync after each journal append: grants then survive a process crash
    /// but not a power cut. Off by default.
    #[arg(long, env = "FENCED_NO_FDATASYNC")]
    no_fdatasync: bool,
    /// How often the journal is moved into sled, in milliseconds.
    #[arg(long, env = "FENCED_CHECKPOINT_MS", default_value_t = 1000)]
    checkpoint_ms: u64,
    /// PING a connection (gRPC or framed session) silent for this long, in milliseconds, to
    /// notice clients that vanished without closing (their queued acquires then leave the
    /// queue).
    #[arg(long, env = "FENCED_KEEPALIVE_INTERVAL_MS", default_value_t = 10_000)]
    keepalive_interval_ms: u64,
    /// Close a connection whose PING is not answered within this, in milliseconds.
    #[arg(long, env = "FENCED_KEEPALIVE_TIMEOUT_MS", default_value_t = 20_000)]
    keepalive_timeout_ms: u64,
    /// Close a new connection that has not finished its TLS handshake and sent the HTTP/2
    /// preface (gRPC) or the hello (framed session) within this, in milliseconds.
    #[arg(long, env = "FENCED_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    handshake_timeout_ms: u64,
    /// Connections open at once on each listener (gRPC, framed session); a connection past
    /// it is closed at once and logged. Keep it below the open-file limit (`ulimit -n`).
    #[arg(long, env = "FENCED_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// HTTP/2 streams open at once on one gRPC connection; a client's calls past it wait
    /// in the client for a stream to end.
    #[arg(long, env = "FENCED_MAX_CONCURRENT_STREAMS", default_value_t = 1024)]
    max_concurrent_streams: u32,
    /// Requests of one `Session` in flight at once; a framed session's request past it is
    /// refused with RESOURCE_EXHAUSTED, a gRPC one's waits.
    #[arg(long, env = "FENCED_MAX_SESSION_IN_FLIGHT", default_value_t = 1024)]
    max_session_in_flight: usize,
    /// On SIGINT/SIGTERM or a fatal error, how long to let in-flight requests finish
    /// before closing connections, in milliseconds.
    #[arg(long, env = "FENCED_DRAIN_TIMEOUT_MS", default_value_t = 5_000)]
    drain_timeout_ms: u64,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "FENCED_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM); needs --tls-cert.
    #[arg(long, env = "FENCED_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Turn authentication on: every call must carry `authorization: Bearer TOKEN` for a
    /// token this file lists (lines `IDENTITY SHA256-OF-TOKEN`). Off by default.
    #[arg(long, env = "FENCED_AUTH_TOKENS")]
    auth_tokens: Option<PathBuf>,
    /// Turn authentication by client certificates on: a client that presents a certificate
    /// this CA (PEM) signed is identified by its first DNS/URI/email alternative name, else
    /// its common name; one without a certificate needs a bearer token (--auth-tokens) or
    /// is refused. Needs --tls-cert.
    #[arg(long, env = "FENCED_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Append an audit log to this file: one JSON line for every grant, release, expiry,
    /// revocation and call refused for want of authentication or permission. Off by
    /// default.
    #[arg(long, env = "FENCED_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Rotate the audit log when it reaches this many bytes (FILE.1 ... FILE.5 kept).
    #[arg(long, env = "FENCED_AUDIT_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    audit_max_bytes: u64,
    /// Restrict what each authenticated identity may do, by lock-name prefix: lines
    /// `IDENTITY PERMISSION PATTERN` (permissions lock, read, admin; patterns NAME,
    /// PREFIX* or *). Whatever it does not grant is refused. Needs --auth-tokens. Off by
    /// default: every authenticated client may do everything.
    #[arg(long, env = "FENCED_POLICY")]
    policy: Option<PathBuf>,
    /// Sign every grant's sequencer with this Ed25519 private key (PKCS#8 DER, as
    /// `fencectl keygen` writes it); needs --signing-key-id. Off by default: grants carry
    /// no sequencer. Gates verify sequencers with the key's public-keys line.
    #[arg(long, env = "FENCED_SIGNING_KEY", requires = "signing_key_id")]
    signing_key: Option<PathBuf>,
    /// The signing key's id, as the verifiers' public-keys file lists it (1 to 64 of
    /// A-Z a-z 0-9 . _ -); needs --signing-key.
    #[arg(long, env = "FENCED_SIGNING_KEY_ID", requires = "signing_key")]
    signing_key_id: Option<KeyId>,
    /// Threads serving connections (tokio workers). Default: one fewer than the machine's
    /// cores, at least one, so the committer thread, which every durable write waits for,
    /// has a core to wake up on.
    #[arg(long, env = "FENCED_WORKER_THREADS")]
    worker_threads: Option<NonZeroUsize>,
    /// Serve plain HTTP on this address: Prometheus /metrics, /healthz, /readyz and the
    /// status page at /. Off by default; port 0 picks a free port (printed on stdout as
    /// `fenced admin on <addr>`).
    #[arg(long, env = "FENCED_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Run as member NODE_ID of a replicated cluster (a number above zero, unique in the
    /// cluster, kept across restarts). Off by default: a single node. Needs --raft-listen.
    #[arg(long, env = "FENCED_NODE_ID", requires = "raft_listen")]
    node_id: Option<u64>,
    /// Address to serve raft to the other members on (cluster members only).
    #[arg(long, env = "FENCED_RAFT_LISTEN", requires = "node_id")]
    raft_listen: Option<SocketAddr>,
    /// The members of a new cluster, this one included, as
    /// `ID=RAFT_HOST:PORT/CLIENT_HOST:PORT,...`: where members reach each other and where
    /// clients are sent to reach the leader. Give the same list to every member of a new
    /// cluster; a member whose data directory already holds a cluster ignores it.
    #[arg(long, env = "FENCED_MEMBERS", requires = "node_id")]
    members: Option<String>,
    /// Cluster members: how often the leader sends heartbeats, in milliseconds.
    #[arg(long, env = "FENCED_HEARTBEAT_MS", default_value_t = 50)]
    heartbeat_ms: u64,
    /// Cluster members: the shortest election timeout in milliseconds (the longest is
    /// twice it): how long followers wait without a heartbeat before electing a new leader.
    #[arg(long, env = "FENCED_ELECTION_TIMEOUT_MS", default_value_t = 200)]
    election_timeout_ms: u64,
    /// Cluster members: how long the leader waits for a quorum to store a commit before it
    /// stops serving and rebuilds its table from the committed state, in milliseconds.
    #[arg(long, env = "FENCED_COMMIT_TIMEOUT_MS", default_value_t = 5_000)]
    commit_timeout_ms: u64,
    /// Cluster members: seed a new cluster from this single node's data directory (stop
    /// that node first). The member commits its locks, leases, lock-delays and token
    /// counter when it first leads an empty cluster, so tokens continue above every token
    /// the single node issued; ignored once the cluster holds any state.
    #[arg(long, env = "FENCED_SEED_FROM", requires = "node_id")]
    seed_from: Option<PathBuf>,
    /// Cluster members: a file holding the cluster's secret (32 to 1,024 printable
    /// characters; the same file on every member). Every raft message then carries it,
    /// and a member's raft listener refuses any message without it. Off by default: keep
    /// the raft port on a private network.
    #[arg(long, env = "FENCED_CLUSTER_SECRET_FILE", requires = "node_id")]
    cluster_secret_file: Option<PathBuf>,
}

impl Args {
    fn config(self) -> Result<Config, ClusterSettingsError> {
        let cluster = match (self.node_id, self.raft_listen) {
            (Some(node_id), Some(raft_listen)) => Some(ClusterSettings {
                initial_members: self
                    .members
                    .as_deref()
                    .map(parse_members)
                    .transpose()?
                    .unwrap_or_default(),
                heartbeat_interval: Duration::from_millis(self.heartbeat_ms),
                election_timeout: Duration::from_millis(self.election_timeout_ms),
                commit_timeout: Duration::from_millis(self.commit_timeout_ms),
                seed_from: self.seed_from,
                peer_secret: self
                    .cluster_secret_file
                    .as_deref()
                    .map(fenced::cluster::peer_auth::PeerSecret::from_file)
                    .transpose()
                    .map_err(|error| ClusterSettingsError::Secret(error.to_string()))?,
                ..ClusterSettings::new(node_id, raft_listen)
            }),
            _ => None,
        };
        Ok(Config {
            data_dir: self.data_dir,
            min_ttl: Duration::from_millis(self.min_ttl_ms),
            max_ttl: Duration::from_millis(self.max_ttl_ms),
            max_name_bytes: self.max_name_bytes,
            max_leases: self.max_leases,
            max_locks: self.max_locks,
            max_waiters: self.max_waiters,
            max_waiters_per_identity: self.max_waiters_per_identity,
            max_leases_per_identity: self.max_leases_per_identity,
            max_locks_per_lease: self.max_locks_per_lease,
            max_watchers: self.max_watchers,
            max_watchers_per_identity: self.max_watchers_per_identity,
            max_list_page: self.max_list_page,
            waiter_grace: Duration::from_millis(self.waiter_grace_ms),
            fdatasync: !self.no_fdatasync,
            checkpoint_interval: Duration::from_millis(self.checkpoint_ms),
            keepalive_interval: Duration::from_millis(self.keepalive_interval_ms),
            keepalive_timeout: Duration::from_millis(self.keepalive_timeout_ms),
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
            max_session_in_flight: self.max_session_in_flight,
            admin_listen: self.admin_listen,
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some(fenced::config::TlsFiles { cert, key }),
                _ => None,
            },
            cluster,
            auth_tokens: self.auth_tokens,
            client_ca: self.client_ca,
            audit_log: self.audit_log,
            audit_max_bytes: self.audit_max_bytes,
            policy: self.policy,
            signing_key: match (self.signing_key, self.signing_key_id) {
                (Some(path), Some(key_id)) => {
                    Some(fenced::signing::SigningKeyFile { path, key_id })
                }
                _ => None,
            },
            ..Config::default()
        })
    }
}

/// mimalloc instead of glibc's malloc: the request path allocates (prost messages, h2
/// frames, futures), and mimalloc spends less CPU per lock cycle on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Args = config_file::parse();
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let workers = args
        .worker_threads
        .map_or_else(|| default_worker_threads(cores), NonZeroUsize::get);
    let (listen, session_listen) = (args.listen, args.session_listen);
    let served = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime ({workers} worker threads): {e}").into())
        .and_then(|runtime| {
            let config = args.config()?;
            runtime.block_on(serve(config, listen, session_listen))
        });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("fenced: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Worker threads for a machine with `cores` cores: one fewer, at least one.
///
/// Why not one per core (tokio's default): every durable write is answered only after the
/// committer thread's `fdatasync`, so a handoff is a chain of wake-ups (a worker wakes the
/// committer, the committer wakes a worker), and each waits for a free core. Leaving a
/// core to the committer hands a contended lock on faster, and leaves the uncontended
/// lock cycle as fast (`bench/analysis.md`, "contended").
fn default_worker_threads(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

async fn serve(
    config: Config,
    listen: SocketAddr,
    session_listen: Option<SocketAddr>,
) -> Result<(), Box<dyn std::error::Error>> {
    // The signal handlers go in before the server says it is ready: a SIGTERM sent right
    // after that line must shut it down in order, not kill it by the default action.
    let shutdown = shutdown_signal()?;
    let raft_listen = config.cluster.as_ref().map(|cluster| cluster.raft_listen);
    let server = OpenServer::open(config)?;
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let listener = bind(listen).await?;
    let sessions = match session_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, restored_leases = server.restored_leases(), "serving");
    // Stdout says where the server listens, the gRPC line last: tests and scripts wait for
    // it to know the server is ready.
    if let Some(admin) = server.admin_addr() {
        println!("fenced admin on {admin}");
    }
    if let Some(sessions) = &sessions {
        println!("fenced sessions on {}", sessions.local_addr()?);
    }
    if let Some(raft) = raft_listen {
        println!("fenced raft on {raft}");
    }
    println!("fenced listening on {addr}");
    // Under systemd (Type=notify): ready now that recovery is done and the listeners are
    // bound (a connection made from here on waits in the backlog until it is accepted).
    // STATUS is what `systemctl status fenced` shows.
    notify_systemd(&format!(
        "{}\nSTATUS=serving gRPC on {addr}",
        sd_notify::READY
    ));
    let shutdown = async move {
        shutdown.await;
        notify_systemd(&format!("{}\nSTATUS=shutting down", sd_notify::STOPPING));
    };
    server
        .serve_with_sessions(listener, sessions, shutdown)
        .await?;
    Ok(())
}

/// Tells systemd `state` when it runs us as a `Type=notify` service (`NOTIFY_SOCKET` set);
/// a failure to do so is logged, not fatal: the server itself works.
fn notify_systemd(state: &str) {
    if let Some(problem) = sd_notify::notify_or_explain(state) {
        tracing::warn!("{problem}");
    }
}

/// Installs the SIGINT and SIGTERM handlers now, and returns what completes on either.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use fenced_types::service::config_file;

    use super::{default_worker_threads, Args};

    // checks: none (operations)
    #[test]
    fn every_flag_is_a_config_key_and_the_example_config_lists_each_with_its_default() {
        let example = include_str!("../../packaging/fenced.toml");
        config_file::check_binary(&Args::command(), "packaging/fenced.toml", example)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn the_default_leaves_one_core_for_the_committer_and_never_goes_below_one_worker() {
        assert_eq!(default_worker_threads(0), 1);
        assert_eq!(default_worker_threads(1), 1);
        assert_eq!(default_worker_threads(2), 1);
        assert_eq!(default_worker_threads(8), 7);
    }
}
