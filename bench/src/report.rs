//! The run's results as Markdown: a summary of the comparisons that matter (fenced over the
//! SDK's default path against etcd and Redis), then one table per workload. Every cell ran
//! several times: a table shows the median of the runs and, in brackets, their range; a
//! ratio is taken run by run (fenced and its rival ran side by side in the same round) and
//! shown the same way. Each table says what sets each system's figure, and every failure
//! is listed in words.

use std::fmt::{self, Display, Formatter, Write as _};
use std::time::Duration;

use crate::config::{Config, KeepaliveCase};
use crate::latency::LatencySummary;
use crate::spread::Spread;
use crate::workloads::contended::ContendedResult;
use crate::workloads::cycle::CycleResult;
use crate::workloads::expiry::{Expiries, ExpiryResult};
use crate::workloads::keepalive::KeepaliveResult;
use crate::workloads::serial::SerialLimit;
use crate::workloads::Errors;

/// One cell of a table: a system at one size, and what each of its runs came to.
#[derive(Clone, Debug)]
pub struct Row<T> {
    /// The system's name.
    pub system: &'static str,
    /// Clients (cycle, contended), pairs (expiry) or leases (keepalive).
    pub size: usize,
    /// Locks per lease (keepalive; 1 elsewhere): with `size`, what makes the cell.
    pub per: usize,
    /// Each run's result, or why the run failed, in the order they ran.
    pub runs: Vec<Result<T, String>>,
}

impl<T> Row<T> {
    /// A cell with no run yet.
    pub fn new(system: &'static str, size: usize, per: usize) -> Row<T> {
        Row {
            system,
            size,
            per,
            runs: Vec::new(),
        }
    }

    /// The runs that produced a result.
    pub fn ok(&self) -> impl Iterator<Item = &T> {
        self.runs.iter().filter_map(|run| run.as_ref().ok())
    }

    /// The median and range of `pick` over the runs that produced a result.
    pub fn spread(&self, pick: impl Fn(&T) -> Option<f64>) -> Option<Spread> {
        Spread::of(self.ok().filter_map(pick))
    }

    /// The sum of `pick` over the runs that produced a result.
    fn total(&self, pick: impl Fn(&T) -> u64) -> u64 {
        self.ok().map(pick).sum()
    }
}

/// Adds one run's `outcome` to the cell of `system` at `size`, making the cell if needed.
pub fn record<T>(
    rows: &mut Vec<Row<T>>,
    system: &'static str,
    size: usize,
    outcome: Result<T, String>,
) {
    record_per(rows, system, size, 1, outcome);
}

/// [`record`] for a cell of `size` leases holding `per` locks each.
pub fn record_per<T>(
    rows: &mut Vec<Row<T>>,
    system: &'static str,
    size: usize,
    per: usize,
    outcome: Result<T, String>,
) {
    let cell = |row: &&mut Row<T>| row.system == system && row.size == size && row.per == per;
    match rows.iter_mut().find(cell) {
        Some(row) => row.runs.push(outcome),
        None => {
            let mut row = Row::new(system, size, per);
            row.runs.push(outcome);
            rows.push(row);
        }
    }
}

/// One measurement of the serial limit, and when in the run it was taken.
#[derive(Clone, Debug)]
pub struct SerialProbe {
    /// When, for the table: "at the start", "right after contended".
    pub when: &'static str,
    /// The limit, or why it was not measured.
    pub outcome: Result<SerialLimit, String>,
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// What was run.
    pub config: Config,
    /// etcd's own account of its version.
    pub etcd_version: Option<String>,
    /// Every system's name, in the order tables list them.
    pub systems: Vec<&'static str>,
    /// The fenced system the summary compares with the rivals (the SDK's default path).
    pub headline: Option<&'static str>,
    /// The serial limit of a durable handoff, each time it was measured.
    pub serial: Vec<SerialProbe>,
    /// cycle cells.
    pub cycle: Vec<Row<CycleResult>>,
    /// contended cells.
    pub contended: Vec<Row<ContendedResult>>,
    /// expiry cells, the pairs' expiries together.
    pub expiry: Vec<Row<ExpiryResult>>,
    /// expiry cells, the pairs' expiries spread over the TTL.
    pub expiry_spread: Vec<Row<ExpiryResult>>,
    /// keepalive cells.
    pub keepalive: Vec<Row<KeepaliveResult>>,
}

/// The rivals fenced is compared with, as the drivers name them.
const RIVALS: [&str; 2] = ["etcd", "Redis"];

impl Report {
    /// An empty report of `config`'s run.
    pub fn new(config: Config) -> Report {
        Report {
            config,
            etcd_version: None,
            systems: Vec::new(),
            headline: None,
            serial: Vec::new(),
            cycle: Vec::new(),
            contended: Vec::new(),
            expiry: Vec::new(),
            expiry_spread: Vec::new(),
            keepalive: Vec::new(),
        }
    }

    /// The expiry cells of one arrangement.
    pub fn expiry_rows(&mut self, expiries: Expiries) -> &mut Vec<Row<ExpiryResult>> {
        match expiries {
            Expiries::Together => &mut self.expiry,
            Expiries::Spread => &mut self.expiry_spread,
        }
    }

    /// Whether any run failed or counted failed operations.
    pub fn has_failures(&self) -> bool {
        fn failed<T>(rows: &[Row<T>], errors: impl Fn(&T) -> &Errors) -> bool {
            rows.iter()
                .flat_map(|row| &row.runs)
                .any(|run| run.as_ref().map_or(true, |r| errors(r).count > 0))
        }
        self.serial.iter().any(|s| s.outcome.is_err())
            || failed(&self.cycle, |r| &r.errors)
            || failed(&self.contended, |r| &r.errors)
            || failed(&self.expiry, |r| &r.errors)
            || failed(&self.expiry_spread, |r| &r.errors)
            || failed(&self.keepalive, |r| &r.errors)
    }

    /// Where `system` stands in table order (unknown systems last).
    fn rank(&self, system: &str) -> usize {
        self.systems
            .iter()
            .position(|s| *s == system)
            .unwrap_or(usize::MAX)
    }

    /// `rows` by size (keepalive: by locks, then locks per lease), then in table order.
    fn ordered<'r, T>(&self, rows: &'r [Row<T>]) -> Vec<&'r Row<T>> {
        let mut ordered: Vec<&Row<T>> = rows.iter().collect();
        ordered.sort_by_key(|row| (row.size * row.per, row.per, self.rank(row.system)));
        ordered
    }

    /// The fenced systems of `rows` (the headline first) and the rivals of `rows`.
    fn sides<T>(&self, rows: &[Row<T>]) -> (Vec<&'static str>, Vec<&'static str>) {
        let has = |system: &str| rows.iter().any(|r| r.system == system);
        let mut fenced: Vec<&'static str> = self
            .systems
            .iter()
            .copied()
            .filter(|s| s.starts_with("fenced") && has(s))
            .collect();
        fenced.sort_by_key(|s| Some(*s) != self.headline);
        let rivals = RIVALS.into_iter().filter(|s| has(s)).collect();
        (fenced, rivals)
    }
}

/// A duration in milliseconds, to about three significant digits.
fn ms(d: Duration) -> String {
    ms_of_secs(d.as_secs_f64())
}

/// `seconds` in milliseconds, to about three significant digits.
fn ms_of_secs(seconds: f64) -> String {
    format!("{} ms", ms_number(seconds))
}

/// `seconds` as a number of milliseconds, to about three significant digits.
fn ms_number(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A figure's numbers and unit, for a spread.
#[derive(Clone, Copy)]
enum Unit {
    /// A rate, with thousands separators.
    Rate,
    /// Seconds, shown in milliseconds.
    Ms,
    /// A ratio.
    Ratio,
    /// Bytes, shown in MiB.
    Mib,
    /// Seconds, shown as seconds with `.0`, `.00`: the number of decimals.
    Secs(usize),
    /// Microseconds, one decimal.
    Micros,
}

impl Unit {
    /// `spread` in this unit: "17.0 ms (16.1-17.8)".
    fn show(self, spread: &Spread) -> String {
        match self {
            Unit::Rate => spread.show(rate, ""),
            Unit::Ms => spread.show(ms_number, " ms"),
            Unit::Ratio => spread.show(|x| format!("{x:.2}"), "x"),
            Unit::Mib => spread.show(|b| format!("{:.0}", b / 1_048_576.0), " MiB"),
            Unit::Secs(decimals) => spread.show(|s| format!("{s:.decimals$}"), " s"),
            Unit::Micros => spread.show(|us| format!("{us:.1}"), " µs"),
        }
    }
}

/// A rate with thousands separators.
fn rate(x: f64) -> String {
    let whole = x.round().max(0.0) as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A spread in `unit`, or "n/a".
fn shown(spread: Option<Spread>, unit: Unit) -> String {
    spread.map_or("n/a".to_string(), |s| unit.show(&s))
}

/// "1 client", "16 clients".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", rate(n as f64), if n == 1 { one } else { many })
}

/// A duration's seconds, for spreads of latencies.
fn secs(d: Duration) -> Option<f64> {
    Some(d.as_secs_f64())
}

/// A system's name without "fenced (...)" around its transport, for ratio headers.
fn short(system: &str) -> &str {
    system
        .strip_prefix("fenced (")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or(system)
}

/// The ratio of `pick(fenced)` to `pick(rival)` (or its inverse), run by run (runs of the
/// same index ran in the same round), as a spread over the runs.
fn ratio_runs<T>(
    rows: &[Row<T>],
    size: usize,
    fenced: &str,
    rival: &str,
    pick: impl Fn(&T) -> Option<f64>,
    invert: bool,
) -> Option<Spread> {
    let find = |system: &str| rows.iter().find(|r| r.system == system && r.size == size);
    let (ours, theirs) = (find(fenced)?, find(rival)?);
    let pairs = ours.runs.iter().zip(&theirs.runs);
    Spread::of(pairs.filter_map(|(ours, theirs)| {
        let f = pick(ours.as_ref().ok()?)?;
        let r = pick(theirs.as_ref().ok()?)?;
        (f > 0.0 && r > 0.0).then(|| if invert { r / f } else { f / r })
    }))
}

/// The sizes of `rows`, ascending.
fn sizes<T>(rows: &[Row<T>]) -> Vec<usize> {
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// What sets a system's figure in a workload, for the tables' last column.
fn set_by(workload: &str, system: &str, redis_pause_ms: u128) -> String {
    let fenced = system.starts_with("fenced");
    match (workload, fenced, system) {
        ("contended", true, _) => "one fdatasync + one round trip per handoff".to_string(),
        ("contended", false, "etcd") => "its 100 ms watch-sync timer".to_string(),
        ("contended", false, "Redis") => format!("no queue: retry pause 0-{redis_pause_ms} ms"),
        ("expiry", true, _) => "reaper timer + one commit + the waiter's wake-up".to_string(),
        ("expiry", false, "etcd") => "its 500 ms lessor check".to_string(),
        ("expiry", false, "Redis") => format!("the waiter's retry pause 0-{redis_pause_ms} ms"),
        _ => String::new(),
    }
}

/// Writes the ratio table of `rows`: each fenced system against each rival, per size.
fn ratios<T>(
    f: &mut Formatter<'_>,
    report: &Report,
    rows: &[Row<T>],
    what: &str,
    size_name: &str,
    pick: impl Fn(&T) -> Option<f64> + Copy,
    invert: bool,
) -> fmt::Result {
    let (fenced, rivals) = report.sides(rows);
    if fenced.is_empty() || rivals.is_empty() {
        return Ok(());
    }
    writeln!(f, "\nRatios ({what}), per run, median (range):\n")?;
    write!(f, "| {size_name} |")?;
    let pairs: Vec<(&str, &str)> = fenced
        .iter()
        .flat_map(|ours| rivals.iter().map(move |theirs| (*ours, *theirs)))
        .collect();
    for (ours, theirs) in &pairs {
        write!(f, " {} vs {theirs} |", short(ours))?;
    }
    writeln!(f, "\n|---:|{}", "---:|".repeat(pairs.len()))?;
    for size in sizes(rows) {
        write!(f, "| {size} |")?;
        for (ours, theirs) in &pairs {
            let spread = ratio_runs(rows, size, ours, theirs, pick, invert);
            write!(f, " {} |", shown(spread, Unit::Ratio))?;
        }
        writeln!(f)?;
    }
    Ok(())
}

/// Writes each failed run and each run's first failed operation, under a table.
fn failures<T>(
    f: &mut Formatter<'_>,
    rows: &[Row<T>],
    errors: impl Fn(&T) -> &Errors,
) -> fmt::Result {
    let mut notes = String::new();
    for row in rows {
        for (i, run) in row.runs.iter().enumerate() {
            let at = format!("{} at {}, run {}", row.system, row.size, i + 1);
            match run {
                Err(why) => {
                    let _ = writeln!(notes, "- {at}: failed: {why}");
                }
                Ok(result) => {
                    let errors = errors(result);
                    if let Some(first) = &errors.first {
                        let _ = writeln!(
                            notes,
                            "- {at}: {} failed operations, the first: {first}",
                            errors.count
                        );
                    }
                }
            }
        }
    }
    if !notes.is_empty() {
        writeln!(f, "\nFailures:\n\n{notes}")?;
    }
    Ok(())
}

/// The errors cell: failed operations over all runs, and failed runs if any.
fn errors_cell<T>(row: &Row<T>, errors: impl Fn(&T) -> &Errors) -> String {
    let operations: u64 = row.ok().map(|r| errors(r).count).sum();
    let failed_runs = row.runs.iter().filter(|r| r.is_err()).count();
    if failed_runs == 0 {
        operations.to_string()
    } else {
        format!(
            "{operations}; {failed_runs} of {} runs failed",
            row.runs.len()
        )
    }
}

impl Display for Report {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let times = match c.repeats {
            1 => "once".to_string(),
            n => format!("{n} times"),
        };
        writeln!(
            f,
            "Every cell ran {times}, its systems one after another, each round starting one \
             system further along; a cell shows the median of its runs and, in brackets, their \
             range (min-max). A ratio is taken within each round and shown the same way. Each \
             run: {:.1} s measured after {:.1} s warmup; lease TTL {} s; contended waiters wait \
             up to {} s; FIFO margin {}; Redis waiters retry after a random 0-{} ms pause.",
            c.duration.as_secs_f64(),
            c.warmup.as_secs_f64(),
            c.ttl.as_secs(),
            c.max_wait.as_secs(),
            ms(c.fifo_margin),
            2 * c.redis_retry.as_millis()
        )?;
        if let Some(version) = &self.etcd_version {
            writeln!(f, "\netcd reports version {version}.")?;
        }
        self.fmt_summary(f)?;
        self.fmt_serial(f)?;
        self.fmt_cycle(f)?;
        self.fmt_contended(f)?;
        self.fmt_expiry(f)?;
        self.fmt_keepalive(f)
    }
}

/// One line of the summary: a figure of every system, and the headline's ratios.
struct SummaryLine {
    /// What the line measures.
    what: String,
    /// One cell per lock system, in table order.
    cells: Vec<String>,
    /// One per rival: the headline's ratio to it.
    ratios: Vec<String>,
}

impl Report {
    /// The serial limit the contended results are held against: the fastest of its
    /// measurements, the strictest bound (the machine's speed drifts during a run).
    fn serial_limit(&self) -> Option<f64> {
        self.serial
            .iter()
            .filter_map(|probe| probe.outcome.as_ref().ok())
            .map(SerialLimit::handoffs_per_second)
            .filter(|limit| *limit > 0.0)
            .reduce(f64::max)
    }

    /// The summary line of `rows` at `size`: `pick` of every system of `columns`, and
    /// `ours`'s ratio to each rival (`invert` when lower is better).
    #[allow(clippy::too_many_arguments)]
    fn summary_line<T>(
        ours: &str,
        what: String,
        rows: &[Row<T>],
        size: usize,
        columns: &[&'static str],
        rivals: &[&'static str],
        pick: impl Fn(&T) -> Option<f64> + Copy,
        unit: Unit,
        invert: bool,
    ) -> SummaryLine {
        let find = |system: &str| rows.iter().find(|r| r.system == system && r.size == size);
        let cells = columns
            .iter()
            .map(|system| match find(system) {
                Some(row) => shown(row.spread(pick), unit),
                None => "-".to_string(),
            })
            .collect();
        let ratios = rivals
            .iter()
            .map(|rival| {
                if find(ours).is_some() && find(rival).is_some() {
                    shown(
                        ratio_runs(rows, size, ours, rival, pick, invert),
                        Unit::Ratio,
                    )
                } else {
                    "-".to_string()
                }
            })
            .collect();
        SummaryLine {
            what,
            cells,
            ratios,
        }
    }

    fn fmt_summary(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let Some(headline) = self.headline else {
            return Ok(());
        };
        // The rivals of the run, and the lock systems' columns: every system but
        // keepalive's plain "fenced".
        let rivals: Vec<&'static str> = RIVALS
            .into_iter()
            .filter(|rival| self.systems.contains(rival))
            .collect();
        let columns: Vec<&'static str> = self
            .systems
            .iter()
            .copied()
            .filter(|s| *s != "fenced")
            .collect();
        let mut lines = Vec::new();
        for size in sizes(&self.cycle) {
            lines.push(Self::summary_line(
                headline,
                format!("cycle, {}: cycles/s", count(size, "client", "clients")),
                &self.cycle,
                size,
                &columns,
                &rivals,
                |r| Some(r.rate),
                Unit::Rate,
                false,
            ));
        }
        if let Some(&size) = sizes(&self.cycle).last() {
            lines.push(Self::summary_line(
                headline,
                format!("cycle, {}: acquire p99", count(size, "client", "clients")),
                &self.cycle,
                size,
                &columns,
                &rivals,
                |r| secs(r.acquire.p99),
                Unit::Ms,
                true,
            ));
        }
        for size in sizes(&self.contended) {
            lines.push(Self::summary_line(
                headline,
                format!(
                    "contended, {}: handoffs/s",
                    count(size, "client", "clients")
                ),
                &self.contended,
                size,
                &columns,
                &rivals,
                |r| Some(r.rate),
                Unit::Rate,
                false,
            ));
        }
        let delay_p99 = |r: &ExpiryResult| (r.delay.count > 0).then_some(r.delay.p99.as_secs_f64());
        for (rows, timing) in [(&self.expiry, "together"), (&self.expiry_spread, "spread")] {
            for size in sizes(rows) {
                lines.push(Self::summary_line(
                    headline,
                    format!(
                        "expiry to next grant, {} {timing}: p99",
                        count(size, "pair", "pairs")
                    ),
                    rows,
                    size,
                    &columns,
                    &rivals,
                    delay_p99,
                    Unit::Ms,
                    true,
                ));
            }
        }
        // Keepalive does not depend on the transport: fenced's figure goes in the headline
        // column, compared like with like (single-lock leases).
        let keepalive_columns: Vec<&'static str> = columns
            .iter()
            .map(|s| if *s == headline { "fenced" } else { *s })
            .collect();
        let single: Vec<Row<KeepaliveResult>> = self
            .keepalive
            .iter()
            .filter(|r| r.per == 1)
            .cloned()
            .collect();
        for size in sizes(&single) {
            lines.push(Self::summary_line(
                "fenced",
                format!(
                    "keepalive, {}: renewals per server CPU-second",
                    count(size, "lease", "leases")
                ),
                &single,
                size,
                &keepalive_columns,
                &rivals,
                KeepaliveResult::renewals_per_cpu_second,
                Unit::Rate,
                false,
            ));
        }
        for row in self
            .keepalive
            .iter()
            .filter(|r| r.system == "fenced" && r.per > 1)
        {
            let many: Vec<Row<KeepaliveResult>> = vec![row.clone()];
            let mut line = Self::summary_line(
                "fenced",
                format!(
                    "memory: {} locks on {}, server RSS",
                    rate((row.size * row.per) as f64),
                    count(row.size, "lease", "leases")
                ),
                &many,
                row.size,
                &keepalive_columns,
                &rivals,
                |r| r.rss_bytes.map(|b| b as f64),
                Unit::Mib,
                true,
            );
            line.ratios = vec!["-".to_string(); rivals.len()];
            lines.push(line);
        }
        if lines.is_empty() {
            return Ok(());
        }
        writeln!(f, "\n### Summary\n")?;
        writeln!(
            f,
            "The headline is {headline}, the SDK's default path; the other fenced columns are \
             the same server over unary calls (what a client in another language makes) and \
             over the opt-in framed listener. A ratio above 1 favours fenced: for rates it is \
             fenced ÷ rival, for latencies and memory rival ÷ fenced. Keepalive does not depend \
             on the transport and runs once for fenced, shown in the headline column.\n"
        )?;
        write!(f, "| measure |")?;
        for system in &columns {
            write!(f, " {system} |")?;
        }
        for rival in &rivals {
            write!(f, " {} vs {rival} |", short(headline))?;
        }
        writeln!(f, "\n|---|{}", "---:|".repeat(columns.len() + rivals.len()))?;
        for line in lines {
            write!(f, "| {} |", line.what)?;
            for cell in line.cells.iter().chain(&line.ratios) {
                write!(f, " {cell} |")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }

    fn fmt_serial(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.serial.is_empty() {
            return Ok(());
        }
        writeln!(f, "\n### Serial limit of a durable handoff\n")?;
        if let Some(s) = self
            .serial
            .iter()
            .find_map(|probe| probe.outcome.as_ref().ok())
        {
            writeln!(
                f,
                "One 4 KiB write + fdatasync in the servers' directory, then one write-free \
                 round trip to {} over loopback ({}): 1 / (p50 + p50). No server can hand a \
                 lock on durably faster than this, one handoff after another.\n",
                s.round_trip_to, s.round_trip_over
            )?;
        }
        writeln!(f, "| measured | fdatasync p50 | fdatasync p99 | round trip p50 | round trip p99 | limit (handoffs/s) |")?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|")?;
        for probe in &self.serial {
            match &probe.outcome {
                Ok(s) => writeln!(
                    f,
                    "| {} | {} | {} | {} | {} | {} |",
                    probe.when,
                    ms(s.fdatasync.p50),
                    ms(s.fdatasync.p99),
                    ms(s.round_trip.p50),
                    ms(s.round_trip.p99),
                    rate(s.handoffs_per_second())
                )?,
                Err(why) => writeln!(f, "| {} | not measured: {why} | | | | |", probe.when)?,
            }
        }
        Ok(())
    }

    fn fmt_cycle(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.cycle.is_empty() {
            return Ok(());
        }
        writeln!(
            f,
            "\n### cycle: acquire (TTL {} s) + release, own lock per client\n",
            self.config.ttl.as_secs()
        )?;
        writeln!(
            f,
            "| clients | system | cycles/s | acquire p50 | acquire p99 | acquire max | errors |"
        )?;
        writeln!(f, "|---:|---|---:|---:|---:|---:|---:|")?;
        for row in self.ordered(&self.cycle) {
            let max = row.ok().map(|r| r.acquire.max).max();
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.size,
                row.system,
                shown(row.spread(|r| Some(r.rate)), Unit::Rate),
                shown(row.spread(|r| secs(r.acquire.p50)), Unit::Ms),
                shown(row.spread(|r| secs(r.acquire.p99)), Unit::Ms),
                max.map_or("n/a".to_string(), ms),
                errors_cell(row, |r| &r.errors)
            )?;
        }
        ratios(
            f,
            self,
            &self.cycle,
            "cycles/s, fenced ÷ rival",
            "clients",
            |r| Some(r.rate),
            false,
        )?;
        failures(f, &self.cycle, |r| &r.errors)
    }

    fn fmt_contended(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.contended.is_empty() {
            return Ok(());
        }
        writeln!(f, "\n### contended: every client queued on one lock\n")?;
        let limit = self.serial_limit();
        if let Some(limit) = limit {
            writeln!(
                f,
                "Serial limit of a durable handoff in this run: {} handoffs/s, the fastest of \
                 its measurements above (the strictest bound).\n",
                rate(limit)
            )?;
        }
        writeln!(
            f,
            "A handoff is a grant that moves the lock to another client; a re-grant is the \
             client that just released the lock taking it again (a lock without a queue allows \
             it), which no waiter gains from, so it counts as a grant and not as a handoff. \
             The wait is a handoff's, from request sent to grant received. An overtake is a \
             grant to a request sent more than {} after another request that was still waiting \
             (arrival order approximated by send time); an overlap is a grant received before \
             the previous holder had sent its release. Counts are totals over the runs.\n",
            ms(self.config.fifo_margin)
        )?;
        writeln!(
            f,
            "| clients | system | handoffs/s | of serial limit | grants/s | re-grants | wait p50 | wait p99 | overtakes | largest overtake | overlaps | gave up | errors | set by |"
        )?;
        writeln!(
            f,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        )?;
        let pause = 2 * self.config.redis_retry.as_millis();
        let waited = |pick: fn(&LatencySummary) -> Duration| {
            move |r: &ContendedResult| (r.wait.count > 0).then_some(pick(&r.wait).as_secs_f64())
        };
        for row in self.ordered(&self.contended) {
            let handoffs = row.spread(|r| Some(r.rate));
            let of_limit = match (handoffs, limit) {
                (Some(h), Some(l)) => format!("{:.0}%", 100.0 * h.median / l),
                _ => "n/a".to_string(),
            };
            let grants = row.total(|r| r.grants);
            let regrants = grants - row.total(|r| r.handoffs).min(grants);
            let largest = row.ok().map(|r| r.order.max_overtake).max();
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} of {} | {} | {} | {} of {} | {} | {} | {} | {} | {} |",
                row.size,
                row.system,
                shown(handoffs, Unit::Rate),
                of_limit,
                shown(row.spread(|r| Some(r.grant_rate)), Unit::Rate),
                rate(regrants as f64),
                rate(grants as f64),
                shown(row.spread(waited(|w| w.p50)), Unit::Ms),
                shown(row.spread(waited(|w| w.p99)), Unit::Ms),
                rate(row.total(|r| r.order.overtakes as u64) as f64),
                rate(row.total(|r| r.order.grants as u64) as f64),
                largest.map_or("n/a".to_string(), ms),
                row.total(|r| r.order.overlaps as u64),
                row.total(|r| r.gave_up),
                errors_cell(row, |r| &r.errors),
                set_by("contended", row.system, pause)
            )?;
        }
        let above = limit.is_some_and(|l| {
            self.contended
                .iter()
                .filter_map(|row| row.spread(|r| Some(r.rate)))
                .any(|h| h.median > l)
        });
        if above {
            writeln!(
                f,
                "\nSome rates are above the serial limit: the disk's sync time moved between \
                 the probes and the phases (other work on the machine shares the disk), so in \
                 this run the limit is no bound."
            )?;
        }
        writeln!(
            f,
            "\nWhat sets each rate: fenced grants the next waiter in its queue once the grant \
             is on disk, so a handoff costs at least one fdatasync and one round trip (the \
             serial limit). etcd's `Lock` waits for the key before it through a watch, and a \
             watch that starts in the past is caught up by etcd's watch-sync loop, which runs \
             every 100 ms: each waiter's turn comes on that timer, so a wait is about 100 ms \
             and the rate about clients ÷ 100 ms. Redis has no queue: a waiter retries after a \
             random pause of 0-{pause} ms, and the releaser, whose next try comes at once, \
             often takes the lock back (the re-grants)."
        )?;
        ratios(
            f,
            self,
            &self.contended,
            "handoffs/s, fenced ÷ rival",
            "clients",
            |r| Some(r.rate),
            false,
        )?;
        failures(f, &self.contended, |r| &r.errors)
    }

    fn fmt_expiry(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if !self.expiry.is_empty() {
            writeln!(
                f,
                "\n### expiry: holder stops renewing; expiry to the next waiter's grant\n"
            )?;
            writeln!(
                f,
                "The server's expiry instant lies between the holder's request's send time + \
                 the granted TTL and its answer's arrival + the TTL. *delay* is measured from \
                 the first (an upper bound on the true delay), *at least* from the second (a \
                 lower bound); they differ by the holder's acquire round trip. Every round \
                 starts after a random pause of up to {}, so the expiry falls at a random \
                 phase of any server timer. Here all pairs start together, so a round's \
                 leases expire close together and the last grants of a round wait behind the \
                 others' handoffs and next rounds. Samples are totals over the runs.\n",
                ms(self.config.expiry_offset_max)
            )?;
            self.fmt_expiry_rows(f, &self.expiry)?;
        }
        if !self.expiry_spread.is_empty() {
            writeln!(
                f,
                "\n### expiry, spread: the same with the expiries evenly spaced\n"
            )?;
            writeln!(
                f,
                "Pair *i* of *n* starts *i/n* of a TTL late, so each handoff is measured on its \
                 own while all the pairs are live. Bounds as above.\n"
            )?;
            self.fmt_expiry_rows(f, &self.expiry_spread)?;
        }
        if !self.expiry.is_empty() || !self.expiry_spread.is_empty() {
            writeln!(
                f,
                "\nWhat sets each delay: fenced's reaper sleeps until the next expiry (tokio's \
                 timer, 1 ms resolution), commits the waiter's grant (one fdatasync) and answers \
                 it; the waiter, idle for the whole TTL, then has to be woken. etcd looks for \
                 expired leases every 500 ms (its lessor's check), so its delay is spread over \
                 0-500 ms by the random start. A Redis key expires on its own `PX` and the \
                 waiter sees it at its next retry, 0-{} ms later.",
                2 * self.config.redis_retry.as_millis()
            )?;
        }
        Ok(())
    }

    /// One expiry table, its ratios and its failures.
    fn fmt_expiry_rows(&self, f: &mut Formatter<'_>, rows: &[Row<ExpiryResult>]) -> fmt::Result {
        writeln!(f, "| pairs | system | TTL | samples | delay p50 | delay p99 | delay max | at least p99 | granted early | errors | set by |")?;
        writeln!(f, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
        let pause = 2 * self.config.redis_retry.as_millis();
        let sampled = |pick: fn(&ExpiryResult) -> Duration| {
            move |r: &ExpiryResult| (r.delay.count > 0).then(|| pick(r).as_secs_f64())
        };
        for row in self.ordered(rows) {
            let ttl = row.ok().map(|r| r.ttl).max();
            let max = row
                .ok()
                .filter(|r| r.delay.count > 0)
                .map(|r| r.delay.max)
                .max();
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.size,
                row.system,
                ttl.map_or("n/a".to_string(), |t| format!("{} s", t.as_secs_f64())),
                row.total(|r| r.delay.count),
                shown(row.spread(sampled(|r| r.delay.p50)), Unit::Ms),
                shown(row.spread(sampled(|r| r.delay.p99)), Unit::Ms),
                max.map_or("n/a".to_string(), ms),
                shown(row.spread(sampled(|r| r.delay_lower.p99)), Unit::Ms),
                row.total(|r| r.early),
                errors_cell(row, |r| &r.errors),
                set_by("expiry", row.system, pause)
            )?;
        }
        ratios(
            f,
            self,
            rows,
            "delay p99, rival ÷ fenced: above 1 means fenced hands over sooner",
            "pairs",
            |r| (r.delay.count > 0).then_some(r.delay.p99.as_secs_f64()),
            true,
        )?;
        failures(f, rows, |r| &r.errors)
    }

    fn fmt_keepalive(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.keepalive.is_empty() {
            return Ok(());
        }
        let ttl = self.config.keepalive_ttl;
        writeln!(
            f,
            "\n### keepalive: leases renewed every TTL/3 (TTL {} s) over {} KeepAlive streams\n",
            ttl.as_secs(),
            self.config.keepalive_streams
        )?;
        writeln!(
            f,
            "Measured over {:.0} s after one renewal round; CPU is the server's user + system \
             time in that window; RSS at its end, and before the setup. fenced's \
             KeepAlive streams are the same whatever carries its acquires, so it runs once.\n",
            self.config.keepalive_window.as_secs_f64()
        )?;
        writeln!(f, "| system | leases | locks | setup | renewals/s | server CPU | CPU per renewal | renewals per CPU-s | RSS | RSS before setup | failed renewals | errors |")?;
        writeln!(
            f,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        let mut notes = String::new();
        for row in self.ordered(&self.keepalive) {
            let case = KeepaliveCase {
                leases: row.size,
                locks_per_lease: row.per,
            };
            for (i, run) in row.runs.iter().enumerate() {
                if let Ok(r) = run {
                    if r.leases_made < case.leases || r.locks_made < case.locks() {
                        let _ = writeln!(
                            notes,
                            "- {} at {} locks, run {}: made {} of {} leases and {} of {} locks",
                            row.system,
                            rate(case.locks() as f64),
                            i + 1,
                            rate(r.leases_made as f64),
                            rate(case.leases as f64),
                            rate(r.locks_made as f64),
                            rate(case.locks() as f64)
                        );
                    }
                }
            }
            let per_renewal = |r: &KeepaliveResult| {
                let cpu = r.cpu?.as_secs_f64();
                (r.renewals > 0).then(|| cpu * 1e6 / r.renewals as f64)
            };
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.system,
                rate(case.leases as f64),
                rate(case.locks() as f64),
                shown(row.spread(|r| Some(r.setup.as_secs_f64())), Unit::Secs(1)),
                shown(row.spread(|r| Some(r.rate)), Unit::Rate),
                shown(
                    row.spread(|r| r.cpu.map(|c| c.as_secs_f64())),
                    Unit::Secs(2)
                ),
                shown(row.spread(per_renewal), Unit::Micros),
                shown(
                    row.spread(KeepaliveResult::renewals_per_cpu_second),
                    Unit::Rate
                ),
                shown(row.spread(|r| r.rss_bytes.map(|b| b as f64)), Unit::Mib),
                shown(row.spread(|r| r.rss_before.map(|b| b as f64)), Unit::Mib),
                row.total(|r| r.failed_renewals),
                errors_cell(row, |r| &r.errors)
            )?;
        }
        if !notes.is_empty() {
            writeln!(f, "\nSetups cut short:\n\n{notes}")?;
        }
        // Compare like with like: single-lock leases of the same count.
        let single: Vec<Row<KeepaliveResult>> = self
            .keepalive
            .iter()
            .filter(|r| r.per == 1)
            .cloned()
            .collect();
        ratios(
            f,
            self,
            &single,
            "renewals per server CPU-second, single-lock leases, fenced ÷ rival",
            "leases",
            KeepaliveResult::renewals_per_cpu_second,
            false,
        )?;
        failures(f, &self.keepalive, |r| &r.errors)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeepaliveCase;
    use crate::fifo::OrderReport;

    const SESSION: &str = "fenced (gRPC Session)";
    const UNARY: &str = "fenced (unary gRPC)";

    /// A cell given as its system, its size and its runs.
    type Cell<T> = (&'static str, usize, Vec<Result<T, String>>);

    fn rows<T: Clone>(cells: &[Cell<T>]) -> Vec<Row<T>> {
        let mut rows = Vec::new();
        for (system, size, runs) in cells {
            for run in runs {
                record(&mut rows, system, *size, run.clone());
            }
        }
        rows
    }

    fn report() -> Report {
        let mut report = Report::new(Config::default());
        // As the runner lists them: fenced's transports, its keepalive system, the rivals.
        report.systems = vec![SESSION, UNARY, "fenced", "etcd", "Redis"];
        report.headline = Some(SESSION);
        report
    }

    fn latency(ms: u64) -> LatencySummary {
        LatencySummary {
            count: 10,
            p50: Duration::from_millis(ms),
            p99: Duration::from_millis(ms),
            max: Duration::from_millis(ms),
        }
    }

    fn cycle(rate_per_s: f64) -> CycleResult {
        CycleResult {
            cycles: rate_per_s as u64 * 5,
            rate: rate_per_s,
            acquire: latency(1),
            errors: Errors::default(),
        }
    }

    fn contended(grants: u64, handoffs: u64) -> ContendedResult {
        ContendedResult {
            handoffs,
            rate: handoffs as f64 / 10.0,
            grants,
            grant_rate: grants as f64 / 10.0,
            wait: latency(2),
            order: OrderReport {
                grants: grants as usize,
                ..OrderReport::default()
            },
            gave_up: 0,
            errors: Errors::default(),
        }
    }

    fn expiry(p99_ms: u64) -> ExpiryResult {
        ExpiryResult {
            delay: latency(p99_ms),
            delay_lower: latency(p99_ms),
            ttl: Duration::from_secs(2),
            early: 0,
            errors: Errors::default(),
        }
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(ms(Duration::from_micros(1234)), "1.23 ms");
        assert_eq!(ms(Duration::from_millis(250)), "250 ms");
        assert_eq!(short(SESSION), "gRPC Session");
        assert_eq!(short("etcd"), "etcd");
    }

    #[test]
    fn runs_are_kept_per_system_and_size_in_the_order_they_ran() {
        let rows = rows(&[
            ("etcd", 16, vec![Ok(1.0), Ok(2.0)]),
            ("etcd", 64, vec![Ok(3.0)]),
            ("etcd", 16, vec![Err("down".to_string())]),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].runs.len(), 3);
        assert_eq!(rows[0].ok().copied().collect::<Vec<_>>(), [1.0, 2.0]);
        assert_eq!(rows[0].spread(|x| Some(*x)).map(|s| s.median), Some(1.5));
    }

    #[test]
    fn ratios_are_taken_run_by_run_then_summarised() {
        let rows = rows(&[
            (SESSION, 16, vec![Ok(600.0), Ok(300.0), Ok(900.0)]),
            ("etcd", 16, vec![Ok(200.0), Ok(200.0), Ok(300.0)]),
            (
                "Redis",
                16,
                vec![Ok(300.0), Err("down".to_string()), Ok(450.0)],
            ),
            ("etcd", 64, vec![Ok(1.0)]),
        ]);
        // Run by run: 3.0, 1.5 and 3.0; not the ratio of the medians (600 / 200).
        let etcd = ratio_runs(&rows, 16, SESSION, "etcd", |v| Some(*v), false).unwrap();
        assert_eq!((etcd.median, etcd.min, etcd.max), (3.0, 1.5, 3.0));
        assert_eq!(Unit::Ratio.show(&etcd), "3.00x (1.50-3.00)");
        // The failed run drops out of the pairs; inverted, lower-is-better.
        let redis = ratio_runs(&rows, 16, SESSION, "Redis", |v| Some(*v), true).unwrap();
        assert_eq!((redis.count, redis.median), (2, 0.5));
        assert_eq!(
            ratio_runs(&rows, 64, SESSION, "etcd", |v| Some(*v), false),
            None
        );
    }

    #[test]
    fn contended_results_meet_the_fastest_serial_limit_and_every_probe_is_shown() {
        let half = |ms: u64| LatencySummary {
            count: 1,
            p50: Duration::from_millis(ms),
            p99: Duration::from_millis(ms),
            max: Duration::from_millis(ms),
        };
        let limit = |sync_ms, trip_ms| SerialLimit {
            fdatasync: half(sync_ms),
            round_trip: half(trip_ms),
            round_trip_to: SESSION,
            round_trip_over: "a test",
        };
        let mut report = report();
        report.serial = vec![
            SerialProbe {
                when: "at the start",
                outcome: Ok(limit(3, 2)),
            },
            SerialProbe {
                when: "right after contended",
                outcome: Ok(limit(1, 1)),
            },
        ];
        report.contended = rows(&[(SESSION, 64, vec![Ok(contended(2_500, 2_500))])]);
        let text = report.to_string();
        assert!(text.contains("| at the start | 3.00 ms |"), "{text}");
        assert!(
            text.contains("| right after contended | 1.00 ms |"),
            "{text}"
        );
        // 200 and 500 handoffs/s: the fenced row is held against 500.
        assert!(text.contains("in this run: 500 handoffs/s"), "{text}");
        assert!(
            text.contains(&format!("| 64 | {SESSION} | 250 | 50% |")),
            "{text}"
        );
        assert!(!report.has_failures());

        report.serial[0].outcome = Err("no disk".to_string());
        let text = report.to_string();
        assert!(
            text.contains("| at the start | not measured: no disk |"),
            "{text}"
        );
        assert!(report.has_failures());
    }

    #[test]
    fn a_releaser_retaking_its_lock_is_a_grant_not_a_handoff() {
        let mut report = report();
        report.contended = rows(&[
            (SESSION, 16, vec![Ok(contended(4_000, 4_000))]),
            // 10,000 grants, of which only 1,000 moved the lock to another client.
            ("Redis", 16, vec![Ok(contended(10_000, 1_000))]),
            ("etcd", 16, vec![Ok(contended(1_600, 1_600))]),
        ]);
        let text = report.to_string();
        assert!(
            text.contains("| 16 | Redis | 100 | n/a | 1,000 | 9,000 of 10,000 |"),
            "{text}"
        );
        // The ratio is taken on handoffs: 400 / 100, not 400 / 1,000.
        assert!(text.contains("| 16 | 2.50x | 4.00x |"), "{text}");
        assert!(text.contains("its 100 ms watch-sync timer"), "{text}");
        assert!(text.contains("no queue: retry pause 0-10 ms"), "{text}");
    }

    #[test]
    fn a_report_renders_medians_ranges_failures_and_only_the_rivals_that_ran() {
        let mut report = report();
        report.cycle = rows(&[
            (
                SESSION,
                64,
                vec![Ok(cycle(5000.0)), Ok(cycle(4000.0)), Ok(cycle(6000.0))],
            ),
            (
                "etcd",
                64,
                vec![Ok(cycle(1000.0)), Ok(cycle(1000.0)), Ok(cycle(1000.0))],
            ),
            ("Redis", 64, vec![Err("cannot connect".to_string()); 3]),
        ]);
        let text = report.to_string();
        assert!(
            text.contains(&format!("| 64 | {SESSION} | 5,000 (4,000-6,000) |")),
            "{text}"
        );
        assert!(text.contains("| 64 | etcd | 1,000 |"), "{text}");
        assert!(text.contains("| 64 | Redis | n/a |"), "{text}");
        assert!(text.contains("0; 3 of 3 runs failed"), "{text}");
        assert!(text.contains("| 64 | 5.00x (4.00-6.00) | n/a |"), "{text}");
        assert!(
            text.contains("Redis at 64, run 2: failed: cannot connect"),
            "{text}"
        );
        assert!(report.has_failures());

        report.cycle.retain(|row| row.system != "Redis");
        let text = report.to_string();
        assert!(!text.contains("vs Redis |\n|---:"), "{text}");
        assert!(!text.contains("gRPC Session vs Redis | ---"), "{text}");
        assert!(!report.has_failures());
    }

    #[test]
    fn the_summary_headlines_the_session_and_says_what_favours_fenced() {
        let mut report = report();
        report.cycle = rows(&[
            (
                SESSION,
                64,
                vec![Ok(cycle(3000.0)), Ok(cycle(3300.0)), Ok(cycle(3600.0))],
            ),
            (
                UNARY,
                64,
                vec![Ok(cycle(2000.0)), Ok(cycle(2000.0)), Ok(cycle(2000.0))],
            ),
            (
                "etcd",
                64,
                vec![Ok(cycle(1000.0)), Ok(cycle(1100.0)), Ok(cycle(900.0))],
            ),
            (
                "Redis",
                64,
                vec![Ok(cycle(3000.0)), Ok(cycle(3000.0)), Ok(cycle(3000.0))],
            ),
        ]);
        report.expiry = rows(&[
            (SESSION, 64, vec![Ok(expiry(4)); 3]),
            ("etcd", 64, vec![Ok(expiry(400)); 3]),
            ("Redis", 64, vec![Ok(expiry(8)); 3]),
        ]);
        let text = report.to_string();
        assert!(text.contains("### Summary"), "{text}");
        let header = format!(
            "| measure | {SESSION} | {UNARY} | etcd | Redis | gRPC Session vs etcd | gRPC Session vs Redis |"
        );
        assert!(text.contains(&header), "{text}");
        // Run by run: 3.0, 3.0 and 4.0 against etcd; 1.0, 1.1 and 1.2 against Redis.
        assert!(
            text.contains(
                "| cycle, 64 clients: cycles/s | 3,300 (3,000-3,600) | 2,000 | 1,000 (900-1,100) | 3,000 | 3.00x (3.00-4.00) | 1.10x (1.00-1.20) |"
            ),
            "{text}"
        );
        // Latencies: rival ÷ fenced, so above 1 favours fenced.
        assert!(
            text.contains(
                "| expiry to next grant, 64 pairs together: p99 | 4.00 ms | - | 400 ms | 8.00 ms | 100.00x | 2.00x |"
            ),
            "{text}"
        );
        assert!(text.contains("its 500 ms lessor check"), "{text}");
    }

    fn keepalive(leases: usize, per: usize, cpu_ms: u64, rss_mib: u64) -> KeepaliveResult {
        KeepaliveResult {
            case: KeepaliveCase {
                leases,
                locks_per_lease: per,
            },
            leases_made: leases,
            locks_made: leases * per,
            setup: Duration::from_secs(1),
            renewals: 30_000,
            rate: 3_000.0,
            cpu: Some(Duration::from_millis(cpu_ms)),
            rss_bytes: Some(rss_mib << 20),
            rss_before: Some(10 << 20),
            failed_renewals: 0,
            errors: Errors::default(),
        }
    }

    #[test]
    fn keepalive_cells_of_equal_lock_counts_stay_apart_and_compare_single_lock_leases() {
        let mut report = report();
        for run in 0..3 {
            // 1,000 single-lock leases and 100 leases of 10 locks: both 1,000 locks.
            record_per(
                &mut report.keepalive,
                "fenced",
                1_000,
                1,
                Ok(keepalive(1_000, 1, 100, 50)),
            );
            record_per(
                &mut report.keepalive,
                "etcd",
                1_000,
                1,
                Ok(keepalive(1_000, 1, 1_000 + run, 90)),
            );
            record_per(
                &mut report.keepalive,
                "fenced",
                100,
                10,
                Ok(keepalive(100, 10, 100, 60)),
            );
        }
        assert_eq!(report.keepalive.len(), 3);
        let text = report.to_string();
        // fenced's rows before etcd's at the same size, the bigger case after.
        let at = |line: &str| text.find(line).unwrap_or_else(|| panic!("{line}: {text}"));
        assert!(at("| fenced | 1,000 | 1,000 |") < at("| etcd | 1,000 | 1,000 |"));
        assert!(at("| etcd | 1,000 | 1,000 |") < at("| fenced | 100 | 1,000 |"));
        // 30,000 renewals in 0.1 s of CPU against about 1 s: about 10x, in the headline column.
        assert!(
            text.contains("| keepalive, 1,000 leases: renewals per server CPU-second | 300,000 | - | 29,970 (29,940-30,000) | - | 10.01x (10.00-10.02) | - |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| memory: 1,000 locks on 100 leases, server RSS | 60 MiB | - | - | - | - | - |"
            ),
            "{text}"
        );
        assert!(!text.contains("Setups cut short"), "{text}");
    }

    #[test]
    fn the_summary_compares_only_with_the_rivals_that_ran() {
        let mut report = report();
        report.systems = vec![SESSION, "Redis"];
        report.cycle = rows(&[
            (SESSION, 2, vec![Ok(cycle(300.0))]),
            ("Redis", 2, vec![Ok(cycle(150.0))]),
        ]);
        let text = report.to_string();
        assert!(
            text.contains("| measure | fenced (gRPC Session) | Redis | gRPC Session vs Redis |"),
            "{text}"
        );
        assert!(!text.contains("vs etcd"), "{text}");
        assert!(
            text.contains("| cycle, 2 clients: cycles/s | 300 | 150 | 2.00x |"),
            "{text}"
        );
    }
}
