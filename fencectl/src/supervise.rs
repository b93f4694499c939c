//! Runs a command under a lease: its environment carries the lease, it runs in a process
//! group of its own, signals to fencectl are passed on to that group, and the
//! [`KillPlan`] decides when the group is stopped because the lease is in trouble.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use fenced_client::{Lease, LeaseState};
use rustix::process::{kill_process_group, Pid, Signal};
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::duration::show;
use crate::error::Error;
use crate::exit;
use crate::kill_plan::{Action, KillPlan, Standing};

/// The environment variable that carries the lease's fencing token.
pub const ENV_TOKEN: &str = "FENCED_TOKEN";
/// The environment variable that carries the lease's sequencer (text form), when the
/// server signs grants: what a gate that verifies sequencers demands.
pub const ENV_SEQUENCER: &str = "FENCED_SEQUENCER";
/// The environment variable that carries the lock's name.
pub const ENV_LOCK: &str = "FENCED_LOCK";
/// The environment variable that carries the lease id (a bearer secret: the child may
/// release or renew the lease with it, so it must not log it).
pub const ENV_LEASE_ID: &str = "FENCED_LEASE_ID";

/// The signals fencectl passes on to the child's process group.
const FORWARDED: [(SignalKind, Signal); 6] = [
    (SignalKind::interrupt(), Signal::INT),
    (SignalKind::terminate(), Signal::TERM),
    (SignalKind::hangup(), Signal::HUP),
    (SignalKind::quit(), Signal::QUIT),
    (SignalKind::user_defined1(), Signal::USR1),
    (SignalKind::user_defined2(), Signal::USR2),
];

/// How the child's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The child exited by itself with this status.
    Exited(ExitStatus),
    /// fencectl stopped the child because the lease was in trouble.
    Stopped,
}

impl Ending {
    /// fencectl's exit code for this ending.
    pub fn exit_code(self) -> i32 {
        match self {
            Ending::Stopped => exit::LOCK_LOST,
            Ending::Exited(status) => match (status.code(), status.signal()) {
                (Some(code), _) => code,
                (None, Some(signal)) => exit::for_signal(signal),
                (None, None) => exit::UNAVAILABLE,
            },
        }
    }
}

/// Runs `command` (program and arguments) while `lease` is held; returns how it ended.
/// The caller releases the lease afterwards.
pub async fn run(lease: &Lease, plan: KillPlan, command: &[OsString]) -> Result<Ending, Error> {
    let Some((program, args)) = command.split_first() else {
        return Err(Error::Settings("no command to run after --".into()));
    };
    let token = match confirmed_token(lease, plan).await {
        Some(token) => token,
        None => {
            eprintln!(
                "fencectl: the lease on {} was not confirmed within {}: {}",
                lease.lock(),
                show(plan.suspect_grace),
                lease.state()
            );
            return Ok(Ending::Stopped);
        }
    };
    // The handlers are installed before the child starts, so that no signal meant for it
    // can kill fencectl instead.
    let mut signals = forward_signals()?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env(ENV_TOKEN, token.get().to_string())
        .env(ENV_LOCK, lease.lock().as_str())
        .env(ENV_LEASE_ID, lease.id().to_string())
        .process_group(0);
    if let Ok(Some(sequencer)) = lease.fence_sequencer() {
        command.env(ENV_SEQUENCER, sequencer.to_text());
    }
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        command: program.to_string_lossy().into_owned(),
        source,
    })?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    let ending = supervise(lease, plan, &mut child, group, &mut signals).await?;
    // Whatever the child left behind in its group must not run on without the lock.
    if let Some(group) = group {
        let _ = kill_process_group(group, Signal::KILL);
    }
    Ok(ending)
}

/// The lease's token once it is held, waiting up to the suspect grace for a lease that
/// starts suspect (a late grant) to be confirmed.
async fn confirmed_token(lease: &Lease, plan: KillPlan) -> Option<fenced_client::FencingToken> {
    let start = Instant::now();
    loop {
        if let Ok(token) = lease.fence() {
            return Some(token);
        }
        if lease.state().is_lost() || start.elapsed() >= plan.suspect_grace {
            return None;
        }
        tokio::time::sleep(plan.check_every).await;
    }
}

/// Waits for the child, passing signals on and applying the kill plan.
async fn supervise(
    lease: &Lease,
    plan: KillPlan,
    child: &mut Child,
    group: Option<Pid>,
    signals: &mut mpsc::Receiver<Signal>,
) -> Result<Ending, Error> {
    let mut ticker = tokio::time::interval(plan.check_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut suspect_since: Option<Instant> = None;
    let mut terminated_at: Option<Instant> = None;
    let mut killed = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|source| Error::Io { what: "waiting for the child", source })?;
                return Ok(if terminated_at.is_some() || killed {
                    Ending::Stopped
                } else {
                    Ending::Exited(status)
                });
            }
            Some(sig) = signals.recv() => {
                if let Some(group) = group {
                    let _ = kill_process_group(group, sig);
                }
            }
            _ = ticker.tick() => {
                if killed {
                    continue;
                }
                let status = lease.status();
                let standing = match &status.state {
                    LeaseState::Held => {
                        suspect_since = None;
                        Standing::Held
                    }
                    LeaseState::Suspect { .. } => {
                        let since = *suspect_since.get_or_insert_with(Instant::now);
                        Standing::Suspect { for_: since.elapsed() }
                    }
                    LeaseState::Lost { .. } => Standing::Lost,
                };
                let terminated_for = terminated_at.map(|at| at.elapsed());
                match plan.decide(standing, status.remaining, terminated_for) {
                    Action::Wait => {}
                    Action::Terminate => {
                        eprintln!(
                            "fencectl: lease on {} is {} with {} left: SIGTERM to the command",
                            lease.lock(), status.state, show(status.remaining)
                        );
                        terminated_at = Some(Instant::now());
                        if let Some(group) = group {
                            let _ = kill_process_group(group, Signal::TERM);
                        }
                    }
                    Action::Kill => {
                        eprintln!(
                            "fencectl: lease on {} is {} with {} left: SIGKILL to the command",
                            lease.lock(), status.state, show(status.remaining)
                        );
                        killed = true;
                        if let Some(group) = group {
                            let _ = kill_process_group(group, Signal::KILL);
                        }
                    }
                }
            }
        }
    }
}

/// Catches the [`FORWARDED`] signals from now on and hands each to the returned receiver.
/// The channel is bounded: signals that arrive while it is full are coalesced by the
/// kernel and tokio anyway.
fn forward_signals() -> Result<mpsc::Receiver<Signal>, Error> {
    let (sender, receiver) = mpsc::channel(FORWARDED.len() * 2);
    for (kind, sig) in FORWARDED {
        let mut handler = signal(kind).map_err(|source| Error::Io {
            what: "installing a signal handler",
            source,
        })?;
        let sender = sender.clone();
        tokio::spawn(async move {
            while handler.recv().await.is_some() {
                if sender.send(sig).await.is_err() {
                    break;
                }
            }
        });
    }
    Ok(receiver)
}
