//! The log store and the state machine under a real openraft core: a one-node cluster
//! commits commit batches, snapshots and purges its log as configured, shuts down, and
//! comes back with everything it committed (beyond the storage suite, which calls the
//! traits directly).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Config, Raft, RaftNetwork, RaftNetworkFactory, SnapshotPolicy};

use super::log_store::{LogStore, DEFAULT_SEGMENT_BYTES};
use super::state_machine::StateMachine;
use super::types::{ClusterNode, CommitBatch, NodeId, TypeConfig};
use crate::journal::{JournalBatch, JournalOp};

/// The network of a cluster of one: there is nobody to reach.
struct NoPeers;

/// Why [`NoPeers`] reaches nobody.
#[derive(Debug, thiserror::Error)]
#[error("a one-node test cluster has no peers")]
struct NoPeer;

type RpcResult<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, ClusterNode, E>>;

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: NodeId, _node: &ClusterNode) -> NoPeers {
        NoPeers
    }
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeer)))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeer)))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeer)))
    }
}

fn config() -> Arc<Config> {
    let config = Config {
        cluster_name: "fenced-test".to_string(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        // A snapshot every 8 entries, and the log purged up to it: both run in this test.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(8),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Config::default()
    };
    Arc::new(config.validate().unwrap())
}

async fn start(dir: &Path) -> Raft<TypeConfig> {
    let (log, _) = LogStore::open(&dir.join("raft"), true, DEFAULT_SEGMENT_BYTES).unwrap();
    let sm = StateMachine::open(&dir.join("raft-sm"), true).unwrap();
    Raft::new(1, config(), NoPeers, log, sm).await.unwrap()
}

fn batch(i: u64) -> CommitBatch {
    CommitBatch(JournalBatch {
        ops: vec![JournalOp {
            key: format!("key{i:03}").into_bytes(),
            value: Some(i.to_be_bytes().to_vec()),
        }],
    })
}

// checks: S1, S2 (what openraft committed through these stores is there after a restart,
// across snapshots and purges)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_node_cluster_commits_snapshots_purges_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Some(Duration::from_secs(30));

    tracing::info!("--- start and initialize a cluster of one");
    let raft = start(dir.path()).await;
    let node = ClusterNode {
        raft_addr: "127.0.0.1:7001".to_string(),
        client_addr: "127.0.0.1:8001".to_string(),
    };
    raft.initialize(BTreeMap::from([(1, node)])).await.unwrap();
    raft.wait(timeout)
        .current_leader(1, "leader")
        .await
        .unwrap();

    tracing::info!("--- commit 20 batches; snapshots are built and the log purged");
    for i in 0..20 {
        raft.client_write(batch(i)).await.unwrap();
    }
    raft.ensure_linearizable().await.unwrap();
    let metrics = raft
        .wait(timeout)
        .metrics(
            |m| m.purged.is_some() && m.snapshot.is_some(),
            "snapshot and purge",
        )
        .await
        .unwrap();
    let applied = metrics.last_applied.unwrap();
    raft.shutdown().await.unwrap();
    drop(raft);

    tracing::info!("--- restart: it leads again and holds every batch");
    let raft = start(dir.path()).await;
    raft.wait(timeout)
        .current_leader(1, "leader again")
        .await
        .unwrap();
    raft.wait(timeout)
        .applied_index_at_least(Some(applied.index), "applied again")
        .await
        .unwrap();
    raft.client_write(batch(20)).await.unwrap();
    raft.ensure_linearizable().await.unwrap();
    raft.shutdown().await.unwrap();
    drop(raft);

    let sm = StateMachine::open(&dir.path().join("raft-sm"), true).unwrap();
    let keys: Vec<Vec<u8>> = sm
        .records()
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let expected: Vec<Vec<u8>> = (0..21).map(|i| format!("key{i:03}").into_bytes()).collect();
    assert_eq!(keys, expected);
}
