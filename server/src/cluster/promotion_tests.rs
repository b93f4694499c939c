//! Promotion ([`super::promotion`]) on three real nodes
//! ([`super::multi_node_tests::TestCluster`]): the leader is promoted once with the state
//! the cluster committed; after it is killed the next leader is promoted with every batch
//! committed before, after the start of the last leadership round the old leader
//! confirmed; a new leader that holds committed entries it has not applied (its
//! followers never heard they were committed) is not promoted until its barrier commits;
//! a leader cut off and healed is demoted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::leadership::{Leadership, LeadershipConfig};
use super::multi_node_tests::{TestCluster, ELECTION_TIMEOUT_MAX, PATIENCE};
use super::promotion::{Promoter, Promotion, PromotionError, RoleChange};
use super::types::NodeId;
use crate::recovery::Recovered;

/// A role change of one node, as the watchers report them.
type Event = (NodeId, Result<RoleChange, PromotionError>);

/// Runs a promoter on node `id`, reporting every change on `events` until it fails.
fn watch_roles(
    cluster: &TestCluster,
    id: NodeId,
    events: mpsc::UnboundedSender<Event>,
) -> JoinHandle<()> {
    let node = cluster.node(id);
    let mut promoter = Promoter::new(id, node.raft.clone(), node.image.clone());
    tokio::spawn(async move {
        loop {
            let change = promoter.next().await;
            let stop = change.is_err();
            if events.send((id, change)).is_err() || stop {
                return;
            }
        }
    })
}

/// The next promotion reported by any node but `not`, skipping other events.
async fn next_promotion(
    events: &mut mpsc::UnboundedReceiver<Event>,
    not: Option<NodeId>,
) -> (NodeId, Promotion) {
    loop {
        let (id, change) = tokio::time::timeout(PATIENCE, events.recv())
            .await
            .expect("a node is promoted")
            .unwrap();
        match change {
            Ok(RoleChange::Promoted(promotion)) if Some(id) != not => return (id, promotion),
            other => tracing::info!(id, ?other, "skipping"),
        }
    }
}

/// Checks that `restored` is the lock table's state after grants `0..n`.
fn assert_restored(restored: &Recovered, n: u64) {
    assert_eq!(restored.locks.len(), usize::try_from(n).unwrap());
    assert_eq!(restored.leases.len(), usize::try_from(n).unwrap());
    assert_eq!(restored.next_token.get(), n + 1);
}

// checks: S1, S2, S3, S7 (a new leader serves from every batch committed before it, and
// its promotion instant, from which every lease gets its full TTL, is after the start of
// every round in which the old leader confirmed a renewal)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_is_promoted_with_everything_committed_after_the_old_ones_last_round() {
    tracing::info!("--- a cluster with 10 committed batches; a promoter on every node");
    let mut cluster = TestCluster::start().await;
    cluster.write(0..10).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let watchers: Vec<JoinHandle<()>> = (1..=3)
        .map(|id| watch_roles(&cluster, id, tx.clone()))
        .collect();

    tracing::info!("--- the leader is promoted once, with the 10 batches");
    let (old, first) = next_promotion(&mut events, None).await;
    assert_eq!(old, cluster.leader().await);
    assert_restored(&first.restored, 10);
    assert_eq!(first.barrier_log_id.leader_id.term, first.term);
    let quiet = tokio::time::timeout(2 * ELECTION_TIMEOUT_MAX, events.recv()).await;
    assert!(
        quiet.is_err(),
        "a second role change while stable: {quiet:?}"
    );

    tracing::info!("--- the old leader confirms rounds and commits 10 more batches");
    let shutdown = CancellationToken::new();
    let check = Leadership::spawn(
        cluster.node(old).raft.clone(),
        LeadershipConfig::default(),
        shutdown.clone(),
    )
    .unwrap();
    cluster.write(10..20).await;
    let last_round = tokio::time::timeout(PATIENCE, check.confirm_leader())
        .await
        .expect("the check is answered")
        .unwrap();

    tracing::info!("--- kill the old leader: the next one is promoted with all 20 batches");
    cluster.stop(old).await;
    let (new, second) = next_promotion(&mut events, Some(old)).await;
    assert_ne!(new, old);
    assert_restored(&second.restored, 20);
    assert!(second.term > first.term);
    assert!(second.barrier_log_id > first.barrier_log_id);
    assert!(
        second.promoted_at > last_round.round_started,
        "the new leader was promoted {:?} before the old leader's last confirmed round began",
        last_round.round_started - second.promoted_at
    );
    tracing::info!(
        gap = ?second.promoted_at - last_round.round_started,
        "from the old leader's last confirmed round to the new promotion"
    );
    shutdown.cancel();
    drop(events);
    for watcher in watchers {
        watcher.abort();
    }
    cluster.shutdown().await;
}

// checks: S3, S7 (a leader that is cut off and then hears of a newer one reports its
// demotion; the new leader is promoted under a higher term)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_is_demoted_once_it_hears_of_the_new_one() {
    tracing::info!("--- a cluster with 5 committed batches; the leader is promoted");
    let cluster = TestCluster::start().await;
    cluster.write(0..5).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let watchers: Vec<JoinHandle<()>> = (1..=3)
        .map(|id| watch_roles(&cluster, id, tx.clone()))
        .collect();
    let (old, first) = next_promotion(&mut events, None).await;

    tracing::info!("--- cut the leader off; the others elect and promote one of themselves");
    let followers: Vec<NodeId> = (1..=3).filter(|id| *id != old).collect();
    for follower in &followers {
        cluster.node(old).links.cut(*follower);
        cluster.node(*follower).links.cut(old);
    }
    let (new, second) = next_promotion(&mut events, Some(old)).await;
    assert!(second.term > first.term);
    assert_restored(&second.restored, 5);

    tracing::info!("--- heal: the old leader reports its demotion");
    for follower in &followers {
        cluster.node(old).links.heal(*follower);
        cluster.node(*follower).links.heal(old);
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (id, change) = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the old leader reports its demotion")
            .unwrap();
        match change {
            Ok(RoleChange::Demoted(demotion)) if id == old => {
                assert_eq!(demotion.was, first.vote);
                break;
            }
            other => tracing::info!(id, ?other, "skipping"),
        }
    }
    assert_ne!(new, old);
    for watcher in watchers {
        watcher.abort();
    }
    cluster.shutdown().await;
}

// checks: S1, S2, S3 (a new leader that holds committed entries it has not applied yet is
// not promoted until its barrier commits: it never serves from a stale image)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_that_cannot_commit_its_barrier_is_not_promoted() {
    tracing::info!("--- a cluster with 10 committed batches; the leader is promoted");
    let mut cluster = TestCluster::start().await;
    cluster.write(0..10).await;
    cluster.converged().await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let watchers: Vec<JoinHandle<()>> = (1..=3)
        .map(|id| watch_roles(&cluster, id, tx.clone()))
        .collect();
    let (old, _) = next_promotion(&mut events, None).await;
    let followers: Vec<NodeId> = (1..=3).filter(|id| *id != old).collect();

    tracing::info!("--- the followers stop learning of commits; 10 more batches commit");
    let held = cluster.node(old).raft.metrics().borrow().last_applied;
    for follower in &followers {
        cluster.node(old).links.hold_commit(*follower, held);
    }
    cluster.write_among(&[old], 10..20).await;

    tracing::info!("--- the followers cannot replicate to each other; kill the leader");
    cluster.node(followers[0]).links.cut_appends(followers[1]);
    cluster.node(followers[1]).links.cut_appends(followers[0]);
    cluster.stop(old).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let elected = loop {
        let leading = followers.iter().copied().find(|id| {
            let metrics = cluster.node(*id).raft.metrics().borrow().clone();
            metrics.state == openraft::ServerState::Leader
        });
        if let Some(id) = leading {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no follower was elected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let applied = cluster.node(elected).image.read_back().unwrap();
    tracing::info!(elected, locks = applied.locks.len(), "elected; its image");
    assert!(
        applied.locks.len() < 20,
        "the elected node applied every batch already: the test shows nothing"
    );

    tracing::info!("--- while it cannot commit a barrier, nobody is promoted");
    let quiet = tokio::time::timeout(3 * ELECTION_TIMEOUT_MAX, async {
        loop {
            match events.recv().await {
                Some((id, Ok(RoleChange::Promoted(promotion)))) if id != old => {
                    return (id, promotion)
                }
                _ => {}
            }
        }
    })
    .await;
    if let Ok((id, promotion)) = quiet {
        panic!(
            "node {id} was promoted without a committed barrier, with {} of 20 locks",
            promotion.restored.locks.len()
        );
    }

    tracing::info!("--- heal: a leader is promoted with all 20 batches");
    for (from, to) in [(followers[0], followers[1]), (followers[1], followers[0])] {
        cluster.node(from).links.heal(to);
    }
    let (_, promotion) = next_promotion(&mut events, Some(old)).await;
    assert_restored(&promotion.restored, 20);
    for watcher in watchers {
        watcher.abort();
    }
    cluster.shutdown().await;
}
