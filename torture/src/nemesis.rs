//! Nemeses: a fault is a [`Target`] (a process or a link) plus an [`Action`], so that a
//! later cluster (several lock servers, links between them) adds targets, not a new
//! harness. [`Kind`] is what the command line mixes; [`Kind::draw`] makes a fault of that
//! kind with random parameters, and [`apply`] carries it out, records its start and end in
//! the history, and heals it.

use std::fmt;
use std::time::Duration;

use fenced_tests::proxy::{Direction, Mode};
use rand::Rng;
use tokio::sync::Mutex;

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
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::LockServer => f.write_str(crate::check::model::LOCK_SERVER),
            Target::Store => f.write_str("fenced-kv"),
            Target::Worker(i) => write!(f, "w{}", i + 1),
            Target::Link(i) => write!(f, "link-w{}", i + 1),
        }
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
                let mode = match mode {
                    Mode::Pass => "pass",
                    Mode::Delay(_) => "delay",
                    Mode::BlackHole => "black-hole",
                    Mode::Drop => "drop",
                };
                let direction = match direction {
                    Direction::Up => "-up",
                    Direction::Down => "-down",
                    Direction::Both => "",
                };
                format!("net-{mode}{direction}")
            }
            Action::Reset => "net-reset".into(),
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
}

impl Fault {
    /// How long the fault lasts before it is healed (a kill's downtime, a pause, a link's
    /// bad spell).
    pub fn length(&self) -> Duration {
        match self.action {
            Action::Kill { down } | Action::PowerCut { down } => down,
            Action::Pause { length } | Action::Net { length, .. } => length,
            Action::Reset => Duration::ZERO,
        }
    }

    /// How the summary counts it: `kill fenced`, `pause worker`, `net-drop-up link`.
    pub fn label(&self) -> String {
        let target = match self.target {
            Target::LockServer => "fenced",
            Target::Store => "fenced-kv",
            Target::Worker(_) => "worker",
            Target::Link(_) => "link",
        };
        format!("{} {target}", self.action.kind())
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

    /// A fault of this kind with random parameters, for `workers` workers asking for TTLs
    /// between `ttl_min` and `ttl_max`.
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
        };
        Fault { target, action }
    }
}

/// Carries out a fault on the system, recording its start and end, and heals it. The
/// system's lock is held only while a process is signalled, killed or started, not
/// while the fault lasts, so faults on other targets overlap.
pub async fn apply(system: &Mutex<System>, fault: Fault) -> Result<(), HarnessError> {
    let target = fault.target.to_string();
    let kind = fault.action.kind();
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
                    proxy.pass();
                    if mode == Mode::Drop {
                        // The connections that lost bytes are broken for good: close them.
                        proxy.reset();
                    }
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

/// The server a process fault targets.
fn server_mut(
    system: &mut System,
    target: Target,
) -> Result<&mut crate::system::Server, HarnessError> {
    match target {
        Target::LockServer => Ok(&mut system.lock_server),
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
        Target::LockServer | Target::Store => {
            let server = if target == Target::LockServer {
                &system.lock_server
            } else {
                &system.store
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
        Target::Link(_) => Ok(()),
    }
}
