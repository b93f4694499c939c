//! [`LeaseOrigin`]: who created a lease and from where. The table keeps it with the lease
//! (and the store with the lease's record), so the audit log can say who held, released or
//! lost each lock, and so the leases of one identity can be counted against its limit
//! ([`super::Limits::max_leases_per_identity`]).

use std::net::SocketAddr;
use std::sync::Arc;

/// Who created a lease: the authenticated identity (`None` with authentication off) and
/// the address the creating call came from (`None` when not recorded). Shared by the lease
/// and its events, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseOrigin {
    /// The creator's authenticated identity.
    pub identity: Option<Arc<str>>,
    /// The address of the connection the creating call came from.
    pub peer: Option<SocketAddr>,
}

impl LeaseOrigin {
    /// The identity a lease of this origin counts against, if any.
    pub fn identity(origin: Option<&Arc<LeaseOrigin>>) -> Option<&Arc<str>> {
        origin.and_then(|origin| origin.identity.as_ref())
    }
}
