//! [`Journal`]: the append-only log that makes a commit durable with one `write` and one
//! `fdatasync`, ahead of sled.
//!
//! Why it exists: a sled 0.34 `flush` costs far more than the sync itself. Each flush seals
//! an I/O buffer and hands it to sled's I/O thread pool, whose queue wakes every idle
//! thread (`notify_all`) for each buffer; at one flush per group commit that costs about
//! as much CPU as serving the requests themselves. So a commit appends its writes here and
//! syncs this file; sled receives them in large batches, in the background, at a
//! [checkpoint](crate::store) (about once a second), and a journal file is deleted only
//! after sled has flushed (and `fdatasync`ed) everything it holds. This is the shape of the
//! replicated future too: the journal is the log, sled the state machine's durable image.
//!
//! Files: `<data dir>/journal/<generation>.log`, 20-digit generations that only go up. A
//! file starts with [`MAGIC`]; then records, each
//! `length (u32 LE) | crc32(length) (u32 LE) | crc32(length ‖ payload) (u32 LE) | payload`,
//! the payload one [`JournalBatch`] (prost), framed by [`crate::frame`]. The first check makes the length trustworthy
//! on its own (it says where the record ends even when its payload is damaged); the second
//! covers the length and the payload together. Replaying a record applies its operations
//! (whole-value puts and deletes) in order, so replaying records sled already holds changes
//! nothing; recovery replays only the files newer than the generation sled records as
//! held (`g`, see [`crate::store`]), since an older file left behind would put back values
//! that sled holds newer ones of.
//!
//! Preallocation: the next journal file is prepared ahead of time by the checkpoint thread
//! ([`NextFile`]): written full of zeros, synced, given its final name and its directory
//! entry synced, all before the committer needs it. Rotating to it then costs the
//! committer one `open`, not the `fsync` of the directory that a new name needs before any
//! record in the file may be acknowledged (once per journal file, with every waiting
//! commit behind it). Appending inside blocks that already exist on disk also lets
//! `fdatasync` skip the file-size update and its ext4 journal commit, so each append +
//! `fdatasync` takes less time and fewer I/O requests. So a file ends in zeros: its records end where only zeros are left, and a
//! prepared file that never got a record (a crash came first) replays as empty.
//!
//! # Torn tails and corruption
//! A crash can cut the last append short. That record was never acknowledged (a commit is
//! answered only after its `fdatasync`), so it is dropped. What such a torn append can look
//! like, with the file's zeros (or its end) after it: any of its bytes can be missing
//! (read as zeros, or past the end of the file: a power cut keeps some sectors of one
//! write and not others), so its header can be zeros or half there, its length garbage,
//! its payload cut short or with holes. What it cannot look like: anything written after
//! it, because the committer writes nothing after an append until that append's
//! `fdatasync` is done. So the rule, for the first record at offset X that is not valid
//! (cut short by the end of the file, a failed check, or a zero length with non-zero bytes
//! after it):
//! - it is corruption, and the start is refused with the file and X
//!   ([`Error::CorruptJournal`]), if
//!   1. a valid record starts anywhere after X in the file (whatever its length field
//!      says, a damaged middle record is found out by the records after it);
//!   2. its length passes its own check and a byte past the record's end is not zero
//!      (nothing is written after the last append);
//!   3. it passes its checksum but does not decode (the bytes are what was written);
//!   4. or a later journal file holds anything (the committer moves to a new file only
//!      after the last append to this one was synced);
//! - otherwise it is the torn last append, and the replay ends before it.
//!
//! A file whose header a crash cut short (a prefix of [`MAGIC`], then zeros) is one the
//! committer had just made, synced before any record went in: it holds nothing.
//!
//! Limits of the rule: damage confined to the last record of the newest file, with only
//! zeros after it, looks exactly like a torn append and is dropped as one (telling them
//! apart would need a second copy of the record). Recovery then moves the token counter
//! past every token such a record could hold, so no token is issued twice even if it had
//! been acknowledged (S1); its grants themselves are lost. A valid record found inside a torn
//! append's remains would need both of its checks to match by chance. With
//! `--no-fdatasync` a power cut can leave a hole before records that did reach the disk
//! (the page cache writes pages back in any order); that is refused like any damage, since
//! the records after the hole were acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prost::Message;

use crate::error::Error;
use crate::frame::{self, nonzero_extent, FrameDamage};
#[cfg(test)]
use crate::frame::{checksum, length_check, Record, HEADER_BYTES};

/// The first bytes of every journal file (format version 2).
pub const MAGIC: &[u8; 8] = b"fncdJNL2";

/// The next journal file while it is being written (it gets its name once complete and
/// synced).
const NEXT_PARTIAL: &str = "next.tmp";

/// The smallest and largest preallocation of a next journal file, in bytes.
pub const SPARE_BYTES: std::ops::RangeInclusive<u64> = (1 << 20)..=(64 << 20);

/// One operation on sled's default tree.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JournalOp {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The new value; `None` deletes the key.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub value: Option<Vec<u8>>,
}

impl JournalOp {
    /// Sets `key` to `value`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> JournalOp {
        JournalOp {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> JournalOp {
        JournalOp {
            key: key.into(),
            value: None,
        }
    }
}

/// The operations of one commit, applied atomically and in order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JournalBatch {
    /// The operations.
    #[prost(message, repeated, tag = "1")]
    pub ops: Vec<JournalOp>,
}

/// How a journal file is damaged, beyond what a crash leaves behind (see the module
/// documentation): the evidence of an [`Error::CorruptJournal`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalDamage {
    /// The file does not start with [`MAGIC`].
    #[error("the file does not start with the journal's magic bytes (not a journal file of this version)")]
    NotAJournal,
    /// A record is damaged beyond what a crash leaves behind (the rule is the framing's:
    /// [`FrameDamage`]).
    #[error(transparent)]
    Frame(#[from] FrameDamage),
    /// The file ends torn there, but a later journal file holds data.
    #[error(
        "the file ends torn there, but the later journal file {} holds data: the \
         committer moves to a new file only after its last append was synced",
        later.display()
    )]
    LaterFileHoldsData {
        /// The later file.
        later: PathBuf,
    },
}

/// The journal file being appended to. See the module documentation.
pub struct Journal {
    /// `<data dir>/journal`.
    dir: PathBuf,
    /// The current file.
    file: File,
    /// The current file's generation.
    generation: u64,
    /// Bytes in the current file.
    len: u64,
    /// `fdatasync` after each append (off: durable against a process crash only).
    fdatasync: bool,
    /// A reused encoding buffer.
    buffer: Vec<u8>,
    /// The next file, prepared by the checkpoint thread.
    next: NextFile,
}

/// The next journal file, prepared off the commit path (see the module documentation):
/// shared by the committer's [`Journal`] and the checkpoint thread. The committer alone
/// picks generations; the lock orders a preparation against a rotation, so a prepared file
/// always gets the generation right after the current one and never the name of a file
/// the committer made itself.
#[derive(Clone)]
pub struct NextFile {
    /// `<data dir>/journal`.
    dir: PathBuf,
    /// Whether files and the directory are synced (off: `--no-fdatasync`).
    fdatasync: bool,
    /// The committer's generation, and whether the file after it is ready.
    state: Arc<Mutex<NextState>>,
}

/// See [`NextFile`].
struct NextState {
    /// The generation being appended to.
    current: u64,
    /// Whether generation `current + 1` is prepared: named, synced, its name durable.
    ready: bool,
}

/// What the journal held at start, to be replayed over sled.
pub struct Replay {
    /// Every complete record of the files read, oldest first.
    pub batches: Vec<JournalBatch>,
    /// The generations of every journal file there, oldest first, read or not (all go
    /// once sled holds the replay).
    pub generations: Vec<u64>,
    /// The generations of the files read: those newer than sled's.
    pub read: Vec<u64>,
    /// The torn last append that was dropped, if a crash left one.
    pub torn: Option<TornTail>,
}

/// A torn last append, dropped at replay (it was never acknowledged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The file.
    pub file: PathBuf,
    /// Where the torn record starts.
    pub offset: u64,
    /// Bytes from there to the last non-zero one.
    pub bytes: u64,
}

impl Journal {
    /// Reads the journal files in `dir` (created if missing) newer than generation
    /// `checkpointed` (sled holds the older ones), oldest first. Damage that no crash
    /// leaves behind is an [`Error::CorruptJournal`] naming the file and the offset.
    pub fn read(dir: &Path, checkpointed: u64) -> Result<Replay, Error> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "creating", e))?;
        let generations = list(dir)?;
        let mut replay = Replay {
            batches: Vec::new(),
            generations: generations.clone(),
            read: Vec::new(),
            torn: None,
        };
        for generation in generations {
            if generation <= checkpointed {
                continue;
            }
            let path = file_path(dir, generation);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .map_err(|e| io_error(&path, "reading", e))?;
            let parsed = parse(&bytes).map_err(|(offset, damage)| Error::CorruptJournal {
                file: path.clone(),
                offset,
                damage,
            })?;
            // A torn tail is only ever the newest thing in the journal: a file after it
            // that holds anything means it was not the last append.
            if let Some(torn) = &replay.torn {
                if !parsed.batches.is_empty() || parsed.torn.is_some() {
                    return Err(Error::CorruptJournal {
                        file: torn.file.clone(),
                        offset: torn.offset,
                        damage: JournalDamage::LaterFileHoldsData { later: path },
                    });
                }
            }
            if let Some((offset, bytes)) = parsed.torn {
                replay.torn = Some(TornTail {
                    file: path,
                    offset,
                    bytes,
                });
            }
            replay.read.push(generation);
            replay.batches.extend(parsed.batches);
        }
        Ok(replay)
    }

    /// Starts a new, empty journal file after generation `after` (0 for a new journal).
    pub fn create(dir: &Path, after: u64, fdatasync: bool) -> Result<Journal, Error> {
        let generation =
            after
                .checked_add(1)
                .ok_or_else(|| Error::JournalGenerationsExhausted {
                    dir: dir.to_path_buf(),
                })?;
        let (file, len) = new_file(dir, generation, fdatasync)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            file,
            generation,
            len,
            fdatasync,
            buffer: Vec::new(),
            next: NextFile {
                dir: dir.to_path_buf(),
                fdatasync,
                state: Arc::new(Mutex::new(NextState {
                    current: generation,
                    ready: false,
                })),
            },
        })
    }

    /// The handle the checkpoint thread prepares the next file through.
    pub fn next_file(&self) -> NextFile {
        self.next.clone()
    }

    /// Appends one record and makes it durable: one `write`, one `fdatasync`.
    pub fn append(&mut self, batch: &JournalBatch) -> Result<(), Error> {
        if batch.ops.is_empty() {
            // An empty record would read back as the zeros that end a file.
            return Ok(());
        }
        let payload_len = batch.encoded_len();
        let length =
            u32::try_from(payload_len).map_err(|_| Error::RecordTooLarge { bytes: payload_len })?;
        frame::frame(&mut self.buffer, length, |buffer| batch.encode(buffer))
            .map_err(Error::EncodeRecord)?;
        let path = || file_path(&self.dir, self.generation);
        self.file
            .write_all(&self.buffer)
            .map_err(|e| storage_error(&path(), "appending to", e))?;
        if self.fdatasync {
            self.file
                .sync_data()
                .map_err(|e| storage_error(&path(), "syncing", e))?;
        }
        self.len += self.buffer.len() as u64;
        Ok(())
    }

    /// Moves on to a new file; returns the generation of the one just closed (everything
    /// appended so far is in it or older files).
    /// Uses the prepared next file if there is one, else makes it here.
    pub fn rotate(&mut self) -> Result<u64, Error> {
        let closed = self.generation;
        let mut state = self.next.state.lock().map_err(|_| Error::Poisoned)?;
        let generation = closed + 1;
        let (file, len) = if state.ready {
            open_prepared(&self.dir, generation)?
        } else {
            new_file(&self.dir, generation, self.fdatasync)?
        };
        state.current = generation;
        state.ready = false;
        drop(state);
        self.file = file;
        self.generation = generation;
        self.len = len;
        Ok(closed)
    }

    /// Bytes in the current file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the current file holds no record yet.
    pub fn is_empty(&self) -> bool {
        self.len <= MAGIC.len() as u64
    }
}

/// Deletes every journal file of generation `up_to` or older (sled holds their records),
/// then, with `sync`, syncs the directory, so the deletions are durable before anything
/// that relies on them (without it a power cut can bring the files back).
pub fn remove_through(dir: &Path, up_to: u64, sync: bool) -> Result<(), Error> {
    let mut removed = false;
    for generation in list(dir)? {
        if generation <= up_to {
            let path = file_path(dir, generation);
            std::fs::remove_file(&path).map_err(|e| storage_error(&path, "deleting", e))?;
            removed = true;
        }
    }
    if removed && sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// What one journal file holds: its valid records, and the offset and non-zero extent of
/// its torn last append, if it ends with one.
struct Parsed {
    /// The valid records, in order.
    batches: Vec<JournalBatch>,
    /// `(offset, bytes)` of a torn last append.
    torn: Option<(u64, u64)>,
}

/// Reads one file's records by the rule in the module documentation; the offset and
/// nature of the damage if it is corrupt.
fn parse(bytes: &[u8]) -> Result<Parsed, (u64, JournalDamage)> {
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        // A file the committer made (`new_file`) whose header did not reach the disk
        // before the crash: a prefix of the header, then zeros. Nothing was appended to it
        // (the header is synced first).
        let written = nonzero_extent(bytes);
        if written <= MAGIC.len() && bytes[..written] == MAGIC[..written] {
            return Ok(Parsed {
                batches: Vec::new(),
                torn: (written > 0).then_some((0, written as u64)),
            });
        }
        return Err((0, JournalDamage::NotAJournal));
    }
    let scanned = frame::scan(bytes, MAGIC.len(), |payload| JournalBatch::decode(payload))
        .map_err(|(offset, damage)| (offset, damage.into()))?;
    Ok(Parsed {
        batches: scanned.records.into_iter().map(|r| r.value).collect(),
        torn: scanned.torn,
    })
}

/// Reads the journal record at the start of `bytes` (the rest of a file).
#[cfg(test)]
fn record(bytes: &[u8]) -> Record<JournalBatch> {
    frame::record(bytes, |payload| JournalBatch::decode(payload))
}

/// Makes generation `generation`'s file, durable with its header (the file and its
/// directory entry) before any record goes in.
fn new_file(dir: &Path, generation: u64, fdatasync: bool) -> Result<(File, u64), Error> {
    let path = file_path(dir, generation);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(|e| storage_error(&path, "creating", e))?;
    file.write_all(MAGIC)
        .map_err(|e| storage_error(&path, "writing the header of", e))?;
    if fdatasync {
        file.sync_all()
            .map_err(|e| storage_error(&path, "syncing", e))?;
        sync_dir(dir)?;
    }
    Ok((file, MAGIC.len() as u64))
}

/// Opens the prepared file of generation `generation` for appending after its header.
fn open_prepared(dir: &Path, generation: u64) -> Result<(File, u64), Error> {
    let path = file_path(dir, generation);
    let mut file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| storage_error(&path, "opening", e))?;
    // Records go right after the header (the rest is zeros).
    file.seek(SeekFrom::Start(MAGIC.len() as u64))
        .map_err(|e| storage_error(&path, "seeking in", e))?;
    Ok((file, MAGIC.len() as u64))
}

/// Makes the directory's entries (new names, renames, deletions) durable.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| storage_error(dir, "syncing the directory", e))
}

impl NextFile {
    /// Prepares the file after the committer's current one, `bytes` long (header, then
    /// zeros), unless it is ready: written and synced under a temporary name, then linked
    /// to its generation's name and the directory synced. Runs on the checkpoint thread.
    pub fn prepare(&self, bytes: u64) -> Result<(), Error> {
        if self.state.lock().map_err(|_| Error::Poisoned)?.ready {
            return Ok(());
        }
        let partial = self.dir.join(NEXT_PARTIAL);
        let mut file =
            File::create(&partial).map_err(|e| storage_error(&partial, "creating", e))?;
        let zeros = vec![0u8; 1 << 20];
        let mut written = 0u64;
        file.write_all(MAGIC)
            .map_err(|e| storage_error(&partial, "writing", e))?;
        while written < bytes {
            let chunk = zeros
                .len()
                .min(usize::try_from(bytes - written).unwrap_or(usize::MAX));
            file.write_all(&zeros[..chunk])
                .map_err(|e| storage_error(&partial, "writing", e))?;
            written += chunk as u64;
        }
        if self.fdatasync {
            file.sync_all()
                .map_err(|e| storage_error(&partial, "syncing", e))?;
        }
        // Named under the lock, so the committer cannot move to this generation (and make
        // the file itself) in between; it waits here at most one directory sync.
        let mut state = self.state.lock().map_err(|_| Error::Poisoned)?;
        let path = file_path(&self.dir, state.current + 1);
        // Under the lock nothing else makes this name; the check guards against a bug
        // replacing a journal file rather than against a race.
        if path
            .try_exists()
            .map_err(|e| storage_error(&path, "looking for", e))?
        {
            return Err(Error::NextJournalFileExists { path });
        }
        std::fs::rename(&partial, &path).map_err(|e| storage_error(&path, "naming", e))?;
        if self.fdatasync {
            sync_dir(&self.dir)?;
        }
        state.ready = true;
        Ok(())
    }
}

/// The generations of the journal files in `dir`, oldest first. Anything else there is an
/// error: the directory is ours.
fn list(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut generations = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, "listing", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, "listing", e))?;
        let name = entry.file_name();
        if name == NEXT_PARTIAL {
            continue;
        }
        let generation = name
            .to_str()
            .and_then(|name| name.strip_suffix(".log"))
            .and_then(|stem| stem.parse::<u64>().ok())
            .ok_or_else(|| Error::UnexpectedJournalFile {
                dir: dir.to_path_buf(),
                name: name.clone(),
            })?;
        generations.push(generation);
    }
    generations.sort_unstable();
    Ok(generations)
}

fn file_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{generation:020}.log"))
}

/// A journal file or directory that cannot be read at start.
fn io_error(path: &Path, doing: &'static str, source: std::io::Error) -> Error {
    Error::OpenIo {
        doing,
        path: path.to_path_buf(),
        source,
    }
}

/// A journal file or directory that cannot be written while running.
fn storage_error(path: &Path, doing: &'static str, source: std::io::Error) -> Error {
    Error::StorageIo {
        during: "writing the journal",
        doing,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn batch(keys: &[&str]) -> JournalBatch {
        JournalBatch {
            ops: keys
                .iter()
                .map(|key| JournalOp {
                    key: key.as_bytes().to_vec(),
                    value: Some(vec![1, 2, 3]),
                })
                .collect(),
        }
    }

    fn keys(replay: &Replay) -> Vec<String> {
        replay
            .batches
            .iter()
            .flat_map(|b| b.ops.iter())
            .map(|op| String::from_utf8(op.key.clone()).unwrap())
            .collect()
    }

    // checks: S2 (every appended record comes back, in order, across rotations)
    #[test]
    fn records_come_back_in_order_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 0, true).unwrap();
        journal.append(&batch(&["a", "b"])).unwrap();
        assert_eq!(journal.rotate().unwrap(), 1);
        journal.append(&batch(&["c"])).unwrap();
        journal
            .append(&JournalBatch {
                ops: vec![JournalOp {
                    key: b"a".to_vec(),
                    value: None,
                }],
            })
            .unwrap();
        let replay = Journal::read(dir.path(), 0).unwrap();
        assert_eq!(keys(&replay), ["a", "b", "c", "a"]);
        assert_eq!(replay.batches[2].ops[0].value, None);
        assert_eq!(replay.generations, [1, 2]);
        assert_eq!(replay.torn, None);
    }

    // checks: S2 (a torn, never acknowledged tail is dropped; the rest is kept)
    #[test]
    fn a_torn_last_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 0, false).unwrap();
        journal.append(&batch(&["a"])).unwrap();
        let after_a = journal.len();
        journal.append(&batch(&["b"])).unwrap();
        let full = journal.len();
        let bytes = std::fs::read(file_path(dir.path(), 1)).unwrap();
        assert_eq!(bytes.len() as u64, full);
        // Every cut into the last record loses exactly that record; every cut into the
        // first loses both; the header alone is an empty journal.
        for keep in MAGIC.len() as u64..full {
            let copy = tempfile::tempdir().unwrap();
            std::fs::write(file_path(copy.path(), 1), &bytes[..keep as usize]).unwrap();
            let replay = Journal::read(copy.path(), 0).unwrap();
            let expected: &[&str] = if keep >= after_a { &["a"] } else { &[] };
            assert_eq!(keys(&replay), expected, "kept {keep} of {full} bytes");
            let cut_record = keep - if keep >= after_a { after_a } else { 8 };
            // Trailing zeros of the cut record read as the preallocated end.
            let torn = replay.torn.map_or(0, |torn| torn.bytes);
            assert!(torn <= cut_record, "kept {keep}");
        }
    }

    // checks: S2 (a flipped bit is caught by the checksum, not replayed as data)
    #[test]
    fn a_corrupt_record_in_an_older_file_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 0, false).unwrap();
        journal.append(&batch(&["a"])).unwrap();
        journal.append(&batch(&["b"])).unwrap();
        journal.rotate().unwrap();
        journal.append(&batch(&["c"])).unwrap();
        let path = file_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let error = Journal::read(dir.path(), 0)
            .err()
            .expect("corruption must stop the start");
        assert!(error.to_string().contains("corrupt"), "{error}");
        assert!(
            matches!(
                &error,
                Error::CorruptJournal {
                    file,
                    damage: JournalDamage::LaterFileHoldsData { .. },
                    ..
                } if *file == path
            ),
            "{error:?}"
        );
    }

    // checks: S2 (foreign files are refused, not skipped)
    #[test]
    fn foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        assert!(Journal::read(dir.path(), 0).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(file_path(dir.path(), 1), b"something else entirely").unwrap();
        assert!(Journal::read(dir.path(), 0).is_err());
    }

    // checks: S2 (records in a prepared file come back; its zeros are a clean end, in any
    // file; garbage after the records of an older file stops the start)
    #[test]
    fn prepared_files_replay_and_end_at_their_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 0, true).unwrap();
        let next = journal.next_file();
        next.prepare(64 * 1024).unwrap();
        let second = file_path(dir.path(), 2);
        assert!(std::fs::metadata(&second).unwrap().len() > 64 * 1024);
        assert!(!dir.path().join(NEXT_PARTIAL).exists());
        journal.append(&batch(&["a"])).unwrap();
        journal.append(&JournalBatch::default()).unwrap();
        journal.append(&batch(&["b"])).unwrap();
        // A crash now: the prepared file is there, empty.
        let replay = Journal::read(dir.path(), 0).unwrap();
        assert_eq!(keys(&replay), ["a", "b"]);
        assert_eq!(replay.generations, [1, 2]);

        assert_eq!(journal.rotate().unwrap(), 1);
        journal.append(&batch(&["c"])).unwrap();
        assert!(
            std::fs::metadata(&second).unwrap().len() > 64 * 1024,
            "the rotation did not use the prepared file"
        );
        next.prepare(64 * 1024).unwrap();
        journal.rotate().unwrap();
        journal.append(&batch(&["d"])).unwrap();
        let replay = Journal::read(dir.path(), 0).unwrap();
        assert_eq!(keys(&replay), ["a", "b", "c", "d"]);
        assert_eq!(replay.torn, None);

        let mut bytes = std::fs::read(&second).unwrap();
        let end = journal_end(&bytes);
        bytes[end + 100] = 0x17;
        std::fs::write(&second, bytes).unwrap();
        let error = Journal::read(dir.path(), 0)
            .err()
            .expect("garbage must stop the start");
        assert!(error.to_string().contains("corrupt"), "{error}");
    }

    // checks: S2 (a record torn by a crash is still just a torn tail when the prepared next
    // file sits after it: that file holds nothing)
    #[test]
    fn a_torn_record_before_a_prepared_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 0, false).unwrap();
        journal.append(&batch(&["a"])).unwrap();
        let after_a = journal.len() as usize;
        journal.append(&batch(&["b"])).unwrap();
        journal.next_file().prepare(64 * 1024).unwrap();
        let first = file_path(dir.path(), 1);
        let bytes = std::fs::read(&first).unwrap();
        std::fs::write(&first, &bytes[..after_a + 5]).unwrap();
        let replay = Journal::read(dir.path(), 0).unwrap();
        assert_eq!(keys(&replay), ["a"]);
        let torn = replay.torn.unwrap();
        assert_eq!(
            (torn.file, torn.offset, torn.bytes),
            (first, after_a as u64, 5)
        );
        assert_eq!(replay.generations, [1, 2]);
    }

    // checks: S2 (a preparation never takes the name of a file the committer made itself)
    #[test]
    fn a_rotation_without_a_prepared_file_makes_one_and_the_next_preparation_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 0, true).unwrap();
        journal.append(&batch(&["a"])).unwrap();
        assert_eq!(journal.rotate().unwrap(), 1);
        journal.append(&batch(&["b"])).unwrap();
        journal
            .next_file()
            .prepare(SPARE_BYTES.start() / 16)
            .unwrap();
        assert_eq!(list(dir.path()).unwrap(), [1, 2, 3]);
        assert_eq!(journal.rotate().unwrap(), 2);
        journal.append(&batch(&["c"])).unwrap();
        let replay = Journal::read(dir.path(), 0).unwrap();
        assert_eq!(keys(&replay), ["a", "b", "c"]);
    }

    /// A journal directory whose newest file holds records "a", "b", "c" and then either
    /// nothing (a file the committer made itself) or a preallocated run of zeros (a
    /// prepared file); the file, and where each record starts and the last one ends.
    fn three_records(preallocated: bool) -> (tempfile::TempDir, PathBuf, [usize; 4]) {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 0, false).unwrap();
        if preallocated {
            journal.next_file().prepare(64 * 1024).unwrap();
            journal.rotate().unwrap();
            std::fs::remove_file(file_path(dir.path(), 1)).unwrap();
        }
        let mut starts = [journal.len() as usize; 4];
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            journal.append(&batch(&[key])).unwrap();
            starts[i + 1] = journal.len() as usize;
        }
        let file = file_path(dir.path(), if preallocated { 2 } else { 1 });
        (dir, file, starts)
    }

    /// A change to a journal file's bytes, given where its records start (see
    /// [`three_records`]).
    type Damage = dyn Fn(&mut Vec<u8>, [usize; 4]);

    /// Changes `file` with `damage` and reads the journal back.
    fn read_damaged(
        dir: &Path,
        file: &Path,
        damage: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Replay, Error> {
        let mut bytes = std::fs::read(file).unwrap();
        damage(&mut bytes);
        std::fs::write(file, bytes).unwrap();
        Journal::read(dir, 0)
    }

    /// Asserts that reading was refused as corruption of `file` at byte `offset`, and that
    /// the message says so.
    fn assert_refused(result: Result<Replay, Error>, file: &Path, offset: usize, case: &str) {
        let error = match result {
            Ok(replay) => panic!("{case}: accepted, replaying {:?}", keys(&replay)),
            Err(error) => error,
        };
        let Error::CorruptJournal {
            file: named,
            offset: at,
            ..
        } = &error
        else {
            panic!("{case}: {error:?}");
        };
        assert_eq!(
            (named.as_path(), *at),
            (file, offset as u64),
            "{case}: {error}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&file.display().to_string()),
            "{case}: {message}"
        );
        assert!(
            message.contains(&format!("byte {offset}")),
            "{case}: {message}"
        );
    }

    // checks: S1, S2 (damage to any record that a later record follows is corruption, never
    // a torn tail: the replay refuses, naming the file and the record's offset, instead of
    // dropping acknowledged grants)
    #[test]
    fn damage_before_a_later_record_refuses_the_start_with_file_and_offset() {
        for preallocated in [false, true] {
            for (record, label) in [(0, "first"), (1, "middle")] {
                let cases: Vec<(&str, Box<Damage>)> = vec![
                    (
                        "a flipped bit in the length",
                        Box::new(move |b, s| b[s[record]] ^= 0x04),
                    ),
                    (
                        "a flipped bit in the payload",
                        Box::new(move |b, s| b[s[record + 1] - 1] ^= 0x40),
                    ),
                    (
                        "a flipped bit in the checksum",
                        Box::new(move |b, s| b[s[record] + 9] ^= 0x01),
                    ),
                    (
                        "a length of 0",
                        Box::new(move |b, s| b[s[record]..s[record] + 4].copy_from_slice(&[0; 4])),
                    ),
                    (
                        "a header of zeros",
                        Box::new(move |b, s| b[s[record]..s[record] + HEADER_BYTES].fill(0)),
                    ),
                    (
                        "a length swallowing the next record",
                        Box::new(move |b, s| {
                            let swallow = (s[record + 2] - s[record] - HEADER_BYTES) as u32;
                            b[s[record]..s[record] + 4].copy_from_slice(&swallow.to_le_bytes());
                        }),
                    ),
                    (
                        "a length reaching into the zeros after the last record",
                        Box::new(move |b, s| {
                            let long = (s[3] - s[record] + 40) as u32;
                            b[s[record]..s[record] + 4].copy_from_slice(&long.to_le_bytes());
                        }),
                    ),
                    (
                        "a length past the end of the file",
                        Box::new(move |b, s| {
                            let huge = (b.len() - s[record] + 4096) as u32;
                            b[s[record]..s[record] + 4].copy_from_slice(&huge.to_le_bytes());
                        }),
                    ),
                ];
                for (damage, change) in cases {
                    let case = format!("{label} record, {damage}, preallocated {preallocated}");
                    let (dir, file, starts) = three_records(preallocated);
                    let result = read_damaged(dir.path(), &file, |bytes| change(bytes, starts));
                    assert_refused(result, &file, starts[record], &case);
                }
            }
        }
    }

    // checks: S2 (a damaged last record with non-zero bytes past where it ends is not a torn
    // append: nothing after the last append is ever written)
    #[test]
    fn a_damaged_last_record_with_data_after_it_refuses_the_start() {
        let (dir, file, starts) = three_records(true);
        let result = read_damaged(dir.path(), &file, |bytes| {
            bytes[starts[3] - 1] ^= 0x40;
            bytes[starts[3] + 300] = 0x17;
        });
        assert_refused(result, &file, starts[2], "payload flipped, a byte after it");
    }

    // checks: S2 (what a torn last append can look like, after a crash during it, with the
    // file's zeros after it: its tail missing, its header missing or garbage with part of
    // its payload there; each is accepted as a torn tail, and the records before it come
    // back)
    #[test]
    fn a_torn_last_append_in_any_shape_is_a_torn_tail() {
        let shapes: Vec<(&str, Box<Damage>)> = vec![
            (
                "its header alone",
                Box::new(|b, s| b[s[2] + HEADER_BYTES..s[3]].fill(0)),
            ),
            (
                "half of it",
                Box::new(|b, s| b[(s[2] + s[3]) / 2..s[3]].fill(0)),
            ),
            ("all but its last byte", Box::new(|b, s| b[s[3] - 1] = 0)),
            (
                "its payload without its header",
                Box::new(|b, s| b[s[2]..s[2] + HEADER_BYTES].fill(0)),
            ),
            (
                "its payload's end without its start",
                Box::new(|b, s| b[s[2]..s[2] + HEADER_BYTES + 2].fill(0)),
            ),
            (
                "a garbage length, part of its payload",
                Box::new(|b, s| {
                    b[s[2]..s[2] + 4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
                    b[s[3] - 3..s[3]].fill(0);
                }),
            ),
        ];
        for preallocated in [false, true] {
            for (shape, change) in &shapes {
                let case = format!("{shape}, preallocated {preallocated}");
                let (dir, file, starts) = three_records(preallocated);
                let replay = read_damaged(dir.path(), &file, |bytes| change(bytes, starts))
                    .unwrap_or_else(|error| panic!("{case}: {error}"));
                assert_eq!(keys(&replay), ["a", "b"], "{case}");
                let torn = replay
                    .torn
                    .unwrap_or_else(|| panic!("{case}: no torn tail"));
                assert_eq!(
                    (torn.file, torn.offset),
                    (file.clone(), starts[2] as u64),
                    "{case}"
                );
            }
        }
    }

    // checks: S2 (a record whose checksum passes holds what was written, so one that does
    // not decode is corruption even as the last record: no crash makes it)
    #[test]
    fn a_record_that_passes_its_checks_but_does_not_decode_refuses_the_start() {
        let (dir, file, starts) = three_records(true);
        let result = read_damaged(dir.path(), &file, |bytes| {
            let payload = [0xff_u8; 3];
            let length = payload.len() as u32;
            let mut record = length.to_le_bytes().to_vec();
            record.extend_from_slice(&length_check(length).to_le_bytes());
            record.extend_from_slice(&checksum(length, &payload).to_le_bytes());
            record.extend_from_slice(&payload);
            bytes[starts[3]..starts[3] + record.len()].copy_from_slice(&record);
        });
        assert_refused(result, &file, starts[3], "an undecodable last record");
    }

    // checks: S2 (a file the committer made whose header a crash cut short holds nothing;
    // a file with another header is not ours)
    #[test]
    fn a_newest_file_whose_header_was_cut_short_is_empty() {
        for (cut, torn) in [
            (&MAGIC[..0], None),
            (&MAGIC[..3], Some(3)),
            (&MAGIC[..], None),
        ] {
            let (dir, _, _) = three_records(false);
            let mut bytes = cut.to_vec();
            bytes.resize(4096, 0);
            std::fs::write(file_path(dir.path(), 2), bytes).unwrap();
            let replay = Journal::read(dir.path(), 0).unwrap();
            assert_eq!(keys(&replay), ["a", "b", "c"]);
            assert_eq!(replay.torn.map(|torn| torn.bytes), torn);
        }
        let (dir, _, _) = three_records(false);
        let mut bytes = b"fncdJNL1".to_vec();
        bytes.resize(4096, 0);
        let other = file_path(dir.path(), 2);
        std::fs::write(&other, bytes).unwrap();
        let error = Journal::read(dir.path(), 0).err().expect("another format");
        assert!(
            matches!(&error, Error::CorruptJournal { file, offset: 0, damage: JournalDamage::NotAJournal } if *file == other),
            "{error:?}"
        );
    }

    // checks: S2, S7 (files sled already holds are not read at all: their damage or their
    // old values cannot matter)
    #[test]
    fn files_sled_holds_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 0, false).unwrap();
        journal.append(&batch(&["a"])).unwrap();
        journal.rotate().unwrap();
        journal.append(&batch(&["b"])).unwrap();
        std::fs::write(file_path(dir.path(), 1), b"garbage").unwrap();
        let replay = Journal::read(dir.path(), 1).unwrap();
        assert_eq!(keys(&replay), ["b"]);
        assert_eq!(replay.generations, [1, 2]);
        assert_eq!(replay.read, [2]);
    }

    /// Where the records of a journal file end.
    fn journal_end(bytes: &[u8]) -> usize {
        let mut at = MAGIC.len();
        while let Record::Valid { len, .. } = record(&bytes[at..]) {
            at += len;
        }
        at
    }

    #[test]
    fn remove_through_keeps_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 0, false).unwrap();
        journal.rotate().unwrap();
        journal.rotate().unwrap();
        remove_through(dir.path(), 2, true).unwrap();
        assert_eq!(list(dir.path()).unwrap(), [3]);
        assert!(journal.is_empty());
    }
}
