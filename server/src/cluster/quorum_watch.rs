//! [`spawn_quorum_watch`]: a leader that has heard no quorum's acknowledgement for a while
//! stops leading (what etcd calls CheckQuorum; openraft 0.9 has none).
//!
//! Why: a follower stays with its leader for as long as the leader's heartbeats reach it,
//! whether or not its answers reach the leader. A leader whose messages get through while
//! the answers to them are lost (a one-way fault on the way back) can commit nothing and
//! confirms no leadership (C1, C2), yet its heartbeats keep every follower from starting an
//! election: without this watch the cluster stays unavailable until the fault heals.
//!
//! How: every heartbeat interval the watch reads the raft metrics ([`Seen::stale`]). A
//! leader of more than one voter whose last acknowledgement by a quorum is older than
//! `after` (or, never acknowledged in its term, that has led for longer than `after` since
//! the watch first saw it leading) votes, on its own core, for a candidate that is never a member (node id 0, which the settings refuse
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

use std::time::{Duration, Instant};

use openraft::raft::VoteRequest;
use openraft::{CommittedLeaderId, Raft, RaftMetrics, ServerState, Vote};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::types::{ClusterNode, LogId, NodeId, TypeConfig};

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
        let mut seen = Seen::default();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let look = Look::of(&raft.metrics().borrow());
            let Some(term) = seen.stale(look, Instant::now(), after) else {
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
            // A leader of a later term: the metrics may still show this node leading
            // `term` for a moment after the vote.
            let led = waiting.metrics(
                |m| m.current_term > term && m.current_leader.is_some(),
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

/// What the watch reads of the raft metrics at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// Whether this node leads.
    pub leading: bool,
    /// How many voters the membership has.
    pub voters: usize,
    /// The current term.
    pub term: u64,
    /// How long ago a quorum last acknowledged this leader; `None` if none has since it
    /// began to lead.
    pub since_quorum_ack: Option<Duration>,
}

impl Look {
    /// A look at `metrics`.
    pub fn of(metrics: &RaftMetrics<NodeId, ClusterNode>) -> Look {
        Look {
            leading: metrics.state == ServerState::Leader,
            voters: metrics.membership_config.membership().voter_ids().count(),
            term: metrics.current_term,
            since_quorum_ack: metrics.millis_since_quorum_ack.map(Duration::from_millis),
        }
    }
}

/// What the watch remembers between looks: when it first saw this node lead the current
/// term, for a leader that no quorum has acknowledged yet.
#[derive(Debug, Default)]
pub struct Seen {
    /// The term this node was seen leading, and when it was first seen doing so.
    leading_since: Option<(u64, Instant)>,
}

impl Seen {
    /// The term to step down from after `look` at `now`: this node leads more than one
    /// voter, and no quorum has acknowledged it for longer than `after` (counted from the
    /// first look at its leadership of the term when no quorum ever has).
    pub fn stale(&mut self, look: Look, now: Instant, after: Duration) -> Option<u64> {
        if !look.leading || look.voters <= 1 {
            self.leading_since = None;
            return None;
        }
        let since = match self.leading_since {
            Some((term, since)) if term == look.term => since,
            _ => {
                self.leading_since = Some((look.term, now));
                now
            }
        };
        let silent = look
            .since_quorum_ack
            .unwrap_or_else(|| now.saturating_duration_since(since));
        (silent > after).then_some(look.term)
    }
}
