//! [`Combiner`]: many gated writes, one sled transaction.
//!
//! sled 0.34 runs every transaction under a global lock that its flushes take as well, so
//! one transaction per write caps the backend at a few thousand writes per second however
//! many writers there are (`bench/analysis.md`, "The cost of the gate"). Here writers queue their
//! write; whoever finds no transaction running becomes the leader, takes everything queued
//! and applies it in one transaction, in queue order, then hands every writer its outcome.
//! The writes of one batch see each other (a sled transaction reads its own writes), so
//! the outcome is the same as applying them one at a time in that order.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use fenced_types::{FencingToken, LockName};

use crate::backend::Verdict;
use crate::error::StorageError;
use crate::op::WriteOp;
use crate::rule::Admission;

/// One gated write waiting for its transaction.
#[derive(Debug)]
pub struct Request {
    /// The resource whose mark is checked.
    pub resource: LockName,
    /// The write's token.
    pub token: FencingToken,
    /// The change (`None`: only raise the mark).
    pub op: Option<WriteOp>,
    /// How the token is judged against the mark.
    pub admission: Admission,
}

/// A write's verdict and whether it changed anything, or why it failed.
pub type Outcome = Result<(Verdict, bool), StorageError>;

/// Queues writes and applies them in batches. See the module documentation.
#[derive(Debug, Default)]
pub struct Combiner {
    /// The queue and the finished outcomes.
    state: Mutex<State>,
    /// Signalled whenever a batch is finished.
    finished: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Writes waiting for the next batch, with their ids.
    queue: Vec<(u64, Request)>,
    /// The next write's id.
    next_id: u64,
    /// A leader is applying a batch right now.
    running: bool,
    /// Outcomes not yet collected by their writers.
    done: HashMap<u64, Outcome>,
}

impl Combiner {
    /// Applies `request` in a batch with whatever else is queued, using `apply` (which must
    /// return one outcome per request, in order), and returns its outcome.
    pub fn submit(&self, request: Request, apply: &dyn Fn(&[Request]) -> Vec<Outcome>) -> Outcome {
        let mut state = self.lock()?;
        let id = state.next_id;
        state.next_id += 1;
        state.queue.push((id, request));
        loop {
            if let Some(outcome) = state.done.remove(&id) {
                return outcome;
            }
            if state.running {
                state = self.finished.wait(state).map_err(|_| poisoned())?;
                continue;
            }
            state.running = true;
            let (ids, batch): (Vec<u64>, Vec<Request>) =
                std::mem::take(&mut state.queue).into_iter().unzip();
            drop(state);
            // If `apply` panics, the guard still clears `running` and fails the batch, so
            // nobody waits for a leader that is gone.
            let mut leader = Leader {
                combiner: self,
                ids,
                outcomes: None,
            };
            let outcomes = apply(&batch);
            leader.outcomes = Some(outcomes);
            drop(leader);
            state = self.lock()?;
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StorageError> {
        self.state.lock().map_err(|_| poisoned())
    }
}

/// The leader's batch: on drop, publishes its outcomes (or failures, if there are none or
/// too few) and lets the next leader run.
struct Leader<'a> {
    combiner: &'a Combiner,
    ids: Vec<u64>,
    outcomes: Option<Vec<Outcome>>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut outcomes = self.outcomes.take().unwrap_or_default().into_iter();
        let Ok(mut state) = self.combiner.state.lock() else {
            // Poisoned: the waiters see that when they wake.
            self.combiner.finished.notify_all();
            return;
        };
        for id in self.ids.drain(..) {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(StorageError::new(
                    "committing a write",
                    "the batch holding this write failed",
                ))
            });
            state.done.insert(id, outcome);
        }
        state.running = false;
        self.combiner.finished.notify_all();
    }
}

fn poisoned() -> StorageError {
    StorageError::new(
        "committing a write",
        "a writer panicked while holding the write queue",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::op::Accepted;

    fn request(token: u64) -> Request {
        Request {
            resource: LockName::new("r").unwrap(),
            token: FencingToken::new(token).unwrap(),
            op: None,
            admission: Admission::Fenced,
        }
    }

    /// An outcome that names its request, so each writer can check it got its own.
    fn echo(batch: &[Request]) -> Vec<Outcome> {
        batch
            .iter()
            .map(|r| {
                Ok((
                    Verdict::Accepted(Accepted {
                        mark: r.token,
                        existed: false,
                    }),
                    true,
                ))
            })
            .collect()
    }

    fn queued(combiner: &Combiner) -> usize {
        combiner.state.lock().unwrap().queue.len()
    }

    #[test]
    fn writes_queued_behind_a_running_batch_go_together_and_each_gets_its_own_outcome() {
        let combiner = Arc::new(Combiner::default());
        let (batch_sizes, sizes) = mpsc::channel::<usize>();
        let (release_first, first_may_finish) = mpsc::channel::<()>();
        let first_may_finish = Mutex::new(first_may_finish);
        let apply = {
            let batch_sizes = batch_sizes.clone();
            Arc::new(move |batch: &[Request]| {
                batch_sizes.send(batch.len()).unwrap();
                if batch[0].token == FencingToken::new(1).unwrap() {
                    // Hold the first batch until the others have queued behind it.
                    first_may_finish.lock().unwrap().recv().unwrap();
                }
                echo(batch)
            })
        };
        let submit = |token: u64| {
            let combiner = combiner.clone();
            let apply = apply.clone();
            std::thread::spawn(move || combiner.submit(request(token), &*apply))
        };
        let first = submit(1);
        assert_eq!(sizes.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
        let rest: Vec<_> = (2..=4).map(submit).collect();
        while queued(&combiner) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        release_first.send(()).unwrap();
        for (token, writer) in (1..=4).zip(std::iter::once(first).chain(rest)) {
            let (verdict, _) = writer.join().unwrap().unwrap();
            let Verdict::Accepted(accepted) = verdict else {
                panic!("{verdict:?}");
            };
            assert_eq!(accepted.mark, FencingToken::new(token).unwrap());
        }
        assert_eq!(
            sizes.recv_timeout(Duration::from_secs(10)).unwrap(),
            3,
            "the three writes that queued during the first batch form the second"
        );
        drop(batch_sizes);
        assert!(
            sizes.recv_timeout(Duration::from_millis(100)).is_err(),
            "two batches only"
        );
    }
}
