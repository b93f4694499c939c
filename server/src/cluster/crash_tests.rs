//! A process killed with `kill -9` while it appends to the raft log loses no entry whose
//! append was reported done (openraft's callback fired). The test runs itself: the parent
//! starts this test binary again as a child that appends in a loop and prints each index
//! once its append callback fired, kills it mid-stream, and reopens the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

use super::log_store::LogStore;
use super::types::{CommitBatch, Entry, LogId};
use crate::journal::{JournalBatch, JournalOp};

/// The child's data directory, when this binary runs as the child.
const CHILD_DIR: &str = "FENCED_RAFT_CRASH_CHILD_DIR";
/// What the child prints after each append whose callback fired.
const APPENDED: &str = "appended ";
/// Small segments, so kills also land around rotations.
const SEGMENT_BYTES: u64 = 4096;

fn entry(index: u64) -> Entry {
    Entry {
        log_id: LogId {
            leader_id: CommittedLeaderId::new(1, 1),
            index,
        },
        payload: EntryPayload::Normal(CommitBatch(JournalBatch {
            ops: vec![JournalOp {
                key: format!("L{index}").into_bytes(),
                value: Some(vec![7; (index % 50) as usize]),
            }],
        })),
    }
}

/// The child: appends runs of one to three entries until it is killed, printing the last
/// index of each run once the append's callback has fired.
#[tokio::test]
#[ignore = "the child half of a_kill_9_loses_no_entry_whose_append_was_reported_done"]
async fn child_appends_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let (mut log, _) = LogStore::open(Path::new(&dir), true, SEGMENT_BYTES).unwrap();
    let mut next = 0;
    loop {
        let run = 1 + next % 3;
        log.blocking_append((next..next + run).map(entry))
            .await
            .unwrap();
        next += run;
        println!("{APPENDED}{}", next - 1);
    }
}

// checks: S2 (an entry whose append callback fired survives kill -9 of the process)
#[test]
fn a_kill_9_loses_no_entry_whose_append_was_reported_done() {
    for round in 0..3 {
        tracing::info!("--- round {round}: start a child appending, kill it mid-stream");
        let dir = tempfile::tempdir().unwrap();
        let raft_dir = dir.path().join("raft");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "cluster::crash_tests::child_appends_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &raft_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut acknowledged = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        // Kill after a different number of appends each round.
        let kill_after = 150 + round * 97;
        let mut seen = 0;
        while seen < kill_after {
            assert!(Instant::now() < deadline, "the child appends too slowly");
            let line = lines.next().expect("the child stopped early").unwrap();
            if let Some(index) = line.strip_prefix(APPENDED) {
                acknowledged = Some(index.parse::<u64>().unwrap());
                seen += 1;
            }
        }
        child.kill().unwrap();
        // What it printed before it died was acknowledged too.
        for line in lines {
            let line = line.unwrap();
            if let Some(index) = line.strip_prefix(APPENDED) {
                acknowledged = Some(index.parse::<u64>().unwrap());
            }
        }
        child.wait().unwrap();
        let acknowledged = acknowledged.unwrap();

        tracing::info!("--- reopen: every acknowledged entry is there, in order");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut log, _) = LogStore::open(&raft_dir, true, SEGMENT_BYTES).unwrap();
            let state = log.get_log_state().await.unwrap();
            let last = state.last_log_id.map(|log_id| log_id.index);
            assert!(
                last >= Some(acknowledged),
                "round {round}: the log ends at {last:?}, {acknowledged} was acknowledged"
            );
            let last = last.unwrap_or_default();
            let entries = log.try_get_log_entries(..).await.unwrap();
            assert_eq!(entries.len() as u64, last + 1, "round {round}");
            for (index, got) in entries.iter().enumerate() {
                assert_eq!(got, &entry(index as u64), "round {round}");
            }
        });
    }
}
