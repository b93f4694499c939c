//! The batched leadership check ([`super::leadership`]) on three real nodes
//! ([`super::multi_node_tests::TestCluster`]): many callers share few rounds, and none is
//! answered by a round that began before it arrived; a leader cut off from its followers
//! confirms nothing, while the other two elect a leader that does, and once the cut heals
//! the old leader points callers at the new one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::leadership::{Leadership, LeadershipConfig, LeadershipError};
use super::multi_node_tests::{assert_grants, TestCluster, ELECTION_TIMEOUT_MAX, PATIENCE};
use super::types::NodeId;

/// A leadership check over node `id`'s raft core, stopped by `shutdown`.
fn leadership(cluster: &TestCluster, id: NodeId, shutdown: &CancellationToken) -> Leadership {
    let raft = cluster.node(id).raft.clone();
    Leadership::spawn(raft, LeadershipConfig::default(), shutdown.clone()).unwrap()
}

/// Whether `error` is one of the refusals a check may give while leadership moves.
fn is_refusal(error: &LeadershipError) -> bool {
    matches!(
        error,
        LeadershipError::NotLeader { .. }
            | LeadershipError::NoQuorum { .. }
            | LeadershipError::Timeout { .. }
    )
}

// checks: S3, S7 (one heartbeat round serves every caller that arrived before it began, and
// no caller is confirmed by a round that began before it arrived)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_confirms_share_a_few_rounds_each_begun_after_its_callers() {
    tracing::info!("--- a cluster with 20 committed batches and a check on its leader");
    let cluster = TestCluster::start().await;
    cluster.write(0..20).await;
    let leader = cluster.leader().await;
    let shutdown = CancellationToken::new();
    let check = leadership(&cluster, leader, &shutdown);

    tracing::info!("--- a linearizable read on the leader sees every committed batch");
    let read = tokio::time::timeout(PATIENCE, check.linearizable_read())
        .await
        .expect("the read is answered")
        .unwrap();
    assert!(read.read.read_log_id.is_some());
    assert_grants(cluster.node(leader), 20);

    tracing::info!("--- 1000 callers at once, each noting when it arrived");
    let callers = 1000u64;
    let before = check.rounds();
    let mut calls = JoinSet::new();
    for i in 0..callers {
        let check = check.clone();
        calls.spawn(async move {
            let arrived = Instant::now();
            let answer = if i % 2 == 0 {
                check.confirm_leader().await
            } else {
                check.linearizable_read().await
            };
            (arrived, answer)
        });
    }
    let mut confirmed = 0u64;
    while let Some(call) = tokio::time::timeout(PATIENCE, calls.join_next())
        .await
        .expect("every caller is answered")
    {
        let (arrived, answer) = call.unwrap();
        match answer {
            Ok(round) => {
                assert!(
                    round.round_started > arrived,
                    "round {} began {:?} before a caller it confirmed arrived",
                    round.round,
                    arrived - round.round_started
                );
                confirmed += 1;
            }
            Err(error) => assert!(is_refusal(&error), "unexpected failure: {error}"),
        }
    }
    let rounds = check.rounds() - before;
    tracing::info!(rounds, confirmed, "rounds for {callers} callers");
    assert!(confirmed > 0, "no caller was confirmed");
    assert!(
        rounds * 10 <= callers,
        "{rounds} rounds for {callers} callers: the check does not batch"
    );
    shutdown.cancel();
    cluster.shutdown().await;
}

// checks: S3, S7 (a deposed leader confirms no renewal: a leader cut off from its
// followers never confirms a call that arrives after the cut; the other two elect a
// leader whose check succeeds; after the heal the old one names the new leader)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_followers_confirms_nothing() {
    tracing::info!("--- a cluster with 10 committed batches; the leader confirms");
    let cluster = TestCluster::start().await;
    cluster.write(0..10).await;
    let old = cluster.leader().await;
    let shutdown = CancellationToken::new();
    let old_check = leadership(&cluster, old, &shutdown);
    tokio::time::timeout(PATIENCE, old_check.confirm_leader())
        .await
        .expect("the check is answered")
        .unwrap();

    tracing::info!("--- cut every link between the leader and the followers");
    let followers: Vec<NodeId> = (1..=3).filter(|id| *id != old).collect();
    for follower in &followers {
        cluster.node(old).links.cut(*follower);
        cluster.node(*follower).links.cut(old);
    }

    tracing::info!("--- for 3 election timeouts, every check on the old leader fails");
    let watched = Instant::now();
    let mut refused = 0u32;
    while watched.elapsed() < 3 * ELECTION_TIMEOUT_MAX {
        match tokio::time::timeout(ELECTION_TIMEOUT_MAX, old_check.confirm_leader()).await {
            Err(_still_waiting) => refused += 1,
            Ok(Err(error)) => {
                assert!(is_refusal(&error), "unexpected failure: {error}");
                refused += 1;
            }
            Ok(Ok(round)) => panic!("a cut-off leader confirmed its leadership: {round:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(refused, "checks refused on the cut-off leader");
    assert!(refused > 0);

    tracing::info!("--- the two followers elect a leader, whose check succeeds");
    let new = cluster.leader_among(&followers).await;
    let new_check = leadership(&cluster, new, &shutdown);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout(PATIENCE, new_check.confirm_leader())
            .await
            .expect("the check is answered")
        {
            Ok(_) => break,
            Err(error) => {
                assert!(is_refusal(&error), "unexpected failure: {error}");
                assert!(Instant::now() < deadline, "the new leader never confirmed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(
        old_check.confirm_leader().await.is_err(),
        "the old leader confirmed while a new one leads"
    );

    tracing::info!("--- heal: the old leader refuses with the new leader's id and address");
    for follower in &followers {
        cluster.node(old).links.heal(*follower);
        cluster.node(*follower).links.heal(old);
    }
    let leader = cluster.leader().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout(PATIENCE, old_check.confirm_leader())
            .await
            .expect("the check is answered")
        {
            Ok(round) => panic!("the deposed leader confirmed: {round:?}"),
            Err(LeadershipError::NotLeader {
                leader_id: Some(id),
                leader_node: Some(node),
            }) if id == leader => {
                assert_eq!(node.raft_addr, cluster.addrs[&leader].to_string());
                break;
            }
            Err(error) => {
                assert!(is_refusal(&error), "unexpected failure: {error}");
                assert!(
                    Instant::now() < deadline,
                    "the old leader never named the new one: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    shutdown.cancel();
    cluster.shutdown().await;
}
