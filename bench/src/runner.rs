//! Runs the chosen workloads, each at every size, as cells: a cell runs every system one
//! after another (fenced over each transport, etcd, Redis), as many times as the run's
//! repeats, each time starting one system further along, so a noisy spell on the machine
//! hits all of them alike and none always runs first or last; collects every phase's
//! result (or its failure) into a [`Report`].

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, FencedTransport, KeepaliveCase, MeasuredServer, Workload};
use crate::driver::{LeaseSystem, LockSystem};
use crate::drivers::etcd::EtcdSystem;
use crate::drivers::fenced::FencedSystem;
use crate::drivers::fenced_tls::FencedTls;
use crate::drivers::redis::RedisSystem;
use crate::error::BenchError;
use crate::progress::Progress;
use crate::report::{record, record_per, Report, SerialProbe};
use crate::workloads::expiry::Expiries;
use crate::workloads::{contended, cycle, expiry, keepalive, serial};

/// The systems of one run (those not configured are absent).
struct Systems {
    /// fenced, once per transport of the run, in [`FencedTransport::ALL`] order.
    fenced: Vec<FencedSystem>,
    /// fenced for the keepalive workload, whose KeepAlive streams do not depend on the
    /// transport: one system, called plain "fenced".
    fenced_leases: Option<FencedSystem>,
    /// The etcd server.
    etcd: Option<EtcdSystem>,
    /// The Redis server.
    redis: Option<RedisSystem>,
}

/// One system of the lock workloads (cycle, contended, expiry).
#[derive(Clone, Copy)]
enum LockTarget<'a> {
    /// fenced over one transport.
    Fenced(&'a FencedSystem),
    /// etcd.
    Etcd(&'a EtcdSystem),
    /// Redis.
    Redis(&'a RedisSystem),
}

/// Runs `$body` with `$s` bound to the system behind a [`LockTarget`] (each arm has its
/// own type, so the body is written once and compiled for each).
macro_rules! on_target {
    ($target:expr, $s:ident => $body:expr) => {
        match $target {
            LockTarget::Fenced($s) => $body,
            LockTarget::Etcd($s) => $body,
            LockTarget::Redis($s) => $body,
        }
    };
}

impl Systems {
    /// The lock systems in table order: fenced's transports, etcd, Redis.
    fn lock_targets(&self) -> Vec<LockTarget<'_>> {
        let mut targets: Vec<LockTarget<'_>> = self.fenced.iter().map(LockTarget::Fenced).collect();
        targets.extend(self.etcd.iter().map(LockTarget::Etcd));
        targets.extend(self.redis.iter().map(LockTarget::Redis));
        targets
    }

    /// Every system's name, in table order: fenced's (its keepalive system after its
    /// transports), then the rivals.
    fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.fenced.iter().map(LockSystem::name).collect();
        names.extend(self.fenced_leases.as_ref().map(LockSystem::name));
        names.extend(self.etcd.as_ref().map(LockSystem::name));
        names.extend(self.redis.as_ref().map(LockSystem::name));
        names
    }
}

/// `items` rotated left by `by`: run `r` of a cell starts with the system at position
/// `r`, so over the repeats no system always goes first (on a cold machine) or last.
fn rotated<T: Copy>(items: &[T], by: usize) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let by = by % items.len();
    items[by..].iter().chain(&items[..by]).copied().collect()
}

/// Runs the benchmark `config` describes (validated first).
pub async fn run(config: &Config) -> Result<Report, BenchError> {
    config.validate()?;
    let fenced_tls = match &config.fenced_tls_ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                BenchError::Config(format!("--fenced-tls-ca {}: {e}", path.display()))
            })?;
            Some(FencedTls::from_ca(&pem)?)
        }
        None => None,
    };
    let fenced_over = |target: &MeasuredServer, transport| {
        FencedSystem::new(
            target.clone(),
            config.rpc_timeout,
            transport,
            config.fenced_framed.clone(),
            fenced_tls.clone(),
        )
    };
    let systems = Systems {
        fenced: config
            .fenced
            .iter()
            .flat_map(|target| {
                FencedTransport::ALL
                    .into_iter()
                    .filter(|t| config.fenced_transports.contains(t))
                    .map(|t| fenced_over(target, t))
            })
            .collect(),
        fenced_leases: config
            .fenced
            .as_ref()
            .map(|target| fenced_over(target, FencedTransport::Unary).named("fenced")),
        etcd: config
            .etcd
            .clone()
            .map(|t| EtcdSystem::new(t, config.rpc_timeout)),
        redis: config
            .redis
            .clone()
            .map(|t| RedisSystem::new(t, config.rpc_timeout, config.redis_retry)),
    };
    // Lock names carry the run, so runs against the same servers never meet.
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let prefix = format!("fenced-bench/{}-{}", std::process::id(), started.as_secs());
    let progress = Progress::new(phase_count(config, &systems));
    let mut report = Report::new(config.clone());
    report.systems = systems.names();
    report.headline = systems.fenced.first().map(LockSystem::name);
    if let Some(etcd) = &systems.etcd {
        report.etcd_version = etcd.version().await.ok();
    }
    let run = Run {
        config,
        prefix: &prefix,
        progress: &progress,
    };
    for workload in Workload::ALL {
        if !config.workloads.contains(&workload) {
            continue;
        }
        match workload {
            Workload::Serial => run.serial(&systems, "at the start", &mut report).await,
            Workload::Cycle => run.cycle(&systems, &mut report).await,
            Workload::Contended => {
                run.contended(&systems, &mut report).await;
                // Again, so the contended results meet a limit measured next to them: the
                // machine's speed drifts over a run.
                if config.workloads.contains(&Workload::Serial) {
                    run.serial(&systems, "right after contended", &mut report)
                        .await;
                }
            }
            Workload::Expiry => run.expiry(&systems, &mut report).await,
            Workload::Keepalive => run.keepalive(&systems, &mut report).await,
        }
    }
    progress.finish();
    Ok(report)
}

/// The client counts contended runs at: from 2, since with one client nothing is handed
/// off.
fn contended_sizes(config: &Config) -> impl Iterator<Item = usize> + '_ {
    config.clients.iter().copied().filter(|&c| c >= 2)
}

/// The pair counts an expiry arrangement runs at (spread only where there is more than
/// one pair to spread).
fn expiry_sizes(config: &Config, expiries: Expiries) -> impl Iterator<Item = usize> + '_ {
    config
        .expiry_pairs
        .iter()
        .copied()
        .filter(move |&pairs| expiries == Expiries::Together || pairs >= 2)
}

/// How many phases the progress bar counts.
fn phase_count(config: &Config, systems: &Systems) -> u64 {
    let lock_systems = systems.lock_targets().len();
    let repeats = config.repeats;
    let mut phases = 0;
    for workload in &config.workloads {
        phases += match workload {
            // Measured again right after contended, when that runs.
            Workload::Serial => 1 + usize::from(config.workloads.contains(&Workload::Contended)),
            Workload::Cycle => config.clients.len() * lock_systems * repeats,
            Workload::Contended => contended_sizes(config).count() * lock_systems * repeats,
            Workload::Expiry => {
                let cells = expiry_sizes(config, Expiries::Together).count()
                    + expiry_sizes(config, Expiries::Spread).count();
                cells * lock_systems * repeats
            }
            Workload::Keepalive => {
                let fenced = systems
                    .fenced_leases
                    .as_ref()
                    .map_or(0, |_| config.fenced_keepalive.len());
                let etcd = systems
                    .etcd
                    .as_ref()
                    .map_or(0, |_| config.etcd_keepalive.len());
                (fenced + etcd) * repeats
            }
        };
    }
    phases as u64
}

/// What every phase needs.
struct Run<'a> {
    /// The run's configuration.
    config: &'a Config,
    /// Every lock name of the run starts with this.
    prefix: &'a str,
    /// The progress bar.
    progress: &'a Progress,
}

impl Run<'_> {
    /// Runs one phase, reports its one-line result above the progress bar, and keeps it.
    async fn phase<T, Fut>(
        &self,
        system: &'static str,
        label: String,
        work: impl FnOnce(Arc<AtomicU64>) -> Fut,
        line: impl Fn(&T) -> String,
    ) -> Result<T, String>
    where
        Fut: Future<Output = Result<T, BenchError>>,
    {
        let phase = self.progress.phase(format!("{label} {system}"));
        let outcome = work(phase.ops()).await.map_err(|e| e.to_string());
        drop(phase);
        match &outcome {
            Ok(result) => self
                .progress
                .say(&format!("{label} {system}: {}", line(result))),
            Err(error) => self
                .progress
                .say(&format!("{label} {system}: FAILED: {error}")),
        }
        outcome
    }

    /// Measures the serial limit and adds it to the report, labelled `when`. Its round trip
    /// goes to the fastest way fenced is reached in this run (framed, else the gRPC
    /// Session, else unary calls), so the limit is the strictest bound for all of them.
    async fn serial(&self, systems: &Systems, when: &'static str, report: &mut Report) {
        let line = |r: &serial::SerialLimit| {
            format!(
                "fdatasync p50 {:?}, round trip p50 {:?}: {:.0} handoffs/s",
                r.fdatasync.p50,
                r.round_trip.p50,
                r.handoffs_per_second()
            )
        };
        let label = format!("serial limit ({when})");
        let config = self.config;
        let fastest = [
            FencedTransport::Framed,
            FencedTransport::Session,
            FencedTransport::Unary,
        ]
        .into_iter()
        .find_map(|t| systems.fenced.iter().find(|s| s.transport() == t));
        let target = match (fastest, &systems.etcd, &systems.redis) {
            (Some(s), _, _) => LockTarget::Fenced(s),
            (None, Some(s), _) => LockTarget::Etcd(s),
            (None, None, Some(s)) => LockTarget::Redis(s),
            (None, None, None) => return,
        };
        let outcome = on_target!(target, s => {
            self.phase(s.name(), label, |_| serial::run(s, config), line).await
        });
        report.serial.push(SerialProbe { when, outcome });
    }

    async fn cycle(&self, systems: &Systems, report: &mut Report) {
        for &clients in &self.config.clients {
            for repeat in 0..self.config.repeats {
                for target in rotated(&systems.lock_targets(), repeat) {
                    let (name, outcome) = on_target!(target, s => {
                        (s.name(), self.cycle_one(s, clients, repeat).await)
                    });
                    record(&mut report.cycle, name, clients, outcome);
                }
            }
        }
    }

    /// "run 2/3" in a phase's label.
    fn run_label(&self, repeat: usize) -> String {
        format!("run {}/{}", repeat + 1, self.config.repeats)
    }

    async fn cycle_one<S: LockSystem>(
        &self,
        system: &S,
        clients: usize,
        repeat: usize,
    ) -> Result<cycle::CycleResult, String> {
        let label = format!("cycle c={clients} {}", self.run_label(repeat));
        self.phase(
            system.name(),
            label,
            |ops| cycle::run(system, clients, self.config, self.prefix, ops),
            |r| {
                format!(
                    "{:.0} cycles/s, acquire p99 {:?}, {} errors",
                    r.rate, r.acquire.p99, r.errors.count
                )
            },
        )
        .await
    }

    async fn contended(&self, systems: &Systems, report: &mut Report) {
        for clients in contended_sizes(self.config) {
            for repeat in 0..self.config.repeats {
                for target in rotated(&systems.lock_targets(), repeat) {
                    let (name, outcome) = on_target!(target, s => {
                        (s.name(), self.contended_one(s, clients, repeat).await)
                    });
                    record(&mut report.contended, name, clients, outcome);
                }
            }
        }
    }

    async fn contended_one<S: LockSystem>(
        &self,
        system: &S,
        clients: usize,
        repeat: usize,
    ) -> Result<contended::ContendedResult, String> {
        let label = format!("contended c={clients} {}", self.run_label(repeat));
        self.phase(
            system.name(),
            label,
            |ops| contended::run(system, clients, self.config, self.prefix, ops),
            |r| {
                format!(
                    "{:.0} handoffs/s ({:.0} grants/s), wait p99 {:?}, {} overtakes, {} overlaps, {} errors",
                    r.rate, r.grant_rate, r.wait.p99, r.order.overtakes, r.order.overlaps, r.errors.count
                )
            },
        )
        .await
    }

    async fn expiry(&self, systems: &Systems, report: &mut Report) {
        for expiries in [Expiries::Together, Expiries::Spread] {
            for pairs in expiry_sizes(self.config, expiries) {
                for repeat in 0..self.config.repeats {
                    for target in rotated(&systems.lock_targets(), repeat) {
                        let (name, outcome) = on_target!(target, s => {
                            (s.name(), self.expiry_one(s, pairs, expiries, repeat).await)
                        });
                        record(report.expiry_rows(expiries), name, pairs, outcome);
                    }
                }
            }
        }
    }

    async fn expiry_one<S: LockSystem>(
        &self,
        system: &S,
        pairs: usize,
        expiries: Expiries,
        repeat: usize,
    ) -> Result<expiry::ExpiryResult, String> {
        let label = format!(
            "expiry pairs={pairs} {} {}",
            expiries.name(),
            self.run_label(repeat)
        );
        self.phase(
            system.name(),
            label,
            |ops| expiry::run(system, pairs, expiries, self.config, self.prefix, ops),
            |r| {
                format!(
                    "{} samples, delay p50 {:?} p99 {:?}, {} early, {} errors",
                    r.delay.count, r.delay.p50, r.delay.p99, r.early, r.errors.count
                )
            },
        )
        .await
    }

    async fn keepalive(&self, systems: &Systems, report: &mut Report) {
        let fenced_cases = systems
            .fenced_leases
            .as_ref()
            .map_or(0, |_| self.config.fenced_keepalive.len());
        let etcd_cases = systems
            .etcd
            .as_ref()
            .map_or(0, |_| self.config.etcd_keepalive.len());
        // Case by case, smallest first, the systems alternating within each case.
        for i in 0..fenced_cases.max(etcd_cases) {
            let fenced = systems
                .fenced_leases
                .as_ref()
                .zip(self.config.fenced_keepalive.get(i));
            let etcd = systems.etcd.as_ref().zip(self.config.etcd_keepalive.get(i));
            let order = [true, false];
            for repeat in 0..self.config.repeats {
                for is_fenced in rotated(&order, repeat) {
                    let row = match (is_fenced, fenced, etcd) {
                        (true, Some((s, case)), _) => {
                            Some((s.name(), *case, self.keepalive_one(s, *case, repeat).await))
                        }
                        (false, _, Some((s, case))) => {
                            Some((s.name(), *case, self.keepalive_one(s, *case, repeat).await))
                        }
                        _ => None,
                    };
                    if let Some((name, case, outcome)) = row {
                        let (leases, per) = (case.leases, case.locks_per_lease);
                        record_per(&mut report.keepalive, name, leases, per, outcome);
                    }
                }
            }
        }
    }

    async fn keepalive_one<S: LeaseSystem>(
        &self,
        system: &S,
        case: KeepaliveCase,
        repeat: usize,
    ) -> Result<keepalive::KeepaliveResult, String> {
        let label = format!(
            "keepalive {}x{} {}",
            case.leases,
            case.locks_per_lease,
            self.run_label(repeat)
        );
        self.phase(
            system.name(),
            label,
            |ops| keepalive::run(system, case, self.config, self.prefix, ops),
            |r| {
                format!(
                    "{:.0} renewals/s, {:?} CPU, RSS {} MiB, {} failed renewals, {} errors",
                    r.rate,
                    r.cpu.unwrap_or_default(),
                    r.rss_bytes.unwrap_or(0) >> 20,
                    r.failed_renewals,
                    r.errors.count
                )
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_run_of_a_cell_starts_with_the_next_system() {
        let systems = ["a", "b", "c"];
        assert_eq!(rotated(&systems, 0), ["a", "b", "c"]);
        assert_eq!(rotated(&systems, 1), ["b", "c", "a"]);
        assert_eq!(rotated(&systems, 2), ["c", "a", "b"]);
        assert_eq!(rotated(&systems, 3), ["a", "b", "c"]);
        assert!(rotated::<u8>(&[], 5).is_empty());
    }

    #[test]
    fn tables_list_fenced_first_its_keepalive_system_before_the_rivals() {
        let target = MeasuredServer {
            endpoint: "http://127.0.0.1:1".to_string(),
            pid: None,
        };
        let timeout = Duration::from_secs(1);
        let fenced = |t| FencedSystem::new(target.clone(), timeout, t, None, None);
        let systems = Systems {
            fenced: vec![
                fenced(FencedTransport::Session),
                fenced(FencedTransport::Unary),
            ],
            fenced_leases: Some(fenced(FencedTransport::Unary).named("fenced")),
            etcd: Some(EtcdSystem::new(target.clone(), timeout)),
            redis: Some(RedisSystem::new(target.clone(), timeout, timeout)),
        };
        assert_eq!(
            systems.names(),
            [
                "fenced (gRPC Session)",
                "fenced (unary gRPC)",
                "fenced",
                "etcd",
                "Redis"
            ]
        );
        assert_eq!(systems.lock_targets().len(), 4);
    }

    #[test]
    fn contended_skips_one_client_and_spread_skips_one_pair() {
        let config = Config {
            clients: vec![1, 16, 64],
            expiry_pairs: vec![1, 64],
            ..Config::default()
        };
        assert_eq!(contended_sizes(&config).collect::<Vec<_>>(), [16, 64]);
        assert_eq!(
            expiry_sizes(&config, Expiries::Together).collect::<Vec<_>>(),
            [1, 64]
        );
        assert_eq!(
            expiry_sizes(&config, Expiries::Spread).collect::<Vec<_>>(),
            [64]
        );
    }
}
