//! [`LockServer`]: the gRPC `fenced.v1.LockService`. A thin edge: decode, run the engine,
//! wait for durability, encode (STYLE point 2).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fenced_proto::v1 as pb;
use fenced_proto::v1::lock_service_server::LockService;
use futures::Stream;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Config;
use crate::convert;
use crate::engine::Engine;
use crate::session::SessionStream;
use crate::table::{Command, Grant, Refusal, Reply, WaiterId};
use crate::watch::{Filter, Watchers};

/// The lock service over an engine.
#[derive(Clone)]
pub struct LockServer {
    /// The lock table and its store.
    engine: Arc<Engine>,
    /// Input limits.
    config: Arc<Config>,
    /// The open `Watch` streams.
    watchers: Watchers,
}

impl LockServer {
    /// A service over `engine`, checking input against `config`.
    pub fn new(engine: Arc<Engine>, config: Arc<Config>) -> Self {
        let watchers = Watchers::new(config.max_watchers);
        LockServer {
            engine,
            config,
            watchers,
        }
    }

    /// Answers a fresh grant once it is durable; if the caller goes away before that, the
    /// grant is taken back (nobody can know its lease id, so nobody could release it).
    async fn deliver(
        &self,
        grant: Grant,
        seq: u64,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let response = convert::acquire_response(&grant);
        let mut guard = UndoOnDrop {
            engine: &self.engine,
            grant,
            armed: true,
        };
        self.engine.durable(seq).await?;
        guard.armed = false;
        Ok(Response::new(response))
    }

    /// Waits in a lock's queue for up to `wait`.
    async fn wait_in_queue(
        &self,
        waiter: WaiterId,
        receiver: oneshot::Receiver<Result<Grant, Refusal>>,
        wait: Duration,
        lock: &fenced_types::LockName,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let started = Instant::now();
        let mut guard = WaitGuard {
            engine: &self.engine,
            waiter,
            receiver: Some(receiver),
        };
        let handoff = match tokio::time::timeout(wait, guard.receiver()).await {
            Ok(handoff) => handoff,
            Err(_elapsed) => {
                let executed = self.engine.execute(Command::CancelWait { waiter }, None)?;
                if executed.reply == Ok(Reply::Cancelled(true)) {
                    guard.disarm();
                    let (view, seq) = self.engine.read(|table, now| table.describe(now, lock))?;
                    self.engine.durable(seq).await?;
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
            Ok(Ok(grant)) => Ok(Response::new(convert::acquire_response(&grant))),
            Ok(Err(refusal)) => Err(refusal.into()),
            Err(_) => Err(Status::internal("the waiter's handoff channel closed")),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl LockService for LockServer {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let (acquire, wait) = convert::acquire(&self.config, request.into_inner())?;
        let lock = acquire.lock.clone();
        let (sender, receiver) = oneshot::channel();
        let handoff = (!wait.is_zero()).then_some(sender);
        let executed = self.engine.execute(Command::Acquire(acquire), handoff)?;
        match executed.reply {
            Ok(Reply::Granted(grant)) => self.deliver(grant, executed.seq).await,
            Ok(Reply::AlreadyHeld(grant)) => {
                self.engine.durable(executed.seq).await?;
                Ok(Response::new(convert::acquire_response(&grant)))
            }
            Ok(Reply::Queued(waiter)) => self.wait_in_queue(waiter, receiver, wait, &lock).await,
            Ok(other) => Err(Status::internal(format!(
                "unexpected reply to acquire: {other:?}"
            ))),
            Err(refusal) => {
                self.engine.durable(executed.seq).await?;
                Err(refusal.into())
            }
        }
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let lease_id = request.into_inner().lease_id;
        let lease = convert::lease_id(&lease_id)?;
        let executed = self.engine.execute(Command::Renew { lease }, None)?;
        match executed.reply {
            // A renewal writes nothing: a restart restores the lease with a full TTL anyway.
            Ok(Reply::Renewed { ttl }) => Ok(Response::new(convert::renewed(lease_id, ttl))),
            Ok(other) => Err(Status::internal(format!(
                "unexpected reply to renew: {other:?}"
            ))),
            Err(refusal) => {
                // "Expired" may come from an expiry this very command applied: make it
                // durable before saying so (S7).
                self.engine.durable(executed.seq).await?;
                Err(refusal.into())
            }
        }
    }

    type KeepAliveStream = BoxStream<pb::RenewResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::RenewRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        // Renewals are answered in order, each as its message is read, by whoever polls the
        // answers (hyper's task for this stream): no task or channel per stream or per
        // renewal. The stream ends when the client's side ends or breaks.
        let engine = self.engine.clone();
        let answers = request
            .into_inner()
            .map_while(Result::ok)
            .then(move |message| {
                let engine = engine.clone();
                async move { keep_alive_one(&engine, message.lease_id).await }
            });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let request = request.into_inner();
        let lease = convert::lease_id(&request.lease_id)?;
        let lock = convert::optional_lock_name(&self.config, "lock", request.lock)?;
        let executed = self
            .engine
            .execute(Command::Release { lease, lock }, None)?;
        self.engine.durable(executed.seq).await?;
        match executed.reply {
            Ok(_) => Ok(Response::new(pb::ReleaseResponse {})),
            Err(refusal) => Err(refusal.into()),
        }
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::LockInfo>, Status> {
        let lock = convert::lock_name(&self.config, "lock", request.into_inner().lock)?;
        let (view, seq) = self.engine.read(|table, now| table.describe(now, &lock))?;
        self.engine.durable(seq).await?;
        Ok(Response::new(convert::lock_info(view)))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let request = request.into_inner();
        let prefix = convert::prefix(&self.config, request.prefix)?;
        let after = convert::list_cursor(&self.config, &prefix, request.cursor)?;
        let max = self.config.max_list_page;
        let page_size = match usize::try_from(request.page_size) {
            Ok(0) | Err(_) => max,
            Ok(asked) => asked.min(max),
        };
        let (page, seq) = self
            .engine
            .read(|table, now| table.list(now, &prefix, after.as_ref(), page_size))?;
        self.engine.durable(seq).await?;
        Ok(Response::new(pb::ListResponse {
            locks: page.locks.into_iter().map(convert::lock_info).collect(),
            next_cursor: page.next.map(|after| after.to_string()).unwrap_or_default(),
        }))
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let lock = convert::optional_lock_name(&self.config, "lock", request.lock)?;
        let prefix = convert::prefix(&self.config, request.prefix)?;
        if lock.is_some() && !prefix.is_empty() {
            return Err(Status::invalid_argument("set lock or prefix, not both"));
        }
        let filter = match lock {
            Some(lock) => Filter::Lock(lock),
            None => Filter::Prefix(prefix),
        };
        let events = self.watchers.open(self.engine.subscribe(), filter)?;
        Ok(Response::new(Box::pin(events)))
    }

    type SessionStream = BoxStream<pb::SessionResponse>;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Ok(Response::new(Box::pin(SessionStream::new(
            self.clone(),
            request.into_inner(),
            self.config.max_session_in_flight,
        ))))
    }

    async fn check_token(
        &self,
        request: Request<pb::CheckTokenRequest>,
    ) -> Result<Response<pb::CheckTokenResponse>, Status> {
        let request = request.into_inner();
        let lock = convert::lock_name(&self.config, "lock", request.lock)?;
        let presented = convert::optional_token(request.token);
        let (current, seq) = self
            .engine
            .read(|table, now| table.current_token(now, &lock))?;
        self.engine.durable(seq).await?;
        Ok(Response::new(pb::CheckTokenResponse {
            current: current.is_some() && current == presented,
            current_token: current.map_or(0, |token| token.get()),
        }))
    }
}

/// One KeepAlive message: renew and answer with an outcome instead of a status, so the
/// stream stays open for the client's other leases.
async fn keep_alive_one(engine: &Engine, lease_id: String) -> Result<pb::RenewResponse, Status> {
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
    let executed = engine.execute(Command::Renew { lease }, None)?;
    match executed.reply {
        Ok(Reply::Renewed { ttl }) => Ok(convert::renewed(lease_id, ttl)),
        Ok(other) => Err(Status::internal(format!(
            "unexpected reply to renew: {other:?}"
        ))),
        Err(refusal) => {
            engine.durable(executed.seq).await?;
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

impl LockServer {
    /// Answers one request of a `Session` stream ([`SessionStream`]) exactly as the unary
    /// call would.
    pub(crate) async fn session_one(&self, request: pb::SessionRequest) -> pb::SessionResponse {
        use pb::session_request::Op;
        use pb::session_response::Result as Outcome;
        let result = match request.op {
            Some(Op::Acquire(acquire)) => self
                .acquire(Request::new(acquire))
                .await
                .map(|r| Outcome::Acquired(r.into_inner())),
            Some(Op::Renew(renew)) => self
                .renew(Request::new(renew))
                .await
                .map(|r| Outcome::Renewed(r.into_inner())),
            Some(Op::Release(release)) => self
                .release(Request::new(release))
                .await
                .map(|r| Outcome::Released(r.into_inner())),
            None => Err(Status::invalid_argument(
                "session request without an operation",
            )),
        };
        pb::SessionResponse {
            id: request.id,
            result: Some(result.unwrap_or_else(|status| {
                Outcome::Error(fenced_proto::session::session_error(&status))
            })),
        }
    }
}
