//! Seeding a new cluster from a single node's data directory (`--seed-from DIR`), so that
//! moving from one fenced to a cluster keeps every held lock, lease and lock-delay, and
//! tokens continue above every token the single node issued (S1, S2).
//!
//! How: the member given the directory starts the new cluster alone (its `--members` list
//! names the others, which start without one and wait to be added), so that nobody serves
//! before the seed is in. Promoted in a cluster whose committed state is empty (no token
//! issued yet, nothing held), it opens the directory as the single node would at a restart
//! (its journal replayed into sled, its token floor checked), and commits every record of
//! it (the same keys and values the cluster's state machine keeps) as one raft entry of its
//! term, before its table is built: the seed is all there or not at all. Then it adds the
//! other members (each catches up, then votes). A cluster whose state is not empty is not
//! seeded again. The single node must be stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::Raft;
use prost::Message;

use crate::cluster::epoch::Epoch;
use crate::cluster::membership::{while_in_progress, CATCH_UP_TIMEOUT};
use crate::cluster::replicated_commit::MAX_ENTRY_BYTES;
use crate::cluster::state_machine::Image;
use crate::cluster::types::{ClusterNode, CommitBatch, NodeId, TypeConfig};
use crate::journal::{JournalBatch, JournalOp};
use crate::record::CHECKPOINTED_KEY;
use crate::recovery::{self, Recovered};
use fenced_types::FencingToken;

/// Why a cluster could not be seeded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The directory is not a single node's data directory.
    #[error("{} is not a fenced data directory (no sled database in it)", dir.display())]
    NotADataDir {
        /// The directory.
        dir: PathBuf,
    },
    /// The single node's directory could not be opened or read.
    #[error("cannot read the single node's data directory {}: {source}", dir.display())]
    Open {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<crate::Error>,
    },
    /// Its records do not fit in one raft entry.
    #[error(
        "the single node's {records} records take {bytes} bytes, above the {max}-byte bound \
         of one raft entry: release leases first, or seed from a smaller directory"
    )]
    TooLarge {
        /// How many records.
        records: usize,
        /// Their encoded size.
        bytes: usize,
        /// [`MAX_ENTRY_BYTES`].
        max: usize,
    },
    /// The seed could not be committed (leadership lost on the way, say); nothing was
    /// seeded, and the member tries again when it leads again.
    #[error("the seed was not committed: {reason}")]
    Commit {
        /// openraft's reason.
        reason: String,
    },
    /// The seeded state does not read back.
    #[error("the seeded state does not read back: {0}")]
    ReadBack(#[source] Box<crate::Error>),
}

/// Whether a cluster's committed state is empty: no token issued, nothing held.
pub fn is_empty(restored: &Recovered) -> bool {
    restored.next_token == FencingToken::FIRST
        && restored.leases.is_empty()
        && restored.locks.is_empty()
        && restored.delays.is_empty()
}

/// Every record of the single node's data directory `dir`, as puts, after the journal is
/// replayed (what a restart of it would serve).
pub fn read_single_node(dir: &Path, cache_bytes: u64) -> Result<Vec<JournalOp>, SeedError> {
    if !dir.join("db").is_file() {
        return Err(SeedError::NotADataDir {
            dir: dir.to_path_buf(),
        });
    }
    let open_error = |source: crate::Error| SeedError::Open {
        dir: dir.to_path_buf(),
        source: Box::new(source),
    };
    let opened = recovery::open(dir, false, cache_bytes).map_err(open_error)?;
    let mut ops = Vec::new();
    for entry in opened.db.iter() {
        let (key, value) = entry.map_err(|source| {
            open_error(crate::Error::OpenSled {
                dir: dir.to_path_buf(),
                doing: "reading the records",
                source,
            })
        })?;
        if &*key != CHECKPOINTED_KEY {
            ops.push(JournalOp::put(key.to_vec(), value.to_vec()));
        }
    }
    Ok(ops)
}

/// Commits `records` as one entry of the term that started `epoch`, then reads the state
/// back: what the new term's table is built from.
pub async fn commit_seed(
    raft: &Raft<TypeConfig>,
    image: &Image,
    epoch: Epoch,
    records: Vec<JournalOp>,
) -> Result<Recovered, SeedError> {
    let count = records.len();
    let batch = JournalBatch {
        ops: std::iter::once(epoch.expectation())
            .chain(records)
            .collect(),
    };
    let bytes = batch.encoded_len();
    if bytes > MAX_ENTRY_BYTES {
        return Err(SeedError::TooLarge {
            records: count,
            bytes,
            max: MAX_ENTRY_BYTES,
        });
    }
    raft.client_write(CommitBatch(batch))
        .await
        .map_err(|error| SeedError::Commit {
            reason: error.to_string(),
        })?;
    image
        .read_back()
        .map_err(|source| SeedError::ReadBack(Box::new(source)))
}

/// While this member is the only voter of a cluster it started to seed, adds the other
/// initial members: each as a learner until it caught up, then all as voters. Gives up
/// (logged) if this member stops leading; it tries again at its next promotion.
pub async fn add_initial_members(
    raft: Raft<TypeConfig>,
    me: NodeId,
    initial_members: BTreeMap<NodeId, ClusterNode>,
) {
    let voters: BTreeSet<NodeId> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    if voters != BTreeSet::from([me]) || initial_members.len() < 2 {
        return;
    }
    for (id, node) in initial_members.iter().filter(|(id, _)| **id != me) {
        let added =
            tokio::time::timeout(CATCH_UP_TIMEOUT, raft.add_learner(*id, node.clone(), true)).await;
        match added {
            Ok(Ok(_)) => tracing::info!(node = id, "an initial member caught up"),
            Ok(Err(error)) => {
                tracing::warn!(node = id, %error, "could not add an initial member; trying again at the next promotion");
                return;
            }
            Err(_) => {
                tracing::warn!(node = id, "an initial member did not catch up within {CATCH_UP_TIMEOUT:?} (is it running, without --members?); trying again at the next promotion");
                return;
            }
        }
    }
    let all: BTreeSet<NodeId> = initial_members.keys().copied().collect();
    match while_in_progress(|| raft.change_membership(all.clone(), false)).await {
        Ok(_) => tracing::info!(members = ?initial_members.keys(), "the initial members vote"),
        Err(error) => {
            tracing::warn!(%error, "could not make the initial members voters; trying again at the next promotion")
        }
    }
}
