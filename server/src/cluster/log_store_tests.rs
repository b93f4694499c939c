//! Tests of [`LogStore`] beyond openraft's suite: what survives a close and a reopen, and
//! how a torn or damaged segment is read back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, Vote};

use super::error::{LogDamage, RaftStoreError};
use super::log_store::{LogStore, TornEntry, DEFAULT_SEGMENT_BYTES, SEGMENT_MAGIC};
use super::types::{ClusterNode, CommitBatch, Entry, LogId};
use crate::frame::HEADER_BYTES;
use crate::journal::{JournalBatch, JournalOp};

fn log_id(term: u64, index: u64) -> LogId {
    LogId {
        leader_id: CommittedLeaderId::new(term, 1),
        index,
    }
}

/// A normal entry whose batch puts `key{index}`.
fn normal(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(CommitBatch(JournalBatch {
            ops: vec![
                JournalOp {
                    key: format!("key{index}").into_bytes(),
                    value: Some(index.to_be_bytes().to_vec()),
                },
                JournalOp {
                    key: b"gone".to_vec(),
                    value: None,
                },
            ],
        })),
    }
}

fn membership(term: u64, index: u64) -> Entry {
    let nodes = BTreeMap::from([(
        1,
        ClusterNode {
            raft_addr: "127.0.0.1:7001".to_string(),
            client_addr: "127.0.0.1:8001".to_string(),
        },
    )]);
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![[1].into()], nodes)),
    }
}

fn open(dir: &Path, segment_bytes: u64) -> Result<(LogStore, Option<TornEntry>), RaftStoreError> {
    LogStore::open(&dir.join("raft"), true, segment_bytes)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("raft").join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Where each record of a segment starts, and where the last one ends.
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = vec![SEGMENT_MAGIC.len()];
    let mut at = SEGMENT_MAGIC.len();
    while at + HEADER_BYTES <= bytes.len() {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += HEADER_BYTES + length;
        starts.push(at);
    }
    starts
}

/// Writes entries 0..count (term 1) to a fresh log in `dir` and closes it.
async fn write_entries(dir: &Path, count: u64, segment_bytes: u64) {
    let (mut log, _) = open(dir, segment_bytes).unwrap();
    let entries: Vec<Entry> = (0..count).map(|i| normal(1, i)).collect();
    log.blocking_append(entries).await.unwrap();
}

async fn all_entries(log: &mut LogStore) -> Vec<Entry> {
    log.try_get_log_entries(..).await.unwrap()
}

// checks: S2 (the vote, the entries, the purged and the committed log ids come back after a
// close: nothing openraft was told is durable is lost)
#[tokio::test]
async fn a_reopened_log_keeps_vote_entries_purge_and_committed() {
    tracing::info!("--- write a log across several segments, vote, purge, truncate, commit");
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), 256).unwrap();
    let mut entries = vec![membership(1, 0)];
    entries.extend((1..20).map(|i| normal(1, i)));
    log.blocking_append(entries.clone()).await.unwrap();
    log.blocking_append([Entry {
        log_id: log_id(2, 20),
        payload: EntryPayload::Blank,
    }])
    .await
    .unwrap();
    let vote = Vote::new_committed(2, 1);
    log.save_vote(&vote).await.unwrap();
    log.purge(log_id(1, 3)).await.unwrap();
    log.truncate(log_id(1, 15)).await.unwrap();
    log.save_committed(Some(log_id(1, 12))).await.unwrap();
    assert!(segments(dir.path()).len() > 2, "{:?}", segments(dir.path()));
    let before = all_entries(&mut log).await;
    assert_eq!(before, entries[4..15].to_vec());
    drop(log);

    tracing::info!("--- reopen: everything is there");
    let (mut log, torn) = open(dir.path(), 256).unwrap();
    assert_eq!(torn, None);
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 12)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 14)));
    assert_eq!(all_entries(&mut log).await, before);

    tracing::info!("--- the log goes on where it ended");
    log.blocking_append([normal(3, 15)]).await.unwrap();
    drop(log);
    let (mut log, _) = open(dir.path(), 256).unwrap();
    let after = all_entries(&mut log).await;
    assert_eq!(after.last(), Some(&normal(3, 15)));
    assert_eq!(after.len(), before.len() + 1);
}

// checks: S2 (a log purged past its last entry reopens empty, ending at the purged id)
#[tokio::test]
async fn a_log_purged_past_its_end_reopens_at_the_purged_id() {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path(), 5, DEFAULT_SEGMENT_BYTES).await;
    let (mut log, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    log.purge(log_id(1, 9)).await.unwrap();
    drop(log);
    let (mut log, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 9)));
    assert_eq!(state.last_log_id, Some(log_id(1, 9)));
    assert!(all_entries(&mut log).await.is_empty());
    log.blocking_append([normal(1, 10)]).await.unwrap();
    drop(log);
    let (mut log, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(all_entries(&mut log).await, vec![normal(1, 10)]);
}

// checks: S2 (a torn last append, whose callback never fired, is cut off at open; the
// entries before it come back, and appends after it read back too)
#[tokio::test]
async fn a_torn_last_entry_is_dropped_and_the_log_goes_on() {
    for (shape, cut) in [
        ("cut short by the end of the file", false),
        ("its tail zeros", true),
    ] {
        tracing::info!("--- a torn last entry: {shape}");
        let dir = tempfile::tempdir().unwrap();
        write_entries(dir.path(), 5, DEFAULT_SEGMENT_BYTES).await;
        let file = segments(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let starts = record_starts(&bytes);
        let (last, end) = (starts[4], starts[5]);
        if cut {
            bytes[last + HEADER_BYTES + 2..end].fill(0);
        } else {
            bytes.truncate(last + HEADER_BYTES + 2);
        }
        std::fs::write(&file, &bytes).unwrap();

        let (mut log, torn) = open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        let torn = torn.unwrap_or_else(|| panic!("{shape}: no torn entry"));
        assert_eq!(
            (torn.file, torn.offset),
            (file.clone(), last as u64),
            "{shape}"
        );
        let entries = all_entries(&mut log).await;
        assert_eq!(
            entries,
            (0..4).map(|i| normal(1, i)).collect::<Vec<_>>(),
            "{shape}"
        );
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            last as u64,
            "{shape}"
        );

        log.blocking_append([normal(2, 4), normal(2, 5)])
            .await
            .unwrap();
        drop(log);
        let (mut log, torn) = open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        assert_eq!(torn, None, "{shape}");
        let entries = all_entries(&mut log).await;
        assert_eq!(entries.len(), 6, "{shape}");
        assert_eq!(entries[5], normal(2, 5), "{shape}");
    }
}

/// Asserts that opening was refused as corruption of `file` at byte `offset`, and that the
/// message names both.
fn assert_refused(
    result: Result<(LogStore, Option<TornEntry>), RaftStoreError>,
    file: &Path,
    offset: usize,
    case: &str,
) -> LogDamage {
    let error = match result {
        Ok(_) => panic!("{case}: accepted"),
        Err(error) => error,
    };
    let message = error.to_string();
    let RaftStoreError::CorruptLog {
        file: named,
        offset: at,
        damage,
    } = error
    else {
        panic!("{case}: {message}");
    };
    assert_eq!(
        (named.as_path(), at),
        (file, offset as u64),
        "{case}: {message}"
    );
    assert!(
        message.contains(&file.display().to_string()),
        "{case}: {message}"
    );
    assert!(
        message.contains(&format!("byte {offset}")),
        "{case}: {message}"
    );
    damage
}

// checks: S2 (damage to an entry that later entries follow is corruption, never a torn
// tail: the open is refused with the file and the entry's offset, instead of dropping
// entries whose append was reported durable)
#[tokio::test]
async fn a_damaged_middle_entry_refuses_the_open_with_file_and_offset() {
    for (case, byte) in [
        ("a flipped bit in the length", 0),
        ("a flipped bit in the checksum", 9),
        ("a flipped bit in the payload", HEADER_BYTES + 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_entries(dir.path(), 5, DEFAULT_SEGMENT_BYTES).await;
        let file = segments(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let starts = record_starts(&bytes);
        bytes[starts[2] + byte] ^= 0x04;
        std::fs::write(&file, &bytes).unwrap();
        let damage = assert_refused(
            open(dir.path(), DEFAULT_SEGMENT_BYTES),
            &file,
            starts[2],
            case,
        );
        assert!(matches!(damage, LogDamage::Frame(_)), "{case}: {damage}");
    }
}

// checks: S2 (a torn tail is only ever in the newest segment: segments are made after the
// one before was synced)
#[tokio::test]
async fn a_torn_tail_before_a_later_segment_refuses_the_open() {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path(), 10, 128).await;
    let files = segments(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    let first = &files[0];
    let bytes = std::fs::read(first).unwrap();
    let starts = record_starts(&bytes);
    let last = starts[starts.len() - 2];
    std::fs::write(first, &bytes[..last + 3]).unwrap();
    let damage = assert_refused(open(dir.path(), 128), first, last, "torn first segment");
    assert!(
        matches!(&damage, LogDamage::TornBeforeLaterSegment { later } if *later == files[1]),
        "{damage}"
    );
}

// checks: S2 (a lost segment between others is a hole in the log, refused)
#[tokio::test]
async fn a_missing_segment_refuses_the_open() {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path(), 10, 128).await;
    let files = segments(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    std::fs::remove_file(&files[1]).unwrap();
    let damage = assert_refused(
        open(dir.path(), 128),
        &files[2],
        SEGMENT_MAGIC.len(),
        "missing segment",
    );
    assert!(matches!(damage, LogDamage::OutOfOrder { .. }), "{damage}");
}

// checks: S2 (a damaged vote file is refused with its name, never read as no vote: a node
// that forgot its vote could vote twice in a term)
#[tokio::test]
async fn a_damaged_vote_file_refuses_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    log.save_vote(&Vote::new(3, 2)).await.unwrap();
    drop(log);
    let path = dir.path().join("raft").join("vote");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let error = open(dir.path(), DEFAULT_SEGMENT_BYTES)
        .err()
        .expect("a damaged vote");
    assert!(
        matches!(&error, RaftStoreError::CorruptStateFile { file, .. } if *file == path),
        "{error}"
    );
}

// checks: S2 (a crash while a state file is replaced leaves the old value: the new one is
// written under a temporary name first; and an unreadable committed log id, only a hint,
// reads as none instead of stopping the node)
#[tokio::test]
async fn a_crash_while_replacing_a_state_file_leaves_the_old_value() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    let vote = Vote::new(4, 1);
    log.save_vote(&vote).await.unwrap();
    log.save_committed(Some(log_id(4, 7))).await.unwrap();
    drop(log);
    let raft = dir.path().join("raft");
    std::fs::write(raft.join("vote.tmp"), b"half a new vote").unwrap();
    std::fs::write(raft.join("committed"), b"").unwrap();
    let (mut log, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), None);
    let vote = Vote::new(5, 2);
    log.save_vote(&vote).await.unwrap();
    drop(log);
    let (mut log, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
}

// checks: S2 (a reader handed to replication sees what the store appended and truncated)
#[tokio::test]
async fn a_log_reader_sees_appends_and_truncations() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), 128).unwrap();
    let mut reader = log.get_log_reader().await;
    log.blocking_append((0..6).map(|i| normal(1, i)))
        .await
        .unwrap();
    assert_eq!(
        reader.try_get_log_entries(2..4).await.unwrap(),
        vec![normal(1, 2), normal(1, 3)]
    );
    log.truncate(log_id(1, 3)).await.unwrap();
    log.blocking_append([normal(2, 3)]).await.unwrap();
    assert_eq!(
        reader.try_get_log_entries(2..).await.unwrap(),
        vec![normal(1, 2), normal(2, 3)]
    );
}

// checks: S2 (zeros after the last entry, as a power cut leaves where an append's blocks
// were allocated but not written, are cut off at open: entries appended later are not put
// behind them, where the next open would take them for damage)
#[tokio::test]
async fn zeros_after_the_last_entry_are_cut_off_before_appending() {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path(), 5, DEFAULT_SEGMENT_BYTES).await;
    let file = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let end = bytes.len();
    bytes.resize(end + 100, 0);
    std::fs::write(&file, &bytes).unwrap();

    let (mut log, torn) = open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(torn, None);
    assert_eq!(all_entries(&mut log).await.len(), 5);
    log.blocking_append([normal(1, 5)]).await.unwrap();
    drop(log);
    let (mut log, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES)
        .unwrap_or_else(|error| panic!("the reopen after an append refused: {error}"));
    let entries = all_entries(&mut log).await;
    assert_eq!(entries, (0..6).map(|i| normal(1, i)).collect::<Vec<_>>());
}
