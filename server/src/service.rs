//! [`LockServer`]: the lock service's handlers, one plain method per rpc, and the gRPC
//! `fenced.v1.LockService` over them. A thin edge: decode, run the engine, wait for
//! durability, encode; protocol rules live in the lock table.
//!
//! The handlers take and return the protobuf messages themselves, so the gRPC calls and
//! the `Session` stream (over gRPC or framed TCP, [`crate::session`]) run the same code
//! with nothing wrapped per request. The tonic trait only unwraps the request, calls the
//! handler and wraps the answer. Nothing a handler needs comes from the tonic request:
//! the client going away is the handler's future being dropped, and an acquire whose
//! future is dropped before it answers leaves its lock's queue at once and gives back a
//! grant nobody received (CONTRACT L2).
//!
//! Each handler takes the [`Caller`] (the identity the request's extensions carry and the
//! policy file) and checks its permission before it changes or shows anything: `lock` on
//! the lock to acquire it, and on every lock a lease holds to renew, release or join that
//! lease (the lease id itself is the holder's secret: no answer shows it to anyone else);
//! `read` on a lock to describe or check it, and List and Watch show only the locks the
//! caller may read.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fenced_proto::v1 as pb;
use fenced_proto::v1::lock_service_server::LockService;
use fenced_types::sequencer::SigningKey;
use futures::Stream;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::access::Caller;
use crate::config::Config;
use crate::convert;
use crate::engine::Engine;
use crate::error::Error;
use crate::policy::{Permission, Policy};
use crate::quota::PerIdentity;
use crate::serving::Serving;
use crate::session::SessionStream;
use crate::signing;
use crate::table::{Command, Grant, Refusal, Reply, WaiterId};
use crate::watch::{self, Filter, Watchers};

/// The lock service over an engine.
#[derive(Clone)]
pub struct LockServer {
    /// The lock table and its store that answer now (a cluster member's only while it
    /// leads).
    serving: Serving,
    /// Input limits.
    config: Arc<Config>,
    /// The open `Watch` streams.
    watchers: Watchers,
    /// Signs each grant's sequencer, if a signing key is configured.
    signer: Option<Arc<SigningKey>>,
    /// What each identity may do, when a policy file is given.
    policy: Option<Arc<Policy>>,
    /// The acquires that may wait, per identity, and how many each may have in flight.
    waiters_per_identity: PerIdentity,
}

impl LockServer {
    /// A service over the engine `serving` names, checking input against `config`.
    pub fn new(serving: Serving, config: Arc<Config>) -> Self {
        let watchers =
            Watchers::new(config.max_watchers).per_identity(config.max_watchers_per_identity);
        let waiters_per_identity = PerIdentity::new(
            config.max_waiters_per_identity,
            "acquires that may wait in flight",
            "max_waiters_per_identity",
        );
        LockServer {
            serving,
            config,
            watchers,
            signer: None,
            policy: None,
            waiters_per_identity,
        }
    }

    /// Holds every caller to `policy` ([`crate::policy`]); `None` lets every caller do
    /// everything.
    pub fn with_policy(mut self, policy: Option<Arc<Policy>>) -> Self {
        self.policy = policy;
        self
    }

    /// The caller of a gRPC request with these extensions.
    pub fn caller(&self, extensions: &tonic::Extensions) -> Caller {
        Caller::from_extensions(extensions, self.policy.as_ref())
    }

    /// Signs every grant's sequencer with `signer` ([`crate::signing`]); `None` signs
    /// nothing.
    pub fn with_signer(mut self, signer: Option<Arc<SigningKey>>) -> Self {
        self.signer = signer;
        self
    }

    /// The open `Watch` streams and their cap (the admin listener's event streams count
    /// against it too).
    pub fn watchers(&self) -> &Watchers {
        &self.watchers
    }

    /// `Acquire`: grants the lock at once, or queues for it for up to the request's
    /// `wait_ms`; answers once the grant is durable, with its sequencer when the server
    /// has a signing key. Dropping the future before it answers takes the acquirer out of
    /// the queue and undoes a grant nobody received (L2).
    pub async fn acquire(
        &self,
        caller: &Caller,
        request: pb::AcquireRequest,
    ) -> Result<pb::AcquireResponse, Status> {
        let (mut acquire, wait) = convert::acquire(&self.config, request)?;
        caller.check(Permission::Lock, acquire.lock.as_str())?;
        if let crate::table::LeaseChoice::Join(lease) = &acquire.lease {
            self.check_lease(caller, lease, None)?;
        }
        acquire.holder = caller.holder(acquire.holder, self.config.max_holder_bytes)?;
        if let crate::table::LeaseChoice::New(_) = &acquire.lease {
            acquire.origin = caller.lease_origin();
        }
        // Held until the acquire answers: a waiting acquire counts from before it queues.
        let _waiting = match wait.is_zero() {
            true => None,
            false => self.waiters_per_identity.take(caller.identity_shared())?,
        };
        let lock = acquire.lock.clone();
        let mut response = self.grant(acquire, wait, &lock).await?;
        if let Some(signer) = &self.signer {
            signing::sign(signer, &lock, &mut response);
        }
        Ok(response)
    }

    /// The grant of [`LockServer::acquire`], unsigned.
    async fn grant(
        &self,
        acquire: crate::table::Acquire,
        wait: Duration,
        lock: &fenced_types::LockName,
    ) -> Result<pb::AcquireResponse, Status> {
        let (sender, receiver) = oneshot::channel();
        let handoff = (!wait.is_zero()).then_some(sender);
        let engine = self.serving.engine()?;
        let executed = engine.execute(Command::Acquire(acquire), handoff)?;
        match executed.reply {
            Ok(Reply::Granted(grant)) => deliver(&engine, grant, executed.seq).await,
            Ok(Reply::AlreadyHeld(grant)) => {
                engine.durable(executed.seq).await?;
                Ok(convert::acquire_response(&grant))
            }
            Ok(Reply::Queued(waiter)) => wait_in_queue(&engine, waiter, receiver, wait, lock).await,
            Ok(other) => Err(Status::internal(format!(
                "unexpected reply to acquire: {other:?}"
            ))),
            Err(refusal) => {
                engine.durable(executed.seq).await?;
                Err(refusal.into())
            }
        }
    }

    /// `Renew`: extends a lease by its TTL. In a cluster, confirmed only after a
    /// leadership round that began after it arrived.
    pub async fn renew(
        &self,
        caller: &Caller,
        request: pb::RenewRequest,
    ) -> Result<pb::RenewResponse, Status> {
        let lease_id = request.lease_id;
        let lease = convert::lease_id(&lease_id)?;
        self.check_lease(caller, &lease, None)?;
        let engine = self.serving.engine()?;
        let executed = engine.execute(Command::Renew { lease }, None)?;
        match executed.reply {
            // A renewal writes nothing: a restart (or a new leader) restores the lease with
            // a full TTL anyway.
            Ok(Reply::Renewed { ttl }) => {
                self.serving.confirm_leadership().await?;
                Ok(convert::renewed(lease_id, ttl))
            }
            Ok(other) => Err(Status::internal(format!(
                "unexpected reply to renew: {other:?}"
            ))),
            Err(refusal) => {
                // "Expired" may come from an expiry this very command applied: make it
                // durable before saying so (S7).
                engine.durable(executed.seq).await?;
                Err(refusal.into())
            }
        }
    }

    /// `KeepAlive`: renews each lease named in `renewals` and answers each with an
    /// outcome, in order, until `renewals` ends or fails.
    pub fn keep_alive<Renewals, E>(
        &self,
        caller: Caller,
        renewals: Renewals,
    ) -> impl Stream<Item = Result<pb::RenewResponse, Status>> + Send + 'static
    where
        Renewals: Stream<Item = Result<pb::RenewRequest, E>> + Send + 'static,
        E: 'static,
    {
        // Renewals are answered in order, each as its message is read, by whoever polls the
        // answers (hyper's task for this stream): no task or channel per stream or per
        // renewal. The stream ends when the client's side ends or breaks.
        let server = self.clone();
        renewals.map_while(Result::ok).then(move |message| {
            let server = server.clone();
            let caller = caller.clone();
            async move { keep_alive_one(&server, &caller, message.lease_id).await }
        })
    }

    /// `Release`: ends a lease, or only its holding of the request's lock.
    pub async fn release(
        &self,
        caller: &Caller,
        request: pb::ReleaseRequest,
    ) -> Result<pb::ReleaseResponse, Status> {
        let lease = convert::lease_id(&request.lease_id)?;
        let lock = convert::optional_lock_name(&self.config, "lock", request.lock)?;
        self.check_lease(caller, &lease, lock.as_ref())?;
        let engine = self.serving.engine()?;
        let executed = engine.execute(Command::Release { lease, lock }, None)?;
        engine.durable(executed.seq).await?;
        match executed.reply {
            Ok(_) => Ok(pb::ReleaseResponse {}),
            Err(refusal) => Err(refusal.into()),
        }
    }

    /// `Describe`: one lock's holder, token and queue.
    pub async fn describe(
        &self,
        caller: &Caller,
        request: pb::DescribeRequest,
    ) -> Result<pb::LockInfo, Status> {
        let lock = convert::lock_name(&self.config, "lock", request.lock)?;
        caller.check(Permission::Read, lock.as_str())?;
        let engine = self.serving.engine()?;
        let (view, seq) = engine.read(|table, now| table.describe(now, &lock))?;
        engine.durable(seq).await?;
        self.serving.confirm_leadership().await?;
        Ok(convert::lock_info(view))
    }

    /// `List`: one page of the locks under a prefix, of those the caller may read. The
    /// cursor moves past the locks it may not read as past any other, so a page may hold
    /// fewer locks (or none) while more follow.
    pub async fn list(
        &self,
        caller: &Caller,
        request: pb::ListRequest,
    ) -> Result<pb::ListResponse, Status> {
        let prefix = convert::prefix(&self.config, request.prefix)?;
        caller.check_some_under(Permission::Read, &prefix)?;
        let after = convert::list_cursor(&self.config, &prefix, request.cursor)?;
        let max = self.config.max_list_page;
        let page_size = match usize::try_from(request.page_size) {
            Ok(0) | Err(_) => max,
            Ok(asked) => asked.min(max),
        };
        let engine = self.serving.engine()?;
        let (page, seq, revision) = engine
            .read_revised(|table, now| table.list(now, &prefix, after.as_ref(), page_size))?;
        engine.durable(seq).await?;
        self.serving.confirm_leadership().await?;
        Ok(pb::ListResponse {
            locks: page
                .locks
                .into_iter()
                .filter(|view| caller.may(Permission::Read, view.lock.as_str()))
                .map(convert::lock_info)
                .collect(),
            next_cursor: page.next.map(|after| after.to_string()).unwrap_or_default(),
            revision,
        })
    }

    /// `Watch`: a stream of the events of one lock or of the locks under a prefix, from
    /// the start revision if given; OUT_OF_RANGE when the events from there are no longer
    /// kept; RESOURCE_EXHAUSTED when the most streams are open already (in all, or for the
    /// caller's identity). Served by every
    /// cluster member, leader or not: events are published as they are applied.
    pub fn watch(
        &self,
        caller: Caller,
        request: pb::WatchRequest,
    ) -> Result<watch::WatchStream, Status> {
        let lock = convert::optional_lock_name(&self.config, "lock", request.lock)?;
        let prefix = convert::prefix(&self.config, request.prefix)?;
        if lock.is_some() && !prefix.is_empty() {
            return Err(convert::invalid("set lock or prefix, not both".to_string()));
        }
        let filter = match lock {
            Some(lock) => {
                caller.check(Permission::Read, lock.as_str())?;
                Filter::Lock(lock)
            }
            None => {
                caller.check_some_under(Permission::Read, &prefix)?;
                Filter::Prefix(prefix)
            }
        };
        let identity = caller.identity_shared().cloned();
        let filter = match caller.is_restricted() {
            true => Filter::Readable(Box::new(filter), caller),
            false => filter,
        };
        let subscription = watch::subscribe(self.serving.event_log(), request.start_revision)?;
        self.watchers
            .open_as(identity, subscription, request.start_revision, filter)
    }

    /// `Session`: the answers to `requests`, each run by the handler of its operation, at
    /// most the configured number in flight at once.
    pub fn session<Requests>(&self, caller: Caller, requests: Requests) -> SessionStream<Requests> {
        SessionStream::new(
            self.clone(),
            caller,
            requests,
            self.config.max_session_in_flight,
        )
    }

    /// `CheckToken`: whether a token is the lock's current one.
    pub async fn check_token(
        &self,
        caller: &Caller,
        request: pb::CheckTokenRequest,
    ) -> Result<pb::CheckTokenResponse, Status> {
        let lock = convert::lock_name(&self.config, "lock", request.lock)?;
        caller.check(Permission::Read, lock.as_str())?;
        let presented = convert::optional_token(request.token);
        let engine = self.serving.engine()?;
        let (current, seq) = engine.read(|table, now| table.current_token(now, &lock))?;
        engine.durable(seq).await?;
        self.serving.confirm_leadership().await?;
        Ok(pb::CheckTokenResponse {
            current: current.is_some() && current == presented,
            current_token: current.map_or(0, |token| token.get()),
        })
    }
}

impl LockServer {
    /// `Ok` if the caller has `lock` on `lock` (when given) and on every lock lease `lease`
    /// holds: what renewing, releasing or joining it needs. Reads the table only when a
    /// policy restricts the caller.
    fn check_lease(
        &self,
        caller: &Caller,
        lease: &fenced_types::LeaseId,
        lock: Option<&fenced_types::LockName>,
    ) -> Result<(), Status> {
        if !caller.is_restricted() {
            return Ok(());
        }
        if let Some(lock) = lock {
            return caller.check(Permission::Lock, lock.as_str());
        }
        let engine = self.serving.engine()?;
        let (forbidden, _seq) = engine.read(|table, _now| {
            table
                .lease_locks(lease)
                .find(|name| !caller.may(Permission::Lock, name.as_str()))
                .cloned()
        })?;
        match forbidden {
            Some(name) => caller.check(Permission::Lock, name.as_str()),
            None => Ok(()),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The gRPC service: each call unwraps its request, runs the handler of the same name
/// ([`LockServer::acquire`], ...) and wraps its answer.
#[tonic::async_trait]
impl LockService for LockServer {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let caller = self.caller(request.extensions());
        LockServer::acquire(self, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let caller = self.caller(request.extensions());
        LockServer::renew(self, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    type KeepAliveStream = BoxStream<pb::RenewResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::RenewRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let caller = self.caller(request.extensions());
        let answers = LockServer::keep_alive(self, caller, request.into_inner());
        Ok(Response::new(Box::pin(answers)))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let caller = self.caller(request.extensions());
        LockServer::release(self, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::LockInfo>, Status> {
        let caller = self.caller(request.extensions());
        LockServer::describe(self, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let caller = self.caller(request.extensions());
        LockServer::list(self, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.caller(request.extensions());
        let events = LockServer::watch(self, caller, request.into_inner())?;
        Ok(Response::new(Box::pin(events)))
    }

    type SessionStream = BoxStream<pb::SessionResponse>;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let caller = self.caller(request.extensions());
        let answers = LockServer::session(self, caller, request.into_inner());
        Ok(Response::new(Box::pin(answers)))
    }

    async fn check_token(
        &self,
        request: Request<pb::CheckTokenRequest>,
    ) -> Result<Response<pb::CheckTokenResponse>, Status> {
        let caller = self.caller(request.extensions());
        LockServer::check_token(self, &caller, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// Answers a fresh grant once it is durable; if the caller goes away before that, the
/// grant is taken back (nobody can know its lease id, so nobody could release it).
async fn deliver(engine: &Engine, grant: Grant, seq: u64) -> Result<pb::AcquireResponse, Status> {
    let response = convert::acquire_response(&grant);
    let mut guard = UndoOnDrop {
        engine,
        grant,
        armed: true,
    };
    engine.durable(seq).await?;
    guard.armed = false;
    Ok(response)
}

/// Waits in a lock's queue for up to `wait`.
async fn wait_in_queue(
    engine: &Engine,
    waiter: WaiterId,
    receiver: oneshot::Receiver<Result<Grant, Refusal>>,
    wait: Duration,
    lock: &fenced_types::LockName,
) -> Result<pb::AcquireResponse, Status> {
    let started = Instant::now();
    let mut guard = WaitGuard {
        engine,
        waiter,
        receiver: Some(receiver),
    };
    let handoff = match tokio::time::timeout(wait, guard.receiver()).await {
        Ok(handoff) => handoff,
        Err(_elapsed) => {
            let executed = engine.execute(Command::CancelWait { waiter }, None)?;
            if executed.reply == Ok(Reply::Cancelled(true)) {
                guard.disarm();
                let (view, seq) = engine.read(|table, now| table.describe(now, lock))?;
                engine.durable(seq).await?;
                let (holder, token) = view
                    .holder
                    .map(|(holder, token)| (holder.to_string(), token.get()))
                    .unwrap_or_default();
                return Err(Refusal::WaitTimedOut {
                    lock: lock.clone(),
                    waited_ms: started.elapsed().as_millis(),
                    holder,
                    token,
                }
                .into());
            }
            // Granted in the same instant: the handoff is on its way.
            guard.receiver().await
        }
    };
    guard.disarm();
    match handoff {
        // Handoffs are dispatched only once durable: answer at once.
        Ok(Ok(grant)) => Ok(convert::acquire_response(&grant)),
        Ok(Err(refusal)) => Err(refusal.into()),
        // A cluster leader's term ended while it waited ([`Engine::close`]).
        Err(_) if engine.is_closed() => Err(Error::LeadershipLost.into()),
        Err(_) => Err(Status::internal("the waiter's handoff channel closed")),
    }
}

/// One KeepAlive message: renew and answer with an outcome instead of a status, so the
/// stream stays open for the client's other leases.
async fn keep_alive_one(
    server: &LockServer,
    caller: &Caller,
    lease_id: String,
) -> Result<pb::RenewResponse, Status> {
    let serving = &server.serving;
    let failed = |lease_id: String, outcome: pb::renew_response::Outcome, message: String| {
        Ok(pb::RenewResponse {
            lease_id,
            ttl_ms: 0,
            outcome: outcome.into(),
            message,
        })
    };
    let lease = match convert::lease_id(&lease_id) {
        Ok(lease) => lease,
        Err(status) => {
            return failed(
                lease_id,
                pb::renew_response::Outcome::Invalid,
                status.message().to_string(),
            )
        }
    };
    // A refusal ends the stream with PERMISSION_DENIED: no outcome says it.
    server.check_lease(caller, &lease, None)?;
    let engine = serving.engine()?;
    let executed = engine.execute(Command::Renew { lease }, None)?;
    match executed.reply {
        Ok(Reply::Renewed { ttl }) => {
            serving.confirm_leadership().await?;
            Ok(convert::renewed(lease_id, ttl))
        }
        Ok(other) => Err(Status::internal(format!(
            "unexpected reply to renew: {other:?}"
        ))),
        Err(refusal) => {
            engine.durable(executed.seq).await?;
            crate::telemetry::telemetry().refused(&refusal);
            failed(
                lease_id,
                convert::renew_outcome(&refusal),
                refusal.to_string(),
            )
        }
    }
}

/// Takes back a fresh grant if the request is dropped before the grant was answered.
struct UndoOnDrop<'a> {
    engine: &'a Engine,
    grant: Grant,
    armed: bool,
}

impl Drop for UndoOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!(lock = %self.grant.lock, "acquirer left before its grant was durable; undoing");
            self.engine.undo_grant(&self.grant);
        }
    }
}

/// Removes a queued acquirer that goes away (timeout, cancellation, disconnect): it leaves
/// the queue at once (L2), and if it was granted in the same instant, the grant is undone.
struct WaitGuard<'a> {
    engine: &'a Engine,
    waiter: WaiterId,
    receiver: Option<oneshot::Receiver<Result<Grant, Refusal>>>,
}

impl WaitGuard<'_> {
    async fn receiver(&mut self) -> Result<Result<Grant, Refusal>, oneshot::error::RecvError> {
        match self.receiver.as_mut() {
            Some(receiver) => receiver.await,
            None => std::future::pending().await,
        }
    }

    fn disarm(&mut self) {
        self.receiver = None;
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Some(mut receiver) = self.receiver.take() else {
            return;
        };
        let cancelled = self
            .engine
            .execute(
                Command::CancelWait {
                    waiter: self.waiter,
                },
                None,
            )
            .map(|executed| executed.reply == Ok(Reply::Cancelled(true)));
        if let Ok(false) = cancelled {
            // Granted already: refuse further delivery (the dispatcher then undoes it), and
            // undo a grant that was delivered but never read.
            receiver.close();
            if let Ok(Ok(grant)) = receiver.try_recv() {
                self.engine.undo_grant(&grant);
            }
        }
    }
}
