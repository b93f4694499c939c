//! Recovery at start: opens sled in the data directory, replays the journal over it and
//! reads every record back, refusing anything that could lose acknowledged writes or
//! issue a token again.
//!
//! The journal files newer than the generation sled records as held (`g`) are replayed
//! over what sled recovered (whole-value puts and deletes in order), written to sled and
//! flushed before the server serves; older files left behind are deleted unread, since
//! replaying them would put back values sled holds newer ones of. Then the token
//! [`Marker`] is checked against the next token sled holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fenced_types::FencingToken;

use crate::checkpoint;
use crate::error::{Error, RecordDamage};
use crate::journal::{self, Journal};
use crate::marker::Marker;
use crate::record::{read_back, CHECKPOINTED_KEY, NEXT_TOKEN_KEY};
use crate::table::{RestoredDelay, RestoredLease, RestoredLock, RestoredWaiter};

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
    /// Every queued acquirer, in no particular order.
    pub waiters: Vec<RestoredWaiter>,
    /// The revision of the last event (0: none ever).
    pub last_revision: u64,
}

/// What opening the data directory leaves for the [`crate::store::Store`]: sled holding
/// everything the journal held, a new journal file to append to, and what was on disk.
pub(crate) struct Opened {
    /// sled, with the journal replayed into it.
    pub db: sled::Db,
    /// sled's data file, synced after each checkpoint (`None`: `--no-fdatasync`).
    pub data_file: Option<Arc<std::fs::File>>,
    /// `<data dir>/journal`.
    pub journal_dir: PathBuf,
    /// The new journal file, after every generation sled holds.
    pub journal: Journal,
    /// The token floor, checked against sled's next token.
    pub marker: Marker,
    /// What was on disk.
    pub recovered: Recovered,
}

/// How long opening waits for sled's file lock to be let go (see [`open`]).
pub(crate) const SLED_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens (or creates) the data directory `dir` and reads everything back: sled's state with
/// the journal replayed over it. A corrupt or unreadable directory is a clear error, never
/// a panic or a silent reset.
pub(crate) fn open(dir: &Path, fdatasync: bool, cache_bytes: u64) -> Result<Opened, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::OpenIo {
        doing: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput);
    let db = open_sled(&config, dir)?;
    let data_file = if fdatasync {
        let path = dir.join("db");
        let file = std::fs::File::open(&path).map_err(|source| Error::OpenIo {
            doing: "opening for fdatasync",
            path: path.clone(),
            source,
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
    Ok(Opened {
        db,
        data_file,
        journal_dir,
        journal,
        marker,
        recovered,
    })
}

/// Opens sled with `config` (whose path is `dir`), turning its panics into errors.
///
/// sled 0.34 can panic on some corrupt files (sled #1533, #1387): that becomes an error
/// that names the directory. And it lets go of its file lock from background threads after
/// the last handle is dropped (sled #1234, #1289), so a database closed a moment ago in this
/// process can still look locked: that is waited out, within [`SLED_LOCK_WAIT`].
pub(crate) fn open_sled(config: &sled::Config, dir: &Path) -> Result<sled::Db, Error> {
    let deadline = Instant::now() + SLED_LOCK_WAIT;
    let db = loop {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|panic| Error::SledPanicked {
                dir: dir.to_path_buf(),
                message: panic_message(&panic),
            })?;
        match opened {
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            opened => {
                break opened.map_err(|source| Error::OpenSled {
                    dir: dir.to_path_buf(),
                    doing: "opening",
                    source,
                })?
            }
        }
    };
    Ok(db)
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
            return Err(Error::SledBehindJournal {
                dir: dir.to_path_buf(),
                checkpointed,
                oldest,
            });
        }
    }
    // Files are made one generation after another and deleted only once sled holds them,
    // so those sled does not hold yet follow each other without a gap.
    if let Some(pair) = replay.read.windows(2).find(|pair| pair[0] + 1 != pair[1]) {
        return Err(Error::JournalFileMissing {
            dir: dir.to_path_buf(),
            missing: pair[0] + 1,
            before: pair[0],
            after: pair[1],
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
    let mut writes = checkpoint::coalesce(replay.batches.into_iter().map(|batch| batch.ops));
    if let Some(torn) = &replay.torn {
        skip_tokens_of_the_dropped_append(db, dir, &mut writes, torn)?;
    }
    // Exactly a checkpoint of everything replayed, so the old files go once sled holds it.
    checkpoint::into_sled(db, data_file, writes, newest)?;
    journal::remove_through(journal_dir, newest, data_file.is_some())?;
    if ops > 0 {
        tracing::info!(ops, "replayed the journal into sled");
    }
    Ok(newest)
}

/// Moves the token counter past every token the dropped last append may have issued.
///
/// A torn append was never acknowledged, but damage confined to the newest file's last
/// record looks the same and is dropped the same way (`journal` module), and that record
/// may have been acknowledged. Its grants took consecutive tokens from the counter as the
/// records before it left it, and each grant takes far more than one byte of the record,
/// so skipping as many tokens as the record has bytes (plus one) passes every token it can
/// hold. Tokens need only go up, never be dense, so the skip costs nothing (CONTRACT S1).
/// The skipped counter goes into sled with the replay, before anything is served.
fn skip_tokens_of_the_dropped_append(
    db: &sled::Db,
    dir: &Path,
    writes: &mut checkpoint::CoalescedWrites,
    torn: &journal::TornTail,
) -> Result<(), Error> {
    let before = match checkpoint::next_token_in(writes)? {
        Some(next) => next,
        None => {
            let stored = db.get(NEXT_TOKEN_KEY).map_err(|source| Error::OpenSled {
                dir: dir.to_path_buf(),
                doing: "reading the next token",
                source,
            })?;
            // A malformed value is reported by `read_back` with its evidence; here it
            // only needs to be passed over.
            stored
                .and_then(|value| <[u8; 8]>::try_from(value.as_ref()).ok())
                .map_or(FencingToken::FIRST.get(), u64::from_be_bytes)
        }
    };
    let after = before.saturating_add(torn.bytes).saturating_add(1);
    tracing::warn!(
        before,
        after,
        "the token counter skips every token the dropped append could have issued"
    );
    writes.insert(NEXT_TOKEN_KEY.to_vec(), Some(after.to_be_bytes().to_vec()));
    Ok(())
}

/// The newest journal generation sled holds (0 for a new database).
fn checkpointed_generation(db: &sled::Db, dir: &Path) -> Result<u64, Error> {
    let value = db.get(CHECKPOINTED_KEY).map_err(|source| Error::OpenSled {
        dir: dir.to_path_buf(),
        doing: "reading the checkpointed generation",
        source,
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
            damage: RecordDamage::Length {
                len: value.len(),
                expected: 8,
            },
        })?;
    Ok(u64::from_be_bytes(bytes))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string())
}
