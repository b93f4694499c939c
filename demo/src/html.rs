//! The timeline as one self-contained HTML page: an SVG with a lane per actor (events in
//! order along the x axis), alpha's pause as a shaded band, lease lifetimes as bars, and
//! each write as a green (accepted) or red (rejected) dot with its token.
//!
//! The drawing itself ([`Picture`], [`svg`], [`table`]) knows nothing of the demo: the
//! torture harness draws its failing runs with it.

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
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>fenced: the zombie leader</title>",
    );
    page.push_str(STYLE);
    page.push_str(
        "</head><body>\
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
    let (class, verdict) = verdict(report);
    let _ = write!(
        page,
        "<h2>Gate {}</h2><div class=\"verdict {class}\">{verdict}</div>",
        if report.gate { "on" } else { "off" }
    );
    page.push_str(&svg(&picture(&entries)));
    let rows: Vec<(std::time::Duration, &str, &str)> = entries
        .iter()
        .map(|e| (e.at, e.lane.name(), e.text.as_str()))
        .collect();
    page.push_str(&table(&rows));
}

/// The demo's entries as a [`Picture`]: one lane per actor, alpha's pause as a band,
/// each lease from its grant to its expiry (or the end) as a bar on the lock server's lane.
fn picture(entries: &[Entry]) -> Picture {
    let drawn: Vec<&Entry> = entries.iter().filter(|e| LANES.contains(&e.lane)).collect();
    let lane = |lane: Lane| LANES.iter().position(|l| *l == lane).unwrap_or(0);
    let dots = drawn
        .iter()
        .map(|e| Dot {
            lane: lane(e.lane),
            at: e.at,
            mark: e.mark.clone(),
            text: e.text.clone(),
            // The frozen stretch gets a wide slot of its own.
            wide: e.mark == Mark::Stopped,
        })
        .collect();
    let mut bands = Vec::new();
    let stopped = drawn.iter().position(|e| e.mark == Mark::Stopped);
    let continued = drawn.iter().position(|e| e.mark == Mark::Continued);
    if let (Some(a), Some(b)) = (stopped, continued) {
        let frozen = drawn[b].at.saturating_sub(drawn[a].at).as_secs_f64();
        bands.push(Band {
            from: a,
            to: b,
            label: format!("alpha frozen by SIGSTOP for {frozen:.2} s"),
        });
    }
    let last = drawn.len().saturating_sub(1);
    let mut bars = Vec::new();
    for (index, entry) in drawn.iter().enumerate() {
        let Mark::Granted(token) = entry.mark else {
            continue;
        };
        let stop = drawn
            .iter()
            .position(|e| e.mark == Mark::Expired(token))
            .unwrap_or(last);
        bars.push(Bar {
            lane: lane(Lane::LockServer),
            from: index,
            to: stop,
            label: format!("lease with token {token}"),
        });
    }
    Picture {
        lanes: LANES.iter().map(|l| l.name().to_string()).collect(),
        dots,
        bars,
        bands,
    }
}

/// A picture of lanes (one per actor) with events in order along the x axis: what the
/// demo and the torture harness draw.
///
/// The x axis is the order of events, not clock time: a pause lasts seconds and
/// everything interesting happens within milliseconds of its end, so a clock-time axis
/// would pile it all up in one spot. A [`Dot::wide`] event gets a wide slot of its own
/// (a band can write the stretch's real length on it); every event's time is in its
/// tooltip and in the [`table`].
#[derive(Debug, Clone, Default)]
pub struct Picture {
    /// The lanes' names, top to bottom.
    pub lanes: Vec<String>,
    /// The events, in order.
    pub dots: Vec<Dot>,
    /// Bars from one event to another on one lane (a lease's lifetime).
    pub bars: Vec<Bar>,
    /// Shaded stretches across every lane, from one event to another (a pause).
    pub bands: Vec<Band>,
}

/// One event of a [`Picture`].
#[derive(Debug, Clone)]
pub struct Dot {
    /// Its lane (index into [`Picture::lanes`]).
    pub lane: usize,
    /// Its time since the start.
    pub at: std::time::Duration,
    /// Its kind: colour, size and label.
    pub mark: Mark,
    /// What happened, in words (the tooltip).
    pub text: String,
    /// Whether the stretch after it gets a wide slot.
    pub wide: bool,
}

/// A bar on one lane between two events (indices into [`Picture::dots`]).
#[derive(Debug, Clone)]
pub struct Bar {
    /// The lane.
    pub lane: usize,
    /// The first event.
    pub from: usize,
    /// The last event.
    pub to: usize,
    /// Written above the bar.
    pub label: String,
}

/// A shaded stretch across all lanes between two events.
#[derive(Debug, Clone)]
pub struct Band {
    /// The first event.
    pub from: usize,
    /// The last event.
    pub to: usize,
    /// Written at its top.
    pub label: String,
}

/// Draws a [`Picture`] as an SVG element.
pub fn svg(picture: &Picture) -> String {
    let mut page = String::new();
    const WIDE_SLOTS: usize = 6;
    let mut slots = Vec::with_capacity(picture.dots.len());
    let mut slot = 0usize;
    for dot in &picture.dots {
        slots.push(slot);
        slot += if dot.wide { WIDE_SLOTS } else { 1 };
    }
    let step = (WIDTH - LEFT - 40.0) / slot.max(1) as f64;
    let x = |index: usize| LEFT + 10.0 + slots.get(index).copied().unwrap_or(0) as f64 * step;
    let lane_y = |lane: usize| 40.0 + lane as f64 * LANE_HEIGHT;
    let height = 40.0 + picture.lanes.len() as f64 * LANE_HEIGHT + 20.0;
    let _ = write!(page, "<svg width=\"{WIDTH}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"12\">");
    for band in &picture.bands {
        let _ = write!(
            page,
            "<rect x=\"{:.1}\" y=\"12\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#eeeeee\"/>\
             <text x=\"{:.1}\" y=\"26\" fill=\"#666\">{}</text>",
            x(band.from),
            (x(band.to) - x(band.from)).max(1.0),
            height - 24.0,
            x(band.from) + 6.0,
            escape(&band.label)
        );
    }
    for (index, name) in picture.lanes.iter().enumerate() {
        let y = lane_y(index);
        let _ = write!(
            page,
            "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#bbb\"/>\
             <text x=\"8\" y=\"{:.1}\" font-weight=\"600\">{}</text>",
            WIDTH - 20.0,
            y + 4.0,
            escape(name)
        );
    }
    for (index, bar) in picture.bars.iter().enumerate() {
        let color = if index % 2 == 0 { "#8fb3e8" } else { "#e8b38f" };
        let y = lane_y(bar.lane) - 24.0;
        let _ = write!(
            page,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"10\" rx=\"3\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">{}</text>",
            x(bar.from),
            (x(bar.to) - x(bar.from)).max(6.0),
            x(bar.from).min(WIDTH - 150.0),
            y - 4.0,
            escape(&bar.label)
        );
    }
    for (index, dot) in picture.dots.iter().enumerate() {
        let (color, radius) = match dot.mark {
            Mark::Accepted(_) => ("#1f9d4a", 7.0),
            Mark::Rejected(_, _) => ("#d23030", 8.0),
            Mark::Granted(_) => ("#2d6cc4", 5.0),
            Mark::Expired(_) => ("#8a5a00", 5.0),
            Mark::Sdk => ("#9b3fb5", 5.0),
            Mark::Stopped | Mark::Continued => ("#555", 4.0),
            Mark::Note => ("#999", 3.0),
        };
        let cx = x(index);
        let cy = lane_y(dot.lane);
        let _ = write!(
            page,
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{radius}\" fill=\"{color}\"><title>{:.3}s {}</title></circle>",
            dot.at.as_secs_f64(),
            escape(&dot.text)
        );
        let label = match dot.mark {
            Mark::Accepted(token) => Some(format!("✓ token {token}")),
            Mark::Rejected(presented, current) => Some(format!("✗ token {presented} < {current}")),
            _ => None,
        };
        if let Some(label) = label {
            let _ = write!(
                page,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\" text-anchor=\"middle\">{label}</text>",
                cx,
                cy + 22.0
            );
        }
    }
    let _ = write!(
        page,
        "<text x=\"{LEFT}\" y=\"{:.1}\" fill=\"#777\">events in order, left to right (hover a dot for its time and text)</text></svg>",
        height - 4.0
    );
    page
}

/// Every event as a table row: time, lane, text.
pub fn table(rows: &[(std::time::Duration, &str, &str)]) -> String {
    let mut page = String::from("<table>");
    for (at, lane, text) in rows {
        let _ = write!(
            page,
            "<tr><td class=\"t\">{:.3}s</td><td>{}</td><td>{}</td></tr>",
            at.as_secs_f64(),
            escape(lane),
            escape(text)
        );
    }
    page.push_str("</table>");
    page
}

/// The page's style: shared by every page that shows a [`Picture`] and a [`table`].
pub const STYLE: &str = "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}\
         h2{margin-top:36px}.verdict{font-weight:600;padding:8px 12px;border-radius:6px;display:inline-block}\
         .ok{background:#e3f6e8;color:#16602b}.bad{background:#fde8e8;color:#8a1c1c}\
         table{border-collapse:collapse;font-size:13px;margin-top:12px}\
         td{padding:2px 10px;border-bottom:1px solid #eee;vertical-align:top}\
         td.t{text-align:right;font-variant-numeric:tabular-nums;color:#666}</style>";

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

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_picture_draws_its_lanes_dots_bars_and_bands() {
        let dot = |lane, ms, mark, wide| Dot {
            lane,
            at: Duration::from_millis(ms),
            mark,
            text: format!("at {ms} <ms>"),
            wide,
        };
        let picture = Picture {
            lanes: vec!["w1".into(), "fenced".into()],
            dots: vec![
                dot(1, 0, Mark::Granted(7), false),
                dot(0, 10, Mark::Stopped, true),
                dot(0, 2000, Mark::Continued, false),
                dot(0, 2010, Mark::Rejected(7, 8), false),
            ],
            bars: vec![Bar {
                lane: 1,
                from: 0,
                to: 3,
                label: "lease with token 7".into(),
            }],
            bands: vec![Band {
                from: 1,
                to: 2,
                label: "w1 stopped for 1.99 s".into(),
            }],
        };
        let drawn = svg(&picture);
        assert_eq!(drawn.matches("<circle").count(), 4);
        assert!(drawn.contains(">w1<") && drawn.contains(">fenced<"));
        assert!(drawn.contains("lease with token 7"));
        assert!(drawn.contains("w1 stopped for 1.99 s"));
        assert!(drawn.contains("✗ token 7 &lt; 8") || drawn.contains("✗ token 7 < 8"));
        assert!(drawn.contains("at 10 &lt;ms&gt;"), "tooltips are escaped");
        let rows = table(&[(Duration::from_millis(1500), "w1", "a <b>")]);
        assert!(rows.contains("1.500s") && rows.contains("a &lt;b&gt;"));
    }
}
