//! One kill: wait for the cluster to be whole, take a lease, kill the leader with SIGKILL,
//! then time from the signal until three things happen again, each raced over every
//! member's endpoint (the client finds the new leader by trying them all, as often as
//! every [`ProbeTiming::pause`]): a surviving member names a new leader (the election is
//! over), a free lock is granted, and the lease taken before the kill is renewed. The
//! killed member is then restarted on its data directory.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::time::MissedTickBehavior;

use crate::error::BenchError;
use crate::failover::members::{Members, CLUSTER_SIZE};

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// It succeeded: the probe is over.
    Done,
    /// Not yet (no leader, not this member, not reachable): try again.
    Retry,
    /// It can never succeed (the lease was lost, a refusal that is no redirect).
    Lost(String),
}

/// A cluster under test, as the probes reach it: one client per member.
pub trait ClusterClient {
    /// What [`ClusterClient::hold`] takes before the kill.
    type Held;

    /// The system's name in tables.
    fn name(&self) -> &'static str;

    /// The member that leads when every member runs and follows it (the cluster is
    /// whole), else `None`.
    fn whole_leader(&self) -> impl Future<Output = Option<usize>>;

    /// Takes what the probes need from before the kill through `leader`: a lease to renew
    /// (and, for etcd, the session lease its locks are taken under), renewed once.
    fn hold(
        &self,
        leader: usize,
        kill: usize,
    ) -> impl Future<Output = Result<Self::Held, BenchError>>;

    /// Whether `member` names a leader other than `killed` (or leads itself).
    fn leader_known_once(&self, member: usize, killed: usize) -> impl Future<Output = Attempt>;

    /// Tries once to take the free lock `lock` through `member` (etcd takes it under the
    /// session lease of `held`; fenced creates a lease with it).
    fn grant_once(
        &self,
        member: usize,
        held: &Self::Held,
        lock: String,
    ) -> impl Future<Output = Attempt>;

    /// Tries once to renew the lease of `held` through `member`.
    fn renew_once(&self, member: usize, held: &Self::Held) -> impl Future<Output = Attempt>;
}

/// How the probes try.
#[derive(Clone, Copy, Debug)]
pub struct ProbeTiming {
    /// How often an attempt starts on one member's endpoint.
    pub pause: Duration,
    /// The longest one attempt may take (it then counts as "not yet").
    pub attempt_timeout: Duration,
    /// The longest a probe tries after the kill before it counts as failed.
    pub patience: Duration,
    /// How long the cluster must look whole before the next kill.
    pub settle: Duration,
    /// The longest the cluster may take to be whole again.
    pub rejoin_patience: Duration,
}

/// What one kill measured: each time from the signal, or why the probe failed.
#[derive(Debug, Clone)]
pub struct KillSample {
    /// The member killed (1-based).
    pub killed: usize,
    /// When the signal was sent, on the wall clock (to match with the members' logs).
    pub at: std::time::SystemTime,
    /// Until a surviving member named a new leader.
    pub leader_known: Result<Duration, String>,
    /// Until a free lock was granted.
    pub grant: Result<Duration, String>,
    /// Until the lease held before the kill was renewed.
    pub renew: Result<Duration, String>,
}

/// Races `attempt` on every member's endpoint until one answers [`Attempt::Done`]: the
/// time from `since` then. On each endpoint a new attempt starts every `pause`, whether or
/// not the ones before it have been answered (each is bounded by `attempt_timeout`), so a
/// call that hangs (etcd holds a proposal sent to a dead leader until its request timeout)
/// does not hold up the next. A [`Attempt::Lost`] ends the race at once with its reason.
pub async fn race<F, Fut>(
    since: tokio::time::Instant,
    timing: &ProbeTiming,
    attempt: F,
) -> Result<Duration, String>
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let attempt = &attempt;
    let most_in_flight =
        usize::try_from(timing.attempt_timeout.as_millis() / timing.pause.as_millis().max(1) + 1)
            .unwrap_or(usize::MAX);
    let mut loops: FuturesUnordered<_> = (0..CLUSTER_SIZE)
        .map(|member| async move {
            let mut in_flight = FuturesUnordered::new();
            let mut ticks = tokio::time::interval(timing.pause);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let deadline = since + timing.patience;
            let mut n = 0_u64;
            loop {
                tokio::select! {
                    _ = ticks.tick(), if in_flight.len() < most_in_flight => {
                        let call = tokio::time::timeout(timing.attempt_timeout, attempt(member, n));
                        in_flight.push(async move { call.await.unwrap_or(Attempt::Retry) });
                        n += 1;
                    }
                    Some(outcome) = in_flight.next() => match outcome {
                        Attempt::Done => return Ok(since.elapsed()),
                        Attempt::Lost(reason) => return Err(Some(reason)),
                        Attempt::Retry => {}
                    },
                    () = tokio::time::sleep_until(deadline) => return Err(None),
                }
            }
        })
        .collect();
    while let Some(outcome) = loops.next().await {
        match outcome {
            Ok(took) => return Ok(took),
            Err(Some(reason)) => return Err(reason),
            Err(None) => {}
        }
    }
    Err(format!("no success within {:?}", timing.patience))
}

/// One kill of the leader of a whole cluster, numbered `kill`, and the restart after it.
pub async fn kill_leader<C: ClusterClient>(
    members: &mut Members,
    client: &C,
    timing: &ProbeTiming,
    kill: usize,
) -> Result<KillSample, BenchError> {
    let leader = wait_whole(members, client, timing).await?;
    let held = client.hold(leader, kill).await?;
    let at = std::time::SystemTime::now();
    let since = tokio::time::Instant::from_std(members.kill(leader).await?);
    let (leader_known, grant, renew) = tokio::join!(
        race(since, timing, |member, _| client
            .leader_known_once(member, leader)),
        race(since, timing, |member, n| {
            client.grant_once(member, &held, format!("failover/{kill}/{member}/{n}"))
        }),
        race(since, timing, |member, _| client.renew_once(member, &held)),
    );
    members.restart(leader)?;
    Ok(KillSample {
        killed: leader + 1,
        at,
        leader_known,
        grant,
        renew,
    })
}

/// Waits until every member runs and follows one leader, then for `settle` more (the
/// restarted member catches up), and answers the leader, which must not have changed.
pub async fn wait_whole<C: ClusterClient>(
    members: &mut Members,
    client: &C,
    timing: &ProbeTiming,
) -> Result<usize, BenchError> {
    let poll = Duration::from_millis(50);
    let deadline = Instant::now() + timing.rejoin_patience;
    loop {
        members.check_running()?;
        if let Some(first) = client.whole_leader().await {
            tokio::time::sleep(timing.settle).await;
            members.check_running()?;
            if client.whole_leader().await == Some(first) {
                return Ok(first);
            }
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Unexpected {
                system: client.name(),
                op: "rejoin",
                detail: format!(
                    "the cluster was not whole (every member following one leader) within {:?}",
                    timing.rejoin_patience
                ),
            });
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn timing() -> ProbeTiming {
        ProbeTiming {
            pause: Duration::from_millis(10),
            attempt_timeout: Duration::from_secs(1),
            patience: Duration::from_secs(30),
            settle: Duration::from_secs(1),
            rejoin_patience: Duration::from_secs(60),
        }
    }

    // checks: none (benchmark: a call that hangs on one member does not hold up the next
    // attempts, so it cannot inflate a measured failover by the attempt timeout)
    #[tokio::test(start_paused = true)]
    async fn a_hung_attempt_does_not_hold_up_the_next() {
        let since = tokio::time::Instant::now();
        let took = race(since, &timing(), |member, n| async move {
            if member == 1 && n == 0 {
                std::future::pending::<()>().await;
            }
            if member == 1 && n >= 5 {
                Attempt::Done
            } else {
                Attempt::Retry
            }
        })
        .await
        .unwrap();
        assert!(
            took >= Duration::from_millis(40) && took < Duration::from_millis(100),
            "{took:?}"
        );
    }

    // checks: none (benchmark: a lost lease is reported at once, a probe that never
    // succeeds fails after its patience)
    #[tokio::test(start_paused = true)]
    async fn lost_ends_the_race_and_patience_bounds_it() {
        let since = tokio::time::Instant::now();
        let lost = race(since, &timing(), |member, _| async move {
            if member == 2 {
                Attempt::Lost("expired".to_string())
            } else {
                Attempt::Retry
            }
        })
        .await;
        assert_eq!(lost, Err("expired".to_string()));
        assert!(since.elapsed() < Duration::from_secs(1));

        let since = tokio::time::Instant::now();
        let never = race(since, &timing(), |_, _| async { Attempt::Retry }).await;
        assert!(never.unwrap_err().contains("no success within"));
        assert!(since.elapsed() >= Duration::from_secs(30));
    }
}
