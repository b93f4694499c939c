//! The edge between protobuf and the domain: parsing requests into commands (every check a
//! client can fail, with a message that names it), and refusals and errors into statuses.
//! Machine-readable details travel in metadata: `fenced-error` (a stable code) and, for a
//! busy lock, `fenced-holder` and `fenced-token`; for a cluster member that does not lead,
//! `fenced-leader`; for a watch that starts before the oldest kept event,
//! `fenced-oldest-revision`.

use std::sync::Arc;
use std::time::Duration;

use fenced_proto::metadata::{
    COMPACTED_CODE, ERROR_CODE, HOLDER, HOLDER_TOKEN, LEADER, NOT_LEADER_CODE, OLDEST_REVISION,
};
use fenced_proto::v1 as pb;
use fenced_types::{FencingToken, LeaseId, LockName};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::cluster::leadership::LeadershipError;
use crate::config::Config;
use crate::error::Error;
use crate::event_log::{Compacted, RevisedEvent};
use crate::table::{Acquire, EventKind, Grant, LeaseChoice, LockView, Refusal};

/// Parses an Acquire request; returns the command and how long to wait.
pub fn acquire(
    config: &Config,
    request: pb::AcquireRequest,
) -> Result<(Acquire, Duration), Status> {
    let lock = lock_name(config, "lock", request.lock)?;
    let holder = holder_name(config, request.holder)?;
    let wait = Duration::from_millis(request.wait_ms);
    if wait > config.max_wait {
        return Err(invalid(format!(
            "wait_ms {} is over the limit of {} ms",
            request.wait_ms,
            config.max_wait.as_millis()
        )));
    }
    let lock_delay = Duration::from_millis(request.lock_delay_ms);
    if lock_delay > config.max_lock_delay {
        return Err(invalid(format!(
            "lock_delay_ms {} is over the limit of {} ms",
            request.lock_delay_ms,
            config.max_lock_delay.as_millis()
        )));
    }
    let lease = match (request.lease_id.is_empty(), request.new_lease_id.is_empty()) {
        (true, true) => LeaseChoice::New(LeaseId::random()),
        (true, false) => LeaseChoice::New(
            request
                .new_lease_id
                .parse()
                .map_err(|e| invalid(format!("new_lease_id: {e}")))?,
        ),
        (false, true) => LeaseChoice::Join(lease_id(&request.lease_id)?),
        (false, false) => {
            return Err(invalid(
                "set lease_id (join a lease) or new_lease_id (create one), not both".to_string(),
            ))
        }
    };
    let command = Acquire {
        lock,
        holder,
        ttl: Duration::from_millis(request.ttl_ms),
        lock_delay,
        lease,
        wait: !wait.is_zero(),
        origin: None,
    };
    Ok((command, wait))
}

/// Parses a lock name field.
pub fn lock_name(config: &Config, field: &str, name: String) -> Result<LockName, Status> {
    LockName::with_max_len(name, config.max_name_bytes)
        .map_err(|e| invalid(format!("{field}: {e}")))
}

/// Parses an optional lock name field (empty means none).
pub fn optional_lock_name(
    config: &Config,
    field: &str,
    name: String,
) -> Result<Option<LockName>, Status> {
    if name.is_empty() {
        Ok(None)
    } else {
        lock_name(config, field, name).map(Some)
    }
}

/// Checks a name prefix (for List and Watch): like a lock name but may be empty.
pub fn prefix(config: &Config, prefix: String) -> Result<String, Status> {
    if prefix.is_empty() {
        return Ok(prefix);
    }
    lock_name(config, "prefix", prefix).map(|name| name.as_str().to_string())
}

/// Parses a lease id field.
pub fn lease_id(text: &str) -> Result<LeaseId, Status> {
    if text.is_empty() {
        return Err(invalid("lease_id is empty".to_string()));
    }
    text.parse().map_err(|e| invalid(format!("lease_id: {e}")))
}

fn holder_name(config: &Config, holder: String) -> Result<Arc<str>, Status> {
    if holder.len() > config.max_holder_bytes {
        return Err(invalid(format!(
            "holder is {} bytes long: the limit is {}",
            holder.len(),
            config.max_holder_bytes
        )));
    }
    if let Some((at, ch)) = holder.char_indices().find(|(_, ch)| ch.is_control()) {
        return Err(invalid(format!(
            "holder contains control character {ch:?} at byte {at}"
        )));
    }
    Ok(holder.into())
}

/// Parses a List cursor: empty for the first page, else the `next_cursor` of an earlier
/// page with the same prefix, which is the name of the last lock entry that page examined.
pub fn list_cursor(
    config: &Config,
    prefix: &str,
    cursor: String,
) -> Result<Option<LockName>, Status> {
    if cursor.is_empty() {
        return Ok(None);
    }
    let after = lock_name(config, "cursor", cursor)?;
    if !after.as_str().starts_with(prefix) {
        return Err(invalid(format!(
            "cursor {:?} is not under the prefix {prefix:?}: pass back the next_cursor of a \
             listing with the same prefix",
            after.as_str()
        )));
    }
    Ok(Some(after))
}

/// A request refused because a server-wide capacity limit is reached.
pub fn exhausted(message: String) -> Status {
    let mut status = Status::resource_exhausted(message);
    insert(&mut status, ERROR_CODE, "exhausted");
    status
}

/// A request refused as malformed (counted in the refusal metrics).
pub fn invalid(message: String) -> Status {
    crate::telemetry::telemetry().refused_invalid();
    let mut status = Status::invalid_argument(message);
    insert(&mut status, ERROR_CODE, "invalid-argument");
    status
}

/// The reply to a grant.
pub fn acquire_response(grant: &Grant) -> pb::AcquireResponse {
    pb::AcquireResponse {
        lease_id: grant.lease.to_string(),
        token: grant.token.get(),
        ttl_ms: millis(grant.ttl),
        // Filled in by the service when it has a signing key (`crate::signing`).
        sequencer: Vec::new(),
    }
}

/// A lock's public description.
pub fn lock_info(view: LockView) -> pb::LockInfo {
    let (holder, token) = match view.holder {
        Some((holder, token)) => (holder.to_string(), token.get()),
        None => (String::new(), 0),
    };
    pb::LockInfo {
        lock: view.lock.to_string(),
        held: token != 0,
        holder,
        token,
        remaining_ms: millis(view.remaining),
        waiters: u32::try_from(view.waiters).unwrap_or(u32::MAX),
    }
}

/// A watch event on the wire.
pub fn watch_event(revised: &RevisedEvent) -> pb::WatchEvent {
    let event = &revised.event;
    let kind = match event.kind {
        EventKind::Acquired => pb::watch_event::Kind::Acquired,
        EventKind::Released => pb::watch_event::Kind::Released,
        EventKind::Expired => pb::watch_event::Kind::Expired,
    };
    pb::WatchEvent {
        kind: kind.into(),
        lock: event.lock.to_string(),
        holder: event.holder.to_string(),
        token: event.token.get(),
        revision: revised.revision,
    }
}

/// A watch stream's progress mark: every event up to `revision` was sent.
pub fn watch_progress(revision: u64) -> pb::WatchEvent {
    pb::WatchEvent {
        kind: pb::watch_event::Kind::Progress.into(),
        revision,
        ..pb::WatchEvent::default()
    }
}

/// The refusal of a watch that starts before the oldest kept event: OUT_OF_RANGE,
/// `fenced-error: compacted`, and the oldest revision in `fenced-oldest-revision`.
pub fn compacted(compacted: &Compacted) -> Status {
    let mut status = Status::out_of_range(compacted.to_string());
    insert(&mut status, ERROR_CODE, COMPACTED_CODE);
    insert(&mut status, OLDEST_REVISION, &compacted.oldest.to_string());
    status
}

/// The answer to a successful renewal.
pub fn renewed(lease_id: String, ttl: Duration) -> pb::RenewResponse {
    pb::RenewResponse {
        lease_id,
        ttl_ms: millis(ttl),
        outcome: pb::renew_response::Outcome::Renewed.into(),
        message: String::new(),
    }
}

/// The KeepAlive outcome of a refused renewal.
pub fn renew_outcome(refusal: &Refusal) -> pb::renew_response::Outcome {
    match refusal {
        Refusal::LeaseExpired { .. } => pb::renew_response::Outcome::Expired,
        Refusal::LeaseReleased { .. } => pb::renew_response::Outcome::Released,
        _ => pb::renew_response::Outcome::Unknown,
    }
}

/// Milliseconds of a duration, for the wire.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        crate::telemetry::telemetry().refused(&refusal);
        let (code, key) = match &refusal {
            Refusal::TtlOutOfBounds { .. } => (Code::InvalidArgument, "invalid-argument"),
            Refusal::Busy { .. } => (Code::Aborted, "busy"),
            Refusal::Queued { .. } => (Code::Aborted, "queued"),
            Refusal::LockDelay { .. } => (Code::Aborted, "lock-delay"),
            Refusal::WaitTimedOut { .. } => (Code::Aborted, "wait-timed-out"),
            Refusal::LeaseIdTaken { .. } => (Code::Aborted, "lease-id-taken"),
            Refusal::UnknownLease { .. } => (Code::NotFound, "unknown-lease"),
            Refusal::LeaseExpired { .. } => (Code::FailedPrecondition, "lease-expired"),
            Refusal::LeaseReleased { .. } => (Code::FailedPrecondition, "lease-released"),
            Refusal::NotHolder { .. } => (Code::FailedPrecondition, "not-holder"),
            Refusal::Exhausted { .. } => (Code::ResourceExhausted, "exhausted"),
            Refusal::LeaseFull { .. } => (Code::ResourceExhausted, "lease-full"),
            Refusal::IdentityLeases { .. } => (Code::ResourceExhausted, "identity-leases"),
            Refusal::TokensExhausted => (Code::ResourceExhausted, "tokens-exhausted"),
            Refusal::NotHeld { .. } => (Code::FailedPrecondition, "not-held"),
        };
        let mut status = Status::new(code, refusal.to_string());
        insert(&mut status, ERROR_CODE, key);
        let holder = match &refusal {
            Refusal::Busy { holder, token, .. } => Some((holder.clone(), token.get())),
            Refusal::WaitTimedOut { holder, token, .. } if *token != 0 => {
                Some((holder.clone(), *token))
            }
            _ => None,
        };
        if let Some((holder, token)) = holder {
            insert(&mut status, HOLDER, &holder);
            insert(&mut status, HOLDER_TOKEN, &token.to_string());
        }
        status
    }
}

/// The refusal of a cluster member that does not lead (see [`crate::serving`]):
/// UNAVAILABLE, `fenced-error: not-leader`, and the leader's id and client address when
/// known, in the message and (the address) in `fenced-leader`.
pub fn not_leader(leader: Option<(u64, &str)>) -> Status {
    let message = match leader {
        Some((id, addr)) => format!("not the leader; the leader is node {id} at {addr}"),
        None => "not the leader, and no leader is known (an election may be running)".to_string(),
    };
    let mut status = Status::unavailable(message);
    insert(&mut status, ERROR_CODE, NOT_LEADER_CODE);
    if let Some((_, addr)) = leader {
        insert(&mut status, LEADER, addr);
    }
    status
}

/// A leadership check that neither confirmed nor denied this member's leadership (no
/// quorum answered in time, too many waiting, the check stopped): UNAVAILABLE, so the
/// client tries again, here or elsewhere.
pub fn leadership_unconfirmed(error: &LeadershipError) -> Status {
    let mut status = Status::unavailable(format!("leadership not confirmed: {error}"));
    insert(&mut status, ERROR_CODE, NOT_LEADER_CODE);
    status
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        if let Error::LeadershipLost = error {
            let mut status = Status::unavailable(error.to_string());
            insert(&mut status, ERROR_CODE, NOT_LEADER_CODE);
            return status;
        }
        tracing::error!(%error, "request failed on a server error");
        let mut status = Status::unavailable(format!("the server is failing: {error}"));
        insert(&mut status, ERROR_CODE, "server-failing");
        status
    }
}

/// Adds ASCII metadata, silently skipping values that are not valid metadata (a holder
/// name with non-ASCII text still appears in the message).
fn insert(status: &mut Status, key: &'static str, value: &str) {
    if let Ok(value) = MetadataValue::try_from(value) {
        status.metadata_mut().insert(key, value);
    }
}

/// A token from the wire, where 0 means "none".
pub fn optional_token(value: u64) -> Option<FencingToken> {
    FencingToken::new(value).ok()
}
