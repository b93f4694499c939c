//! [`SyncFault`] (unit tests only): makes the group commit's `fdatasync` of sled's data file
//! report an error, as the kernel does after a failed writeback.
//!
//! It sits right where the real call's result is checked: the real `fdatasync` runs, and
//! then the hook may replace its success with an error, so the code under test takes the
//! same path as after a real `EIO`. The integration test `kv_disk_failure.rs` does the same
//! with real failing storage.

use std::io;
use std::sync::{Mutex, MutexGuard};

/// Decides, after each real `fdatasync` of sled's data file, whether that call reports an
/// error instead of its real result.
type Decide = Box<dyn FnMut() -> Option<io::Error> + Send>;

/// The hook; does nothing until [`SyncFault::set`].
#[derive(Default)]
pub(crate) struct SyncFault(Mutex<Option<Decide>>);

impl SyncFault {
    /// From now on `decide` runs after every `fdatasync` of the data file; an error it
    /// returns becomes that call's result.
    pub(crate) fn set(&self, decide: impl FnMut() -> Option<io::Error> + Send + 'static) {
        *self.lock() = Some(Box::new(decide));
    }

    /// The real result, or the injected error.
    pub(crate) fn apply(&self, real: io::Result<()>) -> io::Result<()> {
        real?;
        match self.lock().as_mut().and_then(|decide| decide()) {
            Some(injected) => Err(injected),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Decide>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for SyncFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncFault")
    }
}
