//! [`records_until`]: an audit log's records (`fenced --audit-log`, `fenced-kv
//! --audit-log`), read again until they hold what a test waits for. The log is written by
//! a thread of its own after the change it records, so a test polls rather than reads once.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// How long a test waits for an audit line: long, so only a missing line fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// The records of the audit log at `path` (one JSON object per line), once `done` says
/// they hold what is awaited; panics, naming `awaited` and showing the records, if they do
/// not within 20 s.
pub async fn records_until(
    path: &Path,
    awaited: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let records: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        if done(&records) {
            return records;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the audit log lacks {awaited}: {records:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `records` hold one of `kind`.
pub fn has_kind(records: &[Value], kind: &str) -> bool {
    records.iter().any(|record| record["kind"] == kind)
}
