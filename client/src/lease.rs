//! [`Lease`]: a granted lock, kept alive in the background, and the one place a guarded
//! write gets its token from.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fenced_proto::metadata::{FENCING_SEQUENCER, FENCING_TOKEN};
use fenced_types::{FencingToken, LeaseId, LockName, Sequencer};
use tokio::sync::watch;
use tonic::metadata::MetadataValue;

use crate::client::Handle;
use crate::error::{Error, FenceError};
use crate::shared_lease::SharedLease;
use crate::state::{LeaseState, LostReason, StateChange};

/// A granted lock. The client renews it in the background until it is released, dropped,
/// or lost.
///
/// Before every guarded write, call [`Lease::fence`] and send the token it returns with the
/// write: it refuses once the lease is not safely held, and the resource's gate refuses the
/// token once a newer holder has come (CONTRACT S5). A gate that verifies sequencers wants
/// [`Lease::fence_sequencer`] instead (or [`Lease::attach`], which sends both). Select on [`Lease::lost`] in the work
/// loop to stop promptly.
///
/// Dropping a lease releases it in a background task (best effort: if the runtime is
/// shutting down or the server is unreachable, the lease simply expires after its TTL).
/// Call [`Lease::release`] to release it and see the outcome.
#[derive(Debug)]
pub struct Lease {
    /// The shared record of the lease.
    shared_lease: Arc<SharedLease>,
    /// Keeps the client (and its renewal task) alive while the lease is.
    handle: Arc<Handle>,
    /// Where [`Lease::release`] has got to, so that `drop` releases exactly when nobody
    /// else will.
    release: Release,
}

/// How far [`Lease::release`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Not called.
    NotAsked,
    /// Called, and its future not finished: if it is dropped now, the request may never
    /// have been sent, so `drop` sends one in the background.
    Started,
    /// Finished: the caller has the outcome.
    Done,
}

/// What the SDK knows of a lease's renewals, for dashboards and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The current state.
    pub state: LeaseState,
    /// Time left until the local deadline (zero once it passed).
    pub remaining: Duration,
    /// The TTL the server granted.
    pub ttl: Duration,
    /// Failed renewal attempts since the last success.
    pub consecutive_failures: u32,
    /// The latest failure, in words.
    pub last_error: Option<String>,
}

impl Lease {
    /// Wraps a lease shared with the background tasks.
    pub(crate) fn new(shared_lease: Arc<SharedLease>, handle: Arc<Handle>) -> Self {
        Lease {
            shared_lease,
            handle,
            release: Release::NotAsked,
        }
    }

    /// The lock this lease holds.
    pub fn lock(&self) -> &LockName {
        &self.shared_lease.lock
    }

    /// The lease's id: a bearer secret, keep it out of logs (its `Debug` form is safe).
    pub fn id(&self) -> LeaseId {
        self.shared_lease.id
    }

    /// The grant's token, whatever the lease's state: for display only. A write must take
    /// its token from [`Lease::fence`].
    pub fn token(&self) -> FencingToken {
        self.shared_lease.token
    }

    /// The token, if and only if the lease is held right now: the server confirmed it, the
    /// local deadline (read from the clock at this call, not from a cached state) has not
    /// passed, and the process has not just woken from a pause. Call it immediately before
    /// every guarded write.
    ///
    /// It checks the pause watchdog's pulse itself, because after `SIGCONT` the first
    /// code to run may be this very call, before the watchdog thread is scheduled.
    pub fn fence(&self) -> Result<FencingToken, FenceError> {
        self.handle.shared.fence(&self.shared_lease)
    }

    /// The grant's sequencer (its token signed by the server, with its lock), under the
    /// same rule as [`Lease::fence`]: handed out only while the lease is held right now.
    /// `Ok(None)` when the server signs no sequencers (it has no `--signing-key`). Send it
    /// to gates that verify sequencers (`fenced-kv --verify-keys`); [`Lease::attach`]
    /// does.
    pub fn fence_sequencer(&self) -> Result<Option<&Sequencer>, FenceError> {
        self.fence()?;
        Ok(self
            .shared_lease
            .sequencer
            .as_ref()
            .map(|(sequencer, _)| sequencer))
    }

    /// [`Lease::fence`], and on success puts the token into a tonic request's
    /// `fencing-token` metadata (what `fenced-kv` and other gated services read), and the
    /// grant's sequencer, when the server signed one, into `fencing-sequencer` metadata
    /// (its text form), for gates that verify sequencers.
    pub fn attach<T>(&self, request: &mut tonic::Request<T>) -> Result<FencingToken, FenceError> {
        let token = self.fence()?;
        let metadata = request.metadata_mut();
        metadata.insert(FENCING_TOKEN, MetadataValue::from(token.get()));
        if let Some((_, text)) = &self.shared_lease.sequencer {
            metadata.insert(FENCING_SEQUENCER, text.clone());
        }
        Ok(token)
    }

    /// Wraps a message in a tonic request that carries the token, if the lease is held.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, FenceError> {
        let mut request = tonic::Request::new(message);
        self.attach(&mut request)?;
        Ok(request)
    }

    /// The current state (as last published; [`Lease::fence`] is the authoritative check).
    pub fn state(&self) -> LeaseState {
        self.shared_lease.subscribe().borrow().clone()
    }

    /// A receiver of every state the lease goes through. A slow reader may skip an
    /// intermediate state; [`Lease::history`] keeps them all.
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.shared_lease.subscribe()
    }

    /// Completes when the lease is lost, with the reason: the future a leader's work loop
    /// selects on. It owns what it needs, so it can outlive the borrow of the lease.
    pub fn lost(&self) -> impl Future<Output = LostReason> + Send + 'static {
        let mut receiver = self.shared_lease.subscribe();
        async move {
            loop {
                if let LeaseState::Lost { reason } = &*receiver.borrow_and_update() {
                    return reason.clone();
                }
                if receiver.changed().await.is_err() {
                    return LostReason::ClientClosed;
                }
            }
        }
    }

    /// The state changes so far (the latest 64), with when they happened on the SDK's
    /// clock: nothing is missed, however slow the reader.
    pub fn history(&self) -> Vec<StateChange> {
        self.shared_lease.read(|machine| machine.history())
    }

    /// The renewals' health: state, time left, failures.
    pub fn status(&self) -> LeaseStatus {
        let now = self.handle.shared.now();
        // Like `fence`, look for a pause first, so that it is reported as such.
        self.handle.shared.heartbeat(now);
        self.shared_lease.update(|machine| {
            machine.check(now);
            let (consecutive_failures, last_error) = machine.failures();
            LeaseStatus {
                state: machine.state().clone(),
                remaining: machine.deadline().saturating_sub(now),
                ttl: machine.ttl(),
                consecutive_failures,
                last_error: last_error.map(str::to_string),
            }
        })
    }

    /// Time left until the local deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.status().remaining
    }

    /// Releases the lease on the server, so that the next waiter gets the lock at once
    /// (CONTRACT L1). The lease is lost locally first, whatever the server answers, so no
    /// token can be handed out after this call starts. The release travels over the
    /// client's `Session` stream when it is in use ([`Config::session`]), else as a unary
    /// call; the outcome and its errors are the same. If this future is dropped before it
    /// finishes, the release is sent in the background (the server answers a second one
    /// with a refusal nobody sees, if the first got there).
    ///
    /// [`Config::session`]: crate::Config::session
    pub async fn release(mut self) -> Result<(), Error> {
        self.release = Release::Started;
        let shared = &self.handle.shared;
        shared.forget(&self.shared_lease.id);
        let now = shared.now();
        self.shared_lease
            .update(|machine| machine.lose(LostReason::ReleasedByHolder, now));
        let outcome = crate::shared::release(
            &shared.session,
            &shared.route,
            self.shared_lease.id,
            shared.config.request_timeout,
        )
        .await;
        self.release = Release::Done;
        outcome
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let shared = &self.handle.shared;
        match self.release {
            Release::Done => {}
            Release::Started => {
                shared.release_in_background(self.shared_lease.id, "its release was abandoned");
            }
            Release::NotAsked => {
                shared.forget(&self.shared_lease.id);
                let now = shared.now();
                let was_lost = self.shared_lease.read(|machine| machine.state().is_lost());
                self.shared_lease
                    .update(|machine| machine.lose(LostReason::ReleasedByHolder, now));
                if !was_lost {
                    shared.release_in_background(self.shared_lease.id, "lease handle dropped");
                }
            }
        }
    }
}
