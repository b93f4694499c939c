//! [`History`]: each lock's recent holders, for the status page, fed by the engine's
//! durable events (the same ones `Watch` streams carry).
//!
//! Bounded: at most [`HOLDERS_PER_LOCK`] holders for each of at most [`MAX_LOCKS`] locks;
//! past that, the lock whose last event is oldest is forgotten. A holder's name is at most
//! `max_holder_bytes` (256) and a lock name at most 256 bytes, so the whole history stays
//! under about `MAX_LOCKS * (256 + HOLDERS_PER_LOCK * (256 + 64))` bytes: about 3 MB.
//! It is what the server saw since it started (a restart begins it afresh), and an event
//! the feeder missed (it fell more than the event ring behind) is missing here too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use fenced_types::LockName;
use serde::Serialize;

use crate::table::{Event, EventKind};

/// Holders remembered per lock.
pub const HOLDERS_PER_LOCK: usize = 8;
/// Locks remembered.
pub const MAX_LOCKS: usize = 1024;

/// How a holding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ended {
    /// Its holder released it.
    Released,
    /// Its holder's lease expired.
    Expired,
}

/// One past or present holding of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PastHolder {
    /// Its fencing token.
    pub token: u64,
    /// The holder's name.
    pub holder: String,
    /// When it was granted (Unix milliseconds, the server's wall clock).
    pub granted_ms: u64,
    /// How it ended; `None` while it holds (as far as the events tell).
    pub ended: Option<Ended>,
    /// When it ended (Unix milliseconds).
    pub ended_ms: Option<u64>,
    /// The token of the queued acquirer the lock went to as this holding ended, if it was
    /// handed on.
    pub handed_to: Option<u64>,
}

/// One lock's recent holders, newest last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockHistory {
    /// The lock.
    pub lock: String,
    /// Its holders, oldest first.
    pub holders: Vec<PastHolder>,
}

/// Each lock's recent holders. See the module documentation.
#[derive(Debug, Default)]
pub struct History {
    /// The holders and the order of last use.
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Holders by lock, with the sequence number of the lock's last event.
    locks: HashMap<LockName, (u64, VecDeque<PastHolder>)>,
    /// Locks by the sequence number of their last event: the oldest is forgotten first.
    by_age: BTreeMap<u64, LockName>,
    /// The next event's sequence number.
    next: u64,
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

impl History {
    /// Records one event, seen at `at`.
    pub fn record(&self, event: &Event, at: SystemTime) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.record(event, unix_ms(at));
    }

    /// Every remembered lock's holders, in lock name order.
    pub fn snapshot(&self) -> Vec<LockHistory> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut all: Vec<LockHistory> = inner
            .locks
            .iter()
            .map(|(lock, (_, holders))| LockHistory {
                lock: lock.to_string(),
                holders: holders.iter().cloned().collect(),
            })
            .collect();
        all.sort_by(|a, b| a.lock.cmp(&b.lock));
        all
    }
}

impl Inner {
    fn record(&mut self, event: &Event, at_ms: u64) {
        let seq = self.next;
        self.next += 1;
        let holders = match self.locks.get_mut(&event.lock) {
            Some((last, holders)) => {
                self.by_age.remove(last);
                *last = seq;
                holders
            }
            None => {
                if self.locks.len() >= MAX_LOCKS {
                    if let Some((_, oldest)) = self.by_age.pop_first() {
                        self.locks.remove(&oldest);
                    }
                }
                &mut self
                    .locks
                    .entry(event.lock.clone())
                    .or_insert_with(|| (seq, VecDeque::new()))
                    .1
            }
        };
        let token = event.token.get();
        match event.kind {
            EventKind::Acquired => {
                if event.handoff {
                    if let Some(previous) = holders.back_mut() {
                        if previous.ended.is_some() && previous.handed_to.is_none() {
                            previous.handed_to = Some(token);
                        }
                    }
                }
                if holders.len() >= HOLDERS_PER_LOCK {
                    holders.pop_front();
                }
                holders.push_back(PastHolder {
                    token,
                    holder: event.holder.to_string(),
                    granted_ms: at_ms,
                    ended: None,
                    ended_ms: None,
                    handed_to: None,
                });
            }
            EventKind::Released | EventKind::Expired => {
                let ended = if event.kind == EventKind::Expired {
                    Ended::Expired
                } else {
                    Ended::Released
                };
                match holders.iter_mut().rev().find(|held| held.token == token) {
                    Some(held) => {
                        held.ended = Some(ended);
                        held.ended_ms = Some(at_ms);
                    }
                    // Granted before the history began (before a restart, or forgotten).
                    None => {
                        if holders.len() >= HOLDERS_PER_LOCK {
                            holders.pop_front();
                        }
                        holders.push_back(PastHolder {
                            token,
                            holder: event.holder.to_string(),
                            granted_ms: 0,
                            ended: Some(ended),
                            ended_ms: Some(at_ms),
                            handed_to: None,
                        });
                    }
                }
            }
        }
        self.by_age.insert(seq, event.lock.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fenced_types::FencingToken;

    use super::*;

    fn event(kind: EventKind, lock: &str, token: u64, handoff: bool) -> Event {
        Event {
            kind,
            lock: LockName::new(lock).unwrap(),
            holder: Arc::from(format!("h{token}")),
            token: FencingToken::new(token).unwrap(),
            handoff,
            lease: None,
            origin: None,
        }
    }

    // checks: none (operations)
    #[test]
    fn a_holding_ends_released_expired_or_handed_on() {
        let history = History::default();
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1);
        history.record(&event(EventKind::Acquired, "a", 1, false), at);
        history.record(&event(EventKind::Released, "a", 1, false), at);
        history.record(&event(EventKind::Acquired, "a", 2, false), at);
        history.record(&event(EventKind::Expired, "a", 2, false), at);
        history.record(&event(EventKind::Acquired, "a", 3, true), at);
        let snapshot = history.snapshot();
        let holders = &snapshot[0].holders;
        assert_eq!(holders.len(), 3);
        assert_eq!(
            (holders[0].ended, holders[0].handed_to),
            (Some(Ended::Released), None)
        );
        assert_eq!(
            (holders[1].ended, holders[1].handed_to),
            (Some(Ended::Expired), Some(3))
        );
        assert_eq!((holders[2].ended, holders[2].granted_ms), (None, 1000));
    }

    // checks: none (operations)
    #[test]
    fn holders_and_locks_stay_bounded_and_the_oldest_lock_goes_first() {
        let history = History::default();
        let at = SystemTime::now();
        for token in 1..=(HOLDERS_PER_LOCK as u64 + 5) {
            history.record(&event(EventKind::Acquired, "busy", token, false), at);
        }
        for n in 0..MAX_LOCKS {
            history.record(&event(EventKind::Acquired, &format!("l{n}"), 1, false), at);
        }
        let snapshot = history.snapshot();
        assert_eq!(snapshot.len(), MAX_LOCKS);
        assert!(
            snapshot.iter().all(|lock| lock.lock != "busy"),
            "the lock used longest ago is forgotten"
        );
        history.record(&event(EventKind::Acquired, "busy", 99, false), at);
        let snapshot = history.snapshot();
        assert_eq!(snapshot.len(), MAX_LOCKS);
        assert!(snapshot
            .iter()
            .all(|lock| lock.holders.len() <= HOLDERS_PER_LOCK));
        assert!(snapshot.iter().all(|lock| lock.lock != "l0"));
    }
}
