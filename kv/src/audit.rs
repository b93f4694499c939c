//! [`Audit`]: fenced-kv's audit log (`--audit-log FILE`): one JSON line for every call
//! refused for want of authentication (`"kind":"unauthenticated"`, with the peer's address)
//! and every write the store refused (`"kind":"write-refused"`: a stale token, a missing,
//! forged, tampered or other lock's sequencer, a bad request), with the operation, the
//! resource, the caller's identity and address, the gRPC code, the `fenced-error` reason,
//! the sequencer refusal's kind, the presented and current tokens of a stale one, and the
//! refusal's message; each with `time_ms`. Accepted writes are not logged
//! (the store's marks and the lock server's audit log say who held which token). Written
//! through `fenced_types::service::audit_log`: a bounded queue, a writer thread, rotation by
//! size.

use std::net::SocketAddr;
use std::sync::Arc;

use fenced_types::service::audit_log::AuditLog;
use fenced_types::service::bearer::Identity;
use serde_json::json;

/// The audit log, if one is configured. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Audit(Option<Arc<AuditLog>>);

impl Audit {
    /// Records to `log` (`None`: records nothing).
    pub fn new(log: Option<AuditLog>) -> Audit {
        Audit(log.map(Arc::new))
    }

    /// Whether records are kept.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// A call refused for want of authentication.
    pub fn unauthenticated(&self, peer: Option<SocketAddr>, why: &str) {
        if let Some(log) = &self.0 {
            log.record(json!({
                "kind": "unauthenticated",
                "peer": peer.map(|peer| peer.to_string()),
                "result": why,
            }));
        }
    }

    /// A write (`op` on `resource`) the store refused with `status`.
    pub fn write_refused(&self, op: &str, resource: &str, caller: &Caller, status: &tonic::Status) {
        let Some(log) = &self.0 else {
            return;
        };
        let metadata = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
        };
        use fenced_proto::metadata::{
            ERROR_CODE, FENCING_TOKEN_CURRENT, FENCING_TOKEN_PRESENTED, SEQUENCER_REFUSED,
        };
        log.record(json!({
            "kind": "write-refused",
            "op": op,
            "resource": resource,
            "identity": caller.identity.as_ref().map(|identity| &*identity.0),
            "peer": caller.peer.map(|peer| peer.to_string()),
            "code": format!("{:?}", status.code()),
            "reason": metadata(ERROR_CODE),
            "sequencer_refused": metadata(SEQUENCER_REFUSED),
            "token": metadata(FENCING_TOKEN_PRESENTED),
            "current": metadata(FENCING_TOKEN_CURRENT),
            "result": status.message(),
        }));
    }
}

/// Who made a request: its authenticated identity (with authentication on) and address.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The identity the bearer token or client certificate named.
    pub identity: Option<Identity>,
    /// The connection's peer address.
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// The caller of `request`.
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        Caller {
            identity: request.extensions().get::<Identity>().cloned(),
            peer: request.remote_addr(),
        }
    }
}
