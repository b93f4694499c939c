//! The `fenced-failover` binary: parses flags into a
//! [`fenced_bench::failover::FailoverConfig`], starts the clusters, kills their leaders,
//! and prints the report (Markdown) on stdout; every kill's numbers go to stderr as they
//! come.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fenced_bench::failover::etcd_cluster::EtcdTiming;
use fenced_bench::failover::fenced_cluster::FencedTiming;
use fenced_bench::failover::probe::ProbeTiming;
use fenced_bench::failover::{self, FailoverConfig};

/// Kills the leader of a 3-member fenced cluster and of a 3-member etcd cluster (loopback,
/// durable defaults) again and again, and measures how long each takes to grant a lock and
/// renew a lease again.
#[derive(Debug, Parser)]
#[command(name = "fenced-failover", version, args_override_self = true)]
struct Args {
    /// The fenced executable (omit to leave fenced out).
    #[arg(long)]
    fenced: Option<PathBuf>,
    /// The etcd executable (omit to leave etcd out).
    #[arg(long)]
    etcd: Option<PathBuf>,
    /// Where the members' data directories and logs go (on disk, not a tmpfs).
    #[arg(long)]
    dir: PathBuf,
    /// Kills per system.
    #[arg(long, default_value_t = 30)]
    kills: usize,
    /// fenced's `--heartbeat-ms`.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// fenced's `--election-timeout-ms` (the shortest timeout; the longest is twice it),
    /// and etcd's `--election-timeout` unless --etcd-election-timeout-ms is given.
    #[arg(long, default_value_t = 200)]
    election_timeout_ms: u64,
    /// etcd's `--heartbeat-interval`. Default: fenced's heartbeat, lowered to a fifth of
    /// the election timeout when above it (etcd refuses an election timeout below five
    /// heartbeats).
    #[arg(long)]
    etcd_heartbeat_ms: Option<u64>,
    /// etcd's `--election-timeout`. Default: --election-timeout-ms.
    #[arg(long)]
    etcd_election_timeout_ms: Option<u64>,
    /// The pause between two attempts of a probe on one member, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pause_ms: u64,
    /// The longest one attempt may take, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    attempt_timeout_ms: u64,
    /// The longest a probe tries after a kill before it counts as failed, in seconds.
    #[arg(long, default_value_t = 30)]
    patience_secs: u64,
    /// How long the cluster must look whole before the next kill, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// The longest a cluster may take to be whole again after a restart, in seconds.
    #[arg(long, default_value_t = 60)]
    rejoin_patience_secs: u64,
}

fn config(args: Args) -> FailoverConfig {
    let ms = Duration::from_millis;
    let etcd_election = args
        .etcd_election_timeout_ms
        .unwrap_or(args.election_timeout_ms);
    let etcd_heartbeat = args
        .etcd_heartbeat_ms
        .unwrap_or_else(|| args.heartbeat_ms.min(etcd_election / 5));
    FailoverConfig {
        fenced: args.fenced,
        etcd: args.etcd,
        dir: args.dir,
        kills: args.kills,
        fenced_timing: FencedTiming {
            heartbeat: ms(args.heartbeat_ms),
            election_timeout: ms(args.election_timeout_ms),
        },
        etcd_timing: EtcdTiming {
            heartbeat: ms(etcd_heartbeat),
            election_timeout: ms(etcd_election),
        },
        probe: ProbeTiming {
            pause: ms(args.pause_ms),
            attempt_timeout: ms(args.attempt_timeout_ms),
            patience: Duration::from_secs(args.patience_secs),
            settle: ms(args.settle_ms),
            rejoin_patience: Duration::from_secs(args.rejoin_patience_secs),
        },
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = config(Args::parse());
    match failover::run(&config).await {
        Ok(report) => {
            println!("{report}");
            if report.has_failures() {
                eprintln!("fenced-failover: some probes failed (see the report)");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fenced-failover: {error}");
            ExitCode::from(2)
        }
    }
}
