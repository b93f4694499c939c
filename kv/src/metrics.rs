//! fenced-kv's metrics: names, help texts and the Prometheus recorder.
//!
//! Recorded through the `metrics` facade: until a recorder is installed (only when
//! `--admin-listen` is given) each recording is a no-op. No label carries a resource or a
//! key (unbounded cardinality); `op` is one of `put`, `delete`, `fence`; `kind` one of a
//! fixed few.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Writes (puts, deletes, fences) accepted and durable, by `op`.
pub const WRITES_ACCEPTED: &str = "fenced_kv_writes_accepted_total";
/// Writes refused because their token is below the resource's mark, by `op`.
pub const WRITES_REFUSED_STALE: &str = "fenced_kv_writes_refused_stale_total";
/// Writes refused in sequencer mode (`--verify-keys`), by `op` and `kind`: `required` (a
/// bare token), `malformed`, `unsupported-version`, `unknown-key`, `bad-signature`,
/// `other-lock`.
pub const WRITES_REFUSED_SEQUENCER: &str = "fenced_kv_writes_refused_sequencer_total";
/// Reads answered (found or not).
pub const READS: &str = "fenced_kv_reads_total";
/// How long each group commit's flush + fdatasync took (one sync covers many writes).
pub const SYNC_SECONDS: &str = "fenced_kv_sync_seconds";

/// The sync histogram's buckets, in seconds: a healthy disk syncs in well under a
/// millisecond to a few; the top buckets catch a disk in trouble.
const SYNC_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process-wide Prometheus recorder and describes the metrics; the handle
/// renders them (`/metrics`).
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(SYNC_SECONDS.into()), SYNC_BUCKETS)?
        .install_recorder()?;
    describe();
    register();
    Ok(handle)
}

/// Registers every series at zero, so a scrape shows them (and a rate can be taken) before
/// the first write.
fn register() {
    for op in ["put", "delete", "fence"] {
        metrics::counter!(WRITES_ACCEPTED, "op" => op).increment(0);
        metrics::counter!(WRITES_REFUSED_STALE, "op" => op).increment(0);
    }
    metrics::counter!(READS).increment(0);
    let _ = metrics::histogram!(SYNC_SECONDS);
}

/// The help texts `/metrics` shows.
fn describe() {
    metrics::describe_counter!(
        WRITES_ACCEPTED,
        "Writes (op: put, delete, fence) accepted and durable."
    );
    metrics::describe_counter!(
        WRITES_REFUSED_STALE,
        "Writes (op: put, delete, fence) refused: their fencing token is below the mark."
    );
    metrics::describe_counter!(
        WRITES_REFUSED_SEQUENCER,
        "Writes (op: put, delete, fence) refused for their sequencer (kind: required, \
         malformed, unsupported-version, unknown-key, bad-signature, other-lock)."
    );
    metrics::describe_counter!(READS, "Reads answered.");
    metrics::describe_histogram!(
        SYNC_SECONDS,
        metrics::Unit::Seconds,
        "Duration of each group commit's flush and fdatasync."
    );
}

/// Records one write's outcome: accepted, refused as stale, or neither (other errors).
pub fn record_write<T>(op: &'static str, result: &Result<T, fenced_gate::Error>) {
    match result {
        Ok(_) => metrics::counter!(WRITES_ACCEPTED, "op" => op).increment(1),
        Err(fenced_gate::Error::StaleToken { .. }) => {
            metrics::counter!(WRITES_REFUSED_STALE, "op" => op).increment(1)
        }
        Err(fenced_gate::Error::Sequencer(refusal)) => {
            metrics::counter!(WRITES_REFUSED_SEQUENCER, "op" => op, "kind" => refusal.kind())
                .increment(1)
        }
        Err(fenced_gate::Error::SequencerRequired { .. }) => {
            metrics::counter!(WRITES_REFUSED_SEQUENCER, "op" => op, "kind" => "required")
                .increment(1)
        }
        Err(_) => {}
    }
}

/// Records one sync's duration (the gate's sync observer).
pub fn record_sync(took: std::time::Duration) {
    metrics::histogram!(SYNC_SECONDS).record(took.as_secs_f64());
}
