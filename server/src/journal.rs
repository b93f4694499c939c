//! [`Journal`]: the append-only log that makes a commit durable with one `write` and one
//! `fdatasync`, ahead of sled.
//!
//! Why it exists: a sled 0.34 `flush` costs far more than the sync itself. Each flush seals
//! an I/O buffer and hands it to sled's I/O thread pool, whose queue wakes every idle
//! thread (`notify_all`) for each buffer; with group commit at ~1,000 commits a second
//! that was half of the server's CPU, and the cycle benchmark ran at 9,000 cycles/s with
//! sled against 20,000 with no storage at all (BENCHMARKS.md). So a commit now appends its
//! writes here and syncs this file; sled receives them in large batches, in the
//! background, at a [checkpoint](crate::store) (about once a second), and a journal file is
//! deleted only after sled has flushed (and `fdatasync`ed) everything it holds. This is the
//! shape of the replicated future too: the journal is the log, sled the state machine's
//! durable image.
//!
//! Files: `<data dir>/journal/<generation>.log`, 20-digit generations that only go up. A
//! file starts with [`MAGIC`]; then records, each `length (u32 LE) | crc32 (u32 LE) |
//! payload`, the payload one [`JournalBatch`] (prost). Replaying a record applies its
//! operations (whole-value puts and deletes) in order, so replaying records sled already
//! holds changes nothing: recovery replays every file over whatever sled recovered.
//!
//! Preallocation: the next journal file is prepared ahead of time by the checkpoint thread
//! ([`NextFile`]): written full of zeros, synced, given its final name and its directory
//! entry synced, all before the committer needs it. Rotating to it then costs the
//! committer one `open`, not the `fsync` of the directory that a new name needs before any
//! record in the file may be acknowledged (about a millisecond here, once a second, with
//! every waiting commit behind it). Appending inside blocks that already exist on disk
//! also lets `fdatasync` skip the file-size update and its ext4 journal commit: measured
//! here, 175 us instead of 288 us per append + `fdatasync`, and fewer I/O requests per
//! commit. So a file ends in zeros; replay stops at the first record whose length is 0, and
//! a prepared file that never got a record (a crash came first) replays as empty.
//!
//! Torn writes: a crash can cut the last record short. That record was never acknowledged
//! (a commit is answered only after its `fdatasync`), so a bad record ends the replay of
//! the file that was being appended to: the last one holding anything (only the prepared
//! next file, empty, can follow it). A bad record in a file that later records follow
//! cannot come from a crash (the committer moves on only after its last record was
//! synced), so it is corruption and stops the start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prost::Message;

use crate::error::Error;

/// The first bytes of every journal file (format version 1).
pub const MAGIC: &[u8; 8] = b"fncdJNL1";

/// The next journal file while it is being written (it gets its name once complete and
/// synced).
const NEXT_PARTIAL: &str = "next.tmp";
/// Where earlier versions kept a prepared file before the committer named it; skipped when
/// listing, so their data directories still open.
const LEGACY_SPARE: &str = "spare.tmp";

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

/// The operations of one commit, applied atomically and in order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JournalBatch {
    /// The operations.
    #[prost(message, repeated, tag = "1")]
    pub ops: Vec<JournalOp>,
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
    /// Every complete record, oldest first.
    pub batches: Vec<JournalBatch>,
    /// The generations of the files read (to delete once sled holds their records).
    pub generations: Vec<u64>,
    /// Bytes of a torn last record that were ignored (0 after a clean stop).
    pub torn_bytes: u64,
}

impl Journal {
    /// Reads every journal file in `dir` (created if missing), oldest first.
    pub fn read(dir: &Path) -> Result<Replay, Error> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "creating", e))?;
        let generations = list(dir)?;
        let mut replay = Replay {
            batches: Vec::new(),
            generations: generations.clone(),
            torn_bytes: 0,
        };
        // A file whose last record was cut short, and by how many bytes: fine if it was the
        // file being appended to at the crash, i.e. no later file holds anything (a later
        // file can only be the prepared next one, all zeros).
        let mut cut: Option<(PathBuf, u64)> = None;
        for generation in &generations {
            let path = file_path(dir, *generation);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .map_err(|e| io_error(&path, "reading", e))?;
            let (batches, torn) = parse(&bytes).map_err(|reason| Error::Open {
                dir: path.clone(),
                reason,
            })?;
            if let Some((cut_path, cut_bytes)) = &cut {
                if !batches.is_empty() || torn > 0 {
                    return Err(Error::Open {
                        dir: cut_path.clone(),
                        reason: format!(
                            "a bad record {cut_bytes} bytes before the end of a journal file \
                             that later files continue: the journal is corrupt"
                        ),
                    });
                }
            }
            if torn > 0 {
                cut = Some((path, torn));
            }
            replay.torn_bytes += torn;
            replay.batches.extend(batches);
        }
        Ok(replay)
    }

    /// Starts a new, empty journal file after generation `after` (0 for a new journal).
    pub fn create(dir: &Path, after: u64, fdatasync: bool) -> Result<Journal, Error> {
        let generation = after.checked_add(1).ok_or_else(|| Error::Open {
            dir: dir.to_path_buf(),
            reason: "journal generations exhausted".to_string(),
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
        self.buffer.clear();
        let payload_len = batch.encoded_len();
        let length = u32::try_from(payload_len).map_err(|_| Error::Storage {
            during: "appending to the journal",
            reason: format!("a batch of {payload_len} bytes does not fit a record"),
        })?;
        self.buffer.extend_from_slice(&length.to_le_bytes());
        self.buffer.extend_from_slice(&[0; 4]);
        batch.encode(&mut self.buffer).map_err(|e| Error::Storage {
            during: "encoding a journal record",
            reason: e.to_string(),
        })?;
        let crc = crc32fast::hash(&self.buffer[8..]);
        self.buffer[4..8].copy_from_slice(&crc.to_le_bytes());
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

/// Deletes every journal file of generation `up_to` or older (sled holds their records).
pub fn remove_through(dir: &Path, up_to: u64) -> Result<(), Error> {
    for generation in list(dir)? {
        if generation <= up_to {
            let path = file_path(dir, generation);
            std::fs::remove_file(&path).map_err(|e| storage_error(&path, "deleting", e))?;
        }
    }
    Ok(())
}

/// The records of one file and the bytes of a bad tail (0 if none). An error only for a
/// file that is not a journal file at all.
fn parse(bytes: &[u8]) -> Result<(Vec<JournalBatch>, u64), String> {
    if bytes.len() < MAGIC.len() {
        // Created, then the crash came before its header was on disk: nothing in it.
        return Ok((Vec::new(), bytes.len() as u64));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a fenced journal file (bad header)".to_string());
    }
    let mut batches = Vec::new();
    let mut rest = &bytes[MAGIC.len()..];
    while !rest.is_empty() {
        let Some(batch) = record(rest) else {
            // Zeros are the preallocated end; anything else is a record cut short.
            let torn = rest
                .iter()
                .rposition(|byte| *byte != 0)
                .map_or(0, |last| last + 1);
            return Ok((batches, torn as u64));
        };
        batches.push(batch.0);
        rest = &rest[batch.1..];
    }
    Ok((batches, 0))
}

/// The record at the start of `bytes` and its length, or `None` if it is cut short, fails
/// its checksum or is empty (length 0: the zeros of a preallocated file; no commit is
/// empty).
fn record(bytes: &[u8]) -> Option<(JournalBatch, usize)> {
    let length = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    if length == 0 {
        return None;
    }
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(8..8usize.checked_add(length)?)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let batch = JournalBatch::decode(payload).ok()?;
    Some((batch, 8 + length))
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
            return Err(Error::Storage {
                during: "preparing the next journal file",
                reason: format!("{} exists already", path.display()),
            });
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
        if name == NEXT_PARTIAL || name == LEGACY_SPARE {
            continue;
        }
        let generation = name
            .to_str()
            .and_then(|name| name.strip_suffix(".log"))
            .and_then(|stem| stem.parse::<u64>().ok())
            .ok_or_else(|| Error::Open {
                dir: dir.to_path_buf(),
                reason: format!("unexpected file {name:?} in the journal directory"),
            })?;
        generations.push(generation);
    }
    generations.sort_unstable();
    Ok(generations)
}

fn file_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{generation:020}.log"))
}

fn io_error(path: &Path, doing: &str, error: std::io::Error) -> Error {
    Error::Open {
        dir: path.to_path_buf(),
        reason: format!("{doing}: {error}"),
    }
}

fn storage_error(path: &Path, doing: &str, error: std::io::Error) -> Error {
    Error::Storage {
        during: "writing the journal",
        reason: format!("{doing} {}: {error}", path.display()),
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
        let replay = Journal::read(dir.path()).unwrap();
        assert_eq!(keys(&replay), ["a", "b", "c", "a"]);
        assert_eq!(replay.batches[2].ops[0].value, None);
        assert_eq!(replay.generations, [1, 2]);
        assert_eq!(replay.torn_bytes, 0);
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
            let replay = Journal::read(copy.path()).unwrap();
            let expected: &[&str] = if keep >= after_a { &["a"] } else { &[] };
            assert_eq!(keys(&replay), expected, "kept {keep} of {full} bytes");
            let cut_record = keep - if keep >= after_a { after_a } else { 8 };
            // Trailing zeros of the cut record read as the preallocated end.
            assert!(replay.torn_bytes <= cut_record, "kept {keep}");
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
        let error = Journal::read(dir.path())
            .err()
            .expect("corruption must stop the start");
        assert!(error.to_string().contains("corrupt"), "{error}");
    }

    // checks: S2 (foreign files are refused, not skipped)
    #[test]
    fn foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        assert!(Journal::read(dir.path()).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(file_path(dir.path(), 1), b"something else entirely").unwrap();
        assert!(Journal::read(dir.path()).is_err());
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
        let replay = Journal::read(dir.path()).unwrap();
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
        let replay = Journal::read(dir.path()).unwrap();
        assert_eq!(keys(&replay), ["a", "b", "c", "d"]);
        assert_eq!(replay.torn_bytes, 0);

        let mut bytes = std::fs::read(&second).unwrap();
        let end = journal_end(&bytes);
        bytes[end + 100] = 0x17;
        std::fs::write(&second, bytes).unwrap();
        let error = Journal::read(dir.path())
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
        let replay = Journal::read(dir.path()).unwrap();
        assert_eq!(keys(&replay), ["a"]);
        assert_eq!(replay.torn_bytes, 5);
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
        let replay = Journal::read(dir.path()).unwrap();
        assert_eq!(keys(&replay), ["a", "b", "c"]);
    }

    /// Where the records of a journal file end.
    fn journal_end(bytes: &[u8]) -> usize {
        let mut at = MAGIC.len();
        while let Some((_, len)) = record(&bytes[at..]) {
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
        remove_through(dir.path(), 2).unwrap();
        assert_eq!(list(dir.path()).unwrap(), [3]);
        assert!(journal.is_empty());
    }
}
