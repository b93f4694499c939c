//! [`MemoryBackend`]: the in-memory store, for tests and simulations (it survives no
//! process restart, and says so).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use fenced_types::{FencingToken, LockName};

use crate::backend::{Backend, Verdict};
use crate::error::StorageError;
use crate::op::{Accepted, Stored, WriteOp};
use crate::rule::{Admission, Decision};

/// Keeps every resource in memory, behind one mutex: the mutex is what makes check and
/// write one atomic step. A `std` mutex, not an async one, because it is never held across
/// an `.await` and the critical section is a few map operations.
///
/// `Clone` shares the state: a clone is the same store seen through another handle, which
/// is how the conformance suite "reopens" it (a restart of the service above the store,
/// not a loss of memory).
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    /// Every resource's mark and data.
    state: Arc<Mutex<HashMap<LockName, Resource>>>,
}

/// One resource: its mark and its keys.
#[derive(Debug, Default)]
struct Resource {
    /// The highest token accepted or fenced with; `None` before the first.
    mark: Option<FencingToken>,
    /// The keys, each with the token that wrote it.
    data: BTreeMap<Vec<u8>, Stored>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<LockName, Resource>> {
        // A panic while holding the lock cannot leave a half-applied write: every change
        // below is one map operation after the decision. So a poisoned lock is still sound.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Backend for MemoryBackend {
    fn commit(
        &self,
        resource: &LockName,
        token: FencingToken,
        op: Option<&WriteOp>,
        admission: Admission,
    ) -> Result<Verdict, StorageError> {
        let mut state = self.lock();
        let mark = state.get(resource).and_then(|r| r.mark);
        let new_mark = match admission.decide(mark, token) {
            Decision::Refuse { current } => return Ok(Verdict::Stale { current }),
            Decision::Admit { new_mark } => new_mark,
        };
        let entry = state.entry(resource.clone()).or_default();
        entry.mark = Some(new_mark);
        let existed = match op {
            Some(WriteOp::Put { key, value }) => entry
                .data
                .insert(
                    key.clone(),
                    Stored {
                        value: value.clone(),
                        token,
                    },
                )
                .is_some(),
            Some(WriteOp::Delete { key }) => entry.data.remove(key).is_some(),
            None => false,
        };
        Ok(Verdict::Accepted(Accepted {
            mark: new_mark,
            existed,
        }))
    }

    fn read(&self, resource: &LockName, key: &[u8]) -> Result<Option<Stored>, StorageError> {
        Ok(self
            .lock()
            .get(resource)
            .and_then(|r| r.data.get(key).cloned()))
    }

    fn mark(&self, resource: &LockName) -> Result<Option<FencingToken>, StorageError> {
        Ok(self.lock().get(resource).and_then(|r| r.mark))
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
