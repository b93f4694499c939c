//! The timeline as one self-contained HTML page: an SVG with a lane per actor, alpha's
//! pause as a shaded band, lease lifetimes as bars, and each write as a green (accepted) or
//! red (rejected) dot with its token.

use std::fmt::Write as _;

use crate::scenario::Report;
use crate::timeline::{Entry, Lane, Mark};

const LANES: [Lane; 4] = [Lane::Alpha, Lane::Beta, Lane::LockServer, Lane::Store];
const WIDTH: f64 = 1100.0;
const LEFT: f64 = 90.0;
const LANE_HEIGHT: f64 = 70.0;

/// Renders the runs (gate on, gate off) as one page.
pub fn render(reports: &[Report]) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>fenced: the zombie leader</title>\
         <style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}\
         h2{margin-top:36px}.verdict{font-weight:600;padding:8px 12px;border-radius:6px;display:inline-block}\
         .ok{background:#e3f6e8;color:#16602b}.bad{background:#fde8e8;color:#8a1c1c}\
         table{border-collapse:collapse;font-size:13px;margin-top:12px}\
         td{padding:2px 10px;border-bottom:1px solid #eee;vertical-align:top}\
         td.t{text-align:right;font-variant-numeric:tabular-nums;color:#666}</style></head><body>\
         <h1>The zombie leader, and the gate that turns it away</h1>\
         <p>Alpha leads with a fencing token, freezes (<code>SIGSTOP</code>) with a write ready to \
         go, and loses its lease while frozen. Beta takes over with a higher token, fences the \
         store and writes. Alpha wakes up and its write goes out with the old token. With the \
         gate on, the store rejects it; with the gate off, it silently overwrites beta's data.</p>",
    );
    for report in reports {
        render_run(&mut page, report);
    }
    page.push_str("</body></html>\n");
    page
}

fn render_run(page: &mut String, report: &Report) {
    let entries = report.timeline.entries();
    let end = entries
        .last()
        .map_or(1.0, |e| e.at.as_secs_f64())
        .max(0.001);
    let x = |seconds: f64| LEFT + (seconds / end) * (WIDTH - LEFT - 30.0);
    let lane_y = |lane: Lane| {
        let index = LANES.iter().position(|l| *l == lane).unwrap_or(0) as f64;
        30.0 + index * LANE_HEIGHT
    };
    let (class, verdict) = verdict(report);
    let _ = write!(
        page,
        "<h2>Gate {}</h2><div class=\"verdict {class}\">{verdict}</div>",
        if report.gate { "on" } else { "off" }
    );
    let height = 30.0 + LANES.len() as f64 * LANE_HEIGHT + 30.0;
    let _ = write!(page, "<svg width=\"{WIDTH}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"12\">");

    // Alpha's pause: from SIGSTOP to SIGCONT, across all lanes.
    let stopped = find(&entries, |e| e.mark == Mark::Stopped);
    let continued = find(&entries, |e| e.mark == Mark::Continued);
    if let (Some(a), Some(b)) = (stopped, continued) {
        let _ = write!(
            page,
            "<rect x=\"{:.1}\" y=\"10\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f1f1f1\"/>\
             <text x=\"{:.1}\" y=\"22\" fill=\"#777\">alpha frozen (SIGSTOP)</text>",
            x(a),
            (x(b) - x(a)).max(1.0),
            height - 20.0,
            x(a) + 4.0
        );
    }
    for lane in LANES {
        let y = lane_y(lane);
        let _ = write!(
            page,
            "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#bbb\"/>\
             <text x=\"8\" y=\"{:.1}\" font-weight=\"600\">{}</text>",
            WIDTH - 20.0,
            y + 4.0,
            lane.name()
        );
    }
    // Lease lifetimes on the lock server's lane: from each grant to its expiry (or the end).
    let grants: Vec<(f64, u64)> = entries
        .iter()
        .filter_map(|e| match e.mark {
            Mark::Granted(token) => Some((e.at.as_secs_f64(), token)),
            _ => None,
        })
        .collect();
    for (index, (start, token)) in grants.iter().enumerate() {
        let stop = entries
            .iter()
            .find(|e| e.mark == Mark::Expired(*token))
            .map(|e| e.at.as_secs_f64())
            .unwrap_or(end);
        let color = if index == 0 { "#8fb3e8" } else { "#e8b38f" };
        let y = lane_y(Lane::LockServer) - 22.0;
        let _ = write!(
            page,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"10\" rx=\"3\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">lease, token {token}</text>",
            x(*start),
            (x(stop) - x(*start)).max(2.0),
            x(*start) + 3.0,
            y - 3.0
        );
    }
    for entry in &entries {
        let (color, radius) = match entry.mark {
            Mark::Accepted(_) => ("#1f9d4a", 7.0),
            Mark::Rejected(_, _) => ("#d23030", 8.0),
            Mark::Granted(_) => ("#2d6cc4", 5.0),
            Mark::Expired(_) => ("#8a5a00", 5.0),
            Mark::Sdk => ("#9b3fb5", 5.0),
            Mark::Stopped | Mark::Continued => ("#555", 4.0),
            Mark::Note => ("#999", 3.0),
        };
        let lane = if LANES.contains(&entry.lane) {
            entry.lane
        } else {
            Lane::Store
        };
        let cx = x(entry.at.as_secs_f64());
        let cy = lane_y(lane);
        let _ = write!(
            page,
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{radius}\" fill=\"{color}\"><title>{:.3}s {}</title></circle>",
            entry.at.as_secs_f64(),
            escape(&entry.text)
        );
        let label = match entry.mark {
            Mark::Accepted(token) => Some(format!("✓ token {token}")),
            Mark::Rejected(presented, current) => Some(format!("✗ {presented} < {current}")),
            _ => None,
        };
        if let Some(label) = label {
            let _ = write!(
                page,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{label}</text>",
                cx - 20.0,
                cy + 22.0
            );
        }
    }
    let _ = write!(
        page,
        "<text x=\"{LEFT}\" y=\"{:.1}\" fill=\"#777\">0 s</text><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#777\">{end:.2} s</text></svg>",
        height - 6.0,
        WIDTH - 70.0,
        height - 6.0
    );
    page.push_str("<table>");
    for entry in &entries {
        let _ = write!(
            page,
            "<tr><td class=\"t\">{:.3}s</td><td>{}</td><td>{}</td></tr>",
            entry.at.as_secs_f64(),
            entry.lane.name(),
            escape(&entry.text)
        );
    }
    page.push_str("</table>");
}

/// The run's verdict in one sentence, and whether it is the good outcome.
pub fn verdict(report: &Report) -> (&'static str, String) {
    match (report.gate, report.zombie_rejected, report.zombie_accepted) {
        (true, Some((presented, current)), false) => (
            "ok",
            format!(
                "PROTECTED: the zombie's write with token {presented} was rejected (current {current}); \
                 the store holds {:?} from token {}.",
                report.final_value, report.final_token
            ),
        ),
        (false, _, true) => (
            "bad",
            format!(
                "DATA LOSS: without the gate the zombie's stale write (token {}) landed on top of the \
                 new leader's (token {}); the store holds {:?}.",
                report.alpha_token, report.beta_token, report.final_value
            ),
        ),
        _ => (
            "bad",
            format!(
                "UNEXPECTED: gate {}, zombie rejected {:?}, accepted {}",
                report.gate, report.zombie_rejected, report.zombie_accepted
            ),
        ),
    }
}

fn find(entries: &[Entry], predicate: impl Fn(&Entry) -> bool) -> Option<f64> {
    entries
        .iter()
        .find(|e| predicate(e))
        .map(|e| e.at.as_secs_f64())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
