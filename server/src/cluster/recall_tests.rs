//! Tests of [`recall`](super::recall): the events a restarted member recalls from its raft
//! log are exactly those apply published, so a watcher resumes on it from before the
//! restart, missing and repeating nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};

use super::epoch::Epoch;
use super::log_store::{LogStore, DEFAULT_SEGMENT_BYTES};
use super::recall::applied_events;
use super::state_machine_tests::{entry, event_op, in_epoch, open, two_promotions};
use super::types::Entry;
use crate::event_log::Since;
use crate::journal::JournalOp;
use crate::record::encode_last_revision;

/// A batch of `epoch` that publishes event `revision` on `lock`.
fn event_in(epoch: Epoch, revision: u64, lock: &str) -> Vec<JournalOp> {
    in_epoch(
        epoch,
        vec![encode_last_revision(revision), event_op(revision, lock)],
    )
}

fn recalled(entries: &[Entry], image_epoch: Epoch) -> Vec<(u64, String)> {
    applied_events(entries, Some(&image_epoch.to_bytes()))
        .unwrap()
        .into_iter()
        .map(|event| (event.revision, event.event.lock.to_string()))
        .collect()
}

fn named(events: &[(u64, &str)]) -> Vec<(u64, String)> {
    events
        .iter()
        .map(|(revision, lock)| (*revision, lock.to_string()))
        .collect()
}

// checks: W1, C1 (recalled events are the ones apply published: an ended term's batch is
// left out whether the recalled entries hold the barrier that ended it or not)
#[test]
fn recall_leaves_out_what_apply_skipped() {
    let (first, second) = two_promotions();
    // One term all through: the image's epoch is the epoch of every recalled entry.
    let steady = [
        entry(7, event_in(second, 5, "a")),
        entry(8, event_in(second, 6, "b")),
    ];
    assert_eq!(recalled(&steady, second), named(&[(5, "a"), (6, "b")]));
    // A stale batch of the first term after the second term's barrier: skipped.
    let across = [
        entry(1, first.barrier().ops),
        entry(2, event_in(first, 1, "a")),
        entry(3, second.barrier().ops),
        entry(4, event_in(first, 2, "stale")),
        entry(5, event_in(second, 2, "b")),
    ];
    assert_eq!(recalled(&across, second), named(&[(1, "a"), (2, "b")]));
    // The same log purged up to index 1: the epoch before the second barrier is unknown,
    // so the events before it are left out, and the stale batch still is.
    assert_eq!(recalled(&across[1..], second), named(&[(2, "b")]));
    // Without a barrier among the recalled entries, a batch that expects another epoch
    // than the image's was skipped by apply too.
    assert_eq!(recalled(&across[3..], second), named(&[(2, "b")]));
}

// checks: W1 (a watcher resumes on a restarted member from a revision before the restart,
// as far back as its raft log reaches, and one from before that is told to list again)
#[tokio::test]
async fn a_restarted_member_recalls_the_events_its_log_still_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (_, second) = two_promotions();
    let entries: Vec<Entry> = std::iter::once(entry(1, second.barrier().ops))
        .chain((1..=20).map(|revision| {
            entry(
                revision + 1,
                event_in(second, revision, &format!("lock-{revision}")),
            )
        }))
        .collect();
    {
        let (mut log, _) =
            LogStore::open(&dir.path().join("raft"), false, DEFAULT_SEGMENT_BYTES).unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        let mut sm = open(dir.path(), false);
        sm.apply(entries.clone()).await.unwrap();
        // The log is purged up to the entry of revision 5.
        log.purge(entries[5].log_id).await.unwrap();
    }
    let (log, _) = LogStore::open(&dir.path().join("raft"), false, DEFAULT_SEGMENT_BYTES).unwrap();
    let sm = open(dir.path(), false);
    assert_eq!(sm.recall_events(&log).unwrap(), 15);
    let events = sm.event_log();
    let resumed = events
        .subscribe(Since::Revision(6))
        .expect("revision 6 is in the log");
    let revisions: Vec<u64> = resumed.backlog.iter().map(|event| event.revision).collect();
    assert_eq!(revisions, (6..=20).collect::<Vec<_>>());
    assert_eq!(resumed.backlog[0].event.lock.as_str(), "lock-6");
    let refused = events
        .subscribe(Since::Revision(5))
        .expect_err("revision 5 was purged with its entry");
    assert_eq!(refused.oldest, 6);
}
