//! [`GroupCommit`]: many writers, one flush.
//!
//! A flush + fdatasync waits for the disk to confirm the write; done per write, it caps a
//! store at one write per disk round trip, however many writers there are. Here each
//! writer, after its sled transaction commits, takes a ticket and waits until a sync that
//! started after its ticket has finished. Whoever finds no sync running becomes the leader and syncs for
//! everybody who has a ticket by then; the rest wait on a condition variable. Under load
//! one sync covers dozens of writes.
//!
//! A sync is `Db::flush` (which on Linux ends in `sync_file_range`, enough for a process
//! crash), then `fdatasync` of sled's `<dir>/db` file and of any new blob files (for a
//! power cut: `sync_file_range` does not flush the disk's write cache).
//!
//! Readers need care too: a read may see a write that is committed but not yet synced, and
//! reporting it (or refusing a write because of it) would tell a client something a crash
//! can take back. [`GroupCommit::settle`] waits until everything such a read could have seen
//! is durable; when nothing is pending it returns at once.
//!
//! A failed sync stops the group commit for good (as PostgreSQL panics on a failed
//! `fsync`): Linux may drop the pages a failed writeback could not write and report the
//! next `fdatasync` as clean, so a retry would acknowledge writes on top of a hole. The
//! writer whose sync failed, every writer waiting for it and every later caller get
//! [`StorageError::Stopped`] naming that first failure, until the store is reopened, which
//! reads back what the disk really holds. Nothing retries the sync.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

#[cfg(test)]
use super::sync_fault::SyncFault;
use crate::error::StorageError;

/// Shares flush + fdatasync among concurrent writers to one sled database. A cheap `Clone`
/// handle.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    /// The shared state.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The database to flush.
    db: sled::Db,
    /// sled's data file, `<dir>/db`, opened once for fdatasync.
    data_file: File,
    /// `<dir>/blobs`: values too large for a log segment land here, one file each.
    blobs_dir: PathBuf,
    /// The last ticket handed out.
    requested: AtomicU64,
    /// Writers between the start of their transaction and taking their ticket.
    in_flight: AtomicU64,
    /// Which tickets are durable, whether a sync runs, and whether one failed.
    state: Mutex<State>,
    /// Set once a sync has failed (the failure itself is in `state`): the check every
    /// commit makes before it writes, without taking the lock.
    stopped: AtomicBool,
    /// Signalled whenever a sync ends.
    synced: Condvar,
    /// Blob files already fdatasynced (only the sync leader touches it).
    synced_blobs: Mutex<HashSet<u64>>,
    /// Told how long each successful sync took (metrics), once one is set.
    sync_observer: OnceLock<SyncObserver>,
    /// Unit tests: makes an `fdatasync` of the data file fail.
    #[cfg(test)]
    sync_fault: SyncFault,
}

#[derive(Debug, Default)]
struct State {
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A leader is syncing right now.
    syncing: bool,
    /// The first failed sync, as [`StorageError::Stopped`]: once set, nothing is durable
    /// any more and every call fails with it.
    stopped: Option<StorageError>,
}

/// Marks one writer as between "transaction starts" and "ticket taken"; see
/// [`GroupCommit::begin`]. Dropping it without [`InFlight::wait_durable`] just ends it.
#[derive(Debug)]
pub struct InFlight<'a> {
    /// The group commit it belongs to.
    group: &'a GroupCommit,
    /// Whether the ticket was taken (and the count already decremented).
    done: bool,
}

impl GroupCommit {
    /// Group commit for the database `db` stored in `dir`.
    pub fn new(db: sled::Db, dir: &Path) -> Result<Self, StorageError> {
        let data_file = File::open(dir.join("db"))
            .map_err(|e| StorageError::new("opening sled's data file for fdatasync", e))?;
        Ok(GroupCommit {
            inner: Arc::new(Inner {
                db,
                data_file,
                blobs_dir: dir.join("blobs"),
                requested: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
                state: Mutex::new(State::default()),
                stopped: AtomicBool::new(false),
                synced: Condvar::new(),
                synced_blobs: Mutex::new(HashSet::new()),
                sync_observer: OnceLock::new(),
                #[cfg(test)]
                sync_fault: SyncFault::default(),
            }),
        })
    }

    /// From now on, `observe` is told how long each successful sync (flush + fdatasync)
    /// took: how a service exports its sync latency without this crate knowing its
    /// metrics library. It runs on the syncing thread, once per sync (not per write), and
    /// must be quick. Only the first observer set is kept; returns whether this one was.
    pub fn observe_syncs(&self, observe: impl Fn(Duration) + Send + Sync + 'static) -> bool {
        self.inner
            .sync_observer
            .set(SyncObserver(Box::new(observe)))
            .is_ok()
    }

    /// Why the group commit stopped (a [`StorageError::Stopped`] naming the first failed
    /// sync), or `None` while it works.
    pub fn stopped(&self) -> Option<StorageError> {
        if self.inner.stopped.load(SeqCst) {
            self.lock().stopped.clone()
        } else {
            None
        }
    }

    /// Fails with [`StorageError::Stopped`] once a sync has failed: a writer calls this
    /// before it writes, so nothing more lands in a store that can no longer make it
    /// durable.
    pub fn check(&self) -> Result<(), StorageError> {
        match self.stopped() {
            Some(stopped) => Err(stopped),
            None => Ok(()),
        }
    }

    /// Stops the group commit at `failure` (a failed flush or sync, also one found outside
    /// [`GroupCommit::commit`], e.g. by sled while committing a transaction): wakes every
    /// waiter, and returns the error every caller now gets, which names the first failure
    /// if there was one before.
    pub fn stop(&self, failure: StorageError) -> StorageError {
        let stopped = self.record_stop(&mut self.lock(), failure);
        self.inner.synced.notify_all();
        stopped
    }

    /// Records the first failure in the locked `state` (later ones keep it); returns it.
    fn record_stop(&self, state: &mut State, failure: StorageError) -> StorageError {
        let stopped = state
            .stopped
            .get_or_insert_with(|| failure.into_stopped())
            .clone();
        self.inner.stopped.store(true, SeqCst);
        stopped
    }

    /// Call before a transaction that may write: until the returned guard takes its
    /// ticket, readers know a write may be landing and [`GroupCommit::settle`] syncs.
    pub fn begin(&self) -> InFlight<'_> {
        self.inner.in_flight.fetch_add(1, SeqCst);
        InFlight {
            group: self,
            done: false,
        }
    }

    /// Waits until everything a read made before this call could have seen is durable.
    pub fn settle(&self) -> Result<(), StorageError> {
        if self.inner.in_flight.load(SeqCst) > 0 {
            // A writer may have committed without a ticket yet: a ticket of our own makes
            // the next sync start after that commit.
            let ticket = self.inner.requested.fetch_add(1, SeqCst) + 1;
            self.wait_for(ticket)
        } else {
            // Every commit we could have seen already holds a ticket up to this value.
            self.wait_for(self.inner.requested.load(SeqCst))
        }
    }

    /// Takes a ticket and waits until it is durable: the write path, after a commit.
    pub fn commit(&self) -> Result<(), StorageError> {
        let ticket = self.inner.requested.fetch_add(1, SeqCst) + 1;
        self.wait_for(ticket)
    }

    /// Unit tests: after every real `fdatasync` of the data file, `decide` may turn its
    /// result into an error.
    #[cfg(test)]
    pub(crate) fn inject_sync_fault(
        &self,
        decide: impl FnMut() -> Option<std::io::Error> + Send + 'static,
    ) {
        self.inner.sync_fault.set(decide);
    }

    /// Unit tests: how many tickets have been handed out (each writer waiting for a sync
    /// holds one).
    #[cfg(test)]
    pub(crate) fn tickets(&self) -> u64 {
        self.inner.requested.load(SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain fields, each change made whole under the lock; a poisoned lock
        // holds no broken invariant.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait_for(&self, ticket: u64) -> Result<(), StorageError> {
        let mut state = self.lock();
        loop {
            // Checked first: a store that stopped acknowledges nothing, not even a ticket
            // that an earlier sync covered (its writer learns "not acknowledged", which is
            // never wrong).
            if let Some(stopped) = &state.stopped {
                return Err(stopped.clone());
            }
            if state.durable >= ticket {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .inner
                    .synced
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            // Become the leader: every ticket handed out so far belongs to a commit that
            // finished before it was taken, so this sync covers them all.
            state.syncing = true;
            let target = self.inner.requested.load(SeqCst);
            drop(state);
            let started = Instant::now();
            let result = self.sync();
            if let (Ok(()), Some(observer)) = (&result, self.inner.sync_observer.get()) {
                (observer.0)(started.elapsed());
            }
            state = self.lock();
            state.syncing = false;
            match result {
                Ok(()) => state.durable = state.durable.max(target),
                // Never retried: the next sync could report clean over what this one lost.
                Err(failure) => {
                    self.record_stop(&mut state, failure);
                }
            }
            self.inner.synced.notify_all();
        }
    }

    /// flush, then fdatasync the data file and new blob files.
    fn sync(&self) -> Result<(), StorageError> {
        self.inner
            .db
            .flush()
            .map_err(|e| StorageError::new("flushing sled", e))?;
        let synced = self.inner.data_file.sync_data();
        #[cfg(test)]
        let synced = self.inner.sync_fault.apply(synced);
        synced.map_err(|e| StorageError::new("fdatasync of sled's data file", e))?;
        self.sync_new_blobs()
    }

    fn sync_new_blobs(&self) -> Result<(), StorageError> {
        let entries = match std::fs::read_dir(&self.inner.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::new("listing sled's blobs", e)),
        };
        let mut synced = self
            .inner
            .synced_blobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut present = HashSet::new();
        let mut new_files = false;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::new("listing sled's blobs", e))?;
            // sled names blobs by log sequence number; anything else is not ours to sync.
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
            else {
                continue;
            };
            present.insert(id);
            if !synced.contains(&id) {
                match File::open(entry.path()) {
                    Ok(file) => file
                        .sync_data()
                        .map_err(|e| StorageError::new("fdatasync of a sled blob", e))?,
                    // Garbage-collected between listing and opening: nothing to keep.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StorageError::new("opening a sled blob", e)),
                }
                new_files = true;
            }
        }
        if new_files {
            File::open(&self.inner.blobs_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| StorageError::new("fsync of sled's blob directory", e))?;
        }
        *synced = present;
        Ok(())
    }
}

impl InFlight<'_> {
    /// The transaction committed a change: take a ticket and wait until it is durable.
    pub fn wait_durable(mut self) -> Result<(), StorageError> {
        let ticket = self.group.inner.requested.fetch_add(1, SeqCst) + 1;
        self.finish();
        self.group.wait_for(ticket)
    }

    /// The transaction changed nothing (refused, or a no-op): wait until what it read is
    /// durable.
    pub fn settle(mut self) -> Result<(), StorageError> {
        self.finish();
        self.group.settle()
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.group.inner.in_flight.fetch_sub(1, SeqCst);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What [`GroupCommit::observe_syncs`] was given.
struct SyncObserver(Box<dyn Fn(Duration) + Send + Sync>);

impl std::fmt::Debug for SyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncObserver")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::AtomicUsize;

    use fenced_types::{FencingToken, LockName};

    use super::*;
    use crate::{Gate, SledBackend, WriteOp};

    // checks: none (operations)
    #[test]
    fn an_observer_is_told_of_each_successful_sync_and_only_the_first_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let gate = Gate::new(SledBackend::open(dir.path()).unwrap());
        let syncs = Arc::new(AtomicUsize::new(0));
        let counted = syncs.clone();
        assert!(gate.backend().group_commit().observe_syncs(move |_| {
            counted.fetch_add(1, SeqCst);
        }));
        assert!(!gate.backend().group_commit().observe_syncs(|_| {}));
        let orders = LockName::new("orders").unwrap();
        gate.write(
            &orders,
            FencingToken::new(1).unwrap(),
            &WriteOp::put("k", "v"),
        )
        .unwrap();
        assert!(syncs.load(SeqCst) >= 1, "the acknowledged write was synced");
    }
}
