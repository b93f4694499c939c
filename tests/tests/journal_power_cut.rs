//! The server's journal under a power cut, driven directly (`fenced::journal`): what the
//! server's own crash tests cannot single out, because the server syncs the journal
//! directory for other reasons soon after it deletes files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use fenced::journal::{self, Journal, JournalBatch, JournalOp};
use fenced_tests::power_cut::scratch_fs_or_skip;

fn batch(key: &str) -> JournalBatch {
    JournalBatch {
        ops: vec![JournalOp {
            key: key.as_bytes().to_vec(),
            value: Some(b"value".to_vec()),
        }],
    }
}

fn journal_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// checks: S2, S7 (journal files deleted once sled holds them stay deleted after a power
// cut: the deletion syncs the directory, so a file of old values cannot come back)
#[test]
fn deleted_journal_files_stay_deleted_after_a_power_cut() {
    let Some(mut fs) = scratch_fs_or_skip("deleted_journal_files_stay_deleted_after_a_power_cut")
    else {
        return;
    };
    let dir = fs.path().join("journal");
    std::fs::create_dir(&dir).unwrap();
    // Three files, each made durable with its directory entry before its record.
    let mut journal = Journal::create(&dir, 0, true).unwrap();
    for key in ["a", "b"] {
        journal.append(&batch(key)).unwrap();
        journal.rotate().unwrap();
    }
    journal.append(&batch("c")).unwrap();
    drop(journal);
    assert_eq!(journal_files(&dir).len(), 3);

    journal::remove_through(&dir, 2, true).unwrap();
    fs.cut_power();
    fs.remount();
    let left = journal_files(&fs.path().join("journal"));
    assert_eq!(
        left,
        [format!("{:020}.log", 3)],
        "deleted journal files came back after a power cut"
    );
}
