//! [`LogStore`]: the raft log on disk, openraft's `RaftLogStorage` (and its
//! [`LogReader`]), with the vote, the purged log id and the committed log id beside it.
//!
//! Files, under `<data dir>/raft/`:
//! - `log/<sequence>.seg`, 20-digit sequence numbers that only go up: segments, each
//!   starting with [`SEGMENT_MAGIC`], then one [framed](crate::frame) record per entry
//!   (the same framing as the journal, so a damaged record is told from a torn last append
//!   by the same rule). The payload is a [`StoredEntry`] (prost): the log id, and the
//!   commit batch, the membership (JSON) or nothing for a blank entry.
//! - `vote`, `purged`, `committed`: [state files](super::state_file), replaced whole.
//!
//! In memory: every live entry's place, `(log index -> segment, offset, length)`, rebuilt
//! at open by scanning the segments; entries are read back from the files.
//!
//! What openraft requires, and how it is met:
//! - `append` reports IO completion (the callback) only after the entries' `write` and its
//!   `fdatasync` (the entries are readable as soon as it returns). A new segment is made
//!   durable (its header synced, its directory entry synced) before any entry goes in, and
//!   the segment before it is synced before the move, so a torn record can only be in the
//!   newest segment.
//! - `save_vote` returns only after the vote file is written, synced, renamed into place
//!   and its directory synced.
//! - `truncate` deletes later segments newest first (then syncs the directory) and then
//!   cuts the segment holding the first removed entry and syncs it: at every step the log
//!   on disk is a prefix of what it was, never a log with a hole.
//! - `purge` saves the purged log id durably first, then deletes the segments that hold
//!   nothing newer; entries at or below the purged id left in a segment are skipped at open.
//! - `save_committed` writes its file without syncing: a committed id lost to a power cut
//!   only makes openraft re-learn it from the leader (the state machine is durable at apply,
//!   see [`super::state_machine`]), so a missing or damaged `committed` file reads as none.
//! - All writes happen in call order under one lock, so vote and log IO are serialized.
//!
//! At open, a torn last append in the newest segment (a crash during an append whose
//! callback never fired), or zeros after the last entry (a power cut can keep a file's new
//! size and not its data), is cut off the file, so the next append follows the last entry;
//! any other damage refuses the open with the file and the offset
//! ([`RaftStoreError::CorruptLog`]), by the rule of [`crate::frame`].
//!
//! Writes and syncs run on tokio's blocking pool, one at a time, awaited by openraft's core.
//! Known cost, to be lifted when the cluster serves traffic: a reader (replication) waits
//! for an append's sync, and each append is its own sync; reporting the callback from a
//! syncer thread, so appends overlap their syncs as the single node's group commit does,
//! is the next step.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, StorageIOError, Vote};
use prost::Message;

use crate::cluster::error::{LogDamage, RaftStoreError};
use crate::cluster::state_file;
use crate::cluster::types::{
    ClusterNode, CommitBatch, Entry, LogId, NodeId, StorageError, TypeConfig,
};
use crate::frame::{self, nonzero_extent};
use crate::journal::JournalBatch;

/// The first bytes of every raft log segment (format version 1).
pub const SEGMENT_MAGIC: &[u8; 8] = b"fncdRLG1";

/// A segment larger than this gets no more entries: the next append starts a new one.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// One log entry as stored (prost). Encoded by hand in `encode_entry` (so a batch is not
/// copied to be encoded), decoded with this derive.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEntry {
    /// The term of the leader that proposed it.
    #[prost(uint64, tag = "1")]
    pub term: u64,
    /// The id of the leader that proposed it.
    #[prost(uint64, tag = "2")]
    pub leader: u64,
    /// Its log index.
    #[prost(uint64, tag = "3")]
    pub index: u64,
    /// [`KIND_BLANK`], [`KIND_NORMAL`] or [`KIND_MEMBERSHIP`].
    #[prost(uint32, tag = "4")]
    pub kind: u32,
    /// A normal entry's commit batch.
    #[prost(message, optional, tag = "5")]
    pub batch: Option<JournalBatch>,
    /// A membership entry's membership (JSON).
    #[prost(bytes = "vec", tag = "6")]
    pub membership: Vec<u8>,
}

/// A blank entry (a new leader's first, for instance).
pub const KIND_BLANK: u32 = 0;
/// An entry carrying a commit batch.
pub const KIND_NORMAL: u32 = 1;
/// An entry carrying a membership.
pub const KIND_MEMBERSHIP: u32 = 2;

/// Where an entry lies on disk.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// Its log id.
    log_id: LogId,
    /// The segment's sequence number.
    segment: u64,
    /// Where its record starts in the segment.
    offset: u64,
    /// Its record's length with its header.
    len: u64,
}

/// An open segment.
struct Segment {
    /// Its path.
    path: PathBuf,
    /// Opened for reading and writing (positional, so readers and the writer share it).
    file: File,
    /// Its length in bytes.
    len: u64,
}

/// Everything the store and its readers share, under one lock.
struct Shared {
    /// `<data dir>/raft`.
    dir: PathBuf,
    /// `<data dir>/raft/log`.
    log_dir: PathBuf,
    /// Sync appends, segments, truncations and the state files (off: durable against a
    /// process crash only).
    fdatasync: bool,
    /// Rotate after a segment grows past this.
    segment_bytes: u64,
    /// The segments by sequence number; the last is appended to.
    segments: BTreeMap<u64, Segment>,
    /// Every live entry's place, by log index.
    places: BTreeMap<u64, Place>,
    /// The newest purged log id.
    purged: Option<LogId>,
    /// The saved vote.
    vote: Option<Vote<NodeId>>,
    /// The saved committed log id.
    committed: Option<LogId>,
    /// A reused encoding buffer.
    buffer: Vec<u8>,
}

/// The raft log store. See the module documentation.
pub struct LogStore {
    /// Shared with the readers.
    shared: Arc<Mutex<Shared>>,
}

/// A reader of the raft log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    /// Shared with the store.
    shared: Arc<Mutex<Shared>>,
}

/// What opening found that a caller may want to log or test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornEntry {
    /// The segment.
    pub file: PathBuf,
    /// Where the torn record started (the segment now ends there).
    pub offset: u64,
    /// Bytes from there to the last non-zero one.
    pub bytes: u64,
}

impl LogStore {
    /// Opens (or creates) the raft log in `dir` (`<data dir>/raft`): reads the state files,
    /// scans every segment and cuts off a torn last append. Returns the torn append it cut
    /// off, if any.
    pub fn open(
        dir: &Path,
        fdatasync: bool,
        segment_bytes: u64,
    ) -> Result<(LogStore, Option<TornEntry>), RaftStoreError> {
        let log_dir = dir.join("log");
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| RaftStoreError::io("creating", &log_dir, e))?;
        let vote = state_file::read(&dir.join("vote"))?;
        let purged: Option<LogId> = state_file::read(&dir.join("purged"))?;
        // Only a hint (see the module documentation): unreadable reads as none.
        let committed = state_file::read(&dir.join("committed")).unwrap_or_else(|error| {
            tracing::warn!(%error, "ignoring an unreadable committed log id");
            None
        });
        let mut shared = Shared {
            dir: dir.to_path_buf(),
            log_dir: log_dir.clone(),
            fdatasync,
            segment_bytes: segment_bytes.max(1),
            segments: BTreeMap::new(),
            places: BTreeMap::new(),
            purged,
            vote,
            committed,
            buffer: Vec::new(),
        };
        let torn = shared.scan()?;
        if shared.segments.is_empty() {
            shared.new_segment(1)?;
        }
        if let Some(torn) = &torn {
            tracing::warn!(
                file = %torn.file.display(),
                offset = torn.offset,
                bytes = torn.bytes,
                "cut off a torn last raft log append (its append was never reported done)"
            );
        }
        Ok((
            LogStore {
                shared: Arc::new(Mutex::new(shared)),
            },
            torn,
        ))
    }

    fn lock(&self) -> Result<MutexGuard<'_, Shared>, RaftStoreError> {
        lock(&self.shared)
    }

    /// The entries at indexes `last + 1 - at_most ..= last` that the log still holds (not
    /// purged), in order.
    pub fn entries_ending_at(&self, last: u64, at_most: u64) -> Result<Vec<Entry>, RaftStoreError> {
        let first = last.saturating_add(1).saturating_sub(at_most);
        self.lock()?.entries(first..=last)
    }

    /// Runs `work` (writes and syncs) on tokio's blocking pool, so a sync holds a blocking
    /// thread rather than one of the runtime's workers; openraft still waits for it, so
    /// writes stay in call order.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Shared) -> Result<T, RaftStoreError> + Send + 'static,
    ) -> Result<T, RaftStoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || work(&mut *lock(&shared)?))
            .await
            .map_err(|error| RaftStoreError::BlockingTask {
                problem: error.to_string(),
            })?
    }
}

fn lock(shared: &Mutex<Shared>) -> Result<MutexGuard<'_, Shared>, RaftStoreError> {
    shared.lock().map_err(|_| RaftStoreError::Poisoned)
}

impl Shared {
    /// Reads every segment, fills `segments` and `places`, cuts off a torn last append.
    fn scan(&mut self) -> Result<Option<TornEntry>, RaftStoreError> {
        let sequences = list(&self.log_dir)?;
        let mut torn = None;
        let mut expected = self.purged.map(|purged| purged.index + 1);
        let newest = sequences.last().copied();
        for sequence in sequences {
            let path = segment_path(&self.log_dir, sequence);
            let corrupt = |offset: u64, damage: LogDamage| RaftStoreError::CorruptLog {
                file: path.clone(),
                offset,
                damage,
            };
            if let Some(torn) = &torn {
                let TornEntry { file, offset, .. } = torn;
                return Err(RaftStoreError::CorruptLog {
                    file: file.clone(),
                    offset: *offset,
                    damage: LogDamage::TornBeforeLaterSegment { later: path },
                });
            }
            let bytes =
                std::fs::read(&path).map_err(|e| RaftStoreError::io("reading", &path, e))?;
            if bytes.get(..SEGMENT_MAGIC.len()) != Some(SEGMENT_MAGIC.as_slice()) {
                // A segment whose header a crash cut short: made and synced before any entry
                // went in, so it holds nothing. Only the newest can be one.
                let written = nonzero_extent(&bytes);
                if Some(sequence) == newest
                    && written <= SEGMENT_MAGIC.len()
                    && bytes[..written] == SEGMENT_MAGIC[..written]
                {
                    std::fs::remove_file(&path)
                        .map_err(|e| RaftStoreError::io("deleting", &path, e))?;
                    state_file::sync_dir(&self.log_dir)?;
                    self.new_segment(sequence)?;
                    continue;
                }
                return Err(corrupt(0, LogDamage::NotALog));
            }
            let scanned = frame::scan(&bytes, SEGMENT_MAGIC.len(), |payload| {
                StoredEntry::decode(payload)
            })
            .map_err(|(offset, damage)| corrupt(offset, damage.into()))?;
            // The records end after the last valid one: past it there can be a torn append,
            // or zeros a power cut left where an append's blocks were allocated but never
            // written (the file's size reached the disk, its data did not).
            let mut len = scanned
                .records
                .last()
                .map_or(SEGMENT_MAGIC.len() as u64, |last| last.offset + last.len);
            for record in scanned.records {
                let entry = record.value;
                let log_id = LogId {
                    leader_id: CommittedLeaderId::new(entry.term, entry.leader),
                    index: entry.index,
                };
                if self
                    .purged
                    .is_some_and(|purged| entry.index <= purged.index)
                {
                    continue;
                }
                if let Some(expected) = expected {
                    if entry.index != expected {
                        let found = entry.index;
                        return Err(corrupt(
                            record.offset,
                            LogDamage::OutOfOrder { expected, found },
                        ));
                    }
                }
                expected = Some(entry.index + 1);
                self.places.insert(
                    entry.index,
                    Place {
                        log_id,
                        segment: sequence,
                        offset: record.offset,
                        len: record.len,
                    },
                );
            }
            if let Some((offset, bytes)) = scanned.torn {
                torn = Some(TornEntry {
                    file: path.clone(),
                    offset,
                    bytes,
                });
                len = offset;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| RaftStoreError::io("opening", &path, e))?;
            if len != bytes.len() as u64 {
                // Appends go right after the last entry: a torn append or zeros must not stay
                // in front of them, where they would read as a damaged middle record.
                file.set_len(len)
                    .map_err(|e| RaftStoreError::io("cutting the torn tail of", &path, e))?;
                file.sync_all()
                    .map_err(|e| RaftStoreError::io("syncing", &path, e))?;
            }
            self.segments.insert(sequence, Segment { path, file, len });
        }
        Ok(torn)
    }

    /// Makes segment `sequence`, durable with its header before any entry goes in.
    fn new_segment(&mut self, sequence: u64) -> Result<(), RaftStoreError> {
        let path = segment_path(&self.log_dir, sequence);
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| RaftStoreError::io("creating", &path, e))?;
        file.write_all(SEGMENT_MAGIC)
            .map_err(|e| RaftStoreError::io("writing the header of", &path, e))?;
        if self.fdatasync {
            file.sync_all()
                .map_err(|e| RaftStoreError::io("syncing", &path, e))?;
            state_file::sync_dir(&self.log_dir)?;
        }
        let len = SEGMENT_MAGIC.len() as u64;
        self.segments.insert(sequence, Segment { path, file, len });
        Ok(())
    }

    /// The segment appended to, and its sequence number.
    fn current(&mut self) -> Result<(u64, &mut Segment), RaftStoreError> {
        self.segments
            .iter_mut()
            .next_back()
            .map(|(sequence, segment)| (*sequence, segment))
            .ok_or_else(|| RaftStoreError::MissingSegment {
                path: self.log_dir.clone(),
            })
    }

    /// Appends `entries` and makes them durable (see the module documentation).
    fn append(&mut self, entries: Vec<Entry>) -> Result<(), RaftStoreError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        let result = self.append_with(&entries, &mut buffer);
        self.buffer = buffer;
        for place in result? {
            self.places.insert(place.log_id.index, place);
        }
        Ok(())
    }

    /// [`Shared::append`] with its buffer; returns the new entries' places.
    fn append_with(
        &mut self,
        entries: &[Entry],
        buffer: &mut Vec<u8>,
    ) -> Result<Vec<Place>, RaftStoreError> {
        let mut places = Vec::with_capacity(entries.len());
        let mut record = Vec::new();
        for entry in entries {
            encode_entry(entry, &mut record)?;
            let (sequence, segment) = self.current()?;
            let used = segment.len + buffer.len() as u64;
            if used > SEGMENT_MAGIC.len() as u64 && used + record.len() as u64 > self.segment_bytes
            {
                // The segment is synced before the move, so only the newest can end torn.
                self.write_out(buffer)?;
                self.rotate(sequence)?;
            }
            let (sequence, segment) = self.current()?;
            places.push(Place {
                log_id: entry.log_id,
                segment: sequence,
                offset: segment.len + buffer.len() as u64,
                len: record.len() as u64,
            });
            buffer.extend_from_slice(&record);
        }
        self.write_out(buffer)?;
        Ok(places)
    }

    /// Writes `buffer` at the end of the current segment and syncs it.
    fn write_out(&mut self, buffer: &mut Vec<u8>) -> Result<(), RaftStoreError> {
        if buffer.is_empty() {
            return Ok(());
        }
        let fdatasync = self.fdatasync;
        let (_, segment) = self.current()?;
        segment
            .file
            .write_all_at(buffer, segment.len)
            .map_err(|e| RaftStoreError::io("appending to", &segment.path, e))?;
        if fdatasync {
            segment
                .file
                .sync_data()
                .map_err(|e| RaftStoreError::io("syncing", &segment.path, e))?;
        }
        segment.len += buffer.len() as u64;
        buffer.clear();
        Ok(())
    }

    /// Moves on to a new segment after `sequence` (whose appends are all synced).
    fn rotate(&mut self, sequence: u64) -> Result<(), RaftStoreError> {
        let next = sequence
            .checked_add(1)
            .ok_or_else(|| RaftStoreError::SegmentsExhausted {
                dir: self.log_dir.clone(),
            })?;
        self.new_segment(next)
    }

    /// Reads the entry at `place` back from its segment.
    fn read(&self, place: &Place) -> Result<Entry, RaftStoreError> {
        let segment =
            self.segments
                .get(&place.segment)
                .ok_or_else(|| RaftStoreError::MissingSegment {
                    path: segment_path(&self.log_dir, place.segment),
                })?;
        let corrupt = |damage: LogDamage| RaftStoreError::CorruptLog {
            file: segment.path.clone(),
            offset: place.offset,
            damage,
        };
        let len = usize::try_from(place.len)
            .map_err(|_| RaftStoreError::EntryTooLarge { bytes: usize::MAX })?;
        let mut bytes = vec![0; len];
        segment
            .file
            .read_exact_at(&mut bytes, place.offset)
            .map_err(|e| RaftStoreError::io("reading", &segment.path, e))?;
        match frame::record(&bytes, |payload| StoredEntry::decode(payload)) {
            frame::Record::Valid { batch: stored, .. } => {
                decode_entry(stored).map_err(|problem| corrupt(LogDamage::BadEntry { problem }))
            }
            _ => Err(corrupt(LogDamage::BadEntry {
                problem: "the record changed on disk since it was written".to_string(),
            })),
        }
    }

    /// Removes every entry from index `since` on (see the module documentation).
    fn truncate(&mut self, since: u64) -> Result<(), RaftStoreError> {
        let Some(first) = self.places.range(since..).next().map(|(_, place)| *place) else {
            return Ok(());
        };
        let later: Vec<u64> = self
            .segments
            .range(first.segment + 1..)
            .map(|(sequence, _)| *sequence)
            .collect();
        for sequence in later.iter().rev() {
            if let Some(segment) = self.segments.remove(sequence) {
                std::fs::remove_file(&segment.path)
                    .map_err(|e| RaftStoreError::io("deleting", &segment.path, e))?;
            }
        }
        if !later.is_empty() && self.fdatasync {
            state_file::sync_dir(&self.log_dir)?;
        }
        let fdatasync = self.fdatasync;
        let segment = self.segments.get_mut(&first.segment).ok_or_else(|| {
            RaftStoreError::MissingSegment {
                path: segment_path(&self.log_dir, first.segment),
            }
        })?;
        segment
            .file
            .set_len(first.offset)
            .map_err(|e| RaftStoreError::io("truncating", &segment.path, e))?;
        if fdatasync {
            segment
                .file
                .sync_data()
                .map_err(|e| RaftStoreError::io("syncing", &segment.path, e))?;
        }
        segment.len = first.offset;
        self.places.split_off(&since);
        Ok(())
    }

    /// Removes every entry up to `log_id` (inclusive), durably (see the module
    /// documentation).
    fn purge(&mut self, log_id: LogId) -> Result<(), RaftStoreError> {
        state_file::write(&self.dir.join("purged"), &log_id, self.fdatasync)?;
        self.purged = Some(log_id);
        self.places = self.places.split_off(&(log_id.index + 1));
        let oldest_live = self.places.values().next().map(|place| place.segment);
        let newest = self.segments.keys().next_back().copied();
        let dead: Vec<u64> = self
            .segments
            .keys()
            .copied()
            .filter(|sequence| {
                Some(*sequence) != newest && oldest_live.is_none_or(|live| *sequence < live)
            })
            .collect();
        for sequence in &dead {
            if let Some(segment) = self.segments.remove(sequence) {
                std::fs::remove_file(&segment.path)
                    .map_err(|e| RaftStoreError::io("deleting", &segment.path, e))?;
            }
        }
        if !dead.is_empty() && self.fdatasync {
            state_file::sync_dir(&self.log_dir)?;
        }
        Ok(())
    }

    fn log_state(&self) -> LogState<TypeConfig> {
        let last = self.places.values().next_back().map(|place| place.log_id);
        LogState {
            last_purged_log_id: self.purged,
            last_log_id: last.or(self.purged),
        }
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, RaftStoreError> {
        self.places
            .range(range)
            .map(|(_, place)| self.read(place))
            .collect()
    }
}

/// Frames `entry` into `record` (cleared first).
fn encode_entry(entry: &Entry, record: &mut Vec<u8>) -> Result<(), RaftStoreError> {
    use prost::encoding::{bytes, message, uint32, uint64};
    let term = entry.log_id.leader_id.term;
    let leader = entry.log_id.leader_id.node_id;
    let index = entry.log_id.index;
    // An empty `Vec` does not allocate: only membership entries pay for their JSON.
    let (kind, batch, membership): (u32, Option<&JournalBatch>, Vec<u8>) = match &entry.payload {
        EntryPayload::Blank => (KIND_BLANK, None, Vec::new()),
        EntryPayload::Normal(CommitBatch(batch)) => (KIND_NORMAL, Some(batch), Vec::new()),
        EntryPayload::Membership(membership) => {
            let json = serde_json::to_vec(membership).map_err(|error| RaftStoreError::Encode {
                what: "a membership entry",
                problem: error.to_string(),
            })?;
            (KIND_MEMBERSHIP, None, json)
        }
    };
    let mut payload_len = uint64::encoded_len(1, &term)
        + uint64::encoded_len(2, &leader)
        + uint64::encoded_len(3, &index)
        + uint32::encoded_len(4, &kind);
    if let Some(batch) = batch {
        payload_len += message::encoded_len(5, batch);
    }
    if !membership.is_empty() {
        payload_len += bytes::encoded_len(6, &membership);
    }
    let length = u32::try_from(payload_len)
        .map_err(|_| RaftStoreError::EntryTooLarge { bytes: payload_len })?;
    frame::frame::<std::convert::Infallible>(record, length, |buffer| {
        uint64::encode(1, &term, buffer);
        uint64::encode(2, &leader, buffer);
        uint64::encode(3, &index, buffer);
        uint32::encode(4, &kind, buffer);
        if let Some(batch) = batch {
            message::encode(5, batch, buffer);
        }
        if !membership.is_empty() {
            bytes::encode(6, &membership, buffer);
        }
        Ok(())
    })
    .unwrap_or_else(|never| match never {});
    Ok(())
}

/// An entry as openraft knows it, from its stored form.
fn decode_entry(stored: StoredEntry) -> Result<Entry, String> {
    let log_id = LogId {
        leader_id: CommittedLeaderId::new(stored.term, stored.leader),
        index: stored.index,
    };
    let payload = match stored.kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(CommitBatch(stored.batch.unwrap_or_default())),
        KIND_MEMBERSHIP => {
            let membership: Membership<NodeId, ClusterNode> =
                serde_json::from_slice(&stored.membership)
                    .map_err(|error| format!("a membership that does not decode: {error}"))?;
            EntryPayload::Membership(membership)
        }
        other => return Err(format!("unknown entry kind {other}")),
    };
    Ok(Entry { log_id, payload })
}

/// The sequence numbers of the segments in `dir`, oldest first; leftover temporary files
/// are ignored, anything else is an error (the directory is ours).
fn list(dir: &Path) -> Result<Vec<u64>, RaftStoreError> {
    let mut sequences = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| RaftStoreError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| RaftStoreError::io("listing", dir, e))?;
        let name = entry.file_name();
        let sequence = name
            .to_str()
            .and_then(|name| name.strip_suffix(".seg"))
            .and_then(|stem| stem.parse::<u64>().ok())
            .ok_or_else(|| RaftStoreError::UnexpectedFile { path: entry.path() })?;
        sequences.push(sequence);
    }
    sequences.sort_unstable();
    Ok(sequences)
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.seg"))
}

fn write_error(error: RaftStoreError) -> StorageError {
    StorageIOError::write_logs(&error).into()
}

fn read_error(error: RaftStoreError) -> StorageError {
    StorageIOError::read_logs(&error).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.lock()
            .map_err(read_error)?
            .entries(range)
            .map_err(read_error)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        lock(&self.shared)
            .map_err(read_error)?
            .entries(range)
            .map_err(read_error)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(self.lock().map_err(read_error)?.log_state())
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |shared| {
            state_file::write(&shared.dir.join("vote"), &vote, shared.fdatasync)?;
            shared.vote = Some(vote);
            Ok(())
        })
        .await
        .map_err(|error| StorageIOError::write_vote(&error).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock().map_err(read_error)?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.blocking(move |shared| {
            // Not synced: see the module documentation.
            state_file::write(&shared.dir.join("committed"), &committed, false)?;
            shared.committed = committed;
            Ok(())
        })
        .await
        .map_err(write_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().map_err(read_error)?.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self.blocking(move |shared| shared.append(entries)).await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(write_error(error))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |shared| shared.truncate(log_id.index))
            .await
            .map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |shared| shared.purge(log_id))
            .await
            .map_err(write_error)
    }
}
