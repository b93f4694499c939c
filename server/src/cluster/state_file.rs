//! Small state files replaced whole and atomically (the vote, the purged and committed log
//! ids): written under a temporary name, synced, renamed over the old one, and the
//! directory synced, so a crash leaves either the old value or the new one. The content
//! is one [framed](crate::frame) record holding JSON, so a damaged file is told apart from
//! a valid one.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cluster::error::RaftStoreError;
use crate::frame::{self, Record};

/// Replaces `path` with `value`; durable before it returns when `sync` is set.
pub(crate) fn write<T: Serialize>(
    path: &Path,
    value: &T,
    sync: bool,
) -> Result<(), RaftStoreError> {
    let json = serde_json::to_vec(value).map_err(|error| RaftStoreError::Encode {
        what: "a raft state file",
        problem: error.to_string(),
    })?;
    let length = u32::try_from(json.len())
        .map_err(|_| RaftStoreError::EntryTooLarge { bytes: json.len() })?;
    let mut bytes = Vec::with_capacity(json.len() + frame::HEADER_BYTES);
    frame::frame::<std::convert::Infallible>(&mut bytes, length, |buffer| {
        buffer.extend_from_slice(&json);
        Ok(())
    })
    .unwrap_or_else(|never| match never {});
    let temporary = path.with_extension("tmp");
    let mut file =
        File::create(&temporary).map_err(|e| RaftStoreError::io("creating", &temporary, e))?;
    file.write_all(&bytes)
        .map_err(|e| RaftStoreError::io("writing", &temporary, e))?;
    if sync {
        file.sync_all()
            .map_err(|e| RaftStoreError::io("syncing", &temporary, e))?;
    }
    std::fs::rename(&temporary, path).map_err(|e| RaftStoreError::io("renaming", path, e))?;
    if sync {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// Reads `path` back: `None` if it does not exist, an error naming it if it is damaged.
pub(crate) fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RaftStoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(RaftStoreError::io("reading", path, error)),
    };
    let corrupt = |problem: String| RaftStoreError::CorruptStateFile {
        file: path.to_path_buf(),
        problem,
    };
    match frame::record(&bytes, |payload| Ok(payload.to_vec())) {
        Record::Valid { batch: json, len } if len == bytes.len() => serde_json::from_slice(&json)
            .map(Some)
            .map_err(|error| corrupt(format!("does not decode: {error}"))),
        _ => Err(corrupt(format!(
            "{} bytes that are not one valid record",
            bytes.len()
        ))),
    }
}

/// Makes the directory's entries (new names, renames, deletions) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), RaftStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RaftStoreError::io("syncing the directory", dir, e))
}
