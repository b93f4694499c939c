//! [`EventLog`]: this node's recent lock events, each with its *revision*, for `Watch`
//! streams that resume where they left off.
//!
//! Every event the lock table makes (a grant, a release, an expiry) gets a revision when
//! it is staged: one more than the last, counted by the node that applies commands (a
//! single node, or a cluster's leader) and stored with the batch (record `r`), so a
//! restart and a new leader go on counting above every revision already given. In a
//! cluster the events travel in the raft entry, and every member publishes them when it
//! applies the entry ([`crate::cluster::state_machine`]): every member sees the same
//! events with the same revisions, in the same order, and any member can serve `Watch`.
//!
//! The log keeps the last `capacity` events in memory. A watcher that gives the revision
//! to start from gets the kept events from there, then the live ones, with nothing missed
//! and nothing repeated: the backlog is copied and the live feed subscribed under the same
//! lock that publishing takes. A revision older than the oldest kept one is refused
//! ([`Compacted`]): the events in between are gone (pushed out of the ring, or made before
//! this node's restart or a snapshot it installed), and the watcher must read the locks
//! again (List gives the revision it read at) and watch from there. It is never sent a
//! stream with a silent gap. A cluster member that restarts recalls the events of the
//! applied entries its raft log still holds ([`EventLog::recall`],
//! [`crate::cluster::recall`]), so a watcher can resume on it from before the restart as
//! far back as the log reaches.
//!
//! Memory is bounded: the ring holds at most `capacity` events, and the live feed is a
//! broadcast ring of the same size shared by every watcher.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use crate::table::Event;

/// How many events each node keeps for watchers that resume.
pub const DEFAULT_CAPACITY: usize = 4096;

/// One event and its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisedEvent {
    /// Its place in the node's (in a cluster: the cluster's) order of events, from 1.
    pub revision: u64,
    /// What happened.
    pub event: Event,
}

/// Where a watcher starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// With the next event published.
    Now,
    /// With the event of this revision (from the kept events if it was published already).
    Revision(u64),
}

/// The events a watcher starts from are no longer kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "events from revision {requested} are no longer kept here (the oldest kept is {oldest}); \
     list the locks again and watch from the revision the list gives"
)]
pub struct Compacted {
    /// The revision the watcher asked to start from.
    pub requested: u64,
    /// The oldest revision this node can still send.
    pub oldest: u64,
}

/// A watcher's start: the kept events from its revision on, then the live feed.
#[derive(Debug)]
pub struct Subscription {
    /// Kept events at or after the start, in order.
    pub backlog: Vec<Arc<RevisedEvent>>,
    /// Every event published after the backlog was taken.
    pub live: broadcast::Receiver<Arc<RevisedEvent>>,
    /// The last revision published when the subscription was taken: the backlog ends
    /// there and the live feed starts after it.
    pub last_published: u64,
}

/// The node's recent events. See the module documentation.
pub struct EventLog {
    /// The kept events and the last revision, under the lock publishing takes.
    ring: Mutex<Ring>,
    /// The live feed.
    live: broadcast::Sender<Arc<RevisedEvent>>,
    /// How many events are kept.
    capacity: usize,
}

struct Ring {
    /// Kept events, contiguous revisions ending at `last`.
    events: VecDeque<Arc<RevisedEvent>>,
    /// The last revision published (or restored), 0 before any.
    last: u64,
}

impl Ring {
    /// The oldest revision that can still be sent: the first kept one, or the next one.
    fn oldest(&self) -> u64 {
        self.events
            .front()
            .map_or(self.last.saturating_add(1), |event| event.revision)
    }
}

impl EventLog {
    /// A log that keeps `capacity` events (at least one), starting after `last_revision`,
    /// the last one this node's durable state has given: events up to it are not kept.
    pub fn new(capacity: usize, last_revision: u64) -> Arc<EventLog> {
        let capacity = capacity.max(1);
        let (live, _) = broadcast::channel(capacity);
        Arc::new(EventLog {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.min(DEFAULT_CAPACITY)),
                last: last_revision,
            }),
            live,
            capacity,
        })
    }

    /// The last revision published (or restored).
    pub fn last_revision(&self) -> u64 {
        self.ring().last
    }

    /// The ring. Its invariants hold between any two statements that change it, so a
    /// panic elsewhere while it was held leaves nothing to repair.
    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `events` (revisions in order) to every watcher and keeps them. An event
    /// whose revision does not follow the last one means the events between are unknown
    /// here: what is kept is dropped, so nobody is sent a stream with a gap. An event at or
    /// below the last revision was published already and is ignored.
    pub fn publish(&self, events: impl IntoIterator<Item = RevisedEvent>) {
        let mut ring = self.ring();
        for event in events {
            if event.revision <= ring.last {
                continue;
            }
            if event.revision != ring.last + 1 {
                tracing::warn!(
                    last = ring.last,
                    next = event.revision,
                    "event revisions skipped ahead; watchers resume from the new one on"
                );
                ring.events.clear();
            }
            ring.last = event.revision;
            let event = Arc::new(event);
            if ring.events.len() == self.capacity {
                ring.events.pop_front();
            }
            ring.events.push_back(event.clone());
            // No receivers is fine: nobody watches.
            let _ = self.live.send(event);
        }
    }

    /// Keeps `events`, recalled at start from what this node's durable state still holds
    /// (a cluster member's raft log), so that watchers may resume from before the start.
    /// They are taken only while nothing was published since the log was made, and only as
    /// far back as their revisions run without a gap up to the last revision the log
    /// started after; the newest `capacity` are kept. Returns how many are kept.
    pub fn recall(&self, events: Vec<RevisedEvent>) -> usize {
        let mut ring = self.ring();
        if !ring.events.is_empty() {
            return 0;
        }
        let mut run: Vec<RevisedEvent> = Vec::new();
        for event in events {
            if run
                .last()
                .is_some_and(|last| event.revision != last.revision + 1)
            {
                run.clear();
            }
            run.push(event);
        }
        if run.last().map(|event| event.revision) != Some(ring.last) {
            return 0;
        }
        let skip = run.len().saturating_sub(self.capacity);
        ring.events.extend(run.into_iter().skip(skip).map(Arc::new));
        ring.events.len()
    }

    /// Forgets the kept events and goes on after `last_revision` (a cluster member
    /// installed a snapshot: the events it skipped are unknown here).
    pub fn restart_after(&self, last_revision: u64) {
        let mut ring = self.ring();
        ring.events.clear();
        ring.last = last_revision;
    }

    /// The live feed alone: every event published from now on.
    pub fn live(&self) -> broadcast::Receiver<Arc<RevisedEvent>> {
        self.live.subscribe()
    }

    /// Starts a watcher `since` a revision, or refuses when that revision is no longer
    /// kept. A revision past the last published is fine: the watcher waits for it.
    pub fn subscribe(&self, since: Since) -> Result<Subscription, Compacted> {
        let ring = self.ring();
        let backlog = match since {
            Since::Now => Vec::new(),
            Since::Revision(requested) => {
                let oldest = ring.oldest();
                if requested < oldest {
                    return Err(Compacted { requested, oldest });
                }
                ring.events
                    .iter()
                    .filter(|event| event.revision >= requested)
                    .cloned()
                    .collect()
            }
        };
        Ok(Subscription {
            backlog,
            live: self.live.subscribe(),
            last_published: ring.last,
        })
    }
}

#[cfg(test)]
#[path = "event_log_tests.rs"]
mod tests;
