//! Tests of [`StateMachine`] beyond openraft's suite: replicas fed the same entries end
//! identical, applied state survives a reopen, a snapshot replaces the image, and the image
//! reads back as the lock table's state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fenced_types::{FencingToken, LeaseId, LockName};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftSnapshotBuilder};
use proptest::prelude::*;

use super::epoch::Epoch;
use super::state_machine::StateMachine;
use super::types::{ClusterNode, CommitBatch, Entry, LogId};
use crate::event_log::RevisedEvent;
use crate::journal::{JournalBatch, JournalOp};
use crate::record::encode;
use crate::table::{Event, EventKind, Write};

fn log_id(index: u64) -> LogId {
    LogId {
        leader_id: CommittedLeaderId::new(1, 1),
        index,
    }
}

pub(super) fn entry(index: u64, ops: Vec<JournalOp>) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(CommitBatch(JournalBatch { ops })),
    }
}

fn membership_entry(index: u64) -> Entry {
    let nodes = BTreeMap::from([(
        1,
        ClusterNode {
            raft_addr: "127.0.0.1:7001".to_string(),
            client_addr: "127.0.0.1:8001".to_string(),
        },
    )]);
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(Membership::new(vec![[1].into()], nodes)),
    }
}

pub(super) fn open(dir: &Path, fdatasync: bool) -> StateMachine {
    StateMachine::open(&dir.join("raft-sm"), fdatasync).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

// checks: S2 (what apply returned is durable: the records, the last applied log id and the
// membership come back after a close)
#[tokio::test]
async fn applied_state_and_records_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path(), true);
    sm.apply([
        membership_entry(1),
        entry(2, vec![JournalOp::put("a", "1"), JournalOp::put("b", "2")]),
        entry(3, vec![JournalOp::delete("a"), JournalOp::put("c", "3")]),
    ])
    .await
    .unwrap();
    let applied = sm.applied_state().await.unwrap();
    let records = sm.records().unwrap();
    drop(sm);
    let mut sm = open(dir.path(), true);
    assert_eq!(sm.applied_state().await.unwrap(), applied);
    assert_eq!(applied.0, Some(log_id(3)));
    assert_eq!(applied.1.log_id(), &Some(log_id(1)));
    assert_eq!(
        sm.records().unwrap(),
        vec![
            (b"b".to_vec(), b"2".to_vec()),
            (b"c".to_vec(), b"3".to_vec())
        ]
    );
    assert_eq!(records, sm.records().unwrap());
}

// checks: S2 (installing a snapshot replaces the whole image: records it does not hold are
// gone, and the last applied log id and membership are the snapshot's)
#[tokio::test]
async fn installing_a_snapshot_replaces_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = open(&dir.path().join("leader"), true);
    let mut follower = open(&dir.path().join("follower"), true);
    leader
        .apply([
            membership_entry(1),
            entry(2, vec![JournalOp::put("a", "1"), JournalOp::put("b", "2")]),
        ])
        .await
        .unwrap();
    follower
        .apply([entry(
            1,
            vec![JournalOp::put("stale", "x"), JournalOp::put("a", "old")],
        )])
        .await
        .unwrap();
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut data = follower.begin_receiving_snapshot().await.unwrap();
    *data = *snapshot.snapshot;
    follower
        .install_snapshot(&snapshot.meta, data)
        .await
        .unwrap();
    assert_eq!(follower.records().unwrap(), leader.records().unwrap());
    assert_eq!(
        follower.applied_state().await.unwrap(),
        leader.applied_state().await.unwrap()
    );
    drop(follower);
    let mut follower = open(&dir.path().join("follower"), true);
    assert_eq!(follower.records().unwrap(), leader.records().unwrap());
    let current = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);
}

// checks: S1, S3 (the image reads back as the lock table's state, as recovery reads the
// single node's sled: what a new leader rebuilds its table from)
#[tokio::test]
async fn the_image_reads_back_as_the_lock_tables_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path(), false);
    let lease = LeaseId::from_bytes([7; 16]);
    let lock = LockName::new("orders").unwrap();
    let writes = vec![
        Write::PutLease {
            lease,
            ttl: Duration::from_secs(10),
            holder: "worker-1".into(),
            origin: None,
        },
        Write::PutLock {
            lock: lock.clone(),
            lease,
            token: FencingToken::new(41).unwrap(),
            holder: "worker-1".into(),
            lock_delay: Duration::from_secs(1),
        },
        Write::NextToken(FencingToken::new(42).unwrap()),
    ];
    sm.apply([entry(1, writes.into_iter().map(encode).collect())])
        .await
        .unwrap();
    let recovered = sm.read_back().unwrap();
    assert_eq!(recovered.next_token, FencingToken::new(42).unwrap());
    assert_eq!(recovered.leases.len(), 1);
    assert_eq!(recovered.leases[0].lease, lease);
    assert_eq!(recovered.locks.len(), 1);
    assert_eq!(recovered.locks[0].lock, lock);
    assert_eq!(recovered.locks[0].token, FencingToken::new(41).unwrap());
}

/// One random operation on a small key space (so puts and deletes collide).
fn op() -> impl Strategy<Value = JournalOp> {
    (
        0u8..8,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
    )
        .prop_map(|(key, value)| JournalOp {
            key: vec![b'L', key],
            value,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    // checks: S1, S2 (replicas fed the same entries end byte-identical, however the entries
    // are split into apply calls, and identical to applying the batches in order to a map)
    #[test]
    fn replicas_fed_the_same_entries_end_identical(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 0..6), 1..20),
        splits in proptest::collection::vec(1usize..5, 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<Entry> = batches
            .iter()
            .enumerate()
            .map(|(i, ops)| entry(i as u64 + 1, ops.clone()))
            .collect();
        let mut model = BTreeMap::new();
        for op in batches.iter().flatten() {
            match &op.value {
                Some(value) => model.insert(op.key.clone(), value.clone()),
                None => model.remove(&op.key),
            };
        }
        let model: Vec<(Vec<u8>, Vec<u8>)> = model.into_iter().collect();

        runtime().block_on(async {
            let mut one = open(&dir.path().join("one"), false);
            let mut two = open(&dir.path().join("two"), false);
            one.apply(entries.clone()).await.unwrap();
            let mut rest = entries.as_slice();
            for split in splits.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at((*split).min(rest.len()));
                two.apply(now.to_vec()).await.unwrap();
                rest = later;
            }
            prop_assert_eq!(one.records().unwrap(), two.records().unwrap());
            prop_assert_eq!(one.records().unwrap(), model);
            prop_assert_eq!(
                one.applied_state().await.unwrap(),
                two.applied_state().await.unwrap()
            );
            Ok(())
        })?;
    }
}

/// Two promotions of one process in one term: an ended term's epoch and the next one's.
pub(super) fn two_promotions() -> (Epoch, Epoch) {
    let first = Epoch {
        term: 3,
        promotion: 1,
        process: 7,
    };
    (
        first,
        Epoch {
            promotion: 2,
            ..first
        },
    )
}

/// The batch `ops` as a leader of `epoch` commits it: the epoch's expectation first.
pub(super) fn in_epoch(epoch: Epoch, ops: Vec<JournalOp>) -> Vec<JournalOp> {
    std::iter::once(epoch.expectation()).chain(ops).collect()
}

// checks: S1, S2 (a batch of a term that has ended, landing after the next term's barrier,
// is skipped by every replica alike: the image never holds writes the serving table did not
// make, such as a grant whose token the new table issues again)
#[tokio::test]
async fn a_batch_of_an_ended_term_is_skipped_alike_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = two_promotions();
    let entries = || {
        vec![
            entry(1, first.barrier().ops),
            entry(2, in_epoch(first, vec![JournalOp::put("a", "1")])),
            entry(3, second.barrier().ops),
            // The first term's committer was still in flight: its batch lands late.
            entry(4, in_epoch(first, vec![JournalOp::put("stale", "x")])),
            entry(5, in_epoch(second, vec![JournalOp::put("b", "2")])),
        ]
    };
    let mut replicas = Vec::new();
    for name in ["one", "two"] {
        let mut sm = open(&dir.path().join(name), false);
        // One replica applies the run at once, the other entry by entry.
        if name == "one" {
            sm.apply(entries()).await.unwrap();
        } else {
            for entry in entries() {
                sm.apply([entry]).await.unwrap();
            }
        }
        replicas.push(sm.records().unwrap());
    }
    assert_eq!(replicas[0], replicas[1]);
    let keys: Vec<&[u8]> = replicas[0].iter().map(|(key, _)| key.as_slice()).collect();
    assert_eq!(keys, vec![b"a".as_slice(), b"b", b"e"], "{replicas:?}");
    assert_eq!(replicas[0][2].1, second.to_bytes());
}

/// An event of revision `revision` as a leader's entry carries it.
pub(super) fn event_op(revision: u64, lock: &str) -> JournalOp {
    crate::record::encode_event(&RevisedEvent {
        revision,
        event: Event {
            kind: EventKind::Acquired,
            lock: LockName::new(lock).unwrap(),
            holder: "h".into(),
            token: FencingToken::new(revision).unwrap(),
            handoff: false,
            lease: None,
            origin: None,
        },
    })
}

/// Every event the log publishes from now on, drained after the applies.
fn drain(
    live: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<RevisedEvent>>,
) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    while let Ok(event) = live.try_recv() {
        seen.push((event.revision, event.event.lock.to_string()));
    }
    seen
}

// checks: W1, C1 (every replica publishes the same events with the same revisions, none of
// an ended term's batch; the events are not stored, the last revision is; a reopened or
// snapshot-installed replica goes on after the image's last revision)
#[tokio::test]
async fn every_replica_publishes_the_same_events_and_none_of_an_ended_term() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = two_promotions();
    let with_revision = |revision: u64, lock: &str| {
        vec![
            crate::record::encode_last_revision(revision),
            event_op(revision, lock),
        ]
    };
    let entries = || {
        vec![
            entry(1, first.barrier().ops),
            entry(2, in_epoch(first, with_revision(1, "a"))),
            entry(3, second.barrier().ops),
            // The ended term's batch numbered its event 2 as well: it must not be published.
            entry(4, in_epoch(first, with_revision(2, "stale"))),
            entry(5, in_epoch(second, with_revision(2, "b"))),
        ]
    };
    let mut published = Vec::new();
    for name in ["one", "two"] {
        let mut sm = open(&dir.path().join(name), false);
        let mut live = sm.event_log().live();
        if name == "one" {
            sm.apply(entries()).await.unwrap();
        } else {
            for entry in entries() {
                sm.apply([entry]).await.unwrap();
            }
        }
        published.push(drain(&mut live));
        assert!(
            sm.records().unwrap().iter().all(|(key, _)| key != b"v"),
            "events are not stored"
        );
        assert_eq!(sm.read_back().unwrap().last_revision, 2);
    }
    assert_eq!(published[0], published[1]);
    assert_eq!(
        published[0],
        vec![(1, "a".to_string()), (2, "b".to_string())]
    );

    let reopened = open(&dir.path().join("one"), false);
    assert_eq!(reopened.event_log().last_revision(), 2);

    // A replica that installs the snapshot goes on after the snapshot's last revision.
    let mut leader = reopened;
    let mut behind = open(&dir.path().join("behind"), false);
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut data = behind.begin_receiving_snapshot().await.unwrap();
    *data = *snapshot.snapshot;
    behind.install_snapshot(&snapshot.meta, data).await.unwrap();
    assert_eq!(behind.event_log().last_revision(), 2);
}

// checks: S1, C1 (a member whose image sled brought back older than the tokens it applied
// refuses to open, instead of rejoining with a counter behind them)
#[tokio::test]
async fn an_image_behind_its_token_marker_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path(), true);
    sm.apply([entry(
        1,
        vec![encode(Write::NextToken(FencingToken::new(42).unwrap()))],
    )])
    .await
    .unwrap();
    drop(sm);
    // sled comes back empty (as from a data file it cannot parse); the marker stays.
    let sm_dir = dir.path().join("raft-sm");
    for entry in std::fs::read_dir(&sm_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == crate::marker::MARKER_FILE {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let refused = StateMachine::open(&sm_dir, true)
        .err()
        .expect("an empty image below the marker is refused");
    assert!(
        matches!(refused, super::error::RaftStoreError::Marker { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("lost data"), "{refused}");
}
