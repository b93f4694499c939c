//! [`Promoter`]: tells the server when this node becomes the leader under a new vote, with
//! the committed state to rebuild its lock table from ([`Promotion`]), and when it stops
//! leading ([`Demotion`]).
//!
//! Promotion, in order:
//! 1. openraft's metrics show this node leading under a vote it was not promoted under;
//! 2. the promoter commits a barrier of its own through `client_write`: a [`CommitBatch`]
//!    that sets the image's [`Epoch`] and changes no lock record, so what
//!    [`Image::read_back`] returns is as before, and batches of any earlier term that are
//!    still in flight are skipped from here on ([`crate::cluster::epoch`]). openraft's
//!    blank entry is not enough: a leader that restarts can resume its term without one.
//!    `client_write` returns once the barrier is committed on a quorum and applied here,
//!    so everything any earlier leader committed is applied too;
//! 3. it notes [`Promotion::promoted_at`], then reads the applied image back
//!    ([`Image::read_back`]).
//!
//! The server then rebuilds its lock table from [`Promotion::restored`] with every lease's
//! deadline at `promoted_at + TTL` (its full TTL). Why that never ends a lease before its
//! holder believes it ends, even for a renewal the previous leader confirmed just before
//! it was deposed, and how much longer than its TTL a lease may live across a failover, is
//! argued in [`crate::cluster::leadership`]: `promoted_at` is after the start of every
//! leadership round the previous leader completed.
//!
//! Demotion: the metrics show this node not leading, or leading under another vote, after
//! a promotion. The server must stop confirming renewals and granting at once (its
//! [`crate::cluster::leadership::Leadership`] check already refuses them).

use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, RaftMetrics, ServerState, Vote};
use tokio::sync::watch;

use crate::cluster::epoch::Epoch;
use crate::cluster::state_machine::Image;
use crate::cluster::types::{ClusterNode, CommitBatch, LogId, NodeId, TypeConfig};
use crate::recovery::Recovered;

/// This node became the leader: the committed state to serve from.
#[derive(Debug)]
pub struct Promotion {
    /// The vote this node leads under.
    pub vote: Vote<NodeId>,
    /// Its term.
    pub term: u64,
    /// Where this node's barrier was committed: everything before it is in `restored`.
    pub barrier_log_id: LogId,
    /// The epoch the barrier started: every batch of this term must expect it.
    pub epoch: Epoch,
    /// When the barrier was committed and applied, on this node's monotonic clock: every
    /// restored lease's deadline is this plus its full TTL.
    pub promoted_at: Instant,
    /// The lock table's committed state.
    pub restored: Recovered,
}

/// This node stopped leading under the vote it was promoted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demotion {
    /// The vote it had been promoted under.
    pub was: Vote<NodeId>,
    /// The leader this node now knows of, if any.
    pub leader: Option<NodeId>,
}

/// A change of this node's role.
#[derive(Debug)]
pub enum RoleChange {
    /// This node leads under a new vote; serve from this state.
    Promoted(Promotion),
    /// This node no longer leads; stop serving as the leader.
    Demoted(Demotion),
}

/// Why the promoter cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    /// The raft core stopped (a fatal error or a shutdown).
    #[error("the raft core stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
    /// The barrier was refused for a reason other than a lost leadership.
    #[error("the barrier of term {term} was refused: {reason}")]
    Barrier {
        /// The term this node led in.
        term: u64,
        /// openraft's reason.
        reason: String,
    },
    /// The applied image does not read back as the lock table's state.
    #[error("the applied image after the barrier at {barrier} does not read back: {source}")]
    ReadBack {
        /// The barrier's log id.
        barrier: LogId,
        /// Why.
        source: Box<crate::Error>,
    },
}

/// Watches this node's raft metrics and turns leadership changes into [`RoleChange`]s.
pub struct Promoter {
    /// This node's id.
    me: NodeId,
    /// This node's raft core.
    raft: Raft<TypeConfig>,
    /// Its state machine's image.
    image: Image,
    /// Its metrics.
    metrics: watch::Receiver<RaftMetrics<NodeId, ClusterNode>>,
    /// The vote this node was last promoted under, while it leads under it.
    leading: Option<Vote<NodeId>>,
    /// How many promotions this promoter attempted.
    promotions: u64,
    /// This process's share of every epoch ([`Epoch::process`]).
    process: u64,
}

impl Promoter {
    /// A promoter of node `me`; its first [`Promoter::next`] reports a promotion if the
    /// node leads already.
    pub fn new(me: NodeId, raft: Raft<TypeConfig>, image: Image) -> Promoter {
        let metrics = raft.metrics();
        Promoter {
            me,
            raft,
            image,
            metrics,
            leading: None,
            promotions: 0,
            process: Epoch::process_nonce(),
        }
    }

    /// Forgets the promotion this node leads under, so that the next [`Promoter::next`]
    /// promotes it again (a new barrier, a new epoch, the state read back again) if it
    /// still leads: what the server does when its term of service ended for a reason other
    /// than a lost vote (a commit that failed or timed out).
    pub fn forget(&mut self) {
        self.leading = None;
    }

    /// Waits for the next change of role. Cancelling it while it waits loses nothing;
    /// cancelling it during a promotion abandons that attempt and the next call starts
    /// another (with another barrier).
    pub async fn next(&mut self) -> Result<RoleChange, PromotionError> {
        loop {
            let (leads_under, leader) = {
                let metrics = self.metrics.borrow_and_update();
                let leads = metrics.state == ServerState::Leader
                    && metrics.current_leader == Some(self.me)
                    && metrics.vote.is_committed();
                (leads.then_some(metrics.vote), metrics.current_leader)
            };
            match (self.leading, leads_under) {
                (Some(was), now) if now != Some(was) => {
                    self.leading = None;
                    return Ok(RoleChange::Demoted(Demotion { was, leader }));
                }
                (None, Some(vote)) => {
                    if let Some(promotion) = self.promote(vote).await? {
                        self.leading = Some(vote);
                        return Ok(RoleChange::Promoted(promotion));
                    }
                }
                _ => {}
            }
            self.metrics
                .changed()
                .await
                .map_err(|_| PromotionError::Stopped {
                    reason: "the metrics channel closed".to_string(),
                })?;
        }
    }

    /// Commits the barrier under `vote` and reads the image back; `None` when leadership
    /// was lost on the way.
    async fn promote(&mut self, vote: Vote<NodeId>) -> Result<Option<Promotion>, PromotionError> {
        let term = vote.leader_id().get_term();
        self.promotions += 1;
        let epoch = Epoch {
            term,
            promotion: self.promotions,
            process: self.process,
        };
        let barrier = CommitBatch(epoch.barrier());
        let written = match self.raft.client_write(barrier).await {
            Ok(written) => written,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => return Ok(None),
            Err(RaftError::APIError(error)) => {
                return Err(PromotionError::Barrier {
                    term,
                    reason: error.to_string(),
                })
            }
            Err(RaftError::Fatal(fatal)) => {
                return Err(PromotionError::Stopped {
                    reason: fatal.to_string(),
                })
            }
        };
        let promoted_at = Instant::now();
        if self.raft.metrics().borrow().vote != vote {
            return Ok(None);
        }
        let restored = self
            .image
            .read_back()
            .map_err(|source| PromotionError::ReadBack {
                barrier: written.log_id,
                source: Box::new(source),
            })?;
        Ok(Some(Promotion {
            vote,
            term,
            barrier_log_id: written.log_id,
            epoch,
            promoted_at,
            restored,
        }))
    }
}
