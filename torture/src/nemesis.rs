//! Nemeses: a fault is a [`Target`] (a process or a link) plus an [`Action`], so that a
//! cluster (several lock servers, the raft links into them) adds targets, not a new
//! harness. [`Kind`] is what the command line mixes; [`Kind::draw`] makes a fault of that
//! kind with random parameters, [`resolve`] aims a cluster fault at the member that leads
//! (or at one that follows) when it strikes, and [`apply`] carries it out, records its
//! start and end in the history, and heals it.

use std::fmt;
use std::time::Duration;

use fenced_tests::proxy::{Direction, Mode};
use rand::Rng;
use tokio::sync::Mutex;

use crate::cluster::{member_target, raft_link_target};
use crate::history::{now, Event, Phase};
use crate::system::{HarnessError, System};

/// What a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The lock server process.
    LockServer,
    /// The store process.
    Store,
    /// A worker process (by index).
    Worker(usize),
    /// The link between a worker (by index) and the lock server.
    Link(usize),
    /// A cluster member's process (by index: member id minus one).
    Member(usize),
    /// The raft traffic into a cluster member (by index): the proxy in front of its raft
    /// port.
    RaftLink(usize),
    /// The raft traffic of the whole cluster: what a fault on several raft links at once
    /// (an isolation) holds busy, and what every raft-link fault is kept apart by.
    RaftNetwork,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::LockServer => f.write_str(crate::check::model::LOCK_SERVER),
            Target::Store => f.write_str("fenced-kv"),
            Target::Worker(i) => write!(f, "w{}", i + 1),
            Target::Link(i) => write!(f, "link-w{}", i + 1),
            Target::Member(i) => f.write_str(&member_target(*i)),
            Target::RaftLink(i) => f.write_str(&raft_link_target(*i)),
            Target::RaftNetwork => f.write_str("raft"),
        }
    }
}

/// Which cluster member a fault aims at, resolved when it strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aim {
    /// The member that leads.
    Leader,
    /// A member that runs and does not lead.
    Follower,
}

impl fmt::Display for Aim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Aim::Leader => "leader",
            Aim::Follower => "follower",
        })
    }
}

/// What a fault does to its target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// `kill -9`, stay down this long, start again on the same data directory.
    Kill {
        /// How long the process stays down.
        down: Duration,
    },
    /// Cut the power of the filesystem under the process's data, kill it, remount (what
    /// was not synced is gone), start it again.
    PowerCut {
        /// How long the process stays down.
        down: Duration,
    },
    /// `SIGSTOP`, then `SIGCONT` this much later.
    Pause {
        /// How long the process is stopped.
        length: Duration,
    },
    /// Set a link's mode in one direction or both, for a while.
    Net {
        /// Which way.
        direction: Direction,
        /// What the link does.
        mode: Mode,
        /// For how long.
        length: Duration,
    },
    /// Reset (TCP RST) every connection on a link.
    Reset,
    /// Cut a cluster member off: every *other* member's raft link does `mode` both ways
    /// for a while, so nothing the member sends reaches a peer (nor do the others reach
    /// each other); only calls into the member pass (one proxy per member's raft port
    /// cannot tell who sends, so this is the closest to an isolation it can make).
    Isolate {
        /// What the other links do (black hole or drop).
        mode: Mode,
        /// For how long.
        length: Duration,
    },
}

/// A link mode's word in a fault's kind.
fn mode_word(mode: Mode) -> &'static str {
    match mode {
        Mode::Pass => "pass",
        Mode::Delay(_) => "delay",
        Mode::BlackHole => "black-hole",
        Mode::Drop => "drop",
    }
}

impl Action {
    /// The fault's kind as counted in the summary (`kill`, `pause`, `net-drop-up`, ...).
    pub fn kind(&self) -> String {
        match self {
            Action::Kill { .. } => "kill".into(),
            Action::PowerCut { .. } => "power-cut".into(),
            Action::Pause { .. } => "pause".into(),
            Action::Net {
                direction, mode, ..
            } => {
                let mode = mode_word(*mode);
                let direction = match direction {
                    Direction::Up => "-up",
                    Direction::Down => "-down",
                    Direction::Both => "",
                };
                format!("net-{mode}{direction}")
            }
            Action::Reset => "net-reset".into(),
            Action::Isolate { mode, .. } => format!("isolate-{}", mode_word(*mode)),
        }
    }
}

/// One fault: a target and an action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// What it hits.
    pub target: Target,
    /// What it does.
    pub action: Action,
    /// For a cluster fault: the role of the member it aims at, which [`resolve`] turns
    /// into the member's index in `target` when it strikes.
    pub aim: Option<Aim>,
}

impl Fault {
    /// How long the fault lasts before it is healed (a kill's downtime, a pause, a link's
    /// bad spell).
    pub fn length(&self) -> Duration {
        match self.action {
            Action::Kill { down } | Action::PowerCut { down } => down,
            Action::Pause { length }
            | Action::Net { length, .. }
            | Action::Isolate { length, .. } => length,
            Action::Reset => Duration::ZERO,
        }
    }

    /// What it holds busy, so that no other lane strikes it at once: its target, or, for
    /// a fault on raft links, the whole raft network (an isolation sets every other
    /// member's link, and healing one link must not heal another fault's).
    pub fn busy_key(&self) -> Target {
        match (self.target, self.action) {
            (Target::RaftLink(_), _) | (_, Action::Isolate { .. }) => Target::RaftNetwork,
            (target, _) => target,
        }
    }

    /// Its kind as recorded in the history: the action's, with the role of the cluster
    /// member it aimed at (`kill-leader`, `pause-follower`, `net-drop-up-leader`).
    pub fn kind(&self) -> String {
        match self.aim {
            Some(aim) => format!("{}-{aim}", self.action.kind()),
            None => self.action.kind(),
        }
    }

    /// How the summary counts it: `kill fenced`, `pause worker`, `net-drop-up link`,
    /// `kill leader`, `net-black-hole raft follower`.
    pub fn label(&self) -> String {
        let target = match self.target {
            Target::LockServer => "fenced",
            Target::Store => "fenced-kv",
            Target::Worker(_) => "worker",
            Target::Link(_) => "link",
            Target::Member(_) => "member",
            Target::RaftLink(_) | Target::RaftNetwork => "raft",
        };
        match self.aim {
            Some(aim) if matches!(self.target, Target::Member(_)) => {
                format!("{} {aim}", self.action.kind())
            }
            Some(aim) => format!("{} {target} {aim}", self.action.kind()),
            None => format!("{} {target}", self.action.kind()),
        }
    }
}

/// A kind of fault the command line can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Kind {
    /// `kill -9` and restart of the lock server.
    KillServer,
    /// `kill -9` and restart of the store.
    KillStore,
    /// `SIGSTOP`/`SIGCONT` of a worker, shorter or longer than its TTL.
    PauseWorker,
    /// `SIGSTOP`/`SIGCONT` of the lock server.
    PauseServer,
    /// A worker's link to the lock server: drop, delay, black hole or reset, in one
    /// direction or both.
    Net,
    /// A power cut under the lock server's data (needs root and loop devices).
    PowerCut,
    /// In a cluster: `kill -9` and restart of the member that leads.
    KillLeader,
    /// In a cluster: `kill -9` and restart of a member that follows.
    KillFollower,
    /// In a cluster: `SIGSTOP`/`SIGCONT` of the leader, long enough for an election.
    PauseLeader,
    /// In a cluster: `SIGSTOP`/`SIGCONT` of a follower, long enough for it to stand for
    /// election.
    PauseFollower,
    /// In a cluster: the raft traffic into the leader or a follower black-holed or
    /// dropped, one way or both (asymmetric cuts).
    RaftNet,
    /// In a cluster: the leader or a follower cut off from sending to its peers (see
    /// [`Action::Isolate`]).
    Isolate,
}

impl Kind {
    /// Every kind that needs nothing special of the machine.
    pub const DEFAULT_MIX: [Kind; 5] = [
        Kind::KillServer,
        Kind::KillStore,
        Kind::PauseWorker,
        Kind::PauseServer,
        Kind::Net,
    ];

    /// Every cluster kind, with the kinds that hit the store and the workers, which
    /// need nothing special of the machine: `--cluster`'s mix.
    pub const CLUSTER_MIX: [Kind; 8] = [
        Kind::KillLeader,
        Kind::KillFollower,
        Kind::PauseLeader,
        Kind::PauseFollower,
        Kind::RaftNet,
        Kind::Isolate,
        Kind::KillStore,
        Kind::PauseWorker,
    ];

    /// Whether it needs a cluster.
    pub fn needs_cluster(self) -> bool {
        matches!(
            self,
            Kind::KillLeader
                | Kind::KillFollower
                | Kind::PauseLeader
                | Kind::PauseFollower
                | Kind::RaftNet
                | Kind::Isolate
        )
    }

    /// Whether it needs a single lock server (its process, its data's filesystem, or the
    /// workers' proxies in front of it).
    pub fn needs_single_server(self) -> bool {
        matches!(
            self,
            Kind::KillServer | Kind::PauseServer | Kind::Net | Kind::PowerCut
        )
    }

    /// A fault of this kind with random parameters, for `workers` workers asking for TTLs
    /// between `ttl_min` and `ttl_max`. A cluster fault comes with its [`Aim`] and member
    /// 0 as a stand-in target, for [`resolve`] to aim.
    pub fn draw(
        self,
        rng: &mut impl Rng,
        workers: usize,
        ttl_min: Duration,
        ttl_max: Duration,
    ) -> Fault {
        let ms = |lo: u64, hi: u64, rng: &mut dyn rand::RngCore| {
            Duration::from_millis(rng.random_range(lo..=hi.max(lo)))
        };
        let worker = rng.random_range(0..workers.max(1));
        let role = |rng: &mut dyn rand::RngCore| {
            if rng.random_bool(0.5) {
                Aim::Leader
            } else {
                Aim::Follower
            }
        };
        let mut aim = None;
        let (target, action) = match self {
            Kind::KillServer => (
                Target::LockServer,
                Action::Kill {
                    down: ms(0, 500, rng),
                },
            ),
            Kind::KillStore => (
                Target::Store,
                Action::Kill {
                    down: ms(0, 500, rng),
                },
            ),
            Kind::PowerCut => (
                Target::LockServer,
                Action::PowerCut {
                    down: ms(0, 300, rng),
                },
            ),
            Kind::PauseWorker => {
                // Half shorter than the shortest TTL, half longer than the longest.
                let min = ttl_min.as_millis() as u64;
                let max = ttl_max.as_millis() as u64;
                let length = if rng.random_bool(0.5) {
                    ms(min / 10, min * 8 / 10, rng)
                } else {
                    ms(max * 3 / 2, max * 3, rng)
                };
                (Target::Worker(worker), Action::Pause { length })
            }
            Kind::PauseServer => (
                Target::LockServer,
                Action::Pause {
                    length: ms(100, 2000, rng),
                },
            ),
            Kind::Net => {
                let direction = match rng.random_range(0..3) {
                    0 => Direction::Up,
                    1 => Direction::Down,
                    _ => Direction::Both,
                };
                let length = ms(200, 2500, rng);
                let action = match rng.random_range(0..4) {
                    0 => Action::Net {
                        direction,
                        mode: Mode::Drop,
                        length,
                    },
                    1 => Action::Net {
                        direction,
                        mode: Mode::Delay(ms(20, 400, rng)),
                        length,
                    },
                    2 => Action::Net {
                        direction,
                        mode: Mode::BlackHole,
                        length,
                    },
                    _ => Action::Reset,
                };
                (Target::Link(worker), action)
            }
            Kind::KillLeader | Kind::KillFollower => {
                aim = Some(if self == Kind::KillLeader {
                    Aim::Leader
                } else {
                    Aim::Follower
                });
                (
                    Target::Member(0),
                    Action::Kill {
                        down: ms(0, 1500, rng),
                    },
                )
            }
            Kind::PauseLeader | Kind::PauseFollower => {
                aim = Some(if self == Kind::PauseLeader {
                    Aim::Leader
                } else {
                    Aim::Follower
                });
                // Longer than the longest election timeout (400 ms by default).
                (
                    Target::Member(0),
                    Action::Pause {
                        length: ms(450, 2500, rng),
                    },
                )
            }
            Kind::RaftNet => {
                aim = Some(role(rng));
                let direction = match rng.random_range(0..3) {
                    0 => Direction::Up,
                    1 => Direction::Down,
                    _ => Direction::Both,
                };
                let mode = if rng.random_bool(0.5) {
                    Mode::BlackHole
                } else {
                    Mode::Drop
                };
                (
                    Target::RaftLink(0),
                    Action::Net {
                        direction,
                        mode,
                        length: ms(450, 2500, rng),
                    },
                )
            }
            Kind::Isolate => {
                aim = Some(role(rng));
                let mode = if rng.random_bool(0.5) {
                    Mode::BlackHole
                } else {
                    Mode::Drop
                };
                (
                    Target::Member(0),
                    Action::Isolate {
                        mode,
                        length: ms(450, 2500, rng),
                    },
                )
            }
        };
        Fault {
            target,
            action,
            aim,
        }
    }
}

/// Aims a cluster fault at the member that leads now, or at a random running member
/// that does not lead; `None` when there is none to aim at (no member leads right now,
/// or no follower runs). A fault without an aim is returned as it is.
pub async fn resolve(
    system: &Mutex<System>,
    fault: Fault,
    rng: &mut impl Rng,
) -> Result<Option<Fault>, HarnessError> {
    let Some(aim) = fault.aim else {
        return Ok(Some(fault));
    };
    let endpoints: Vec<Option<String>> = system
        .lock()
        .await
        .lock_servers
        .iter()
        .map(|m| m.running().then(|| m.endpoint()))
        .collect();
    let Some(leader) = crate::cluster::leader(&endpoints).await else {
        return Ok(None);
    };
    let member = match aim {
        Aim::Leader => leader,
        Aim::Follower => {
            let followers: Vec<usize> = (0..endpoints.len())
                .filter(|&i| i != leader && endpoints[i].is_some())
                .collect();
            if followers.is_empty() {
                return Ok(None);
            }
            followers[rng.random_range(0..followers.len())]
        }
    };
    let target = match fault.target {
        Target::RaftLink(_) => Target::RaftLink(member),
        _ => Target::Member(member),
    };
    Ok(Some(Fault { target, ..fault }))
}

/// Carries out a fault on the system, recording its start and end, and heals it. The
/// system's lock is held only while a process is signalled, killed or started, not
/// while the fault lasts, so faults on other targets overlap.
pub async fn apply(system: &Mutex<System>, fault: Fault) -> Result<(), HarnessError> {
    let target = fault.target.to_string();
    let kind = fault.kind();
    let recorder = system.lock().await.recorder.clone();
    let mark = |phase| Event::Fault {
        t: now(),
        target: target.clone(),
        kind: kind.clone(),
        phase,
    };
    recorder.record(&mark(Phase::Start))?;
    match fault.action {
        Action::Kill { down } | Action::PowerCut { down } => {
            let power_cut = matches!(fault.action, Action::PowerCut { .. });
            {
                let mut guard = system.lock().await;
                let system = &mut *guard;
                if power_cut {
                    if let Some(fs) = &system.scratch {
                        fs.cut_power();
                    }
                }
                server_mut(system, fault.target)?.kill(&recorder).await?;
            }
            tokio::time::sleep(down).await;
            let mut guard = system.lock().await;
            let system = &mut *guard;
            if power_cut {
                if let Some(fs) = &mut system.scratch {
                    fs.remount();
                }
            }
            server_mut(system, fault.target)?.restart(&recorder).await?;
            if fault.target == Target::LockServer {
                system.retarget()?;
            }
        }
        Action::Net {
            direction,
            mode,
            length,
        } if matches!(fault.target, Target::RaftLink(_)) => {
            let Target::RaftLink(member) = fault.target else {
                return Ok(());
            };
            if let Some(proxy) = system.lock().await.raft_proxies.get(member) {
                proxy.set(direction, mode);
            }
            tokio::time::sleep(length).await;
            if let Some(proxy) = system.lock().await.raft_proxies.get(member) {
                heal(proxy, mode);
            }
        }
        Action::Isolate { mode, length } => {
            if let Target::Member(member) = fault.target {
                for (i, proxy) in system.lock().await.raft_proxies.iter().enumerate() {
                    if i != member {
                        proxy.set(Direction::Both, mode);
                    }
                }
                tokio::time::sleep(length).await;
                let guard = system.lock().await;
                for (i, proxy) in guard.raft_proxies.iter().enumerate() {
                    if i != member {
                        heal(proxy, mode);
                    }
                }
            }
        }
        Action::Pause { length } => {
            signal(system, fault.target, true).await?;
            tokio::time::sleep(length).await;
            signal(system, fault.target, false).await?;
        }
        Action::Net {
            direction,
            mode,
            length,
        } => {
            if let Target::Link(worker) = fault.target {
                if let Some(proxy) = system.lock().await.proxy(worker) {
                    proxy.set(direction, mode);
                }
                tokio::time::sleep(length).await;
                if let Some(proxy) = system.lock().await.proxy(worker) {
                    heal(proxy, mode);
                }
            }
        }
        Action::Reset => {
            if let Target::Link(worker) = fault.target {
                if let Some(proxy) = system.lock().await.proxy(worker) {
                    proxy.reset();
                }
            }
        }
    }
    recorder.record(&mark(Phase::End))?;
    Ok(())
}

/// Lets a link pass again after a spell of `mode`.
fn heal(proxy: &fenced_tests::proxy::Proxy, mode: Mode) {
    proxy.pass();
    if mode == Mode::Drop {
        // The connections that lost bytes are broken for good: close them.
        proxy.reset();
    }
}

/// The server a process fault targets.
fn server_mut(
    system: &mut System,
    target: Target,
) -> Result<&mut crate::system::Server, HarnessError> {
    let missing = |target: Target| HarnessError::Io {
        what: format!("fault on {target}"),
        reason: "no such server in this run".into(),
    };
    match target {
        Target::LockServer => system
            .lock_servers
            .first_mut()
            .ok_or_else(|| missing(target)),
        Target::Member(i) => system
            .lock_servers
            .get_mut(i)
            .ok_or_else(|| missing(target)),
        Target::Store => Ok(&mut system.store),
        other => Err(HarnessError::Io {
            what: format!("kill {other}"),
            reason: "only servers are killed and restarted".into(),
        }),
    }
}

/// Stops (`SIGSTOP`) or continues (`SIGCONT`) a target process.
async fn signal(system: &Mutex<System>, target: Target, stop: bool) -> Result<(), HarnessError> {
    let system = system.lock().await;
    match target {
        Target::LockServer | Target::Store | Target::Member(_) => {
            let server = match target {
                Target::LockServer => system.lock_servers.first(),
                Target::Member(i) => system.lock_servers.get(i),
                _ => Some(&system.store),
            };
            let Some(server) = server else {
                return Ok(());
            };
            if stop {
                server.pause()
            } else {
                server.resume()
            }
        }
        Target::Worker(i) => {
            let Some(worker) = system.workers.get(i) else {
                return Ok(());
            };
            // A worker that already finished cannot be signalled: nothing to do.
            let _ = if stop {
                worker.child.stop()
            } else {
                worker.child.resume()
            };
            Ok(())
        }
        Target::Link(_) | Target::RaftLink(_) | Target::RaftNetwork => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const TTL_MIN: Duration = Duration::from_millis(500);
    const TTL_MAX: Duration = Duration::from_millis(1500);

    // checks: the cluster nemeses strike long enough to cause an election (over the
    // longest default election timeout, 400 ms), each aimed at a role
    #[test]
    fn cluster_faults_are_aimed_and_outlast_an_election_timeout() {
        let mut rng = StdRng::seed_from_u64(7);
        for kind in Kind::CLUSTER_MIX.iter().filter(|k| k.needs_cluster()) {
            for _ in 0..200 {
                let fault = kind.draw(&mut rng, 4, TTL_MIN, TTL_MAX);
                let aim = fault.aim.expect("a cluster fault has an aim");
                assert!(fault.kind().ends_with(&format!("-{aim}")), "{fault:?}");
                if matches!(kind, Kind::KillLeader | Kind::KillFollower) {
                    assert!(matches!(fault.action, Action::Kill { .. }), "{fault:?}");
                } else {
                    assert!(fault.length() > Duration::from_millis(400), "{fault:?}");
                }
                assert!(fault.length() <= Duration::from_millis(2500), "{fault:?}");
            }
        }
    }

    // checks: a single server's faults are drawn as before (no aim, the same kind words)
    #[test]
    fn single_server_faults_have_no_aim() {
        let mut rng = StdRng::seed_from_u64(7);
        for kind in Kind::DEFAULT_MIX.iter().chain([&Kind::PowerCut]) {
            assert!(!kind.needs_cluster());
            let fault = kind.draw(&mut rng, 4, TTL_MIN, TTL_MAX);
            assert_eq!(fault.aim, None);
            assert_eq!(fault.kind(), fault.action.kind());
        }
    }

    // checks: raft-link faults and isolations never overlap (healing one must not heal
    // another); process faults on different members may
    #[test]
    fn faults_on_raft_links_hold_the_whole_raft_network_busy() {
        let cut = Fault {
            target: Target::RaftLink(1),
            action: Action::Net {
                direction: Direction::Up,
                mode: Mode::Drop,
                length: Duration::from_millis(500),
            },
            aim: Some(Aim::Follower),
        };
        let isolate = Fault {
            target: Target::Member(0),
            action: Action::Isolate {
                mode: Mode::BlackHole,
                length: Duration::from_millis(500),
            },
            aim: Some(Aim::Leader),
        };
        let kill = Fault {
            target: Target::Member(0),
            action: Action::Kill {
                down: Duration::ZERO,
            },
            aim: Some(Aim::Leader),
        };
        assert_eq!(cut.busy_key(), Target::RaftNetwork);
        assert_eq!(isolate.busy_key(), Target::RaftNetwork);
        assert_eq!(kill.busy_key(), Target::Member(0));
        assert_eq!(isolate.kind(), "isolate-black-hole-leader");
        assert_eq!(cut.label(), "net-drop-up raft follower");
        assert_eq!(kill.label(), "kill leader");
        assert_eq!(kill.target.to_string(), "fenced-1");
        assert_eq!(cut.target.to_string(), "raft-fenced-2");
    }
}
