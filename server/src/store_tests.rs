//! The store's tests: group commit, checkpoints and recovery through [`Store`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fenced_types::{FencingToken, LeaseId, LockName};

use super::*;
use crate::record::encode;
use crate::recovery::SLED_LOCK_WAIT;

const CACHE: u64 = 1024 * 1024;

fn token(value: u64) -> FencingToken {
    FencingToken::new(value).unwrap()
}

fn grant(lease: LeaseId, lock: &str, value: u64) -> Vec<Write> {
    vec![
        Write::PutLease {
            lease,
            ttl: Duration::from_secs(30),
            holder: "h".into(),
            origin: None,
        },
        Write::PutLock {
            lock: LockName::new(lock).unwrap(),
            lease,
            token: token(value),
            holder: "h".into(),
            lock_delay: Duration::ZERO,
        },
        Write::NextToken(token(value + 1)),
    ]
}

fn journal_records(dir: &Path) -> usize {
    Journal::read(&dir.join("journal"), 0)
        .unwrap()
        .batches
        .len()
}

// checks: S2 (after a failure, what is durable is still answered as durable, and what
// is not is refused at once instead of waiting forever)
#[tokio::test]
async fn after_a_failure_waiters_for_undurable_batches_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
    let durable = store.stage(grant(LeaseId::random(), "a", 7), &[]).unwrap();
    store.commit().unwrap();
    let never = store.stage(grant(LeaseId::random(), "b", 8), &[]).unwrap();
    store.fail();
    store.wait_durable(durable).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), store.wait_durable(never))
        .await
        .expect("refused at once, not left waiting");
    let error = refused.expect_err("a batch never committed is not durable");
    assert!(error.to_string().contains("storage failure"), "{error}");
}

// checks: S1 (the token floor reaches the marker at a checkpoint, not on the commit
// path, and before the journal file holding the tokens goes)
#[test]
fn a_checkpoint_raises_the_marker_before_it_deletes_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let marker_path = dir.path().join(crate::marker::MARKER_FILE);
    let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
    store.stage(grant(LeaseId::random(), "a", 7), &[]).unwrap();
    assert_eq!(store.commit().unwrap(), 1);
    store.maybe_checkpoint().unwrap();
    assert!(
        !marker_path.exists(),
        "the commit path does not write the marker"
    );
    store.close().unwrap();
    let text = std::fs::read_to_string(&marker_path).unwrap();
    assert!(text.contains("next_token_at_least 8"), "{text:?}");
    assert_eq!(journal_records(dir.path()), 0);

    // Checkpoints close together each raise it: no journal file goes before the floor
    // covers its tokens.
    let dir = tempfile::tempdir().unwrap();
    let marker_path = dir.path().join(crate::marker::MARKER_FILE);
    let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_nanos(1)).unwrap();
    for value in [7, 9] {
        store
            .stage(grant(LeaseId::random(), "a", value), &[])
            .unwrap();
        store.commit().unwrap();
        store.maybe_checkpoint().unwrap();
    }
    store.close().unwrap();
    let text = std::fs::read_to_string(&marker_path).unwrap();
    assert!(text.contains("next_token_at_least 10"), "{text:?}");

    // If the floor cannot be written, the journal that holds the tokens stays.
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
    std::fs::create_dir(dir.path().join(crate::marker::MARKER_FILE)).unwrap();
    store.stage(grant(LeaseId::random(), "a", 7), &[]).unwrap();
    store.commit().unwrap();
    let Err(error) = store.close() else {
        panic!("closed although the marker cannot be written");
    };
    assert!(error.to_string().contains("marker"), "{error}");
    assert_eq!(journal_records(dir.path()), 1);
}

// The checkpoint interval counts from the first record of a journal file, so a burst
// after an idle spell is not met by a checkpoint (real time, with margins of hundreds
// of milliseconds around steps that take microseconds).
#[test]
fn the_checkpoint_interval_counts_from_the_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_millis(300);
    let (store, _) = Store::open(dir.path(), false, CACHE, every).unwrap();
    let rotated = || {
        store
            .journal_sink()
            .committed
            .lock()
            .unwrap()
            .journal
            .is_empty()
    };
    std::thread::sleep(every + Duration::from_millis(100));
    store.stage(grant(LeaseId::random(), "a", 1), &[]).unwrap();
    store.commit().unwrap();
    store.maybe_checkpoint().unwrap();
    assert!(
        !rotated(),
        "checkpointed right after the idle spell's first commit"
    );
    std::thread::sleep(every + Duration::from_millis(100));
    store.maybe_checkpoint().unwrap();
    assert!(
        rotated(),
        "no checkpoint an interval after the first record"
    );
    store.close().unwrap();
}

// A store closed a moment ago reopens at once (sled lets go of its lock late), while a
// directory another live store holds is still refused, after the wait.
#[test]
fn reopening_waits_out_a_closed_store_but_not_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Store::open(dir.path(), false, CACHE, Duration::from_secs(3600));
    for _ in 0..5 {
        let (store, _) = open().unwrap();
        store.close().unwrap();
    }
    let (live, _) = open().unwrap();
    let started = Instant::now();
    let Err(error) = open() else {
        panic!("opened a directory another store holds");
    };
    assert!(
        error.to_string().contains("could not acquire lock"),
        "{error}"
    );
    assert!(
        started.elapsed() >= SLED_LOCK_WAIT,
        "gave up before the wait"
    );
    live.close().unwrap();
}

// checks: S1, S2 (acknowledged writes that only the journal holds come back)
#[test]
fn a_restart_replays_what_only_the_journal_holds() {
    let dir = tempfile::tempdir().unwrap();
    let lease = LeaseId::random();
    {
        let (store, recovered) =
            Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
        assert_eq!(recovered.next_token, FencingToken::FIRST);
        store.stage(grant(lease, "a", 7), &[]).unwrap();
        assert_eq!(store.commit().unwrap(), 1);
        // The crash: the committed record never reaches sled.
        store.journal_sink().checkpointer.close().unwrap();
    }
    assert_eq!(journal_records(dir.path()), 1);
    let (_store, recovered) =
        Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
    assert_eq!(recovered.next_token, token(8));
    assert_eq!(recovered.leases.len(), 1);
    assert_eq!(recovered.leases[0].lease, lease);
    assert_eq!(recovered.locks.len(), 1);
    assert_eq!(recovered.locks[0].token, token(7));
    // Replayed into sled and flushed, so the old files are gone.
    assert_eq!(journal_records(dir.path()), 0);
}

// checks: S2, S3 (a lock-delay is on disk with the expiry that started it, whether the
// journal or sled holds it, and gone once it ended: a restart restores exactly the
// delays that run)
#[test]
fn a_lock_delay_is_restored_after_a_crash_and_forgotten_once_it_ended() {
    use crate::clock::Timestamp;
    use crate::table::{Acquire, Command, LeaseChoice, Limits, LockTable, Refusal, Reply};

    let limits = || Limits::from(&crate::Config::default());
    let at = Timestamp::from_millis;
    let acquire = |lock_delay_ms: u64| {
        Command::Acquire(Acquire {
            lock: LockName::new("x").unwrap(),
            holder: "h".into(),
            ttl: Duration::from_millis(100),
            lock_delay: Duration::from_millis(lock_delay_ms),
            lease: LeaseChoice::New(LeaseId::random()),
            wait: false,
            origin: None,
        })
    };
    let restore = |recovered: Recovered, now| {
        LockTable::restore(
            limits(),
            recovered.next_token,
            recovered.leases,
            recovered.locks,
            recovered.delays,
            recovered.waiters,
            now,
        )
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let open = || Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();

    // A holder with a 5 s lock-delay expires; the crash comes inside the delay, with the
    // expiry in the journal only.
    {
        let (store, recovered) = open();
        let mut table = restore(recovered, at(0));
        for (now, command) in [(0, acquire(5_000)), (100, Command::Tick)] {
            store
                .stage(table.apply(at(now), command).writes, &[])
                .unwrap();
        }
        store.commit().unwrap();
        store.journal_sink().checkpointer.close().unwrap();
    }
    let (store, recovered) = open();
    assert_eq!(recovered.delays.len(), 1, "{recovered:?}");
    // Restored 1 h after the crash: the delay runs in full from here.
    let mut table = restore(recovered, at(3_600_000));
    let refused = table.apply(at(3_604_999), acquire(0));
    assert!(
        matches!(refused.reply, Err(Refusal::LockDelay { .. })),
        "{:?}",
        refused.reply
    );
    let grant = table.apply(at(3_605_000), acquire(0));
    assert!(matches!(grant.reply, Ok(Reply::Granted(_))));
    store.stage(grant.writes, &[]).unwrap();
    store.commit().unwrap();
    store.close().unwrap();
    drop(store);

    // The ended delay left nothing behind (sled holds it all now).
    let (_store, recovered) = open();
    assert!(recovered.delays.is_empty(), "{recovered:?}");
    assert_eq!(recovered.locks.len(), 1);
}

// checks: S1, S7 (a journal file sled already holds, left behind, is not replayed over
// the newer state sled holds: a released lock stays released)
#[test]
fn a_journal_file_sled_holds_is_not_replayed_over_newer_state() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("journal").join(format!("{:020}.log", 1));
    let lease = LeaseId::random();
    {
        let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_nanos(1)).unwrap();
        store.stage(grant(lease, "a", 1), &[]).unwrap();
        store.commit().unwrap();
        let grant_file = std::fs::read(&first).unwrap();
        store.maybe_checkpoint().unwrap();
        store
            .stage(
                vec![
                    Write::DeleteLock {
                        lock: LockName::new("a").unwrap(),
                    },
                    Write::DeleteLease { lease },
                ],
                &[],
            )
            .unwrap();
        store.commit().unwrap();
        // sled holds generations 1 (the grant) and 2 (the release).
        store.close().unwrap();
        // Generation 1 comes back, as after a power cut that undid its unsynced
        // deletion but not the later one of generation 2.
        std::fs::write(&first, grant_file).unwrap();
    }
    let (_store, recovered) =
        Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
    assert!(
        recovered.locks.is_empty() && recovered.leases.is_empty(),
        "a released lock came back: {recovered:?}"
    );
    assert_eq!(recovered.next_token, token(2));
    assert!(!first.exists(), "the covered file is deleted");
}

// checks: S1, S2 (a journal file missing between two that sled does not hold yet is a
// loss of acknowledged writes: the start is refused)
#[test]
fn a_journal_file_missing_between_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), false, CACHE, Duration::from_secs(3600)).unwrap();
        let mut journal = store.journal_sink().committed.lock().unwrap();
        for (value, lock) in [(1, "a"), (2, "b"), (3, "c")] {
            let ops = grant(LeaseId::random(), lock, value)
                .into_iter()
                .map(encode)
                .collect();
            journal.journal.append(&JournalBatch { ops }).unwrap();
            journal.journal.rotate().unwrap();
        }
        drop(journal);
        store.journal_sink().checkpointer.close().unwrap();
    }
    let second = dir.path().join("journal").join(format!("{:020}.log", 2));
    std::fs::remove_file(second).unwrap();
    let error = Store::open(dir.path(), false, CACHE, Duration::from_secs(1))
        .err()
        .expect("a journal with a file missing must not open");
    assert!(error.to_string().contains("generation 2"), "{error}");
}

// checks: S2, S7 (a checkpoint moves writes into sled in order; a delete stays deleted)
#[test]
fn checkpoints_move_the_journal_into_sled_and_delete_it() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (LeaseId::random(), LeaseId::random());
    {
        let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_nanos(1)).unwrap();
        store.stage(grant(first, "a", 1), &[]).unwrap();
        store.commit().unwrap();
        store.maybe_checkpoint().unwrap();
        store
            .stage(
                vec![
                    Write::DeleteLock {
                        lock: LockName::new("a").unwrap(),
                    },
                    Write::DeleteLease { lease: first },
                ],
                &[],
            )
            .unwrap();
        store.stage(grant(second, "b", 2), &[]).unwrap();
        assert_eq!(store.commit().unwrap(), 3);
        store.close().unwrap();
    }
    assert_eq!(journal_records(dir.path()), 0);
    let (_store, recovered) = Store::open(dir.path(), true, CACHE, Duration::from_secs(1)).unwrap();
    assert_eq!(recovered.next_token, token(3));
    let leases: Vec<LeaseId> = recovered.leases.iter().map(|l| l.lease).collect();
    assert_eq!(leases, [second]);
    let locks: Vec<&str> = recovered.locks.iter().map(|l| l.lock.as_str()).collect();
    assert_eq!(locks, ["b"]);
}

// checks: S2 (a sled that lost checkpointed writes is refused, even with no marker)
#[test]
fn a_sled_older_than_the_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), false, CACHE, Duration::from_nanos(1)).unwrap();
        for (value, lock) in [(1, "a"), (2, "b")] {
            store
                .stage(grant(LeaseId::random(), lock, value), &[])
                .unwrap();
            store.commit().unwrap();
            store.maybe_checkpoint().unwrap();
        }
        // Left in the journal only: file 3.
        store.stage(grant(LeaseId::random(), "c", 3), &[]).unwrap();
        store.commit().unwrap();
        store.journal_sink().checkpointer.close().unwrap();
    }
    // sled's files (and the marker) vanish; the journal stays.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::remove_file(path).unwrap();
        } else if path.file_name().is_some_and(|name| name != "journal") {
            std::fs::remove_dir_all(path).unwrap();
        }
    }
    let error = Store::open(dir.path(), false, CACHE, Duration::from_secs(1))
        .err()
        .expect("a sled missing checkpointed writes must not open");
    assert!(
        error.to_string().contains("sled lost checkpointed writes"),
        "{error}"
    );
}

// checks: S2 (a checkpoint larger than one sled batch arrives whole, in chunks)
#[test]
fn a_large_checkpoint_goes_into_sled_in_chunks_and_comes_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let leases: Vec<LeaseId> = (0..2_500).map(|_| LeaseId::random()).collect();
    {
        let (store, _) = Store::open(dir.path(), false, CACHE, Duration::from_secs(3600)).unwrap();
        for (i, lease) in leases.iter().enumerate() {
            store
                .stage(grant(*lease, &format!("lock/{i}"), i as u64 + 1), &[])
                .unwrap();
        }
        store.commit().unwrap();
        store.close().unwrap();
    }
    assert_eq!(journal_records(dir.path()), 0);
    let (_store, recovered) =
        Store::open(dir.path(), false, CACHE, Duration::from_secs(3600)).unwrap();
    assert_eq!(recovered.leases.len(), leases.len());
    assert_eq!(recovered.locks.len(), leases.len());
    assert_eq!(recovered.next_token, token(2_501));
}

// checks: S1 (damage to the newest journal file's last record cannot be told from a torn
// append, so the record is dropped; the tokens it may have issued are skipped, so none is
// issued twice even if it had been acknowledged)
#[test]
fn tokens_a_dropped_last_record_may_have_issued_are_never_issued_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
        store.stage(grant(LeaseId::random(), "a", 7), &[]).unwrap();
        store.commit().unwrap();
        // Acknowledged: token 8 is out, the next token is 9.
        store.stage(grant(LeaseId::random(), "b", 8), &[]).unwrap();
        store.commit().unwrap();
        // The crash: neither record reaches sled.
        store.journal_sink().checkpointer.close().unwrap();
    }
    assert_eq!(journal_records(dir.path()), 2);
    let journal_dir = dir.path().join("journal");
    let mut files: Vec<_> = std::fs::read_dir(&journal_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let file = &files[0];
    let mut bytes = std::fs::read(file).unwrap();
    let header = 12;
    let length = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let second = journal::MAGIC.len() + header + length(journal::MAGIC.len());
    let middle_of_its_payload = second + header + length(second) / 2;
    bytes[middle_of_its_payload] ^= 0x40;
    std::fs::write(file, &bytes).unwrap();

    let (_store, recovered) =
        Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
    assert_eq!(
        recovered.locks.len(),
        1,
        "the damaged last record is dropped"
    );
    assert!(
        recovered.next_token > token(8),
        "token 8 was acknowledged in the dropped record, and the next token is {}",
        recovered.next_token
    );
}

// checks: A3 (who created a lease survives a restart with it: the per-identity lease
// count and the audit log's lines rely on it), S2
#[test]
fn a_leases_origin_is_read_back_after_a_restart_and_an_events_with_it() {
    use crate::event_log::RevisedEvent;
    use crate::table::{Event, EventKind, LeaseOrigin};

    let dir = tempfile::tempdir().unwrap();
    let origin = Some(std::sync::Arc::new(LeaseOrigin {
        identity: Some("alice".into()),
        peer: Some("10.1.2.3:45678".parse().unwrap()),
    }));
    let lease = LeaseId::random();
    let mut writes = grant(lease, "a", 7);
    let Write::PutLease { origin: slot, .. } = &mut writes[0] else {
        panic!("grant() starts with its lease");
    };
    *slot = origin.clone();
    let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
    store.stage(writes, &[]).unwrap();
    store.commit().unwrap();
    store.close().unwrap();
    let (_, recovered) = Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
    assert_eq!(recovered.leases.len(), 1);
    assert_eq!(recovered.leases[0].origin, origin);

    let event = RevisedEvent {
        revision: 3,
        event: Event {
            kind: EventKind::Expired,
            lock: LockName::new("a").unwrap(),
            holder: "alice/w".into(),
            token: token(7),
            handoff: false,
            lease: Some(lease),
            origin,
        },
    };
    let op = crate::record::encode_event(&event);
    let read = crate::record::decode_event(op.value.as_deref().unwrap()).unwrap();
    assert_eq!(read.event, event.event);
}
