//! A failing run as one HTML page: the violations, then a lane picture (the zombie demo's
//! drawing, `fenced_demo::html`) of the events around the first one, and a table of them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use fenced_demo::html::{escape, svg, table, Band, Bar, Dot, Picture, STYLE};
use fenced_demo::timeline::Mark;

use crate::check::model::LOCK_SERVER;
use crate::check::{secs, Report};
use crate::history::{Event, Nanos, Op, Outcome, Phase, SdkState, ServerChange};

/// At most this many events are drawn: a picture of thousands is unreadable.
const MAX_DRAWN: usize = 150;

/// Renders a run's page.
pub fn render(events: &[Event], report: &Report, seed: u64) -> String {
    let origin = events.first().map_or(0, Event::time);
    let mut page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>fenced-torture run \
         {seed:016x}</title>{STYLE}</head><body><h1>Run {seed:016x}: {} violation(s)</h1>",
        report.violations.len()
    );
    page.push_str("<table>");
    for violation in &report.violations {
        let _ = write!(
            page,
            "<tr><td class=\"t\">{}</td><td><b>{}</b></td><td>{}<br>{}</td></tr>",
            secs(violation.at.saturating_sub(origin)),
            violation.rule,
            escape(&violation.message),
            violation
                .ops
                .iter()
                .map(|op| escape(&op.what))
                .collect::<Vec<_>>()
                .join("<br>")
        );
    }
    page.push_str("</table>");
    // The window around the first violation: from a second before its earliest operation
    // to half a second after its proof.
    let (from, to) = report.violations.first().map_or((0, Nanos::MAX), |v| {
        let start = v.ops.iter().map(|op| op.invoked).min().unwrap_or(v.at);
        (
            start.saturating_sub(1_000_000_000),
            v.at.saturating_add(500_000_000),
        )
    });
    let window: Vec<&Event> = events
        .iter()
        .filter(|e| e.time() >= from && e.time() <= to)
        .collect();
    // The picture shows the latest events up to the proof; the table lists them all.
    let (drawn, _) = picture(&window[window.len().saturating_sub(MAX_DRAWN)..], origin);
    let (_, rows) = picture(&window, origin);
    page.push_str("<h2>Around the first violation</h2>");
    page.push_str(&svg(&drawn));
    let rows: Vec<(Duration, &str, &str)> = rows
        .iter()
        .map(|(at, lane, text)| (*at, lane.as_str(), text.as_str()))
        .collect();
    page.push_str(&table(&rows));
    page.push_str("</body></html>\n");
    page
}

/// The picture of some events, and every one of them as a table row.
fn picture(events: &[&Event], origin: Nanos) -> (Picture, Vec<(Duration, String, String)>) {
    let mut lanes: Vec<String> = Vec::new();
    let lane = |name: &str, lanes: &mut Vec<String>| match lanes.iter().position(|l| l == name) {
        Some(i) => i,
        None => {
            lanes.push(name.to_string());
            lanes.len() - 1
        }
    };
    let mut picture = Picture::default();
    let mut rows = Vec::new();
    let mut invoked: HashMap<(String, u64), Op> = HashMap::new();
    let mut lease_start: HashMap<String, (usize, usize, u64)> = HashMap::new();
    let mut stopped: HashMap<String, usize> = HashMap::new();
    for event in events {
        let at = Duration::from_nanos(event.time().saturating_sub(origin));
        let (who, mark, text, wide) = match event {
            Event::Invoke {
                process, id, op, ..
            } => {
                invoked.insert((process.clone(), *id), op.clone());
                rows.push((at, process.clone(), format!("starts {}", describe_op(op))));
                continue;
            }
            Event::Complete {
                process,
                id,
                outcome,
                ..
            } => {
                let op = invoked.remove(&(process.clone(), *id));
                let what = op.as_ref().map_or("?".to_string(), describe_op);
                let mark = match (op.as_ref(), outcome) {
                    (_, Outcome::Granted { token, .. }) => Mark::Granted(*token),
                    (Some(Op::Put { token, .. }), Outcome::Accepted { .. }) => {
                        Mark::Accepted(*token)
                    }
                    (_, Outcome::Rejected { presented, current }) => {
                        Mark::Rejected(*presented, *current)
                    }
                    (_, Outcome::Refused { .. }) => Mark::Sdk,
                    _ => Mark::Note,
                };
                (
                    process.clone(),
                    mark,
                    format!("{what} -> {}", describe_outcome(outcome)),
                    false,
                )
            }
            Event::LeaseState {
                process,
                lease,
                state,
                detail,
                ..
            } => {
                let mark = if *state == SdkState::Held {
                    Mark::Note
                } else {
                    Mark::Sdk
                };
                (process.clone(), mark, format!("{lease}: {detail}"), false)
            }
            Event::Renewed { .. } => continue,
            Event::Fault {
                target,
                kind,
                phase,
                ..
            } => {
                let pause = kind == "pause" || kind.starts_with("pause-");
                let mark = match (pause, phase) {
                    (true, Phase::Start) => Mark::Stopped,
                    (true, Phase::End) => Mark::Continued,
                    _ => Mark::Note,
                };
                let words = match phase {
                    Phase::Start => format!("nemesis: {kind} {target}"),
                    Phase::End => format!("nemesis: {kind} {target} healed"),
                };
                let lane_name = if target.starts_with("link-") {
                    target.trim_start_matches("link-").to_string()
                } else {
                    target.clone()
                };
                (lane_name, mark, words, pause && *phase == Phase::Start)
            }
            Event::Server { target, change, .. } => {
                let (mark, words) = match change {
                    ServerChange::Down => (Mark::Stopped, "down (killed)"),
                    ServerChange::Starting => (Mark::Note, "starting"),
                    ServerChange::Up => (Mark::Continued, "serving"),
                };
                (target.clone(), mark, format!("{target} {words}"), false)
            }
        };
        rows.push((at, who.clone(), text.clone()));
        if picture.dots.len() >= MAX_DRAWN {
            continue;
        }
        let index = picture.dots.len();
        let lane_index = lane(&who, &mut lanes);
        match (&mark, event) {
            (
                Mark::Granted(token),
                Event::Complete {
                    outcome: Outcome::Granted { lease, .. },
                    ..
                },
            ) => {
                lease_start.insert(lease.clone(), (index, lane_index, *token));
            }
            (_, Event::LeaseState { lease, state, .. }) if *state == SdkState::Lost => {
                if let Some((from, bar_lane, token)) = lease_start.remove(lease) {
                    picture.bars.push(Bar {
                        lane: bar_lane,
                        from,
                        to: index,
                        label: format!("{lease} token {token}"),
                    });
                }
            }
            (Mark::Stopped, _) => {
                stopped.insert(who.clone(), index);
            }
            (Mark::Continued, _) => {
                if let Some(from) = stopped.remove(&who) {
                    let length = at.saturating_sub(picture.dots[from].at).as_secs_f64();
                    picture.bands.push(Band {
                        from,
                        to: index,
                        label: format!("{who} stopped for {length:.2} s"),
                    });
                }
            }
            _ => {}
        }
        picture.dots.push(Dot {
            lane: lane_index,
            at,
            mark,
            text,
            wide,
        });
    }
    let last = picture.dots.len().saturating_sub(1);
    for (lease, (from, bar_lane, token)) in lease_start {
        picture.bars.push(Bar {
            lane: bar_lane,
            from,
            to: last,
            label: format!("{lease} token {token}"),
        });
    }
    // The servers first, then the workers in order.
    let order = |name: &str| match name {
        LOCK_SERVER => (0, String::new()),
        "fenced-kv" => (1, String::new()),
        other => (2, format!("{:>8}", other)),
    };
    let mut sorted: Vec<usize> = (0..lanes.len()).collect();
    sorted.sort_by_key(|&i| order(&lanes[i]));
    let mut position = vec![0; lanes.len()];
    for (new, &old) in sorted.iter().enumerate() {
        position[old] = new;
    }
    for dot in &mut picture.dots {
        dot.lane = position[dot.lane];
    }
    for bar in &mut picture.bars {
        bar.lane = position[bar.lane];
    }
    picture.lanes = sorted.iter().map(|&i| lanes[i].clone()).collect();
    (picture, rows)
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Acquire { lock, wait_ms, .. } => format!("acquire {lock} (wait {wait_ms} ms)"),
        Op::Fence { lease } => format!("fence() {lease}"),
        Op::Release { lease } => format!("release {lease}"),
        Op::Put { value, token, .. } => format!("put {value} token {token}"),
        Op::KvFence {
            resource, token, ..
        } => format!("store fence {resource} token {token}"),
        Op::Get { resource, .. } => format!("get {resource}"),
        Op::FinalRead { resource, .. } => format!("final read {resource}"),
    }
}

fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Granted { lease, token, .. } => format!("{lease} token {token}"),
        Outcome::Token { token } => format!("token {token}"),
        Outcome::Refused { reason } => format!("refused ({reason})"),
        Outcome::Done => "done".into(),
        Outcome::Accepted { mark } => format!("accepted (mark {mark})"),
        Outcome::Rejected { presented, current } => format!("rejected {presented} < {current}"),
        Outcome::Read {
            found,
            value,
            token,
        } => {
            if *found {
                format!("{value} (token {token})")
            } else {
                "not found".into()
            }
        }
        Outcome::Failed { error } => format!("failed: {error}"),
        Outcome::Unknown { error } => format!("unknown: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use crate::check::fixture::H;
    use crate::check::{check, Options};
    use crate::history::SdkState;

    #[test]
    fn a_failing_run_is_drawn_with_its_violation_lanes_and_pause() {
        let mut h = H::new();
        h.grant("w1", 0, 10, "a", "w1.1", 1, 1000, 0)
            .state("w1", 10, "w1.1", SdkState::Held)
            .fault("w1", "pause", 100, 900)
            .grant("w2", 50, 600, "a", "w2.1", 2, 1000, 2000)
            .restart(700, 750, 800);
        let mut events = h.events().to_vec();
        events.sort_by_key(|e| e.time());
        let report = check(&events, &Options::default());
        assert!(!report.violations.is_empty());
        let page = super::render(&events, &report, 42);
        assert!(page.contains("S2"), "the violation is named");
        assert!(page.contains("<svg"));
        for lane in ["w1", "w2", "fenced"] {
            assert!(page.contains(&format!(">{lane}<")), "lane {lane}");
        }
        assert!(
            page.contains("w1 stopped for 0.80 s"),
            "the pause is a band"
        );
        assert!(page.contains("w1.1 token 1"), "the lease is a bar");
    }
}
