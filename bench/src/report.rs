//! The run's results as Markdown: one table per workload, the ratios of fenced to each
//! rival, and every failure in words.

use std::fmt::{self, Display, Formatter, Write as _};
use std::time::Duration;

use crate::config::Config;
use crate::workloads::contended::ContendedResult;
use crate::workloads::cycle::CycleResult;
use crate::workloads::expiry::{Expiries, ExpiryResult};
use crate::workloads::keepalive::KeepaliveResult;
use crate::workloads::serial::SerialLimit;
use crate::workloads::Errors;

/// One phase: which system, at what size, and what came of it.
#[derive(Clone, Debug)]
pub struct Row<T> {
    /// The system's name.
    pub system: &'static str,
    /// Clients (cycle, contended), pairs (expiry) or leases (keepalive).
    pub size: usize,
    /// The result, or why the phase failed.
    pub outcome: Result<T, String>,
}

impl<T> Row<T> {
    /// A row.
    pub fn new(system: &'static str, size: usize, outcome: Result<T, String>) -> Row<T> {
        Row {
            system,
            size,
            outcome,
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
    /// The serial limit of a durable handoff, each time it was measured.
    pub serial: Vec<SerialProbe>,
    /// cycle phases.
    pub cycle: Vec<Row<CycleResult>>,
    /// contended phases.
    pub contended: Vec<Row<ContendedResult>>,
    /// expiry phases, the pairs' expiries together.
    pub expiry: Vec<Row<ExpiryResult>>,
    /// expiry phases, the pairs' expiries spread over the TTL.
    pub expiry_spread: Vec<Row<ExpiryResult>>,
    /// keepalive phases.
    pub keepalive: Vec<Row<KeepaliveResult>>,
}

impl Report {
    /// An empty report of `config`'s run.
    pub fn new(config: Config) -> Report {
        Report {
            config,
            etcd_version: None,
            serial: Vec::new(),
            cycle: Vec::new(),
            contended: Vec::new(),
            expiry: Vec::new(),
            expiry_spread: Vec::new(),
            keepalive: Vec::new(),
        }
    }

    /// The expiry phases of one arrangement.
    pub fn expiry_rows(&mut self, expiries: Expiries) -> &mut Vec<Row<ExpiryResult>> {
        match expiries {
            Expiries::Together => &mut self.expiry,
            Expiries::Spread => &mut self.expiry_spread,
        }
    }

    /// Whether any phase failed or counted failed operations.
    pub fn has_failures(&self) -> bool {
        let failed = |outcome: Result<&Errors, &String>| outcome.map_or(true, |e| e.count > 0);
        self.serial.iter().any(|s| s.outcome.is_err())
            || self
                .cycle
                .iter()
                .any(|r| failed(r.outcome.as_ref().map(|x| &x.errors)))
            || self
                .contended
                .iter()
                .any(|r| failed(r.outcome.as_ref().map(|x| &x.errors)))
            || self
                .expiry
                .iter()
                .chain(&self.expiry_spread)
                .any(|r| failed(r.outcome.as_ref().map(|x| &x.errors)))
            || self
                .keepalive
                .iter()
                .any(|r| failed(r.outcome.as_ref().map(|x| &x.errors)))
    }
}

/// A duration in milliseconds, to about three significant digits.
fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
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

/// A count made, with the count asked for when they differ.
fn made(made: usize, asked: usize) -> String {
    if made == asked {
        rate(made as f64)
    } else {
        format!("{} of {}", rate(made as f64), rate(asked as f64))
    }
}

fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "n/a".to_string()
    }
}

fn errors_cell(errors: &Errors) -> String {
    errors.count.to_string()
}

/// The ratio of `pick(fenced)` to `pick(rival)` at `size`, if both ran.
fn ratio_at<T>(
    rows: &[Row<T>],
    size: usize,
    rival: &str,
    pick: impl Fn(&T) -> Option<f64>,
    invert: bool,
) -> String {
    let value = |system: &str| {
        rows.iter()
            .find(|r| r.system == system && r.size == size)
            .and_then(|r| r.outcome.as_ref().ok())
            .and_then(&pick)
    };
    match (value("fenced"), value(rival)) {
        (Some(f), Some(r)) if r > 0.0 && f > 0.0 => ratio(if invert { r / f } else { f / r }),
        _ => "n/a".to_string(),
    }
}

fn sizes<T>(rows: &[Row<T>]) -> Vec<usize> {
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.dedup();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Writes the ratio table of `rows` against etcd and Redis.
fn ratios<T>(
    f: &mut Formatter<'_>,
    rows: &[Row<T>],
    what: &str,
    size_name: &str,
    pick: impl Fn(&T) -> Option<f64> + Copy,
    invert: bool,
) -> fmt::Result {
    let has = |system: &str| rows.iter().any(|r| r.system == system);
    let rivals: Vec<(&str, &str)> = [("etcd", "etcd"), ("redis", "Redis")]
        .into_iter()
        .filter(|(system, _)| has(system))
        .collect();
    if !has("fenced") || rivals.is_empty() {
        return Ok(());
    }
    writeln!(f, "\nRatios ({what}):\n")?;
    write!(f, "| {size_name} |")?;
    for (_, title) in &rivals {
        write!(f, " fenced vs {title} |")?;
    }
    writeln!(f, "\n|---:|{}", "---:|".repeat(rivals.len()))?;
    for size in sizes(rows) {
        write!(f, "| {size} |")?;
        for (system, _) in &rivals {
            write!(f, " {} |", ratio_at(rows, size, system, pick, invert))?;
        }
        writeln!(f)?;
    }
    Ok(())
}

/// Writes each failed phase and each first failure, under a table.
fn failures<T>(
    f: &mut Formatter<'_>,
    rows: &[Row<T>],
    errors: impl Fn(&T) -> &Errors,
) -> fmt::Result {
    let mut notes = String::new();
    for row in rows {
        match &row.outcome {
            Err(why) => {
                let _ = writeln!(
                    notes,
                    "- {} at {}: phase failed: {why}",
                    row.system, row.size
                );
            }
            Ok(result) => {
                let errors = errors(result);
                if let Some(first) = &errors.first {
                    let _ = writeln!(
                        notes,
                        "- {} at {}: {} failed operations, the first: {first}",
                        row.system, row.size, errors.count
                    );
                }
            }
        }
    }
    if !notes.is_empty() {
        writeln!(f, "\nFailures:\n\n{notes}")?;
    }
    Ok(())
}

impl Display for Report {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "Each phase: {:.1} s measured after {:.1} s warmup; clients {:?}; lease TTL {} s; \
             contended waiters wait up to {} s; FIFO margin {}; Redis waiters retry after a \
             random 0-{} ms pause.",
            c.duration.as_secs_f64(),
            c.warmup.as_secs_f64(),
            c.clients,
            c.ttl.as_secs(),
            c.max_wait.as_secs(),
            ms(c.fifo_margin),
            2 * c.redis_retry.as_millis()
        )?;
        if let Some(version) = &self.etcd_version {
            writeln!(f, "\netcd reports version {version}.")?;
        }
        self.fmt_serial(f)?;
        self.fmt_cycle(f)?;
        self.fmt_contended(f)?;
        self.fmt_expiry(f)?;
        self.fmt_keepalive(f)
    }
}

impl Report {
    /// The serial limit the contended results are held against: the fastest of its
    /// measurements, the strictest bound (this machine's speed drifts during a run).
    fn serial_limit(&self) -> Option<f64> {
        self.serial
            .iter()
            .filter_map(|probe| probe.outcome.as_ref().ok())
            .map(SerialLimit::handoffs_per_second)
            .filter(|limit| *limit > 0.0)
            .reduce(f64::max)
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
                 round trip to {} over loopback ({}): 1 / (p50 + p50).\n",
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
        for row in &self.cycle {
            match &row.outcome {
                Ok(r) => writeln!(
                    f,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    row.size,
                    row.system,
                    rate(r.rate),
                    ms(r.acquire.p50),
                    ms(r.acquire.p99),
                    ms(r.acquire.max),
                    errors_cell(&r.errors)
                )?,
                Err(_) => writeln!(f, "| {} | {} | failed | | | | |", row.size, row.system)?,
            }
        }
        ratios(
            f,
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
            "| clients | system | handoffs/s | of serial limit | wait p50 | wait p99 | overtakes (> {}) | largest overtake | overlaps | gave up | errors |",
            ms(self.config.fifo_margin)
        )?;
        writeln!(f, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for row in &self.contended {
            match &row.outcome {
                Ok(r) => writeln!(
                    f,
                    "| {} | {} | {} | {} | {} | {} | {} of {} | {} | {} | {} | {} |",
                    row.size,
                    row.system,
                    rate(r.rate),
                    limit.map_or("n/a".to_string(), |l| format!("{:.0}%", 100.0 * r.rate / l)),
                    ms(r.wait.p50),
                    ms(r.wait.p99),
                    r.order.overtakes,
                    r.order.grants,
                    ms(r.order.max_overtake),
                    r.order.overlaps,
                    r.gave_up,
                    errors_cell(&r.errors)
                )?,
                Err(_) => writeln!(
                    f,
                    "| {} | {} | failed |{}",
                    row.size,
                    row.system,
                    " |".repeat(8)
                )?,
            }
        }
        writeln!(
            f,
            "\nAn overtake is a grant to a request sent more than the margin after another \
             request that was still waiting (arrival order approximated by send time); an \
             overlap is a grant received before the previous holder had sent its release."
        )?;
        ratios(
            f,
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
                 lower bound); they differ by the holder's acquire round trip, which grows \
                 when all pairs acquire at once. Here all pairs start together, so each \
                 round's leases expire within a few milliseconds of one another and the last \
                 grants of a round wait behind the others' handoffs and next rounds.\n"
            )?;
            Self::fmt_expiry_rows(f, &self.expiry)?;
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
            Self::fmt_expiry_rows(f, &self.expiry_spread)?;
        }
        Ok(())
    }

    /// One expiry table, its ratios and its failures.
    fn fmt_expiry_rows(f: &mut Formatter<'_>, rows: &[Row<ExpiryResult>]) -> fmt::Result {
        writeln!(f, "| pairs | system | TTL | samples | delay p50 | delay p99 | delay max | at least p50 | at least p99 | granted early | errors |")?;
        writeln!(f, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for row in rows {
            match &row.outcome {
                Ok(r) => writeln!(
                    f,
                    "| {} | {} | {} s | {} | {} | {} | {} | {} | {} | {} | {} |",
                    row.size,
                    row.system,
                    r.ttl.as_secs_f64(),
                    r.delay.count,
                    ms(r.delay.p50),
                    ms(r.delay.p99),
                    ms(r.delay.max),
                    ms(r.delay_lower.p50),
                    ms(r.delay_lower.p99),
                    r.early,
                    errors_cell(&r.errors)
                )?,
                Err(_) => writeln!(
                    f,
                    "| {} | {} | failed | | | | | | | | |",
                    row.size, row.system
                )?,
            }
        }
        ratios(
            f,
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
             time in that window; RSS at its end (before the setup in brackets).\n",
            self.config.keepalive_window.as_secs_f64()
        )?;
        writeln!(f, "| system | leases | locks | setup | setup rate (locks/s) | renewals/s | server CPU | CPU per renewal | renewals per CPU-s | RSS | failed renewals | errors |")?;
        writeln!(
            f,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for row in &self.keepalive {
            match &row.outcome {
                Ok(r) => {
                    let per = r
                        .cpu
                        .filter(|_| r.renewals > 0)
                        .map_or("n/a".to_string(), |cpu| {
                            format!("{:.1} µs", cpu.as_secs_f64() * 1e6 / r.renewals as f64)
                        });
                    let mib = |b: Option<u64>| {
                        b.map_or("n/a".to_string(), |b| {
                            format!("{:.0} MiB", b as f64 / 1048576.0)
                        })
                    };
                    writeln!(
                        f,
                        "| {} | {} | {} | {:.1} s | {} | {} | {} | {} | {} | {} ({}) | {} | {} |",
                        row.system,
                        made(r.leases_made, r.case.leases),
                        made(r.locks_made, r.case.locks()),
                        r.setup.as_secs_f64(),
                        rate(r.locks_made as f64 / r.setup.as_secs_f64().max(1e-9)),
                        rate(r.rate),
                        r.cpu
                            .map_or("n/a".to_string(), |c| format!("{:.2} s", c.as_secs_f64())),
                        per,
                        r.renewals_per_cpu_second().map_or("n/a".to_string(), rate),
                        mib(r.rss_bytes),
                        mib(r.rss_before),
                        r.failed_renewals,
                        errors_cell(&r.errors)
                    )?
                }
                Err(_) => writeln!(
                    f,
                    "| {} | {} | | failed |{}",
                    row.system,
                    row.size,
                    " |".repeat(8)
                )?,
            }
        }
        // Compare like with like: single-lock leases of the same count.
        let single: Vec<Row<KeepaliveResult>> = self
            .keepalive
            .iter()
            .filter(|r| {
                r.outcome
                    .as_ref()
                    .map_or(true, |x| x.case.locks_per_lease == 1)
            })
            .cloned()
            .collect();
        ratios(
            f,
            &single,
            "renewals per server CPU-second, single-lock leases, fenced ÷ rival",
            "leases",
            |r| r.renewals_per_cpu_second(),
            false,
        )?;
        failures(f, &self.keepalive, |r| &r.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(ms(Duration::from_micros(1234)), "1.23 ms");
        assert_eq!(ms(Duration::from_millis(250)), "250 ms");
    }

    #[test]
    fn ratios_pair_fenced_with_each_rival_at_the_same_size() {
        let row = |system, size, value: f64| Row::new(system, size, Ok(value));
        let rows = vec![
            row("fenced", 16, 600.0),
            row("etcd", 16, 200.0),
            row("redis", 16, 300.0),
            row("etcd", 64, 1.0),
        ];
        assert_eq!(ratio_at(&rows, 16, "etcd", |v| Some(*v), false), "3.00x");
        assert_eq!(ratio_at(&rows, 16, "redis", |v| Some(*v), true), "0.50x");
        assert_eq!(ratio_at(&rows, 64, "etcd", |v| Some(*v), false), "n/a");
    }

    #[test]
    fn contended_results_meet_the_fastest_serial_limit_and_every_probe_is_shown() {
        use crate::latency::LatencySummary;
        let half = |ms: u64| LatencySummary {
            count: 1,
            p50: Duration::from_millis(ms),
            p99: Duration::from_millis(ms),
            max: Duration::from_millis(ms),
        };
        let limit = |sync_ms, trip_ms| SerialLimit {
            fdatasync: half(sync_ms),
            round_trip: half(trip_ms),
            round_trip_to: "fenced",
            round_trip_over: "a test",
        };
        let mut report = Report::new(Config::default());
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
        report.contended = vec![Row::new(
            "fenced",
            64,
            Ok(ContendedResult {
                handoffs: 2_500,
                rate: 250.0,
                wait: LatencySummary::default(),
                order: crate::fifo::OrderReport::default(),
                gave_up: 0,
                errors: Errors::default(),
            }),
        )];
        let text = report.to_string();
        assert!(text.contains("| at the start | 3.00 ms |"), "{text}");
        assert!(
            text.contains("| right after contended | 1.00 ms |"),
            "{text}"
        );
        // 200 and 500 handoffs/s: the fenced row is held against 500.
        assert!(text.contains("in this run: 500 handoffs/s"), "{text}");
        assert!(text.contains("| 64 | fenced | 250 | 50% |"), "{text}");
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
    fn a_report_renders_rows_failures_and_only_the_rivals_that_ran() {
        let cycle = |rate_per_s: f64| CycleResult {
            cycles: rate_per_s as u64 * 5,
            rate: rate_per_s,
            acquire: crate::latency::LatencySummary::default(),
            errors: Errors::default(),
        };
        let mut report = Report::new(Config::default());
        report.cycle = vec![
            Row::new("fenced", 64, Ok(cycle(5000.0))),
            Row::new("etcd", 64, Ok(cycle(1000.0))),
            Row::new("redis", 64, Err("cannot connect".to_string())),
        ];
        let text = report.to_string();
        assert!(text.contains("| 64 | fenced | 5,000 |"), "{text}");
        assert!(text.contains("| 64 | redis | failed |"), "{text}");
        assert!(text.contains("| 64 | 5.00x | n/a |"), "{text}");
        assert!(
            text.contains("redis at 64: phase failed: cannot connect"),
            "{text}"
        );
        assert!(report.has_failures());

        report.cycle.pop();
        let text = report.to_string();
        assert!(!text.contains("fenced vs Redis"), "{text}");
        assert!(!report.has_failures());
    }
}
