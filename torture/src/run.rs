//! One run: start the system, let the workers work while the nemeses strike, heal
//! everything, read the store's final values, stop, gather the history and check it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fenced_demo::process::Child;
use fenced_proto::kv::v1::gated_kv_client::GatedKvClient;
use fenced_tests::power_cut::ScratchFs;
use fenced_tests::proxy::Proxy;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

use crate::check::{self, Options as CheckOptions, Report};
use crate::history::{self, now, Event, Op, Outcome, Recorder};
use crate::nemesis::{self, Action, Fault, Kind, Target};
use crate::system::{Binaries, HarnessError, Server, System, WorkerProcess};
use crate::worker::KEY;

/// A deliberately weakened system, to prove the checker sees what it must.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Weaken {
    /// The store's gate is off (`fenced-kv --unfenced`): stale writes land.
    Unfenced,
    /// The lock server skips its fdatasync (`fenced --no-fdatasync`), on a filesystem
    /// whose power the nemesis cuts: acknowledged grants and tokens are lost.
    NoFdatasync,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The binaries.
    pub binaries: Binaries,
    /// How long the workers work.
    pub length: Duration,
    /// How many workers.
    pub workers: usize,
    /// How many locks they share.
    pub locks: usize,
    /// The fault kinds mixed.
    pub mix: Vec<Kind>,
    /// How many faults may be under way at once.
    pub concurrent_faults: usize,
    /// The mean quiet time between one fault's end and the next one's start.
    pub fault_gap: Duration,
    /// The shortest TTL the workers ask for.
    pub ttl_min: Duration,
    /// The longest TTL the workers ask for.
    pub ttl_max: Duration,
    /// The longest a worker holds its token before the write.
    pub hold_max: Duration,
    /// A weakened system, if any.
    pub weaken: Option<Weaken>,
    /// Let the servers' logs through to stderr.
    pub show_logs: bool,
    /// Run the lock server as a cluster of this many members (`None`: one process).
    pub cluster: Option<usize>,
    /// The checker's tolerances.
    pub check: CheckOptions,
}

/// What one run did and what the checker found.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The run's seed.
    pub seed: u64,
    /// The checker's report.
    pub report: Report,
    /// Faults carried out, by label (`kill fenced`, `net-drop-up link`).
    pub faults: BTreeMap<String, usize>,
    /// The merged history.
    pub events: Vec<Event>,
    /// How long it took, start to checked.
    pub wall: Duration,
}

/// Runs once with `seed`, in a fresh temporary directory.
pub async fn run(options: &RunOptions, seed: u64) -> Result<RunResult, HarnessError> {
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(|e| io("a temporary directory", e))?;
    let recorder = Arc::new(Recorder::create(&dir.path().join("harness.jsonl"))?);
    let mut rng = StdRng::seed_from_u64(seed);
    let locks: Vec<String> = (0..options.locks).map(|i| format!("l{i}")).collect();

    let system = start(options, dir.path(), &recorder, &locks, seed).await?;
    // In a cluster, leader changes the nemeses did not make (an election under load) are
    // recorded as faults too: a waiter cut off by one takes back its place only if its
    // place was committed, which the harness cannot tell.
    let leader_watch = system.is_cluster().then(|| {
        let endpoints: Vec<String> = system.lock_servers.iter().map(Server::endpoint).collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(watch_leader(endpoints, recorder.clone(), stop.clone()));
        (task, stop)
    });
    let system = Arc::new(Mutex::new(system));

    // The nemeses, until the workers' time is up.
    let deadline = Instant::now() + options.length;
    let busy: Arc<Mutex<HashSet<Target>>> = Arc::default();
    let mut nemeses = Vec::new();
    for lane in 0..options.concurrent_faults.max(1) {
        if options.mix.is_empty() {
            break;
        }
        let system = system.clone();
        let busy = busy.clone();
        let options = options.clone();
        let lane_seed = rng.random::<u64>() ^ lane as u64;
        nemeses.push(tokio::spawn(async move {
            nemesis_lane(&system, &busy, &options, deadline, lane_seed).await
        }));
    }
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    let mut failure = None;
    for lane in nemeses {
        match lane.await {
            Ok(Ok(done)) => {
                for (label, count) in done {
                    *faults.entry(label).or_default() += count;
                }
            }
            Ok(Err(error)) => failure = Some(error),
            Err(join) => {
                failure = Some(HarnessError::Io {
                    what: "a nemesis".into(),
                    reason: join.to_string(),
                })
            }
        }
    }
    let mut system = Arc::try_unwrap(system)
        .map_err(|_| HarnessError::Io {
            what: "ending the run".into(),
            reason: "the system is still shared".into(),
        })?
        .into_inner();
    if let Some(error) = failure {
        return Err(error);
    }

    // Everything healed: the workers finish, then the harness reads what the store holds.
    let mut leader_watch = leader_watch;
    for worker in &mut system.workers {
        let grace = options.length + Duration::from_secs(30);
        if worker.child.wait_for_exit(grace).await?.is_none() {
            worker.child.kill().await?;
        }
    }
    if let Some((task, stop)) = leader_watch.take() {
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        task.await.map_err(|join| HarnessError::Io {
            what: "the leader watch".into(),
            reason: join.to_string(),
        })??;
    }
    final_reads(&system.store, &recorder, &locks).await?;
    for lock_server in &mut system.lock_servers {
        lock_server.kill(&recorder).await?;
    }
    system.store.kill(&recorder).await?;

    let mut events = history::read(&dir.path().join("harness.jsonl"))?;
    for worker in &system.workers {
        events.extend(history::read(&worker.history)?);
    }
    events.sort_by_key(|e| e.time());
    drop(system);
    let report = check::check(&events, &options.check);
    Ok(RunResult {
        seed,
        report,
        faults,
        events,
        wall: started.elapsed(),
    })
}

/// Starts the servers, the proxies and the workers.
async fn start(
    options: &RunOptions,
    dir: &Path,
    recorder: &Arc<Recorder>,
    locks: &[String],
    seed: u64,
) -> Result<System, HarnessError> {
    let mut lock_flags = vec!["--min-ttl-ms".to_string(), "100".to_string()];
    let mut kv_flags = Vec::new();
    let mut scratch = None;
    let mut lock_data = dir.join("fenced");
    match options.weaken {
        Some(Weaken::Unfenced) => kv_flags.push("--unfenced".to_string()),
        Some(Weaken::NoFdatasync) => {
            lock_flags.extend(["--no-fdatasync", "--checkpoint-ms", "600000"].map(String::from));
        }
        None => {}
    }
    if options.mix.contains(&Kind::PowerCut) {
        let fs = ScratchFs::mount().map_err(|reason| HarnessError::Io {
            what: "a filesystem whose power can be cut (needs root, loop devices, mkfs.ext4)"
                .into(),
            reason,
        })?;
        lock_data = fs.path().join("fenced");
        scratch = Some(fs);
    }
    let (lock_servers, raft_proxies) = match options.cluster {
        Some(size) => {
            crate::cluster::start(
                size,
                &options.binaries.fenced,
                dir,
                &lock_flags,
                options.show_logs,
                recorder,
            )
            .await?
        }
        None => {
            let lock_server = Server::start(
                crate::check::model::LOCK_SERVER,
                &options.binaries.fenced,
                "fenced",
                lock_data,
                lock_flags,
                options.show_logs,
                recorder,
            )
            .await?;
            (vec![lock_server], Vec::new())
        }
    };
    let store = Server::start(
        "fenced-kv",
        &options.binaries.kv,
        "fenced-kv",
        dir.join("kv"),
        kv_flags,
        options.show_logs,
        recorder,
    )
    .await?;
    let single = match (options.cluster, lock_servers.first()) {
        (None, Some(lock_server)) => {
            Some(lock_server.addr().parse().map_err(|e| HarnessError::Io {
                what: format!("lock server address {}", lock_server.addr()),
                reason: format!("{e}"),
            })?)
        }
        _ => None,
    };
    let members = lock_servers
        .iter()
        .map(Server::endpoint)
        .collect::<Vec<_>>()
        .join(",");
    let mut workers = Vec::new();
    for index in 0..options.workers {
        let name = format!("w{}", index + 1);
        // A single lock server is reached through the worker's own proxy; a cluster's
        // members directly, all of them (the SDK follows the leader).
        let (proxy, lock_server) = match single {
            Some(target) => {
                let proxy = Proxy::start(target).await;
                let endpoint = proxy.endpoint();
                (Some(proxy), endpoint)
            }
            None => (None, members.clone()),
        };
        let history = dir.join(format!("{name}.jsonl"));
        let args: Vec<String> = vec![
            "worker".into(),
            "--name".into(),
            name.clone(),
            "--lock-server".into(),
            lock_server,
            "--store".into(),
            store.endpoint(),
            "--locks".into(),
            locks.join(","),
            "--history".into(),
            history.display().to_string(),
            "--duration-ms".into(),
            options.length.as_millis().to_string(),
            "--seed".into(),
            (seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_string(),
            "--ttl-min-ms".into(),
            options.ttl_min.as_millis().to_string(),
            "--ttl-max-ms".into(),
            options.ttl_max.as_millis().to_string(),
            "--hold-max-ms".into(),
            options.hold_max.as_millis().to_string(),
        ];
        let child = Child::spawn(&name, &options.binaries.torture, &args, options.show_logs)?;
        workers.push(WorkerProcess {
            name,
            child,
            history,
            proxy,
            holding_until: 0,
        });
    }
    Ok(System {
        lock_servers,
        raft_proxies,
        store,
        workers,
        recorder: recorder.clone(),
        scratch,
    })
}

/// How far past the workers' time a fault may last.
const FAULT_OVERRUN: Duration = Duration::from_secs(1);

/// One nemesis lane: faults one after another, on targets no other lane is hitting,
/// until the deadline. Returns the faults it carried out, by label.
async fn nemesis_lane(
    system: &Mutex<System>,
    busy: &Mutex<HashSet<Target>>,
    options: &RunOptions,
    deadline: Instant,
    seed: u64,
) -> Result<BTreeMap<String, usize>, HarnessError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done = BTreeMap::new();
    loop {
        let gap_ms = options.fault_gap.as_millis() as u64;
        let gap = Duration::from_millis(rng.random_range(gap_ms / 2..=gap_ms * 3 / 2));
        if Instant::now() + gap >= deadline {
            break;
        }
        tokio::time::sleep(gap).await;
        let kind = options.mix[rng.random_range(0..options.mix.len())];
        let mut fault = kind.draw(&mut rng, options.workers, options.ttl_min, options.ttl_max);
        if matches!(fault.target, Target::Worker(_)) && rng.random_bool(0.6) {
            // Most pauses aim at a worker that holds a token before its write, and last
            // longer than any TTL: the moment a pause makes a zombie.
            let aim_until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < aim_until.min(deadline) {
                let holding = system.lock().await.holding();
                if !holding.is_empty() {
                    let worker = holding[rng.random_range(0..holding.len())];
                    let max = options.ttl_max.as_millis() as u64;
                    fault = Fault {
                        target: Target::Worker(worker),
                        action: Action::Pause {
                            length: Duration::from_millis(rng.random_range(max * 3 / 2..=max * 3)),
                        },
                        aim: None,
                    };
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // A fault that would outlast the run by much only makes the run longer.
        if Instant::now() + fault.length() > deadline + FAULT_OVERRUN {
            continue;
        }
        // A cluster fault strikes the member that leads (or one that follows) now.
        let Some(fault) = nemesis::resolve(system, fault, &mut rng).await? else {
            continue;
        };
        if !busy.lock().await.insert(fault.busy_key()) {
            continue;
        }
        let result = nemesis::apply(system, fault).await;
        busy.lock().await.remove(&fault.busy_key());
        result?;
        *done.entry(fault.label()).or_default() += 1;
    }
    Ok(done)
}

/// Reads every resource's key once everything is healed (retrying while the store comes
/// back), and records the reads.
async fn final_reads(
    store: &Server,
    recorder: &Recorder,
    locks: &[String],
) -> Result<(), HarnessError> {
    let channel = tonic::transport::Endpoint::from_shared(store.endpoint())
        .map_err(|e| HarnessError::Io {
            what: "the store's endpoint".into(),
            reason: e.to_string(),
        })?
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut client = GatedKvClient::new(channel);
    for (id, lock) in (1u64..).zip(locks) {
        let op = Op::FinalRead {
            resource: lock.clone(),
            key: KEY.to_string(),
        };
        for attempt in 0..20 {
            let t = now();
            let outcome = crate::worker::read(&mut client, lock).await;
            if matches!(outcome, Outcome::Read { .. }) || attempt == 19 {
                let id = id * 100 + attempt;
                recorder.record(&Event::Invoke {
                    t,
                    process: "harness".into(),
                    id,
                    op: op.clone(),
                })?;
                recorder.record(&Event::Complete {
                    t: now(),
                    process: "harness".into(),
                    id,
                    outcome,
                })?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// Keeps a failing run's history, its report and its timeline in `dir`.
pub fn keep(dir: &Path, result: &RunResult) -> Result<PathBuf, HarnessError> {
    let run_dir = dir.join(format!("run-{:016x}", result.seed));
    std::fs::create_dir_all(&run_dir).map_err(|e| io("the failure directory", e))?;
    history::write(&run_dir.join("history.jsonl"), &result.events)?;
    let mut text = String::new();
    for violation in &result.report.violations {
        text.push_str(&violation.to_string());
        text.push('\n');
    }
    std::fs::write(run_dir.join("violations.txt"), text).map_err(|e| io("violations.txt", e))?;
    let page = crate::timeline::render(&result.events, &result.report, result.seed);
    std::fs::write(run_dir.join("timeline.html"), page).map_err(|e| io("timeline.html", e))?;
    Ok(run_dir)
}

fn io(what: &str, error: std::io::Error) -> HarnessError {
    HarnessError::Io {
        what: what.to_string(),
        reason: error.to_string(),
    }
}

/// How often the leader watch asks who leads.
const LEADER_POLL: Duration = Duration::from_millis(50);

/// Records every change of a cluster's leader as a fault (`cluster`, `leader-change`),
/// from the first look that finds the old leader gone to the first that finds a leader
/// again, until `stop`.
async fn watch_leader(
    endpoints: Vec<String>,
    recorder: Arc<Recorder>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), HarnessError> {
    let endpoints: Vec<Option<String>> = endpoints.into_iter().map(Some).collect();
    let mark = |phase| Event::Fault {
        t: now(),
        target: "cluster".into(),
        kind: "leader-change".into(),
        phase,
    };
    let mut current = crate::cluster::leader(&endpoints).await;
    let mut changing = false;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(LEADER_POLL).await;
        let leader = crate::cluster::leader(&endpoints).await;
        if changing {
            if leader.is_some() {
                recorder.record(&mark(history::Phase::End))?;
                changing = false;
                current = leader;
            }
        } else if leader != current {
            recorder.record(&mark(history::Phase::Start))?;
            if leader.is_some() {
                recorder.record(&mark(history::Phase::End))?;
                current = leader;
            } else {
                changing = true;
            }
        }
    }
    if changing {
        recorder.record(&mark(history::Phase::End))?;
    }
    Ok(())
}
