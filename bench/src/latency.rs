//! Latency recording: an HDR histogram of microseconds, merged across clients.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency recorded exactly; longer ones are clamped to it (no call of the
/// benchmark may take longer than its timeouts, far below this).
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies of one kind of event.
#[derive(Clone, Debug)]
pub struct Latencies {
    /// Microseconds, 3 significant digits.
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies::new()
    }
}

impl Latencies {
    /// An empty record.
    #[allow(clippy::expect_used)]
    pub fn new() -> Latencies {
        // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low,
        // 3 significant digits <= 5): this cannot fail, whatever the input.
        let histogram =
            Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant, valid bounds");
        Latencies { histogram }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        self.histogram
            .saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds every latency of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Both histograms have the same bounds, so adding cannot fail; were it to, the
        // fallback records each value (clamped) one by one.
        if self.histogram.add(&other.histogram).is_err() {
            for value in other.histogram.iter_recorded() {
                self.histogram
                    .saturating_record_n(value.value_iterated_to(), value.count_at_value());
            }
        }
    }

    /// Count, median, 99th percentile and maximum.
    pub fn summary(&self) -> LatencySummary {
        let at = |quantile: f64| Duration::from_micros(self.histogram.value_at_quantile(quantile));
        LatencySummary {
            count: self.histogram.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: Duration::from_micros(self.histogram.max()),
        }
    }
}

/// What the tables show of a set of latencies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// How many were recorded.
    pub count: u64,
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The largest.
    pub max: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_quantiles_within_three_digits() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        for ms in 1..=100u64 {
            let target = if ms % 2 == 0 { &mut a } else { &mut b };
            target.record(Duration::from_millis(ms));
        }
        a.merge(&b);
        let summary = a.summary();
        assert_eq!(summary.count, 100);
        let close = |got: Duration, want_ms: u64| {
            let want = Duration::from_millis(want_ms).as_secs_f64();
            (got.as_secs_f64() - want).abs() <= want * 0.002
        };
        assert!(close(summary.p50, 50), "{summary:?}");
        assert!(close(summary.p99, 99), "{summary:?}");
        assert!(close(summary.max, 100), "{summary:?}");
    }

    #[test]
    fn empty_and_extreme_values_do_not_panic() {
        let mut latencies = Latencies::new();
        assert_eq!(latencies.summary().count, 0);
        latencies.record(Duration::ZERO);
        latencies.record(Duration::from_secs(100_000));
        assert_eq!(latencies.summary().count, 2);
    }
}
