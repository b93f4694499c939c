//! [`Tracked`]: one lease as the SDK's tasks share it: its fixed facts, its [`Book`] behind a
//! mutex, and the `watch` channel that publishes the book's state.

use std::sync::{Mutex, MutexGuard};

use fenced_types::{FencingToken, LeaseId, LockName};
use tokio::sync::watch;

use crate::book::Book;
use crate::state::LeaseState;

/// One lease, shared by its [`Lease`](crate::Lease) handle, the renewal task and the pause
/// watchdog.
#[derive(Debug)]
pub(crate) struct Tracked {
    /// The lease's id (a bearer secret).
    pub(crate) id: LeaseId,
    /// The lock it holds.
    pub(crate) lock: LockName,
    /// The grant's fencing token.
    pub(crate) token: FencingToken,
    /// The state machine. A `std` mutex: it is held for a few arithmetic steps, never
    /// across an `.await`, and the watchdog thread (not a task) takes it too.
    book: Mutex<Book>,
    /// Publishes the book's state after every event that changes it.
    state: watch::Sender<LeaseState>,
}

impl Tracked {
    /// Starts tracking a granted lease.
    pub(crate) fn new(id: LeaseId, lock: LockName, token: FencingToken, book: Book) -> Self {
        let (state, _) = watch::channel(book.state().clone());
        Tracked {
            id,
            lock,
            token,
            book: Mutex::new(book),
            state,
        }
    }

    /// Runs one event on the book and publishes the state if it changed. Publishing under
    /// the lock keeps the channel's order the book's order.
    pub(crate) fn update<R>(&self, event: impl FnOnce(&mut Book) -> R) -> R {
        let mut book = self.book();
        let result = event(&mut book);
        let now = book.state();
        self.state.send_if_modified(|published| {
            if published == now {
                return false;
            }
            let (lock, lease) = (&self.lock, self.id.short());
            match now {
                LeaseState::Held => tracing::info!(%lock, %lease, "lease held"),
                other => tracing::warn!(%lock, %lease, state = %other, "lease not held"),
            }
            *published = now.clone();
            true
        });
        result
    }

    /// Reads the book without changing it.
    pub(crate) fn read<R>(&self, read: impl FnOnce(&Book) -> R) -> R {
        read(&self.book())
    }

    /// A receiver of the published state.
    pub(crate) fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    /// The book, even if a thread panicked while holding it: the book's invariants hold
    /// between any two of its methods, so a poisoned lock holds a consistent value.
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
