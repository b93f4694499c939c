//! The failover benchmark (`fenced-failover`): a 3-member fenced cluster and a 3-member
//! etcd cluster on loopback, each at its durable default and at the same election timing,
//! whose leader is killed with SIGKILL again and again; each kill measures the time until
//! a surviving member names a new leader, until a free lock is granted again, and until a
//! lease held before the kill is renewed. The killed member is restarted on its data
//! directory, and the cluster is whole again, before the next kill. The systems alternate
//! kill by kill, so a noisy machine slows both alike.
//!
//! # Layout
//! - [`members`]: the server processes: start, SIGKILL, restart on the same data dir.
//! - [`probe`]: one kill and its three probes, raced over every member's endpoint.
//! - [`fenced_cluster`], [`etcd_cluster`]: each system's command lines and probe client.
//! - [`report`]: the Markdown table.

pub mod etcd_cluster;
pub mod fenced_cluster;
pub mod members;
pub mod probe;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use crate::error::BenchError;
use crate::failover::etcd_cluster::{EtcdCluster, EtcdTiming};
use crate::failover::fenced_cluster::{FencedCluster, FencedTiming};
use crate::failover::members::{Members, PortPicker};
use crate::failover::probe::{kill_leader, wait_whole, ClusterClient, ProbeTiming};
use crate::failover::report::{FailoverReport, SystemFailovers};

/// What to run.
#[derive(Clone, Debug)]
pub struct FailoverConfig {
    /// The `fenced` executable, when fenced is measured.
    pub fenced: Option<PathBuf>,
    /// The `etcd` executable, when etcd is measured.
    pub etcd: Option<PathBuf>,
    /// Where the members' data directories and logs go (on disk: a tmpfs would make
    /// every fsync free).
    pub dir: PathBuf,
    /// Kills per system.
    pub kills: usize,
    /// fenced's raft timing.
    pub fenced_timing: FencedTiming,
    /// etcd's raft timing.
    pub etcd_timing: EtcdTiming,
    /// How the probes try.
    pub probe: ProbeTiming,
}

/// One system's cluster: its processes and the probes' client.
struct Running<C> {
    members: Members,
    client: C,
    failovers: SystemFailovers,
}

impl<C: ClusterClient> Running<C> {
    async fn kill(&mut self, kill: usize, probe: &ProbeTiming) -> Result<(), BenchError> {
        let sample = kill_leader(&mut self.members, &self.client, probe, kill).await?;
        let at = sample
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        eprintln!(
            "fenced-failover: {} kill {} at {}.{:03} (Unix time): member {} killed; new leader named {:?}, grant {:?}, renewal {:?}",
            self.failovers.system,
            kill + 1,
            at.as_secs(),
            at.subsec_millis(),
            sample.killed,
            sample.leader_known,
            sample.grant,
            sample.renew
        );
        self.failovers.kills.push(sample);
        Ok(())
    }
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

/// Runs the kills and answers the report; every member is stopped before it returns.
pub async fn run(config: &FailoverConfig) -> Result<FailoverReport, BenchError> {
    if config.kills == 0 {
        return Err(BenchError::Config("--kills must be at least 1".to_string()));
    }
    let mut ports = PortPicker::default();
    let mut fenced = None;
    let mut etcd = None;
    if let Some(program) = &config.fenced {
        let timing = config.fenced_timing;
        let (commands, addrs) = fenced_cluster::commands(program, &config.dir, timing, &mut ports)?;
        fenced = Some(Running {
            members: Members::start("fenced", commands)?,
            client: FencedCluster::new(addrs, config.probe.attempt_timeout)?,
            failovers: SystemFailovers {
                system: "fenced",
                timing: format!(
                    "`--heartbeat-ms {}`, `--election-timeout-ms {}` (timeouts {}-{} ms)",
                    millis(timing.heartbeat),
                    millis(timing.election_timeout),
                    millis(timing.election_timeout),
                    millis(timing.election_timeout * 2)
                ),
                kills: Vec::new(),
            },
        });
    }
    if let Some(program) = &config.etcd {
        let timing = config.etcd_timing;
        let (commands, endpoints) =
            etcd_cluster::commands(program, &config.dir, timing, &mut ports)?;
        etcd = Some(Running {
            members: Members::start("etcd", commands)?,
            client: EtcdCluster::new(&endpoints, config.probe.attempt_timeout)?,
            failovers: SystemFailovers {
                system: "etcd",
                timing: format!(
                    "`--heartbeat-interval {}`, `--election-timeout {}` (timeouts {}-{} ms)",
                    millis(timing.heartbeat),
                    millis(timing.election_timeout),
                    millis(timing.election_timeout),
                    millis(timing.election_timeout * 2)
                ),
                kills: Vec::new(),
            },
        });
    }
    let outcome = kill_all(config, fenced.as_mut(), etcd.as_mut()).await;
    let mut report = FailoverReport::default();
    if let Some(mut running) = fenced {
        running.members.stop().await;
        report.systems.push(running.failovers);
    }
    if let Some(mut running) = etcd {
        running.members.stop().await;
        report.systems.push(running.failovers);
    }
    outcome.map(|()| report)
}

/// The kills, the systems alternating.
async fn kill_all(
    config: &FailoverConfig,
    mut fenced: Option<&mut Running<FencedCluster>>,
    mut etcd: Option<&mut Running<EtcdCluster>>,
) -> Result<(), BenchError> {
    // The first election of a new cluster may take longer than a failover.
    if let Some(running) = fenced.as_deref_mut() {
        wait_whole(&mut running.members, &running.client, &config.probe).await?;
    }
    if let Some(running) = etcd.as_deref_mut() {
        wait_whole(&mut running.members, &running.client, &config.probe).await?;
    }
    for kill in 0..config.kills {
        if let Some(running) = fenced.as_deref_mut() {
            running.kill(kill, &config.probe).await?;
        }
        if let Some(running) = etcd.as_deref_mut() {
            running.kill(kill, &config.probe).await?;
        }
    }
    Ok(())
}
