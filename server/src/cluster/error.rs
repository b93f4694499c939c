//! [`RaftStoreError`]: why the raft log or the state machine cannot be read or written,
//! with the evidence (the file and offset, the directory, what was being done). openraft
//! receives it wrapped in its own `StorageError`, which stops the raft node: a storage
//! failure is fatal, as it is for the single node.

use std::path::PathBuf;

use crate::frame::FrameDamage;

/// A failure of the cluster's durable storage, with the evidence.
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    /// A file or directory could not be made, listed, read, written or synced.
    #[error("raft storage: {doing} {}: {source}", path.display())]
    Io {
        /// What was being done to `path`.
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A log segment is damaged beyond what a crash leaves behind.
    #[error("corrupt raft log {} at byte {offset}: {damage}", file.display())]
    CorruptLog {
        /// The segment file.
        file: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong there.
        #[source]
        damage: LogDamage,
    },
    /// One of the small state files (vote, purged log id) is damaged.
    #[error("corrupt raft state file {}: {problem}", file.display())]
    CorruptStateFile {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The directory holds a file that is not ours.
    #[error("unexpected file {} in the raft log directory", path.display())]
    UnexpectedFile {
        /// The file.
        path: PathBuf,
    },
    /// A segment the log's index points into is gone (a bug: segments are deleted only
    /// once no live entry is in them).
    #[error("raft log segment {} is missing", path.display())]
    MissingSegment {
        /// The segment.
        path: PathBuf,
    },
    /// The segment sequence numbers ran out.
    #[error("raft log segment numbers exhausted in {}", dir.display())]
    SegmentsExhausted {
        /// The log directory.
        dir: PathBuf,
    },
    /// A value could not be encoded.
    #[error("raft storage: cannot encode {what}: {problem}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// What serde said.
        problem: String,
    },
    /// sled (the state machine's image) failed.
    #[error("raft state machine in {}: {doing}: {source}", dir.display())]
    Sled {
        /// The state machine's directory.
        dir: PathBuf,
        /// What was being done.
        doing: &'static str,
        /// What sled said.
        #[source]
        source: sled::Error,
    },
    /// A value the state machine stores (last applied, membership, snapshot) is damaged.
    #[error("raft state machine in {}: corrupt {what}: {problem}", dir.display())]
    CorruptStateMachine {
        /// The state machine's directory.
        dir: PathBuf,
        /// Which value.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A snapshot received from the leader does not decode.
    #[error("a received raft snapshot does not decode: {problem}")]
    BadSnapshot {
        /// What is wrong with it.
        problem: String,
    },
    /// The state machine's sled database could not be opened (see `recovery::open_sled`).
    #[error("raft state machine: {source}")]
    OpenSled {
        /// Why.
        #[source]
        source: Box<crate::Error>,
    },
    /// The state machine's token floor marker refused the image (sled came back older than
    /// tokens this member applied), or could not be read or raised.
    #[error("raft state machine: {source}")]
    Marker {
        /// Why (the marker's error, with the directory and the tokens).
        #[source]
        source: Box<crate::Error>,
    },
    /// An entry is too large to frame (over 4 GiB).
    #[error("a raft log entry of {bytes} bytes is too large")]
    EntryTooLarge {
        /// Its encoded size.
        bytes: usize,
    },
    /// The blocking task that ran a write failed (it panicked, or the runtime is shutting
    /// down).
    #[error("raft storage: the blocking task of a write failed: {problem}")]
    BlockingTask {
        /// What tokio said.
        problem: String,
    },
    /// A panic poisoned the log's lock.
    #[error("the raft log's lock was poisoned by a panic")]
    Poisoned,
}

/// How a raft log segment is damaged (the evidence of a [`RaftStoreError::CorruptLog`]).
#[derive(Debug, thiserror::Error)]
pub enum LogDamage {
    /// The file does not start with the segment magic bytes.
    #[error("the file does not start with the raft log's magic bytes")]
    NotALog,
    /// A record is damaged (see [`crate::frame`]).
    #[error(transparent)]
    Frame(#[from] FrameDamage),
    /// The segment ends torn, but a later segment exists: segments are made only after the
    /// previous one's last append was synced.
    #[error("the segment ends torn there, but a later segment {} exists", later.display())]
    TornBeforeLaterSegment {
        /// The later segment.
        later: PathBuf,
    },
    /// An entry's index does not follow the previous one's (a hole in the log).
    #[error("entry index {found} where {expected} was expected")]
    OutOfOrder {
        /// The index that should come next.
        expected: u64,
        /// The index found.
        found: u64,
    },
    /// An entry's payload is not one of ours.
    #[error("the entry does not decode: {problem}")]
    BadEntry {
        /// What is wrong with it.
        problem: String,
    },
}

impl RaftStoreError {
    /// An I/O failure on `path`.
    pub(crate) fn io(doing: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        RaftStoreError::Io {
            doing,
            path: path.to_path_buf(),
            source,
        }
    }
}
