//! The history of a run: what every process did and when, one JSON object per line.
//!
//! Every timestamp is nanoseconds on `CLOCK_BOOTTIME` ([`now`]), one clock that every
//! process on the machine shares, so intervals recorded by different processes compare
//! exactly. An operation is recorded twice: an [`Event::Invoke`] before it starts and an
//! [`Event::Complete`] when it ends; one that never completes (its process was stopped or
//! the run ended) is *indeterminate*, as is one that completed with [`Outcome::Unknown`].

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Mutex;

use fenced_client::{BootClock, Clock};
use serde::{Deserialize, Serialize};

/// Nanoseconds on `CLOCK_BOOTTIME`.
pub type Nanos = u64;

/// The current time on the machine-wide clock (`CLOCK_BOOTTIME`), in nanoseconds.
pub fn now() -> Nanos {
    u64::try_from(BootClock.now().as_nanos()).unwrap_or(u64::MAX)
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// An operation starts: recorded before the call.
    Invoke {
        /// When.
        t: Nanos,
        /// Which process (worker name, or `harness`).
        process: String,
        /// The operation's number within its process.
        id: u64,
        /// What it does.
        op: Op,
    },
    /// An operation ends: recorded after the call returned.
    Complete {
        /// When.
        t: Nanos,
        /// Which process.
        process: String,
        /// The number of the operation it completes.
        id: u64,
        /// How it ended.
        outcome: Outcome,
    },
    /// The SDK's view of a lease changed (from `Lease::history`, at the SDK's own time).
    LeaseState {
        /// When the SDK made the change (its clock is `CLOCK_BOOTTIME` too).
        t: Nanos,
        /// Which process.
        process: String,
        /// The lease, as named in its grant.
        lease: String,
        /// The new state.
        state: SdkState,
        /// The SDK's words.
        detail: String,
    },
    /// The SDK confirmed a renewal that was sent no earlier than `sent`: the server then
    /// kept the lease until at least `sent + ttl_ms`.
    Renewed {
        /// When the worker noticed.
        t: Nanos,
        /// Which process.
        process: String,
        /// The lease.
        lease: String,
        /// A lower bound of the renewal's send time.
        sent: Nanos,
        /// The TTL the server renewed for.
        ttl_ms: u64,
    },
    /// A nemesis starts or ends a fault.
    Fault {
        /// When.
        t: Nanos,
        /// The target (`fenced`, `fenced-kv`, `w2`, `link-w2`).
        target: String,
        /// The fault's kind (see [`crate::nemesis::Action::kind`]).
        kind: String,
        /// Start or end.
        phase: Phase,
    },
    /// A server process changed: dead (after `kill -9` and its reaping), being started,
    /// or serving.
    Server {
        /// When.
        t: Nanos,
        /// Which server (`fenced`, `fenced-kv`).
        target: String,
        /// What changed.
        change: ServerChange,
    },
}

impl Event {
    /// When it happened.
    pub fn time(&self) -> Nanos {
        match self {
            Event::Invoke { t, .. }
            | Event::Complete { t, .. }
            | Event::LeaseState { t, .. }
            | Event::Renewed { t, .. }
            | Event::Fault { t, .. }
            | Event::Server { t, .. } => *t,
        }
    }
}

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    /// Acquire a lock: try once (`wait_ms` 0) or wait in the queue.
    Acquire {
        /// The lock.
        lock: String,
        /// How long to wait in the queue.
        wait_ms: u64,
        /// The TTL asked for.
        ttl_ms: u64,
    },
    /// `Lease::fence()`: the SDK's check right before a guarded write.
    Fence {
        /// The lease.
        lease: String,
    },
    /// Release a lease.
    Release {
        /// The lease.
        lease: String,
    },
    /// A guarded write to the store.
    Put {
        /// The lease whose token it carries.
        lease: String,
        /// The resource.
        resource: String,
        /// The key.
        key: String,
        /// The value (unique in the run: it names the worker and the step).
        value: String,
        /// The token it carries.
        token: u64,
    },
    /// Raise the store's mark to a token without writing (`GatedKv.Fence`).
    KvFence {
        /// The lease whose token it carries.
        lease: String,
        /// The resource.
        resource: String,
        /// The token.
        token: u64,
    },
    /// Read a key from the store.
    Get {
        /// The resource.
        resource: String,
        /// The key.
        key: String,
    },
    /// The harness's read of a key once every worker has stopped and every fault healed.
    FinalRead {
        /// The resource.
        resource: String,
        /// The key.
        key: String,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// An acquire was granted.
    Granted {
        /// The worker's name for the lease (never the lease id, a bearer secret).
        lease: String,
        /// The fencing token.
        token: u64,
        /// The TTL the server granted.
        ttl_ms: u64,
    },
    /// `fence()` handed out the token.
    Token {
        /// The token.
        token: u64,
    },
    /// `fence()` refused, or an acquire was answered "not granted".
    Refused {
        /// Why.
        reason: String,
    },
    /// A release was acknowledged.
    Done,
    /// The store accepted a write or a fence.
    Accepted {
        /// The resource's mark after it.
        mark: u64,
    },
    /// The store's gate turned a stale token away.
    Rejected {
        /// The token presented.
        presented: u64,
        /// The resource's mark.
        current: u64,
    },
    /// A read's answer.
    Read {
        /// Whether the key exists.
        found: bool,
        /// The value.
        value: String,
        /// The token that wrote it.
        token: u64,
    },
    /// It did not happen (a definite refusal).
    Failed {
        /// Why.
        error: String,
    },
    /// It may or may not have happened (a timeout, a broken connection).
    Unknown {
        /// Why.
        error: String,
    },
}

/// The SDK's states of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SdkState {
    /// Held: `fence()` hands out the token.
    Held,
    /// Suspect: no token until the server confirms the lease again.
    Suspect,
    /// Lost for good.
    Lost,
}

/// A fault's start or end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The fault begins.
    Start,
    /// The fault is healed.
    End,
}

/// A change of a server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerChange {
    /// The process is gone (killed and reaped): from here on it runs no code.
    Down,
    /// The process is being started (recorded right before the spawn): anything it
    /// restores counts its TTLs from no earlier than this.
    Starting,
    /// It announced that it serves.
    Up,
}

/// Why a history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line is not an event.
    #[error("{path} line {line}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The line number (from 1).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Appends events to a history file, one line per event, each written with one `write`
/// so that a process killed at any instant leaves only whole lines, and lines of
/// concurrent tasks never interleave.
#[derive(Debug)]
pub struct Recorder {
    /// The file, shared by the tasks of one process.
    file: Mutex<File>,
    /// Its path, for messages.
    path: String,
}

impl Recorder {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> Result<Recorder, HistoryError> {
        let file = File::create(path).map_err(|source| HistoryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Recorder {
            file: Mutex::new(file),
            path: path.display().to_string(),
        })
    }

    /// Appends one event.
    pub fn record(&self, event: &Event) -> Result<(), HistoryError> {
        let mut line = serde_json::to_string(event).map_err(|e| HistoryError::Parse {
            path: self.path.clone(),
            line: 0,
            reason: e.to_string(),
        })?;
        line.push('\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(line.as_bytes())
            .map_err(|source| HistoryError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// Reads a history file. A last line cut short (its writer was killed mid-write) is
/// dropped; any other bad line is an error.
pub fn read(path: &Path) -> Result<Vec<Event>, HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(io)?;
    let mut events = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(event) => events.push(event),
            Err(_) if index + 1 == lines.len() && !line.ends_with('}') => {}
            Err(e) => {
                return Err(HistoryError::Parse {
                    path: path.display().to_string(),
                    line: index + 1,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(events)
}

/// Writes events to a file, one per line, in the order given.
pub fn write(path: &Path, events: &[Event]) -> Result<(), HistoryError> {
    let recorder = Recorder::create(path)?;
    for event in events {
        recorder.record(event)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_a_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let events = vec![
            Event::Invoke {
                t: 1,
                process: "w1".into(),
                id: 1,
                op: Op::Acquire {
                    lock: "l0".into(),
                    wait_ms: 0,
                    ttl_ms: 500,
                },
            },
            Event::Complete {
                t: 2,
                process: "w1".into(),
                id: 1,
                outcome: Outcome::Granted {
                    lease: "w1.1".into(),
                    token: 7,
                    ttl_ms: 500,
                },
            },
            Event::Server {
                t: 3,
                target: "fenced".into(),
                change: ServerChange::Down,
            },
        ];
        write(&path, &events).unwrap();
        // A line cut short by a kill at the end is dropped, not an error.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"ev\":\"invo")
            .unwrap();
        assert_eq!(read(&path).unwrap(), events);
        assert!(now() > 0);
    }
}
