//! Unit tests of the lock table with a hand-made clock: each test is a short story.

use std::sync::Arc;
use std::time::Duration;

use fenced_types::{FencingToken, LeaseId, LockName};

use super::*;

fn limits() -> Limits {
    Limits {
        min_ttl: Duration::from_millis(100),
        max_ttl: Duration::from_secs(3600),
        max_leases: 100,
        max_locks: 100,
        max_waiters: 100,
        max_locks_per_lease: 100,
        max_leases_per_identity: None,
        remember_ended_for: Duration::from_secs(60),
        remember_ended_max: 1000,
        waiter_grace: Duration::from_secs(5),
    }
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn name(text: &str) -> LockName {
    LockName::new(text).unwrap()
}

fn acquire(lock: &str, lease: LeaseChoice, ttl_ms: u64, wait: bool) -> Command {
    Command::Acquire(Acquire {
        lock: name(lock),
        holder: Arc::from(format!("holder-{}", lease.id().short())),
        ttl: Duration::from_millis(ttl_ms),
        lock_delay: Duration::ZERO,
        lease,
        wait,
        origin: None,
    })
}

fn granted(outcome: &Outcome) -> Grant {
    match &outcome.reply {
        Ok(Reply::Granted(grant)) => grant.clone(),
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn queued(outcome: &Outcome) -> WaiterId {
    match &outcome.reply {
        Ok(Reply::Queued(waiter)) => *waiter,
        other => panic!("expected to queue, got {other:?}"),
    }
}

// checks: S1, S3
#[test]
fn grant_then_busy_then_release_hands_nothing_to_nobody() {
    let mut table = LockTable::new(limits()).unwrap();
    let (a, b) = (LeaseId::random(), LeaseId::random());

    let first = table.apply(at(0), acquire("orders", LeaseChoice::New(a), 1000, false));
    let grant = granted(&first);
    assert_eq!(grant.token, FencingToken::FIRST);
    assert!(grant.created_lease);
    assert!(first
        .writes
        .contains(&Write::NextToken(FencingToken::new(2).unwrap())));
    assert_eq!(first.events.len(), 1);

    let busy = table.apply(at(10), acquire("orders", LeaseChoice::New(b), 1000, false));
    assert!(matches!(&busy.reply, Err(Refusal::Busy { token, .. }) if *token == grant.token));
    assert!(busy.writes.is_empty(), "a refused acquire changes nothing");

    let released = table.apply(
        at(20),
        Command::Release {
            lease: a,
            lock: None,
        },
    );
    assert_eq!(released.reply, Ok(Reply::Released));
    assert!(released.writes.contains(&Write::DeleteLease { lease: a }));
    assert_eq!(released.events[0].kind, EventKind::Released);

    let second = granted(&table.apply(at(30), acquire("orders", LeaseChoice::New(b), 1000, false)));
    assert!(second.token > grant.token);
}

// checks: S3, S7, L1
#[test]
fn expiry_frees_the_lock_and_the_lease_stays_lost() {
    let mut table = LockTable::new(limits()).unwrap();
    let (a, b) = (LeaseId::random(), LeaseId::random());
    granted(&table.apply(at(0), acquire("job", LeaseChoice::New(a), 1000, false)));
    assert_eq!(table.next_due(), Some(at(1000)));

    // Renewed at 500: now due at 1500.
    assert_eq!(
        table.apply(at(500), Command::Renew { lease: a }).reply,
        Ok(Reply::Renewed {
            ttl: Duration::from_millis(1000)
        })
    );
    assert_eq!(table.next_due(), Some(at(1500)));
    assert!(table.describe(at(1499), &name("job")).holder.is_some());

    // At 1500 exactly the lease is expired (S3: never two unexpired holders at one instant).
    assert!(table.describe(at(1500), &name("job")).holder.is_none());
    let tick = table.apply(at(1500), Command::Tick);
    assert_eq!(tick.events[0].kind, EventKind::Expired);
    assert!(tick.writes.contains(&Write::DeleteLease { lease: a }));

    // S7: no request revives it, and the refusal says why.
    let renew = table.apply(at(1501), Command::Renew { lease: a });
    assert!(matches!(renew.reply, Err(Refusal::LeaseExpired { .. })));
    let join = table.apply(
        at(1502),
        acquire("other", LeaseChoice::Join(a), 1000, false),
    );
    assert!(matches!(join.reply, Err(Refusal::LeaseExpired { .. })));
    let release = table.apply(
        at(1503),
        Command::Release {
            lease: a,
            lock: None,
        },
    );
    assert!(matches!(release.reply, Err(Refusal::LeaseExpired { .. })));

    granted(&table.apply(at(1504), acquire("job", LeaseChoice::New(b), 1000, false)));
}

// checks: L1, L2
#[test]
fn waiters_are_served_in_order_and_cancelled_ones_never() {
    let mut table = LockTable::new(limits()).unwrap();
    let leases: Vec<LeaseId> = (0..4).map(|_| LeaseId::random()).collect();
    let holder = granted(&table.apply(
        at(0),
        acquire("q", LeaseChoice::New(leases[0]), 1000, false),
    ));
    let w1 = queued(&table.apply(at(1), acquire("q", LeaseChoice::New(leases[1]), 1000, true)));
    let w2 = queued(&table.apply(at(2), acquire("q", LeaseChoice::New(leases[2]), 1000, true)));
    let w3 = queued(&table.apply(at(3), acquire("q", LeaseChoice::New(leases[3]), 1000, true)));
    assert_eq!(table.describe(at(3), &name("q")).waiters, 3);

    // A try-once acquirer may not jump the queue even at a free instant.
    // w2 cancels (timed out or disconnected): it leaves the queue at once.
    let cancel = table.apply(at(4), Command::CancelWait { waiter: w2 });
    assert_eq!(cancel.reply, Ok(Reply::Cancelled(true)));
    assert_eq!(table.describe(at(4), &name("q")).waiters, 2);

    // Release: w1 gets it at once, with a higher token.
    let release = table.apply(
        at(5),
        Command::Release {
            lease: leases[0],
            lock: Some(name("q")),
        },
    );
    assert_eq!(release.handoffs.len(), 1);
    assert_eq!(release.handoffs[0].waiter, w1);
    let g1 = release.handoffs[0].result.clone().unwrap();
    assert!(g1.token > holder.token);
    assert!(g1.created_lease);

    // w1's lease expires: w3 (not the cancelled w2) is next.
    let tick = table.apply(at(1005), Command::Tick);
    assert_eq!(tick.handoffs.len(), 1);
    assert_eq!(tick.handoffs[0].waiter, w3);
    assert!(tick.handoffs[0].result.as_ref().unwrap().token > g1.token);
    assert_eq!(
        table
            .apply(at(1006), Command::CancelWait { waiter: w2 })
            .reply,
        Ok(Reply::Cancelled(false))
    );
}

// checks: L2
#[test]
fn a_try_once_acquire_does_not_jump_a_queue_held_by_lock_delay() {
    let mut table = LockTable::new(limits()).unwrap();
    let (a, b, c) = (LeaseId::random(), LeaseId::random(), LeaseId::random());
    let mut request = match acquire("d", LeaseChoice::New(a), 100, false) {
        Command::Acquire(request) => request,
        _ => unreachable!(),
    };
    request.lock_delay = Duration::from_millis(50);
    granted(&table.apply(at(0), Command::Acquire(request)));
    let waiter = queued(&table.apply(at(1), acquire("d", LeaseChoice::New(b), 1000, true)));

    // Expired at 100, but the lock-delay holds it until 150.
    let tick = table.apply(at(100), Command::Tick);
    assert!(tick.handoffs.is_empty());
    assert_eq!(table.next_due(), Some(at(150)));
    let jumper = table.apply(at(120), acquire("d", LeaseChoice::New(c), 1000, false));
    assert!(matches!(jumper.reply, Err(Refusal::LockDelay { .. })));

    let tick = table.apply(at(150), Command::Tick);
    assert_eq!(tick.handoffs.len(), 1);
    assert_eq!(tick.handoffs[0].waiter, waiter);
}

// checks: L1
#[test]
fn lock_delay_applies_after_expiry_but_not_after_release() {
    let mut table = LockTable::new(limits()).unwrap();
    let (a, b) = (LeaseId::random(), LeaseId::random());
    let delayed = |lease: LeaseChoice| {
        let mut request = match acquire("x", lease, 100, false) {
            Command::Acquire(request) => request,
            _ => unreachable!(),
        };
        request.lock_delay = Duration::from_millis(500);
        Command::Acquire(request)
    };
    granted(&table.apply(at(0), delayed(LeaseChoice::New(a))));
    table.apply(at(100), Command::Tick);
    let refused = table.apply(at(599), acquire("x", LeaseChoice::New(b), 100, false));
    assert!(
        matches!(refused.reply, Err(Refusal::LockDelay { remaining, .. }) if remaining == Duration::from_millis(1))
    );
    granted(&table.apply(at(600), acquire("x", LeaseChoice::New(b), 100, false)));

    // Released (not expired): no delay.
    let c = LeaseId::random();
    table.apply(
        at(650),
        Command::Release {
            lease: b,
            lock: None,
        },
    );
    granted(&table.apply(at(650), delayed(LeaseChoice::New(c))));
}

// checks: S6
#[test]
fn wrong_and_unknown_lease_ids_change_nothing() {
    let mut table = LockTable::new(limits()).unwrap();
    let (a, stranger) = (LeaseId::random(), LeaseId::random());
    granted(&table.apply(at(0), acquire("mine", LeaseChoice::New(a), 1000, false)));

    for command in [
        Command::Renew { lease: stranger },
        Command::Release {
            lease: stranger,
            lock: None,
        },
        Command::Release {
            lease: stranger,
            lock: Some(name("mine")),
        },
    ] {
        let outcome = table.apply(at(1), command);
        assert!(matches!(outcome.reply, Err(Refusal::UnknownLease { .. })));
        assert!(outcome.writes.is_empty() && outcome.events.is_empty());
    }
    // A live lease releasing a lock it does not hold.
    let other = LeaseId::random();
    granted(&table.apply(
        at(2),
        acquire("theirs", LeaseChoice::New(other), 1000, false),
    ));
    let outcome = table.apply(
        at(3),
        Command::Release {
            lease: a,
            lock: Some(name("theirs")),
        },
    );
    assert!(matches!(outcome.reply, Err(Refusal::NotHolder { .. })));
    assert!(table.describe(at(3), &name("theirs")).holder.is_some());
    assert!(table.describe(at(3), &name("mine")).holder.is_some());
}

#[test]
fn ttl_out_of_bounds_is_refused() {
    let mut table = LockTable::new(limits()).unwrap();
    for ttl in [0, 99, 3_600_001] {
        let outcome = table.apply(
            at(0),
            acquire("t", LeaseChoice::New(LeaseId::random()), ttl, false),
        );
        assert!(
            matches!(outcome.reply, Err(Refusal::TtlOutOfBounds { .. })),
            "ttl {ttl}"
        );
        assert!(outcome.writes.is_empty());
    }
    assert_eq!(table.lease_count(), 0);
}

#[test]
fn one_lease_many_locks_each_with_its_own_token() {
    let mut table = LockTable::new(limits()).unwrap();
    let a = LeaseId::random();
    let first = granted(&table.apply(at(0), acquire("m/1", LeaseChoice::New(a), 1000, false)));
    let second =
        granted(&table.apply(at(500), acquire("m/2", LeaseChoice::Join(a), 99_999, false)));
    assert_eq!(second.lease, a);
    assert!(!second.created_lease);
    assert!(second.token > first.token);
    // The lease keeps its TTL; joining renewed it.
    assert_eq!(second.ttl, Duration::from_millis(1000));
    assert_eq!(table.next_due(), Some(at(1500)));
    // Acquiring what it already holds answers with the same token (a retried acquire).
    let again = table.apply(at(600), acquire("m/1", LeaseChoice::Join(a), 1000, false));
    assert!(
        matches!(again.reply, Ok(Reply::AlreadyHeld(Grant { token, .. })) if token == first.token)
    );
    assert!(again.writes.is_empty());
    // A listing sees both; releasing the lease frees both.
    assert_eq!(table.list(at(700), "m/", None, 10).locks.len(), 2);
    let release = table.apply(
        at(700),
        Command::Release {
            lease: a,
            lock: None,
        },
    );
    assert_eq!(release.events.len(), 2);
    assert!(table.list(at(700), "m/", None, 10).locks.is_empty());
    // A lease lives without locks until it ends.
    let b = LeaseId::random();
    granted(&table.apply(at(800), acquire("n", LeaseChoice::New(b), 1000, false)));
    table.apply(
        at(801),
        Command::Release {
            lease: b,
            lock: Some(name("n")),
        },
    );
    assert_eq!(
        table.apply(at(802), Command::Renew { lease: b }).reply,
        Ok(Reply::Renewed {
            ttl: Duration::from_millis(1000)
        })
    );
}

// checks: L2
#[test]
fn a_waiter_whose_joined_lease_ended_is_told_and_skipped() {
    let mut table = LockTable::new(limits()).unwrap();
    let (holder, joiner, next) = (LeaseId::random(), LeaseId::random(), LeaseId::random());
    granted(&table.apply(at(0), acquire("j", LeaseChoice::New(holder), 10_000, false)));
    granted(&table.apply(at(0), acquire("own", LeaseChoice::New(joiner), 100, false)));
    let w_join = queued(&table.apply(at(1), acquire("j", LeaseChoice::Join(joiner), 0, true)));
    let w_next = queued(&table.apply(at(2), acquire("j", LeaseChoice::New(next), 1000, true)));
    // The joiner's lease expires (renewed by the join at 1, so due at 101).
    table.apply(at(101), Command::Tick);
    let release = table.apply(
        at(200),
        Command::Release {
            lease: holder,
            lock: None,
        },
    );
    assert_eq!(release.handoffs.len(), 2);
    assert_eq!(release.handoffs[0].waiter, w_join);
    assert!(matches!(
        release.handoffs[0].result,
        Err(Refusal::LeaseExpired { .. })
    ));
    assert_eq!(release.handoffs[1].waiter, w_next);
    assert!(release.handoffs[1].result.is_ok());
}

#[test]
fn capacity_limits_are_enforced() {
    let mut table = LockTable::new(Limits {
        max_leases: 1,
        max_waiters: 1,
        max_locks: 2,
        ..limits()
    })
    .unwrap();
    let a = LeaseId::random();
    granted(&table.apply(at(0), acquire("c/1", LeaseChoice::New(a), 1000, false)));
    let refused = table.apply(
        at(0),
        acquire("c/2", LeaseChoice::New(LeaseId::random()), 1000, false),
    );
    assert!(matches!(
        refused.reply,
        Err(Refusal::Exhausted { what: "leases", .. })
    ));
    granted(&table.apply(at(0), acquire("c/2", LeaseChoice::Join(a), 1000, false)));
    let refused = table.apply(at(0), acquire("c/3", LeaseChoice::Join(a), 1000, false));
    assert!(matches!(
        refused.reply,
        Err(Refusal::Exhausted { what: "locks", .. })
    ));
    queued(&table.apply(
        at(0),
        acquire("c/1", LeaseChoice::New(LeaseId::random()), 1000, true),
    ));
    let refused = table.apply(
        at(0),
        acquire("c/1", LeaseChoice::New(LeaseId::random()), 1000, true),
    );
    assert!(matches!(
        refused.reply,
        Err(Refusal::Exhausted {
            what: "waiters",
            ..
        })
    ));
}

fn held_lock(lock: &str, lease: LeaseId, token: u64) -> RestoredLock {
    RestoredLock {
        lock: name(lock),
        lease,
        token: FencingToken::new(token).unwrap(),
        holder: Arc::from("h"),
        lock_delay: Duration::ZERO,
    }
}

// checks: S1, S2
#[test]
fn restore_gives_full_ttls_from_now_and_continues_tokens() {
    let mut table = LockTable::new(limits()).unwrap();
    let a = LeaseId::random();
    let grant = granted(&table.apply(at(0), acquire("r", LeaseChoice::New(a), 1000, false)));
    let restored = LockTable::restore(
        limits(),
        table.next_token(),
        vec![RestoredLease {
            lease: a,
            ttl: Duration::from_millis(1000),
            origin: None,
        }],
        vec![held_lock("r", a, grant.token.get())],
        vec![],
        vec![],
        at(50_000),
    );
    let mut restored = restored.unwrap();
    let view = restored.describe(at(50_000), &name("r"));
    assert_eq!(view.holder.map(|(_, token)| token), Some(grant.token));
    assert_eq!(view.remaining, Duration::from_millis(1000));
    let later = granted(&restored.apply(
        at(51_000),
        acquire("r", LeaseChoice::New(LeaseId::random()), 1000, false),
    ));
    assert!(later.token > grant.token);

    let corrupt = LockTable::restore(
        limits(),
        FencingToken::FIRST,
        vec![RestoredLease {
            lease: a,
            ttl: Duration::from_millis(1000),
            origin: None,
        }],
        vec![held_lock("r", a, 5)],
        vec![],
        vec![],
        at(0),
    );
    assert!(matches!(corrupt, Err(RestoreError::TokenAhead { .. })));
    let orphan = LockTable::restore(
        limits(),
        FencingToken::new(9).unwrap(),
        vec![],
        vec![held_lock("r", a, 5)],
        vec![],
        vec![],
        at(0),
    );
    assert!(matches!(orphan, Err(RestoreError::OrphanLock { .. })));
}

fn refused_for(outcome: &Outcome, waiter: WaiterId) -> Refusal {
    let handoff = outcome
        .handoffs
        .iter()
        .find(|handoff| handoff.waiter == waiter)
        .unwrap_or_else(|| panic!("no handoff for {waiter:?} in {:?}", outcome.handoffs));
    handoff.result.clone().expect_err("refused, not granted")
}

// checks: L1, L2 (at the lease limit a handoff refuses only the head waiter, naming the
// limit; the others keep their places and get the lock as soon as a lease ends)
#[test]
fn at_the_lease_limit_one_waiter_is_refused_and_the_queue_waits_for_capacity() {
    let mut table = LockTable::new(Limits {
        max_leases: 2,
        ..limits()
    })
    .unwrap();
    let (a, b) = (LeaseId::random(), LeaseId::random());
    let first = granted(&table.apply(at(0), acquire("q", LeaseChoice::New(a), 10_000, false)));
    granted(&table.apply(at(0), acquire("other", LeaseChoice::New(b), 1000, false)));
    let w1 = queued(&table.apply(
        at(1),
        acquire("q", LeaseChoice::New(LeaseId::random()), 1000, true),
    ));
    let w2 = queued(&table.apply(
        at(2),
        acquire("q", LeaseChoice::New(LeaseId::random()), 1000, true),
    ));
    let w3 = queued(&table.apply(
        at(3),
        acquire("q", LeaseChoice::New(LeaseId::random()), 1000, true),
    ));

    tracing::info!("a releases the lock but keeps its lease: no lease is free for w1");
    let release = table.apply(
        at(10),
        Command::Release {
            lease: a,
            lock: Some(name("q")),
        },
    );
    assert_eq!(release.handoffs.len(), 1, "{:?}", release.handoffs);
    assert_eq!(
        refused_for(&release, w1),
        Refusal::Exhausted {
            what: "leases",
            limit: 2
        }
    );
    let view = table.describe(at(10), &name("q"));
    assert_eq!((view.holder, view.waiters), (None, 2));

    tracing::info!("nothing else refuses the rest while the shortage lasts");
    assert!(table.apply(at(20), Command::Tick).handoffs.is_empty());
    let try_once = table.apply(
        at(21),
        acquire("q", LeaseChoice::New(LeaseId::random()), 1000, false),
    );
    assert!(matches!(
        try_once.reply,
        Err(Refusal::Queued { waiters: 2, .. })
    ));

    tracing::info!("b's lease expires: a lease is free, and w2 gets the lock at once");
    let tick = table.apply(at(1000), Command::Tick);
    assert_eq!(tick.handoffs.len(), 1, "{:?}", tick.handoffs);
    assert_eq!(tick.handoffs[0].waiter, w2);
    let g2 = tick.handoffs[0].result.clone().unwrap();
    assert!(g2.token > first.token);
    assert_eq!(table.describe(at(1000), &name("q")).waiters, 1);

    tracing::info!("w3 waits for w2 as usual, and is served in order");
    let release = table.apply(
        at(1001),
        Command::Release {
            lease: g2.lease,
            lock: None,
        },
    );
    assert_eq!(release.handoffs.len(), 1);
    assert_eq!(release.handoffs[0].waiter, w3);
    assert!(release.handoffs[0].result.is_ok());
}

// checks: L1, L2 (the same for the lock limit: a lock-delay ends while another lock took
// the last slot)
#[test]
fn at_the_lock_limit_one_waiter_is_refused_and_the_queue_waits_for_capacity() {
    let mut table = LockTable::new(Limits {
        max_locks: 1,
        ..limits()
    })
    .unwrap();
    let (a, b) = (LeaseId::random(), LeaseId::random());
    let mut request = match acquire("x", LeaseChoice::New(a), 100, false) {
        Command::Acquire(request) => request,
        _ => unreachable!(),
    };
    request.lock_delay = Duration::from_millis(50);
    granted(&table.apply(at(0), Command::Acquire(request)));
    let w1 = queued(&table.apply(
        at(1),
        acquire("x", LeaseChoice::New(LeaseId::random()), 1000, true),
    ));
    let w2 = queued(&table.apply(
        at(2),
        acquire("x", LeaseChoice::New(LeaseId::random()), 1000, true),
    ));

    tracing::info!("a expires; x is in its lock-delay, and b takes the only lock slot");
    table.apply(at(100), Command::Tick);
    granted(&table.apply(at(120), acquire("y", LeaseChoice::New(b), 10_000, false)));

    tracing::info!("the lock-delay ends with no slot free: only w1 is told");
    let tick = table.apply(at(150), Command::Tick);
    assert_eq!(tick.handoffs.len(), 1, "{:?}", tick.handoffs);
    assert_eq!(
        refused_for(&tick, w1),
        Refusal::Exhausted {
            what: "locks",
            limit: 1
        }
    );
    assert_eq!(table.describe(at(150), &name("x")).waiters, 1);

    tracing::info!("b releases y: the slot is free, and w2 gets x in the same step");
    let release = table.apply(
        at(200),
        Command::Release {
            lease: b,
            lock: Some(name("y")),
        },
    );
    assert_eq!(release.handoffs.len(), 1, "{:?}", release.handoffs);
    assert_eq!(release.handoffs[0].waiter, w2);
    assert!(release.handoffs[0].result.is_ok());
    assert!(table.describe(at(200), &name("x")).holder.is_some());
}

// The table refuses what the configuration refuses, with a typed error, instead of a table
// that spins (an ended-lease memory of 0 could never make room for the next lease).
#[test]
fn limits_the_configuration_refuses_are_refused_by_the_table() {
    for (what, limits) in [
        (
            "max_leases",
            Limits {
                max_leases: 0,
                ..limits()
            },
        ),
        (
            "max_locks",
            Limits {
                max_locks: 0,
                ..limits()
            },
        ),
        (
            "max_waiters",
            Limits {
                max_waiters: 0,
                ..limits()
            },
        ),
        (
            "remember_ended_max",
            Limits {
                remember_ended_max: 0,
                ..limits()
            },
        ),
    ] {
        assert_eq!(
            LockTable::new(limits.clone()).unwrap_err(),
            LimitsError::ZeroLimit { what }
        );
        let restored = LockTable::restore(
            limits,
            FencingToken::FIRST,
            vec![],
            vec![],
            vec![],
            vec![],
            at(0),
        );
        assert!(matches!(
            restored,
            Err(RestoreError::Limits(LimitsError::ZeroLimit { what: refused })) if refused == what
        ));
    }
    let no_ttl = Limits {
        min_ttl: Duration::ZERO,
        ..limits()
    };
    assert!(matches!(
        LockTable::new(no_ttl),
        Err(LimitsError::TtlBounds { .. })
    ));

    // Every configuration the server refuses for its table's limits, the table refuses too.
    let base = crate::config::Config::default();
    for config in [
        crate::config::Config {
            max_leases: 0,
            ..base.clone()
        },
        crate::config::Config {
            max_locks: 0,
            ..base.clone()
        },
        crate::config::Config {
            max_waiters: 0,
            ..base.clone()
        },
        crate::config::Config {
            remember_ended_max: 0,
            ..base.clone()
        },
        crate::config::Config {
            max_locks_per_lease: 0,
            ..base.clone()
        },
        crate::config::Config {
            min_ttl: Duration::ZERO,
            ..base.clone()
        },
        crate::config::Config {
            min_ttl: Duration::from_secs(2),
            max_ttl: Duration::from_secs(1),
            ..base.clone()
        },
    ] {
        assert!(config.validate().is_err(), "{config:?}");
        assert!(
            LockTable::new(Limits::from(&config)).is_err(),
            "the table took limits the configuration refuses: {config:?}"
        );
    }
    assert!(LockTable::new(Limits::from(&base)).is_ok());
}

/// An acquire of `lock` on a new lease with a TTL and a lock-delay, try-once.
fn delayed_acquire(lock: &str, ttl_ms: u64, delay_ms: u64) -> Command {
    let mut request = match acquire(lock, LeaseChoice::New(LeaseId::random()), ttl_ms, false) {
        Command::Acquire(request) => request,
        _ => unreachable!(),
    };
    request.lock_delay = Duration::from_millis(delay_ms);
    Command::Acquire(request)
}

// checks: S2, S3 (a lock-delay is written with the expiry that starts it and deleted when
// it ends, so the disk holds it exactly while it runs)
#[test]
fn a_lock_delay_is_written_with_its_expiry_and_deleted_at_its_end() {
    let mut table = LockTable::new(limits()).unwrap();
    granted(&table.apply(at(0), delayed_acquire("x", 100, 500)));
    let expiry = table.apply(at(100), Command::Tick);
    let delete_lock = expiry
        .writes
        .iter()
        .position(|w| *w == Write::DeleteLock { lock: name("x") })
        .expect("the expiry frees the lock");
    let put_delay = expiry
        .writes
        .iter()
        .position(|w| {
            *w == Write::PutLockDelay {
                lock: name("x"),
                delay: Duration::from_millis(500),
            }
        })
        .expect("the expiry writes its lock-delay");
    assert!(delete_lock < put_delay);
    assert!(table.apply(at(300), Command::Tick).writes.is_empty());
    let end = table.apply(at(600), Command::Tick);
    assert_eq!(end.writes, [Write::DeleteLockDelay { lock: name("x") }]);
    // A release starts no delay, so writes none.
    let a = LeaseId::random();
    granted(&table.apply(at(600), acquire("x", LeaseChoice::New(a), 100, false)));
    let release = table.apply(
        at(610),
        Command::Release {
            lease: a,
            lock: None,
        },
    );
    assert!(!release
        .writes
        .iter()
        .any(|w| matches!(w, Write::PutLockDelay { .. })));
}

// checks: S2, S3, L1 (a restored lock-delay refuses grants for its full delay counted from
// the restart, never less, then lets them through and deletes its record)
#[test]
fn a_restored_lock_delay_runs_in_full_from_the_restart() {
    let restored = LockTable::restore(
        limits(),
        FencingToken::new(7).unwrap(),
        vec![],
        vec![],
        vec![RestoredDelay {
            lock: name("x"),
            delay: Duration::from_millis(500),
        }],
        vec![],
        at(10_000),
    );
    let mut table = restored.unwrap();
    assert_eq!(table.next_due(), Some(at(10_500)));
    let refused = table.apply(at(10_499), delayed_acquire("x", 100, 0));
    assert!(
        matches!(refused.reply, Err(Refusal::LockDelay { remaining, .. }) if remaining == Duration::from_millis(1)),
        "{:?}",
        refused.reply
    );
    assert!(refused.writes.is_empty());
    // The first command at the end of the delay ends it, here the grant itself.
    let grant = table.apply(at(10_500), delayed_acquire("x", 100, 0));
    assert_eq!(granted(&grant).token, FencingToken::new(7).unwrap());
    assert_eq!(
        grant.writes[0],
        Write::DeleteLockDelay { lock: name("x") },
        "{:?}",
        grant.writes
    );
    assert_eq!(table.next_due(), Some(at(10_600)), "only the lease is due");

    // A lock that disk says is held and delayed at once is refused, not guessed at.
    let a = LeaseId::random();
    let contradiction = LockTable::restore(
        limits(),
        FencingToken::new(9).unwrap(),
        vec![RestoredLease {
            lease: a,
            ttl: Duration::from_millis(1000),
            origin: None,
        }],
        vec![held_lock("x", a, 5)],
        vec![RestoredDelay {
            lock: name("x"),
            delay: Duration::from_millis(500),
        }],
        vec![],
        at(0),
    );
    assert!(matches!(
        contradiction,
        Err(RestoreError::DelayOnHeldLock { .. })
    ));
}

// checks: S6 (a refused acquire changes nothing), L2 (the refused waiter is not granted)
#[test]
fn a_lease_at_its_lock_cap_is_refused_a_join_and_changes_nothing() {
    let mut table = LockTable::new(Limits {
        max_locks_per_lease: 2,
        ..limits()
    })
    .unwrap();
    let (a, b) = (LeaseId::random(), LeaseId::random());
    let release_lock = |lease, lock: &str| Command::Release {
        lease,
        lock: Some(name(lock)),
    };

    // Phase 1: a lease takes as many locks as it may; its expiry is then at 1100.
    granted(&table.apply(at(0), acquire("cap/1", LeaseChoice::New(a), 1000, false)));
    granted(&table.apply(at(100), acquire("cap/2", LeaseChoice::Join(a), 1000, false)));
    granted(&table.apply(at(100), acquire("cap/4", LeaseChoice::New(b), 5000, false)));
    assert_eq!(table.next_due(), Some(at(1100)));

    // Phase 2: one more is refused, naming the lease and the limit, waiting or not, and
    // changes nothing: no write, no event, no queue, not even the renewal a join makes.
    for (lock, wait) in [("cap/3", false), ("cap/3", true), ("cap/4", true)] {
        let refused = table.apply(at(500), acquire(lock, LeaseChoice::Join(a), 1000, wait));
        assert_eq!(
            refused.reply,
            Err(Refusal::LeaseFull {
                lease: a.short(),
                limit: 2
            }),
            "{lock} (wait: {wait})"
        );
        let message = refused.reply.unwrap_err().to_string();
        assert!(
            message.contains(&a.short()) && message.contains(" 2 "),
            "{message}"
        );
        assert!(refused.writes.is_empty() && refused.events.is_empty());
        assert!(refused.handoffs.is_empty());
        let view = table.describe(at(500), &name(lock));
        assert_eq!(view.waiters, 0, "{lock}");
    }
    assert_eq!(
        table.next_due(),
        Some(at(1100)),
        "the refused join renewed nothing"
    );
    assert_eq!(table.held_lock_count(), 3);
    // A retried acquire of a lock the lease holds adds nothing, so it is still answered.
    let again = table.apply(at(600), acquire("cap/1", LeaseChoice::Join(a), 1000, false));
    assert!(
        matches!(again.reply, Ok(Reply::AlreadyHeld(_))),
        "{again:?}"
    );

    // Phase 3: a waiter that queued while its lease had room is refused at its handoff if
    // the lease filled up meanwhile, and the lock goes to nobody rather than past the cap.
    table.apply(at(700), release_lock(a, "cap/2"));
    let waiter = queued(&table.apply(at(700), acquire("cap/4", LeaseChoice::Join(a), 1000, true)));
    granted(&table.apply(at(710), acquire("cap/5", LeaseChoice::Join(a), 1000, false)));
    let handed = table.apply(at(720), release_lock(b, "cap/4"));
    assert_eq!(handed.handoffs.len(), 1);
    assert_eq!(handed.handoffs[0].waiter, waiter);
    assert_eq!(
        handed.handoffs[0].result,
        Err(Refusal::LeaseFull {
            lease: a.short(),
            limit: 2
        })
    );
    assert!(table.describe(at(720), &name("cap/4")).holder.is_none());

    // Phase 4: a lock released makes room again; the lease's expiry ends at most the cap.
    table.apply(at(800), release_lock(a, "cap/5"));
    granted(&table.apply(at(800), acquire("cap/3", LeaseChoice::Join(a), 1000, false)));
    let expired = table.apply(at(1800), Command::Tick);
    assert_eq!(expired.events.len(), 2, "{:?}", expired.events);
}

// checks: L2 (a waiter is listed), S3 (an expired holder is not)
#[test]
fn list_pages_in_name_order_examining_at_most_a_page_of_entries() {
    let mut table = LockTable::new(limits()).unwrap();
    let (gone, held, waiter) = (LeaseId::random(), LeaseId::random(), LeaseId::random());
    let names = |page: &ListPage| -> Vec<String> {
        page.locks
            .iter()
            .map(|view| view.lock.to_string())
            .collect()
    };

    // Phase 1: l/a and l/c stay in their lock-delay after their lease expired; l/b, l/d and
    // l/f are held, l/d with a waiter; m/x is held outside the prefix.
    for (lock, lease) in [
        ("l/a", LeaseChoice::New(gone)),
        ("l/c", LeaseChoice::Join(gone)),
    ] {
        granted(&table.apply(
            at(0),
            Command::Acquire(Acquire {
                lock: name(lock),
                holder: Arc::from("gone"),
                ttl: Duration::from_millis(100),
                lock_delay: Duration::from_secs(10),
                lease,
                wait: false,
                origin: None,
            }),
        ));
    }
    granted(&table.apply(at(0), acquire("l/b", LeaseChoice::New(held), 5000, false)));
    for lock in ["l/d", "l/f", "m/x"] {
        granted(&table.apply(at(0), acquire(lock, LeaseChoice::Join(held), 5000, false)));
    }
    queued(&table.apply(at(0), acquire("l/d", LeaseChoice::New(waiter), 5000, true)));
    table.apply(at(200), Command::Tick);
    let now = at(300);

    // Phase 2: pages of two entries: a skipped entry still counts against the page.
    let first = table.list(now, "l/", None, 2);
    assert_eq!(
        (names(&first), first.next.clone()),
        (vec!["l/b".into()], Some(name("l/b")))
    );
    let second = table.list(now, "l/", first.next.as_ref(), 2);
    assert_eq!(
        (names(&second), second.next.clone()),
        (vec!["l/d".into()], Some(name("l/d")))
    );
    assert_eq!(second.locks[0].waiters, 1);
    let third = table.list(now, "l/", second.next.as_ref(), 2);
    assert_eq!((names(&third), third.next), (vec!["l/f".into()], None));

    // Phase 3: a page of one that finds only a lock-delay is empty but not the last; a
    // page of zero examines one entry; a large page lists everything at once.
    let only_delay = table.list(now, "l/", None, 1);
    assert!(only_delay.locks.is_empty());
    assert_eq!(only_delay.next, Some(name("l/a")));
    assert_eq!(table.list(now, "l/", None, 0), only_delay);
    let all = table.list(now, "l/", None, 100);
    assert_eq!(
        (names(&all), all.next),
        (vec!["l/b".into(), "l/d".into(), "l/f".into()], None)
    );
    let everything = table.list(now, "", None, 100);
    assert_eq!(names(&everything), ["l/b", "l/d", "l/f", "m/x"]);

    // Phase 4: a cursor past the last entry under the prefix ends the listing.
    let past = table.list(now, "l/", Some(&name("l/zz")), 2);
    assert_eq!(
        past,
        ListPage {
            locks: Vec::new(),
            next: None
        }
    );
}

// checks: none (operations: the status page's "handed on")
#[test]
fn a_grant_event_says_whether_it_was_a_handoff() {
    let mut table = LockTable::new(limits()).unwrap();
    let (a, b, c) = (LeaseId::random(), LeaseId::random(), LeaseId::random());
    let first = table.apply(at(0), acquire("h", LeaseChoice::New(a), 1000, false));
    assert_eq!(first.events.len(), 1);
    assert!(!first.events[0].handoff, "found free: not a handoff");
    queued(&table.apply(at(1), acquire("h", LeaseChoice::New(b), 1000, true)));

    // The release frees the lock and hands it to the waiter in one command.
    let release = table.apply(
        at(2),
        Command::Release {
            lease: a,
            lock: None,
        },
    );
    let kinds: Vec<(EventKind, bool)> = release
        .events
        .iter()
        .map(|event| (event.kind, event.handoff))
        .collect();
    assert_eq!(
        kinds,
        [(EventKind::Released, false), (EventKind::Acquired, true)]
    );

    // The handed-on lease expires with nobody waiting; the next acquirer finds it free.
    let expired = table.apply(at(1100), Command::Tick);
    assert_eq!(expired.events.len(), 1);
    assert_eq!(expired.events[0].kind, EventKind::Expired);
    let again = table.apply(at(1101), acquire("h", LeaseChoice::New(c), 1000, false));
    assert!(!again.events[0].handoff);
}

// checks: S1, S3
// A create sent again with the same client-chosen lease id (its first answer was lost, or
// a failover came between) finds its own grant: the same token, no second lease. The id
// of a lease that holds other locks, or that ended, is refused.
#[test]
fn a_retried_create_with_the_same_lease_id_finds_its_own_grant() {
    let mut table = LockTable::new(limits()).unwrap();
    let lease = LeaseId::random();
    let first = granted(&table.apply(at(0), acquire("a", LeaseChoice::New(lease), 1000, false)));
    let retried = table.apply(at(10), acquire("a", LeaseChoice::New(lease), 1000, false));
    match &retried.reply {
        Ok(Reply::AlreadyHeld(grant)) => {
            assert_eq!(grant.token, first.token);
            assert_eq!(grant.lease, lease);
        }
        other => panic!("expected the same grant, got {other:?}"),
    }
    assert_eq!(table.lease_count(), 1);
    let elsewhere = table.apply(at(20), acquire("b", LeaseChoice::New(lease), 1000, false));
    assert!(
        matches!(elsewhere.reply, Err(Refusal::LeaseIdTaken { .. })),
        "{:?}",
        elsewhere.reply
    );
    table.apply(at(30), Command::Release { lease, lock: None });
    let after_end = table.apply(at(40), acquire("a", LeaseChoice::New(lease), 1000, false));
    assert!(
        matches!(after_end.reply, Err(Refusal::LeaseIdTaken { .. })),
        "{:?}",
        after_end.reply
    );
}

// checks: S6, S7
// Two waiting creates with the same client-chosen lease id queue on one lock (a client
// that sent its waiting acquire again after its connection broke, before the server
// noticed). The first is handed the lock; when its lease ends, the second is refused
// `LeaseIdTaken` instead of reviving the ended lease, and the lock goes on to the next
// waiter with a table that still adds up.
#[test]
fn a_queued_create_whose_lease_id_was_used_meanwhile_is_refused_at_its_handoff() {
    let mut table = LockTable::new(limits()).unwrap();
    let holder = LeaseId::random();
    let retried = LeaseId::random();
    let other = LeaseId::random();
    let first = granted(&table.apply(at(0), acquire("q", LeaseChoice::New(holder), 1000, false)));
    let w1 = queued(&table.apply(at(1), acquire("q", LeaseChoice::New(retried), 1000, true)));
    let w2 = queued(&table.apply(at(2), acquire("q", LeaseChoice::New(retried), 1000, true)));
    let w3 = queued(&table.apply(at(3), acquire("q", LeaseChoice::New(other), 1000, true)));

    let released = table.apply(
        at(10),
        Command::Release {
            lease: first.lease,
            lock: None,
        },
    );
    assert_eq!(released.handoffs.len(), 1);
    assert_eq!(released.handoffs[0].waiter, w1);
    let handed = released.handoffs[0].result.clone().unwrap();
    assert_eq!(handed.lease, retried);

    // The first attempt's grant is taken back (its acquirer was gone): the lease ends.
    let undone = table.apply(
        at(20),
        Command::Release {
            lease: retried,
            lock: None,
        },
    );
    let results: Vec<(WaiterId, bool)> = undone
        .handoffs
        .iter()
        .map(|handoff| (handoff.waiter, handoff.result.is_ok()))
        .collect();
    assert_eq!(results, [(w2, false), (w3, true)], "{:?}", undone.handoffs);
    assert!(
        matches!(undone.handoffs[0].result, Err(Refusal::LeaseIdTaken { .. })),
        "{:?}",
        undone.handoffs[0].result
    );
    assert_eq!(
        table.lease_count(),
        1,
        "only the third waiter's lease lives"
    );
    assert_eq!(table.held_lock_count(), 1);
    assert_eq!(table.waiter_count(), 0);
}

// checks: S1, S3, S7 (an administrator's revocation ends the holding it names, hands the
// lock on with a new token, and never touches a newer holding or a free lock)
#[test]
fn a_revocation_ends_the_named_holding_and_hands_the_lock_on() {
    let mut table = LockTable::new(limits()).unwrap();
    let (holder, waiter) = (LeaseId::random(), LeaseId::random());
    let first = granted(&table.apply(at(0), acquire("r", LeaseChoice::New(holder), 10_000, false)));
    granted(&table.apply(
        at(0),
        acquire("s", LeaseChoice::Join(holder), 10_000, false),
    ));
    let queued_waiter =
        queued(&table.apply(at(1), acquire("r", LeaseChoice::New(waiter), 10_000, true)));
    let revoke = |lock: &str, token: Option<u64>, whole_lease: bool| Command::Revoke {
        lock: name(lock),
        token: token.map(|token| FencingToken::new(token).unwrap()),
        whole_lease,
    };

    let stale = table.apply(at(2), revoke("r", Some(first.token.get() + 100), false));
    assert!(
        matches!(stale.reply, Err(Refusal::NotHeld { current: Some(current), .. }) if current == first.token),
        "{:?}",
        stale.reply
    );
    assert!(
        stale.writes.is_empty(),
        "a refused revocation writes nothing"
    );

    // Only the lock: the lease keeps its other lock.
    let revoked = table.apply(at(3), revoke("r", Some(first.token.get()), false));
    assert_eq!(
        revoked.reply,
        Ok(Reply::Revoked {
            lease: holder,
            token: first.token
        })
    );
    assert_eq!(revoked.handoffs.len(), 1);
    assert_eq!(revoked.handoffs[0].waiter, queued_waiter);
    let handed = revoked.handoffs[0].result.clone().unwrap();
    assert!(handed.token > first.token);
    assert_eq!(
        table.lease_count(),
        2,
        "the revoked lock's lease still holds s"
    );

    // The whole lease: s is freed too, and the lease is gone for good (S7).
    let whole = table.apply(at(4), revoke("s", None, true));
    assert!(matches!(whole.reply, Ok(Reply::Revoked { lease, .. }) if lease == holder));
    let renew = table.apply(at(5), Command::Renew { lease: holder });
    assert!(
        matches!(renew.reply, Err(Refusal::LeaseReleased { .. })),
        "{:?}",
        renew.reply
    );
    let free = table.apply(at(6), revoke("s", None, false));
    assert!(
        matches!(free.reply, Err(Refusal::NotHeld { current: None, .. })),
        "{:?}",
        free.reply
    );
}

/// An acquire creating lease `lease` for `identity`.
fn acquire_as(identity: &str, lock: &str, lease: LeaseId, wait: bool) -> Command {
    let Command::Acquire(request) = acquire(lock, LeaseChoice::New(lease), 1000, wait) else {
        unreachable!("acquire makes an Acquire");
    };
    Command::Acquire(Acquire {
        origin: Some(Arc::new(LeaseOrigin {
            identity: Some(Arc::from(identity)),
            peer: None,
        })),
        ..request
    })
}

// checks: A3 (an identity's live leases are bounded: one more create is refused, at once
// or at its handoff, and the lock goes on to the next waiter; the count survives a
// restore), L2
#[test]
fn an_identity_at_its_lease_limit_is_refused_and_others_are_not() {
    let limited = || Limits {
        max_leases_per_identity: Some(1),
        ..limits()
    };
    let mut table = LockTable::new(limited()).unwrap();
    let alice = LeaseId::random();
    granted(&table.apply(at(0), acquire_as("alice", "a/1", alice, false)));
    let refused = table.apply(at(0), acquire_as("alice", "a/2", LeaseId::random(), false));
    assert!(
        matches!(&refused.reply, Err(Refusal::IdentityLeases { identity, limit: 1 }) if identity == "alice"),
        "{:?}",
        refused.reply
    );
    assert!(refused.writes.is_empty(), "a refusal writes nothing");
    // A waiting create is refused at once too, not queued for a grant it cannot take.
    let refused = table.apply(at(0), acquire_as("alice", "a/1", LeaseId::random(), true));
    assert!(matches!(refused.reply, Err(Refusal::IdentityLeases { .. })));
    // Joining her own lease creates none; a retried create finds its own grant.
    granted(&table.apply(at(0), acquire("a/2", LeaseChoice::Join(alice), 1000, false)));
    assert!(matches!(
        table
            .apply(at(0), acquire_as("alice", "a/1", alice, false))
            .reply,
        Ok(Reply::AlreadyHeld(_))
    ));
    // Another identity, and a lease without one, are not held to alice's count.
    let bob = LeaseId::random();
    granted(&table.apply(at(0), acquire_as("bob", "b/1", bob, false)));
    granted(&table.apply(
        at(0),
        acquire("n/1", LeaseChoice::New(LeaseId::random()), 1000, false),
    ));

    // Bob queues a create for a/1 while he has room (his first lease released), then
    // fills his room with another lease before a/1 is free: at the handoff his queued
    // create is refused, and the lock goes on to carol behind him.
    let release_all = |lease| Command::Release { lease, lock: None };
    table.apply(at(0), release_all(bob));
    let bob_waiter = queued(&table.apply(at(0), acquire_as("bob", "a/1", LeaseId::random(), true)));
    let bob = LeaseId::random();
    granted(&table.apply(at(0), acquire_as("bob", "b/2", bob, false)));
    let carol = LeaseId::random();
    let carol_waiter = queued(&table.apply(at(0), acquire_as("carol", "a/1", carol, true)));
    let handed = table.apply(
        at(0),
        Command::Release {
            lease: alice,
            lock: Some(name("a/1")),
        },
    );
    assert!(matches!(
        refused_for(&handed, bob_waiter),
        Refusal::IdentityLeases { .. }
    ));
    let carols = handed
        .handoffs
        .iter()
        .find(|handoff| handoff.waiter == carol_waiter)
        .and_then(|handoff| handoff.result.clone().ok())
        .expect("carol gets the lock bob could not take");
    assert_eq!(carols.lease, carol);

    // Once alice's lease ends she may create another.
    table.apply(at(0), release_all(alice));
    granted(&table.apply(at(0), acquire_as("alice", "a/3", LeaseId::random(), false)));

    // A restore counts the restored leases' identities: bob is still at his limit.
    let mut restored = LockTable::restore(
        limited(),
        table.next_token(),
        vec![RestoredLease {
            lease: bob,
            ttl: Duration::from_millis(1000),
            origin: Some(Arc::new(LeaseOrigin {
                identity: Some(Arc::from("bob")),
                peer: None,
            })),
        }],
        vec![],
        vec![],
        vec![],
        at(10_000),
    )
    .unwrap();
    let refused = restored.apply(
        at(10_000),
        acquire_as("bob", "b/3", LeaseId::random(), false),
    );
    assert!(matches!(refused.reply, Err(Refusal::IdentityLeases { .. })));
}

/// The waiter records `outcomes`' writes leave on disk, as a restore reads them back
/// (in key order, which is waiter order, reversed here to show the order is restored from
/// the ids, not from the list).
fn stored_waiters(outcomes: &[&Outcome]) -> Vec<RestoredWaiter> {
    let mut stored = std::collections::BTreeMap::new();
    for outcome in outcomes {
        for write in &outcome.writes {
            match write {
                Write::PutWaiter { waiter, request } => {
                    stored.insert(*waiter, request.clone());
                }
                Write::DeleteWaiter { waiter } => {
                    stored.remove(waiter);
                }
                _ => {}
            }
        }
    }
    stored
        .into_iter()
        .rev()
        .map(|(waiter, request)| RestoredWaiter { waiter, request })
        .collect()
}

// checks: L2, S3 (queued acquirers survive a restart or a failover in their order: each
// restored waiter keeps its place for its client, whatever order the clients come back
// in; a waiter whose client never comes back leaves at the end of its grace, and the lock
// goes on)
#[test]
fn restored_waiters_keep_their_places_until_their_clients_come_back_or_their_grace_ends() {
    let mut table = LockTable::new(limits()).unwrap();
    let holder = LeaseId::random();
    let (first, second, third) = (LeaseId::random(), LeaseId::random(), LeaseId::random());
    let held = granted(&table.apply(at(0), acquire("x", LeaseChoice::New(holder), 60_000, false)));
    let mut outcomes = Vec::new();
    let mut ids = Vec::new();
    for lease in [first, second, third] {
        let outcome = table.apply(at(0), acquire("x", LeaseChoice::New(lease), 60_000, true));
        ids.push(queued(&outcome));
        outcomes.push(outcome);
    }
    // One more queued and cancelled: its record is gone again.
    let gone = table.apply(
        at(0),
        acquire("x", LeaseChoice::New(LeaseId::random()), 60_000, true),
    );
    let cancelled = table.apply(
        at(0),
        Command::CancelWait {
            waiter: queued(&gone),
        },
    );
    outcomes.push(gone);
    outcomes.push(cancelled);
    let waiters = stored_waiters(&outcomes.iter().collect::<Vec<_>>());
    assert_eq!(waiters.len(), 3, "{waiters:?}");

    // The restart (or the new leader): the holder's lease and lock, and the three waiters.
    let mut table = LockTable::restore(
        limits(),
        table.next_token(),
        vec![RestoredLease {
            lease: holder,
            ttl: Duration::from_secs(60),
            origin: None,
        }],
        vec![held_lock("x", holder, held.token.get())],
        vec![],
        waiters,
        at(1_000),
    )
    .unwrap();
    assert_eq!(table.describe(at(1_000), &name("x")).waiters, 3);

    // The second client comes back first: it takes back its own place, not the first.
    let back = table.apply(
        at(1_100),
        acquire("x", LeaseChoice::New(second), 60_000, true),
    );
    assert!(
        matches!(back.reply, Ok(Reply::Queued(id)) if id == ids[1]),
        "{:?}",
        back.reply
    );
    assert!(
        back.writes.is_empty(),
        "attaching writes nothing: {:?}",
        back.writes
    );
    // The holder releases: the lock is held for the first waiter, whose client is not back.
    let released = table.apply(
        at(1_200),
        Command::Release {
            lease: holder,
            lock: None,
        },
    );
    assert!(released.handoffs.is_empty(), "{:?}", released.handoffs);
    let try_once = table.apply(
        at(1_200),
        acquire("x", LeaseChoice::New(LeaseId::random()), 60_000, false),
    );
    assert!(
        matches!(try_once.reply, Err(Refusal::Queued { waiters: 3, .. })),
        "{:?}",
        try_once.reply
    );
    // The first client comes back: granted at once, from its old place.
    let first_back = table.apply(
        at(1_300),
        acquire("x", LeaseChoice::New(first), 60_000, true),
    );
    assert!(matches!(first_back.reply, Ok(Reply::Queued(id)) if id == ids[0]));
    let handed: Vec<_> = first_back
        .handoffs
        .iter()
        .map(|h| (h.waiter, h.result.is_ok()))
        .collect();
    assert_eq!(handed, vec![(ids[0], true)]);
    assert!(first_back
        .writes
        .iter()
        .any(|write| matches!(write, Write::DeleteWaiter { waiter } if *waiter == ids[0])));
    // Its release hands the lock to the second, attached.
    let next = table.apply(
        at(1_400),
        Command::Release {
            lease: first,
            lock: None,
        },
    );
    let handed: Vec<_> = next
        .handoffs
        .iter()
        .map(|h| (h.waiter, h.result.is_ok()))
        .collect();
    assert_eq!(handed, vec![(ids[1], true)]);

    // The third never comes back: at the end of its grace (5 s from the restore) it leaves
    // the queue, durably, and the second's release then hands nothing on.
    assert_eq!(table.next_due(), Some(at(6_000)));
    let expired = table.apply(at(6_000), Command::Tick);
    assert!(expired
        .writes
        .iter()
        .any(|write| matches!(write, Write::DeleteWaiter { waiter } if *waiter == ids[2])));
    assert_eq!(table.waiter_count(), 0);
    let last = table.apply(
        at(6_100),
        Command::Release {
            lease: second,
            lock: None,
        },
    );
    assert!(last.handoffs.is_empty());
    // A client that comes back after its grace queues anew, at the back.
    let late = table.apply(
        at(6_200),
        acquire("x", LeaseChoice::New(third), 60_000, true),
    );
    assert!(
        matches!(late.reply, Ok(Reply::Granted(_))),
        "{:?}",
        late.reply
    );
}

// checks: L2 (a restored waiter whose client never comes back holds a free lock no longer
// than its grace: then the next waiter gets it)
#[test]
fn a_free_lock_held_for_a_restored_waiter_goes_on_when_its_grace_ends() {
    let mut table = LockTable::new(limits()).unwrap();
    let holder = LeaseId::random();
    granted(&table.apply(at(0), acquire("y", LeaseChoice::New(holder), 60_000, false)));
    let absent = table.apply(
        at(0),
        acquire("y", LeaseChoice::New(LeaseId::random()), 60_000, true),
    );
    let present_lease = LeaseId::random();
    let present = table.apply(
        at(0),
        acquire("y", LeaseChoice::New(present_lease), 60_000, true),
    );
    let present_id = queued(&present);
    let waiters = stored_waiters(&[&absent, &present]);
    let mut table = LockTable::restore(
        limits(),
        table.next_token(),
        vec![],
        vec![],
        vec![],
        waiters,
        at(10_000),
    )
    .unwrap();
    // The lock is free (its holder's lease was not restored), held for the absent waiter.
    let back = table.apply(
        at(10_500),
        acquire("y", LeaseChoice::New(present_lease), 60_000, true),
    );
    assert!(back.handoffs.is_empty(), "{:?}", back.handoffs);
    let ended = table.apply(at(15_000), Command::Tick);
    let handed: Vec<_> = ended
        .handoffs
        .iter()
        .map(|h| (h.waiter, h.result.is_ok()))
        .collect();
    assert_eq!(handed, vec![(present_id, true)]);
}

// checks: L2 (restored waiters whose graces end together all leave: none of them is
// granted in its turn, and the lock goes to the first waiter still there)
#[test]
fn restored_waiters_whose_graces_end_together_all_leave_before_the_lock_goes_on() {
    let mut table = LockTable::new(limits()).unwrap();
    granted(&table.apply(
        at(0),
        acquire("z", LeaseChoice::New(LeaseId::random()), 60_000, false),
    ));
    let outcomes: Vec<Outcome> = (0..2)
        .map(|_| {
            table.apply(
                at(0),
                acquire("z", LeaseChoice::New(LeaseId::random()), 60_000, true),
            )
        })
        .collect();
    let waiters = stored_waiters(&outcomes.iter().collect::<Vec<_>>());
    let mut table = LockTable::restore(
        limits(),
        table.next_token(),
        vec![],
        vec![],
        vec![],
        waiters,
        at(0),
    )
    .unwrap();
    // A client that queues after the restore is behind both restored waiters.
    let live = queued(&table.apply(
        at(1_000),
        acquire("z", LeaseChoice::New(LeaseId::random()), 60_000, true),
    ));
    let ended = table.apply(at(5_000), Command::Tick);
    let handed: Vec<_> = ended
        .handoffs
        .iter()
        .map(|h| (h.waiter, h.result.is_ok()))
        .collect();
    assert_eq!(handed, vec![(live, true)]);
    let deleted = ended
        .writes
        .iter()
        .filter(|write| matches!(write, Write::DeleteWaiter { .. }))
        .count();
    assert_eq!(
        deleted, 3,
        "both restored records and the granted one's: {:?}",
        ended.writes
    );
}
