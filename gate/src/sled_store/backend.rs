//! [`SledBackend`]: marks and data in one sled database, changed in one transaction.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use fenced_types::{FencingToken, LockName};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::encoding::{data_key, decode_mark, decode_value, encode_value};
use super::group_commit::GroupCommit;
use crate::backend::{Backend, Verdict};
use crate::error::StorageError;
use crate::op::{Accepted, Stored, WriteOp};
use crate::rule::{Admission, Decision};

/// A durable backend on sled 0.34: the mark and the data of a write change in the same
/// transaction (so a crash can never keep one without the other), and a write is
/// acknowledged only after a flush + fdatasync shared with concurrent writers
/// ([`GroupCommit`]).
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
    /// Where the database lives.
    dir: PathBuf,
}

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
        let opened = catch_unwind(AssertUnwindSafe(|| config.open())).map_err(|panic| {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            StorageError::new(
                "opening sled",
                format!("sled panicked opening {}: {reason}", dir.display()),
            )
        })?;
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
            dir,
        })
    }

    /// Where the store lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The group commit this store syncs with (shared with anything else writing to the
    /// same database, e.g. a benchmark's baseline).
    pub fn group_commit(&self) -> &GroupCommit {
        &self.group
    }
}

impl Backend for SledBackend {
    fn commit(
        &self,
        resource: &LockName,
        token: FencingToken,
        op: Option<&WriteOp>,
        admission: Admission,
    ) -> Result<Verdict, StorageError> {
        let in_flight = self.group.begin();
        let name = resource.as_bytes();
        let data_key = op.map(|op| data_key(resource, op.key()));
        // One transaction over both trees: sled runs it under its write lock and retries on
        // conflict, so read-mark, decide, write-data, write-mark is one atomic step. The
        // closure returns (verdict, whether anything was written).
        let outcome = (&self.marks, &self.data).transaction(|(marks, data)| {
            let mark = marks
                .get(name)?
                .map(|bytes| decode_mark(&bytes))
                .transpose()
                .map_err(ConflictableTransactionError::Abort)?;
            let new_mark = match admission.decide(mark, token) {
                Decision::Refuse { current } => return Ok((Verdict::Stale { current }, false)),
                Decision::Admit { new_mark } => new_mark,
            };
            let mut wrote = false;
            if mark != Some(new_mark) {
                marks.insert(name, &new_mark.to_be_bytes())?;
                wrote = true;
            }
            let existed = match (op, &data_key) {
                (Some(WriteOp::Put { value, .. }), Some(key)) => {
                    wrote = true;
                    data.insert(key.as_slice(), encode_value(token, value))?
                        .is_some()
                }
                (Some(WriteOp::Delete { .. }), Some(key)) => {
                    let old = data.remove(key.as_slice())?;
                    wrote |= old.is_some();
                    old.is_some()
                }
                _ => false,
            };
            Ok((
                Verdict::Accepted(Accepted {
                    mark: new_mark,
                    existed,
                }),
                wrote,
            ))
        });
        let (verdict, wrote) = outcome.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StorageError::new("committing a write", e),
        })?;
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
            .map_err(|e| StorageError::new("flushing sled", e))
    }
}
