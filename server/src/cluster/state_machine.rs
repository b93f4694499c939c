//! [`StateMachine`]: the replicated state, openraft's `RaftStateMachine`, kept as sled's
//! image of the lock table's records (the same keys and values as [`crate::record`]), its
//! [`SnapshotBuilder`], and [`Image`], which reads the records while openraft owns it.
//!
//! A sled database in its own directory (`<data dir>/raft-sm/`): the default tree holds the
//! records, exactly as the single node's sled does, so a new leader rebuilds its lock table
//! from it the way recovery does after a restart ([`StateMachine::read_back`]); the tree
//! [`META_TREE`] holds the last applied log id, the last membership and the current
//! snapshot.
//!
//! Applying a run of entries writes their commit batches' puts and deletes in log order,
//! and the last applied log id and membership, in one sled transaction over both trees
//! (atomic: a crash leaves all of a run or none of it), then flushes sled and, with
//! `fdatasync`, syncs sled's data file (sled's flush alone ends in `sync_file_range`, which
//! does not survive a power cut) before `apply` returns.
//!
//! Why apply is durable before it returns: openraft lets a state machine be durable either
//! at apply or through persistent snapshots, and it purges log entries up to the last
//! snapshot, which it builds from applied state. A state machine that lost applied entries
//! in a crash after the log that held them was purged would have lost them for good.
//! Durable apply makes the state machine the snapshot, so a snapshot is only ever a copy
//! of what is already on disk. The cost is one flush (and sync) per `apply` call, which
//! openraft makes for every run of newly committed entries, not per entry.
//!
//! Applies, installs and snapshot builds run on tokio's blocking pool (a flush and a sync
//! hold a blocking thread, not a runtime worker).
//!
//! Replicas that apply the same entries hold the same records: apply reads nothing but the
//! entries and the image (no clock, no table), and sled's batch applies puts and deletes in
//! order. A batch from a leader's term that has ended is skipped, by a rule on the log
//! alone ([`crate::cluster::epoch`]).
//!
//! The events an entry carries (the lock table's, with their revisions: key `v`) are not
//! stored: once the entry is applied and durable, they are published to this member's
//! [`EventLog`], so every member can serve `Watch`, each event with the same revision
//! everywhere. The log starts after the image's last revision (record `r`) when the
//! member opens, with the events of the applied entries the raft log still holds
//! recalled ([`StateMachine::recall_events`]), and again after an installed snapshot's
//! (the events it skipped are not known here: a watcher asking for them is told to list
//! again).
//!
//! A token floor [`Marker`] beside sled's files (as the single node keeps one) catches an
//! image that sled silently recovered as empty or older: the member refuses to open rather
//! than rejoin with a counter behind the tokens it applied. Apply raises it after the
//! flush and sync that made the tokens durable, at most once a second (each raise is two
//! syncs); installing a snapshot raises it at once.
//!
//! A snapshot is a [`SnapshotImage`] (prost): every record, and the snapshot's meta (last
//! applied, membership) as JSON. Installing one replaces the image atomically: in one
//! transaction, every key not in the snapshot is deleted, every record of the snapshot
//! put, and the last applied log id and membership set from the snapshot's meta.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use fenced_types::FencingToken;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership};
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::cluster::epoch::{self, EXPECT_EPOCH_KEY};
use crate::cluster::error::RaftStoreError;
use crate::cluster::log_store::LogStore;
use crate::cluster::recall::{self, RECALLED_ENTRIES};
use crate::cluster::types::{
    Applied, ClusterNode, CommitBatch, Entry, LogId, NodeId, StorageError, TypeConfig,
};
use crate::event_log::{self, EventLog, RevisedEvent};
use crate::journal::JournalOp;
use crate::marker::Marker;
use crate::record::{
    decode_event, decode_last_revision, EPOCH_KEY, EVENT_KEY, LAST_REVISION_KEY, NEXT_TOKEN_KEY,
};
use crate::recovery::{open_sled, Recovered};

/// The sled tree of the state machine's own bookkeeping (not lock records).
pub const META_TREE: &[u8] = b"raft-meta";
/// The last applied log id (JSON).
const APPLIED_KEY: &[u8] = b"applied";
/// The last applied membership (JSON).
const MEMBERSHIP_KEY: &[u8] = b"membership";
/// The current snapshot's meta (JSON).
const SNAPSHOT_META_KEY: &[u8] = b"snapshot-meta";
/// The current snapshot's data (a [`SnapshotImage`]).
const SNAPSHOT_DATA_KEY: &[u8] = b"snapshot-data";

/// A snapshot's data: the whole image.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotImage {
    /// The snapshot's meta (JSON), so the data describes itself.
    #[prost(bytes = "vec", tag = "1")]
    pub meta: Vec<u8>,
    /// Every record, as puts.
    #[prost(message, repeated, tag = "2")]
    pub records: Vec<JournalOp>,
}

/// One record of the image: its key and its value.
pub type ImageRecord = (Vec<u8>, Vec<u8>);

/// A snapshot's meta in a fenced cluster.
pub type Meta = SnapshotMeta<NodeId, ClusterNode>;

/// What the state machine and its snapshot builders share.
struct Shared {
    /// The state machine's directory.
    dir: PathBuf,
    /// The database; its default tree holds the records.
    db: sled::Db,
    /// [`META_TREE`].
    meta: sled::Tree,
    /// sled's data file, synced after each flush (`None`: no `fdatasync`).
    data_file: Option<std::fs::File>,
    /// Held while applying, installing or reading a snapshot's image, so a snapshot sees
    /// the records and the last applied log id of one moment.
    image: Mutex<()>,
    /// Where applied events are published.
    events: Arc<EventLog>,
    /// The token floor beside sled's files.
    marker: Marker,
    /// When apply last raised the marker (it does so at most every [`MARKER_EVERY`]).
    marker_raised: Mutex<Option<std::time::Instant>>,
}

/// How often apply raises the token floor marker at most.
const MARKER_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The replicated state machine. See the module documentation.
pub struct StateMachine {
    /// Shared with the snapshot builders.
    shared: Arc<Shared>,
}

/// Reads the state machine's image (the records) while openraft owns the state machine:
/// a running node's view of what it applied. Holds the database open: drop it before
/// the state machine is opened again.
#[derive(Clone)]
pub struct Image {
    /// Shared with the state machine.
    shared: Arc<Shared>,
}

impl Image {
    /// Reads the records back as the lock table's restored state, refusing anything that
    /// does not decode: what a new leader rebuilds its table from.
    pub fn read_back(&self) -> Result<Recovered, crate::Error> {
        let _image = self
            .shared
            .lock_image()
            .map_err(|_| crate::Error::Poisoned)?;
        crate::record::read_back(&self.shared.db, &self.shared.dir)
    }

    /// Every record, in key order (for comparing replicas), as of one moment between
    /// applies.
    pub fn records(&self) -> Result<Vec<ImageRecord>, RaftStoreError> {
        let _image = self.shared.lock_image()?;
        self.shared.records()
    }
}

/// Builds a snapshot of the state machine (openraft runs it beside the applies).
pub struct SnapshotBuilder {
    /// Shared with the state machine.
    shared: Arc<Shared>,
}

impl StateMachine {
    /// Opens (or creates) the state machine in `dir`.
    pub fn open(dir: &Path, fdatasync: bool) -> Result<StateMachine, RaftStoreError> {
        std::fs::create_dir_all(dir).map_err(|e| RaftStoreError::io("creating", dir, e))?;
        let config = sled::Config::new().path(dir);
        let db = open_sled(&config, dir).map_err(|source| RaftStoreError::OpenSled {
            source: Box::new(source),
        })?;
        let meta = db
            .open_tree(META_TREE)
            .map_err(|source| RaftStoreError::Sled {
                dir: dir.to_path_buf(),
                doing: "opening the meta tree",
                source,
            })?;
        let data_file = if fdatasync {
            let path = dir.join("db");
            Some(
                std::fs::File::open(&path)
                    .map_err(|e| RaftStoreError::io("opening for fdatasync", &path, e))?,
            )
        } else {
            None
        };
        let last_revision = read_last_revision(&db, dir)?;
        let next_token = db
            .get(NEXT_TOKEN_KEY)
            .map_err(|source| RaftStoreError::Sled {
                dir: dir.to_path_buf(),
                doing: "reading the next token",
                source,
            })?
            .as_deref()
            .and_then(token_value)
            .and_then(|token| FencingToken::new(token).ok())
            .unwrap_or(FencingToken::FIRST);
        let marker = Marker::check(dir, next_token).map_err(|source| RaftStoreError::Marker {
            source: Box::new(source),
        })?;
        Ok(StateMachine {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                db,
                meta,
                data_file,
                image: Mutex::new(()),
                events: EventLog::new(event_log::DEFAULT_CAPACITY, last_revision),
                marker,
                marker_raised: Mutex::new(None),
            }),
        })
    }

    /// Recalls into this member's event log the events of the applied entries that `log`
    /// still holds (at most the last [`RECALLED_ENTRIES`]), so watchers can resume from
    /// before this start ([`crate::cluster::recall`]). Returns how many events it keeps.
    /// Call it once, before anything is applied.
    pub fn recall_events(&self, log: &LogStore) -> Result<usize, RaftStoreError> {
        let (applied, _) = self.shared.applied_state()?;
        let Some(applied) = applied else {
            return Ok(0);
        };
        let entries = log.entries_ending_at(applied.index, RECALLED_ENTRIES)?;
        let epoch = self
            .shared
            .db
            .get(EPOCH_KEY)
            .map_err(|source| self.shared.sled_error("reading the epoch", source))?;
        let events = recall::applied_events(&entries, epoch.as_deref()).map_err(|error| {
            RaftStoreError::CorruptStateMachine {
                dir: self.shared.dir.clone(),
                what: "an event in a log entry",
                problem: error.to_string(),
            }
        })?;
        Ok(self.shared.events.recall(events))
    }

    /// This member's events, published as entries are applied.
    pub fn event_log(&self) -> Arc<EventLog> {
        self.shared.events.clone()
    }

    /// Reads the records back as the lock table's restored state, refusing anything that
    /// does not decode: what a new leader rebuilds its table from.
    pub fn read_back(&self) -> Result<Recovered, crate::Error> {
        self.image().read_back()
    }

    /// Every record, in key order (for comparing replicas).
    pub fn records(&self) -> Result<Vec<ImageRecord>, RaftStoreError> {
        self.image().records()
    }

    /// A handle that reads the image while openraft owns the state machine.
    pub fn image(&self) -> Image {
        Image {
            shared: self.shared.clone(),
        }
    }

    /// Applies `entries` durably; see the module documentation.
    fn apply_entries(shared: &Shared, entries: Vec<Entry>) -> Result<Vec<Applied>, RaftStoreError> {
        let mut writes = sled::Batch::default();
        let mut applied = None;
        let mut membership = None;
        let mut replies = Vec::with_capacity(entries.len());
        let mut events: Vec<RevisedEvent> = Vec::new();
        let mut next_token = None;
        // The image's epoch as of the entry being applied (see `crate::cluster::epoch`).
        let mut current_epoch = shared
            .db
            .get(EPOCH_KEY)
            .map_err(|source| shared.sled_error("reading the epoch", source))?
            .map(|epoch| epoch.to_vec());
        for entry in entries {
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(CommitBatch(batch)) => {
                    if !epoch::admits(&batch, current_epoch.as_deref()) {
                        tracing::warn!(log_id = %entry.log_id, "skipped a commit batch of a term that had ended");
                    } else {
                        for op in batch.ops {
                            if op.key == EXPECT_EPOCH_KEY {
                                continue;
                            }
                            if op.key == EVENT_KEY {
                                events.push(shared.event(op.value.as_deref())?);
                                continue;
                            }
                            if op.key == EPOCH_KEY {
                                current_epoch.clone_from(&op.value);
                            }
                            if op.key == NEXT_TOKEN_KEY {
                                next_token = op.value.as_deref().and_then(token_value);
                            }
                            match op.value {
                                Some(value) => writes.insert(op.key, value),
                                None => writes.remove(op.key),
                            }
                        }
                    }
                }
                EntryPayload::Membership(config) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), config));
                }
            }
            applied = Some(entry.log_id);
            replies.push(Applied);
        }
        let Some(applied) = applied else {
            return Ok(replies);
        };
        let applied = shared.to_json("last applied log id", &applied)?;
        let membership = membership
            .map(|membership| shared.to_json("membership", &membership))
            .transpose()?;
        let _image = shared.lock_image()?;
        let records: &sled::Tree = &shared.db;
        (records, &shared.meta)
            .transaction(|(records, meta)| {
                records.apply_batch(&writes)?;
                meta.insert(APPLIED_KEY, applied.as_slice())?;
                if let Some(membership) = &membership {
                    meta.insert(MEMBERSHIP_KEY, membership.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|source| shared.transaction_error("applying entries", source))?;
        shared.flush()?;
        if let Some(next_token) = next_token {
            shared.raise_marker(next_token, false)?;
        }
        shared.events.publish(events);
        Ok(replies)
    }

    /// Replaces the image with `snapshot`'s; see the module documentation.
    fn install(shared: &Shared, meta: &Meta, data: Vec<u8>) -> Result<(), RaftStoreError> {
        let image = SnapshotImage::decode(data.as_slice()).map_err(|error| {
            RaftStoreError::BadSnapshot {
                problem: error.to_string(),
            }
        })?;
        let applied = meta
            .last_log_id
            .map(|log_id| shared.to_json("last applied log id", &log_id))
            .transpose()?;
        let membership = shared.to_json("membership", &meta.last_membership)?;
        let snapshot_meta = shared.to_json("snapshot meta", meta)?;
        let _image = shared.lock_image()?;
        let mut writes = sled::Batch::default();
        let keep: std::collections::HashSet<&[u8]> =
            image.records.iter().map(|op| op.key.as_slice()).collect();
        for key in shared.db.iter().keys() {
            let key = key.map_err(|source| shared.sled_error("reading the records", source))?;
            if !keep.contains(key.as_ref()) {
                writes.remove(key);
            }
        }
        for op in &image.records {
            match &op.value {
                Some(value) => writes.insert(op.key.as_slice(), value.as_slice()),
                None => writes.remove(op.key.as_slice()),
            }
        }
        let records: &sled::Tree = &shared.db;
        (records, &shared.meta)
            .transaction(|(records, tree)| {
                records.apply_batch(&writes)?;
                match &applied {
                    Some(applied) => tree.insert(APPLIED_KEY, applied.as_slice())?,
                    None => tree.remove(APPLIED_KEY)?,
                };
                tree.insert(MEMBERSHIP_KEY, membership.as_slice())?;
                tree.insert(SNAPSHOT_META_KEY, snapshot_meta.as_slice())?;
                tree.insert(SNAPSHOT_DATA_KEY, data.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|source| shared.transaction_error("installing a snapshot", source))?;
        shared.flush()?;
        let next_token = image
            .records
            .iter()
            .find(|op| op.key == NEXT_TOKEN_KEY)
            .and_then(|op| op.value.as_deref())
            .and_then(token_value);
        if let Some(next_token) = next_token {
            shared.raise_marker(next_token, true)?;
        }
        shared
            .events
            .restart_after(read_last_revision(&shared.db, &shared.dir)?);
        Ok(())
    }
}

/// The image's last event revision (record `r`; 0 without one).
fn read_last_revision(db: &sled::Db, dir: &Path) -> Result<u64, RaftStoreError> {
    let corrupt = |problem: String| RaftStoreError::CorruptStateMachine {
        dir: dir.to_path_buf(),
        what: "last event revision",
        problem,
    };
    let value = db
        .get(LAST_REVISION_KEY)
        .map_err(|source| RaftStoreError::Sled {
            dir: dir.to_path_buf(),
            doing: "reading the last event revision",
            source,
        })?;
    value.map_or(Ok(0), |value| {
        decode_last_revision(&value).map_err(|damage| corrupt(damage.to_string()))
    })
}

/// A next-token record's value (8 bytes, big-endian), if well formed (apply stores any
/// value as it came; reading back refuses a bad one).
fn token_value(value: &[u8]) -> Option<u64> {
    value.try_into().ok().map(u64::from_be_bytes)
}

impl Shared {
    /// Raises the token floor marker to `next_token`, durable in sled already: at once when
    /// `now`, else at most every [`MARKER_EVERY`].
    fn raise_marker(&self, next_token: u64, now: bool) -> Result<(), RaftStoreError> {
        if !self.marker.due(next_token) {
            return Ok(());
        }
        let mut raised = self
            .marker_raised
            .lock()
            .map_err(|_| RaftStoreError::Poisoned)?;
        if !now && raised.is_some_and(|at| at.elapsed() < MARKER_EVERY) {
            return Ok(());
        }
        self.marker
            .advance(next_token)
            .map_err(|source| RaftStoreError::Marker {
                source: Box::new(source),
            })?;
        *raised = Some(std::time::Instant::now());
        Ok(())
    }

    /// An event an applied entry carries, or why it is unusable.
    fn event(&self, value: Option<&[u8]>) -> Result<RevisedEvent, RaftStoreError> {
        let corrupt = |problem: String| RaftStoreError::CorruptStateMachine {
            dir: self.dir.clone(),
            what: "an event in a log entry",
            problem,
        };
        let value = value.ok_or_else(|| corrupt("it has no value".to_string()))?;
        decode_event(value).map_err(|damage| corrupt(damage.to_string()))
    }

    fn lock_image(&self) -> Result<MutexGuard<'_, ()>, RaftStoreError> {
        self.image.lock().map_err(|_| RaftStoreError::Poisoned)
    }

    fn records(&self) -> Result<Vec<ImageRecord>, RaftStoreError> {
        self.db
            .iter()
            .map(|entry| {
                entry
                    .map(|(key, value)| (key.to_vec(), value.to_vec()))
                    .map_err(|source| self.sled_error("reading the records", source))
            })
            .collect()
    }

    /// Makes everything written so far durable: sled's flush, then (with `fdatasync`) a
    /// sync of its data file.
    fn flush(&self) -> Result<(), RaftStoreError> {
        self.db
            .flush()
            .map_err(|source| self.sled_error("flushing", source))?;
        if let Some(file) = &self.data_file {
            file.sync_data()
                .map_err(|e| RaftStoreError::io("syncing", &self.dir.join("db"), e))?;
        }
        Ok(())
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, RaftStoreError> {
        let Some(value) = self
            .meta
            .get(key)
            .map_err(|source| self.sled_error("reading the meta tree", source))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&value).map(Some).map_err(|error| {
            RaftStoreError::CorruptStateMachine {
                dir: self.dir.clone(),
                what,
                problem: error.to_string(),
            }
        })
    }

    fn to_json<T: Serialize>(
        &self,
        what: &'static str,
        value: &T,
    ) -> Result<Vec<u8>, RaftStoreError> {
        serde_json::to_vec(value).map_err(|error| RaftStoreError::CorruptStateMachine {
            dir: self.dir.clone(),
            what,
            problem: format!("cannot encode: {error}"),
        })
    }

    fn applied_state(
        &self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, ClusterNode>), RaftStoreError> {
        let applied = self.get_json(APPLIED_KEY, "last applied log id")?;
        let membership = self
            .get_json(MEMBERSHIP_KEY, "membership")?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, RaftStoreError> {
        let Some(meta) = self.get_json::<Meta>(SNAPSHOT_META_KEY, "snapshot meta")? else {
            return Ok(None);
        };
        let data = self
            .meta
            .get(SNAPSHOT_DATA_KEY)
            .map_err(|source| self.sled_error("reading the snapshot", source))?
            .ok_or_else(|| RaftStoreError::CorruptStateMachine {
                dir: self.dir.clone(),
                what: "snapshot",
                problem: "its meta is there but not its data".to_string(),
            })?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }

    /// Builds a snapshot of the current image and keeps it as the current snapshot
    /// (unless a newer one was installed meanwhile).
    fn build_snapshot(&self) -> Result<Snapshot<TypeConfig>, RaftStoreError> {
        let (records, applied, membership) = {
            let _image = self.lock_image()?;
            let (applied, membership) = self.applied_state()?;
            (self.records()?, applied, membership)
        };
        // Two snapshots of the same log id can differ in bytes (openraft's note): the
        // build time tells them apart.
        let built = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let snapshot_id = match applied {
            Some(log_id) => format!(
                "{}-{}-{}-{built}",
                log_id.leader_id.term, log_id.leader_id.node_id, log_id.index
            ),
            None => format!("empty-{built}"),
        };
        let meta = Meta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        let meta_json = self.to_json("snapshot meta", &meta)?;
        let image = SnapshotImage {
            meta: meta_json.clone(),
            records: records
                .into_iter()
                .map(|(key, value)| JournalOp {
                    key,
                    value: Some(value),
                })
                .collect(),
        };
        let data = image.encode_to_vec();
        {
            let _image = self.lock_image()?;
            let current = self.get_json::<Meta>(SNAPSHOT_META_KEY, "snapshot meta")?;
            if current.is_none_or(|current| current.last_log_id <= meta.last_log_id) {
                let mut writes = sled::Batch::default();
                writes.insert(SNAPSHOT_META_KEY, meta_json);
                writes.insert(SNAPSHOT_DATA_KEY, data.as_slice());
                self.meta
                    .apply_batch(writes)
                    .map_err(|source| self.sled_error("saving the snapshot", source))?;
                self.flush()?;
            }
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }

    fn sled_error(&self, doing: &'static str, source: sled::Error) -> RaftStoreError {
        RaftStoreError::Sled {
            dir: self.dir.clone(),
            doing,
            source,
        }
    }

    fn transaction_error(
        &self,
        doing: &'static str,
        source: TransactionError<()>,
    ) -> RaftStoreError {
        match source {
            TransactionError::Storage(source) => self.sled_error(doing, source),
            // The transactions here never abort.
            TransactionError::Abort(()) => RaftStoreError::CorruptStateMachine {
                dir: self.dir.clone(),
                what: "transaction",
                problem: format!("{doing}: aborted"),
            },
        }
    }
}

/// Runs `work` (writes, flushes and syncs) on tokio's blocking pool, so a sync holds a
/// blocking thread rather than one of the runtime's workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RaftStoreError> + Send + 'static,
) -> Result<T, RaftStoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| RaftStoreError::BlockingTask {
            problem: error.to_string(),
        })?
}

fn sm_write_error(error: RaftStoreError) -> StorageError {
    StorageIOError::write_state_machine(&error).into()
}

fn sm_read_error(error: RaftStoreError) -> StorageError {
    StorageIOError::read_state_machine(&error).into()
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let shared = self.shared.clone();
        blocking(move || shared.build_snapshot())
            .await
            .map_err(|error| StorageIOError::write_snapshot(None, &error).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, ClusterNode>), StorageError> {
        let _image = self.shared.lock_image().map_err(sm_read_error)?;
        self.shared.applied_state().map_err(sm_read_error)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let shared = self.shared.clone();
        let entries: Vec<Entry> = entries.into_iter().collect();
        blocking(move || StateMachine::apply_entries(&shared, entries))
            .await
            .map_err(sm_write_error)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let shared = self.shared.clone();
        let owned = meta.clone();
        blocking(move || StateMachine::install(&shared, &owned, snapshot.into_inner()))
            .await
            .map_err(|error| StorageIOError::write_snapshot(Some(meta.signature()), &error).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.shared
            .current_snapshot()
            .map_err(|error| StorageIOError::read_snapshot(None, &error).into())
    }
}
