//! [`TypeConfig`]: the types openraft is instantiated with, and the nouns it carries:
//! [`ClusterNode`] (a member's addresses) and [`CommitBatch`] (one log entry's application
//! data).
//!
//! Why the entry is a commit batch: the lock table already turns every command into
//! whole-value puts and deletes of the records in [`crate::record`] (next token, leases,
//! held locks, lock-delays), and the single node appends exactly those, one
//! [`JournalBatch`] per group commit, to its journal. Replicating the same batches makes
//! the followers' state a pure function of the log (apply is a sequence of puts and
//! deletes, no clock, no table), so replicas fed the same entries end byte-identical, and
//! the leader's table stays the one place where lock semantics live.

use std::io::Cursor;

use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::journal::JournalBatch;

openraft::declare_raft_types!(
    /// The openraft type configuration of a fenced cluster.
    pub TypeConfig:
        D = CommitBatch,
        R = Applied,
        NodeId = u64,
        Node = ClusterNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node's id in the cluster (stable across restarts; chosen by the operator).
pub type NodeId = u64;

/// A raft log entry of a fenced cluster.
pub type Entry = openraft::Entry<TypeConfig>;

/// A log id (term, leader, index) of a fenced cluster.
pub type LogId = openraft::LogId<NodeId>;

/// The error openraft's storage traits return.
pub type StorageError = openraft::StorageError<NodeId>;

/// A member of the cluster: where its peers and its clients reach it. Kept in the
/// membership that the log and snapshots carry, so every node knows every address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// `host:port` of the node's raft (peer-to-peer) listener.
    pub raft_addr: String,
    /// `host:port` of the node's client (gRPC) listener: where a follower redirects a
    /// client to when this node leads.
    pub client_addr: String,
}

/// One log entry's application data: the durable writes of one commit of the leader's
/// lock table, as the single node journals them (see the module documentation).
///
/// It serializes (serde, for openraft's messages) as the batch's protobuf encoding, one
/// byte string, so a binary codec carries it without a per-op overhead and the bytes are
/// those the log store frames. Deserializing decodes them, so a malformed batch is refused
/// where it arrives, not when it is applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitBatch(pub JournalBatch);

/// What applying one entry answers: nothing yet. The leader's table already knows the
/// outcome of the commands behind a batch; the proposer only needs to know that the entry
/// is committed and applied, which `client_write` returning says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied;

impl Serialize for CommitBatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0.encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for CommitBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BatchVisitor)
    }
}

/// Reads a [`CommitBatch`] from a byte string (or, from formats without one such as JSON,
/// a sequence of bytes).
struct BatchVisitor;

impl<'de> serde::de::Visitor<'de> for BatchVisitor {
    type Value = CommitBatch;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("the protobuf encoding of a commit batch")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<CommitBatch, E> {
        JournalBatch::decode(bytes)
            .map(CommitBatch)
            .map_err(|error| E::custom(format!("a commit batch that does not decode: {error}")))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<CommitBatch, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        self.visit_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::journal::JournalOp;

    // checks: S2 (a batch crosses the wire as exactly the writes the leader committed)
    #[test]
    fn a_commit_batch_round_trips_through_serde_and_refuses_garbage() {
        let batch = CommitBatch(JournalBatch {
            ops: vec![
                JournalOp {
                    key: b"t".to_vec(),
                    value: Some(7u64.to_be_bytes().to_vec()),
                },
                JournalOp {
                    key: b"Kname".to_vec(),
                    value: None,
                },
            ],
        });
        let json = serde_json::to_string(&batch).unwrap();
        assert_eq!(serde_json::from_str::<CommitBatch>(&json).unwrap(), batch);
        let error = serde_json::from_str::<CommitBatch>("[255,255,255]").unwrap_err();
        assert!(error.to_string().contains("does not decode"), "{error}");
    }
}
