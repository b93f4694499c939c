//! A model-based property test: random command sequences against the table, checked
//! after every step against a tiny reference model built only from what the table said.
//! Run with roomy limits and with limits so small that leases, locks and waiters run out.
//!
//! checks: S1, S2, S3, S6, S7, L1, L2, L3

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fenced_types::{FencingToken, LeaseId, LockName};
use proptest::prelude::*;

use super::*;

const LOCKS: usize = 3;
/// Identities that create leases.
const IDENTITIES: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        lock: usize,
        lease: Option<usize>,
        ttl_ms: u64,
        delay_ms: u64,
        wait: bool,
        /// The creating identity of a new lease, by index (`None`: no origin recorded).
        identity: Option<usize>,
    },
    Renew {
        lease: usize,
    },
    Release {
        lease: usize,
        lock: Option<usize>,
    },
    Cancel {
        waiter: usize,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..LOCKS, proptest::option::of(0..8usize), prop_oneof![Just(100u64), Just(300), Just(1000)], prop_oneof![3 => Just(0u64), 1 => Just(150)], any::<bool>(), proptest::option::of(0..IDENTITIES))
            .prop_map(|(lock, lease, ttl_ms, delay_ms, wait, identity)| Op::Acquire { lock, lease, ttl_ms, delay_ms, wait, identity }),
        2 => (0..8usize).prop_map(|lease| Op::Renew { lease }),
        2 => (0..8usize, proptest::option::of(0..LOCKS)).prop_map(|(lease, lock)| Op::Release { lease, lock }),
        1 => (0..8usize).prop_map(|waiter| Op::Cancel { waiter }),
        3 => (0..400u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// What the model believes, derived from the table's own answers.
#[derive(Default)]
struct Model {
    /// Every lease id ever used, in order of first use.
    leases: Vec<LeaseId>,
    /// TTL of every lease that was created.
    ttl: HashMap<LeaseId, Duration>,
    /// When each live lease must expire unless renewed again.
    expiry: HashMap<LeaseId, Timestamp>,
    /// Leases the model saw end.
    ended: HashSet<LeaseId>,
    /// Current holder of each lock: (lease, token).
    holder: HashMap<LockName, (LeaseId, FencingToken)>,
    /// Queued waiters per lock, in arrival order, with the lease they asked for.
    queues: HashMap<LockName, VecDeque<(WaiterId, LeaseChoice)>>,
    /// Every waiter ever queued.
    waiters: Vec<WaiterId>,
    /// The highest new token seen.
    last_token: Option<FencingToken>,
    /// Locks whose head waiter was refused for lack of capacity, since that refusal: no
    /// other waiter there may be refused for it until the lock moves or its queue empties.
    stalled: HashSet<LockName>,
    /// The identity each new lease was asked for by (leases created without one absent).
    identity: HashMap<LeaseId, usize>,
    /// Next lease id seed.
    seed: u128,
}

impl Model {
    fn fresh_lease(&mut self) -> LeaseId {
        self.seed += 1;
        LeaseId::from_bytes(self.seed.to_be_bytes())
    }

    fn record_grant(&mut self, now: Timestamp, grant: &Grant) {
        // S1: a new grant's token is above every earlier one.
        if let Some(last) = self.last_token {
            assert!(
                grant.token > last,
                "token {} not above {}",
                grant.token,
                last
            );
        }
        self.last_token = Some(grant.token);
        assert!(
            !self.ended.contains(&grant.lease),
            "S7: an ended lease was granted a lock"
        );
        if grant.created_lease {
            self.ttl.insert(grant.lease, grant.ttl);
        }
        self.expiry.insert(grant.lease, now + grant.ttl);
        let previous = self
            .holder
            .insert(grant.lock.clone(), (grant.lease, grant.token));
        assert!(
            previous.is_none(),
            "S3: {:?} granted while held by {previous:?}",
            grant.lock
        );
    }

    /// How many leases of `identity` are live at `now`, as far as the model knows.
    fn live_leases_of(&self, identity: usize, now: Timestamp) -> usize {
        self.identity
            .iter()
            .filter(|(lease, owner)| {
                **owner == identity
                    && self.ttl.contains_key(*lease)
                    && !self.ended.contains(*lease)
                    && self.expiry.get(*lease).is_some_and(|due| *due > now)
            })
            .count()
    }

    fn record_event(&mut self, now: Timestamp, event: &Event) {
        match event.kind {
            EventKind::Acquired => {}
            EventKind::Released | EventKind::Expired => {
                let (lease, token) = self
                    .holder
                    .remove(&event.lock)
                    .expect("a freed lock was held");
                assert_eq!(token, event.token);
                if event.kind == EventKind::Expired {
                    let due = self.expiry[&lease];
                    assert!(
                        due <= now,
                        "L3: lease expired at {now:?}, before its due {due:?}"
                    );
                    self.ended.insert(lease);
                }
            }
        }
    }
}

fn name(index: usize) -> LockName {
    LockName::new(format!("lock-{index}")).unwrap()
}

/// The table's own invariants about queues: each is sorted and names only queued waiters,
/// and a free lock (past any lock-delay) with waiters is stalled, its head lacking
/// capacity; no queue is left with nothing to wake it.
fn check_queues(table: &LockTable, now: Timestamp) {
    let mut queued = 0;
    for (lock, entry) in &table.locks {
        queued += entry.queue.len();
        assert!(
            entry
                .queue
                .iter()
                .zip(entry.queue.iter().skip(1))
                .all(|(a, b)| a < b),
            "queue of {lock:?} out of order: {:?}",
            entry.queue
        );
        assert!(entry.queue.iter().all(|w| table.waiters.contains_key(w)));
        let free = entry.holding.is_none() && entry.delayed_until.is_none_or(|until| until <= now);
        // A restored waiter at the head holds a free lock for its client.
        let detached_head = entry
            .queue
            .front()
            .is_some_and(|head| table.detached.contains(head));
        match (free && !detached_head, entry.queue.front()) {
            (true, Some(head)) => {
                assert!(
                    table.stalled.contains(lock),
                    "{lock:?} is free with waiters and nothing will hand it on"
                );
                let shortage = table.capacity_shortage(&table.waiters[head].lease);
                assert!(
                    shortage.is_some(),
                    "{lock:?} is free and its head waiter could have it"
                );
            }
            _ => assert!(
                !table.stalled.contains(lock),
                "{lock:?} is stalled but not free with waiters"
            ),
        }
    }
    assert_eq!(queued, table.waiters.len(), "waiters outside any queue");
    assert!(table
        .stalled
        .iter()
        .all(|lock| table.locks.contains_key(lock)));
}

/// A create refused for its identity's lease limit: the model must see that identity at
/// the limit.
fn check_identity_refusal(model: &Model, choice: &LeaseChoice, now: Timestamp, limit: usize) {
    let LeaseChoice::New(id) = choice else {
        panic!("a join refused for its identity's lease limit");
    };
    let identity = model.identity[id];
    let live = model.live_leases_of(identity, now);
    assert!(
        live >= limit,
        "identity-{identity} refused a lease with {live} live, limit {limit}"
    );
}

/// The table's count of leases per identity is the count of its leases' origins, and
/// never above the limit.
fn check_identity_counts(table: &LockTable) {
    let mut counted: HashMap<Arc<str>, usize> = HashMap::new();
    for lease in table.leases.values() {
        if let Some(identity) = LeaseOrigin::identity(lease.origin.as_ref()) {
            *counted.entry(identity.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(counted, table.identity_leases, "leases per identity");
    if let Some(limit) = table.limits.max_leases_per_identity {
        assert!(
            counted.values().all(|live| *live <= limit),
            "an identity over its limit: {counted:?}"
        );
    }
}

fn roomy() -> Limits {
    Limits {
        min_ttl: Duration::from_millis(100),
        max_ttl: Duration::from_secs(10),
        max_leases: 1000,
        max_locks: 1000,
        max_waiters: 1000,
        max_locks_per_lease: 1000,
        max_leases_per_identity: None,
        remember_ended_for: Duration::from_secs(3600),
        remember_ended_max: 100_000,
        waiter_grace: Duration::from_secs(5),
    }
}

fn tight() -> Limits {
    Limits {
        max_leases: 2,
        max_locks: 2,
        max_waiters: 4,
        max_leases_per_identity: Some(1),
        remember_ended_max: 3,
        ..roomy()
    }
}

fn run(limits: Limits, ops: Vec<Op>) {
    let mut table = LockTable::new(limits).unwrap();
    let mut model = Model::default();
    let mut now = Timestamp::ZERO;
    // The lock-delay records the writes would leave on disk (S2: a restart restores exactly
    // the delays that run, and no ended delay stays behind).
    let mut delay_records: HashSet<LockName> = HashSet::new();
    // The waiter records the writes would leave on disk: exactly the queued acquirers that
    // create a lease.
    let mut waiter_records: HashSet<WaiterId> = HashSet::new();

    for op in ops {
        let command = match op {
            Op::Advance { ms } => {
                now = now + Duration::from_millis(ms);
                Command::Tick
            }
            Op::Acquire {
                lock,
                lease,
                ttl_ms,
                delay_ms,
                wait,
                identity,
            } => {
                let choice = match lease.and_then(|i| model.leases.get(i).copied()) {
                    Some(id) => LeaseChoice::Join(id),
                    None => {
                        let id = model.fresh_lease();
                        model.leases.push(id);
                        if let Some(identity) = identity {
                            model.identity.insert(id, identity);
                        }
                        LeaseChoice::New(id)
                    }
                };
                let origin = match (&choice, identity) {
                    (LeaseChoice::New(_), Some(identity)) => Some(Arc::new(LeaseOrigin {
                        identity: Some(Arc::from(format!("identity-{identity}"))),
                        peer: None,
                    })),
                    _ => None,
                };
                Command::Acquire(Acquire {
                    lock: name(lock),
                    holder: Arc::from("h"),
                    ttl: Duration::from_millis(ttl_ms),
                    lock_delay: Duration::from_millis(delay_ms),
                    lease: choice,
                    wait,
                    origin,
                })
            }
            Op::Renew { lease } => match model.leases.get(lease) {
                Some(id) => Command::Renew { lease: *id },
                None => Command::Tick,
            },
            Op::Release { lease, lock } => match model.leases.get(lease) {
                Some(id) => Command::Release {
                    lease: *id,
                    lock: lock.map(name),
                },
                None => Command::Tick,
            },
            Op::Cancel { waiter } => match model.waiters.get(waiter) {
                Some(id) => Command::CancelWait { waiter: *id },
                None => Command::Tick,
            },
        };
        let outcome = table.apply(now, command.clone());
        for write in &outcome.writes {
            match write {
                Write::PutLockDelay { lock, .. } => {
                    assert!(delay_records.insert(lock.clone()), "{lock:?} delayed twice");
                }
                Write::DeleteLockDelay { lock } => {
                    assert!(delay_records.remove(lock), "{lock:?} had no delay to end");
                }
                Write::PutWaiter { waiter, .. } => {
                    assert!(waiter_records.insert(*waiter), "{waiter:?} stored twice");
                }
                Write::DeleteWaiter { waiter } => {
                    assert!(waiter_records.remove(waiter), "{waiter:?} was not stored");
                }
                _ => {}
            }
        }
        let running: HashSet<LockName> = table
            .locks
            .iter()
            .filter(|(_, entry)| entry.delayed_until.is_some())
            .map(|(lock, _)| lock.clone())
            .collect();
        assert_eq!(
            running, delay_records,
            "delays on disk vs. in memory at {now:?}"
        );
        let queued: HashSet<WaiterId> = table
            .waiters
            .iter()
            .filter(|(_, request)| matches!(request.lease, LeaseChoice::New(_)))
            .map(|(waiter, _)| *waiter)
            .collect();
        assert_eq!(
            queued, waiter_records,
            "waiters on disk vs. in memory at {now:?}"
        );

        // Expiries and releases first (they happen before the command's own grants).
        for event in &outcome.events {
            model.record_event(now, event);
        }
        // Leases the model expected to be live past `now` must still be (L3)...
        let live_before: Vec<LeaseId> = model
            .expiry
            .iter()
            .filter(|(id, due)| **due > now && !model.ended.contains(id))
            .map(|(id, _)| *id)
            .collect();

        match (&command, &outcome.reply) {
            (Command::Acquire(_), Ok(Reply::Granted(grant))) => model.record_grant(now, grant),
            (Command::Acquire(request), Ok(Reply::AlreadyHeld(grant))) => {
                // Re-acquiring a held lock answers with the same lease and token.
                let (lease, token) = model.holder[&request.lock];
                assert_eq!((lease, token), (grant.lease, grant.token));
                model.expiry.insert(lease, now + model.ttl[&lease]);
            }
            (Command::Acquire(request), Ok(Reply::Queued(waiter))) => {
                assert!(request.wait, "a try-once acquire was queued");
                if let LeaseChoice::Join(id) = request.lease {
                    model.expiry.insert(id, now + model.ttl[&id]);
                }
                model.waiters.push(*waiter);
                model
                    .queues
                    .entry(request.lock.clone())
                    .or_default()
                    .push_back((*waiter, request.lease));
            }
            (Command::Acquire(request), Err(refusal)) => {
                if let Refusal::IdentityLeases { limit, .. } = refusal {
                    check_identity_refusal(&model, &request.lease, now, *limit);
                }
                if let LeaseChoice::Join(id) = request.lease {
                    let live = live_before.contains(&id);
                    let lease_refusal = matches!(
                        refusal,
                        Refusal::LeaseExpired { .. }
                            | Refusal::LeaseReleased { .. }
                            | Refusal::UnknownLease { .. }
                    );
                    assert_eq!(
                        !live, lease_refusal,
                        "join of {id:?}: live {live}, refusal {refusal:?}"
                    );
                }
                if !request.wait
                    && !matches!(
                        refusal,
                        Refusal::Busy { .. }
                            | Refusal::LockDelay { .. }
                            | Refusal::Queued { .. }
                            | Refusal::Exhausted { .. }
                            | Refusal::IdentityLeases { .. }
                    )
                {
                    assert!(
                        matches!(request.lease, LeaseChoice::Join(_)),
                        "unexpected {refusal:?}"
                    );
                }
            }
            (Command::Renew { lease }, reply) => {
                let live = live_before.contains(lease);
                assert_eq!(
                    live,
                    reply.is_ok(),
                    "renew of {lease:?}: live {live}, got {reply:?}"
                );
                if live {
                    model.expiry.insert(*lease, now + model.ttl[lease]);
                }
            }
            (Command::Release { lease, lock }, reply) => {
                let live = live_before.contains(lease);
                match lock {
                    None => {
                        assert_eq!(live, reply.is_ok(), "release of {lease:?}: {reply:?}");
                        if live {
                            model.ended.insert(*lease);
                        }
                    }
                    Some(lock) => {
                        let holds = model.holder.get(lock).map(|(l, _)| l) == Some(lease);
                        // The release event was already recorded above, so "holds" is now
                        // false exactly when the release succeeded.
                        if reply.is_ok() {
                            assert!(live && !holds);
                        }
                    }
                }
            }
            (Command::CancelWait { waiter }, Ok(Reply::Cancelled(true))) => {
                for queue in model.queues.values_mut() {
                    queue.retain(|(w, _)| w != waiter);
                }
            }
            _ => {}
        }

        // Handoffs go to the front of their lock's model queue, in order (L2).
        for handoff in &outcome.handoffs {
            let lock = match &handoff.result {
                Ok(grant) => grant.lock.clone(),
                Err(_) => model
                    .queues
                    .iter()
                    .find(|(_, q)| q.iter().any(|(w, _)| *w == handoff.waiter))
                    .map(|(lock, _)| lock.clone())
                    .expect("a handoff to a queued waiter"),
            };
            let queue = model.queues.get_mut(&lock).expect("a queue");
            let (front, choice) = queue.pop_front().expect("a waiter");
            assert_eq!(
                front, handoff.waiter,
                "L2: handoff out of FIFO order on {lock:?}"
            );
            match &handoff.result {
                Ok(grant) => {
                    assert_eq!(grant.lease, choice.id());
                    model.record_grant(now, grant);
                    model.stalled.remove(&lock);
                }
                // A shortage of capacity refuses one waiter per lock, not the queue.
                Err(Refusal::Exhausted { what, .. }) => {
                    assert!(matches!(*what, "leases" | "locks"), "{what}");
                    assert!(
                        model.stalled.insert(lock.clone()),
                        "a second waiter on {lock:?} refused for the same shortage"
                    );
                }
                // A create whose identity reached its lease limit while it waited. The
                // table tried it with capacity to spare, so the lock is no longer stalled.
                Err(Refusal::IdentityLeases { limit, .. }) => {
                    check_identity_refusal(&model, &choice, now, *limit);
                    model.stalled.remove(&lock);
                }
                // Otherwise only a waiter that joined a lease can fail: its lease ended
                // while it waited (tried with capacity to spare, as above).
                Err(_) => {
                    assert!(matches!(choice, LeaseChoice::Join(_)));
                    model.stalled.remove(&lock);
                }
            }
        }
        model
            .stalled
            .retain(|lock| model.queues.get(lock).is_some_and(|q| !q.is_empty()));
        check_queues(&table, now);
        check_identity_counts(&table);

        // S3 and the views: what the table shows is exactly the model's live holder.
        for index in 0..LOCKS {
            let lock = name(index);
            let view = table.describe(now, &lock);
            let expected = model.holder.get(&lock).map(|(_, token)| *token);
            assert_eq!(
                view.holder.map(|(_, t)| t),
                expected,
                "holder of {lock:?} at {now:?}"
            );
            if let Some((lease, _)) = model.holder.get(&lock) {
                assert!(
                    model.expiry[lease] > now,
                    "S3: {lock:?} held by an expired lease"
                );
            }
            let queued = model.queues.get(&lock).map_or(0, VecDeque::len);
            assert_eq!(view.waiters, queued, "waiters of {lock:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_table_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(roomy(), ops);
    }

    #[test]
    fn the_table_agrees_with_the_model_at_its_limits(
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(tight(), ops);
    }
}
