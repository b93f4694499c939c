//! Three-node clusters in one process: each node with its own data directory, log store
//! and state machine, serving the raft service on a real loopback port, talking to the
//! others through [`Network`]. The stories: replicate and agree, lose the leader, rebuild
//! a wiped follower from a snapshot, survive a voter that comes back wiped under its old
//! id, cut the leader off, back off from a member that is down.
//!
//! Timing is injected through openraft's `Config` ([`config`]): heartbeats every 100 ms,
//! elections after 500 to 1000 ms without one, with waits of many seconds, so a loaded
//! machine slows the tests down but does not fail them.
//!
//! The stores run without `fdatasync`: these tests stop nodes (their raft core and their
//! listener), they do not cut power; the power-cut tests of the stores are their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fenced_types::{FencingToken, LeaseId, LockName};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, Raft, SnapshotPolicy};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::log_store::{LogStore, DEFAULT_SEGMENT_BYTES};
use super::network::{Links, Network, UNREACHABLE_BACKOFF};
use super::quorum_watch::spawn_quorum_watch;
use super::raft_service::spawn_raft_server;
use super::state_machine::{Image, ImageRecord, StateMachine};
use super::types::{ClusterNode, CommitBatch, NodeId, TypeConfig};
use crate::journal::JournalBatch;
use crate::record::encode;
use crate::table::Write;

/// How long any wait for the cluster may take before the test fails: long, so that only a
/// cluster that is stuck fails it.
pub(super) const PATIENCE: Duration = Duration::from_secs(30);

/// The largest election timeout in [`config`].
pub(super) const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1000);

/// The size of the snapshot chunks the tests send: small, so a snapshot of a few dozen
/// grants (several KiB) crosses the network in several `InstallSnapshot` rpcs.
const SNAPSHOT_CHUNK_BYTES: u64 = 1024;

/// The cluster's timing and snapshot policy (see the module documentation).
///
/// Why 100 ms heartbeats and not 50: openraft gives each `AppendEntries` the heartbeat
/// interval as its deadline, and twelve nodes of concurrent tests share two loaded cores.
/// Elections wait 5 to 10 heartbeats, so a late heartbeat does not depose a leader.
/// A snapshot every 10 entries, the log purged up to it at once: a follower that falls
/// behind (or is wiped) is sent a snapshot, not the log, in chunks of
/// [`SNAPSHOT_CHUNK_BYTES`].
fn config() -> Arc<Config> {
    let config = Config {
        cluster_name: "fenced-test".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        ..Config::default()
    };
    Arc::new(config.validate().unwrap())
}

/// One running node of a test cluster.
pub(super) struct TestNode {
    /// Its id.
    pub(super) id: NodeId,
    /// Its raft core.
    pub(super) raft: Raft<TypeConfig>,
    /// Reads its state machine's records.
    pub(super) image: Image,
    /// Cuts its outgoing links.
    pub(super) links: Links,
    /// Stops its raft listener.
    stop: CancellationToken,
    /// Its raft listener.
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// A cluster of three nodes on loopback ports, each with its own data directory.
pub(super) struct TestCluster {
    /// Holds the nodes' data directories.
    _root: TempDir,
    /// Each node's data directory.
    dirs: BTreeMap<NodeId, PathBuf>,
    /// Each node's raft address (kept across restarts).
    pub(super) addrs: BTreeMap<NodeId, SocketAddr>,
    /// The running nodes.
    nodes: BTreeMap<NodeId, TestNode>,
}

impl TestCluster {
    /// Starts nodes 1, 2 and 3 and initializes the cluster with all three as voters.
    pub(super) async fn start() -> TestCluster {
        TestCluster::start_with(BTreeMap::new()).await
    }

    /// Starts nodes 1, 2 and 3, except those in `elsewhere`, which are members at the
    /// addresses given there but are not started, and initializes the cluster with all
    /// three as voters.
    async fn start_with(elsewhere: BTreeMap<NodeId, SocketAddr>) -> TestCluster {
        let root = tempfile::tempdir().unwrap();
        let mut cluster = TestCluster {
            dirs: BTreeMap::new(),
            addrs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            _root: root,
        };
        let mut listeners = BTreeMap::new();
        for id in 1..=3 {
            if let Some(addr) = elsewhere.get(&id) {
                cluster.addrs.insert(id, *addr);
                continue;
            }
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            cluster.addrs.insert(id, listener.local_addr().unwrap());
            cluster
                .dirs
                .insert(id, cluster._root.path().join(format!("node-{id}")));
            listeners.insert(id, listener);
        }
        for (id, listener) in listeners {
            cluster.start_on(id, listener).await;
        }
        let members: BTreeMap<NodeId, ClusterNode> = cluster
            .addrs
            .iter()
            .map(|(id, addr)| {
                let node = ClusterNode {
                    raft_addr: addr.to_string(),
                    client_addr: "127.0.0.1:1".to_string(),
                };
                (*id, node)
            })
            .collect();
        let first = *cluster.nodes.keys().next().unwrap();
        cluster.node(first).raft.initialize(members).await.unwrap();
        cluster
    }

    /// Starts node `id` from its data directory on its address.
    async fn restart(&mut self, id: NodeId) {
        let listener = TcpListener::bind(self.addrs[&id]).await.unwrap();
        self.start_on(id, listener).await;
    }

    async fn start_on(&mut self, id: NodeId, listener: TcpListener) {
        let dir = &self.dirs[&id];
        let (log, _) = LogStore::open(&dir.join("raft"), false, DEFAULT_SEGMENT_BYTES).unwrap();
        let sm = open_state_machine(&dir.join("raft-sm")).await;
        let image = sm.image();
        let network = Network::new(id);
        let links = network.links();
        let raft = Raft::new(id, config(), network, log, sm).await.unwrap();
        let stop = CancellationToken::new();
        let server = spawn_raft_server(&raft, listener, None, &stop);
        // As a member runs it (member.rs): a leader without a quorum steps down.
        spawn_quorum_watch(raft.clone(), stop.clone());
        self.nodes.insert(
            id,
            TestNode {
                id,
                raft,
                image,
                links,
                stop,
                server,
            },
        );
    }

    /// Stops node `id` as a crash would, as far as its peers can tell: its listener stops
    /// answering and its raft core stops. Its data directory stays.
    pub(super) async fn stop(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).unwrap();
        node.stop.cancel();
        tokio::time::timeout(PATIENCE, node.server)
            .await
            .expect("the raft listener stops")
            .unwrap()
            .unwrap();
        node.raft.shutdown().await.unwrap();
    }

    pub(super) fn node(&self, id: NodeId) -> &TestNode {
        &self.nodes[&id]
    }

    /// The running nodes.
    fn running(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Waits until every running node agrees on one leader among them, and returns it.
    pub(super) async fn leader(&self) -> NodeId {
        self.leader_among(&self.running()).await
    }

    /// Waits until the nodes `ids` agree on one leader among them, and returns it.
    pub(super) async fn leader_among(&self, ids: &[NodeId]) -> NodeId {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let leaders: Vec<Option<NodeId>> = ids
                .iter()
                .map(|id| self.node(*id).raft.metrics().borrow().current_leader)
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                if ids.contains(leader) && leaders.iter().all(|l| l == &Some(*leader)) {
                    return *leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader among {ids:?} within {PATIENCE:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Commits grants `range` through the leader of the running nodes.
    pub(super) async fn write(&self, range: std::ops::Range<u64>) {
        self.write_among(&self.running(), range).await;
    }

    /// Commits grants `range` through the leader the nodes `ids` agree on. Should the
    /// leader change meanwhile (a loaded machine can delay a heartbeat past an election
    /// timeout), the write goes to the next one: a grant's batch is whole-value puts, so
    /// one committed twice leaves the same image.
    pub(super) async fn write_among(&self, ids: &[NodeId], range: std::ops::Range<u64>) {
        for i in range {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                let leader = self.leader_among(ids).await;
                let written =
                    tokio::time::timeout(PATIENCE, self.node(leader).raft.client_write(batch(i)))
                        .await
                        .expect("a write commits");
                match written {
                    Ok(_) => break,
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                        tracing::info!(?to, "the leader changed; writing again");
                    }
                    Err(error) => panic!("write {i} through node {leader} failed: {error}"),
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "write {i} never committed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Waits until every running node has applied everything the leader has, then checks
    /// that their images are identical and returns it.
    pub(super) async fn converged(&self) -> Vec<ImageRecord> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let (leader, applied) = loop {
            let leader = self.leader().await;
            match self.node(leader).raft.ensure_linearizable().await {
                Ok(_) => {
                    break (
                        leader,
                        self.node(leader).raft.metrics().borrow().last_applied,
                    )
                }
                Err(error) => tracing::info!(%error, "the leader changed; asking the next"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader confirmed"
            );
        };
        for node in self.nodes.values() {
            node.raft
                .wait(Some(PATIENCE))
                .metrics(|m| m.last_applied >= applied, "applied what the leader has")
                .await
                .unwrap();
        }
        let image = self.node(leader).image.records().unwrap();
        for node in self.nodes.values() {
            assert_eq!(
                node.image.records().unwrap(),
                image,
                "node {}'s image differs from the leader's",
                node.id
            );
        }
        image
    }

    pub(super) async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

/// Opens a state machine, waiting while the previous incarnation's database (dropped by
/// its raft core's tasks as they end) still holds its lock.
async fn open_state_machine(dir: &Path) -> StateMachine {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match StateMachine::open(dir, false) {
            Ok(sm) => return sm,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%error, "state machine still held; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot open the state machine: {error}"),
        }
    }
}

fn token(i: u64) -> FencingToken {
    FencingToken::new(i + 1).unwrap()
}

/// The lock [`batch`] `i` grants.
fn batch_lock(i: u64) -> LockName {
    LockName::new(format!("lock-{i:03}")).unwrap()
}

/// The batch [`assert_commits_nothing`] writes on a leader that must not commit it.
const STRANDED: u64 = 999;

/// The commit batch of grant `i`: a lease, its lock at token `i + 1`, the next token
/// (what the lock table writes for one grant).
pub(super) fn batch(i: u64) -> CommitBatch {
    let mut lease = [0u8; 16];
    lease[..8].copy_from_slice(&i.to_be_bytes());
    let lease = LeaseId::from_bytes(lease);
    let writes = vec![
        Write::PutLease {
            lease,
            ttl: Duration::from_secs(10),
            holder: "worker".into(),
            origin: None,
        },
        Write::PutLock {
            lock: batch_lock(i),
            lease,
            token: token(i),
            holder: "worker".into(),
            lock_delay: Duration::from_secs(1),
        },
        Write::NextToken(token(i + 1)),
    ];
    CommitBatch(JournalBatch {
        ops: writes.into_iter().map(encode).collect(),
    })
}

/// Checks that `node`'s image reads back as the lock table's state after grants `0..n`.
pub(super) fn assert_grants(node: &TestNode, n: u64) {
    let recovered = node.image.read_back().unwrap();
    assert_eq!(recovered.next_token, token(n), "node {}", node.id);
    assert_eq!(recovered.locks.len(), usize::try_from(n).unwrap());
    assert_eq!(recovered.leases.len(), usize::try_from(n).unwrap());
}

// checks: S1, S2 (every grant a leader commits is on every replica, in the same order:
// the images are identical and the token counter is the same everywhere)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_replicate_identical_images() {
    tracing::info!("--- start three nodes, initialize, elect");
    let cluster = TestCluster::start().await;
    let leader = cluster.leader().await;
    tracing::info!(leader, "elected");

    tracing::info!("--- commit 50 batches through the leader");
    cluster.write(0..50).await;

    tracing::info!("--- every node applied all 50, and the images are identical");
    cluster.converged().await;
    for node in cluster.nodes.values() {
        assert_grants(node, 50);
    }
    cluster.shutdown().await;
}

// checks: S1, S2 (a leader's loss loses no committed grant; a new leader continues the
// token counter; the old leader restarts from its disk and catches up)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_dies_a_new_one_takes_over_and_the_old_one_catches_up() {
    tracing::info!("--- a cluster with 20 committed batches");
    let mut cluster = TestCluster::start().await;
    cluster.write(0..20).await;
    let old = cluster.leader().await;

    tracing::info!("--- stop the leader: the other two elect one of themselves");
    cluster.stop(old).await;
    let new = cluster.leader().await;
    assert_ne!(new, old);

    tracing::info!("--- writes continue on the new leader");
    cluster.write(20..40).await;
    cluster.converged().await;

    tracing::info!("--- the old leader restarts from its data dir and catches up");
    cluster.restart(old).await;
    cluster.write(40..45).await;
    cluster.converged().await;
    for node in cluster.nodes.values() {
        assert_grants(node, 45);
    }
    cluster.shutdown().await;
}

// checks: S1, S2 (a follower that lost its disk is replaced through membership and
// rebuilt from a snapshot, as the log it would need is purged, and ends identical)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_follower_is_rebuilt_from_a_snapshot() {
    tracing::info!("--- a cluster with 30 committed batches; the leader snapshots and purges");
    let mut cluster = TestCluster::start().await;
    cluster.write(0..30).await;
    cluster.converged().await;
    let leader = cluster.leader().await;
    let purged = cluster
        .node(leader)
        .raft
        .wait(Some(PATIENCE))
        .metrics(|m| m.purged.is_some(), "the leader purged its log")
        .await
        .unwrap()
        .purged
        .unwrap();
    tracing::info!(%purged, "the leader's log starts after");

    // A voter must not come back with less log than it acknowledged (openraft's leader
    // panics on it: the entries it counted towards a quorum may be gone). A node that lost
    // its disk leaves the membership first and rejoins as a new learner.
    tracing::info!("--- remove a follower from the membership, stop it, delete its data dir");
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let rest: std::collections::BTreeSet<NodeId> = (1..=3).filter(|id| *id != follower).collect();
    cluster
        .node(leader)
        .raft
        .change_membership(rest, false)
        .await
        .unwrap();
    cluster.stop(follower).await;
    std::fs::remove_dir_all(&cluster.dirs[&follower]).unwrap();

    tracing::info!("--- more writes while it is gone");
    cluster.write(30..40).await;

    tracing::info!("--- it restarts empty, rejoins as a learner, is sent a snapshot, votes again");
    cluster.restart(follower).await;
    let node = ClusterNode {
        raft_addr: cluster.addrs[&follower].to_string(),
        client_addr: "127.0.0.1:1".to_string(),
    };
    tokio::time::timeout(
        PATIENCE,
        cluster.node(leader).raft.add_learner(follower, node, true),
    )
    .await
    .expect("the learner catches up")
    .unwrap();
    cluster
        .node(leader)
        .raft
        .change_membership([1, 2, 3], false)
        .await
        .unwrap();
    cluster.write(40..45).await;
    cluster.converged().await;
    let metrics = cluster.node(follower).raft.metrics().borrow().clone();
    let snapshot = metrics.snapshot.expect("the follower holds a snapshot");
    assert!(
        snapshot.index >= purged.index,
        "the follower's snapshot {snapshot} covers the leader's purged log {purged}"
    );
    // Grants 0.. were in entries at or below `purged`, which no log holds any more: the
    // follower has them only through the snapshot, which was larger than one chunk.
    let image_bytes: usize = cluster
        .node(follower)
        .image
        .records()
        .unwrap()
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    assert!(image_bytes > 2 * usize::try_from(SNAPSHOT_CHUNK_BYTES).unwrap());
    assert_grants(cluster.node(follower), 45);
    cluster.shutdown().await;
}

// checks: S2 (a voter back under its old id without the log it acknowledged, its disk
// wiped, crashes no leader: it is refused as unreachable and the others go on
// committing; the way back in is the membership change of the test above)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_without_its_log_is_shut_out_not_a_crash() {
    tracing::info!("--- a cluster with 10 committed batches");
    let mut cluster = TestCluster::start().await;
    cluster.write(0..10).await;
    cluster.converged().await;
    let leader = cluster.leader().await;
    let wiped = (1..=3).find(|id| *id != leader).unwrap();
    let others: Vec<NodeId> = (1..=3).filter(|id| *id != wiped).collect();

    tracing::info!("--- stop a follower, delete its data dir, start it again under its id");
    cluster.stop(wiped).await;
    std::fs::remove_dir_all(&cluster.dirs[&wiped]).unwrap();
    cluster.restart(wiped).await;

    tracing::info!("--- the others commit on; the leader meets the wiped node and lives");
    cluster.write_among(&others, 10..20).await;
    tokio::time::sleep(4 * UNREACHABLE_BACKOFF).await;
    cluster.write_among(&others, 20..25).await;
    for id in &others {
        let state = cluster
            .node(*id)
            .raft
            .metrics()
            .borrow()
            .running_state
            .clone();
        assert!(state.is_ok(), "node {id}'s raft core stopped: {state:?}");
    }
    // The wiped node stays out while the leader would have to send it entries it lost;
    // once the leader's log is purged past them, it is sent a snapshot like any node that
    // fell behind (which holds everything it had acknowledged).
    cluster.shutdown().await;
}

/// A cluster with 10 committed batches, its leader and the two followers.
async fn ten_batches_and_their_leader() -> (TestCluster, NodeId, Vec<NodeId>) {
    tracing::info!("--- a cluster with 10 committed batches");
    let cluster = TestCluster::start().await;
    cluster.write(0..10).await;
    cluster.converged().await;
    let leader = cluster.leader().await;
    let followers = (1..=3).filter(|id| *id != leader).collect();
    (cluster, leader, followers)
}

/// Fails if a write on node `id` commits within 3 election timeouts; `who` names the node
/// in the failure.
async fn assert_commits_nothing(cluster: &TestCluster, id: NodeId, who: &str) {
    let stranded = tokio::time::timeout(
        3 * ELECTION_TIMEOUT_MAX,
        cluster.node(id).raft.client_write(batch(STRANDED)),
    )
    .await;
    assert!(
        !matches!(stranded, Ok(Ok(_))),
        "{who} committed a write: {stranded:?}"
    );
}

// checks: S1, S2, S3 (a leader cut off from both followers commits nothing; the two elect
// a leader that commits; after the cut heals the old leader's uncommitted write is gone
// and every image is identical)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_followers_cannot_commit() {
    let (cluster, old, followers) = ten_batches_and_their_leader().await;

    tracing::info!("--- cut every link between the leader and the followers");
    for follower in &followers {
        cluster.node(old).links.cut(*follower);
        cluster.node(*follower).links.cut(old);
    }

    tracing::info!("--- a write on the cut-off leader does not commit within 3 election timeouts");
    assert_commits_nothing(&cluster, old, "a leader without a quorum").await;

    tracing::info!("--- the two followers elect a leader of their own, which commits");
    let new = cluster.leader_among(&followers).await;
    tracing::info!(new, "elected");
    cluster.write_among(&followers, 10..20).await;

    tracing::info!("--- heal: the old leader follows, its stranded write is gone");
    for follower in &followers {
        cluster.node(old).links.heal(*follower);
        cluster.node(*follower).links.heal(old);
    }
    let leader = cluster.leader().await;
    assert_ne!(leader, old, "the old leader's term is behind");
    cluster.converged().await;
    for node in cluster.nodes.values() {
        assert_grants(node, 20);
    }
    cluster.shutdown().await;
}

// checks: S1, S2, S3 (an asymmetric cut: the leader's messages to its followers are lost
// while theirs reach it. The followers elect a leader of their own, whose messages depose
// the old one: it confirms no leadership and commits nothing; after the heal every image is
// identical)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_messages_are_lost_one_way_is_deposed() {
    let (cluster, old, followers) = ten_batches_and_their_leader().await;

    tracing::info!("--- cut the links from the leader to the followers, one way only");
    for follower in &followers {
        cluster.node(old).links.cut(*follower);
    }

    tracing::info!("--- the followers elect a leader of their own, which commits");
    let new = cluster.leader_among(&followers).await;
    tracing::info!(new, "elected");
    cluster.write_among(&followers, 10..20).await;

    tracing::info!("--- the old leader, still reached by the new one, confirms nothing");
    let confirmed = tokio::time::timeout(
        3 * ELECTION_TIMEOUT_MAX,
        cluster.node(old).raft.ensure_linearizable(),
    )
    .await;
    assert!(
        !matches!(confirmed, Ok(Ok(_))),
        "a deposed leader confirmed its leadership: {confirmed:?}"
    );
    assert_commits_nothing(&cluster, old, "a deposed leader").await;

    tracing::info!("--- heal: every image is identical, without the stranded write");
    for follower in &followers {
        cluster.node(old).links.heal(*follower);
    }
    cluster.converged().await;
    for node in cluster.nodes.values() {
        assert_grants(node, 20);
    }
    cluster.shutdown().await;
}

// checks: S1, S2, S3 (the followers' answers to the leader are lost while its messages
// reach them, so their election timers never run out: the leader cannot commit, steps
// down after four election timeouts without a quorum (quorum_watch), and the followers
// elect a leader of their own that commits; after the heal every image is identical)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_answers_are_lost_is_replaced() {
    let (cluster, old, followers) = ten_batches_and_their_leader().await;

    tracing::info!("--- the followers' answers to the leader are lost; its messages reach them");
    for follower in &followers {
        cluster.node(old).links.lose_answers(*follower);
    }
    assert_commits_nothing(&cluster, old, "a leader that hears no answer").await;

    tracing::info!("--- the followers elect a leader of their own, which commits");
    let new = cluster.leader_among(&followers).await;
    tracing::info!(new, "elected");
    cluster.write_among(&followers, 10..20).await;

    tracing::info!("--- heal: every image is identical");
    for follower in &followers {
        cluster.node(old).links.heal(*follower);
    }
    cluster.converged().await;
    // The old leader's stranded write reached the followers (only their answers were
    // lost), so the new leader may commit it with its own entries: a write whose client
    // saw no answer may or may not have landed. Every image holds the 20 grants, and all
    // hold the stranded one or none does (converged compared them).
    for node in cluster.nodes.values() {
        let recovered = node.image.read_back().unwrap();
        let stranded = recovered
            .locks
            .iter()
            .any(|held| held.lock == batch_lock(STRANDED));
        assert_eq!(
            recovered.locks.len(),
            20 + usize::from(stranded),
            "node {}",
            node.id
        );
    }
    cluster.shutdown().await;
}

/// A peer that is down but whose address takes connections: it accepts each one and
/// closes it at once. Counts the connections.
async fn black_hole() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let accepted = accepted.clone();
        async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        }
    });
    (addr, accepted)
}

// checks: S3 (a member that is down costs the leader one connection attempt per backoff
// pause, not one per heartbeat: the failure reaches openraft as `Unreachable`)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_backs_off_from_a_member_that_is_down() {
    tracing::info!("--- two nodes up; the third member's address closes every connection");
    let (addr, accepted) = black_hole().await;
    let cluster = TestCluster::start_with(BTreeMap::from([(3, addr)])).await;
    cluster.write(0..5).await;

    tracing::info!("--- over 3 s (30 heartbeats), the leader tries the dead member about 6 times");
    let watched = Duration::from_secs(3);
    let before = accepted.load(Ordering::SeqCst);
    tokio::time::sleep(watched).await;
    let attempts = accepted.load(Ordering::SeqCst) - before;
    let heartbeats = watched.as_millis() / 100;
    tracing::info!(attempts, "connection attempts to the dead member");
    assert!(
        attempts * 2 < usize::try_from(heartbeats).unwrap(),
        "{attempts} connection attempts in {watched:?}: the leader does not back off \
         (one attempt per heartbeat would be {heartbeats})"
    );
    assert!(attempts > 0, "the leader keeps trying the dead member");
    cluster.shutdown().await;
}
