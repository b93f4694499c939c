//! The progress bar (stderr): one step per phase, the running phase's name and its
//! operation count, and each phase's one-line result printed above the bar.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

/// The run's progress bar.
pub struct Progress {
    /// The bar, drawn on stderr (hidden when stderr is not a terminal).
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `phases` steps.
    pub fn new(phases: u64) -> Progress {
        let bar = ProgressBar::new(phases);
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} phases  {msg}",
        );
        if let Ok(style) = style {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar }
    }

    /// Starts a phase called `label`; its operations are counted on the returned phase.
    pub fn phase(&self, label: String) -> Phase {
        let ops = Arc::new(AtomicU64::new(0));
        let bar = self.bar.clone();
        bar.set_message(label.clone());
        let ticker = {
            let ops = ops.clone();
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(250));
                loop {
                    every.tick().await;
                    bar.set_message(format!("{label}: {} ops", ops.load(Ordering::Relaxed)));
                }
            })
        };
        Phase { ops, bar, ticker }
    }

    /// Prints a line above the bar (or on stderr when the bar is hidden).
    pub fn say(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A running phase.
pub struct Phase {
    /// Operations done so far, shared with the workload's tasks.
    ops: Arc<AtomicU64>,
    /// The bar, advanced when the phase ends.
    bar: ProgressBar,
    /// Refreshes the bar's message.
    ticker: JoinHandle<()>,
}

impl Phase {
    /// The counter the workload's tasks add their operations to.
    pub fn ops(&self) -> Arc<AtomicU64> {
        self.ops.clone()
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.inc(1);
    }
}
