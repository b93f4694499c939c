//! [`Checkpointer`]: the thread that moves journaled writes into sled and then deletes the
//! journal files sled now covers.
//!
//! The committer hands over everything one closed journal file holds, record by record as
//! journaled; this thread coalesces it by key (later writes to a key replace earlier ones,
//! so an acquire and its release in the same second cost sled nothing) and writes it to
//! sled. Coalescing here, not on the committer, keeps it off the path between a commit's
//! `fdatasync` and its replies. This thread is the only one that writes to sled while
//! the server runs: sled 0.34's flush holds its global lock against `apply_batch`, so
//! keeping sled off the committer's path is what keeps a checkpoint from stalling commits.
//! A journal file is deleted only after sled's flush and the `fdatasync` of its data file:
//! until then a restart replays it (replaying what sled already holds changes nothing).
//! Between the two it raises the token [`Marker`] to the next token sled now holds, so the
//! floor never runs ahead of the disk and no journal file goes before the floor covers its
//! tokens. Then it prepares the next journal file (the `journal` module says why). Both
//! run here rather than on the committer, so no commit waits behind their file creations
//! and directory syncs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, RecordDamage};
use crate::journal::{self, JournalOp, NextFile};
use crate::marker::Marker;
use crate::record::{CHECKPOINTED_KEY, NEXT_TOKEN_KEY};

/// Writes coalesced by key (the last one wins; `None` deletes), in key order.
pub type CoalescedWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// At most this many writes go into one sled batch: sled 0.34's memory grows with the
/// size of a batch, so a large checkpoint written as one batch holds far more memory than
/// the same writes in chunks.
const SLED_BATCH: usize = 1000;

/// One closed journal file's writes, to go into sled.
pub struct Checkpoint {
    /// Every write of the journal files up to `through`, one entry per journal record, in
    /// the order they were journaled.
    pub records: Vec<Vec<JournalOp>>,
    /// The newest journal generation the batch covers.
    pub through: u64,
    /// How large a spare journal file to prepare next.
    pub spare_bytes: u64,
}

/// The checkpoint thread and the way to it. See the module documentation.
pub struct Checkpointer {
    /// Where checkpoints go; `None` once closed.
    sender: Mutex<Option<SyncSender<Checkpoint>>>,
    /// The thread, joined on close.
    thread: Mutex<Option<JoinHandle<Result<(), Error>>>>,
}

/// What a checkpoint writes to: sled and its data file, the journal directory whose files
/// it deletes, the next journal file it prepares and the token marker it raises.
struct CheckpointFiles {
    /// The database the journal's writes go into.
    db: sled::Db,
    /// sled's data file, synced after each flush (`None`: `--no-fdatasync`).
    data_file: Option<Arc<std::fs::File>>,
    /// `<data dir>/journal`, whose files a checkpoint deletes once sled holds them.
    journal_dir: PathBuf,
    /// The next journal file, prepared here.
    next: NextFile,
    /// The token floor, raised here.
    marker: Marker,
}

impl Checkpointer {
    /// Starts the thread.
    pub fn start(
        db: sled::Db,
        data_file: Option<Arc<std::fs::File>>,
        journal_dir: PathBuf,
        next: NextFile,
        marker: Marker,
    ) -> Result<Checkpointer, Error> {
        // One checkpoint queued behind the one being written: if sled falls further behind,
        // the committer waits here rather than letting memory grow.
        let (sender, receiver) = sync_channel(1);
        let files = CheckpointFiles {
            db,
            data_file,
            journal_dir,
            next,
            marker,
        };
        let thread = std::thread::Builder::new()
            .name("fenced-checkpoint".into())
            .spawn(move || run(files, receiver))
            .map_err(|source| Error::SpawnThread {
                thread: "checkpoint",
                source,
            })?;
        Ok(Checkpointer {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Hands a checkpoint to the thread (waits while one is already queued).
    pub fn submit(&self, checkpoint: Checkpoint) -> Result<(), Error> {
        let sender = self.sender.lock().map_err(|_| Error::Poisoned)?;
        sender
            .as_ref()
            .ok_or(Error::CheckpointerStopped)?
            .send(checkpoint)
            .map_err(|_| Error::CheckpointerStopped)
    }

    /// Lets the thread finish what it was given and waits for it; returns its error, if it
    /// failed.
    pub fn close(&self) -> Result<(), Error> {
        drop(self.sender.lock().map_err(|_| Error::Poisoned)?.take());
        let thread = self.thread.lock().map_err(|_| Error::Poisoned)?.take();
        match thread.map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::ThreadPanicked {
                thread: "checkpoint",
            }),
        }
    }
}

/// Applies checkpoints until the sender is gone or one fails.
fn run(files: CheckpointFiles, receiver: Receiver<Checkpoint>) -> Result<(), Error> {
    let result = files
        .next
        .prepare(*journal::SPARE_BYTES.start())
        .and_then(|()| {
            receiver
                .iter()
                .try_for_each(|checkpoint| apply(&files, checkpoint))
        });
    if let Err(error) = &result {
        // The committer notices on its next submit and stops the server; the journal
        // still holds everything, so a restart loses nothing.
        tracing::error!(%error, "checkpoint failed");
    }
    result
}

/// One checkpoint: into sled, the floor raised, the journal files it covers deleted; then
/// the next journal file.
fn apply(files: &CheckpointFiles, checkpoint: Checkpoint) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let applied = apply_timed(files, checkpoint);
    crate::telemetry::telemetry()
        .checkpoint
        .record(started.elapsed().as_secs_f64());
    applied
}

/// [`apply`]'s work, which it times.
fn apply_timed(files: &CheckpointFiles, checkpoint: Checkpoint) -> Result<(), Error> {
    let writes = coalesce(checkpoint.records);
    let next_token = next_token_in(&writes)?;
    into_sled(
        &files.db,
        files.data_file.as_deref(),
        writes,
        checkpoint.through,
    )?;
    // Every time the token moved, not rate-limited: the journal files about to go are what
    // covered these tokens until now.
    if let Some(next_token) = next_token.filter(|token| files.marker.due(*token)) {
        files.marker.advance(next_token)?;
    }
    // sled's data file is synced exactly when the journal is (`--no-fdatasync` is off).
    let sync = files.data_file.is_some();
    journal::remove_through(&files.journal_dir, checkpoint.through, sync)?;
    files.next.prepare(checkpoint.spare_bytes)
}

/// Coalesces journal records, given in the order they were journaled, by key: the last
/// write to a key wins (`None` deletes it).
pub fn coalesce(records: impl IntoIterator<Item = Vec<JournalOp>>) -> CoalescedWrites {
    let mut writes = CoalescedWrites::new();
    for op in records.into_iter().flatten() {
        writes.insert(op.key, op.value);
    }
    writes
}

/// The next token a checkpoint writes, if it writes one.
pub(crate) fn next_token_in(batch: &CoalescedWrites) -> Result<Option<u64>, Error> {
    let Some(Some(value)) = batch.get(NEXT_TOKEN_KEY) else {
        return Ok(None);
    };
    let bytes: [u8; 8] = value.as_slice().try_into().map_err(|_| {
        Error::CheckpointToken(RecordDamage::Length {
            len: value.len(),
            expected: 8,
        })
    })?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

/// Writes `writes` (the journal's, through generation `through`) into sled, flushes and
/// syncs it; the journal files it covers may go after this. A checkpoint, and the replay
/// at start (`recovery::replay_journal`).
pub fn into_sled(
    db: &sled::Db,
    data_file: Option<&std::fs::File>,
    writes: CoalescedWrites,
    through: u64,
) -> Result<(), Error> {
    let storage = |during: &'static str| move |source| Error::StorageSled { during, source };
    // In chunks (see SLED_BATCH). A crash between chunks leaves sled with part of the
    // checkpoint, which is fine: the journal files are still there and replay is
    // idempotent. The generation goes last, in the last chunk: sled recovers a prefix of
    // its batches, so a restart that sees it sees every chunk before it
    // (`recovery::replay_journal` checks that no journal file after it is missing).
    let mut writes = writes.into_iter().peekable();
    loop {
        let mut batch = sled::Batch::default();
        for (key, value) in writes.by_ref().take(SLED_BATCH) {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        let last = writes.peek().is_none();
        if last {
            batch.insert(CHECKPOINTED_KEY, &through.to_be_bytes());
        }
        db.apply_batch(batch)
            .map_err(storage("checkpoint: writing to sled"))?;
        if last {
            break;
        }
    }
    db.flush().map_err(storage("checkpoint: flushing sled"))?;
    if let Some(file) = data_file {
        file.sync_data().map_err(Error::SyncSledDataFile)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // checks: S1, S2 (a checkpoint writes to sled what the journal last said of each key:
    // a release after its grant deletes, a grant after a release puts, across records and
    // within one)
    #[test]
    fn coalescing_keeps_the_last_write_to_each_key_in_journal_order() {
        let records = vec![
            vec![
                JournalOp::put("lock", "grant 1"),
                JournalOp::put("lease", "a"),
                JournalOp::delete("gone"),
            ],
            vec![JournalOp::delete("lock"), JournalOp::delete("lease")],
            vec![
                JournalOp::put("lock", "grant 2"),
                JournalOp::put("gone", "back"),
                JournalOp::delete("gone"),
            ],
            vec![JournalOp::put("lease", "b"), JournalOp::put("lease", "c")],
        ];
        let writes = coalesce(records);
        let expected: CoalescedWrites = [
            (b"gone".to_vec(), None),
            (b"lease".to_vec(), Some(b"c".to_vec())),
            (b"lock".to_vec(), Some(b"grant 2".to_vec())),
        ]
        .into_iter()
        .collect();
        assert_eq!(writes, expected);
        assert!(coalesce(Vec::new()).is_empty());
    }
}
