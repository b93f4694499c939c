//! [`Shared`]: what a client's handles, its renewal task and its watchdog share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fenced_proto::v1::session_request::Op;
use fenced_proto::v1::session_response::Result as Reply;
use fenced_proto::v1::ReleaseRequest;
use fenced_types::{FencingToken, LeaseId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::clock::Clock;
use crate::config::{Config, DeadlinePolicy};
use crate::error::{Error, FenceError};
use crate::framed_tls::FramedConnector;
use crate::route::{Resend, Route, MAX_REDIRECTS};
use crate::session::{Session, SessionOutcome};
use crate::shared_lease::SharedLease;
use crate::state::LeaseState;
use crate::watchdog::Pulse;

/// The state of one [`Client`](crate::Client), shared with its background work.
pub(crate) struct Shared {
    /// The settings.
    pub(crate) config: Config,
    /// The deadline arithmetic of the settings.
    pub(crate) policy: DeadlinePolicy,
    /// Where every instant is read.
    pub(crate) clock: Arc<dyn Clock>,
    /// The pause watchdog's heartbeat.
    pub(crate) pulse: Pulse,
    /// Serialises heartbeats with the marking of leases after a pause.
    pause_marking: Mutex<()>,
    /// The leases being renewed. A `std` mutex, never held across an `.await`.
    leases: Mutex<HashMap<LeaseId, Arc<SharedLease>>>,
    /// Wakes the renewal task: a lease was added, a pause was seen.
    pub(crate) wake: Notify,
    /// Cancelled when the last handle of the client is dropped.
    pub(crate) closed: CancellationToken,
    /// The member talked to (the leader, as far as the client knows) and its shared
    /// channel: unary calls (acquire, release, describe, watch) go there, and the renewal
    /// task opens its fresh connections there.
    pub(crate) route: Arc<Route>,
    /// The `Session` stream on that channel, for try-once acquires and releases. In an
    /// `Arc` so that a background release can finish after the client is dropped.
    pub(crate) session: Arc<Session>,
}

impl Shared {
    /// Assembles the shared state.
    pub(crate) fn new(
        config: Config,
        clock: Arc<dyn Clock>,
        route: Arc<Route>,
        framed_tls: Option<FramedConnector>,
    ) -> Self {
        let pulse = Pulse::new(clock.now(), config.pause_threshold);
        let session = Arc::new(Session::new(
            route.clone(),
            clock.clone(),
            &config,
            framed_tls,
        ));
        Shared {
            policy: config.policy(),
            config,
            clock,
            pulse,
            pause_marking: Mutex::new(()),
            leases: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            closed: CancellationToken::new(),
            route,
            session,
        }
    }

    /// The current time on the SDK's clock.
    pub(crate) fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Beats the pause watchdog's pulse at `now`. If the process was paused, every lease
    /// becomes suspect and the renewal task is woken to confirm them at once. Returns the
    /// pause, if there was one.
    pub(crate) fn heartbeat(&self, now: Duration) -> Option<Duration> {
        // Held until every lease is marked: a thread that beats right after the one that
        // saw the pause waits here, and then finds its lease already suspect, rather than
        // slipping a token out between the beat and the marking.
        let _marking = self
            .pause_marking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let paused = self.pulse.beat(now)?;
        tracing::warn!(
            paused_ms = paused.as_millis() as u64,
            "process pause detected: leases are suspect until the server confirms them"
        );
        for lease in self.snapshot() {
            lease.update(|machine| machine.on_pause(paused, now));
        }
        self.wake.notify_one();
        Some(paused)
    }

    /// The check before a guarded write: the pulse first (this may be the first code to
    /// run after a pause), then the lease's state against the clock read right now.
    pub(crate) fn fence(&self, lease: &SharedLease) -> Result<FencingToken, FenceError> {
        let now = self.now();
        self.heartbeat(now);
        match lease.update(|machine| machine.fence(now)) {
            Ok(()) => Ok(lease.token),
            Err(LeaseState::Lost { reason }) => Err(FenceError::Lost {
                lock: lease.lock.clone(),
                reason,
            }),
            Err(LeaseState::Suspect { reason }) => Err(FenceError::Suspect {
                lock: lease.lock.clone(),
                reason,
            }),
            // `LeaseStateMachine::fence` returns `Err` only for the two states above.
            Err(LeaseState::Held) => Ok(lease.token),
        }
    }

    /// Starts renewing a lease.
    pub(crate) fn register(&self, lease: Arc<SharedLease>) {
        self.leases().insert(lease.id, lease);
        self.wake.notify_one();
    }

    /// Stops renewing a lease.
    pub(crate) fn forget(&self, id: &LeaseId) -> Option<Arc<SharedLease>> {
        self.leases().remove(id)
    }

    /// A lease being renewed.
    pub(crate) fn get(&self, id: &LeaseId) -> Option<Arc<SharedLease>> {
        self.leases().get(id).cloned()
    }

    /// Every lease being renewed, so that callers iterate without holding the map's lock.
    pub(crate) fn snapshot(&self) -> Vec<Arc<SharedLease>> {
        self.leases().values().cloned().collect()
    }

    /// Releases a lease on the server in a background task (best effort: logged, never
    /// retried). Does nothing outside a tokio runtime.
    pub(crate) fn release_in_background(&self, id: LeaseId, why: &'static str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(lease = %id.short(), "no runtime to release the lease in: it will expire");
            return;
        };
        let session = self.session.clone();
        let route = self.route.clone();
        let timeout = self.config.request_timeout;
        runtime.spawn(async move {
            match release(&session, &route, id, timeout).await {
                Ok(()) => {
                    tracing::debug!(lease = %id.short(), why, "released in the background")
                }
                Err(error) => tracing::debug!(
                    lease = %id.short(), why, %error, "background release failed"
                ),
            }
        });
    }

    /// The lease map, even if a thread panicked while holding it (the map is always
    /// consistent between operations).
    fn leases(&self) -> MutexGuard<'_, HashMap<LeaseId, Arc<SharedLease>>> {
        self.leases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Releases a lease (and every lock on it) on the server: over the session when it is in
/// use, else by the unary call; either way within `timeout` per attempt, following the
/// leader ([`Route`]). A release may be sent again after it failed without an answer: if
/// the first got through, the second finds the lease released, which is what was asked.
pub(crate) async fn release(
    session: &Session,
    route: &Route,
    id: LeaseId,
    timeout: Duration,
) -> Result<(), Error> {
    let request = ReleaseRequest {
        lease_id: id.to_string(),
        lock: String::new(),
    };
    let mut refusals = 0;
    while session.active() {
        match session.call(Op::Release(request.clone()), "release").await {
            SessionOutcome::Unary => break,
            SessionOutcome::Answered {
                reply: Reply::Released(_),
                ..
            } => return Ok(()),
            SessionOutcome::Answered { .. } => {
                return Err(Error::Protocol {
                    what: "session answered a release with something else".into(),
                })
            }
            SessionOutcome::NotLeader(_) if refusals < MAX_REDIRECTS => refusals += 1,
            SessionOutcome::NotLeader(error)
            | SessionOutcome::Failed(error)
            | SessionOutcome::Unknown(error) => return Err(error),
        }
    }
    let mut resent = false;
    let outcome = route
        .call("release", timeout, Resend::Always, |mut rpc| {
            let attempt = resent;
            resent = true;
            let request = request.clone();
            async move {
                match rpc.release(request).await {
                    Ok(_) => Ok(()),
                    // Released by the attempt that got no answer.
                    Err(status) if attempt && is_released(&status) => Ok(()),
                    Err(status) => Err(status),
                }
            }
        })
        .await;
    outcome
}

/// Whether `status` says the lease was released already.
fn is_released(status: &Status) -> bool {
    matches!(Error::from(status.clone()), Error::LeaseReleased { .. })
}
