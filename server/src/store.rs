//! [`Store`]: leases, held locks and the token counter, durable through a [`Journal`] and
//! kept in sled, with group commit. The facade the engine uses: [`crate::recovery`] opens
//! and reads back the data directory, [`crate::record`] encodes each write, and the
//! [`Checkpointer`] moves the journal into sled.
//!
//! Writes are staged in order in memory (each call under the engine's lock gets the next
//! sequence number) and made durable by one committer thread that appends everything
//! staged so far to the journal as one record, with one `write` and one `fdatasync`; every
//! request waiting on any of those sequence numbers is then released together. So
//! concurrent grants share one sync instead of queueing for one each: a sync costs about
//! the same for many writes as for one, so sharing it is what makes durable grants fast.
//!
//! A cluster leader's store ([`Store::replicated`]) stages and group-commits the same way,
//! but a commit is one raft entry, acknowledged once a quorum of the cluster has it
//! ([`crate::cluster::replicated_commit`]); it has no journal and no checkpoints of its
//! own (the raft log and the state machine are the cluster's).
//!
//! Each batch also carries the revision of its last event (record `r`), so event
//! revisions go on above it after a restart ([`crate::event_log`]); a cluster leader's
//! batch carries the events themselves too, for every member to publish as it applies
//! them.
//!
//! sled holds the same writes a little later: the committer keeps each record's writes and,
//! about once a [checkpoint interval](crate::Config), hands them to the [`Checkpointer`]
//! thread, which coalesces them into sled batches, applies them, flushes sled,
//! `fdatasync`s sled's data file and only then deletes the journal files it covered (and
//! syncs their directory). At start, [`crate::recovery`] replays the journal over sled. Why
//! not flush sled per commit: a sled flush costs far more CPU than the sync itself (the
//! `journal` module documentation says why).
//!
//! What survives what (Linux):
//! - With `fdatasync` on (the default) an acknowledged write is on the device and its cache
//!   is flushed: it survives a power cut (on a disk that honours flushes). The journal
//!   file's creation is synced with its directory before any record goes in.
//! - With `fdatasync` off, a journal append is one `write`: it survives a *process* crash
//!   (`kill -9`; the page cache outlives the process), not a power cut.
//! - A journal record damaged on disk is refused at start with the file and the offset
//!   ([`crate::Error::CorruptJournal`]); only a torn last append (a crash during it, so never
//!   acknowledged) is dropped. The `journal` module gives the rule.
//! - A lock-delay is written with the expiry that starts it and restored in full from the
//!   restart, so a crash inside it does not hand the lock on early.
//! - A [`crate::marker::Marker`] file beside sled's keeps a floor for the token counter, so a database
//!   that sled recovered as empty or older (and no journal covers) is refused at start
//!   instead of reissuing tokens. The checkpoint thread raises it, between sled's sync and
//!   the deletion of the journal files that held the tokens.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::checkpoint::{Checkpoint, Checkpointer};
use crate::cluster::replicated_commit::ReplicatedCommit;
use crate::error::Error;
use crate::event_log::RevisedEvent;
use crate::journal::{self, Journal, JournalBatch, JournalOp};
use crate::record::{encode, encode_event, encode_last_revision};
use crate::recovery::{self, Opened};
use crate::table::Write;
use crate::telemetry::telemetry;

pub use crate::recovery::Recovered;

/// How far the journal is durable.
#[derive(Debug, Clone, Copy, Default)]
struct Durability {
    /// Every batch up to this sequence number is durable.
    through: u64,
    /// The committer failed: no batch after `through` will ever be durable.
    failed: bool,
    /// The failure ended a cluster leader's term: a batch after `through` may or may not
    /// have been committed by the cluster.
    term_ended: bool,
}

/// The durable store. See the module documentation.
pub struct Store {
    /// The sequence number of the last staged batch.
    staged: AtomicU64,
    /// The sequence number up to which everything is durable, and whether the rest never
    /// will be.
    durable: watch::Sender<Durability>,
    /// Guards the committer's sleep, so a kick between its check and its wait is not lost.
    kick_lock: Mutex<()>,
    /// Wakes the committer when something is staged (or it is told to stop).
    kick: Condvar,
    /// Set while the committer sleeps (or is about to): only then does staging pay for a
    /// wake-up (a `Condvar::notify_one` is a `futex` call even with nobody waiting).
    committer_sleeps: AtomicBool,
    /// Batches staged but not yet journaled, in order.
    pending: Mutex<Staged>,
    /// Where a commit goes.
    sink: Sink,
}

/// What is staged for the next commit.
#[derive(Default)]
struct Staged {
    /// The writes, in the order their commands were applied.
    writes: Vec<Write>,
    /// The events, for a cluster leader's store only (its entries carry them).
    events: Vec<RevisedEvent>,
    /// The revision of the last event staged, if any event was.
    last_revision: Option<u64>,
}

/// Where the committer makes batches durable.
enum Sink {
    /// The single node's journal, moved into sled by checkpoints.
    Journal(JournalSink),
    /// A cluster leader's raft log: one entry per commit, durable once a quorum has it.
    Replicated(ReplicatedCommit),
}

/// The single node's journal and its checkpoints.
struct JournalSink {
    /// The journal and the writes not yet handed to sled (the committer's alone).
    committed: Mutex<Committed>,
    /// The thread that moves journaled writes into sled.
    checkpointer: Checkpointer,
    /// How often the journal is handed to sled.
    checkpoint_every: Duration,
}

/// The committer's state: the open journal file and what it holds that sled does not.
struct Committed {
    /// The journal being appended to.
    journal: Journal,
    /// The current journal file's writes, one entry per record, for the next checkpoint.
    /// Kept as journaled, not coalesced: coalescing (a `BTreeMap` insert per write, with
    /// its key comparisons) would run on the committer between the `fdatasync` and the
    /// replies, so the checkpoint thread does it. The cost is memory for repeated keys
    /// until the checkpoint: at most one journal file's writes (an interval's, or
    /// [`CHECKPOINT_BYTES`]).
    unflushed: Vec<Vec<JournalOp>>,
    /// When the first record went into the current journal file (`None`: none yet). The
    /// interval counts from here, not from the rotation: after an idle spell a checkpoint
    /// would otherwise start right after the first commit of a burst, and its syncs would
    /// share the disk with the burst's commits, slowing the journal syncs every reply of
    /// the burst waits for.
    first_record: Option<Instant>,
}

/// A journal file larger than this is checkpointed without waiting for the interval.
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the store in `dir` and reads everything back: sled's state with
    /// the journal replayed over it. A corrupt or unreadable directory is a clear error,
    /// never a panic or a silent reset.
    pub fn open(
        dir: &Path,
        fdatasync: bool,
        cache_bytes: u64,
        checkpoint_every: Duration,
    ) -> Result<(Store, Recovered), Error> {
        let Opened {
            db,
            data_file,
            journal_dir,
            journal,
            marker,
            recovered,
        } = recovery::open(dir, fdatasync, cache_bytes)?;
        let checkpointer =
            Checkpointer::start(db, data_file, journal_dir, journal.next_file(), marker)?;
        let sink = Sink::Journal(JournalSink {
            committed: Mutex::new(Committed {
                journal,
                unflushed: Vec::new(),
                first_record: None,
            }),
            checkpointer,
            checkpoint_every,
        });
        Ok((Store::over(sink), recovered))
    }

    /// A cluster leader's store for one term: each commit is one raft entry through
    /// `commit`. What it starts from is the committed state the leader was promoted with
    /// ([`crate::cluster::promotion::Promotion`]).
    pub fn replicated(commit: ReplicatedCommit) -> Store {
        Store::over(Sink::Replicated(commit))
    }

    fn over(sink: Sink) -> Store {
        let (durable, _) = watch::channel(Durability::default());
        Store {
            staged: AtomicU64::new(0),
            durable,
            kick_lock: Mutex::new(()),
            kick: Condvar::new(),
            committer_sleeps: AtomicBool::new(false),
            pending: Mutex::new(Staged::default()),
            sink,
        }
    }

    /// Queues a command's writes and events for the next commit and returns their sequence
    /// number. Callers stage in the order they applied commands (under the engine's lock),
    /// events with revisions in that order; a commit applies all queued writes in one
    /// atomic sled batch, so each command's writes are atomic on disk and in order.
    pub fn stage(&self, writes: Vec<Write>, events: &[RevisedEvent]) -> Result<u64, Error> {
        let seq = {
            let mut pending = self.pending.lock().map_err(|_| Error::Poisoned)?;
            pending.writes.extend(writes);
            if let Some(last) = events.last() {
                pending.last_revision = Some(last.revision);
                if matches!(self.sink, Sink::Replicated(_)) {
                    pending.events.extend_from_slice(events);
                }
            }
            // Counted under the same lock the committer takes, so a commit's target always
            // covers exactly the writes it took.
            self.staged.fetch_add(1, Ordering::SeqCst) + 1
        };
        self.kick_committer();
        Ok(seq)
    }

    /// The sequence number of the last staged batch: waiting for it makes everything
    /// applied so far durable.
    pub fn staged(&self) -> u64 {
        self.staged.load(Ordering::SeqCst)
    }

    /// Waits until the batch `seq` (and all before it) is durable.
    /// Fails at once if the committer has failed first (see [`Store::fail`]).
    pub async fn wait_durable(&self, seq: u64) -> Result<(), Error> {
        let mut durable = self.durable.subscribe();
        let now = durable
            .wait_for(|done| done.through >= seq || done.failed)
            .await
            .map_err(|_| Error::CommitterStopped)?;
        if now.through >= seq {
            Ok(())
        } else if now.term_ended {
            Err(Error::LeadershipLost)
        } else {
            Err(Error::StoppingAfterFailure)
        }
    }

    /// Says that nothing staged and not yet durable ever will be (the committer failed, a
    /// disk died, a cluster leader lost its term): everyone waiting for such a batch gets
    /// an error now, rather than when the shutdown's drain timeout closes their connection.
    pub fn fail(&self) {
        let replicated = matches!(self.sink, Sink::Replicated(_));
        self.durable.send_modify(|durable| {
            durable.failed = true;
            durable.term_ended = replicated;
        });
    }

    /// Wakes the committer (after staging, or to make it notice a stop request), if it
    /// sleeps: a busy committer looks at `staged` again before it sleeps.
    pub fn kick_committer(&self) {
        if self.committer_sleeps.load(Ordering::SeqCst) {
            // Taking the lock orders this kick after the committer's check or before its
            // wait: a committer between the two cannot miss it.
            drop(self.kick_lock.lock());
            self.kick.notify_one();
        }
    }

    /// Blocks the committer thread until something staged is not durable yet, `stop`, or
    /// 100 ms have passed (so an idle server still checkpoints on time).
    pub fn wait_for_work(&self, stop: &AtomicBool) {
        let Ok(guard) = self.kick_lock.lock() else {
            return;
        };
        // Announce the sleep before the last look at `staged` (both SeqCst): a stager either
        // sees the flag and kicks, or its batch is seen here.
        self.committer_sleeps.store(true, Ordering::SeqCst);
        if self.staged() <= self.durable.borrow().through && !stop.load(Ordering::SeqCst) {
            // A spurious wake-up only costs an empty pass of the committer's loop.
            drop(self.kick.wait_timeout(guard, Duration::from_millis(100)));
        }
        self.committer_sleeps.store(false, Ordering::SeqCst);
    }

    /// Makes everything staged so far durable: one journal record (one `write`, one
    /// `fdatasync`). Returns the sequence number now durable.
    /// Blocking: only the committer thread calls this, so a grant's path has no extra thread
    /// hops.
    pub fn commit(&self) -> Result<u64, Error> {
        let (staged, target) = {
            let mut pending = self.pending.lock().map_err(|_| Error::Poisoned)?;
            (std::mem::take(&mut *pending), self.staged())
        };
        if target <= self.durable.borrow().through {
            return Ok(target);
        }
        let Staged {
            writes,
            events,
            last_revision,
        } = staged;
        let last_revision = last_revision.map(encode_last_revision);
        let ops: Vec<JournalOp> = match &self.sink {
            Sink::Journal(_) => writes
                .into_iter()
                .map(encode)
                .chain(last_revision)
                .collect(),
            Sink::Replicated(commit) => std::iter::once(commit.expectation())
                .chain(writes.into_iter().map(encode))
                .chain(last_revision)
                .chain(events.iter().map(encode_event))
                .collect(),
        };
        let batch = JournalBatch { ops };
        #[allow(clippy::cast_precision_loss)] // a batch is far below 2^53 writes
        let writes = batch.ops.len() as f64;
        let started = Instant::now();
        match &self.sink {
            Sink::Journal(sink) => {
                let mut committed = sink.committed.lock().map_err(|_| Error::Poisoned)?;
                committed.journal.append(&batch)?;
                if !batch.ops.is_empty() {
                    committed.first_record.get_or_insert_with(Instant::now);
                    committed.unflushed.push(batch.ops);
                }
            }
            Sink::Replicated(commit) => commit.commit(batch)?,
        }
        let synced = started.elapsed();
        self.durable.send_modify(|durable| durable.through = target);
        // Counted after the replies are released, not between the sync and them.
        let telemetry = telemetry();
        telemetry.journal_sync.record(synced.as_secs_f64());
        telemetry.journal_batch.record(writes);
        Ok(target)
    }

    /// Hands the journal's writes to the checkpoint thread if the interval has passed (or
    /// the file grew large) and starts a new journal file. The committer calls this after
    /// publishing a commit, so no reply waits for it.
    pub fn maybe_checkpoint(&self) -> Result<(), Error> {
        let Sink::Journal(sink) = &self.sink else {
            return Ok(());
        };
        let mut committed = sink.committed.lock().map_err(|_| Error::Poisoned)?;
        let due = committed
            .first_record
            .is_some_and(|first| first.elapsed() >= sink.checkpoint_every)
            || committed.journal.len() >= CHECKPOINT_BYTES;
        if !committed.unflushed.is_empty() && due {
            sink.checkpoint(&mut committed)?;
        }
        Ok(())
    }

    /// Checkpoints what is left and waits until sled holds it, so the next start has no
    /// journal to replay. Called once, after the committer's last commit.
    /// Does nothing for a cluster leader's store: the raft log and the state machine keep
    /// what it committed.
    pub fn close(&self) -> Result<(), Error> {
        let Sink::Journal(sink) = &self.sink else {
            return Ok(());
        };
        {
            let mut committed = sink.committed.lock().map_err(|_| Error::Poisoned)?;
            if !committed.unflushed.is_empty() {
                sink.checkpoint(&mut committed)?;
            }
        }
        sink.checkpointer.close()
    }
}

#[cfg(test)]
impl Store {
    /// The single node's journal and checkpointer, for tests that look inside them.
    #[allow(clippy::panic)]
    fn journal_sink(&self) -> &JournalSink {
        match &self.sink {
            Sink::Journal(sink) => sink,
            Sink::Replicated(_) => panic!("a replicated store has no journal"),
        }
    }
}

impl JournalSink {
    fn checkpoint(&self, committed: &mut Committed) -> Result<(), Error> {
        // The next file is preallocated at twice this one's size (within bounds).
        let used = committed.journal.len().saturating_mul(2);
        let spare_bytes = used.clamp(*journal::SPARE_BYTES.start(), *journal::SPARE_BYTES.end());
        let through = committed.journal.rotate()?;
        let records = std::mem::take(&mut committed.unflushed);
        committed.first_record = None;
        self.checkpointer.submit(Checkpoint {
            records,
            through,
            spare_bytes,
        })
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
