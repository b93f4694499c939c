//! [`ReplicatedCommit`]: how the leader's store makes a group commit durable in a cluster:
//! one raft entry per commit batch, acknowledged once a quorum has it in its synced log and
//! it is applied here (CONTRACT S2).
//!
//! The single node appends the same batch to its journal and syncs it; a cluster leader
//! hands it to openraft's `client_write` instead, on the committer thread (blocking on the
//! runtime, as the journal's `fdatasync` blocks). Group commit is unchanged: everything
//! staged while one entry replicates goes into the next.
//!
//! A commit that fails here has an unknown outcome: the entry may have been committed by
//! a quorum before this node lost its leadership, or not at all. The lock table that
//! produced it can no longer be trusted to match the log, so the caller ends the term
//! ([`crate::store::Store::end_term`]): every request waiting answers "not the leader,
//! outcome unknown", and a new term (here or on another node) starts from the committed
//! state.

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use prost::Message;

use crate::cluster::epoch::Epoch;
use crate::cluster::network::MAX_RAFT_MESSAGE_BYTES;
use crate::cluster::types::{CommitBatch, NodeId, TypeConfig};
use crate::journal::{JournalBatch, JournalOp};

/// The largest commit batch one entry may carry, encoded: a quarter of a raft message, so
/// an entry always fits in one `AppendEntries` with room for its framing.
pub const MAX_ENTRY_BYTES: usize = MAX_RAFT_MESSAGE_BYTES / 4;

/// How long one commit may take by default before the term is ended: a quorum that does
/// not store an entry in this long is gone, or this node is cut off from it.
pub const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a replicated commit did not complete; the batch's outcome is unknown unless said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicatedCommitError {
    /// This node is no longer the leader.
    #[error("this node lost its leadership during a commit (the leader is {leader:?})")]
    LostLeadership {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// The batch is larger than one entry may be; nothing was proposed.
    #[error("a commit batch of {bytes} bytes is above the {max}-byte bound of one raft entry")]
    TooLarge {
        /// The batch's encoded size.
        bytes: usize,
        /// [`MAX_ENTRY_BYTES`].
        max: usize,
    },
    /// The entry was not committed within the commit timeout.
    #[error("a commit was not acknowledged by a quorum within {timeout:?}")]
    Timeout {
        /// The commit timeout.
        timeout: Duration,
    },
    /// openraft refused the write for another reason, or its core stopped.
    #[error("the raft core refused a commit: {reason}")]
    Refused {
        /// openraft's reason.
        reason: String,
    },
}

/// Proposes commit batches to this node's raft core. See the module documentation.
pub struct ReplicatedCommit {
    /// This node's raft core.
    raft: Raft<TypeConfig>,
    /// The runtime the raft core runs on, to block on from the committer thread.
    runtime: tokio::runtime::Handle,
    /// How long one commit may take.
    timeout: Duration,
    /// The term's epoch, which every batch expects.
    epoch: Epoch,
}

impl ReplicatedCommit {
    /// Commits the batches of the term that started `epoch` through `raft`, blocking on
    /// `runtime`; a commit that takes longer than `timeout` fails.
    pub fn new(
        raft: Raft<TypeConfig>,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
        epoch: Epoch,
    ) -> ReplicatedCommit {
        ReplicatedCommit {
            raft,
            runtime,
            timeout,
            epoch,
        }
    }

    /// The op every batch of this term starts with ([`crate::cluster::epoch`]).
    pub fn expectation(&self) -> JournalOp {
        self.epoch.expectation()
    }

    /// Proposes `batch` (which starts with [`ReplicatedCommit::expectation`]) as one entry and blocks until a quorum committed it and this node
    /// applied it. Call only from a thread outside the runtime (the committer's).
    pub fn commit(&self, batch: JournalBatch) -> Result<(), ReplicatedCommitError> {
        let bytes = batch.encoded_len();
        if bytes > MAX_ENTRY_BYTES {
            return Err(ReplicatedCommitError::TooLarge {
                bytes,
                max: MAX_ENTRY_BYTES,
            });
        }
        // The timeout is made inside `block_on`, where the runtime's timer is at hand.
        let written = self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, self.raft.client_write(CommitBatch(batch))).await
        });
        match written {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to)))) => {
                Err(ReplicatedCommitError::LostLeadership {
                    leader: to.leader_id,
                })
            }
            Ok(Err(error)) => Err(ReplicatedCommitError::Refused {
                reason: error.to_string(),
            }),
            Err(_) => Err(ReplicatedCommitError::Timeout {
                timeout: self.timeout,
            }),
        }
    }
}
