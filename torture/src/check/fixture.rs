//! Hand-made histories for the rules' unit tests. Times are in milliseconds.

use crate::history::{Event, Op, Outcome, Phase, SdkState, ServerChange};

use super::model::ms;
use super::{check, Options, Rule, Violation};

/// A history under construction.
#[derive(Default)]
pub struct H {
    events: Vec<Event>,
    next_id: u64,
}

impl H {
    pub fn new() -> H {
        H::default()
    }

    /// An operation from `start` to `end` (`None`: never completed).
    pub fn op(
        &mut self,
        process: &str,
        start: u64,
        end: Option<u64>,
        op: Op,
        outcome: Outcome,
    ) -> &mut H {
        self.next_id += 1;
        let id = self.next_id;
        self.events.push(Event::Invoke {
            t: ms(start),
            process: process.into(),
            id,
            op,
        });
        if let Some(end) = end {
            self.events.push(Event::Complete {
                t: ms(end),
                process: process.into(),
                id,
                outcome,
            });
        }
        self
    }

    /// An acknowledged grant of `lock` as lease `lease` (also the process's name's prefix).
    #[allow(clippy::too_many_arguments)]
    pub fn grant(
        &mut self,
        process: &str,
        start: u64,
        end: u64,
        lock: &str,
        lease: &str,
        token: u64,
        ttl_ms: u64,
        wait_ms: u64,
    ) -> &mut H {
        self.op(
            process,
            start,
            Some(end),
            Op::Acquire {
                lock: lock.into(),
                wait_ms,
                ttl_ms,
            },
            Outcome::Granted {
                lease: lease.into(),
                token,
                ttl_ms,
            },
        )
    }

    /// A successful `fence()` at `at`.
    pub fn fence(&mut self, process: &str, at: u64, lease: &str, token: u64) -> &mut H {
        self.op(
            process,
            at,
            Some(at),
            Op::Fence {
                lease: lease.into(),
            },
            Outcome::Token { token },
        )
    }

    /// A release from `start` to `end`.
    pub fn release(&mut self, process: &str, start: u64, end: u64, lease: &str) -> &mut H {
        self.op(
            process,
            start,
            Some(end),
            Op::Release {
                lease: lease.into(),
            },
            Outcome::Done,
        )
    }

    /// A put of `value` with `token` to resource `r`, key `k`.
    pub fn put(
        &mut self,
        process: &str,
        start: u64,
        end: Option<u64>,
        value: &str,
        token: u64,
        outcome: Outcome,
    ) -> &mut H {
        self.op(
            process,
            start,
            end,
            Op::Put {
                lease: format!("{process}.x"),
                resource: "r".into(),
                key: "k".into(),
                value: value.into(),
                token,
            },
            outcome,
        )
    }

    /// A read of resource `r`, key `k`.
    pub fn get(&mut self, process: &str, start: u64, end: u64, outcome: Outcome) -> &mut H {
        self.op(
            process,
            start,
            Some(end),
            Op::Get {
                resource: "r".into(),
                key: "k".into(),
            },
            outcome,
        )
    }

    /// The SDK's state change of a lease.
    pub fn state(&mut self, process: &str, at: u64, lease: &str, state: SdkState) -> &mut H {
        self.events.push(Event::LeaseState {
            t: ms(at),
            process: process.into(),
            lease: lease.into(),
            state,
            detail: String::new(),
        });
        self
    }

    /// A renewal confirmed at `seen`, sent at `sent`.
    pub fn renewed(
        &mut self,
        process: &str,
        seen: u64,
        lease: &str,
        sent: u64,
        ttl: u64,
    ) -> &mut H {
        self.events.push(Event::Renewed {
            t: ms(seen),
            process: process.into(),
            lease: lease.into(),
            sent: ms(sent),
            ttl_ms: ttl,
        });
        self
    }

    /// The lock server killed (dead at `down`), started again at `starting`, up at `up`.
    pub fn restart(&mut self, down: u64, starting: u64, up: u64) -> &mut H {
        self.restart_of("fenced", down, starting, up)
    }

    /// The server `target` (the lock server, or a cluster member `fenced-<n>`) killed,
    /// started again and up.
    pub fn restart_of(&mut self, target: &str, down: u64, starting: u64, up: u64) -> &mut H {
        self.fault(target, "kill", down, up);
        for (at, change) in [
            (down, ServerChange::Down),
            (starting, ServerChange::Starting),
            (up, ServerChange::Up),
        ] {
            self.events.push(Event::Server {
                t: ms(at),
                target: target.into(),
                change,
            });
        }
        self
    }

    /// A fault from `start` to `end`.
    pub fn fault(&mut self, target: &str, kind: &str, start: u64, end: u64) -> &mut H {
        for (at, phase) in [(start, Phase::Start), (end, Phase::End)] {
            self.events.push(Event::Fault {
                t: ms(at),
                target: target.into(),
                kind: kind.into(),
                phase,
            });
        }
        self
    }

    /// The events so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The violations found.
    pub fn check(&self) -> Vec<Violation> {
        check(&self.events, &Options::default()).violations
    }

    /// The violations of one rule.
    pub fn violations(&self, rule: Rule) -> Vec<Violation> {
        self.check()
            .into_iter()
            .filter(|v| v.rule == rule)
            .collect()
    }
}
