//! [`Marker`]: a small file beside sled's that remembers a floor for the token counter, so
//! a data directory that sled silently recovered as empty (or as an older state) is caught.
//!
//! sled treats a log it cannot parse as a torn tail and recovers what came before it, which
//! for a garbage data file is *nothing*: it would open an empty database, and the server
//! would hand out token 1 again, every fencing gate's mark above it, every new holder shut
//! out, or worse, a store without a gate trusting a reissued token. The marker makes that a
//! clear error at start instead (CONTRACT S1; issue: "never a silent reset of tokens").
//!
//! The checkpoint thread writes the floor after sled's flush and sync made it true (so it
//! never runs ahead of the disk) and before the journal files that held those tokens are
//! deleted (so no token is ever covered by neither), atomically (temporary file, fsync,
//! rename, fsync of the directory): once per checkpoint that moved the token, so about once
//! a second at most.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fenced_types::FencingToken;

use crate::error::Error;

/// The marker file's name inside the data directory.
pub const MARKER_FILE: &str = "fenced.marker";

/// The token floor file. See the module documentation.
#[derive(Debug)]
pub struct Marker {
    /// Where the file lives.
    path: PathBuf,
    /// The floor currently on disk.
    floor: AtomicU64,
}

impl Marker {
    /// Reads the marker in `dir` and checks sled's recovered next token against it.
    pub fn check(dir: &Path, recovered_next_token: FencingToken) -> Result<Marker, Error> {
        let path = dir.join(MARKER_FILE);
        let floor = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).ok_or_else(|| Error::CorruptMarker {
                path: path.clone(),
                text: text.chars().take(80).collect(),
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 1,
            Err(source) => {
                return Err(Error::OpenIo {
                    doing: "reading",
                    path,
                    source,
                })
            }
        };
        if recovered_next_token.get() < floor {
            return Err(Error::TokensBehindMarker {
                dir: dir.to_path_buf(),
                recovered: recovered_next_token,
                issued_through: floor - 1,
            });
        }
        Ok(Marker {
            path,
            floor: AtomicU64::new(floor),
        })
    }

    /// Whether a durable next token of `next_token` would raise the floor.
    pub fn due(&self, next_token: u64) -> bool {
        next_token > self.floor.load(Ordering::SeqCst)
    }

    /// Writes `next_token` as the new floor (blocking I/O: call from a blocking thread). Only
    /// call once `next_token` is durable in sled.
    pub fn advance(&self, next_token: u64) -> Result<(), Error> {
        let failed = |doing: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::StorageIo {
                during: "writing the token marker",
                doing,
                path,
                source,
            }
        };
        let temporary = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&temporary).map_err(failed("creating", &temporary))?;
        file.write_all(format!("fenced-marker v1\nnext_token_at_least {next_token}\n").as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(failed("writing and syncing", &temporary))?;
        std::fs::rename(&temporary, &self.path).map_err(failed("renaming to", &self.path))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(failed("syncing the directory", dir))?;
        }
        self.floor.fetch_max(next_token, Ordering::SeqCst);
        Ok(())
    }
}

fn parse(text: &str) -> Option<u64> {
    let mut lines = text.lines();
    if lines.next()? != "fenced-marker v1" {
        return None;
    }
    lines
        .next()?
        .strip_prefix("next_token_at_least ")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_behind_its_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let marker = Marker::check(dir.path(), FencingToken::FIRST).unwrap();
        assert!(marker.due(5));
        marker.advance(5).unwrap();
        assert!(!marker.due(5));
        assert!(!marker.due(4));
        assert!(marker.due(6));
        // A database that came back with an older counter is refused; an equal or newer one not.
        let older = Marker::check(dir.path(), FencingToken::new(4).unwrap()).unwrap_err();
        assert!(older.to_string().contains("lost data"), "{older}");
        Marker::check(dir.path(), FencingToken::new(5).unwrap()).unwrap();
        std::fs::write(dir.path().join(MARKER_FILE), "garbage").unwrap();
        assert!(Marker::check(dir.path(), FencingToken::new(9).unwrap()).is_err());
    }
}
