//! The audit log (`fenced --audit-log FILE`): one JSON object per line for every grant,
//! release and expiry, every revocation, and every call refused for want of
//! authentication or permission, appended to FILE and rotated by size.
//!
//! Grants, releases and expiries come from the node's event log ([`crate::event_log`]), so
//! each line is written after the change it records is durable (in a cluster, committed
//! and applied); they carry the holder (with authentication on, `IDENTITY/LABEL`), the
//! token, the revision, the lease id's non-secret prefix, and who created that lease: its
//! identity and the address its creating call came from (recorded with the lease, so a
//! release or an expiry long after names them too, also after a restart or a failover).
//! Refusals and revocations come from where they are decided and carry the identity, the
//! peer's address and the reason.
//!
//! Lines go through a bounded queue ([`QUEUE`]) to one writer thread, so no request waits
//! for the disk; if the writer falls that far behind, records are dropped and counted, and
//! the next line written says how many (`"kind":"dropped"`): the log never grows memory
//! without bound and never hides a gap. When FILE passes `max_bytes` it is renamed to
//! FILE.1 (FILE.1 to FILE.2, and so on, [`KEEP`] files kept) and a new FILE begins.
//!
//! One audit log per process ([`install`]); without one, recording does nothing.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::event_log::{EventLog, RevisedEvent};
use crate::table::EventKind;

/// Records waiting for the writer, at most.
pub const QUEUE: usize = 65_536;
/// Rotated files kept besides the current one.
pub const KEEP: usize = 5;

/// The process's audit log, once installed.
static AUDIT: OnceLock<Audit> = OnceLock::new();

/// A running audit log.
struct Audit {
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

/// Opens (appends to) `path` and starts the writer thread; from then on, every record is
/// written there. Rotates at `max_bytes`. A second call changes nothing.
pub fn install(path: &Path, max_bytes: u64) -> Result<(), AuditError> {
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
        .name("fenced-audit".into())
        .spawn(move || writer.run(&receiver))
        .map_err(|source| AuditError {
            path: path.to_path_buf(),
            source,
        })?;
    let _ = AUDIT.set(Audit { lines, dropped });
    Ok(())
}

/// Whether an audit log is installed.
pub fn is_on() -> bool {
    AUDIT.get().is_some()
}

/// Records a call refused for want of authentication: who (the peer's address, if known)
/// and why.
pub fn unauthenticated(peer: Option<std::net::SocketAddr>, why: &str) {
    record(json!({
        "kind": "unauthenticated",
        "peer": peer.map(|peer| peer.to_string()),
        "result": why,
    }));
}

/// Records a call refused by the policy: who (and from where), which permission, on what.
pub fn permission_denied(
    identity: Option<&str>,
    peer: Option<std::net::SocketAddr>,
    permission: &str,
    what: &str,
) {
    record(json!({
        "kind": "permission-denied",
        "identity": identity,
        "peer": peer.map(|peer| peer.to_string()),
        "permission": permission,
        "lock": what,
        "result": "refused",
    }));
}

/// Records an administrator's revocation, once durable.
pub fn revoked(
    identity: Option<&str>,
    peer: Option<std::net::SocketAddr>,
    lock: &str,
    token: u64,
    lease_prefix: &str,
    whole_lease: bool,
) {
    record(json!({
        "kind": if whole_lease { "revoke-lease" } else { "force-release" },
        "identity": identity,
        "peer": peer.map(|peer| peer.to_string()),
        "lock": lock,
        "token": token,
        "lease": lease_prefix,
        "result": "done",
    }));
}

/// Writes every event `event_log` publishes from now on (each durable already) to the
/// audit log, until the log stops publishing. Does nothing without an audit log.
pub fn follow(event_log: &EventLog) {
    if !is_on() {
        return;
    }
    let mut live = event_log.live();
    tokio::spawn(async move {
        loop {
            match live.recv().await {
                Ok(event) => record(event_record(&event)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    record(json!({"kind": "dropped", "records": missed, "what": "lock events"}));
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// A lock event as an audit record.
fn event_record(revised: &RevisedEvent) -> Value {
    let event = &revised.event;
    let kind = match event.kind {
        EventKind::Acquired => "grant",
        EventKind::Released => "release",
        EventKind::Expired => "expiry",
    };
    let origin = event.origin.as_deref();
    json!({
        "kind": kind,
        "lock": event.lock.as_str(),
        "holder": &*event.holder,
        "token": event.token.get(),
        "revision": revised.revision,
        "lease": event.lease.map(|lease| lease.short()),
        "identity": origin.and_then(|origin| origin.identity.as_deref()),
        "peer": origin.and_then(|origin| origin.peer).map(|peer| peer.to_string()),
        "result": "done",
    })
}

/// Queues `record` for the writer, with the time; counts it as dropped if the queue is
/// full.
fn record(mut record: Value) {
    let Some(audit) = AUDIT.get() else {
        return;
    };
    if let Some(fields) = record.as_object_mut() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        fields.insert(
            "time_ms".into(),
            json!(u64::try_from(now).unwrap_or(u64::MAX)),
        );
    }
    match audit.lines.try_send(record) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            audit.dropped.fetch_add(1, Ordering::Relaxed);
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
#[path = "audit_tests.rs"]
mod tests;
