//! [`spawn_quorum_watch`]: a leader that has heard no quorum's acknowledgement for a while
//! stops leading (what etcd calls CheckQuorum; openraft 0.9 has none).
//!
//! Why: a follower stays with its leader for as long as the leader's heartbeats reach it,
//! whether or not its answers reach the leader. A leader whose messages get through while
//! the answers to them are lost (a one-way fault on the way back) can commit nothing and
//! confirms no leadership (C1, C2), yet its heartbeats keep every follower from starting an
//! election: without this watch the cluster stays unavailable until the fault heals.
//!
//! How: every heartbeat interval the watch reads the raft metrics. A leader of more than
//! one voter whose last acknowledgement by a quorum is older than `after` votes, on its
//! own core, for a candidate that is never a member (node id 0, which the settings refuse
//! as a member's id) at the next term. The core takes the higher vote, stops leading and
//! sends no more heartbeats; once their leader lease runs out, the followers elect a
//! leader among themselves, which the old leader follows when its messages reach it.
//! Until it sees a leader (for `after` at most) the old leader starts no election of its
//! own: its vote requests would still reach the followers and, carrying ever higher terms
//! it can never win with (their grants are lost on the way back), keep interrupting the
//! election they can win (openraft 0.9 has no pre-vote to stop that).
//!
//! Why it is safe: a node may vote once per term for any candidate whose log is not
//! behind; this vote goes to a candidate that does not exist and so can never count
//! towards any leader's election. It only spends the old leader's vote in that term and
//! ends its leadership, which it could lose to any election anyway.

use std::time::Duration;

use openraft::raft::VoteRequest;
use openraft::{CommittedLeaderId, Raft, ServerState, Vote};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::types::{LogId, NodeId, TypeConfig};

/// The candidate a leader that steps down votes for: an id no member may have.
pub const NO_CANDIDATE: NodeId = 0;

/// How many of the longest election timeouts a leader may go without a quorum's
/// acknowledgement before it steps down. A healthy leader hears from a quorum every
/// heartbeat; four election timeouts leave room for a slow disk or a loaded machine, and
/// cost the cluster that long (plus an election) when the fault is real.
pub const STEP_DOWN_AFTER_ELECTION_TIMEOUTS: u32 = 4;

/// Starts the watch on `raft` until `stop` is cancelled: a leader without a quorum's
/// acknowledgement for [`STEP_DOWN_AFTER_ELECTION_TIMEOUTS`] longest election timeouts
/// steps down (see the module documentation).
pub fn spawn_quorum_watch(raft: Raft<TypeConfig>, stop: CancellationToken) -> JoinHandle<()> {
    let config = raft.config();
    let every = Duration::from_millis(config.heartbeat_interval.max(1));
    let after = Duration::from_millis(config.election_timeout_max)
        .saturating_mul(STEP_DOWN_AFTER_ELECTION_TIMEOUTS);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(term) = stale_leadership(&raft, after) else {
                continue;
            };
            tracing::warn!(
                term,
                after_ms = after.as_millis() as u64,
                "no quorum acknowledged this leader for too long: stepping down"
            );
            let vote = Vote::new(term + 1, NO_CANDIDATE);
            // A log id above any real one, so the vote is not refused for the log: the
            // candidate does not exist and cannot use the vote.
            let above_all = LogId::new(CommittedLeaderId::new(u64::MAX, NO_CANDIDATE), u64::MAX);
            raft.runtime_config().elect(false);
            if let Err(error) = raft.vote(VoteRequest::new(vote, Some(above_all))).await {
                tracing::warn!(%error, "stepping down failed; the raft core is stopping");
                return;
            }
            let waiting = raft.wait(Some(after));
            let led = waiting.metrics(
                |m| m.current_leader.is_some(),
                "a leader after stepping down",
            );
            let followed = tokio::select! {
                () = stop.cancelled() => return,
                followed = led => followed,
            };
            if let Ok(metrics) = followed {
                tracing::info!(leader = ?metrics.current_leader, "following after stepping down");
            }
            raft.runtime_config().elect(true);
        }
    })
}

/// The term of this node's leadership if it leads more than one voter and no quorum has
/// acknowledged it within `after`.
fn stale_leadership(raft: &Raft<TypeConfig>, after: Duration) -> Option<u64> {
    let metrics = raft.metrics().borrow().clone();
    let voters = metrics.membership_config.membership().voter_ids().count();
    let since_ack = Duration::from_millis(metrics.millis_since_quorum_ack?);
    (metrics.state == ServerState::Leader && voters > 1 && since_ack > after)
        .then_some(metrics.current_term)
}
