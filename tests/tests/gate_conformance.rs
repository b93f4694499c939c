//! The gate's conformance suite, run by both backends (memory and sled).
//! checks: S5
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fenced_gate::conformance::{self, Harness};
use fenced_gate::{MemoryBackend, SledBackend};

/// Fresh in-memory stores; "reopen" hands back the same shared state (a restart of the
/// service above the store).
struct Memory;

impl Harness for Memory {
    type Backend = MemoryBackend;

    fn open(&mut self) -> MemoryBackend {
        MemoryBackend::new()
    }

    fn reopen(&mut self, backend: MemoryBackend) -> MemoryBackend {
        let again = backend.clone();
        drop(backend);
        again
    }
}

/// Fresh sled stores in temporary directories; reopen closes the database and opens the
/// directory again.
#[derive(Default)]
struct Sled {
    dirs: Vec<tempfile::TempDir>,
}

impl Harness for Sled {
    type Backend = SledBackend;

    fn open(&mut self) -> SledBackend {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(dir.path().join("db")).unwrap();
        self.dirs.push(dir);
        backend
    }

    fn reopen(&mut self, backend: SledBackend) -> SledBackend {
        let path = backend.dir().to_path_buf();
        drop(backend);
        SledBackend::open(path).unwrap()
    }
}

macro_rules! suite {
    ($backend:ident, $harness:expr, [$($check:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                // checks: S5
                #[test]
                fn $check() {
                    conformance::$check(&mut $harness);
                }
            )*
        }
    };
}

suite!(
    memory,
    Memory,
    [
        ordering,
        refusal_has_no_effect,
        fence_shuts_out_older_holders,
        deletes_are_gated,
        marks_are_per_resource,
        race_33_34,
        race_33_34_over_a_mark,
        random_race,
        durable_across_reopen,
        unfenced_mode,
    ]
);

suite!(
    sled,
    Sled::default(),
    [
        ordering,
        refusal_has_no_effect,
        fence_shuts_out_older_holders,
        deletes_are_gated,
        marks_are_per_resource,
        race_33_34,
        race_33_34_over_a_mark,
        random_race,
        durable_across_reopen,
        unfenced_mode,
    ]
);

/// `run_all` is what another backend's test calls; make sure it runs end to end.
// checks: S5
#[test]
fn run_all_passes_on_memory() {
    conformance::run_all(&mut Memory);
}

/// A history that breaks S5 must be caught by the checker the suite and the network tests
/// share (a checker that cannot fail checks nothing).
#[test]
fn check_history_catches_violations() {
    use conformance::{check_history, Observed};
    let ok = |start, end, token| Observed {
        start,
        end,
        token,
        result: Ok(token),
    };
    // 34 accepted, then (strictly later) 33 accepted: a stale write got through.
    let backwards = vec![ok(0, 1, 34), ok(2, 3, 33)];
    assert!(std::panic::catch_unwind(|| check_history(&backwards, Some(34))).is_err());
    // The stored value is 33's although 34 was accepted.
    let lost = vec![ok(0, 1, 33), ok(2, 3, 34)];
    assert!(std::panic::catch_unwind(|| check_history(&lost, Some(33))).is_err());
    // Overlapping writes may land in either order; 34 last is fine.
    let fine = vec![ok(0, 3, 34), ok(1, 2, 33)];
    check_history(&fine, Some(34));
}
