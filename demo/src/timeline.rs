//! [`Timeline`]: what happened in a run, when, and from whose point of view.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whose point of view an entry is from: one lane of the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The first leader, who will be paused.
    Alpha,
    /// The second worker, who takes over.
    Beta,
    /// The lock server (seen through a watch on the lock).
    LockServer,
    /// The gated store.
    Store,
    /// The demo itself (signals, verdicts).
    Director,
}

impl Lane {
    /// The lane's name as printed.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Alpha => "alpha",
            Lane::Beta => "beta",
            Lane::LockServer => "fenced",
            Lane::Store => "store",
            Lane::Director => "demo",
        }
    }
}

/// What kind of thing happened, for the picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// A plain note.
    Note,
    /// A lock was granted with this token.
    Granted(u64),
    /// A lease expired on the server.
    Expired(u64),
    /// A write was accepted with this token.
    Accepted(u64),
    /// A write was rejected: presented, current.
    Rejected(u64, u64),
    /// The process was stopped.
    Stopped,
    /// The process was continued.
    Continued,
    /// The SDK reported a pause or a lost lease.
    Sdk,
}

/// One entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Time since the run started.
    pub at: Duration,
    /// Whose point of view.
    pub lane: Lane,
    /// What kind of thing.
    pub mark: Mark,
    /// What happened, in words.
    pub text: String,
}

/// A run's entries, shared by the tasks that observe it; each entry is also printed as it
/// happens, so a person watches the story unfold.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// When the run started.
    start: Instant,
    /// A title printed before each line (which run this is).
    title: String,
    /// The entries so far.
    entries: Arc<Mutex<Vec<Entry>>>,
    /// Whether to print as entries arrive.
    narrate: bool,
}

impl Timeline {
    /// An empty timeline starting now.
    pub fn new(title: impl Into<String>, narrate: bool) -> Self {
        Timeline {
            start: Instant::now(),
            title: title.into(),
            entries: Arc::new(Mutex::new(Vec::new())),
            narrate,
        }
    }

    /// Records (and prints) an entry.
    pub fn record(&self, lane: Lane, mark: Mark, text: impl Into<String>) {
        let entry = Entry {
            at: self.start.elapsed(),
            lane,
            mark,
            text: text.into(),
        };
        if self.narrate {
            println!(
                "[{}] {:>7.3}s  {:<7} {}",
                self.title,
                entry.at.as_secs_f64(),
                entry.lane.name(),
                entry.text
            );
        }
        if let Ok(mut entries) = self.entries.lock() {
            entries.push(entry);
        }
    }

    /// The entries so far, in the order they were recorded.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The run's title.
    pub fn title(&self) -> &str {
        &self.title
    }
}
