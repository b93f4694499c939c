//! [`Leadership`]: the batched leadership check a leader runs before it confirms a renewal
//! or answers a linearizable read, and the argument why a renewal a deposed leader
//! confirmed never outlives the lease a new leader restores.
//!
//! # The check
//! A caller ([`Leadership::confirm_leader`], [`Leadership::linearizable_read`]) is answered
//! only by a *round* that began after it arrived: one `get_read_log_id` of openraft, which
//! sends one heartbeat to every voter and succeeds when a quorum (this node included)
//! acknowledged this leader's vote. One background task runs the rounds, one at a time:
//! while a round is in flight, callers queue for the next one, and a round serves every
//! caller that queued before it began, as group commit serves every write that arrived
//! before its sync. A thousand renewals arriving together cost a few heartbeat rounds, not
//! a thousand (openraft 0.9 sends one round per call of its own).
//!
//! How "began after it arrived" is kept: a caller queues under the queue's mutex; the task
//! takes the whole queue under the same mutex, then notes the round's start
//! ([`Confirmed::round_started`]), then asks openraft, whose core sends the heartbeats when
//! it handles the request, later still. Every caller of a round therefore queued before
//! any heartbeat of the round left.
//!
//! Outcomes: every waiter of a round gets the same answer. A node that is not the leader
//! (openraft's `ForwardToLeader`) answers [`LeadershipError::NotLeader`] with the leader's
//! id and addresses when it knows them, for a redirect; a leader that did not hear from a
//! quorum within the heartbeat interval [`LeadershipError::NoQuorum`]; a round that did
//! not end within [`LeadershipConfig::round_timeout`] [`LeadershipError::Timeout`]. At
//! most [`LeadershipConfig::max_waiters`] callers wait (queued or in the round in flight);
//! past that a caller is refused at once with [`LeadershipError::Overloaded`].
//!
//! # Why a deposed leader's renewal never outlives the new leader's deadline (S3, S7)
//! Let a renewal arrive at the old leader L (term T) at time `a`, and the round that
//! confirmed it start at `s`, with `a < s` (above). The holder computes its deadline from
//! when it sent the renewal, so it believes the lease until at most `a + TTL`.
//! 1. The round succeeded, so a quorum Q1 acknowledged a heartbeat of term T sent after
//!    `s`: each member X of Q1 acknowledged at some `h_X > s`.
//! 2. A new leader N (term T' > T) was elected by a quorum Q2; Q1 and Q2 share a member X.
//!    X cannot have voted for N before acknowledging L's heartbeat: having granted the vote
//!    it holds T' and answers L's heartbeat with `HigherVote`, which the round does not
//!    count. So X voted for N at `v > h_X > s`. openraft adds a margin on top: a follower
//!    refuses every vote request for `leader_lease` (openraft's `election_timeout_max`)
//!    after a heartbeat, so `v >= h_X + election_timeout_max`.
//! 3. N is promoted ([`crate::cluster::promotion`]) only after it was elected and then
//!    committed a barrier of its own, so `promoted_at > v > s > a`, and every lease it
//!    restores is given `promoted_at + TTL > a + TTL`: never less than any holder believes.
//!
//! The ordering is of real time across nodes; each node measures only durations on its own
//! monotonic clock, so the argument holds as long as the nodes' clocks run at the same rate
//! within the margin a TTL leaves (the same assumption every lease makes).
//!
//! # The worst-case lease extension across a failover
//! Full TTL from promotion can make a lease live longer than its TTL, never shorter. If the
//! old leader stops at `d` (it dies, pauses or is cut off: the last heartbeat of its that
//! a follower acknowledged was at most `d`, so no renewal arriving after `d` can be
//! confirmed by a round that succeeds), a follower starts an election
//! no sooner than `leader_lease + election_timeout` after that heartbeat, and no later than
//! `2 x election_timeout_max` after it (openraft 0.9); the vote, the barrier commit and
//! reading the image back (the *promotion time*, `P`) follow. So every lease the old
//! leader held ends on the new leader by
//!
//! `d + 2 x election_timeout_max + P + TTL`   (plus one election timeout per split vote),
//!
//! that is, up to `2 x election_timeout_max + P` after the old leader would have ended it
//! had it died at `d` and been renewed last at `d`. Measured from the holder's last
//! confirmed renewal `a` instead (a holder that stopped renewing), the lease may live
//! `(d - a) + 2 x election_timeout_max + P` longer than its TTL, and `d - a < TTL` (the old
//! leader would have expired it otherwise): at worst TTL + 2 x election_timeout_max + P
//! longer, when the old leader dies just before it would have expired it. Committing a
//! checkpoint of the remaining TTLs would remove the `d - a` term; full TTL from
//! promotion is the simpler rule and errs on the side of the holder.
//!
//! One fault moves `d` later than the old leader's last quorum acknowledgement `q`: its
//! heartbeats still reach the followers while their answers are lost. No round succeeds
//! after `q`, so it confirms nothing after `q`, but the followers hear it, and start no
//! election, until it steps down ([`crate::cluster::quorum_watch`]): at most
//! `4 x election_timeout_max` plus one heartbeat interval after `q`. So `d` is the step-down
//! there, and a lease may outlive its TTL by up to that much more than the bounds above.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::Raft;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::cluster::types::{ClusterNode, LogId, NodeId, TypeConfig};

/// How many callers may wait for a leadership check by default (queued and in flight):
/// one renewal per lease of a busy server, with room to spare.
pub const DEFAULT_MAX_WAITERS: usize = 100_000;

/// How long one round may take by default before its waiters are answered
/// [`LeadershipError::Timeout`]. openraft gives each heartbeat of a round the heartbeat
/// interval; this bounds a round whose core is slow to answer at all.
pub const DEFAULT_ROUND_TIMEOUT: Duration = Duration::from_secs(2);

/// The check's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadershipConfig {
    /// The most callers that may wait (queued for the next round or in the round in
    /// flight); past it a caller is refused with [`LeadershipError::Overloaded`].
    pub max_waiters: usize,
    /// How long one round may take before its waiters are answered
    /// [`LeadershipError::Timeout`].
    pub round_timeout: Duration,
}

impl Default for LeadershipConfig {
    fn default() -> LeadershipConfig {
        LeadershipConfig {
            max_waiters: DEFAULT_MAX_WAITERS,
            round_timeout: DEFAULT_ROUND_TIMEOUT,
        }
    }
}

impl LeadershipConfig {
    /// Refuses bounds that would make every call fail.
    pub fn validate(&self) -> Result<(), LeadershipError> {
        if self.max_waiters == 0 || self.round_timeout.is_zero() {
            return Err(LeadershipError::BadConfig {
                config: self.clone(),
            });
        }
        Ok(())
    }
}

/// Why a leadership check did not confirm this node as the leader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadershipError {
    /// This node is not the leader (openraft's `ForwardToLeader`).
    #[error("this node is not the leader; the leader is {leader_id:?} at {leader_node:?}")]
    NotLeader {
        /// The leader's id, when this node knows it.
        leader_id: Option<NodeId>,
        /// The leader's addresses (its `client_addr` is where to redirect), when known.
        leader_node: Option<ClusterNode>,
    },
    /// A quorum did not acknowledge this leader's heartbeats within the heartbeat interval.
    #[error("leadership not confirmed: only {got:?} of {cluster} acknowledged")]
    NoQuorum {
        /// The membership, as openraft summarizes it.
        cluster: String,
        /// The nodes that acknowledged (this node included).
        got: BTreeSet<NodeId>,
    },
    /// The round did not end within the round timeout.
    #[error("the leadership check did not end within {after:?}")]
    Timeout {
        /// [`LeadershipConfig::round_timeout`].
        after: Duration,
    },
    /// The raft core stopped (a fatal error or a shutdown).
    #[error("the raft core stopped: {reason}")]
    Stopped {
        /// openraft's reason.
        reason: String,
    },
    /// Too many callers already wait for a leadership check.
    #[error("{waiting} callers already wait for a leadership check (at most {max}); retry")]
    Overloaded {
        /// How many wait.
        waiting: usize,
        /// [`LeadershipConfig::max_waiters`].
        max: usize,
    },
    /// The check's task stopped (its shutdown token was cancelled).
    #[error("the leadership check has stopped")]
    Closed,
    /// A configuration with which every call would fail.
    #[error("unusable leadership check configuration {config:?}: max_waiters and round_timeout must be above zero")]
    BadConfig {
        /// The configuration.
        config: LeadershipConfig,
    },
}

impl From<RaftError<NodeId, CheckIsLeaderError<NodeId, ClusterNode>>> for LeadershipError {
    fn from(error: RaftError<NodeId, CheckIsLeaderError<NodeId, ClusterNode>>) -> Self {
        match error {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to)) => {
                LeadershipError::NotLeader {
                    leader_id: to.leader_id,
                    leader_node: to.leader_node,
                }
            }
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(quorum)) => {
                LeadershipError::NoQuorum {
                    cluster: quorum.cluster,
                    got: quorum.got,
                }
            }
            RaftError::Fatal(fatal) => LeadershipError::Stopped {
                reason: fatal.to_string(),
            },
        }
    }
}

/// What one successful round established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadIndex {
    /// The log id a linearizable read must see applied (openraft's read log id).
    pub read_log_id: Option<LogId>,
    /// What the leader had applied when the round was asked for.
    pub applied: Option<LogId>,
}

/// The answer to a caller: the round that confirmed this node's leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    /// The round's number (1 for the first round of this check).
    pub round: u64,
    /// When the round began: after every caller it serves arrived.
    pub round_started: Instant,
    /// The read index the round established.
    pub read: ReadIndex,
}

/// One leadership round, and waiting for the state machine: openraft's raft core, or a
/// scripted stand-in in tests.
pub trait LeaderCheck: Send + Sync + 'static {
    /// Confirms leadership with one heartbeat round to a quorum.
    fn check(&self) -> impl Future<Output = Result<ReadIndex, LeadershipError>> + Send;

    /// Waits until the state machine applied up to `index`.
    fn wait_applied(&self, index: u64) -> impl Future<Output = Result<(), LeadershipError>> + Send;
}

impl LeaderCheck for Raft<TypeConfig> {
    async fn check(&self) -> Result<ReadIndex, LeadershipError> {
        let (read_log_id, applied) = self.get_read_log_id().await?;
        Ok(ReadIndex {
            read_log_id,
            applied,
        })
    }

    async fn wait_applied(&self, index: u64) -> Result<(), LeadershipError> {
        self.wait(None)
            .applied_index_at_least(Some(index), "a linearizable read")
            .await
            .map(|_| ())
            .map_err(|error| LeadershipError::Stopped {
                reason: error.to_string(),
            })
    }
}

/// A waiter's answer.
type Reply = oneshot::Sender<Result<Confirmed, LeadershipError>>;

/// The callers waiting for a round.
#[derive(Default)]
struct Queue {
    /// Callers that arrived since the round in flight began.
    next: Vec<Reply>,
    /// How many callers the round in flight serves.
    in_flight: usize,
    /// The task stopped: no round will come.
    closed: bool,
}

/// What the handles and the round task share.
struct Shared<C> {
    /// Runs the rounds.
    check: C,
    /// The bounds.
    config: LeadershipConfig,
    /// The waiting callers. `std::sync::Mutex`: held only to push or take, never across
    /// an await.
    queue: Mutex<Queue>,
    /// Wakes the task when a caller queues.
    wake: Notify,
    /// Rounds begun so far.
    rounds: AtomicU64,
}

impl<C> Shared<C> {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Every change to the queue is one push, one take or one flag: valid whatever a
        // panicking holder left.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The batched leadership check of one node: a cheap `Clone` handle over the queue its
/// round task serves. See the module documentation.
pub struct Leadership<C = Raft<TypeConfig>> {
    /// Shared with the round task.
    shared: Arc<Shared<C>>,
}

impl<C> Clone for Leadership<C> {
    fn clone(&self) -> Self {
        Leadership {
            shared: self.shared.clone(),
        }
    }
}

impl<C: LeaderCheck> Leadership<C> {
    /// Starts the round task, which runs until `shutdown` is cancelled (its waiters are
    /// then answered [`LeadershipError::Closed`]).
    pub fn spawn(
        check: C,
        config: LeadershipConfig,
        shutdown: CancellationToken,
    ) -> Result<Leadership<C>, LeadershipError> {
        config.validate()?;
        let shared = Arc::new(Shared {
            check,
            config,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            rounds: AtomicU64::new(0),
        });
        tokio::spawn(run_rounds(shared.clone(), shutdown));
        Ok(Leadership { shared })
    }

    /// Ok once a round that began after this call confirmed this node as the leader: what
    /// a renewal waits for before it is confirmed.
    pub async fn confirm_leader(&self) -> Result<Confirmed, LeadershipError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.shared.queue();
            if queue.closed {
                return Err(LeadershipError::Closed);
            }
            let waiting = queue.next.len() + queue.in_flight;
            let max = self.shared.config.max_waiters;
            if waiting >= max {
                return Err(LeadershipError::Overloaded { waiting, max });
            }
            queue.next.push(reply);
        }
        self.shared.wake.notify_one();
        answer.await.map_err(|_| LeadershipError::Closed)?
    }

    /// As [`Leadership::confirm_leader`], then waits until this node's state machine
    /// applied up to the round's read log id: what a linearizable read (CheckToken,
    /// Describe, List) waits for before it reads the leader's state.
    pub async fn linearizable_read(&self) -> Result<Confirmed, LeadershipError> {
        let confirmed = self.confirm_leader().await?;
        if let Some(read) = confirmed.read.read_log_id {
            let applied = confirmed.read.applied.map(|applied| applied.index);
            if applied < Some(read.index) {
                self.shared.check.wait_applied(read.index).await?;
            }
        }
        Ok(confirmed)
    }

    /// How many rounds have begun: the number of heartbeat rounds the callers cost.
    pub fn rounds(&self) -> u64 {
        self.shared.rounds.load(Ordering::SeqCst)
    }
}

/// The round task: takes every queued caller, runs one round, answers them all, repeats.
async fn run_rounds<C: LeaderCheck>(shared: Arc<Shared<C>>, shutdown: CancellationToken) {
    loop {
        let waiters = {
            let mut queue = shared.queue();
            queue.in_flight = queue.next.len();
            std::mem::take(&mut queue.next)
        };
        if waiters.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = shared.wake.notified() => continue,
            }
        }
        // After the take: every waiter of this round queued before this instant.
        let round_started = Instant::now();
        let round = shared.rounds.fetch_add(1, Ordering::SeqCst) + 1;
        let timeout = shared.config.round_timeout;
        let outcome = tokio::select! {
            () = shutdown.cancelled() => Err(LeadershipError::Closed),
            checked = tokio::time::timeout(timeout, shared.check.check()) => match checked {
                Ok(checked) => checked,
                Err(_elapsed) => Err(LeadershipError::Timeout { after: timeout }),
            },
        };
        let answer = outcome.map(|read| Confirmed {
            round,
            round_started,
            read,
        });
        for waiter in waiters {
            // A caller that gave up dropped its receiver; nothing to tell it.
            let _ = waiter.send(answer.clone());
        }
        shared.queue().in_flight = 0;
        if shutdown.is_cancelled() {
            break;
        }
    }
    let waiters = {
        let mut queue = shared.queue();
        queue.closed = true;
        std::mem::take(&mut queue.next)
    };
    for waiter in waiters {
        let _ = waiter.send(Err(LeadershipError::Closed));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::sync::mpsc;

    /// A check whose rounds the test starts and ends by hand: each round reports that it
    /// began, then waits for the answer the test sends.
    struct Scripted {
        /// Tells the test a round began.
        began: mpsc::UnboundedSender<()>,
        /// The answers, one per round.
        answers: tokio::sync::Mutex<mpsc::UnboundedReceiver<Result<ReadIndex, LeadershipError>>>,
    }

    impl LeaderCheck for Scripted {
        async fn check(&self) -> Result<ReadIndex, LeadershipError> {
            self.began.send(()).unwrap();
            let answer = self.answers.lock().await.recv().await;
            answer.unwrap_or(Err(LeadershipError::Closed))
        }

        async fn wait_applied(&self, _index: u64) -> Result<(), LeadershipError> {
            Ok(())
        }
    }

    type Script = (
        mpsc::UnboundedReceiver<()>,
        mpsc::UnboundedSender<Result<ReadIndex, LeadershipError>>,
    );

    fn scripted(config: LeadershipConfig) -> (Leadership<Scripted>, Script, CancellationToken) {
        let (began, rounds) = mpsc::unbounded_channel();
        let (answer, answers) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let check = Scripted {
            began,
            answers: tokio::sync::Mutex::new(answers),
        };
        let leadership = Leadership::spawn(check, config, shutdown.clone()).unwrap();
        (leadership, (rounds, answer), shutdown)
    }

    const CONFIRMED: ReadIndex = ReadIndex {
        read_log_id: None,
        applied: None,
    };

    // checks: S3, S7 (a caller that arrives while a round is in flight is not answered by
    // that round: the round's success may predate its arrival)
    #[tokio::test]
    async fn a_caller_arriving_during_a_round_waits_for_the_next_one() {
        let (leadership, (mut began, answer), _shutdown) = scripted(LeadershipConfig::default());

        tracing::info!("--- caller A starts round 1, which stays in flight");
        let first = tokio::spawn({
            let leadership = leadership.clone();
            async move { leadership.confirm_leader().await }
        });
        began.recv().await.unwrap();

        tracing::info!("--- caller B arrives during round 1; round 1 succeeds");
        let arrived = Instant::now();
        let second = tokio::spawn({
            let leadership = leadership.clone();
            async move { leadership.confirm_leader().await }
        });
        tokio::task::yield_now().await;
        answer.send(Ok(CONFIRMED)).unwrap();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.round, 1);
        assert!(first.round_started < arrived);

        tracing::info!("--- B is served by round 2, which began after it arrived, and fails");
        let wait = Duration::from_secs(5);
        match tokio::time::timeout(wait, began.recv()).await {
            Ok(began) => began.unwrap(),
            Err(_) => panic!(
                "no round 2 began for B: B was answered by round 1, which began before it \
                 arrived: {:?}",
                tokio::time::timeout(wait, second).await
            ),
        }
        assert!(
            !second.is_finished(),
            "B was answered by a round it did not wait for"
        );
        let refusal = LeadershipError::NotLeader {
            leader_id: Some(2),
            leader_node: None,
        };
        answer.send(Err(refusal.clone())).unwrap();
        assert_eq!(second.await.unwrap(), Err(refusal));
        assert_eq!(leadership.rounds(), 2);
    }

    // checks: S3 (the queue of waiting callers has a bound; past it a caller is refused at
    // once, not queued)
    #[tokio::test]
    async fn callers_past_the_bound_are_refused() {
        let config = LeadershipConfig {
            max_waiters: 3,
            ..LeadershipConfig::default()
        };
        let (leadership, (mut began, answer), shutdown) = scripted(config);
        let mut callers = Vec::new();
        for _ in 0..3 {
            let leadership = leadership.clone();
            callers.push(tokio::spawn(
                async move { leadership.confirm_leader().await },
            ));
        }
        began.recv().await.unwrap();
        // All three in flight or queued: the fourth is refused.
        loop {
            let waiting = {
                let queue = leadership.shared.queue();
                queue.next.len() + queue.in_flight
            };
            if waiting == 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            leadership.confirm_leader().await,
            Err(LeadershipError::Overloaded { waiting: 3, max: 3 })
        );
        answer.send(Ok(CONFIRMED)).unwrap();
        answer.send(Ok(CONFIRMED)).unwrap();
        for caller in callers {
            assert!(caller.await.unwrap().is_ok());
        }

        tracing::info!("--- after shutdown, callers are told the check stopped");
        shutdown.cancel();
        loop {
            match leadership.confirm_leader().await {
                Err(LeadershipError::Closed) => break,
                other => {
                    answer.send(Ok(CONFIRMED)).unwrap();
                    tracing::info!(?other, "the task had not seen the shutdown yet");
                }
            }
        }
    }
}
