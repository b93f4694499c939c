//! [`SledBackend`]: marks and data in one sled database, changed in one transaction.

use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fenced_types::{FencingToken, LockName};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;

use super::combiner::{Combiner, Outcome, Request};
use super::encoding::{data_key, decode_mark, decode_value, encode_value};
use super::group_commit::GroupCommit;
use crate::backend::{Backend, Verdict};
use crate::error::StorageError;
use crate::op::{Accepted, Stored, WriteOp};
use crate::rule::{Admission, Decision};

/// A durable backend on sled 0.34: the mark and the data of a write change in the same
/// transaction (so a crash can never keep one without the other; concurrent writes share
/// one transaction, see `combiner`), and a write is acknowledged only after a flush +
/// fdatasync shared with concurrent writers ([`GroupCommit`]).
///
/// A failed flush or fdatasync stops it: from then on every call fails with
/// [`StorageError::Stopped`] naming that failure, until the store is reopened
/// ([`SledBackend::stopped`] says whether and why).
#[derive(Debug, Clone)]
pub struct SledBackend {
    /// The database (kept for flushing on shutdown).
    db: sled::Db,
    /// resource -> mark.
    marks: sled::Tree,
    /// (resource, key) -> (token, value).
    data: sled::Tree,
    /// The shared flush.
    group: GroupCommit,
    /// Batches concurrent writes into one transaction.
    combiner: Arc<Combiner>,
    /// Where the database lives.
    dir: PathBuf,
}

/// How long [`SledBackend::open`] waits for sled's file lock, and how often it looks.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_RETRY: Duration = Duration::from_millis(10);

impl SledBackend {
    /// Opens (or creates) the store in `dir`.
    ///
    /// sled 0.34 can panic on open after an unclean stop (sled #1533, #1387, #1410); that
    /// panic is caught here and returned as a [`StorageError`] naming the directory, so a
    /// service can report it instead of crashing with a backtrace.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::new("creating the data directory", e))?;
        let config = sled::Config::new().path(&dir);
        let open_once = || {
            catch_unwind(AssertUnwindSafe(|| config.open())).map_err(|panic| {
                let reason = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_string());
                StorageError::new(
                    "opening sled",
                    format!("sled panicked opening {}: {reason}", dir.display()),
                )
            })
        };
        // sled 0.34 releases its file lock from its background threads, after the last
        // handle's `Drop` has returned (sled #1234, #1289), so reopening a store this process
        // has just closed can find the lock still held for a moment. Wait that out; a lock
        // another live handle or process holds still fails, after the wait.
        let deadline = Instant::now() + LOCK_WAIT;
        let opened = loop {
            match open_once()? {
                Err(sled::Error::Io(e))
                    if e.to_string().starts_with("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(LOCK_RETRY);
                }
                opened => break opened,
            }
        };
        let db = opened
            .map_err(|e| StorageError::new("opening sled", format!("{}: {e}", dir.display())))?;
        let marks = db
            .open_tree("marks")
            .map_err(|e| StorageError::new("opening the marks tree", e))?;
        let data = db
            .open_tree("data")
            .map_err(|e| StorageError::new("opening the data tree", e))?;
        // The data file may have just been created: make its directory entry durable too.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::new("fsync of the data directory", e))?;
        let group = GroupCommit::new(db.clone(), &dir)?;
        Ok(SledBackend {
            db,
            marks,
            data,
            group,
            combiner: Arc::new(Combiner::default()),
            dir,
        })
    }

    /// Where the store lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the store stopped (a [`StorageError::Stopped`] naming the first failed sync), or
    /// `None` while it works. A stopped store acknowledges nothing until it is reopened.
    pub fn stopped(&self) -> Option<StorageError> {
        self.group.stopped()
    }

    /// The group commit this store syncs with (shared with anything else writing to the
    /// same database, e.g. a benchmark's baseline).
    pub fn group_commit(&self) -> &GroupCommit {
        &self.group
    }

    /// Applies a batch of gated writes in one transaction over both trees, in order: sled
    /// runs it under its write lock and retries it whole on conflict, so for each write
    /// read-mark, decide, write-data, write-mark is one atomic step, and each write sees the
    /// ones before it. A write whose stored mark cannot be read fails alone.
    fn apply_batch(&self, batch: &[Request]) -> Vec<Outcome> {
        let applied = (&self.marks, &self.data).transaction(|(marks, data)| {
            let mut outcomes = Vec::with_capacity(batch.len());
            for request in batch {
                outcomes.push(apply_one(marks, data, request)?);
            }
            // Never aborted: a write that cannot be judged fails alone, inside `outcomes`.
            Ok::<_, ConflictableTransactionError<Infallible>>(outcomes)
        });
        match applied {
            Ok(outcomes) => outcomes,
            Err(TransactionError::Abort(never)) => match never {},
            // sled failed to write its log (or already had, in its background flush, and
            // refuses everything since): what it holds may never reach the disk, so the
            // store stops as after a failed sync.
            Err(TransactionError::Storage(error)) => {
                let error = self
                    .group
                    .stop(StorageError::new("committing a write", error));
                batch.iter().map(|_| Err(error.clone())).collect()
            }
        }
    }
}

/// One gated write inside a batch's transaction: its outcome, or a sled error that fails
/// (or, on conflict, retries) the whole transaction.
fn apply_one(
    marks: &TransactionalTree,
    data: &TransactionalTree,
    request: &Request,
) -> Result<Outcome, UnabortableTransactionError> {
    let name = request.resource.as_bytes();
    let mark = match marks
        .get(name)?
        .map(|bytes| decode_mark(&bytes))
        .transpose()
    {
        Ok(mark) => mark,
        Err(error) => return Ok(Err(error)),
    };
    let new_mark = match request.admission.decide(mark, request.token) {
        Decision::Refuse { current } => return Ok(Ok((Verdict::Stale { current }, false))),
        Decision::Admit { new_mark } => new_mark,
    };
    let mut wrote = false;
    if mark != Some(new_mark) {
        marks.insert(name, &new_mark.to_be_bytes())?;
        wrote = true;
    }
    let existed = match &request.op {
        Some(op @ WriteOp::Put { value, .. }) => {
            wrote = true;
            data.insert(
                data_key(&request.resource, op.key()),
                encode_value(request.token, value),
            )?
            .is_some()
        }
        Some(op @ WriteOp::Delete { .. }) => {
            let old = data.remove(data_key(&request.resource, op.key()))?;
            wrote |= old.is_some();
            old.is_some()
        }
        None => false,
    };
    Ok(Ok((
        Verdict::Accepted(Accepted {
            mark: new_mark,
            existed,
        }),
        wrote,
    )))
}

impl Backend for SledBackend {
    fn commit(
        &self,
        resource: &LockName,
        token: FencingToken,
        op: Option<&WriteOp>,
        admission: Admission,
    ) -> Result<Verdict, StorageError> {
        // After a failed sync nothing more is written: it could never be acknowledged.
        self.group.check()?;
        let in_flight = self.group.begin();
        let request = Request {
            resource: resource.clone(),
            token,
            op: op.cloned(),
            admission,
        };
        let (verdict, wrote) = self
            .combiner
            .submit(request, &|batch| self.apply_batch(batch))?;
        if wrote {
            in_flight.wait_durable()?;
        } else {
            in_flight.settle()?;
        }
        Ok(verdict)
    }

    fn read(&self, resource: &LockName, key: &[u8]) -> Result<Option<Stored>, StorageError> {
        let stored = self
            .data
            .get(data_key(resource, key))
            .map_err(|e| StorageError::new("reading a value", e))?
            .map(|bytes| decode_value(&bytes))
            .transpose()?;
        self.group.settle()?;
        Ok(stored)
    }

    fn mark(&self, resource: &LockName) -> Result<Option<FencingToken>, StorageError> {
        let mark = self
            .marks
            .get(resource.as_bytes())
            .map_err(|e| StorageError::new("reading a mark", e))?
            .map(|bytes| decode_mark(&bytes))
            .transpose()?;
        self.group.settle()?;
        Ok(mark)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.group.commit()?;
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| self.group.stop(StorageError::new("flushing sled", e)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    // A store closed a moment ago reopens at once (sled lets go of its lock late), while a
    // store another handle holds is still refused, after the wait, with sled's reason.
    #[test]
    fn reopening_waits_out_a_closed_handle_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..10 {
            drop(SledBackend::open(dir.path()).unwrap());
        }
        let live = SledBackend::open(dir.path()).unwrap();
        let started = Instant::now();
        let Err(error) = SledBackend::open(dir.path()) else {
            panic!("opened a store another handle holds");
        };
        assert!(
            error.to_string().contains("could not acquire lock"),
            "{error}"
        );
        assert!(started.elapsed() >= LOCK_WAIT, "gave up before the wait");
        drop(live);
    }

    fn put(resource: &str, token: u64, value: &str) -> Request {
        Request {
            resource: LockName::new(resource).unwrap(),
            token: FencingToken::new(token).unwrap(),
            op: Some(WriteOp::Put {
                key: b"k".to_vec(),
                value: value.as_bytes().to_vec(),
            }),
            admission: Admission::Fenced,
        }
    }

    // checks: S5 (within one batched transaction, a write sees the marks the writes before
    // it raised: the batch means the same as the writes one at a time, in order)
    #[test]
    fn writes_in_one_batch_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(dir.path()).unwrap();
        let outcomes = backend.apply_batch(&[
            put("r", 5, "five"),
            put("r", 3, "zombie"),
            put("other", 1, "one"),
            put("r", 5, "five again"),
        ]);
        let verdicts: Vec<Verdict> = outcomes.into_iter().map(|o| o.unwrap().0).collect();
        assert!(matches!(verdicts[0], Verdict::Accepted(_)), "{verdicts:?}");
        assert_eq!(
            verdicts[1],
            Verdict::Stale {
                current: FencingToken::new(5).unwrap()
            },
            "the older token is refused by the mark raised earlier in the same batch"
        );
        assert!(matches!(verdicts[2], Verdict::Accepted(_)), "{verdicts:?}");
        assert!(matches!(verdicts[3], Verdict::Accepted(_)), "{verdicts:?}");
        let name = LockName::new("r").unwrap();
        let stored = backend.read(&name, b"k").unwrap().unwrap();
        assert_eq!(stored.value, b"five again".to_vec());
        assert_eq!(
            backend.mark(&name).unwrap(),
            Some(FencingToken::new(5).unwrap())
        );
    }
}
