//! [`Summary`]: the totals of many runs, printed as a table and as Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::check::Rule;
use crate::run::RunResult;

/// The totals of many runs.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Runs completed.
    pub runs: usize,
    /// Operations recorded.
    pub operations: usize,
    /// Grants acknowledged.
    pub grants: usize,
    /// Faults carried out, by label.
    pub faults: BTreeMap<String, usize>,
    /// Violations by rule.
    pub violations: BTreeMap<Rule, usize>,
    /// Runs with at least one violation, and where each was kept.
    pub failing: Vec<(u64, Option<PathBuf>)>,
    /// Wall time of all runs.
    pub wall: Duration,
}

impl Summary {
    /// Adds one run.
    pub fn add(&mut self, result: &RunResult, kept: Option<PathBuf>) {
        self.runs += 1;
        self.operations += result.report.operations;
        self.grants += result.report.grants;
        for (label, count) in &result.faults {
            *self.faults.entry(label.clone()).or_default() += count;
        }
        for violation in &result.report.violations {
            *self.violations.entry(violation.rule).or_default() += 1;
        }
        if !result.report.violations.is_empty() {
            self.failing.push((result.seed, kept));
        }
        self.wall += result.wall;
    }

    /// Faults carried out in all.
    pub fn fault_total(&self) -> usize {
        self.faults.values().sum()
    }

    /// Violations found in all.
    pub fn violation_total(&self) -> usize {
        self.violations.values().sum()
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut text = String::new();
        let row = |text: &mut String, name: &str, value: String| {
            let _ = writeln!(text, "  {name:<36} {value:>10}");
        };
        row(&mut text, "runs", self.runs.to_string());
        row(&mut text, "operations", self.operations.to_string());
        row(&mut text, "grants acknowledged", self.grants.to_string());
        row(
            &mut text,
            "wall time",
            format!("{:.1} s", self.wall.as_secs_f64()),
        );
        let _ = writeln!(text, "  faults injected ({})", self.fault_total());
        for (label, count) in &self.faults {
            row(&mut text, &format!("  {label}"), count.to_string());
        }
        let _ = writeln!(text, "  violations ({})", self.violation_total());
        for rule in Rule::ALL {
            let count = self.violations.get(&rule).copied().unwrap_or(0);
            row(&mut text, &format!("  {rule}"), count.to_string());
        }
        for (seed, kept) in &self.failing {
            match kept {
                Some(dir) => {
                    let _ = writeln!(text, "  failing run {seed:016x}: {}", dir.display());
                }
                None => {
                    let _ = writeln!(text, "  failing run {seed:016x}");
                }
            }
        }
        text
    }

    /// The same as Markdown, for RELIABILITY.md.
    pub fn markdown(&self, title: &str, command: &str) -> String {
        let mut text = format!("### {title}\n\n`{command}`\n\n");
        let _ = writeln!(text, "| | |\n|---|---:|");
        let _ = writeln!(text, "| runs | {} |", self.runs);
        let _ = writeln!(text, "| operations | {} |", self.operations);
        let _ = writeln!(text, "| grants acknowledged | {} |", self.grants);
        let _ = writeln!(text, "| wall time | {:.0} s |", self.wall.as_secs_f64());
        let _ = writeln!(text, "| **faults injected** | **{}** |", self.fault_total());
        for (label, count) in &self.faults {
            let _ = writeln!(text, "| {label} | {count} |");
        }
        let _ = writeln!(text, "| **violations** | **{}** |", self.violation_total());
        for rule in Rule::ALL {
            let count = self.violations.get(&rule).copied().unwrap_or(0);
            let _ = writeln!(text, "| {rule} | {count} |");
        }
        let failing = self.failing.len();
        let _ = writeln!(
            text,
            "\nRuns with a violation: {failing} of {}.\n",
            self.runs
        );
        text
    }
}
