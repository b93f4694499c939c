//! [`Telemetry`]: the server's Prometheus metrics, through the `metrics` crate, and the
//! recorder the admin listener renders them from.
//!
//! Every name starts with `fenced_` and carries its unit (`_total`, `_seconds`). No metric
//! has a per-lock label: lock names are unbounded, and a label per lock would be a time
//! series per lock. The only labels are `code`/`reason` of a refusal and `listener` of a
//! connection, each a short fixed set.
//!
//! What the request path pays: the counters it moves are handles registered once
//! ([`telemetry()`]), so counting is one atomic add, with no lookup or allocation; without
//! a recorder (no `--admin-listen`) the handles do nothing. The gauges of the lock table
//! (leases, held locks, waiters) and of the watchers are read when `/metrics` is scraped,
//! not kept up to date on every command. Grants, releases, expiries and handoff latency
//! are counted by the committer thread as it dispatches durable batches, off the request
//! path.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::table::{EventKind, Refusal};

/// Grants of a lock (a new token), immediate or to a queued acquirer.
pub const GRANTS: &str = "fenced_grants_total";
/// Locks released by their holder.
pub const RELEASES: &str = "fenced_releases_total";
/// Locks freed because their holder's lease expired.
pub const EXPIRIES: &str = "fenced_expiries_total";
/// Leases renewed by Renew or KeepAlive (in a `Session` too).
pub const RENEWALS: &str = "fenced_renewals_total";
/// Requests refused, by gRPC `code` and fenced `reason` (the `fenced-error` metadata).
pub const REFUSALS: &str = "fenced_refusals_total";
/// Live leases.
pub const LEASES: &str = "fenced_leases";
/// Held locks.
pub const LOCKS_HELD: &str = "fenced_locks_held";
/// Queued acquirers.
pub const WAITERS: &str = "fenced_waiters";
/// From the command that freed a lock (a release, or the tick that expired its holder)
/// to the durable grant's delivery to the next holder, who was waiting in its queue.
pub const HANDOFF_LATENCY: &str = "fenced_handoff_latency_seconds";
/// One journal append and its `fdatasync` (one group commit).
pub const JOURNAL_SYNC: &str = "fenced_journal_sync_seconds";
/// Writes in one group commit.
pub const JOURNAL_BATCH: &str = "fenced_journal_batch_writes";
/// One checkpoint: the journal's writes into sled, its flush and sync, the old journal
/// files removed.
pub const CHECKPOINT: &str = "fenced_checkpoint_duration_seconds";
/// Open connections, by `listener` (`grpc`, `framed`, `admin`).
pub const CONNECTIONS: &str = "fenced_connections_open";
/// Live `Session` streams (gRPC and framed).
pub const SESSIONS: &str = "fenced_sessions";
/// Open `Watch` streams, the status page's event streams included.
pub const WATCHERS: &str = "fenced_watchers";

/// Histogram buckets of latencies, in seconds: 50 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Histogram buckets of a group commit's size, in writes.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Each refusal's gRPC code and fenced reason (as in the `fenced-error` metadata), in the
/// order of [`refusal_index`].
const REFUSAL_LABELS: [(&str, &str); 16] = [
    ("INVALID_ARGUMENT", "invalid-argument"),
    ("ABORTED", "busy"),
    ("ABORTED", "queued"),
    ("ABORTED", "lock-delay"),
    ("ABORTED", "wait-timed-out"),
    ("ABORTED", "lease-id-taken"),
    ("NOT_FOUND", "unknown-lease"),
    ("FAILED_PRECONDITION", "lease-expired"),
    ("FAILED_PRECONDITION", "lease-released"),
    ("FAILED_PRECONDITION", "not-holder"),
    ("RESOURCE_EXHAUSTED", "exhausted"),
    ("RESOURCE_EXHAUSTED", "lease-full"),
    ("RESOURCE_EXHAUSTED", "tokens-exhausted"),
    ("FAILED_PRECONDITION", "not-held"),
    ("PERMISSION_DENIED", "permission-denied"),
    ("RESOURCE_EXHAUSTED", "identity-leases"),
];

/// The position of `INVALID_ARGUMENT`/`invalid-argument` in [`REFUSAL_LABELS`].
const INVALID_ARGUMENT: usize = 0;
/// The position of `RESOURCE_EXHAUSTED`/`exhausted` in [`REFUSAL_LABELS`].
const EXHAUSTED: usize = 10;
/// The position of `PERMISSION_DENIED`/`permission-denied` in [`REFUSAL_LABELS`].
const PERMISSION_DENIED: usize = 14;

/// The position of a refusal's labels in [`REFUSAL_LABELS`].
fn refusal_index(refusal: &Refusal) -> usize {
    match refusal {
        Refusal::TtlOutOfBounds { .. } => INVALID_ARGUMENT,
        Refusal::Busy { .. } => 1,
        Refusal::Queued { .. } => 2,
        Refusal::LockDelay { .. } => 3,
        Refusal::WaitTimedOut { .. } => 4,
        Refusal::LeaseIdTaken { .. } => 5,
        Refusal::UnknownLease { .. } => 6,
        Refusal::LeaseExpired { .. } => 7,
        Refusal::LeaseReleased { .. } => 8,
        Refusal::NotHolder { .. } => 9,
        Refusal::Exhausted { .. } => EXHAUSTED,
        Refusal::LeaseFull { .. } => 11,
        Refusal::TokensExhausted => 12,
        Refusal::NotHeld { .. } => 13,
        Refusal::IdentityLeases { .. } => 15,
    }
}

/// The handles the server moves as it works, registered once.
pub struct Telemetry {
    /// [`GRANTS`].
    pub grants: Counter,
    /// [`RELEASES`].
    pub releases: Counter,
    /// [`EXPIRIES`].
    pub expiries: Counter,
    /// [`RENEWALS`].
    pub renewals: Counter,
    /// [`REFUSALS`], one handle per refusal kind.
    refusals: [Counter; REFUSAL_LABELS.len()],
    /// [`HANDOFF_LATENCY`].
    pub handoff_latency: Histogram,
    /// [`JOURNAL_SYNC`].
    pub journal_sync: Histogram,
    /// [`JOURNAL_BATCH`].
    pub journal_batch: Histogram,
    /// [`CHECKPOINT`].
    pub checkpoint: Histogram,
    /// [`SESSIONS`].
    pub sessions: Gauge,
}

impl Telemetry {
    fn register() -> Telemetry {
        Telemetry {
            grants: metrics::counter!(GRANTS),
            releases: metrics::counter!(RELEASES),
            expiries: metrics::counter!(EXPIRIES),
            renewals: metrics::counter!(RENEWALS),
            refusals: REFUSAL_LABELS.map(
                |(code, reason)| metrics::counter!(REFUSALS, "code" => code, "reason" => reason),
            ),
            handoff_latency: metrics::histogram!(HANDOFF_LATENCY),
            journal_sync: metrics::histogram!(JOURNAL_SYNC),
            journal_batch: metrics::histogram!(JOURNAL_BATCH),
            checkpoint: metrics::histogram!(CHECKPOINT),
            sessions: metrics::gauge!(SESSIONS),
        }
    }

    /// Counts one refused request.
    pub fn refused(&self, refusal: &Refusal) {
        self.refusals[refusal_index(refusal)].increment(1);
    }

    /// Counts one request refused as malformed before it reached the lock table (a bad
    /// name, lease id, duration or combination of fields).
    pub fn refused_invalid(&self) {
        self.refusals[INVALID_ARGUMENT].increment(1);
    }

    /// Counts one request refused by a server-wide cap outside the lock table (the
    /// watcher cap).
    pub fn refused_exhausted(&self) {
        self.refusals[EXHAUSTED].increment(1);
    }

    /// Counts one request the policy file refused ([`crate::access`]).
    pub fn refused_permission(&self) {
        self.refusals[PERMISSION_DENIED].increment(1);
    }

    /// Counts one durable lock event.
    pub fn event(&self, kind: EventKind) {
        match kind {
            EventKind::Acquired => self.grants.increment(1),
            EventKind::Released => self.releases.increment(1),
            EventKind::Expired => self.expiries.increment(1),
        }
    }
}

/// The server's handles, registered with whatever recorder is installed at their first
/// use: install the recorder first ([`install_recorder`]; `OpenServer::open` does, before
/// anything is counted). Handles registered with no recorder do nothing, for the life of
/// the process.
pub fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(Telemetry::register)
}

/// Installs the process's Prometheus recorder (once; later calls return the same handle)
/// and describes the metrics. Histograms get fixed buckets, so each is a bounded set of
/// counters however many observations it takes.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(JOURNAL_BATCH.into()), BATCH_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Drains the recorder's histograms into their buckets now and then, as the recorder needs
/// (its own HTTP listener would do this; ours is the admin listener).
pub async fn run_upkeep(handle: PrometheusHandle, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// The gauge of a listener's open connections; `listener` is the name the log uses.
pub fn connections_gauge(listener: &'static str) -> Gauge {
    let label = match listener {
        "gRPC" => "grpc",
        "framed session" => "framed",
        other => other,
    };
    metrics::gauge!(CONNECTIONS, "listener" => label)
}

/// Sets the gauges that are read only when scraped.
pub fn set_scraped_gauges(leases: usize, locks_held: usize, waiters: usize, watchers: usize) {
    // Counts far below 2^53: exact as f64.
    #[allow(clippy::cast_precision_loss)]
    let f = |n: usize| n as f64;
    metrics::gauge!(LEASES).set(f(leases));
    metrics::gauge!(LOCKS_HELD).set(f(locks_held));
    metrics::gauge!(WAITERS).set(f(waiters));
    metrics::gauge!(WATCHERS).set(f(watchers));
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(GRANTS, "Grants of a lock (each a new fencing token).");
    describe_counter!(RELEASES, "Locks released by their holder.");
    describe_counter!(
        EXPIRIES,
        "Locks freed because their holder's lease expired."
    );
    describe_counter!(RENEWALS, "Lease renewals.");
    describe_counter!(REFUSALS, "Requests refused, by gRPC code and reason.");
    describe_gauge!(LEASES, "Live leases.");
    describe_gauge!(LOCKS_HELD, "Held locks.");
    describe_gauge!(WAITERS, "Acquirers queued for a lock.");
    describe_histogram!(
        HANDOFF_LATENCY,
        Unit::Seconds,
        "From the release or expiry that freed a lock to its durable grant reaching the next, queued, holder."
    );
    describe_histogram!(
        JOURNAL_SYNC,
        Unit::Seconds,
        "One group commit: journal append and fdatasync."
    );
    describe_histogram!(JOURNAL_BATCH, Unit::Count, "Writes in one group commit.");
    describe_histogram!(
        CHECKPOINT,
        Unit::Seconds,
        "One checkpoint of the journal into sled."
    );
    describe_gauge!(CONNECTIONS, "Open connections, by listener.");
    describe_gauge!(SESSIONS, "Live Session streams.");
    describe_gauge!(
        WATCHERS,
        "Open Watch streams, status page event streams included."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use fenced_types::LockName;

    // checks: none (operations)
    #[test]
    fn every_refusal_has_the_labels_its_status_carries() {
        let lock = LockName::new("l").unwrap();
        let refusals = [
            Refusal::Busy {
                lock: lock.clone(),
                holder: "h".into(),
                token: fenced_types::FencingToken::FIRST,
            },
            Refusal::NotHolder {
                lease: "x".into(),
                lock,
            },
            Refusal::TokensExhausted,
        ];
        for refusal in refusals {
            let (code, reason) = REFUSAL_LABELS[refusal_index(&refusal)];
            let status = tonic::Status::from(refusal);
            assert_eq!(
                status
                    .metadata()
                    .get(fenced_proto::metadata::ERROR_CODE)
                    .and_then(|v| v.to_str().ok()),
                Some(reason)
            );
            let expected = match status.code() {
                tonic::Code::Aborted => "ABORTED",
                tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
                tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(code, expected);
        }
    }
}
