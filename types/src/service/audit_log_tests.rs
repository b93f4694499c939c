//! The audit writer: lines are appended as JSON, the file rotates by size keeping
//! [`KEEP`] old files, and dropped records are reported in the next line written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn writer(path: &Path, max_bytes: u64) -> Writer {
    Writer {
        path: path.to_path_buf(),
        file: open(path).unwrap(),
        max_bytes,
        dropped: Arc::new(AtomicU64::new(0)),
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

// checks: none (operations: the audit log is bounded on disk and reports what it lost)
#[test]
fn the_log_rotates_by_size_and_keeps_a_bounded_number_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut writer = writer(&path, 100);
    for n in 0..40 {
        writer.write(&json!({"kind": "grant", "n": n}));
    }
    assert!(std::fs::metadata(&path).unwrap().len() < 200);
    for n in 1..=KEEP {
        assert!(
            PathBuf::from(format!("{}.{n}", path.display())).exists(),
            "{n}"
        );
    }
    assert!(!PathBuf::from(format!("{}.{}", path.display(), KEEP + 1)).exists());
    assert_eq!(
        lines(&path).last().unwrap()["n"],
        39,
        "the newest line is in FILE"
    );
}

// checks: none (operations)
#[test]
fn dropped_records_are_reported_in_the_next_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let writer = writer(&path, 1 << 20);
    writer.dropped.store(3, Ordering::Relaxed);
    let (lines_in, receiver) = sync_channel(4);
    lines_in.send(json!({"kind": "grant"})).unwrap();
    drop(lines_in);
    writer.run(&receiver);
    let written = lines(&path);
    assert_eq!(written[0]["kind"], "dropped");
    assert_eq!(written[0]["records"], 3);
    assert_eq!(written[1]["kind"], "grant");
}
