//! [`SharedLease`]: one lease as the SDK's tasks share it: its fixed facts, its
//! [`LeaseStateMachine`] behind a mutex, and the `watch` channel that publishes the
//! machine's state.

use std::sync::{Mutex, MutexGuard};

use fenced_types::{FencingToken, LeaseId, LockName, Sequencer};
use tokio::sync::watch;
use tonic::metadata::{Ascii, MetadataValue};

use crate::lease_state_machine::LeaseStateMachine;
use crate::state::LeaseState;

/// One lease, shared by its [`Lease`](crate::Lease) handle, the renewal task and the pause
/// watchdog.
#[derive(Debug)]
pub(crate) struct SharedLease {
    /// The lease's id (a bearer secret).
    pub(crate) id: LeaseId,
    /// The lock it holds.
    pub(crate) lock: LockName,
    /// The grant's fencing token.
    pub(crate) token: FencingToken,
    /// The grant's sequencer and its text form as a metadata value (made once: attaching
    /// it to a request then only clones a reference-counted buffer), when the server signs
    /// grants.
    pub(crate) sequencer: Option<(Sequencer, MetadataValue<Ascii>)>,
    /// The state machine. A `std` mutex: it is held for a few arithmetic steps, never
    /// across an `.await`, and the watchdog thread (not a task) takes it too.
    machine: Mutex<LeaseStateMachine>,
    /// Publishes the machine's state after every event that changes it.
    state: watch::Sender<LeaseState>,
}

impl SharedLease {
    /// Starts tracking a granted lease.
    pub(crate) fn new(
        id: LeaseId,
        lock: LockName,
        token: FencingToken,
        machine: LeaseStateMachine,
    ) -> Self {
        let (state, _) = watch::channel(machine.state().clone());
        SharedLease {
            id,
            lock,
            token,
            sequencer: None,
            machine: Mutex::new(machine),
            state,
        }
    }

    /// Adds the grant's sequencer (the server signed the grant).
    pub(crate) fn with_sequencer(mut self, sequencer: Option<Sequencer>) -> Self {
        self.sequencer = sequencer.and_then(|sequencer| {
            // Unpadded base64url is ASCII, so it is always a valid metadata value.
            let text = MetadataValue::try_from(sequencer.to_text()).ok()?;
            Some((sequencer, text))
        });
        self
    }

    /// Runs one event on the machine and publishes the state if it changed. Publishing under
    /// the lock keeps the channel's order the machine's order.
    pub(crate) fn update<R>(&self, event: impl FnOnce(&mut LeaseStateMachine) -> R) -> R {
        let mut machine = self.machine();
        let result = event(&mut machine);
        let now = machine.state();
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

    /// Reads the machine without changing it.
    pub(crate) fn read<R>(&self, read: impl FnOnce(&LeaseStateMachine) -> R) -> R {
        read(&self.machine())
    }

    /// A receiver of the published state.
    pub(crate) fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    /// The machine, even if a thread panicked while holding it: the machine's invariants hold
    /// between any two of its methods, so a poisoned lock holds a consistent value.
    fn machine(&self) -> MutexGuard<'_, LeaseStateMachine> {
        self.machine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
