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
//! peer's address and the reason; a failed TLS handshake (a client certificate from another
//! CA) is recorded with the peer's address.
//!
//! Lines go through a bounded queue ([`QUEUE`]) to one writer thread, so no request waits
//! for the disk; records dropped when it is full are counted in the next line. The file
//! rotates by size, [`KEEP`] old files kept (`fenced_types::service::audit_log`, which
//! `fenced-kv --audit-log` writes with too).
//!
//! One audit log per process ([`install`]); without one, recording does nothing.

use std::path::Path;
use std::sync::OnceLock;

use fenced_types::service::audit_log::AuditLog;
pub use fenced_types::service::audit_log::{AuditError, KEEP, QUEUE};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::event_log::{EventLog, RevisedEvent};
use crate::table::EventKind;

/// The process's audit log, once installed.
static AUDIT: OnceLock<AuditLog> = OnceLock::new();

/// Opens (appends to) `path` and starts the writer thread; from then on, every record is
/// written there. Rotates at `max_bytes`. A second call changes nothing.
pub fn install(path: &Path, max_bytes: u64) -> Result<(), AuditError> {
    if AUDIT.get().is_some() {
        return Ok(());
    }
    let _ = AUDIT.set(AuditLog::open(path, max_bytes)?);
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

/// Records a connection whose TLS handshake failed (a client certificate from another CA,
/// a plaintext client on a TLS port): from where, and why.
pub fn tls_refused(peer: std::net::SocketAddr, why: &str) {
    record(json!({
        "kind": "tls-refused",
        "peer": peer.to_string(),
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

/// Queues `record` for the audit log, if one is installed.
fn record(record: Value) {
    if let Some(audit) = AUDIT.get() {
        audit.record(record);
    }
}
