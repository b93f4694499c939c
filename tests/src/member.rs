//! [`FakeMember`]: an in-process cluster member on a free loopback port that either
//! forwards every `LockService` rpc to a real server (as the leader would serve it) or
//! refuses every rpc as a member that is not the leader: `UNAVAILABLE` with
//! `fenced-error: not-leader` and, when it names one, `fenced-leader: host:port`.
//!
//! The test switches it at any moment with [`FakeMember::set`]; streams it forwards
//! (`KeepAlive`, `Session`, `Watch`) then end with the refusal, as a leader that steps
//! down ends them, and an `Acquire` it forwards that still waits for its answer (queued
//! for a held lock) ends with the "outcome unknown" refusal a real leader gives when its
//! term ends, its forwarded call dropped (so the real server takes it out of the queue).
//! It counts the rpcs it refused, and keeps every `Acquire` it received, so that a test
//! can tell whether and how a call reached it. It can lose the answer of the next
//! forwarded `Acquire`, or break a `Session` stream at the next grant it carries (the
//! grant is kept for the test, the client gets the stream's failure instead). It runs on
//! the test's tokio runtime; dropping it stops serving.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fenced_proto::metadata::{ERROR_CODE, LEADER, NOT_LEADER_CODE};
use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_proto::v1::lock_service_server::{LockService, LockServiceServer};
use fenced_proto::v1::*;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// What a [`FakeMember`] does with the rpcs it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Forwards every rpc to the real server at this endpoint (`http://host:port`).
    Forward(String),
    /// Refuses every rpc as not the leader, naming this leader (`host:port`) if any, and
    /// ends the streams it forwarded with that refusal.
    NotLeader(Option<String>),
    /// Refuses every new rpc as [`Role::NotLeader`] does, but lets the streams it already
    /// forwards go on: a test can then see one rpc face the refusal while a client's other
    /// streams stay where they are.
    RefuseNew(Option<String>),
}

/// A fake cluster member on a free loopback port.
pub struct FakeMember {
    /// Where clients connect.
    addr: SocketAddr,
    /// The role, watched by every forwarded stream.
    role: watch::Sender<Role>,
    /// How many rpcs it refused as not the leader.
    refused: Arc<AtomicUsize>,
    /// How many rpcs it forwarded.
    forwarded: Arc<AtomicUsize>,
    /// Whether the next forwarded `Acquire` loses its answer.
    lose_acquire_answer: Arc<AtomicBool>,
    /// Every `Acquire` received (unary or on a `Session`), in order.
    acquires: Arc<Mutex<Vec<AcquireRequest>>>,
    /// Whether a `Session` stream breaks at the next grant it carries.
    break_session_at_grant: Arc<AtomicBool>,
    /// The grants a broken `Session` stream never delivered.
    swallowed: Arc<Mutex<Vec<AcquireResponse>>>,
    /// The server task.
    task: JoinHandle<()>,
}

impl FakeMember {
    /// Starts a member in `role`.
    pub async fn start(role: Role) -> FakeMember {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (role, watched) = watch::channel(role);
        let refused = Arc::new(AtomicUsize::new(0));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let lose_acquire_answer = Arc::new(AtomicBool::new(false));
        let acquires = Arc::new(Mutex::new(Vec::new()));
        let break_session_at_grant = Arc::new(AtomicBool::new(false));
        let swallowed = Arc::new(Mutex::new(Vec::new()));
        let service = Member {
            role: watched,
            refused: refused.clone(),
            forwarded: forwarded.clone(),
            lose_acquire_answer: lose_acquire_answer.clone(),
            acquires: acquires.clone(),
            break_session_at_grant: break_session_at_grant.clone(),
            swallowed: swallowed.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(LockServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        FakeMember {
            addr,
            role,
            refused,
            forwarded,
            lose_acquire_answer,
            acquires,
            break_session_at_grant,
            swallowed,
            task,
        }
    }

    /// Makes the next grant a forwarded `Session` stream carries break the stream instead:
    /// the real server granted it, and the client's stream ends with `UNAVAILABLE` before
    /// the answer, as when a leader dies between committing a grant and answering it. The
    /// grant is kept ([`FakeMember::swallowed`]).
    pub fn break_session_at_next_grant(&self) {
        self.break_session_at_grant.store(true, Ordering::SeqCst);
    }

    /// The grants that broken `Session` streams never delivered, in order.
    pub fn swallowed(&self) -> Vec<AcquireResponse> {
        self.swallowed.lock().unwrap().clone()
    }

    /// Every `Acquire` it received so far (unary or on a `Session`), in order.
    pub fn acquires(&self) -> Vec<AcquireRequest> {
        self.acquires.lock().unwrap().clone()
    }

    /// Makes the next `Acquire` it forwards lose its answer: the real server handles it
    /// (and may grant it), and the client gets `UNAVAILABLE` instead, as from a leader
    /// that died between committing a grant and answering it.
    pub fn lose_next_acquire_answer(&self) {
        self.lose_acquire_answer.store(true, Ordering::SeqCst);
    }

    /// Its address, `host:port` (what a `fenced-leader` would name).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its endpoint, `http://host:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches its role; forwarded streams end with the refusal if it is one.
    pub fn set(&self, role: Role) {
        self.role.send_replace(role);
    }

    /// How many rpcs (and forwarded streams) it refused as not the leader so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// How many rpcs it forwarded so far.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for FakeMember {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The not-leader refusal, naming `leader` if given.
pub fn not_leader(leader: Option<&str>) -> Status {
    let mut status = Status::unavailable("this member is not the leader");
    let meta = status.metadata_mut();
    meta.insert(ERROR_CODE, NOT_LEADER_CODE.parse().unwrap());
    if let Some(leader) = leader {
        meta.insert(LEADER, leader.parse().unwrap());
    }
    status
}

/// What a real leader answers to a request in flight when its term ends: `UNAVAILABLE`,
/// `fenced-error: not-leader`, no leader named, and its outcome unknown.
pub fn outcome_unknown() -> Status {
    let mut status = Status::unavailable(
        "this node stopped leading before the answer was committed; its outcome is unknown",
    );
    status
        .metadata_mut()
        .insert(ERROR_CODE, NOT_LEADER_CODE.parse().unwrap());
    status
}

/// The service behind a [`FakeMember`].
struct Member {
    /// The current role.
    role: watch::Receiver<Role>,
    /// Rpcs refused.
    refused: Arc<AtomicUsize>,
    /// Rpcs forwarded.
    forwarded: Arc<AtomicUsize>,
    /// Whether the next forwarded `Acquire` loses its answer.
    lose_acquire_answer: Arc<AtomicBool>,
    /// Every `Acquire` received.
    acquires: Arc<Mutex<Vec<AcquireRequest>>>,
    /// Whether a `Session` stream breaks at the next grant it carries.
    break_session_at_grant: Arc<AtomicBool>,
    /// The grants broken `Session` streams never delivered.
    swallowed: Arc<Mutex<Vec<AcquireResponse>>>,
}

/// A forwarded answer stream.
type Forwarded<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Member {
    /// A client of the real server when forwarding, else the refusal.
    async fn upstream(&self) -> Result<LockServiceClient<Channel>, Status> {
        let role = self.role.borrow().clone();
        match role {
            Role::Forward(endpoint) => {
                self.forwarded.fetch_add(1, Ordering::SeqCst);
                LockServiceClient::connect(endpoint)
                    .await
                    .map_err(|e| Status::unavailable(format!("the fake cannot forward: {e}")))
            }
            Role::NotLeader(leader) | Role::RefuseNew(leader) => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                Err(not_leader(leader.as_deref()))
            }
        }
    }

    /// Passes `answers` on until they end or the member stops forwarding; then ends the
    /// stream with the refusal, as a leader stepping down does.
    fn pump<T, S>(&self, mut answers: S) -> Forwarded<T>
    where
        T: Send + 'static,
        S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
    {
        let (sender, receiver) = mpsc::channel(64);
        let mut role = self.role.clone();
        let refused = self.refused.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    answer = answers.next() => match answer {
                        Some(answer) => {
                            let failed = answer.is_err();
                            if sender.send(answer).await.is_err() || failed {
                                return;
                            }
                        }
                        None => return,
                    },
                    changed = role.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let now = role.borrow_and_update().clone();
                        if let Role::NotLeader(leader) = now {
                            refused.fetch_add(1, Ordering::SeqCst);
                            let _ = sender.send(Err(not_leader(leader.as_deref()))).await;
                            return;
                        }
                    }
                }
            }
        });
        Box::pin(ReceiverStream::new(receiver))
    }
}

/// The requests of an inbound stream, until it ends or fails.
fn requests<T: Send + 'static>(inbound: Streaming<T>) -> impl Stream<Item = T> + Send {
    inbound.map_while(Result::ok)
}

#[tonic::async_trait]
impl LockService for Member {
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        let request = request.into_inner();
        self.acquires.lock().unwrap().push(request.clone());
        let mut upstream = self.upstream().await?;
        let mut role = self.role.clone();
        // A leader whose term ends answers what it has not committed "outcome unknown";
        // the forwarded call is dropped, so the real server takes a waiter out of its
        // queue.
        let stepped_down = async move {
            loop {
                if role.changed().await.is_err() {
                    return std::future::pending().await;
                }
                if matches!(*role.borrow_and_update(), Role::NotLeader(_)) {
                    return;
                }
            }
        };
        let answer = tokio::select! {
            answer = upstream.acquire(request) => answer,
            () = stepped_down => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(outcome_unknown());
            }
        };
        if self.lose_acquire_answer.swap(false, Ordering::SeqCst) {
            return Err(Status::unavailable(format!(
                "the fake member lost the answer ({:?})",
                answer.map(|answer| answer.into_inner().token)
            )));
        }
        answer
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        self.upstream().await?.renew(request.into_inner()).await
    }

    type KeepAliveStream = Forwarded<RenewResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<RenewRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let mut upstream = self.upstream().await?;
        let answers = upstream
            .keep_alive(requests(request.into_inner()))
            .await?
            .into_inner();
        Ok(Response::new(self.pump(answers)))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        self.upstream().await?.release(request.into_inner()).await
    }

    async fn describe(
        &self,
        request: Request<DescribeRequest>,
    ) -> Result<Response<LockInfo>, Status> {
        self.upstream().await?.describe(request.into_inner()).await
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        self.upstream().await?.list(request.into_inner()).await
    }

    type WatchStream = Forwarded<WatchEvent>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let answers = self
            .upstream()
            .await?
            .watch(request.into_inner())
            .await?
            .into_inner();
        Ok(Response::new(self.pump(answers)))
    }

    async fn check_token(
        &self,
        request: Request<CheckTokenRequest>,
    ) -> Result<Response<CheckTokenResponse>, Status> {
        self.upstream()
            .await?
            .check_token(request.into_inner())
            .await
    }

    type SessionStream = Forwarded<SessionResponse>;

    async fn session(
        &self,
        request: Request<Streaming<SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let acquires = self.acquires.clone();
        let inbound = requests(request.into_inner()).map(move |request| {
            if let Some(session_request::Op::Acquire(acquire)) = &request.op {
                acquires.lock().unwrap().push(acquire.clone());
            }
            request
        });
        let mut upstream = self.upstream().await?;
        let answers = upstream.session(inbound).await?.into_inner();
        let (armed, swallowed) = (self.break_session_at_grant.clone(), self.swallowed.clone());
        // The first grant after the test arms it breaks the stream instead of arriving.
        let answers = answers.map(move |answer| match answer {
            Ok(SessionResponse {
                result: Some(session_response::Result::Acquired(grant)),
                ..
            }) if armed.swap(false, Ordering::SeqCst) => {
                swallowed.lock().unwrap().push(grant);
                Err(Status::unavailable(
                    "the fake member broke the session before the grant's answer",
                ))
            }
            other => other,
        });
        Ok(Response::new(self.pump(answers)))
    }
}
