//! Tables for humans and JSON for scripts.

use std::time::Duration;

use serde_json::{json, Value};

use crate::duration::show;

/// One lock as fencectl shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRow {
    /// The lock's name.
    pub lock: String,
    /// Its live holder, if any.
    pub holder: Option<HolderRow>,
    /// How many acquirers wait.
    pub waiters: u32,
}

/// The live holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderRow {
    /// The holder's free-form name.
    pub name: String,
    /// Its fencing token.
    pub token: u64,
    /// Time until its lease expires unless renewed, as the server saw it.
    pub remaining: Duration,
}

impl From<fenced_client::LockInfo> for LockRow {
    fn from(info: fenced_client::LockInfo) -> Self {
        LockRow {
            lock: info.lock.to_string(),
            holder: info.holder.map(|h| HolderRow {
                name: h.name,
                token: h.token.get(),
                remaining: h.remaining,
            }),
            waiters: info.waiters,
        }
    }
}

impl LockRow {
    /// The row as JSON: `lock`, `held`, `holder`, `token`, `remaining_ms`, `waiters`
    /// (`holder` empty and `token` and `remaining_ms` 0 when the lock is free).
    pub fn json(&self) -> Value {
        let (holder, token, remaining_ms) = match &self.holder {
            Some(h) => (h.name.as_str(), h.token, millis(h.remaining)),
            None => ("", 0, 0),
        };
        json!({
            "lock": self.lock,
            "held": self.holder.is_some(),
            "holder": holder,
            "token": token,
            "remaining_ms": remaining_ms,
            "waiters": self.waiters,
        })
    }
}

/// The rows as an aligned table with a header: LOCK, HOLDER, TOKEN, TIME LEFT, WAITERS.
pub fn table(rows: &[LockRow]) -> String {
    let header = ["LOCK", "HOLDER", "TOKEN", "TIME LEFT", "WAITERS"].map(String::from);
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|row| match &row.holder {
            Some(h) => [
                row.lock.clone(),
                h.name.clone(),
                h.token.to_string(),
                show(h.remaining),
                row.waiters.to_string(),
            ],
            None => [
                row.lock.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                row.waiters.to_string(),
            ],
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in std::iter::once(&header).chain(&cells) {
        let mut text = String::new();
        for (i, (cell, width)) in line.iter().zip(widths).enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// A duration in whole milliseconds, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_marks_free_locks() {
        let rows = vec![
            LockRow {
                lock: "demo".into(),
                holder: Some(HolderRow {
                    name: "fencectl-1".into(),
                    token: 42,
                    remaining: Duration::from_millis(9_400),
                }),
                waiters: 0,
            },
            LockRow {
                lock: "orders/compaction".into(),
                holder: None,
                waiters: 3,
            },
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "LOCK               HOLDER      TOKEN  TIME LEFT  WAITERS"
        );
        assert_eq!(
            lines[1],
            "demo               fencectl-1  42     9.4s       0"
        );
        assert_eq!(
            lines[2],
            "orders/compaction  -           -      -          3"
        );
        assert_eq!(rows[0].json()["remaining_ms"], 9_400);
        assert_eq!(rows[1].json()["held"], false);
    }
}
