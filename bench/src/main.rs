//! The `fenced-bench` binary: parses flags into a [`fenced_bench::Config`], runs it, and
//! prints the report (Markdown) on stdout; progress goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fenced_bench::config::{FencedTransport, KeepaliveCase, MeasuredServer, Workload};
use fenced_bench::Config;

/// Benchmarks fenced against etcd and Redis on this machine (loopback only).
///
/// A flag given twice takes its last value, so a preset (`scripts/bench.sh --quick`) can be
/// followed by flags that override it.
#[derive(Debug, Parser)]
#[command(name = "fenced-bench", version, args_override_self = true)]
struct Args {
    /// fenced's gRPC endpoint, e.g. http://127.0.0.1:7070.
    #[arg(long)]
    fenced: Option<String>,
    /// fenced's process id (for CPU and memory readings).
    #[arg(long)]
    fenced_pid: Option<u32>,
    /// How fenced's acquires and releases travel, each a system of its own in the tables:
    /// session (a gRPC Session stream per client, the SDK's default and the headline),
    /// unary (unary calls), framed (the framed Session listener, needs --fenced-framed).
    /// Default: session,unary, and framed when --fenced-framed is given.
    #[arg(long, value_delimiter = ',', action = clap::ArgAction::Set)]
    fenced_transports: Option<Vec<String>>,
    /// The address of fenced's framed Session listener (host:port, `fenced
    /// --session-listen`).
    #[arg(long)]
    fenced_framed: Option<String>,
    /// The CA (PEM file) of fenced's TLS certificate: reach fenced over TLS on both
    /// listeners (--fenced is then https://, and the framed session is TLS too).
    #[arg(long)]
    fenced_tls_ca: Option<std::path::PathBuf>,
    /// etcd's gRPC endpoint, e.g. http://127.0.0.1:2379.
    #[arg(long)]
    etcd: Option<String>,
    /// etcd's process id.
    #[arg(long)]
    etcd_pid: Option<u32>,
    /// Redis, e.g. redis://127.0.0.1:6379/.
    #[arg(long)]
    redis: Option<String>,
    /// Redis's process id.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// Workloads to run: serial, cycle, contended, expiry, keepalive.
    #[arg(
        long,
        value_delimiter = ',',
        action = clap::ArgAction::Set,
        default_value = "serial,cycle,contended,expiry,keepalive"
    )]
    workloads: Vec<String>,
    /// How many times each cell runs (the systems in a rotated order each time); the tables
    /// give the median and the range.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Concurrent clients of cycle and contended (contended only from 2).
    #[arg(long, value_delimiter = ',', action = clap::ArgAction::Set, default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Holder/waiter pairs of expiry (spread only from 2).
    #[arg(long, value_delimiter = ',', action = clap::ArgAction::Set, default_value = "1,64")]
    expiry_pairs: Vec<usize>,
    /// Seconds each phase is measured.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Milliseconds of warmup before each cycle and contended phase.
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
    /// Lease TTL of cycle and contended acquires, in seconds.
    #[arg(long, default_value_t = 10)]
    ttl_secs: u64,
    /// Longest a contended waiter waits, in seconds.
    #[arg(long, default_value_t = 30)]
    max_wait_secs: u64,
    /// Longest any one call may take, in seconds.
    #[arg(long, default_value_t = 10)]
    rpc_timeout_secs: u64,
    /// A Redis waiter retries after a random pause of up to twice this, in milliseconds.
    #[arg(long, default_value_t = 5)]
    redis_retry_ms: u64,
    /// The FIFO check forgives jumps over requests sent less than this earlier (ms).
    #[arg(long, default_value_t = 2)]
    fifo_margin_ms: u64,
    /// The unrenewed holder's TTL in the expiry workload, in whole seconds.
    #[arg(long, default_value_t = 2)]
    expiry_ttl_secs: u64,
    /// Each expiry round starts after a random pause of up to this, in milliseconds (a
    /// random phase against any server timer).
    #[arg(long, default_value_t = 1000)]
    expiry_offset_max_ms: u64,
    /// Keepalive cases for fenced: LEASES or LEASESxLOCKS_PER_LEASE.
    #[arg(
        long,
        value_delimiter = ',',
        action = clap::ArgAction::Set,
        default_value = "10000,100000,10000x100"
    )]
    fenced_keepalive: Vec<String>,
    /// Keepalive cases for etcd.
    #[arg(long, value_delimiter = ',', action = clap::ArgAction::Set, default_value = "10000")]
    etcd_keepalive: Vec<String>,
    /// Keepalive lease TTL in whole seconds (renewed every TTL/3).
    #[arg(long, default_value_t = 10)]
    keepalive_ttl_secs: u64,
    /// Seconds the keepalive rate, CPU and memory are measured.
    #[arg(long, default_value_t = 10.0)]
    keepalive_window_secs: f64,
    /// Longest a keepalive case may spend creating its leases and locks, in seconds.
    #[arg(long, default_value_t = 300)]
    keepalive_setup_limit_secs: u64,
    /// KeepAlive streams sharing the leases (each on its own connection).
    #[arg(long, default_value_t = 16)]
    keepalive_streams: usize,
    /// Concurrent requests creating and revoking keepalive leases.
    #[arg(long, default_value_t = 64)]
    setup_concurrency: usize,
    /// A directory on the servers' disk for the fdatasync probe (default: the temp dir).
    #[arg(long)]
    sync_dir: Option<PathBuf>,
    /// Seconds each half of the serial-limit probe runs.
    #[arg(long, default_value_t = 2.0)]
    serial_probe_secs: f64,
    /// Upper bound on the requests of one phase.
    #[arg(long, default_value_t = 10_000_000)]
    max_ops_per_phase: u64,
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("--{what}: {e}"))
}

fn cases(texts: &[String], what: &str) -> Result<Vec<KeepaliveCase>, String> {
    texts
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| KeepaliveCase::parse(t).ok_or_else(|| format!("--{what}: cannot read {t:?}")))
        .collect()
}

fn config(args: Args) -> Result<Config, String> {
    let target =
        |endpoint: Option<String>, pid| endpoint.map(|endpoint| MeasuredServer { endpoint, pid });
    let workloads = args
        .workloads
        .iter()
        .map(|w| Workload::parse(w.trim()).ok_or_else(|| format!("--workloads: unknown {w:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let defaults = Config::default();
    let fenced_transports = match &args.fenced_transports {
        Some(names) => names
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| {
                FencedTransport::parse(n.trim())
                    .ok_or_else(|| format!("--fenced-transports: unknown {n:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let mut transports = defaults.fenced_transports.clone();
            if args.fenced_framed.is_some() {
                transports.push(FencedTransport::Framed);
            }
            transports
        }
    };
    Ok(Config {
        fenced: target(args.fenced, args.fenced_pid),
        fenced_transports,
        fenced_framed: args.fenced_framed,
        fenced_tls_ca: args.fenced_tls_ca,
        etcd: target(args.etcd, args.etcd_pid),
        redis: target(args.redis, args.redis_pid),
        workloads,
        repeats: args.repeats,
        clients: args.clients,
        expiry_pairs: args.expiry_pairs,
        duration: seconds(args.duration_secs, "duration-secs")?,
        warmup: Duration::from_millis(args.warmup_ms),
        ttl: Duration::from_secs(args.ttl_secs),
        max_wait: Duration::from_secs(args.max_wait_secs),
        fifo_margin: Duration::from_millis(args.fifo_margin_ms),
        rpc_timeout: Duration::from_secs(args.rpc_timeout_secs),
        redis_retry: Duration::from_millis(args.redis_retry_ms),
        expiry_ttl: Duration::from_secs(args.expiry_ttl_secs),
        expiry_offset_max: Duration::from_millis(args.expiry_offset_max_ms),
        fenced_keepalive: cases(&args.fenced_keepalive, "fenced-keepalive")?,
        etcd_keepalive: cases(&args.etcd_keepalive, "etcd-keepalive")?,
        keepalive_ttl: Duration::from_secs(args.keepalive_ttl_secs),
        keepalive_window: seconds(args.keepalive_window_secs, "keepalive-window-secs")?,
        keepalive_setup_limit: Duration::from_secs(args.keepalive_setup_limit_secs),
        keepalive_streams: args.keepalive_streams,
        setup_concurrency: args.setup_concurrency,
        sync_dir: args.sync_dir.unwrap_or(defaults.sync_dir),
        serial_probe: seconds(args.serial_probe_secs, "serial-probe-secs")?,
        max_ops_per_phase: args.max_ops_per_phase,
    })
}

/// The same allocator as the server's: the benchmark's clients share the machine with the
/// servers, so the less CPU they spend the more the servers get (every system alike).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match config(Args::parse()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("fenced-bench: {message}");
            return ExitCode::from(2);
        }
    };
    match fenced_bench::run(&config).await {
        Ok(report) => {
            println!("{report}");
            if report.has_failures() {
                eprintln!("fenced-bench: some phases failed or counted failed operations (see the report)");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fenced-bench: {error}");
            ExitCode::from(2)
        }
    }
}
