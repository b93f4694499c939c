//! [`Epoch`]: which leader term's lock table a commit batch came from, so that the state
//! machine applies a batch only if the table that produced it is the one serving.
//!
//! Why: a leader's term of service ends when a commit fails or times out, and a new one
//! starts from the committed state after a barrier ([`crate::cluster::promotion`]). The
//! old term's committer may still have a `client_write` in flight inside the raft core.
//! If the same node leads again (under the same raft vote after a commit timeout, or a
//! later one), that stale write could be appended to the log *after* the new barrier, and
//! applied after the new table was rebuilt: the image would then hold writes the serving
//! table never made (a grant with a token the new table issues again, say).
//!
//! The rule: every promotion commits a barrier that sets the image's epoch record
//! ([`crate::record::EPOCH_KEY`], a record like any other, so snapshots carry it), and
//! every batch of that term starts with an op that names the epoch it expects
//! ([`EXPECT_EPOCH_KEY`]). Apply skips a batch whose expected epoch is not the image's
//! current one. The decision depends on the log alone, so every replica skips the same
//! batches and replicas stay identical; and a skipped batch was never acknowledged (its
//! `client_write` belonged to a term that had already ended).
//!
//! An epoch is the raft term, a count of this process's promotions, and a number drawn
//! when the process started, so that no two promotions anywhere share one.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::journal::{JournalBatch, JournalOp};
use crate::record::EPOCH_KEY;

/// The key of the op that starts every batch a cluster leader commits: "apply this batch
/// only if the image's epoch is this value". It is never stored.
pub const EXPECT_EPOCH_KEY: &[u8] = b"E";

/// One promotion's epoch. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    /// The raft term the promotion is in.
    pub term: u64,
    /// How many promotions this process made before this one, plus one.
    pub promotion: u64,
    /// Drawn once per process.
    pub process: u64,
}

impl Epoch {
    /// A number that differs between processes (the wall clock's nanoseconds when called,
    /// mixed with the process id): what [`Epoch::process`] is drawn from.
    pub fn process_nonce() -> u64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        // Truncation keeps the fast-moving low bits, which is all a nonce needs.
        #[allow(clippy::cast_possible_truncation)]
        let nanos = nanos as u64;
        nanos ^ (u64::from(std::process::id()) << 32)
    }

    /// The epoch as stored: 24 bytes, big-endian fields in order.
    pub fn to_bytes(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&self.term.to_be_bytes());
        bytes.extend_from_slice(&self.promotion.to_be_bytes());
        bytes.extend_from_slice(&self.process.to_be_bytes());
        bytes
    }

    /// The barrier that starts this epoch: it sets the image's epoch and nothing else.
    pub fn barrier(self) -> JournalBatch {
        JournalBatch {
            ops: vec![JournalOp {
                key: EPOCH_KEY.to_vec(),
                value: Some(self.to_bytes()),
            }],
        }
    }

    /// The op every batch of this epoch starts with.
    pub fn expectation(self) -> JournalOp {
        JournalOp {
            key: EXPECT_EPOCH_KEY.to_vec(),
            value: Some(self.to_bytes()),
        }
    }
}

/// Whether `batch` may be applied to an image whose epoch record is `current`: a batch
/// that expects no epoch (a barrier, or written outside a term) always may; one that
/// expects an epoch may only if it is the current one.
pub fn admits(batch: &JournalBatch, current: Option<&[u8]>) -> bool {
    match expectation_of(batch) {
        Some(expected) => expected.value.as_deref() == current,
        None => true,
    }
}

/// The op by which `batch` names the epoch it expects, if it expects one (its first op).
pub fn expectation_of(batch: &JournalBatch) -> Option<&JournalOp> {
    batch
        .ops
        .first()
        .filter(|first| first.key == EXPECT_EPOCH_KEY)
}
