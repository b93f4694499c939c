//! [`AuditLog`] (feature `audit`): an append-only file of JSON lines, one per record,
//! written by its own thread and rotated by size; what `fenced --audit-log` and `fenced-kv
//! --audit-log` write their records to.
//!
//! Records go through a bounded queue ([`QUEUE`]) to one writer thread, so no request waits
//! for the disk; if the writer falls that far behind, records are dropped and counted, and
//! the next line written says how many (`"kind":"dropped"`): the log never grows memory
//! without bound and never hides a gap. When FILE passes `max_bytes` it is renamed to
//! FILE.1 (FILE.1 to FILE.2, and so on, [`KEEP`] files kept) and a new FILE begins. Each
//! record gets the time it was queued (`time_ms`, milliseconds since the Unix epoch).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Records waiting for the writer, at most.
pub const QUEUE: usize = 65_536;
/// Rotated files kept besides the current one.
pub const KEEP: usize = 5;

/// A running audit log: records queued here are appended to its file.
#[derive(Debug)]
pub struct AuditLog {
    /// To the writer thread.
    lines: SyncSender<Value>,
    /// Records dropped because the queue was full, not yet reported.
    dropped: Arc<AtomicU64>,
}

/// Why the audit log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {}: {source}", path.display())]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// What the operating system said.
    #[source]
    pub source: std::io::Error,
}

impl AuditLog {
    /// Opens (appends to) `path` and starts the writer thread, rotating at `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64) -> Result<AuditLog, AuditError> {
        let file = open(path).map_err(|source| AuditError {
            path: path.to_path_buf(),
            source,
        })?;
        let (lines, receiver) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            path: path.to_path_buf(),
            file,
            max_bytes,
            dropped: dropped.clone(),
        };
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer.run(&receiver))
            .map_err(|source| AuditError {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(AuditLog { lines, dropped })
    }

    /// Queues `record` (a JSON object) with the time; counts it as dropped if the queue is
    /// full.
    pub fn record(&self, mut record: Value) {
        if let Some(fields) = record.as_object_mut() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis());
            fields.insert(
                "time_ms".into(),
                json!(u64::try_from(now).unwrap_or(u64::MAX)),
            );
        }
        match self.lines.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    /// Writes lines until every sender is gone.
    fn run(mut self, lines: &Receiver<Value>) {
        while let Ok(line) = lines.recv() {
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                self.write(&json!({"kind": "dropped", "records": dropped, "what": "audit records (queue full)"}));
            }
            self.write(&line);
        }
    }

    /// Appends one line, rotating first if the file is full; an I/O error is logged (the
    /// audit log must not stop the server) and the line counted as dropped.
    fn write(&mut self, line: &Value) {
        let full = self
            .file
            .metadata()
            .is_ok_and(|meta| meta.len() >= self.max_bytes);
        if full {
            if let Err(error) = self.rotate() {
                tracing::error!(%error, path = %self.path.display(), "cannot rotate the audit log");
            }
        }
        let mut text = line.to_string();
        text.push('\n');
        if let Err(error) = self.file.write_all(text.as_bytes()) {
            tracing::error!(%error, path = %self.path.display(), "cannot write the audit log");
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// FILE.(KEEP-1) to FILE.KEEP, ..., FILE to FILE.1, and a new FILE.
    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        for n in (1..KEEP).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))?;
        self.file = open(&self.path)?;
        Ok(())
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
#[path = "audit_log_tests.rs"]
mod tests;
