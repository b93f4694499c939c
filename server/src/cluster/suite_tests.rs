//! openraft's own storage conformance suite over [`LogStore`] and [`StateMachine`], in
//! temporary directories, with small segments (so rotation, truncation across segments and
//! purging whole segments are exercised) and with the default size.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageIOError;

use super::log_store::{LogStore, DEFAULT_SEGMENT_BYTES};
use super::state_machine::StateMachine;
use super::types::{StorageError, TypeConfig};

/// Makes a fresh log store and state machine in a temporary directory (kept alive by the
/// returned guard).
struct Builder {
    /// The log store's segment size.
    segment_bytes: u64,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let (log, torn) = LogStore::open(&dir.path().join("raft"), true, self.segment_bytes)
            .map_err(|error| StorageError::from(StorageIOError::write(&error)))?;
        assert_eq!(torn, None);
        let sm = StateMachine::open(&dir.path().join("raft-sm"), true)
            .map_err(|error| StorageError::from(StorageIOError::write(&error)))?;
        Ok((dir, log, sm))
    }
}

// checks: S1, S2 (the raft log and the state machine keep openraft's storage contract:
// vote, append, truncate, purge, apply, snapshots)
#[test]
fn openraft_storage_suite_passes_with_small_segments() {
    Suite::test_all(Builder { segment_bytes: 128 }).unwrap();
}

// checks: S1, S2 (as above, every entry in one segment)
#[test]
fn openraft_storage_suite_passes_with_default_segments() {
    Suite::test_all(Builder {
        segment_bytes: DEFAULT_SEGMENT_BYTES,
    })
    .unwrap();
}
