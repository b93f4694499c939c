//! Runs the chosen workloads, each at every client count, the systems one after another
//! within each (fenced, etcd, Redis), so a noisy spell on the machine hits all of them
//! alike; collects every phase's result (or its failure) into a [`Report`].

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, KeepaliveCase, Workload};
use crate::driver::{LeaseSystem, LockSystem};
use crate::drivers::etcd::EtcdSystem;
use crate::drivers::fenced::FencedSystem;
use crate::drivers::fenced_tls::FencedTls;
use crate::drivers::redis::RedisSystem;
use crate::error::BenchError;
use crate::progress::Progress;
use crate::report::{Report, Row, SerialProbe};
use crate::workloads::expiry::Expiries;
use crate::workloads::{contended, cycle, expiry, keepalive, serial};

/// The systems of one run (those not configured are `None`).
struct Systems {
    /// The fenced server.
    fenced: Option<FencedSystem>,
    /// The etcd server.
    etcd: Option<EtcdSystem>,
    /// The Redis server.
    redis: Option<RedisSystem>,
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
    let systems = Systems {
        fenced: config.fenced.clone().map(|t| {
            FencedSystem::new(
                t,
                config.rpc_timeout,
                config.fenced_session,
                config.fenced_framed.clone(),
                fenced_tls,
            )
        }),
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
                // Again, so the contended results meet a limit measured next to them: this
                // machine's speed drifts over a run (once the limit read 1,718 handoffs/s at
                // the start, and fenced then handed off 1,936 times a second).
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

/// How many phases the progress bar counts.
fn phase_count(config: &Config, systems: &Systems) -> u64 {
    let lock_systems = [
        systems.fenced.is_some(),
        systems.etcd.is_some(),
        systems.redis.is_some(),
    ];
    let lock_systems = lock_systems.iter().filter(|s| **s).count();
    let lease_systems = [systems.fenced.is_some(), systems.etcd.is_some()];
    let lease_systems = lease_systems.iter().filter(|s| **s).count();
    let clients = config.clients.len();
    let mut phases = 0;
    for workload in &config.workloads {
        phases += match workload {
            // Measured again right after contended, when that runs.
            Workload::Serial => 1 + usize::from(config.workloads.contains(&Workload::Contended)),
            Workload::Cycle | Workload::Contended => clients * lock_systems,
            // Spread only where there is more than one pair to spread.
            Workload::Expiry => {
                let spreadable = config.clients.iter().filter(|&&pairs| pairs > 1).count();
                (clients + spreadable) * lease_systems
            }
            Workload::Keepalive => {
                let fenced = systems
                    .fenced
                    .as_ref()
                    .map_or(0, |_| config.fenced_keepalive.len());
                let etcd = systems
                    .etcd
                    .as_ref()
                    .map_or(0, |_| config.etcd_keepalive.len());
                fenced + etcd
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

    /// Measures the serial limit (round trips to the first system configured) and adds it
    /// to the report, labelled `when`.
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
        let outcome = if let Some(s) = &systems.fenced {
            self.phase(s.name(), label, |_| serial::run(s, config), line)
                .await
        } else if let Some(s) = &systems.etcd {
            self.phase(s.name(), label, |_| serial::run(s, config), line)
                .await
        } else if let Some(s) = &systems.redis {
            self.phase(s.name(), label, |_| serial::run(s, config), line)
                .await
        } else {
            return;
        };
        report.serial.push(SerialProbe { when, outcome });
    }

    async fn cycle(&self, systems: &Systems, report: &mut Report) {
        for &clients in &self.config.clients {
            if let Some(s) = &systems.fenced {
                report.cycle.push(self.cycle_one(s, clients).await);
            }
            if let Some(s) = &systems.etcd {
                report.cycle.push(self.cycle_one(s, clients).await);
            }
            if let Some(s) = &systems.redis {
                report.cycle.push(self.cycle_one(s, clients).await);
            }
        }
    }

    async fn cycle_one<S: LockSystem>(
        &self,
        system: &S,
        clients: usize,
    ) -> Row<cycle::CycleResult> {
        let label = format!("cycle c={clients}");
        let outcome = self
            .phase(
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
            .await;
        Row::new(system.name(), clients, outcome)
    }

    async fn contended(&self, systems: &Systems, report: &mut Report) {
        for &clients in &self.config.clients {
            if let Some(s) = &systems.fenced {
                report.contended.push(self.contended_one(s, clients).await);
            }
            if let Some(s) = &systems.etcd {
                report.contended.push(self.contended_one(s, clients).await);
            }
            if let Some(s) = &systems.redis {
                report.contended.push(self.contended_one(s, clients).await);
            }
        }
    }

    async fn contended_one<S: LockSystem>(
        &self,
        system: &S,
        clients: usize,
    ) -> Row<contended::ContendedResult> {
        let label = format!("contended c={clients}");
        let outcome = self
            .phase(
                system.name(),
                label,
                |ops| contended::run(system, clients, self.config, self.prefix, ops),
                |r| {
                    format!(
                        "{:.0} handoffs/s, wait p99 {:?}, {} overtakes, {} overlaps, {} errors",
                        r.rate, r.wait.p99, r.order.overtakes, r.order.overlaps, r.errors.count
                    )
                },
            )
            .await;
        Row::new(system.name(), clients, outcome)
    }

    async fn expiry(&self, systems: &Systems, report: &mut Report) {
        for expiries in [Expiries::Together, Expiries::Spread] {
            for &pairs in &self.config.clients {
                if expiries == Expiries::Spread && pairs < 2 {
                    continue;
                }
                if let Some(s) = &systems.fenced {
                    let row = self.expiry_one(s, pairs, expiries).await;
                    report.expiry_rows(expiries).push(row);
                }
                if let Some(s) = &systems.etcd {
                    let row = self.expiry_one(s, pairs, expiries).await;
                    report.expiry_rows(expiries).push(row);
                }
            }
        }
    }

    async fn expiry_one<S: LockSystem>(
        &self,
        system: &S,
        pairs: usize,
        expiries: Expiries,
    ) -> Row<expiry::ExpiryResult> {
        let label = format!("expiry pairs={pairs} {}", expiries.name());
        let outcome = self
            .phase(
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
            .await;
        Row::new(system.name(), pairs, outcome)
    }

    async fn keepalive(&self, systems: &Systems, report: &mut Report) {
        let fenced_cases = systems
            .fenced
            .as_ref()
            .map_or(0, |_| self.config.fenced_keepalive.len());
        let etcd_cases = systems
            .etcd
            .as_ref()
            .map_or(0, |_| self.config.etcd_keepalive.len());
        // Alternate case by case, smallest first, so the two systems see the machine alike.
        for i in 0..fenced_cases.max(etcd_cases) {
            if let (Some(s), Some(case)) = (&systems.fenced, self.config.fenced_keepalive.get(i)) {
                report.keepalive.push(self.keepalive_one(s, *case).await);
            }
            if let (Some(s), Some(case)) = (&systems.etcd, self.config.etcd_keepalive.get(i)) {
                report.keepalive.push(self.keepalive_one(s, *case).await);
            }
        }
    }

    async fn keepalive_one<S: LeaseSystem>(
        &self,
        system: &S,
        case: KeepaliveCase,
    ) -> Row<keepalive::KeepaliveResult> {
        let label = format!("keepalive {}x{}", case.leases, case.locks_per_lease);
        let outcome = self
            .phase(
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
            .await;
        Row::new(system.name(), case.leases, outcome)
    }
}
