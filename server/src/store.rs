//! [`Store`]: leases, held locks and the token counter, durable through a [`Journal`] and
//! kept in sled, with group commit.
//!
//! Writes are staged in order in memory (each call under the engine's lock gets the next
//! sequence number) and made durable by one committer thread that appends everything
//! staged so far to the journal as one record, with one `write` and one `fdatasync`; every
//! request waiting on any of those sequence numbers is then released together. So
//! concurrent grants share one sync instead of queueing for one each: a sync costs about
//! the same for many writes as for one, so sharing it is what makes durable grants fast.
//!
//! sled holds the same writes a little later: the committer keeps each record's writes and,
//! about once a [checkpoint interval](crate::Config), hands them to the [`Checkpointer`]
//! thread, which coalesces them into sled batches, applies them, flushes sled,
//! `fdatasync`s sled's data file and only then deletes the journal files it covered (and
//! syncs their directory). At start, the journal files newer than the generation sled
//! records as held (`g`) are replayed over what sled recovered (whole-value puts and
//! deletes in order), written to sled and flushed before the server serves; older files
//! left behind are deleted unread, since replaying them would put back values sled holds
//! newer ones of. Why not flush sled per commit: a sled flush costs far more CPU than the
//! sync itself (the `journal` module documentation says why).
//!
//! What survives what (Linux):
//! - With `fdatasync` on (the default) an acknowledged write is on the device and its cache
//!   is flushed: it survives a power cut (on a disk that honours flushes). The journal
//!   file's creation is synced with its directory before any record goes in.
//! - With `fdatasync` off, a journal append is one `write`: it survives a *process* crash
//!   (`kill -9`; the page cache outlives the process), not a power cut.
//! - A journal record damaged on disk is refused at start with the file and the offset
//!   ([`Error::CorruptJournal`]); only a torn last append (a crash during it, so never
//!   acknowledged) is dropped. The `journal` module gives the rule.
//! - A lock-delay is written with the expiry that starts it and restored in full from the
//!   restart, so a crash inside it does not hand the lock on early.
//! - A [`Marker`] file beside sled's keeps a floor for the token counter, so a database
//!   that sled recovered as empty or older (and no journal covers) is refused at start
//!   instead of reissuing tokens. The checkpoint thread raises it, between sled's sync and
//!   the deletion of the journal files that held the tokens.
//!
//! Records are small protobuf messages (prost derives), so the format can grow fields.
//! Keys: `t` the next token; `g` the newest journal generation sled holds; `L` + 16-byte
//! lease id a lease; `K` + name a held lock; `D` + name a lock in its lock-delay (put with
//! the expiry that starts it, deleted when it ends or the lock is granted again, so
//! delays do not pile up).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fenced_types::{FencingToken, LeaseId, LockName};
use prost::Message;
use tokio::sync::watch;

use crate::checkpoint::{self, Checkpoint, Checkpointer};
use crate::error::Error;
use crate::journal::{self, Journal, JournalBatch, JournalOp};
use crate::marker::Marker;
use crate::table::{RestoredDelay, RestoredLease, RestoredLock, Write};

/// The next token to issue (8 bytes, big-endian).
pub(crate) const NEXT_TOKEN_KEY: &[u8] = b"t";
/// The newest journal generation whose writes sled holds (written by every checkpoint).
pub(crate) const CHECKPOINTED_KEY: &[u8] = b"g";
const LEASE_PREFIX: u8 = b'L';
const LOCK_PREFIX: u8 = b'K';
const DELAY_PREFIX: u8 = b'D';

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

/// A lock-delay as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct DelayRecord {
    /// The whole lock-delay in milliseconds (restored in full from the restart).
    #[prost(uint64, tag = "1")]
    delay_ms: u64,
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
    /// Every lock-delay that had not ended.
    pub delays: Vec<RestoredDelay>,
}

/// How far the journal is durable.
#[derive(Debug, Clone, Copy, Default)]
struct Durability {
    /// Every batch up to this sequence number is durable.
    through: u64,
    /// The committer failed: no batch after `through` will ever be durable.
    failed: bool,
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
    pending: Mutex<Vec<Write>>,
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

/// How long opening waits for sled's file lock to be let go (see [`Store::open`]).
const SLED_LOCK_WAIT: Duration = Duration::from_secs(2);

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
        // error that names the directory. And it lets go of its file lock from background
        // threads after the last handle is dropped (sled #1234, #1289), so a store closed a
        // moment ago in this process can still look locked: wait that out, within bounds.
        let deadline = Instant::now() + SLED_LOCK_WAIT;
        let db = loop {
            let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
                .map_err(|panic| {
                open_error(format!("sled panicked: {}", panic_message(&panic)))
            })?;
            match opened {
                Err(sled::Error::Io(e))
                    if e.to_string().starts_with("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                opened => break opened.map_err(|e| open_error(e.to_string()))?,
            }
        };
        let data_file = if fdatasync {
            let path = dir.join("db");
            let file = std::fs::File::open(&path).map_err(|e| {
                open_error(format!("cannot open {} for fdatasync: {e}", path.display()))
            })?;
            Some(Arc::new(file))
        } else {
            None
        };
        let journal_dir = dir.join("journal");
        let newest = replay_journal(&db, data_file.as_deref(), dir, &journal_dir)?;
        let journal = Journal::create(&journal_dir, newest, fdatasync)?;
        let recovered = read_back(&db, dir)?;
        let marker = Marker::check(dir, recovered.next_token)?;
        let checkpointer =
            Checkpointer::start(db, data_file, journal_dir, journal.next_file(), marker)?;
        let (durable, _) = watch::channel(Durability::default());
        let store = Store {
            staged: AtomicU64::new(0),
            durable,
            kick_lock: Mutex::new(()),
            kick: Condvar::new(),
            committer_sleeps: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
            committed: Mutex::new(Committed {
                journal,
                unflushed: Vec::new(),
                first_record: None,
            }),
            checkpointer,
            checkpoint_every,
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
    /// Fails at once if the committer has failed first (see [`Store::fail`]).
    pub async fn wait_durable(&self, seq: u64) -> Result<(), Error> {
        let mut durable = self.durable.subscribe();
        let stopped = |reason: &str| Error::Storage {
            during: "waiting for durability",
            reason: reason.to_string(),
        };
        let now = durable
            .wait_for(|done| done.through >= seq || done.failed)
            .await
            .map_err(|_| stopped("the committer stopped"))?;
        if now.through >= seq {
            Ok(())
        } else {
            Err(stopped("the server is stopping after a storage failure"))
        }
    }

    /// Says that nothing staged and not yet durable ever will be (the committer failed, a
    /// disk died): everyone waiting for such a batch gets an error now, rather than when
    /// the shutdown's drain timeout closes their connection.
    pub fn fail(&self) {
        self.durable.send_modify(|durable| durable.failed = true);
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
        let (writes, target) = {
            let mut pending = self.pending.lock().map_err(|_| Error::Poisoned)?;
            (std::mem::take(&mut *pending), self.staged())
        };
        if target <= self.durable.borrow().through {
            return Ok(target);
        }
        let ops: Vec<JournalOp> = writes.into_iter().map(encode).collect();
        let mut committed = self.committed.lock().map_err(|_| Error::Poisoned)?;
        let batch = JournalBatch { ops };
        committed.journal.append(&batch)?;
        if !batch.ops.is_empty() {
            committed.first_record.get_or_insert_with(Instant::now);
            committed.unflushed.push(batch.ops);
        }
        drop(committed);
        self.durable.send_modify(|durable| durable.through = target);
        Ok(target)
    }

    /// Hands the journal's writes to the checkpoint thread if the interval has passed (or
    /// the file grew large) and starts a new journal file. The committer calls this after
    /// publishing a commit, so no reply waits for it.
    pub fn maybe_checkpoint(&self) -> Result<(), Error> {
        let mut committed = self.committed.lock().map_err(|_| Error::Poisoned)?;
        let due = committed
            .first_record
            .is_some_and(|first| first.elapsed() >= self.checkpoint_every)
            || committed.journal.len() >= CHECKPOINT_BYTES;
        if !committed.unflushed.is_empty() && due {
            self.checkpoint(&mut committed)?;
        }
        Ok(())
    }

    /// Checkpoints what is left and waits until sled holds it, so the next start has no
    /// journal to replay. Called once, after the committer's last commit.
    pub fn close(&self) -> Result<(), Error> {
        {
            let mut committed = self.committed.lock().map_err(|_| Error::Poisoned)?;
            if !committed.unflushed.is_empty() {
                self.checkpoint(&mut committed)?;
            }
        }
        self.checkpointer.close()
    }

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

/// Replays the journal files sled does not hold yet over sled and makes the result
/// durable in sled, then deletes every journal file. Returns the generation the next
/// journal file goes after.
///
/// Files of generations sled records as held (`g`) are skipped: a checkpoint's deletions
/// can be cut short by a crash, and such a file, replayed, would put back values that
/// sled holds newer ones of (a released lock held again, an ended lease back).
///
/// Refuses a sled that is older than the journal: journal files are deleted only once
/// sled holds them, so the oldest file left must directly follow sled's checkpoint. A gap
/// means sled lost checkpointed writes (sled 0.34 can recover a damaged file as empty),
/// and serving would silently drop acknowledged leases. A gap between the files left is
/// refused too: a journal file was lost.
fn replay_journal(
    db: &sled::Db,
    data_file: Option<&std::fs::File>,
    dir: &Path,
    journal_dir: &Path,
) -> Result<u64, Error> {
    let checkpointed = checkpointed_generation(db, dir)?;
    let replay = Journal::read(journal_dir, checkpointed)?;
    if let Some(&oldest) = replay.read.first() {
        if checkpointed.saturating_add(1) < oldest {
            return Err(Error::Open {
                dir: dir.to_path_buf(),
                reason: format!(
                    "sled holds the journal only through generation {checkpointed}, but the \
                     oldest journal file left is generation {oldest}: sled lost checkpointed \
                     writes (a damaged or replaced data file); refusing to serve without them"
                ),
            });
        }
    }
    // Files are made one generation after another and deleted only once sled holds them,
    // so those sled does not hold yet follow each other without a gap.
    if let Some(pair) = replay.read.windows(2).find(|pair| pair[0] + 1 != pair[1]) {
        let missing = pair[0] + 1;
        return Err(Error::Open {
            dir: dir.to_path_buf(),
            reason: format!(
                "journal generation {missing} is missing between generations {} and {}, \
                 which sled does not hold yet: acknowledged writes are lost; refusing to \
                 serve without them",
                pair[0], pair[1]
            ),
        });
    }
    let Some(&newest) = replay.generations.last() else {
        return Ok(checkpointed);
    };
    if let Some(torn) = &replay.torn {
        tracing::warn!(
            file = %torn.file.display(),
            offset = torn.offset,
            bytes = torn.bytes,
            "dropped a torn last journal append (cut short when the process stopped, never \
             acknowledged)"
        );
    }
    if replay.read.len() < replay.generations.len() {
        tracing::info!(
            skipped = replay.generations.len() - replay.read.len(),
            checkpointed,
            "skipped journal files sled already holds"
        );
    }
    // Never lower sled's generation: covered files left behind can be all there is.
    let newest = newest.max(checkpointed);
    let ops: usize = replay.batches.iter().map(|batch| batch.ops.len()).sum();
    let writes = checkpoint::coalesce(replay.batches.into_iter().map(|batch| batch.ops));
    // Exactly a checkpoint of everything replayed, so the old files go once sled holds it.
    checkpoint::into_sled(db, data_file, writes, newest)?;
    journal::remove_through(journal_dir, newest, data_file.is_some())?;
    if ops > 0 {
        tracing::info!(ops, "replayed the journal into sled");
    }
    Ok(newest)
}

/// The newest journal generation sled holds (0 for a new database).
fn checkpointed_generation(db: &sled::Db, dir: &Path) -> Result<u64, Error> {
    let value = db.get(CHECKPOINTED_KEY).map_err(|e| Error::Open {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let Some(value) = value else {
        return Ok(0);
    };
    let bytes: [u8; 8] = value
        .as_ref()
        .try_into()
        .map_err(|_| Error::CorruptRecord {
            dir: dir.to_path_buf(),
            key: "g".to_string(),
            reason: format!("{} bytes, expected 8", value.len()),
        })?;
    Ok(u64::from_be_bytes(bytes))
}

/// One write as a journal operation on sled's default tree.
fn encode(write: Write) -> JournalOp {
    let put = |key: Vec<u8>, value: Vec<u8>| JournalOp {
        key,
        value: Some(value),
    };
    let delete = |key: Vec<u8>| JournalOp { key, value: None };
    match write {
        Write::PutLease { lease, ttl, holder } => {
            let record = LeaseRecord {
                ttl_ms: millis(ttl),
                holder: holder.to_string(),
            };
            put(lease_key(&lease), record.encode_to_vec())
        }
        Write::DeleteLease { lease } => delete(lease_key(&lease)),
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
            put(lock_key(&lock), record.encode_to_vec())
        }
        Write::DeleteLock { lock } => delete(lock_key(&lock)),
        Write::PutLockDelay { lock, delay } => {
            let record = DelayRecord {
                delay_ms: millis(delay),
            };
            put(delay_key(&lock), record.encode_to_vec())
        }
        Write::DeleteLockDelay { lock } => delete(delay_key(&lock)),
        Write::NextToken(token) => put(NEXT_TOKEN_KEY.to_vec(), token.to_be_bytes().to_vec()),
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
        delays: Vec::new(),
    };
    for entry in db.iter() {
        let (key, value) = entry.map_err(|e| Error::Open {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        match key.first() {
            _ if &*key == CHECKPOINTED_KEY => {}
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
                let lock = lock_name(&key[1..]).map_err(|reason| corrupt(&key, reason))?;
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
            Some(&DELAY_PREFIX) => {
                let lock = lock_name(&key[1..]).map_err(|reason| corrupt(&key, reason))?;
                let record = DelayRecord::decode(value.as_ref())
                    .map_err(|e| corrupt(&key, e.to_string()))?;
                recovered.delays.push(RestoredDelay {
                    lock,
                    delay: Duration::from_millis(record.delay_ms),
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

fn delay_key(lock: &LockName) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + lock.as_bytes().len());
    key.push(DELAY_PREFIX);
    key.extend_from_slice(lock.as_bytes());
    key
}

fn lock_name(bytes: &[u8]) -> Result<LockName, String> {
    let name = String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?;
    LockName::new(name).map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const CACHE: u64 = 1024 * 1024;

    fn token(value: u64) -> FencingToken {
        FencingToken::new(value).unwrap()
    }

    fn grant(lease: LeaseId, lock: &str, value: u64) -> Vec<Write> {
        vec![
            Write::PutLease {
                lease,
                ttl: Duration::from_secs(30),
                holder: "h".into(),
            },
            Write::PutLock {
                lock: LockName::new(lock).unwrap(),
                lease,
                token: token(value),
                holder: "h".into(),
                lock_delay: Duration::ZERO,
            },
            Write::NextToken(token(value + 1)),
        ]
    }

    fn journal_records(dir: &Path) -> usize {
        Journal::read(&dir.join("journal"), 0)
            .unwrap()
            .batches
            .len()
    }

    // checks: S2 (after a failure, what is durable is still answered as durable, and what
    // is not is refused at once instead of waiting forever)
    #[tokio::test]
    async fn after_a_failure_waiters_for_undurable_batches_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
        let durable = store.stage(grant(LeaseId::random(), "a", 7)).unwrap();
        store.commit().unwrap();
        let never = store.stage(grant(LeaseId::random(), "b", 8)).unwrap();
        store.fail();
        store.wait_durable(durable).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(10), store.wait_durable(never))
            .await
            .expect("refused at once, not left waiting");
        let error = refused.expect_err("a batch never committed is not durable");
        assert!(error.to_string().contains("storage failure"), "{error}");
    }

    // checks: S1 (the token floor reaches the marker at a checkpoint, not on the commit
    // path, and before the journal file holding the tokens goes)
    #[test]
    fn a_checkpoint_raises_the_marker_before_it_deletes_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let marker_path = dir.path().join(crate::marker::MARKER_FILE);
        let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
        store.stage(grant(LeaseId::random(), "a", 7)).unwrap();
        assert_eq!(store.commit().unwrap(), 1);
        store.maybe_checkpoint().unwrap();
        assert!(
            !marker_path.exists(),
            "the commit path does not write the marker"
        );
        store.close().unwrap();
        let text = std::fs::read_to_string(&marker_path).unwrap();
        assert!(text.contains("next_token_at_least 8"), "{text:?}");
        assert_eq!(journal_records(dir.path()), 0);

        // Checkpoints close together each raise it: no journal file goes before the floor
        // covers its tokens.
        let dir = tempfile::tempdir().unwrap();
        let marker_path = dir.path().join(crate::marker::MARKER_FILE);
        let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_nanos(1)).unwrap();
        for value in [7, 9] {
            store.stage(grant(LeaseId::random(), "a", value)).unwrap();
            store.commit().unwrap();
            store.maybe_checkpoint().unwrap();
        }
        store.close().unwrap();
        let text = std::fs::read_to_string(&marker_path).unwrap();
        assert!(text.contains("next_token_at_least 10"), "{text:?}");

        // If the floor cannot be written, the journal that holds the tokens stays.
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
        std::fs::create_dir(dir.path().join(crate::marker::MARKER_FILE)).unwrap();
        store.stage(grant(LeaseId::random(), "a", 7)).unwrap();
        store.commit().unwrap();
        let Err(error) = store.close() else {
            panic!("closed although the marker cannot be written");
        };
        assert!(error.to_string().contains("marker"), "{error}");
        assert_eq!(journal_records(dir.path()), 1);
    }

    // The checkpoint interval counts from the first record of a journal file, so a burst
    // after an idle spell is not met by a checkpoint (real time, with margins of hundreds
    // of milliseconds around steps that take microseconds).
    #[test]
    fn the_checkpoint_interval_counts_from_the_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let every = Duration::from_millis(300);
        let (store, _) = Store::open(dir.path(), false, CACHE, every).unwrap();
        let rotated = || store.committed.lock().unwrap().journal.is_empty();
        std::thread::sleep(every + Duration::from_millis(100));
        store.stage(grant(LeaseId::random(), "a", 1)).unwrap();
        store.commit().unwrap();
        store.maybe_checkpoint().unwrap();
        assert!(
            !rotated(),
            "checkpointed right after the idle spell's first commit"
        );
        std::thread::sleep(every + Duration::from_millis(100));
        store.maybe_checkpoint().unwrap();
        assert!(
            rotated(),
            "no checkpoint an interval after the first record"
        );
        store.close().unwrap();
    }

    // A store closed a moment ago reopens at once (sled lets go of its lock late), while a
    // directory another live store holds is still refused, after the wait.
    #[test]
    fn reopening_waits_out_a_closed_store_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(dir.path(), false, CACHE, Duration::from_secs(3600));
        for _ in 0..5 {
            let (store, _) = open().unwrap();
            store.close().unwrap();
        }
        let (live, _) = open().unwrap();
        let started = Instant::now();
        let Err(error) = open() else {
            panic!("opened a directory another store holds");
        };
        assert!(
            error.to_string().contains("could not acquire lock"),
            "{error}"
        );
        assert!(
            started.elapsed() >= SLED_LOCK_WAIT,
            "gave up before the wait"
        );
        live.close().unwrap();
    }

    // checks: S1, S2 (acknowledged writes that only the journal holds come back)
    #[test]
    fn a_restart_replays_what_only_the_journal_holds() {
        let dir = tempfile::tempdir().unwrap();
        let lease = LeaseId::random();
        {
            let (store, recovered) =
                Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
            assert_eq!(recovered.next_token, FencingToken::FIRST);
            store.stage(grant(lease, "a", 7)).unwrap();
            assert_eq!(store.commit().unwrap(), 1);
            // The crash: the committed record never reaches sled.
            store.checkpointer.close().unwrap();
        }
        assert_eq!(journal_records(dir.path()), 1);
        let (_store, recovered) =
            Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
        assert_eq!(recovered.next_token, token(8));
        assert_eq!(recovered.leases.len(), 1);
        assert_eq!(recovered.leases[0].lease, lease);
        assert_eq!(recovered.locks.len(), 1);
        assert_eq!(recovered.locks[0].token, token(7));
        // Replayed into sled and flushed, so the old files are gone.
        assert_eq!(journal_records(dir.path()), 0);
    }

    // checks: S2, S3 (a lock-delay is on disk with the expiry that started it, whether the
    // journal or sled holds it, and gone once it ended: a restart restores exactly the
    // delays that run)
    #[test]
    fn a_lock_delay_is_restored_after_a_crash_and_forgotten_once_it_ended() {
        use crate::clock::Timestamp;
        use crate::table::{Acquire, Command, LeaseChoice, Limits, LockTable, Refusal, Reply};

        let limits = || Limits::from(&crate::Config::default());
        let at = Timestamp::from_millis;
        let acquire = |lock_delay_ms: u64| {
            Command::Acquire(Acquire {
                lock: LockName::new("x").unwrap(),
                holder: "h".into(),
                ttl: Duration::from_millis(100),
                lock_delay: Duration::from_millis(lock_delay_ms),
                lease: LeaseChoice::New(LeaseId::random()),
                wait: false,
            })
        };
        let restore = |recovered: Recovered, now| {
            LockTable::restore(
                limits(),
                recovered.next_token,
                recovered.leases,
                recovered.locks,
                recovered.delays,
                now,
            )
            .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();

        // A holder with a 5 s lock-delay expires; the crash comes inside the delay, with the
        // expiry in the journal only.
        {
            let (store, recovered) = open();
            let mut table = restore(recovered, at(0));
            for (now, command) in [(0, acquire(5_000)), (100, Command::Tick)] {
                store.stage(table.apply(at(now), command).writes).unwrap();
            }
            store.commit().unwrap();
            store.checkpointer.close().unwrap();
        }
        let (store, recovered) = open();
        assert_eq!(recovered.delays.len(), 1, "{recovered:?}");
        // Restored 1 h after the crash: the delay runs in full from here.
        let mut table = restore(recovered, at(3_600_000));
        let refused = table.apply(at(3_604_999), acquire(0));
        assert!(
            matches!(refused.reply, Err(Refusal::LockDelay { .. })),
            "{:?}",
            refused.reply
        );
        let grant = table.apply(at(3_605_000), acquire(0));
        assert!(matches!(grant.reply, Ok(Reply::Granted(_))));
        store.stage(grant.writes).unwrap();
        store.commit().unwrap();
        store.close().unwrap();
        drop(store);

        // The ended delay left nothing behind (sled holds it all now).
        let (_store, recovered) = open();
        assert!(recovered.delays.is_empty(), "{recovered:?}");
        assert_eq!(recovered.locks.len(), 1);
    }

    // checks: S1, S7 (a journal file sled already holds, left behind, is not replayed over
    // the newer state sled holds: a released lock stays released)
    #[test]
    fn a_journal_file_sled_holds_is_not_replayed_over_newer_state() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("journal").join(format!("{:020}.log", 1));
        let lease = LeaseId::random();
        {
            let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_nanos(1)).unwrap();
            store.stage(grant(lease, "a", 1)).unwrap();
            store.commit().unwrap();
            let grant_file = std::fs::read(&first).unwrap();
            store.maybe_checkpoint().unwrap();
            store
                .stage(vec![
                    Write::DeleteLock {
                        lock: LockName::new("a").unwrap(),
                    },
                    Write::DeleteLease { lease },
                ])
                .unwrap();
            store.commit().unwrap();
            // sled holds generations 1 (the grant) and 2 (the release).
            store.close().unwrap();
            // Generation 1 comes back, as after a power cut that undid its unsynced
            // deletion but not the later one of generation 2.
            std::fs::write(&first, grant_file).unwrap();
        }
        let (_store, recovered) =
            Store::open(dir.path(), true, CACHE, Duration::from_secs(3600)).unwrap();
        assert!(
            recovered.locks.is_empty() && recovered.leases.is_empty(),
            "a released lock came back: {recovered:?}"
        );
        assert_eq!(recovered.next_token, token(2));
        assert!(!first.exists(), "the covered file is deleted");
    }

    // checks: S1, S2 (a journal file missing between two that sled does not hold yet is a
    // loss of acknowledged writes: the start is refused)
    #[test]
    fn a_journal_file_missing_between_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) =
                Store::open(dir.path(), false, CACHE, Duration::from_secs(3600)).unwrap();
            let mut journal = store.committed.lock().unwrap();
            for (value, lock) in [(1, "a"), (2, "b"), (3, "c")] {
                let ops = grant(LeaseId::random(), lock, value)
                    .into_iter()
                    .map(encode)
                    .collect();
                journal.journal.append(&JournalBatch { ops }).unwrap();
                journal.journal.rotate().unwrap();
            }
            drop(journal);
            store.checkpointer.close().unwrap();
        }
        let second = dir.path().join("journal").join(format!("{:020}.log", 2));
        std::fs::remove_file(second).unwrap();
        let error = Store::open(dir.path(), false, CACHE, Duration::from_secs(1))
            .err()
            .expect("a journal with a file missing must not open");
        assert!(error.to_string().contains("generation 2"), "{error}");
    }

    // checks: S2, S7 (a checkpoint moves writes into sled in order; a delete stays deleted)
    #[test]
    fn checkpoints_move_the_journal_into_sled_and_delete_it() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (LeaseId::random(), LeaseId::random());
        {
            let (store, _) = Store::open(dir.path(), true, CACHE, Duration::from_nanos(1)).unwrap();
            store.stage(grant(first, "a", 1)).unwrap();
            store.commit().unwrap();
            store.maybe_checkpoint().unwrap();
            store
                .stage(vec![
                    Write::DeleteLock {
                        lock: LockName::new("a").unwrap(),
                    },
                    Write::DeleteLease { lease: first },
                ])
                .unwrap();
            store.stage(grant(second, "b", 2)).unwrap();
            assert_eq!(store.commit().unwrap(), 3);
            store.close().unwrap();
        }
        assert_eq!(journal_records(dir.path()), 0);
        let (_store, recovered) =
            Store::open(dir.path(), true, CACHE, Duration::from_secs(1)).unwrap();
        assert_eq!(recovered.next_token, token(3));
        let leases: Vec<LeaseId> = recovered.leases.iter().map(|l| l.lease).collect();
        assert_eq!(leases, [second]);
        let locks: Vec<&str> = recovered.locks.iter().map(|l| l.lock.as_str()).collect();
        assert_eq!(locks, ["b"]);
    }

    // checks: S2 (a sled that lost checkpointed writes is refused, even with no marker)
    #[test]
    fn a_sled_older_than_the_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) =
                Store::open(dir.path(), false, CACHE, Duration::from_nanos(1)).unwrap();
            for (value, lock) in [(1, "a"), (2, "b")] {
                store.stage(grant(LeaseId::random(), lock, value)).unwrap();
                store.commit().unwrap();
                store.maybe_checkpoint().unwrap();
            }
            // Left in the journal only: file 3.
            store.stage(grant(LeaseId::random(), "c", 3)).unwrap();
            store.commit().unwrap();
            store.checkpointer.close().unwrap();
        }
        // sled's files (and the marker) vanish; the journal stays.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::remove_file(path).unwrap();
            } else if path.file_name().is_some_and(|name| name != "journal") {
                std::fs::remove_dir_all(path).unwrap();
            }
        }
        let error = Store::open(dir.path(), false, CACHE, Duration::from_secs(1))
            .err()
            .expect("a sled missing checkpointed writes must not open");
        assert!(
            error.to_string().contains("sled lost checkpointed writes"),
            "{error}"
        );
    }

    // checks: S2 (a checkpoint larger than one sled batch arrives whole, in chunks)
    #[test]
    fn a_large_checkpoint_goes_into_sled_in_chunks_and_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let leases: Vec<LeaseId> = (0..2_500).map(|_| LeaseId::random()).collect();
        {
            let (store, _) =
                Store::open(dir.path(), false, CACHE, Duration::from_secs(3600)).unwrap();
            for (i, lease) in leases.iter().enumerate() {
                store
                    .stage(grant(*lease, &format!("lock/{i}"), i as u64 + 1))
                    .unwrap();
            }
            store.commit().unwrap();
            store.close().unwrap();
        }
        assert_eq!(journal_records(dir.path()), 0);
        let (_store, recovered) =
            Store::open(dir.path(), false, CACHE, Duration::from_secs(3600)).unwrap();
        assert_eq!(recovered.leases.len(), leases.len());
        assert_eq!(recovered.locks.len(), leases.len());
        assert_eq!(recovered.next_token, token(2_501));
    }
}
