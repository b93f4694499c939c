//! [`Store`]: leases, held locks and the token counter in sled, with group commit.
//!
//! Writes are staged in order in memory (each call under the engine's lock gets the next
//! sequence number) and made durable by one committer thread that applies everything staged
//! so far as one sled batch, with one sled flush and one `fdatasync`; every request waiting on any of those sequence
//! numbers is then released together. So concurrent grants share one sync instead of
//! queueing for one each (STACK.md: group commit is what makes durable grants fast).
//!
//! What survives what (sled 0.34 on Linux):
//! - sled's `flush` ends in `sync_file_range`, which writes the data to the device but
//!   neither flushes the device's volatile cache nor the file's metadata. That survives a
//!   *process* crash (`kill -9`), not a power cut.
//! - With `fdatasync` on (the default) the committer also calls `fdatasync` on sled's data
//!   file `<dir>/db` after the flush, which flushes the device cache: an acknowledged grant
//!   then survives a power cut too (on a disk that honours flushes).
//!
//! - A [`Marker`] file beside sled's keeps a floor for the token counter, so a database
//!   that sled recovered as empty or older is refused at start instead of reissuing tokens.
//!
//! Records are small protobuf messages (prost derives), so the format can grow fields.
//! Keys: `t` the next token; `L` + 16-byte lease id a lease; `K` + name a held lock.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use fenced_types::{FencingToken, LeaseId, LockName};
use prost::Message;
use tokio::sync::watch;

use crate::error::Error;
use crate::marker::Marker;
use crate::table::{RestoredLease, RestoredLock, Write};

const NEXT_TOKEN_KEY: &[u8] = b"t";
const LEASE_PREFIX: u8 = b'L';
const LOCK_PREFIX: u8 = b'K';

/// A lease as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct LeaseRecord {
    /// The TTL in milliseconds.
    #[prost(uint64, tag = "1")]
    ttl_ms: u64,
    /// The creator's holder name.
    #[prost(string, tag = "2")]
    holder: String,
}

/// A held lock as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct LockRecord {
    /// The 16-byte lease id.
    #[prost(bytes = "vec", tag = "1")]
    lease: Vec<u8>,
    /// The grant's token.
    #[prost(uint64, tag = "2")]
    token: u64,
    /// The holder's name.
    #[prost(string, tag = "3")]
    holder: String,
    /// The lock-delay in milliseconds.
    #[prost(uint64, tag = "4")]
    lock_delay_ms: u64,
}

/// What was on disk at start.
#[derive(Debug)]
pub struct Recovered {
    /// The next token to issue.
    pub next_token: FencingToken,
    /// Every unreleased, unexpired lease that was acknowledged.
    pub leases: Vec<RestoredLease>,
    /// Every held lock.
    pub locks: Vec<RestoredLock>,
}

/// The durable store. See the module documentation.
pub struct Store {
    /// The sled database (its default tree holds everything).
    db: sled::Db,
    /// sled's data file, for `fdatasync` after each flush (`None` when turned off).
    data_file: Option<Arc<std::fs::File>>,
    /// The sequence number of the last staged batch.
    staged: AtomicU64,
    /// The sequence number up to which everything is durable.
    durable: watch::Sender<u64>,
    /// Guards the committer's sleep, so a kick between its check and its wait is not lost.
    kick_lock: Mutex<()>,
    /// Wakes the committer when something is staged (or it is told to stop).
    kick: Condvar,
    /// Batches staged but not yet handed to sled, in order. Staging only appends here:
    /// sled 0.34's `flush` holds its global lock in read mode while it writes, and
    /// `apply_batch` needs it in write mode, so a command that wrote to sled directly would
    /// wait out every flush (and with it every other command). Only the committer thread
    /// touches sled, applying everything staged in one batch right before its flush.
    pending: Mutex<Vec<Write>>,
    /// The token floor beside sled's files.
    marker: Marker,
}

impl Store {
    /// Opens (or creates) the store in `dir` and reads everything back. A corrupt or
    /// unreadable directory is a clear error, never a panic or a silent reset.
    pub fn open(
        dir: &Path,
        fdatasync: bool,
        cache_bytes: u64,
    ) -> Result<(Store, Recovered), Error> {
        let open_error = |reason: String| Error::Open {
            dir: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput);
        // sled 0.34 can panic on some corrupt files (sled #1533, #1387): turn that into an
        // error that names the directory.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|panic| open_error(format!("sled panicked: {}", panic_message(&panic))))?
            .map_err(|e| open_error(e.to_string()))?;
        let data_file = if fdatasync {
            let path = dir.join("db");
            let file = std::fs::File::open(&path).map_err(|e| {
                open_error(format!("cannot open {} for fdatasync: {e}", path.display()))
            })?;
            Some(Arc::new(file))
        } else {
            None
        };
        let recovered = read_back(&db, dir)?;
        let marker = Marker::check(dir, recovered.next_token)?;
        let (durable, _) = watch::channel(0);
        let store = Store {
            db,
            data_file,
            staged: AtomicU64::new(0),
            durable,
            kick_lock: Mutex::new(()),
            kick: Condvar::new(),
            pending: Mutex::new(Vec::new()),
            marker,
        };
        Ok((store, recovered))
    }

    /// Queues a command's writes for the next commit and returns their sequence number.
    /// Callers stage in the order they applied commands (under the engine's lock); a commit
    /// applies all queued writes in one atomic sled batch, so each command's writes are
    /// atomic on disk and in order.
    pub fn stage(&self, writes: Vec<Write>) -> Result<u64, Error> {
        let seq = {
            let mut pending = self.pending.lock().map_err(|_| Error::Poisoned)?;
            pending.extend(writes);
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
    pub async fn wait_durable(&self, seq: u64) -> Result<(), Error> {
        let mut durable = self.durable.subscribe();
        durable
            .wait_for(|done| *done >= seq)
            .await
            .map(|_| ())
            .map_err(|_| Error::Storage {
                during: "waiting for durability",
                reason: "the committer stopped".to_string(),
            })
    }

    /// Wakes the committer (after staging, or to make it notice a stop request).
    pub fn kick_committer(&self) {
        // Taking the lock orders this kick after the committer's check or before it: a
        // committer between its check and its wait cannot miss it.
        drop(self.kick_lock.lock());
        self.kick.notify_one();
    }

    /// Blocks the committer thread until something staged is not durable yet, or `stop`.
    pub fn wait_for_work(&self, stop: &AtomicBool) {
        let Ok(mut guard) = self.kick_lock.lock() else {
            return;
        };
        while self.staged() <= *self.durable.borrow() && !stop.load(Ordering::SeqCst) {
            // The timeout is only a safety net; kicks do the real work.
            match self.kick.wait_timeout(guard, Duration::from_millis(100)) {
                Ok((next, _)) => guard = next,
                Err(_) => return,
            }
        }
    }

    /// Makes everything staged so far durable: one sled batch, one flush, one
    /// `fdatasync`, and the token marker when due. Returns the sequence number now durable.
    /// Blocking: only the committer thread calls this, so a grant's path has no extra thread
    /// hops and nothing else ever waits on sled.
    pub fn commit(&self) -> Result<u64, Error> {
        let (writes, target) = {
            let mut pending = self.pending.lock().map_err(|_| Error::Poisoned)?;
            (std::mem::take(&mut *pending), self.staged())
        };
        if target <= *self.durable.borrow() {
            return Ok(target);
        }
        let mut batch = sled::Batch::default();
        let mut next_token = None;
        for write in writes {
            if let Write::NextToken(token) = &write {
                next_token = Some(token.get());
            }
            encode(&mut batch, write);
        }
        self.db.apply_batch(batch).map_err(|e| Error::Storage {
            during: "writing a batch",
            reason: e.to_string(),
        })?;
        self.db.flush().map_err(|e| Error::Storage {
            during: "flushing sled",
            reason: e.to_string(),
        })?;
        if let Some(file) = &self.data_file {
            file.sync_data().map_err(|e| Error::Storage {
                during: "fdatasync of sled's data file",
                reason: e.to_string(),
            })?;
        }
        if let Some(next_token) = next_token {
            if self.marker.due(next_token) {
                self.marker.advance(next_token)?;
            }
        }
        self.durable.send_replace(target);
        Ok(target)
    }
}

/// Adds one write to a sled batch.
fn encode(batch: &mut sled::Batch, write: Write) {
    match write {
        Write::PutLease { lease, ttl, holder } => {
            let record = LeaseRecord {
                ttl_ms: millis(ttl),
                holder: holder.to_string(),
            };
            batch.insert(lease_key(&lease), record.encode_to_vec());
        }
        Write::DeleteLease { lease } => batch.remove(lease_key(&lease)),
        Write::PutLock {
            lock,
            lease,
            token,
            holder,
            lock_delay,
        } => {
            let record = LockRecord {
                lease: lease.as_bytes().to_vec(),
                token: token.get(),
                holder: holder.to_string(),
                lock_delay_ms: millis(lock_delay),
            };
            batch.insert(lock_key(&lock), record.encode_to_vec());
        }
        Write::DeleteLock { lock } => batch.remove(lock_key(&lock)),
        Write::NextToken(token) => batch.insert(NEXT_TOKEN_KEY, &token.to_be_bytes()),
    }
}

/// Reads every record back, refusing anything that does not decode.
fn read_back(db: &sled::Db, dir: &Path) -> Result<Recovered, Error> {
    let corrupt = |key: &[u8], reason: String| Error::CorruptRecord {
        dir: dir.to_path_buf(),
        key: String::from_utf8_lossy(key).escape_debug().to_string(),
        reason,
    };
    let mut recovered = Recovered {
        next_token: FencingToken::FIRST,
        leases: Vec::new(),
        locks: Vec::new(),
    };
    for entry in db.iter() {
        let (key, value) = entry.map_err(|e| Error::Open {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        match key.first() {
            _ if &*key == NEXT_TOKEN_KEY => {
                let bytes: [u8; 8] = value
                    .as_ref()
                    .try_into()
                    .map_err(|_| corrupt(&key, format!("{} bytes, expected 8", value.len())))?;
                recovered.next_token =
                    FencingToken::from_be_bytes(bytes).map_err(|e| corrupt(&key, e.to_string()))?;
            }
            Some(&LEASE_PREFIX) => {
                let lease =
                    lease_id(&key[1..]).ok_or_else(|| corrupt(&key, "bad lease id".into()))?;
                let record = LeaseRecord::decode(value.as_ref())
                    .map_err(|e| corrupt(&key, e.to_string()))?;
                recovered.leases.push(RestoredLease {
                    lease,
                    ttl: Duration::from_millis(record.ttl_ms),
                });
            }
            Some(&LOCK_PREFIX) => {
                let name = String::from_utf8(key[1..].to_vec())
                    .map_err(|e| corrupt(&key, e.to_string()))?;
                let lock = LockName::new(name).map_err(|e| corrupt(&key, e.to_string()))?;
                let record =
                    LockRecord::decode(value.as_ref()).map_err(|e| corrupt(&key, e.to_string()))?;
                let lease =
                    lease_id(&record.lease).ok_or_else(|| corrupt(&key, "bad lease id".into()))?;
                let token =
                    FencingToken::new(record.token).map_err(|e| corrupt(&key, e.to_string()))?;
                recovered.locks.push(RestoredLock {
                    lock,
                    lease,
                    token,
                    holder: record.holder.into(),
                    lock_delay: Duration::from_millis(record.lock_delay_ms),
                });
            }
            _ => return Err(corrupt(&key, "unknown key".into())),
        }
    }
    Ok(recovered)
}

fn lease_key(lease: &LeaseId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(LEASE_PREFIX);
    key.extend_from_slice(lease.as_bytes());
    key
}

fn lock_key(lock: &LockName) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + lock.as_bytes().len());
    key.push(LOCK_PREFIX);
    key.extend_from_slice(lock.as_bytes());
    key
}

fn lease_id(bytes: &[u8]) -> Option<LeaseId> {
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    Some(LeaseId::from_bytes(bytes))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string())
}
