//! The checker: reads a history, and only the history, and reports every place where it
//! breaks CONTRACT.md.
//!
//! Every rule is conservative: it reports a violation only when the recorded times prove
//! one, whatever the unrecorded instants (when a request reached the server, when an
//! indeterminate write took effect) were. A false violation would be as bad as a missed
//! one, so each rule has unit tests over hand-made histories in both directions.
//!
//! # Layout
//! - [`model`]: events joined into operations, grants, lease events, faults.
//! - [`tokens`]: S1, tokens unique and increasing.
//! - [`grants`]: S2, no acknowledged grant overtaken before its TTL ran out.
//! - [`holders`]: S3/S4, no holder's successful `fence()` after the next grant.
//! - [`store`]: S5, the store's accepted writes in token order, reads never stale.
//! - [`lost`]: S7, a lost lease stays lost.
//! - [`order`]: L2, waiters granted in arrival order.

pub mod grants;
pub mod holders;
pub mod lost;
pub mod model;
pub mod order;
pub mod store;
pub mod tokens;

#[cfg(test)]
pub(crate) mod fixture;

use std::fmt;

use crate::history::{Event, Nanos};
use model::{Model, Operation};

/// A contract rule the checker enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Tokens only go up.
    S1,
    /// An acknowledged grant is durable and held for its TTL.
    S2,
    /// One holder at a time, and the client gives up first.
    S3S4,
    /// The gate lets no stale write through.
    S5,
    /// A lost lease stays lost.
    S7,
    /// Waiters are served in order.
    L2,
}

impl Rule {
    /// Every rule, in the contract's order.
    pub const ALL: [Rule; 6] = [Rule::S1, Rule::S2, Rule::S3S4, Rule::S5, Rule::S7, Rule::L2];

    /// The contract id.
    pub fn id(self) -> &'static str {
        match self {
            Rule::S1 => "S1",
            Rule::S2 => "S2",
            Rule::S3S4 => "S3/S4",
            Rule::S5 => "S5",
            Rule::S7 => "S7",
            Rule::L2 => "L2",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// An operation named in a violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRef {
    /// Process, number, what it did and how it ended.
    pub what: String,
    /// When it started.
    pub invoked: Nanos,
    /// When it ended, if it did.
    pub completed: Option<Nanos>,
}

impl OpRef {
    /// Names an operation.
    pub fn of(op: &Operation) -> OpRef {
        OpRef {
            what: op.describe(),
            invoked: op.invoked,
            completed: op.completed,
        }
    }
}

/// One broken promise, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which rule.
    pub rule: Rule,
    /// When it is proven broken.
    pub at: Nanos,
    /// What happened, in words, with the times that prove it.
    pub message: String,
    /// The operations involved.
    pub ops: Vec<OpRef>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} at {}: {}", self.rule, secs(self.at), self.message)?;
        for op in &self.ops {
            let completed = op.completed.map_or("never".to_string(), secs);
            writeln!(f, "    [{} .. {}] {}", secs(op.invoked), completed, op.what)?;
        }
        Ok(())
    }
}

/// A time on the machine's clock, in seconds, for messages.
pub fn secs(t: Nanos) -> String {
    format!("{:.6}s", t as f64 / 1e9)
}

/// The checker's tolerances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Time differences smaller than this prove nothing (rounding of milliseconds on the
    /// wire). Default: 2 ms.
    pub slack: Nanos,
    /// L2 compares two waiters only if one started waiting this much before the other,
    /// so that the first surely reached the server first. Default: 500 ms.
    pub fifo_margin: Nanos,
    /// L2 leaves out waits that overlap a fault or come within this of its end: a fault
    /// may delay a request, and a restart empties the queue. Default: 2 s.
    pub fault_settle: Nanos,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            slack: model::ms(2),
            fifo_margin: model::ms(500),
            fault_settle: model::ms(2_000),
        }
    }
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Operations in the history.
    pub operations: usize,
    /// Acknowledged grants.
    pub grants: usize,
    /// Every violation, in time order.
    pub violations: Vec<Violation>,
    /// Oddities in the history itself (completions without invocations).
    pub anomalies: Vec<String>,
}

impl Report {
    /// Violations of one rule.
    pub fn count(&self, rule: Rule) -> usize {
        self.violations.iter().filter(|v| v.rule == rule).count()
    }
}

/// Checks a history against every rule.
pub fn check(events: &[Event], options: &Options) -> Report {
    let model = Model::build(events);
    let mut violations = Vec::new();
    tokens::check(&model, &mut violations);
    grants::check(&model, options, &mut violations);
    holders::check(&model, options, &mut violations);
    store::check(&model, &mut violations);
    lost::check(&model, options, &mut violations);
    order::check(&model, options, &mut violations);
    violations.sort_by_key(|v| (v.at, v.rule));
    Report {
        operations: model.ops.len(),
        grants: model.grants.len(),
        violations,
        anomalies: model.anomalies.clone(),
    }
}

/// Whether grant `a` surely reached the server before grant `b`: `a` was answered before
/// `b` was sent, or, when the two calls overlap, `a` has the lower token (the server
/// hands tokens out in order; S1 is checked on its own).
pub(crate) fn granted_before(a: &model::Grant, b: &model::Grant) -> bool {
    if a.completed < b.invoked {
        return true;
    }
    if b.completed < a.invoked {
        return false;
    }
    a.token < b.token
}
