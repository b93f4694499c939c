//! [`StoreStop`]: carries "the store stopped at a failed sync" from whichever request met it
//! to the server loop, which then stops the process.
//!
//! Why stop the process rather than stay up and report NOT_SERVING: a store that stopped
//! acknowledges nothing until it is reopened, and reopening (reading back what the disk
//! really holds) is what a restart does. So fenced-kv exits with a failure, as the lock
//! server does when its disk fails, and the supervisor that restarts it (and counts the
//! restarts) is what tells an operator; the error log names the failure.

use std::sync::Arc;

use fenced_gate::{Error as GateError, StorageError};
use tokio::sync::watch;

/// A cheap `Clone` handle: every request handler reports to it, the server loop waits on it.
#[derive(Debug, Clone)]
pub struct StoreStop {
    /// The first failure that stopped the store, once there is one.
    first: Arc<watch::Sender<Option<StorageError>>>,
}

impl Default for StoreStop {
    fn default() -> Self {
        StoreStop {
            first: Arc::new(watch::Sender::new(None)),
        }
    }
}

impl StoreStop {
    /// A handle on which nothing has stopped yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at a gate call's error: if it says the store stopped, keeps the first such
    /// failure, logs it at error level (once) and wakes [`StoreStop::stopped`].
    pub fn report(&self, error: &GateError) {
        let GateError::Storage(stopped @ StorageError::Stopped { .. }) = error else {
            return;
        };
        let first = self.first.send_if_modified(|first| {
            if first.is_some() {
                return false;
            }
            *first = Some(stopped.clone());
            true
        });
        if first {
            tracing::error!(
                error = %stopped,
                "the store stopped after a failed sync; fenced-kv acknowledges nothing more \
                 and exits. Restart it once the disk is healthy: it then serves what the \
                 disk holds"
            );
        }
    }

    /// The failure that stopped the store, if it has stopped.
    pub fn failure(&self) -> Option<StorageError> {
        self.first.borrow().clone()
    }

    /// Completes once the store has stopped.
    pub async fn stopped(&self) {
        let mut first = self.first.subscribe();
        // The sender lives in `self`, so the wait ends only when a failure arrives.
        let _ = first.wait_for(Option::is_some).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_stopped_store_is_reported_and_the_first_failure_is_kept() {
        let stop = StoreStop::new();
        stop.report(&GateError::Storage(StorageError::new(
            "reading a value",
            "x",
        )));
        stop.report(&GateError::MissingToken);
        assert_eq!(
            stop.failure(),
            None,
            "a one-off failure does not stop fenced-kv"
        );
        let first = StorageError::new("fdatasync of sled's data file", "EIO").into_stopped();
        let later = StorageError::new("flushing sled", "ENOSPC").into_stopped();
        stop.report(&GateError::Storage(first.clone()));
        stop.report(&GateError::Storage(later));
        stop.stopped().await;
        assert_eq!(stop.failure(), Some(first));
    }
}
