//! [`Model`]: a history's events joined into operations, grants, lease events, faults and
//! server changes, the form every rule reads.

use std::collections::HashMap;

use crate::history::{Event, Nanos, Op, Outcome, Phase, SdkState, ServerChange};

/// One operation: its invocation and, if it came, its completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The process that ran it.
    pub process: String,
    /// Its number within the process.
    pub id: u64,
    /// When it started.
    pub invoked: Nanos,
    /// When it ended; `None` if it never did (indeterminate).
    pub completed: Option<Nanos>,
    /// What it did.
    pub op: Op,
    /// How it ended; `None` if it never did.
    pub outcome: Option<Outcome>,
}

impl Operation {
    /// One line naming it: process, number, what, how it ended.
    pub fn describe(&self) -> String {
        let what = match &self.op {
            Op::Acquire {
                lock,
                wait_ms,
                ttl_ms,
            } => format!("acquire {lock} (wait {wait_ms} ms, ttl {ttl_ms} ms)"),
            Op::Fence { lease } => format!("fence() of {lease}"),
            Op::Release { lease } => format!("release {lease}"),
            Op::Put {
                lease,
                resource,
                key,
                value,
                token,
            } => format!("put {resource}/{key}={value} with token {token} ({lease})"),
            Op::KvFence {
                lease,
                resource,
                token,
            } => format!("store fence {resource} with token {token} ({lease})"),
            Op::Get { resource, key } => format!("get {resource}/{key}"),
            Op::FinalRead { resource, key } => format!("final read {resource}/{key}"),
        };
        let how = match &self.outcome {
            None => "never completed".to_string(),
            Some(Outcome::Granted {
                lease,
                token,
                ttl_ms,
            }) => format!("granted {lease} token {token} ttl {ttl_ms} ms"),
            Some(Outcome::Token { token }) => format!("token {token}"),
            Some(Outcome::Refused { reason }) => format!("refused: {reason}"),
            Some(Outcome::Done) => "done".to_string(),
            Some(Outcome::Accepted { mark }) => format!("accepted, mark {mark}"),
            Some(Outcome::Rejected { presented, current }) => {
                format!("rejected: {presented} < {current}")
            }
            Some(Outcome::Read {
                found,
                value,
                token,
            }) => {
                if *found {
                    format!("read {value} (token {token})")
                } else {
                    "read: not found".to_string()
                }
            }
            Some(Outcome::Failed { error }) => format!("failed: {error}"),
            Some(Outcome::Unknown { error }) => format!("unknown: {error}"),
        };
        format!("{}#{} {what} -> {how}", self.process, self.id)
    }

    /// Whether it surely took effect (completed with a positive answer).
    pub fn succeeded(&self) -> bool {
        matches!(
            self.outcome,
            Some(
                Outcome::Granted { .. }
                    | Outcome::Token { .. }
                    | Outcome::Done
                    | Outcome::Accepted { .. }
                    | Outcome::Read { .. }
            )
        )
    }

    /// Whether it may have taken effect without our knowing (never completed, or
    /// completed with [`Outcome::Unknown`]).
    pub fn indeterminate(&self) -> bool {
        matches!(self.outcome, None | Some(Outcome::Unknown { .. }))
    }

    /// Its completion, or "never" (the end of time) if it has none.
    pub fn completed_or_never(&self) -> Nanos {
        self.completed.unwrap_or(Nanos::MAX)
    }
}

/// An acknowledged grant and what its holder did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The acquire operation (index into [`Model::ops`]).
    pub op: usize,
    /// The process holding it.
    pub process: String,
    /// The lease's name.
    pub lease: String,
    /// The lock.
    pub lock: String,
    /// The token.
    pub token: u64,
    /// The TTL the server granted.
    pub ttl: Nanos,
    /// How long the acquire was willing to wait (0: try-once).
    pub wait_ms: u64,
    /// When the acquire was sent (the server granted no earlier).
    pub invoked: Nanos,
    /// When the grant was answered (the server granted no later).
    pub completed: Nanos,
    /// When its holder first started to release it, if it did.
    pub released: Option<Nanos>,
    /// The successful `fence()` calls: (when invoked, operation index).
    pub fences: Vec<(Nanos, usize)>,
}

/// A renewal the SDK confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// When the worker noticed it.
    pub seen: Nanos,
    /// A lower bound of its send time.
    pub sent: Nanos,
    /// The TTL it renewed for.
    pub ttl: Nanos,
}

/// A change of the SDK's state of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// When.
    pub at: Nanos,
    /// The new state.
    pub state: SdkState,
    /// The SDK's words.
    pub detail: String,
}

/// A fault, from its start to its end (`None`: never healed in the history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultWindow {
    /// The target.
    pub target: String,
    /// The kind.
    pub kind: String,
    /// When it began.
    pub start: Nanos,
    /// When it was healed.
    pub end: Option<Nanos>,
}

/// A server's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent {
    /// When.
    pub at: Nanos,
    /// Which server.
    pub target: String,
    /// What changed.
    pub change: ServerChange,
}

/// The target name of the single lock server. A cluster's members are `fenced-<n>`
/// ([`crate::cluster::member_target`]): a rule that reasons about the lock server's
/// restarts reads this name only (see [`super::grants`]).
pub const LOCK_SERVER: &str = "fenced";

/// A history, joined.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Every operation, in order of invocation.
    pub ops: Vec<Operation>,
    /// Every acknowledged grant, in order of invocation.
    pub grants: Vec<Grant>,
    /// The SDK's state changes per lease, in time order.
    pub states: HashMap<String, Vec<StateChange>>,
    /// The confirmed renewals per lease, in the order seen.
    pub renewals: HashMap<String, Vec<Renewal>>,
    /// Every fault.
    pub faults: Vec<FaultWindow>,
    /// Every server change, in time order.
    pub servers: Vec<ServerEvent>,
    /// Completions that match no invocation, and other oddities, in words.
    pub anomalies: Vec<String>,
}

impl Model {
    /// Joins a history's events.
    pub fn build(events: &[Event]) -> Model {
        let mut model = Model::default();
        let mut open: HashMap<(String, u64), usize> = HashMap::new();
        let mut fault_open: HashMap<(String, String), usize> = HashMap::new();
        let mut sorted: Vec<&Event> = events.iter().collect();
        sorted.sort_by_key(|e| e.time());
        for event in sorted {
            match event {
                Event::Invoke { t, process, id, op } => {
                    open.insert((process.clone(), *id), model.ops.len());
                    model.ops.push(Operation {
                        process: process.clone(),
                        id: *id,
                        invoked: *t,
                        completed: None,
                        op: op.clone(),
                        outcome: None,
                    });
                }
                Event::Complete {
                    t,
                    process,
                    id,
                    outcome,
                } => match open.remove(&(process.clone(), *id)) {
                    Some(index) => {
                        model.ops[index].completed = Some(*t);
                        model.ops[index].outcome = Some(outcome.clone());
                    }
                    None => model
                        .anomalies
                        .push(format!("{process}#{id} completed without an invocation")),
                },
                Event::LeaseState {
                    t,
                    lease,
                    state,
                    detail,
                    ..
                } => model
                    .states
                    .entry(lease.clone())
                    .or_default()
                    .push(StateChange {
                        at: *t,
                        state: *state,
                        detail: detail.clone(),
                    }),
                Event::Renewed {
                    t,
                    lease,
                    sent,
                    ttl_ms,
                    ..
                } => model
                    .renewals
                    .entry(lease.clone())
                    .or_default()
                    .push(Renewal {
                        seen: *t,
                        sent: *sent,
                        ttl: ms(*ttl_ms),
                    }),
                Event::Fault {
                    t,
                    target,
                    kind,
                    phase,
                } => match phase {
                    Phase::Start => {
                        fault_open.insert((target.clone(), kind.clone()), model.faults.len());
                        model.faults.push(FaultWindow {
                            target: target.clone(),
                            kind: kind.clone(),
                            start: *t,
                            end: None,
                        });
                    }
                    Phase::End => {
                        if let Some(index) = fault_open.remove(&(target.clone(), kind.clone())) {
                            model.faults[index].end = Some(*t);
                        }
                    }
                },
                Event::Server { t, target, change } => model.servers.push(ServerEvent {
                    at: *t,
                    target: target.clone(),
                    change: *change,
                }),
            }
        }
        model.grants = grants(&model.ops);
        model
    }

    /// The operation at `index`.
    pub fn op(&self, index: usize) -> &Operation {
        &self.ops[index]
    }
}

/// Nanoseconds in `millis` milliseconds.
pub fn ms(millis: u64) -> Nanos {
    millis.saturating_mul(1_000_000)
}

/// The acknowledged grants, with their releases and successful fences.
fn grants(ops: &[Operation]) -> Vec<Grant> {
    let mut grants = Vec::new();
    let mut by_lease: HashMap<String, usize> = HashMap::new();
    for (index, op) in ops.iter().enumerate() {
        if let (
            Op::Acquire { lock, wait_ms, .. },
            Some(Outcome::Granted {
                lease,
                token,
                ttl_ms,
            }),
            Some(completed),
        ) = (&op.op, &op.outcome, op.completed)
        {
            by_lease.insert(lease.clone(), grants.len());
            grants.push(Grant {
                op: index,
                process: op.process.clone(),
                lease: lease.clone(),
                lock: lock.clone(),
                token: *token,
                ttl: ms(*ttl_ms),
                wait_ms: *wait_ms,
                invoked: op.invoked,
                completed,
                released: None,
                fences: Vec::new(),
            });
        }
    }
    for (index, op) in ops.iter().enumerate() {
        match (&op.op, &op.outcome) {
            (Op::Release { lease }, _) => {
                if let Some(&g) = by_lease.get(lease) {
                    let released = &mut grants[g].released;
                    *released = Some(released.map_or(op.invoked, |r| r.min(op.invoked)));
                }
            }
            (Op::Fence { lease }, Some(Outcome::Token { .. })) => {
                if let Some(&g) = by_lease.get(lease) {
                    grants[g].fences.push((op.invoked, index));
                }
            }
            _ => {}
        }
    }
    grants
}
