//! fenced as a replicated cluster on openraft (0.9, storage-v2): a `fenced` process with
//! [`crate::Config::cluster`] set is a member ([`member`]); without it, the single node
//! uses none of this.
//!
//! The design: a raft log entry's application data is one commit batch of the durable
//! writes the leader's lock table produces ([`types::CommitBatch`], what the single node
//! journals); the state machine is sled's image of those records, applied in log order on
//! every node, so replicas fed the same entries end identical. A new leader rebuilds its
//! lock table from that image as recovery does after a restart
//! ([`state_machine::StateMachine::read_back`]). Expiry, grants and queues stay decided by
//! the leader's table; followers only apply writes.
//!
//! # Layout
//! - [`settings`]: a member's id, addresses, initial members and raft timing.
//! - [`member`]: a running member: the raft core, its listener, and a term of service
//!   (an engine over a replicated store) while it leads.
//! - [`membership`]: the `ClusterService`: the members, adding and removing one.
//! - [`seed`]: a new cluster seeded from a single node's data directory.
//! - [`types`]: openraft's type configuration, the node's addresses, the commit batch.
//! - [`log_store`]: the raft log on disk (segments of framed entries, the vote and the
//!   purged and committed log ids beside them), openraft's `RaftLogStorage`.
//! - [`state_machine`]: the replicated records in sled, openraft's `RaftStateMachine`, and
//!   its snapshots.
//! - [`state_file`]: small files replaced whole and atomically (the vote, log ids).
//! - [`network`]: raft messages to peers (`fenced.raft.v1` over tonic), openraft's
//!   `RaftNetworkFactory`.
//! - [`raft_service`]: raft messages from peers, handed to this node's raft core.
//! - [`peer_auth`]: the cluster's secret, which every raft message carries and every raft
//!   listener checks.
//! - [`replicated_commit`]: the leader's group commit as raft entries.
//! - [`leadership`]: the batched leadership check a leader runs before it confirms a
//!   renewal or answers a linearizable read, and why a deposed leader's renewal never
//!   outlives a new leader's deadline (the worst-case lease extension across a failover).
//! - [`promotion`]: when this node becomes the leader under a new vote, a barrier of its
//!   own, then the committed state to rebuild the lock table from; and when it stops.
//! - [`quorum_watch`]: a leader that has heard no quorum's acknowledgement for four
//!   election timeouts steps down, so followers its heartbeats still reach can elect.
//! - [`epoch`]: which term's table a batch came from; apply skips an ended term's.
//! - [`recall`]: the events of the applied entries the log still holds, recalled when a
//!   member starts so watchers resume across its restart.
//! - [`error`]: why the log or the state machine cannot be read or written.

pub mod epoch;
pub mod error;
pub mod leadership;
pub mod log_store;
pub mod member;
pub mod membership;
pub mod network;
pub mod peer_auth;
pub mod promotion;
pub mod quorum_watch;
pub mod raft_service;
pub mod recall;
pub mod replicated_commit;
pub mod seed;
pub mod settings;
pub mod state_file;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod leadership_tests;
#[cfg(test)]
mod log_store_tests;
#[cfg(test)]
mod multi_node_tests;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod promotion_tests;
#[cfg(test)]
mod quorum_watch_tests;
#[cfg(test)]
mod recall_tests;
#[cfg(test)]
mod single_node_tests;
#[cfg(test)]
mod state_machine_tests;
#[cfg(test)]
mod suite_tests;
