//! The `fenced-torture` binary: runs the torture (the default), checks a recorded
//! history (`check`), or is one of the workers the runs start (`worker`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use fenced_torture::check::{self, Options as CheckOptions, Rule};
use fenced_torture::nemesis::Kind;
use fenced_torture::run::{self, RunOptions, Weaken};
use fenced_torture::summary::Summary;
use fenced_torture::system::Binaries;
use fenced_torture::worker::{self, WorkerOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// fenced-torture: real processes under faults, and a checker that reads what happened.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a recorded history (one JSON event per line) against CONTRACT.md.
    Check {
        /// The history file.
        history: PathBuf,
    },
    /// One worker process (started by the runs themselves).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// How many runs.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// How long the workers work in each run, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    run_ms: u64,
    /// Worker processes per run.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Locks they compete for (each guards one resource of the store).
    #[arg(long, default_value_t = 2)]
    locks: usize,
    /// The faults mixed, comma-separated; `none` for none. Default: every kind but
    /// power-cut (which needs root and loop devices).
    #[arg(long, value_delimiter = ',')]
    nemesis: Vec<NemesisArg>,
    /// How many faults may be under way at once (on different targets).
    #[arg(long, default_value_t = 2)]
    concurrent_faults: usize,
    /// The mean quiet time before each fault, per concurrent lane, in milliseconds.
    #[arg(long, default_value_t = 500)]
    fault_gap_ms: u64,
    /// The shortest lease TTL the workers ask for, in milliseconds.
    #[arg(long, default_value_t = 500)]
    ttl_min_ms: u64,
    /// The longest lease TTL the workers ask for, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    ttl_max_ms: u64,
    /// The longest a worker holds its token between fence() and the write, in milliseconds.
    #[arg(long, default_value_t = 300)]
    hold_max_ms: u64,
    /// Run a deliberately weakened system, to see the checker catch it.
    #[arg(long)]
    weaken: Option<Weaken>,
    /// Succeed only if each of these rules (S1, S2, S3/S4, S5, S7, L2) was violated: for
    /// the weakened runs, which must be caught.
    #[arg(long, value_delimiter = ',')]
    expect: Vec<String>,
    /// The first run's seed (each run's seed follows from it). Default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Where failing runs are kept (history, violations, timeline).
    #[arg(long, default_value = "torture-failures")]
    keep: PathBuf,
    /// Where the `fenced` and `fenced-kv` binaries are. Default: beside this one (built
    /// first when run by cargo).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Append the summary as Markdown to this file, under this title (`TITLE=FILE`).
    #[arg(long)]
    markdown: Option<String>,
    /// L2 compares waiters only if one started this much earlier, in milliseconds.
    #[arg(long, default_value_t = 500)]
    fifo_margin_ms: u64,
    /// Let the servers' and workers' logs through to stderr.
    #[arg(long)]
    show_logs: bool,
    /// Run the lock server as a cluster of this many members (each its own process and
    /// data directory, a proxy in front of each raft port); the workers are given every
    /// member. `--nemesis all` then mixes the cluster faults, the store's and the workers'.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=7))]
    cluster: Option<u64>,
}

/// A fault kind on the command line (`none` clears the mix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NemesisArg {
    /// No faults.
    None,
    /// Every kind but power-cut (with `--cluster`: every cluster kind, kill-store and
    /// pause-worker).
    All,
    /// kill -9 and restart of the lock server.
    KillServer,
    /// kill -9 and restart of the store.
    KillStore,
    /// SIGSTOP/SIGCONT of a worker.
    PauseWorker,
    /// SIGSTOP/SIGCONT of the lock server.
    PauseServer,
    /// Network faults on a worker's link to the lock server.
    Net,
    /// Power cut under the lock server's data.
    PowerCut,
    /// With --cluster: kill -9 and restart of the leader.
    KillLeader,
    /// With --cluster: kill -9 and restart of a follower.
    KillFollower,
    /// With --cluster: SIGSTOP/SIGCONT of the leader, long enough for an election.
    PauseLeader,
    /// With --cluster: SIGSTOP/SIGCONT of a follower.
    PauseFollower,
    /// With --cluster: the raft traffic into the leader or a follower black-holed or
    /// dropped, one way or both.
    RaftNet,
    /// With --cluster: the leader or a follower cut off from sending to its peers.
    Isolate,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    #[arg(long)]
    name: String,
    #[arg(long)]
    lock_server: String,
    #[arg(long)]
    store: String,
    #[arg(long, value_delimiter = ',')]
    locks: Vec<String>,
    #[arg(long)]
    history: PathBuf,
    #[arg(long)]
    duration_ms: u64,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    ttl_min_ms: u64,
    #[arg(long)]
    ttl_max_ms: u64,
    #[arg(long)]
    hold_max_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { history }) => check_file(&history),
        Some(Command::Worker(args)) => {
            let options = WorkerOptions {
                name: args.name,
                lock_server: args.lock_server,
                store: args.store,
                locks: args.locks,
                history: args.history,
                duration: Duration::from_millis(args.duration_ms),
                seed: args.seed,
                ttl_min: Duration::from_millis(args.ttl_min_ms),
                ttl_max: Duration::from_millis(args.ttl_max_ms),
                hold_max: Duration::from_millis(args.hold_max_ms),
            };
            match worker::run(options).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("fenced-torture worker: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        None => torture(cli.run).await,
    }
}

/// `fenced-torture check HISTORY`.
fn check_file(path: &std::path::Path) -> ExitCode {
    let events = match fenced_torture::history::read(path) {
        Ok(events) => events,
        Err(error) => {
            eprintln!("fenced-torture check: {error}");
            return ExitCode::from(2);
        }
    };
    let report = check::check(&events, &CheckOptions::default());
    for violation in &report.violations {
        println!("{violation}");
    }
    for anomaly in &report.anomalies {
        println!("anomaly: {anomaly}");
    }
    println!(
        "{} operations, {} grants, {} violations",
        report.operations,
        report.grants,
        report.violations.len()
    );
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The runs.
async fn torture(args: RunArgs) -> ExitCode {
    let binaries = match binaries(args.bin_dir.clone()) {
        Ok(binaries) => binaries,
        Err(message) => {
            eprintln!("fenced-torture: {message}");
            return ExitCode::from(2);
        }
    };
    let mut mix: Vec<Kind> = Vec::new();
    let nemesis = if args.nemesis.is_empty() {
        vec![NemesisArg::All]
    } else {
        args.nemesis.clone()
    };
    for arg in nemesis {
        let kinds: &[Kind] = match arg {
            NemesisArg::None => &[],
            NemesisArg::All if args.cluster.is_some() => &Kind::CLUSTER_MIX,
            NemesisArg::All => &Kind::DEFAULT_MIX,
            NemesisArg::KillServer => &[Kind::KillServer],
            NemesisArg::KillStore => &[Kind::KillStore],
            NemesisArg::PauseWorker => &[Kind::PauseWorker],
            NemesisArg::PauseServer => &[Kind::PauseServer],
            NemesisArg::Net => &[Kind::Net],
            NemesisArg::PowerCut => &[Kind::PowerCut],
            NemesisArg::KillLeader => &[Kind::KillLeader],
            NemesisArg::KillFollower => &[Kind::KillFollower],
            NemesisArg::PauseLeader => &[Kind::PauseLeader],
            NemesisArg::PauseFollower => &[Kind::PauseFollower],
            NemesisArg::RaftNet => &[Kind::RaftNet],
            NemesisArg::Isolate => &[Kind::Isolate],
        };
        for kind in kinds {
            if !mix.contains(kind) {
                mix.push(*kind);
            }
        }
    }
    let misfit: Vec<String> = mix
        .iter()
        .filter(|k| {
            if args.cluster.is_some() {
                k.needs_single_server()
            } else {
                k.needs_cluster()
            }
        })
        .map(|k| {
            clap::ValueEnum::to_possible_value(k)
                .map_or_else(|| format!("{k:?}"), |v| v.get_name().to_string())
        })
        .collect();
    if !misfit.is_empty() || (args.cluster.is_some() && args.weaken == Some(Weaken::NoFdatasync)) {
        let why = if !misfit.is_empty() && args.cluster.is_some() {
            "a cluster has no single lock server to kill, pause, cut the power of or proxy \
             (its faults: kill-leader, kill-follower, pause-leader, pause-follower, raft-net, \
             isolate)"
        } else if args.cluster.is_some() {
            "needs power-cut, which needs a single lock server"
        } else {
            "these need --cluster"
        };
        let named = if misfit.is_empty() {
            "--weaken no-fdatasync".to_string()
        } else {
            format!("--nemesis {}", misfit.join(","))
        };
        eprintln!("fenced-torture: {named}: {why}");
        return ExitCode::from(2);
    }
    if args.weaken == Some(Weaken::NoFdatasync) && !mix.contains(&Kind::PowerCut) {
        // Without a power cut, a skipped fdatasync loses nothing: kill -9 keeps the page cache.
        mix.push(Kind::PowerCut);
    }
    let mut expected = Vec::new();
    for id in &args.expect {
        match Rule::ALL.iter().find(|r| r.id().eq_ignore_ascii_case(id)) {
            Some(rule) => expected.push(*rule),
            None => {
                eprintln!("fenced-torture: --expect {id}: not a rule (S1, S2, S3/S4, S5, S7, L2)");
                return ExitCode::from(2);
            }
        }
    }
    let options = RunOptions {
        binaries,
        length: Duration::from_millis(args.run_ms),
        workers: args.workers.max(1),
        locks: args.locks.max(1),
        mix: mix.clone(),
        concurrent_faults: args.concurrent_faults,
        fault_gap: Duration::from_millis(args.fault_gap_ms.max(1)),
        ttl_min: Duration::from_millis(args.ttl_min_ms),
        ttl_max: Duration::from_millis(args.ttl_max_ms.max(args.ttl_min_ms)),
        hold_max: Duration::from_millis(args.hold_max_ms),
        weaken: args.weaken,
        show_logs: args.show_logs,
        cluster: args.cluster.map(|n| n as usize),
        check: CheckOptions {
            fifo_margin: args.fifo_margin_ms.saturating_mul(1_000_000),
            ..CheckOptions::default()
        },
    };
    let first_seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mix_words: Vec<String> = mix
        .iter()
        .map(|k| format!("{k:?}").to_lowercase())
        .collect();
    println!(
        "fenced-torture: {} run(s) of {} ms, {}{} workers, {} locks, faults [{}], {} at once, \
         weakened: {}, first seed {first_seed}",
        args.runs,
        args.run_ms,
        args.cluster
            .map_or(String::new(), |n| format!("a cluster of {n}, ")),
        options.workers,
        options.locks,
        mix_words.join(", "),
        options.concurrent_faults,
        args.weaken
            .map_or("no".to_string(), |w| format!("{w:?}").to_lowercase()),
    );
    let bar = ProgressBar::new(args.runs as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} runs  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut summary = Summary::default();
    let mut harness_failure = None;
    for index in 0..args.runs {
        let seed = first_seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        match run::run(&options, seed).await {
            Ok(result) => {
                let kept = if result.report.violations.is_empty() {
                    None
                } else {
                    match run::keep(&args.keep, &result) {
                        Ok(dir) => Some(dir),
                        Err(error) => {
                            bar.suspend(|| println!("cannot keep run {seed:016x}: {error}"));
                            None
                        }
                    }
                };
                if expected.is_empty() {
                    for violation in result.report.violations.iter().take(3) {
                        bar.suspend(|| println!("run {seed:016x}: {violation}"));
                    }
                }
                summary.add(&result, kept);
            }
            Err(error) => {
                bar.suspend(|| println!("run {seed:016x}: the harness failed: {error}"));
                harness_failure = Some(error);
                break;
            }
        }
        bar.set_message(format!(
            "{} ops, {} faults, {} violations",
            summary.operations,
            summary.fault_total(),
            summary.violation_total()
        ));
        bar.inc(1);
        // Where no progress bar is drawn (CI, a log file), a line every twentieth of the way.
        let done = index + 1;
        if bar.is_hidden() && (done % (args.runs / 20).max(1) == 0 || done == args.runs) {
            println!(
                "{done}/{} runs: {} ops, {} faults, {} violations",
                args.runs,
                summary.operations,
                summary.fault_total(),
                summary.violation_total()
            );
        }
    }
    bar.finish();
    println!("{}", summary.table());
    if let Some(spec) = &args.markdown {
        let (title, file) = spec.split_once('=').unwrap_or(("fenced-torture", spec));
        let text = summary.markdown(title, &format!("fenced-torture {}", shown_args()));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        if let Err(error) = written {
            eprintln!("fenced-torture: cannot write {file}: {error}");
        }
    }
    if harness_failure.is_some() {
        return ExitCode::from(2);
    }
    if !expected.is_empty() {
        let missed: Vec<&str> = expected
            .iter()
            .filter(|r| !summary.violations.contains_key(r))
            .map(|r| r.id())
            .collect();
        if missed.is_empty() {
            println!("the weakened system was caught: every expected rule was violated");
            return ExitCode::SUCCESS;
        }
        println!("NOT CAUGHT: no violation of {}", missed.join(", "));
        return ExitCode::FAILURE;
    }
    if summary.violation_total() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// This run's flags, for the report: without the ones that only say where files are.
fn shown_args() -> String {
    let mut shown = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if ["--bin-dir", "--markdown", "--keep"].contains(&arg.as_str()) {
            args.next();
            continue;
        }
        if ["--bin-dir=", "--markdown=", "--keep="]
            .iter()
            .any(|flag| arg.starts_with(flag))
        {
            continue;
        }
        shown.push(arg);
    }
    shown.join(" ")
}

/// Finds `fenced` and `fenced-kv` (beside this binary unless told), building them first
/// in this binary's profile when cargo runs it.
fn binaries(bin_dir: Option<PathBuf>) -> Result<Binaries, String> {
    let torture = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let dir = match bin_dir {
        Some(dir) => dir,
        None => {
            let dir = torture
                .parent()
                .ok_or("cannot tell where the binaries are")?
                .to_path_buf();
            fenced_demo::cargo::build_beside(
                &dir,
                env!("CARGO_MANIFEST_DIR"),
                &["fenced", "fenced-kv"],
            )?;
            dir
        }
    };
    let binaries = Binaries {
        fenced: dir.join("fenced"),
        kv: dir.join("fenced-kv"),
        torture,
    };
    for path in [&binaries.fenced, &binaries.kv] {
        if !path.exists() {
            return Err(format!(
                "no binary at {} (build it, or say where with --bin-dir)",
                path.display()
            ));
        }
    }
    Ok(binaries)
}
