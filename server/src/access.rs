//! [`Caller`]: who makes a request and what the policy lets them do; the handlers ask it
//! before they change or show anything, and name holders with it.
//!
//! Without authentication a caller has no identity and may do everything. With
//! authentication and no policy file, every authenticated identity may do everything
//! (the policy file is what restricts). With a policy file, whatever it does not grant is
//! refused with `PERMISSION_DENIED` and `fenced-error: permission-denied`, naming the
//! identity, the permission and the lock name ([`crate::policy`]).
//!
//! With authentication on, the holder a lock shows is the caller's identity, then `/` and
//! the holder label the client sent, if any (`alice/worker-1`, or `alice`): whatever a
//! client sends, the name shown begins with who it is.

use std::net::SocketAddr;
use std::sync::Arc;

use fenced_proto::metadata::ERROR_CODE;
use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::auth::Identity;
use crate::grpc_incoming::ConnectionInfo;
use crate::policy::{Permission, Policy};
use crate::table::LeaseOrigin;

/// The [`ERROR_CODE`] of a call the policy refuses.
pub const PERMISSION_DENIED_CODE: &str = "permission-denied";

/// Who makes a request, and the policy it is held to. Cheap to clone (two `Arc`s and an
/// address).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The authenticated identity; `None` when authentication is off.
    identity: Option<Identity>,
    /// The policy; `None` lets every caller do everything.
    policy: Option<Arc<Policy>>,
    /// The address the request's connection comes from, if known.
    peer: Option<SocketAddr>,
}

impl Caller {
    /// A caller with `identity` (from the request's extensions), held to `policy`.
    pub fn new(identity: Option<Identity>, policy: Option<Arc<Policy>>) -> Caller {
        Caller {
            identity,
            policy,
            peer: None,
        }
    }

    /// A caller of a request `extensions` carry the identity and connection of, held to
    /// `policy`.
    pub fn from_extensions(extensions: &tonic::Extensions, policy: Option<&Arc<Policy>>) -> Caller {
        let peer = extensions
            .get::<ConnectionInfo>()
            .and_then(|info| info.tcp.remote_addr);
        Caller::new(extensions.get::<Identity>().cloned(), policy.cloned()).with_peer(peer)
    }

    /// The same caller, calling from `peer`.
    pub fn with_peer(mut self, peer: Option<SocketAddr>) -> Caller {
        self.peer = peer;
        self
    }

    /// The address the caller's connection comes from, if known.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Who creates a lease on this caller's behalf, to record with it: the identity (what
    /// the per-identity lease limit counts) and the peer (for the audit log). `None` when
    /// there is neither authentication nor an audit log, so the grant path records nothing
    /// it has no use for.
    pub fn lease_origin(&self) -> Option<Arc<LeaseOrigin>> {
        if self.identity.is_none() && !crate::audit::is_on() {
            return None;
        }
        Some(Arc::new(LeaseOrigin {
            identity: self.identity_shared().cloned(),
            peer: self.peer,
        }))
    }

    /// The caller's identity, if authentication is on.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_ref().map(|identity| &*identity.0)
    }

    /// The caller's identity, shared, if authentication is on.
    pub fn identity_shared(&self) -> Option<&Arc<str>> {
        self.identity.as_ref().map(|identity| &identity.0)
    }

    /// Whether a policy restricts this caller.
    pub fn is_restricted(&self) -> bool {
        self.policy.is_some()
    }

    /// Whether the caller has `permission` on lock `name`.
    pub fn may(&self, permission: Permission, name: &str) -> bool {
        match (&self.policy, &self.identity) {
            (None, _) => true,
            // A policy without an identity cannot happen (the policy needs authentication);
            // if it did, nothing is granted.
            (Some(_), None) => false,
            (Some(policy), Some(identity)) => policy.allows(&identity.0, permission, name),
        }
    }

    /// `Ok` if the caller has `permission` on lock `name`, else the refusal.
    pub fn check(&self, permission: Permission, name: &str) -> Result<(), Status> {
        if self.may(permission, name) {
            return Ok(());
        }
        Err(self.denied(permission, &format!("lock {name:?}")))
    }

    /// `Ok` if the caller has `permission` on some lock under `prefix`, else the refusal.
    pub fn check_some_under(&self, permission: Permission, prefix: &str) -> Result<(), Status> {
        let allowed = match (&self.policy, &self.identity) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(policy), Some(identity)) => {
                policy.allows_some_under(&identity.0, permission, prefix)
            }
        };
        if allowed {
            return Ok(());
        }
        Err(self.denied(permission, &format!("any lock under prefix {prefix:?}")))
    }

    /// `Ok` if the caller has `permission` on every lock (a rule with pattern `*`), as
    /// the cluster's administration needs; else the refusal.
    pub fn check_all(&self, permission: Permission) -> Result<(), Status> {
        let allowed = match (&self.policy, &self.identity) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(policy), Some(identity)) => policy.allows_all(&identity.0, permission),
        };
        if allowed {
            return Ok(());
        }
        Err(self.denied(permission, "every lock (`*`)"))
    }

    /// The holder name a grant records: the identity, `/` and `label` when authentication
    /// is on (the identity alone for an empty label), else `label` as sent. `max_bytes` is
    /// the longest holder name the server keeps; a label that would make the name longer is
    /// refused, naming the room left.
    pub fn holder(&self, label: Arc<str>, max_bytes: usize) -> Result<Arc<str>, Status> {
        let Some(identity) = &self.identity else {
            return Ok(label);
        };
        let identity = &*identity.0;
        let name_bytes = if label.is_empty() {
            identity.len()
        } else {
            identity.len() + 1 + label.len()
        };
        if name_bytes > max_bytes {
            let room = max_bytes.saturating_sub(identity.len() + 1);
            return Err(crate::convert::invalid(format!(
                "holder {label:?} is too long: the holder shown is `{identity}/LABEL`, at most \
                 {max_bytes} bytes, which leaves {room} bytes for the label"
            )));
        }
        if label.is_empty() {
            return Ok(Arc::from(identity));
        }
        Ok(Arc::from(format!("{identity}/{label}")))
    }

    /// `PERMISSION_DENIED` for `permission` on `what`.
    fn denied(&self, permission: Permission, what: &str) -> Status {
        crate::telemetry::telemetry().refused_permission();
        crate::audit::permission_denied(self.identity(), self.peer, &permission.to_string(), what);
        let who = self.identity().unwrap_or("an unauthenticated caller");
        let mut status = Status::permission_denied(format!(
            "{who} may not {permission} {what}: the policy file (--policy) grants no such permission"
        ));
        status.metadata_mut().insert(
            ERROR_CODE,
            MetadataValue::from_static(PERMISSION_DENIED_CODE),
        );
        status
    }
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
