//! A failed `fdatasync` stops the store: after it, Linux may have dropped the unsynced
//! pages and report the next sync as clean, so nothing after it may be acknowledged. The
//! failure is injected right where the real call's result is checked (`sync_fault`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fenced_types::{FencingToken, LockName};

use super::SledBackend;
use crate::error::{Error, StorageError};
use crate::gate::Gate;
use crate::op::WriteOp;

fn t(value: u64) -> FencingToken {
    FencingToken::new(value).unwrap()
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

/// The error every call after the failure must get: the store stopped, naming the failed
/// `fdatasync` and the kernel's error.
fn assert_stopped<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    match result {
        Err(Error::Storage(StorageError::Stopped { during, detail })) => {
            assert_eq!(during, "fdatasync of sled's data file", "{what}");
            assert!(
                detail.contains(&eio().to_string()),
                "{what}: the error names the original failure: {detail}"
            );
        }
        other => panic!("{what} after a failed fdatasync: {other:?}"),
    }
}

// checks: S5 (the mark and the data a client is told about are durable: after a failed
// fdatasync, no later write, fence or read is acknowledged; a reopen recovers what was
// synced)
#[test]
fn after_a_failed_fdatasync_nothing_more_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new(SledBackend::open(dir.path()).unwrap());
    let r = LockName::new("orders").unwrap();
    gate.write(&r, t(1), &WriteOp::put("synced", "one"))
        .unwrap();

    // The next fdatasync fails once; the ones after it report success, as Linux may after
    // dropping the pages the failed one could not write.
    let mut failures_left = 1;
    gate.backend().group_commit().inject_sync_fault(move || {
        (failures_left > 0).then(|| {
            failures_left -= 1;
            eio()
        })
    });
    let failed = gate.write(&r, t(2), &WriteOp::put("lost", "two"));
    assert_stopped("the write whose fdatasync failed", failed);

    assert_stopped(
        "a later write",
        gate.write(&r, t(3), &WriteOp::put("later", "three")),
    );
    assert_stopped("a later fence", gate.fence(&r, t(4)));
    assert_stopped("a later read", gate.read(&r, b"synced"));
    assert_stopped("a later read of the mark", gate.mark(&r));
    assert_stopped("the flush on shutdown", gate.flush());
    assert_eq!(
        gate.backend().stopped().map(|e| e.to_string()),
        Some(gate.flush().unwrap_err().to_string()),
        "the backend says why it stopped"
    );

    // A reopen (a restart of the service) reads what the disk holds and serves again.
    drop(gate);
    let gate = Gate::new(SledBackend::open(dir.path()).unwrap());
    let synced = gate.read(&r, b"synced").unwrap().unwrap();
    assert_eq!((synced.value.as_slice(), synced.token), (&b"one"[..], t(1)));
    assert_eq!(
        gate.read(&r, b"later").unwrap(),
        None,
        "a write refused after the stop was applied"
    );
    gate.write(&r, t(5), &WriteOp::put("after-reopen", "five"))
        .unwrap();
}

// checks: S5 (every writer that waited on the failed fdatasync fails with it: none retries
// the sync and is told "durable" by a second fdatasync that may report clean)
#[test]
fn every_writer_waiting_on_a_failed_fdatasync_fails() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new(SledBackend::open(dir.path()).unwrap());
    let group = gate.backend().group_commit().clone();
    let (entered, sync_entered) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let mut calls = 0;
    // The first fdatasync waits until the test lets it go, then fails; later ones pass.
    group.inject_sync_fault(move || {
        calls += 1;
        (calls == 1).then(|| {
            entered.send(()).unwrap();
            released.recv().unwrap();
            eio()
        })
    });
    let write = |token: u64| {
        let gate = gate.clone();
        std::thread::spawn(move || {
            let r = LockName::new(format!("r{token}")).unwrap();
            gate.write(&r, t(token), &WriteOp::put("k", "v"))
        })
    };
    let leader = write(1);
    sync_entered.recv_timeout(Duration::from_secs(30)).unwrap();
    // Three more writers commit and wait for the sync the leader is in.
    let followers: Vec<_> = (2..=4).map(write).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while group.tickets() < 4 {
        assert!(
            Instant::now() < deadline,
            "the followers never took tickets"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    release.send(()).unwrap();
    assert_stopped("the leader", leader.join().unwrap());
    for (token, follower) in (2..=4).zip(followers) {
        assert_stopped(&format!("waiting writer {token}"), follower.join().unwrap());
    }
}
