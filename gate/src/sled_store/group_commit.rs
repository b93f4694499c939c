//! [`GroupCommit`]: many writers, one flush.
//!
//! A flush + fdatasync costs about half a millisecond on this kind of disk (STACK.md); done
//! per write it caps a store at about 2,400 writes/s. Here each writer, after its sled
//! transaction commits, takes a ticket and waits until a sync that started after its
//! ticket has finished. Whoever finds no sync running becomes the leader and syncs for
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

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

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
    /// Which tickets are durable, and whether a sync runs.
    state: Mutex<State>,
    /// Signalled whenever a sync ends.
    synced: Condvar,
    /// Blob files already fdatasynced (only the sync leader touches it).
    synced_blobs: Mutex<HashSet<u64>>,
}

#[derive(Debug, Default)]
struct State {
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A leader is syncing right now.
    syncing: bool,
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
                synced: Condvar::new(),
                synced_blobs: Mutex::new(HashSet::new()),
            }),
        })
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

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields, updated together; a poisoned lock holds no broken
        // invariant.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait_for(&self, ticket: u64) -> Result<(), StorageError> {
        let mut state = self.lock();
        loop {
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
            let result = self.sync();
            state = self.lock();
            state.syncing = false;
            if result.is_ok() {
                state.durable = state.durable.max(target);
            }
            self.inner.synced.notify_all();
            // On failure the others retry as leaders; this writer reports the error.
            result?;
        }
    }

    /// flush, then fdatasync the data file and new blob files.
    fn sync(&self) -> Result<(), StorageError> {
        self.inner
            .db
            .flush()
            .map_err(|e| StorageError::new("flushing sled", e))?;
        self.inner
            .data_file
            .sync_data()
            .map_err(|e| StorageError::new("fdatasync of sled's data file", e))?;
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
