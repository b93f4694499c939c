//! [`Error`]: what stops the server (at start or while running). Refusals of single
//! requests are not errors: they are [`crate::table::Refusal`]s, answered and forgotten.
//!
//! Each variant names its evidence (the file or directory, what was being done) and
//! carries the underlying error as its `source`; the message repeats the source, since the
//! server logs and prints errors by their message alone.

use std::ffi::OsString;
use std::path::PathBuf;

use fenced_types::{FencingToken, InvalidInput};

use crate::config::ConfigError;
use crate::journal::JournalDamage;
use crate::table::RestoreError;
use crate::tls::TlsProblem;

/// A failure that stops the server, with the evidence.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin listener's address could not be bound.
    #[error("cannot listen on {addr} (admin listener): {source}")]
    AdminListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The Prometheus recorder could not be installed (another recorder was installed in
    /// this process first).
    #[error("cannot install the metrics recorder: {0}")]
    MetricsRecorder(#[from] metrics_exporter_prometheus::BuildError),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A file or directory of the data directory could not be made, listed, read or opened
    /// at start.
    #[error("cannot open the data directory: {doing} {}: {source}", path.display())]
    OpenIo {
        /// What was being done to `path`.
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// sled could not open or read the data directory (it may be corrupt, from another
    /// program, or held by another process).
    #[error("cannot open the data directory {}: {doing}: {source}", dir.display())]
    OpenSled {
        /// The data directory.
        dir: PathBuf,
        /// What sled was doing.
        doing: &'static str,
        /// What sled said.
        #[source]
        source: sled::Error,
    },
    /// sled panicked opening the data directory (sled 0.34 does on some corrupt files).
    #[error("cannot open the data directory {}: sled panicked: {message}", dir.display())]
    SledPanicked {
        /// The data directory.
        dir: PathBuf,
        /// The panic's message.
        message: String,
    },
    /// sled holds fewer journal generations than the journal files left need: sled lost
    /// checkpointed writes (a damaged or replaced data file).
    #[error(
        "cannot open the data directory {}: sled holds the journal only through generation \
         {checkpointed}, but the oldest journal file left is generation {oldest}: sled lost \
         checkpointed writes (a damaged or replaced data file); refusing to serve without them",
        dir.display()
    )]
    SledBehindJournal {
        /// The data directory.
        dir: PathBuf,
        /// The newest generation sled holds.
        checkpointed: u64,
        /// The oldest journal file left.
        oldest: u64,
    },
    /// A journal file that sled does not hold yet is missing between two others.
    #[error(
        "cannot open the data directory {}: journal generation {missing} is missing between \
         generations {before} and {after}, which sled does not hold yet: acknowledged writes \
         are lost; refusing to serve without them",
        dir.display()
    )]
    JournalFileMissing {
        /// The data directory.
        dir: PathBuf,
        /// The missing generation.
        missing: u64,
        /// The generation before the gap.
        before: u64,
        /// The generation after the gap.
        after: u64,
    },
    /// The journal directory holds a file that is not a journal file.
    #[error(
        "cannot open the data directory: unexpected file {name:?} in the journal directory {}",
        dir.display()
    )]
    UnexpectedJournalFile {
        /// The journal directory.
        dir: PathBuf,
        /// The file's name.
        name: OsString,
    },
    /// The journal's generation numbers ran out (after 2^64 - 1 files).
    #[error("cannot open the data directory: journal generations exhausted in {}", dir.display())]
    JournalGenerationsExhausted {
        /// The journal directory.
        dir: PathBuf,
    },
    /// A stored record does not decode: the data directory is corrupt. The server refuses to
    /// start rather than guess, since a guess could reset the token counter.
    #[error("corrupt record {key} in {}: {damage}", dir.display())]
    CorruptRecord {
        /// The data directory.
        dir: PathBuf,
        /// The record's key, escaped.
        key: String,
        /// Why it does not decode.
        #[source]
        damage: RecordDamage,
    },
    /// The token marker file does not hold a marker.
    #[error("corrupt token marker {}: unreadable marker {text:?}", path.display())]
    CorruptMarker {
        /// The marker file.
        path: PathBuf,
        /// Its first characters.
        text: String,
    },
    /// sled's next token is below the token marker's floor: the database lost data.
    #[error(
        "corrupt record t (next token) in {}: sled recovered next token {recovered}, but \
         tokens up to {issued_through} were already issued ({}): the database lost data, and \
         serving from it would issue old tokens again. Restore the directory from a backup, \
         or move it aside to start over knowingly.",
        dir.display(),
        crate::marker::MARKER_FILE
    )]
    TokensBehindMarker {
        /// The data directory.
        dir: PathBuf,
        /// The next token sled recovered.
        recovered: FencingToken,
        /// The highest token the marker says was issued.
        issued_through: u64,
    },
    /// A journal file is damaged in a way no crash leaves behind (the `journal` module's
    /// documentation gives the rule). The server refuses to start: replaying up to the
    /// damage would drop acknowledged writes, and could issue tokens again.
    #[error(
        "corrupt journal file {} at byte {offset}: {damage}; refusing to start rather than \
         drop acknowledged writes (restore the data directory from a backup)",
        file.display()
    )]
    CorruptJournal {
        /// The journal file.
        file: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong there.
        #[source]
        damage: JournalDamage,
    },
    /// The stored state contradicts itself.
    #[error("inconsistent data in {}: {source}", dir.display())]
    Inconsistent {
        /// The data directory.
        dir: PathBuf,
        /// What contradicts what.
        source: RestoreError,
    },
    /// Reading or writing a file failed while running. Memory and disk may now differ, so
    /// the server stops; a restart recovers from what is on disk, which is everything any
    /// client was told.
    #[error("storage failure during {during}: {doing} {}: {source}", path.display())]
    StorageIo {
        /// What the server was doing.
        during: &'static str,
        /// What was being done to `path`.
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Writing to sled failed while running (see [`Error::StorageIo`]).
    #[error("storage failure during {during}: {source}")]
    StorageSled {
        /// What the server was doing.
        during: &'static str,
        /// What sled said.
        #[source]
        source: sled::Error,
    },
    /// sled's data file could not be synced after a checkpoint's flush.
    #[error("storage failure during checkpoint: fdatasync of sled's data file: {0}")]
    SyncSledDataFile(#[source] std::io::Error),
    /// One commit's writes are too large for a journal record.
    #[error(
        "storage failure during appending to the journal: a batch of {bytes} bytes does not \
         fit a record"
    )]
    RecordTooLarge {
        /// The encoded batch's size.
        bytes: usize,
    },
    /// A journal record could not be encoded.
    #[error("storage failure during encoding a journal record: {0}")]
    EncodeRecord(#[source] prost::EncodeError),
    /// The next journal file's name is taken already (a bug, not a race: see
    /// `journal::NextFile::prepare`).
    #[error(
        "storage failure during preparing the next journal file: {} exists already",
        path.display()
    )]
    NextJournalFileExists {
        /// The file.
        path: PathBuf,
    },
    /// A checkpoint's next token does not decode.
    #[error("storage failure during checkpoint: reading the next token: {0}")]
    CheckpointToken(#[source] RecordDamage),
    /// The checkpoint thread stopped on an error, logged when it happened.
    #[error(
        "storage failure during checkpointing: the checkpoint thread stopped (see its error \
         above)"
    )]
    CheckpointerStopped,
    /// The committer stopped before the batch waited for was durable.
    #[error("storage failure during waiting for durability: the committer stopped")]
    CommitterStopped,
    /// The committer failed: the batch waited for will never be durable.
    #[error(
        "storage failure during waiting for durability: the server is stopping after a \
         storage failure"
    )]
    StoppingAfterFailure,
    /// A cluster leader's term ended (it lost its leadership, or a commit failed) before
    /// the batch waited for was committed: it may or may not have been.
    #[error("this node stopped leading before the answer was committed; its outcome is unknown")]
    LeadershipLost,
    /// A cluster member cannot start or go on.
    #[error("cluster member: {0}")]
    Member(#[from] crate::cluster::member::MemberError),
    /// A cluster leader's commit failed; its term ends.
    #[error("replicated commit failed: {0}")]
    Replicated(#[from] crate::cluster::replicated_commit::ReplicatedCommitError),
    /// The lock table's mutex was poisoned by a panic: its state cannot be trusted.
    #[error("the lock table was poisoned by a panic")]
    Poisoned,
    /// A background thread could not be started.
    #[error("cannot start the {thread} thread: {source}")]
    SpawnThread {
        /// The thread.
        thread: &'static str,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A background thread panicked.
    #[error("the {thread} thread panicked")]
    ThreadPanicked {
        /// The thread.
        thread: &'static str,
    },
    /// A background task panicked or was cancelled.
    #[error("the {task} failed while stopping: {source}")]
    TaskFailed {
        /// The task.
        task: &'static str,
        /// What tokio said.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A fatal error, logged when it happened, stopped the server.
    #[error("a fatal error stopped the server (see the log)")]
    StoppedByFatalError,
    /// A TLS file could not be read, or holds no usable certificate chain or key.
    #[error("cannot use TLS file {}: {problem}", path.display())]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        problem: TlsProblem,
    },
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The authentication tokens file cannot be used.
    #[error(transparent)]
    AuthTokens(#[from] crate::auth::TokensFileError),
    /// The policy file cannot be used.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyFileError),
    /// Authentication is on and a framed `Session` listener was asked for: the framed
    /// protocol carries no credentials, so it would let anyone in.
    #[error(
        "the framed session listener (--session-listen) cannot serve with authentication on \
         (--auth-tokens or --client-ca): its protocol carries no credentials; use gRPC"
    )]
    FramedWithoutAuthentication,
    /// The sequencer signing key could not be read or is not an Ed25519 PKCS#8 key.
    #[error("cannot use signing key {}: {problem}", path.display())]
    SigningKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The gRPC reflection service could not be built from the protocol's descriptors.
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Why a stored record (or the next token a checkpoint writes) does not decode.
#[derive(Debug, thiserror::Error)]
pub enum RecordDamage {
    /// A fixed-size value has the wrong size.
    #[error("{len} bytes, expected {expected}")]
    Length {
        /// The value's size.
        len: usize,
        /// The size it must have.
        expected: usize,
    },
    /// The protobuf value does not decode.
    #[error("{0}")]
    Decode(#[from] prost::DecodeError),
    /// A token or lock name breaks the protocol's rules.
    #[error("{0}")]
    Invalid(#[from] InvalidInput),
    /// A lock name is not UTF-8.
    #[error("{0}")]
    NotUtf8(#[from] std::string::FromUtf8Error),
    /// A lease id is not 16 bytes.
    #[error("bad lease id")]
    LeaseId,
    /// The key is none the store writes.
    #[error("unknown key")]
    UnknownKey,
    /// An event's kind is none the lock table makes.
    #[error("unknown event kind {0}")]
    UnknownEventKind(u32),
    /// A lease's recorded peer address does not parse.
    #[error("bad peer address {0:?}")]
    PeerAddress(String),
}
