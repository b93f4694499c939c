//! S5: the store accepted writes (and fences) per resource in non-decreasing token order,
//! and every read, the final one included, shows the latest accepted write.
//!
//! - Order: if write X was accepted and answered before write Y was sent, and Y was
//!   accepted too, then Y's token is at least X's.
//! - Reads: a read names the write whose value it shows (values are unique). That write
//!   must not be one the gate rejected, and must not be *surely overwritten*: no accepted
//!   write answered before the read was sent has a higher token, or was sent after the
//!   shown write was answered. A read that finds nothing, after an accepted write was
//!   answered, lost that write. A write whose outcome is unknown may take effect at any
//!   time, so it is never "answered".

use std::collections::HashMap;

use super::model::{Model, Operation};
use super::{secs, OpRef, Rule, Violation};
use crate::history::{Op, Outcome};

/// Reports stale accepted writes and stale reads.
pub fn check(model: &Model, out: &mut Vec<Violation>) {
    let mut by_resource: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, op) in model.ops.iter().enumerate() {
        let resource = match &op.op {
            Op::Put { resource, .. }
            | Op::KvFence { resource, .. }
            | Op::Get { resource, .. }
            | Op::FinalRead { resource, .. } => resource,
            _ => continue,
        };
        by_resource
            .entry(resource.as_str())
            .or_default()
            .push(index);
    }
    for ops in by_resource.values() {
        order(model, ops, out);
        reads(model, ops, out);
    }
}

/// The token a write or fence carries, and its key (`None` for a fence).
fn write_of(op: &Operation) -> Option<(u64, Option<(&str, &str)>)> {
    match &op.op {
        Op::Put {
            token, key, value, ..
        } => Some((*token, Some((key.as_str(), value.as_str())))),
        Op::KvFence { token, .. } => Some((*token, None)),
        _ => None,
    }
}

fn accepted(op: &Operation) -> bool {
    matches!(op.outcome, Some(Outcome::Accepted { .. }))
}

/// Accepted writes in token order.
fn order(model: &Model, ops: &[usize], out: &mut Vec<Violation>) {
    let accepted_ops: Vec<usize> = ops
        .iter()
        .copied()
        .filter(|&i| accepted(model.op(i)) && write_of(model.op(i)).is_some())
        .collect();
    let mut by_completion = accepted_ops.clone();
    by_completion.sort_by_key(|&i| model.op(i).completed_or_never());
    let mut answered = by_completion.into_iter().peekable();
    let mut highest: Option<(u64, usize)> = None;
    // `ops` is in invocation order.
    for &index in &accepted_ops {
        let op = model.op(index);
        while let Some(&i) = answered.peek() {
            if model.op(i).completed_or_never() >= op.invoked {
                break;
            }
            let token = write_of(model.op(i)).map_or(0, |(t, _)| t);
            if highest.is_none_or(|(h, _)| token > h) {
                highest = Some((token, i));
            }
            answered.next();
        }
        let Some((token, _)) = write_of(op) else {
            continue;
        };
        if let Some((high, before)) = highest.filter(|(h, _)| *h > token) {
            out.push(Violation {
                rule: Rule::S5,
                at: op.completed_or_never().min(u64::MAX - 1),
                message: format!(
                    "the store accepted token {token} after it had accepted token {high} \
                     (answered at {})",
                    secs(model.op(before).completed_or_never())
                ),
                ops: vec![OpRef::of(model.op(before)), OpRef::of(op)],
            });
        }
    }
}

/// Reads show the latest accepted write.
fn reads(model: &Model, ops: &[usize], out: &mut Vec<Violation>) {
    let mut by_value: HashMap<(&str, &str), usize> = HashMap::new();
    for &i in ops {
        if let Some((_, Some(key_value))) = write_of(model.op(i)) {
            by_value.insert(key_value, i);
        }
    }
    for &r in ops {
        let read = model.op(r);
        let (key, found, value, token) = match (&read.op, &read.outcome) {
            (
                Op::Get { key, .. } | Op::FinalRead { key, .. },
                Some(Outcome::Read {
                    found,
                    value,
                    token,
                }),
            ) => (key.as_str(), *found, value.as_str(), *token),
            _ => continue,
        };
        // Accepted puts of this key answered before the read was sent.
        let before: Vec<usize> = ops
            .iter()
            .copied()
            .filter(|&i| {
                let op = model.op(i);
                accepted(op)
                    && matches!(&op.op, Op::Put { key: k, .. } if k == key)
                    && op.completed_or_never() < read.invoked
            })
            .collect();
        let mut report = |message: String, mut involved: Vec<usize>| {
            involved.push(r);
            out.push(Violation {
                rule: Rule::S5,
                at: read.completed_or_never().min(u64::MAX - 1),
                message,
                ops: involved.iter().map(|&i| OpRef::of(model.op(i))).collect(),
            });
        };
        if !found {
            if let Some(&lost) = before.last() {
                report(
                    format!(
                        "the read found no value, but a write was accepted at {}",
                        secs(model.op(lost).completed_or_never())
                    ),
                    vec![lost],
                );
            }
            continue;
        }
        let Some(&shown) = by_value.get(&(key, value)) else {
            report(
                format!("the read shows {value:?}, which no write wrote"),
                vec![],
            );
            continue;
        };
        let writer = model.op(shown);
        let written_token = write_of(writer).map_or(0, |(t, _)| t);
        if matches!(
            writer.outcome,
            Some(Outcome::Rejected { .. } | Outcome::Failed { .. })
        ) {
            report(
                format!("the read shows {value:?}, from a write the store refused"),
                vec![shown],
            );
            continue;
        }
        if token != written_token {
            report(
                format!(
                    "the read shows {value:?} with token {token}, but it was written with \
                     token {written_token}"
                ),
                vec![shown],
            );
            continue;
        }
        // The write is surely over if it was answered (accepted) before a later write was
        // sent; an indeterminate one may land at any time.
        let shown_answered = if accepted(writer) {
            writer.completed_or_never()
        } else {
            u64::MAX
        };
        let newer = before.iter().copied().find(|&i| {
            let y = model.op(i);
            let y_token = write_of(y).map_or(0, |(t, _)| t);
            y_token > written_token || shown_answered < y.invoked
        });
        if let Some(newer) = newer {
            report(
                format!(
                    "the read shows {value:?} (token {written_token}), but a newer write was \
                     accepted at {}",
                    secs(model.op(newer).completed_or_never())
                ),
                vec![shown, newer],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::check::fixture::H;
    use crate::check::Rule;
    use crate::history::{Op, Outcome};

    fn ok(mark: u64) -> Outcome {
        Outcome::Accepted { mark }
    }

    fn read(value: &str, token: u64) -> Outcome {
        Outcome::Read {
            found: true,
            value: value.into(),
            token,
        }
    }

    // checks: S5
    #[test]
    fn writes_in_token_order_and_fresh_reads_pass() {
        let mut h = H::new();
        h.put("w1", 0, Some(10), "w1-1", 3, ok(3))
            .put("w1", 20, Some(30), "w1-2", 3, ok(3))
            .put("w2", 40, Some(50), "w2-1", 5, ok(5))
            // A stale write turned away; a write of unknown outcome.
            .put(
                "w1",
                60,
                Some(70),
                "w1-3",
                3,
                Outcome::Rejected {
                    presented: 3,
                    current: 5,
                },
            )
            .put(
                "w2",
                80,
                Some(90),
                "w2-2",
                5,
                Outcome::Unknown {
                    error: "timeout".into(),
                },
            )
            .get("w3", 85, 95, read("w2-1", 5))
            // The unknown write may have landed after all.
            .get("w3", 100, 110, read("w2-2", 5));
        assert!(h.violations(Rule::S5).is_empty(), "{:?}", h.check());
    }

    // checks: S5
    #[test]
    fn a_stale_write_accepted_after_a_newer_one_is_reported() {
        let mut h = H::new();
        h.put("w2", 0, Some(10), "w2-1", 5, ok(5))
            .put("w1", 20, Some(30), "w1-1", 3, ok(5));
        let found = h.violations(Rule::S5);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("accepted token 3"));
    }

    // checks: S5
    #[test]
    fn a_fence_raises_the_bar_for_later_writes() {
        let mut h = H::new();
        h.op(
            "w2",
            0,
            Some(10),
            Op::KvFence {
                lease: "w2.1".into(),
                resource: "r".into(),
                token: 7,
            },
            ok(7),
        )
        .put("w1", 20, Some(30), "w1-1", 6, ok(7));
        assert_eq!(h.violations(Rule::S5).len(), 1, "{:?}", h.check());
    }

    // checks: S5
    #[test]
    fn stale_lost_and_invented_reads_are_reported() {
        // The final value is an older write's: the newer accepted one was lost.
        let mut h = H::new();
        h.put("w1", 0, Some(10), "w1-1", 3, ok(3))
            .put("w1", 20, Some(30), "w1-2", 3, ok(3))
            .op(
                "harness",
                40,
                Some(50),
                Op::FinalRead {
                    resource: "r".into(),
                    key: "k".into(),
                },
                read("w1-1", 3),
            );
        assert_eq!(h.violations(Rule::S5).len(), 1, "{:?}", h.check());
        // Nothing found after an accepted write.
        let mut h = H::new();
        h.put("w1", 0, Some(10), "w1-1", 3, ok(3)).get(
            "w2",
            20,
            30,
            Outcome::Read {
                found: false,
                value: String::new(),
                token: 0,
            },
        );
        assert_eq!(h.violations(Rule::S5).len(), 1, "{:?}", h.check());
        // A rejected write's value.
        let mut h = H::new();
        h.put("w1", 0, Some(10), "w1-1", 5, ok(5))
            .put(
                "w2",
                20,
                Some(30),
                "w2-1",
                3,
                Outcome::Rejected {
                    presented: 3,
                    current: 5,
                },
            )
            .get("w3", 40, 50, read("w2-1", 3));
        assert_eq!(h.violations(Rule::S5).len(), 1, "{:?}", h.check());
    }
}
