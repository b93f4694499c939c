//! The failover benchmark's Markdown: one column per system, p50, p99 and max of each
//! measured time over the kills, how many failed, and every kill's numbers.

use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::failover::probe::KillSample;

/// The kills of one system and the timing it ran with.
#[derive(Debug, Clone)]
pub struct SystemFailovers {
    /// The system's name.
    pub system: &'static str,
    /// Its raft timing, in words (`heartbeat 50 ms, election timeout 200-400 ms`).
    pub timing: String,
    /// One sample per kill, in order.
    pub kills: Vec<KillSample>,
}

/// Every system's kills.
#[derive(Debug, Clone, Default)]
pub struct FailoverReport {
    /// One entry per system, in the order they were given.
    pub systems: Vec<SystemFailovers>,
}

/// The nearest-rank percentile `p` (0-100] of `sorted` (ascending, not empty).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis(d: Duration) -> String {
    format!("{}", d.as_millis())
}

/// `p50 / p99 / max` in milliseconds of the probes that succeeded, and how many failed.
fn summary(samples: &[&Result<Duration, String>]) -> String {
    let mut ok: Vec<Duration> = samples
        .iter()
        .filter_map(|s| s.as_ref().ok().copied())
        .collect();
    ok.sort();
    let failed = samples.len() - ok.len();
    let mut text = if ok.is_empty() {
        "none succeeded".to_string()
    } else {
        format!(
            "{} / {} / {}",
            millis(percentile(&ok, 50.0)),
            millis(percentile(&ok, 99.0)),
            millis(percentile(&ok, 100.0))
        )
    };
    if failed > 0 {
        let _ = write!(text, " ({failed} failed)");
    }
    text
}

/// How many of `samples` succeeded within `limit`.
fn within(samples: &[&Result<Duration, String>], limit: Duration) -> String {
    let inside = samples
        .iter()
        .filter(|s| matches!(s, Ok(d) if *d <= limit))
        .count();
    format!("{inside} of {}", samples.len())
}

/// The grant's time after the new leader was named, for kills where both succeeded.
fn after_named(kill: &KillSample) -> Result<Duration, String> {
    match (&kill.grant, &kill.leader_known) {
        (Ok(grant), Ok(known)) => Ok(grant.saturating_sub(*known)),
        _ => Err("a probe failed".to_string()),
    }
}

/// One probe's samples of every kill of `system`.
fn pick(
    system: &SystemFailovers,
    probe: fn(&KillSample) -> &Result<Duration, String>,
) -> Vec<&Result<Duration, String>> {
    system.kills.iter().map(probe).collect()
}

fn cell(sample: &Result<Duration, String>) -> String {
    match sample {
        Ok(d) => millis(*d),
        Err(reason) => format!("failed: {reason}"),
    }
}

impl fmt::Display for FailoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header: Vec<&str> = self.systems.iter().map(|s| s.system).collect();
        writeln!(
            f,
            "| ms after the SIGKILL of the leader | {} |",
            header.join(" | ")
        )?;
        writeln!(f, "|---|{}", "---|".repeat(header.len()))?;
        let row = |f: &mut fmt::Formatter<'_>,
                   label: &str,
                   value: &dyn Fn(&SystemFailovers) -> String|
         -> fmt::Result {
            let cells: Vec<String> = self.systems.iter().map(value).collect();
            writeln!(f, "| {label} | {} |", cells.join(" | "))
        };
        row(f, "raft timing", &|s| s.timing.clone())?;
        row(f, "kills", &|s| s.kills.len().to_string())?;
        row(
            f,
            "a surviving member names a new leader: p50 / p99 / max",
            &|s| summary(&pick(s, |k| &k.leader_known)),
        )?;
        row(f, "**grant of a free lock**: p50 / p99 / max", &|s| {
            summary(&pick(s, |k| &k.grant))
        })?;
        row(
            f,
            "renewal of a lease held before the kill: p50 / p99 / max",
            &|s| summary(&pick(s, |k| &k.renew)),
        )?;
        row(
            f,
            "grant after the new leader was named: p50 / p99 / max",
            &|s| {
                let after: Vec<Result<Duration, String>> =
                    s.kills.iter().map(after_named).collect();
                summary(&after.iter().collect::<Vec<_>>())
            },
        )?;
        row(f, "grants within 1 s of the kill", &|s| {
            within(&pick(s, |k| &k.grant), Duration::from_secs(1))
        })?;
        writeln!(f)?;
        writeln!(
            f,
            "p99 is the nearest rank: with fewer than 100 kills it is the slowest kill, the max."
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "<details><summary>Every kill (ms after the SIGKILL)</summary>"
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| system | kill | member killed | new leader named | grant | renewal |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|")?;
        for system in &self.systems {
            for (n, kill) in system.kills.iter().enumerate() {
                writeln!(
                    f,
                    "| {} | {} | {} | {} | {} | {} |",
                    system.system,
                    n + 1,
                    kill.killed,
                    cell(&kill.leader_known),
                    cell(&kill.grant),
                    cell(&kill.renew)
                )?;
            }
        }
        writeln!(f)?;
        writeln!(f, "</details>")
    }
}

impl FailoverReport {
    /// Whether any probe failed.
    pub fn has_failures(&self) -> bool {
        self.systems
            .iter()
            .flat_map(|s| &s.kills)
            .any(|k| k.leader_known.is_err() || k.grant.is_err() || k.renew.is_err())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    // checks: none (benchmark arithmetic: nearest-rank percentiles of the kills)
    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=20).map(ms).collect();
        assert_eq!(percentile(&sorted, 50.0), ms(10));
        assert_eq!(percentile(&sorted, 99.0), ms(20));
        assert_eq!(percentile(&sorted, 100.0), ms(20));
        assert_eq!(percentile(&[ms(7)], 50.0), ms(7));
    }

    // checks: none (benchmark report: failed probes are counted, not dropped silently)
    #[test]
    fn failed_probes_are_counted() {
        let samples = [Ok(ms(300)), Err("no success".to_string()), Ok(ms(100))];
        let refs: Vec<_> = samples.iter().collect();
        assert_eq!(summary(&refs), "100 / 300 / 300 (1 failed)");
        assert_eq!(within(&refs, ms(200)), "1 of 3");
    }
}
