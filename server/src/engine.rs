//! [`Engine`]: the lock table, its store and its notifications, behind one lock.
//!
//! Every command is applied and its writes staged under one `std::sync::Mutex` (the
//! critical section is short and never awaits, so a blocking mutex is cheaper than an async
//! one, as in mini-redis). Nothing a command produced is shown to anyone before its writes
//! are durable: the caller waits for the batch's sequence number before replying, and the
//! [committer](crate::committer) releases handoffs to queued acquirers and events to
//! watchers only after the flush that covers them. So a token, a grant or an end of a
//! lease that anybody has seen survives a crash (CONTRACT S1, S2, S7). Reads too: they
//! apply due expiries first and wait for them like any answer, so no read reports a lease
//! gone that a restart would bring back.
//!
//! Each event gets its revision here, as it is staged (one more than the last; the last is
//! stored with the batch, so numbering goes on above it after a restart or a failover), and
//! is published to the node's [`EventLog`] once durable. A cluster leader's engine does not
//! publish: every member publishes the events when it applies the raft entry that carries
//! them ([`crate::event_log`]).
//!
//! A queued acquirer's reply channel lives in `waiting` from its queueing until its handoff
//! is delivered, or until it leaves the queue (timed out, cancelled, disconnected): the
//! cancellation that takes it out of the table's queue drops its channel too, so a waiter
//! that leaves costs nothing afterwards.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::event_log::{EventLog, RevisedEvent};
use crate::store::Store;
use crate::table::{Command, Grant, Handoff, LockTable, Outcome, Refusal, Reply, WaiterId};
use crate::telemetry::telemetry;

/// Where a queued acquirer's outcome is delivered.
pub type HandoffSender = oneshot::Sender<Result<Grant, Refusal>>;

/// What the engine's lock protects.
struct Inner {
    /// The state machine.
    table: LockTable,
    /// Handoffs and events waiting for their batch to be durable, by sequence number, with
    /// when the command that made the handoffs ran (for the handoff latency; only taken
    /// when there are handoffs).
    pending: VecDeque<Pending>,
    /// Queued acquirers' reply channels: one per waiter in the table's queues (at most
    /// `max_waiters`), plus one per handoff whose batch is not durable yet.
    waiting: HashMap<WaiterId, HandoffSender>,
    /// The time the reaper sleeps until, so it is only woken for something earlier.
    reaper_due: Option<Timestamp>,
    /// The revision of the last event staged (0: none ever).
    last_revision: u64,
}

/// One command's handoffs and events, waiting for batch `seq` to be durable.
struct Pending {
    /// The batch.
    seq: u64,
    /// Outcomes for queued acquirers.
    handoffs: Vec<Handoff>,
    /// Changes for watchers, with their revisions.
    events: Vec<RevisedEvent>,
    /// When the command ran, if it made handoffs.
    handed_at: Option<Instant>,
}

/// How many leases, held locks and waiters the table has: the gauges `/metrics` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    /// Live leases.
    pub leases: usize,
    /// Held locks.
    pub locks_held: usize,
    /// Queued acquirers.
    pub waiters: usize,
}

/// A command's answer and the batch it must wait for.
pub struct Executed {
    /// The table's reply.
    pub reply: Result<Reply, Refusal>,
    /// Wait for this batch to be durable before showing the reply to anyone.
    pub seq: u64,
}

/// The lock table, its store and its notifications. See the module documentation.
pub struct Engine {
    /// Table, pending notifications and waiter channels.
    inner: Mutex<Inner>,
    /// The durable store.
    store: Store,
    /// The server's monotonic clock.
    clock: Clock,
    /// Where events are published once durable (`None`: a cluster leader's engine, whose
    /// events every member publishes as it applies them).
    event_log: Option<Arc<EventLog>>,
    /// Wakes the reaper when something becomes due earlier than it thought.
    reaper_wake: Notify,
    /// Cancelled when a fatal error means the server must stop (in a cluster: this
    /// leader's term must end).
    fatal: CancellationToken,
    /// Set when a cluster leader's term ended ([`Engine::close`]): nothing more is applied.
    closed: AtomicBool,
}

impl Engine {
    /// An engine over a restored table and its store. Event revisions go on after
    /// `last_revision` (what the store restored); events are published to `event_log`.
    pub fn new(
        table: LockTable,
        store: Store,
        clock: Clock,
        fatal: CancellationToken,
        last_revision: u64,
        event_log: Option<Arc<EventLog>>,
    ) -> Self {
        Engine {
            inner: Mutex::new(Inner {
                table,
                pending: VecDeque::new(),
                waiting: HashMap::new(),
                reaper_due: None,
                last_revision,
            }),
            store,
            clock,
            event_log,
            reaper_wake: Notify::new(),
            fatal,
            closed: AtomicBool::new(false),
        }
    }

    /// Ends a cluster leader's term: nothing more is applied, everyone waiting for a batch
    /// not yet committed is answered [`Error::LeadershipLost`] now, and every queued
    /// acquirer's channel closes (they are answered the same). The table is dropped with
    /// the engine: the next term starts from the committed state.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.store.fail();
        if let Ok(mut inner) = self.inner.lock() {
            inner.waiting.clear();
            inner.pending.clear();
        }
        self.reaper_wake.notify_one();
    }

    /// Whether [`Engine::close`] ended this engine's term.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Applies a command now and stages its writes. If the reply is `Queued` and a
    /// `handoff` channel is given, it is registered before the lock is let go, so no
    /// handoff can be missed; a cancelled waiter's channel is dropped with its place in
    /// the queue.
    pub fn execute(
        &self,
        command: Command,
        handoff: Option<HandoffSender>,
    ) -> Result<Executed, Error> {
        let mut inner = self.lock()?;
        self.apply(&mut inner, self.clock.now(), command, handoff)
    }

    /// Runs a read-only query on the table as of now, after applying the expiries due by
    /// now; returns its answer and the batch to wait for, so what it shows (a lease gone,
    /// say) is durable before it is shown: a restart cannot revive what a read called gone.
    pub fn read<T>(
        &self,
        query: impl FnOnce(&LockTable, Timestamp) -> T,
    ) -> Result<(T, u64), Error> {
        self.read_revised(query)
            .map(|(answer, seq, _revision)| (answer, seq))
    }

    /// [`Engine::read`], also answering the revision of the last event the answer
    /// reflects: a watcher that starts after it misses no change made since.
    pub fn read_revised<T>(
        &self,
        query: impl FnOnce(&LockTable, Timestamp) -> T,
    ) -> Result<(T, u64, u64), Error> {
        let mut inner = self.lock()?;
        let now = self.clock.now();
        let ticked = self.apply(&mut inner, now, Command::Tick, None)?;
        let answer = query(&inner.table, now);
        Ok((answer, ticked.seq, inner.last_revision))
    }

    /// Applies a command at `now` under the engine's lock and stages its writes.
    fn apply(
        &self,
        inner: &mut Inner,
        now: Timestamp,
        command: Command,
        handoff: Option<HandoffSender>,
    ) -> Result<Executed, Error> {
        let cancelled = match &command {
            Command::CancelWait { waiter } => Some(*waiter),
            _ => None,
        };
        let Outcome {
            reply,
            writes,
            handoffs,
            events,
        } = inner.table.apply(now, command);
        let events: Vec<RevisedEvent> = events
            .into_iter()
            .map(|event| {
                inner.last_revision += 1;
                RevisedEvent {
                    revision: inner.last_revision,
                    event,
                }
            })
            .collect();
        let seq = if writes.is_empty() && events.is_empty() {
            self.store.staged()
        } else {
            match self.store.stage(writes, &events) {
                Ok(seq) => seq,
                Err(error) => {
                    // Memory now differs from disk: stop rather than serve from it.
                    self.store.fail();
                    self.fatal.cancel();
                    return Err(error);
                }
            }
        };
        match (&reply, handoff, cancelled) {
            (Ok(Reply::Queued(waiter)), Some(sender), _) => {
                inner.waiting.insert(*waiter, sender);
            }
            // Out of the queue with no handoff coming: nothing will ever use its channel.
            (Ok(Reply::Cancelled(true)), _, Some(waiter)) => {
                inner.waiting.remove(&waiter);
            }
            _ => {}
        }
        if let Ok(Reply::Renewed { .. }) = &reply {
            telemetry().renewals.increment(1);
        }
        if !handoffs.is_empty() || !events.is_empty() {
            let handed_at = (!handoffs.is_empty()).then(Instant::now);
            inner.pending.push_back(Pending {
                seq,
                handoffs,
                events,
                handed_at,
            });
        }
        if let Some(due) = inner.table.next_due() {
            if inner
                .reaper_due
                .is_none_or(|sleeping_until| due < sleeping_until)
            {
                inner.reaper_due = Some(due);
                self.reaper_wake.notify_one();
            }
        }
        Ok(Executed { reply, seq })
    }

    /// Waits until batch `seq` is durable; fails at once if the store has failed first
    /// ([`Store::fail`]).
    pub async fn durable(&self, seq: u64) -> Result<(), Error> {
        self.store.wait_durable(seq).await
    }

    /// Takes back a grant whose acquirer is gone (cancelled or disconnected before it saw
    /// the grant): releases the lease if the grant created it, else just the lock.
    pub fn undo_grant(&self, grant: &Grant) {
        let lock = (!grant.created_lease).then(|| grant.lock.clone());
        let command = Command::Release {
            lease: grant.lease,
            lock,
        };
        if let Err(error) = self.execute(command, None) {
            tracing::error!(%error, lock = %grant.lock, "could not undo an unseen grant");
        }
    }

    /// Delivers the handoffs and events of every batch up to `durable`. Called by the
    /// committer after each flush.
    pub fn dispatch(&self, durable: u64) -> Result<(), Error> {
        let mut ready = Vec::new();
        {
            let mut inner = self.lock()?;
            while inner
                .pending
                .front()
                .is_some_and(|pending| pending.seq <= durable)
            {
                let Some(pending) = inner.pending.pop_front() else {
                    break;
                };
                for handoff in pending.handoffs {
                    let sender = inner.waiting.remove(&handoff.waiter);
                    ready.push((sender, handoff.result, pending.handed_at));
                }
                for event in &pending.events {
                    telemetry().event(event.event.kind);
                }
                if let Some(event_log) = &self.event_log {
                    event_log.publish(pending.events);
                }
            }
        }
        for (sender, result, handed_at) in ready {
            let granted = result.is_ok();
            let undelivered = match sender {
                Some(sender) => sender.send(result).err(),
                None => Some(result),
            };
            if let (true, None, Some(handed_at)) = (granted, &undelivered, handed_at) {
                telemetry()
                    .handoff_latency
                    .record(handed_at.elapsed().as_secs_f64());
            }
            // The acquirer left after it was granted but before it could hear of it: take
            // the grant back, so no lock stays held by nobody (L2).
            if let Some(Ok(grant)) = undelivered {
                self.undo_grant(&grant);
            }
        }
        Ok(())
    }

    /// How many leases, held locks and waiters the table has now (without applying due
    /// expiries: a gauge may count a lease the reaper is about to end).
    pub fn sizes(&self) -> Result<TableSizes, Error> {
        let inner = self.lock()?;
        Ok(TableSizes {
            leases: inner.table.lease_count(),
            locks_held: inner.table.held_lock_count(),
            waiters: inner.table.waiter_count(),
        })
    }

    /// The earliest due time, and records that the reaper sleeps until it.
    pub fn reaper_due(&self) -> Result<Option<Timestamp>, Error> {
        let mut inner = self.lock()?;
        let due = inner.table.next_due();
        inner.reaper_due = due;
        Ok(due)
    }

    /// What the reaper waits on besides its deadline.
    pub fn reaper_wake(&self) -> &Notify {
        &self.reaper_wake
    }

    /// The store, for the committer.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Cancelled when the server must stop because of a fatal error.
    pub fn fatal(&self) -> &CancellationToken {
        &self.fatal
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, Error> {
        if self.is_closed() {
            return Err(Error::LeadershipLost);
        }
        self.inner.lock().map_err(|_| {
            self.fatal.cancel();
            Error::Poisoned
        })
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
