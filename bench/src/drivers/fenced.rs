//! fenced through its generated gRPC client: one `Acquire` (creating a lease of the given
//! TTL) and one `Release` (of the whole lease) per cycle, over one of the three
//! [`FencedTransport`]s (a `Session` stream per client over gRPC, unary calls, or a
//! connection per client to the framed `Session` listener), KeepAlive streams carrying many
//! leases; a renewal on the session (or a unary `Describe`) as the write-free round trip.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_proto::v1::renew_response::Outcome;
use fenced_proto::v1::session_request::Op as SessionOp;
use fenced_proto::v1::session_response::Result as SessionResult;
use fenced_proto::v1::{
    AcquireRequest, DescribeRequest, ReleaseRequest, RenewRequest, SessionRequest, SessionResponse,
};
use futures::{SinkExt, StreamExt};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tonic::transport::Channel;
use tonic::Code;

use crate::config::{FencedTransport, MeasuredServer};
use crate::driver::{within, KeepAliveStream, LeaseConn, LeaseSystem, LockClient, LockSystem};
use crate::drivers::fenced_tls::FencedTls;
use crate::drivers::grpc_channel;
use crate::error::BenchError;

const NAME: &str = "fenced";

/// The holder name the benchmark's grants carry (for the server's logs and Describe).
const HOLDER: &str = "fenced-bench";

/// A fenced server.
#[derive(Clone, Debug)]
pub struct FencedSystem {
    /// Its endpoint and process id.
    target: MeasuredServer,
    /// The longest a call may take beyond any waiting it asked for.
    rpc_timeout: Duration,
    /// How clients send acquire and release.
    transport: FencedTransport,
    /// The address of the server's framed `Session` listener (for
    /// [`FencedTransport::Framed`]).
    framed: Option<String>,
    /// TLS on both listeners, when the server serves it.
    tls: Option<FencedTls>,
    /// The system's name in tables.
    name: &'static str,
}

impl FencedSystem {
    /// The fenced server at `target`, driven over `transport` (`framed` is the framed
    /// listener's address, which [`FencedTransport::Framed`] needs); named after the
    /// transport.
    pub fn new(
        target: MeasuredServer,
        rpc_timeout: Duration,
        transport: FencedTransport,
        framed: Option<String>,
        tls: Option<FencedTls>,
    ) -> FencedSystem {
        FencedSystem {
            target,
            rpc_timeout,
            transport,
            framed,
            tls,
            name: transport.system_name(),
        }
    }

    /// The same system under another name in tables (the keepalive workload, which does
    /// not depend on the transport, calls it plain "fenced").
    pub fn named(self, name: &'static str) -> FencedSystem {
        FencedSystem { name, ..self }
    }

    /// How its clients send acquire and release.
    pub fn transport(&self) -> FencedTransport {
        self.transport
    }

    async fn client(&self) -> Result<LockServiceClient<Channel>, BenchError> {
        let tls = self.tls.as_ref().map(|tls| &tls.grpc);
        let channel = grpc_channel(NAME, &self.target.endpoint, self.rpc_timeout, tls).await?;
        Ok(LockServiceClient::new(channel))
    }
}

impl LockSystem for FencedSystem {
    type Client = FencedClient;

    fn name(&self) -> &'static str {
        self.name
    }

    fn pid(&self) -> Option<u32> {
        self.target.pid
    }

    fn ping_carrier(&self) -> &'static str {
        match self.transport {
            FencedTransport::Framed => {
                "a renewal on a framed `Session` connection, as the workloads' messages travel"
            }
            FencedTransport::Session => {
                "a renewal on a gRPC `Session` stream, as the workloads' messages travel"
            }
            FencedTransport::Unary => "a unary `Describe` call",
        }
    }

    async fn connect(&self, ttl: Duration) -> Result<FencedClient, BenchError> {
        let mut client = self.client().await?;
        let session = match (self.transport, &self.framed) {
            (FencedTransport::Framed, Some(addr)) => {
                Some(Session::open_framed(addr, self.tls.as_ref()).await?)
            }
            (FencedTransport::Framed, None) => {
                return Err(BenchError::Config(
                    "the framed transport needs the framed listener's address".to_string(),
                ))
            }
            (FencedTransport::Session, _) => Some(Session::open(&mut client).await?),
            (FencedTransport::Unary, _) => None,
        };
        let session = session.map(|session| Arc::new(tokio::sync::Mutex::new(session)));
        Ok(FencedClient {
            client,
            ttl,
            rpc_timeout: self.rpc_timeout,
            session,
            ping_lease: None,
        })
    }
}

/// One fenced client on a connection of its own (clones share the connection and the
/// session).
#[derive(Clone)]
pub struct FencedClient {
    /// The generated client.
    client: LockServiceClient<Channel>,
    /// The TTL of the leases its acquires create.
    ttl: Duration,
    /// The longest a call may take beyond any waiting it asked for.
    rpc_timeout: Duration,
    /// The client's Session stream, when acquire and release go over one.
    session: Option<Arc<tokio::sync::Mutex<Session>>>,
    /// The lease a session-mode [`LockClient::ping`] renews (taken by the first ping).
    ping_lease: Option<String>,
}

/// One session: requests out, answers in (one request at a time per client, so answers
/// come in order).
pub struct Session {
    /// How the messages travel.
    transport: Transport,
    /// The next request id.
    next_id: u64,
}

/// A session's connection.
enum Transport {
    /// A gRPC `Session` call.
    Grpc {
        /// Where requests go.
        sender: mpsc::Sender<SessionRequest>,
        /// The answers.
        responses: tonic::Streaming<SessionResponse>,
    },
    /// A connection to the framed `Session` listener (`fenced --session-listen`).
    Framed(Framed<TcpStream, LengthDelimitedCodec>),
    /// The same over TLS.
    FramedTls(Box<Framed<TlsStream<TcpStream>, LengthDelimitedCodec>>),
}

/// A framed session's failure, as the status a gRPC session would have failed with.
fn framed_error(error: impl std::fmt::Display) -> BenchError {
    BenchError::rpc(
        NAME,
        "Session",
        tonic::Status::unavailable(format!("framed session: {error}")),
    )
}

impl Session {
    /// Connects to the framed `Session` listener at `addr` (over `tls` if given) and says
    /// hello.
    async fn open_framed(addr: &str, tls: Option<&FencedTls>) -> Result<Session, BenchError> {
        let failed = |reason: String| BenchError::Connect {
            system: NAME,
            endpoint: addr.to_string(),
            reason: format!("framed session: {reason}"),
        };
        let stream = fenced_proto::framed::connect_tcp(addr)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let transport = match tls {
            None => Transport::Framed(
                fenced_proto::framed::hello(stream)
                    .await
                    .map_err(|e| failed(e.to_string()))?,
            ),
            Some(tls) => {
                let stream = tls.wrap(addr, stream).await.map_err(failed)?;
                Transport::FramedTls(Box::new(
                    fenced_proto::framed::hello(stream)
                        .await
                        .map_err(|e| failed(e.to_string()))?,
                ))
            }
        };
        Ok(Session {
            transport,
            next_id: 0,
        })
    }

    async fn open(client: &mut LockServiceClient<Channel>) -> Result<Session, BenchError> {
        let (sender, receiver) = mpsc::channel(16);
        let responses = client
            .session(ReceiverStream::new(receiver))
            .await
            .map_err(|status| BenchError::rpc(NAME, "Session", status))?
            .into_inner();
        Ok(Session {
            transport: Transport::Grpc { sender, responses },
            next_id: 0,
        })
    }

    /// Sends one operation and waits for its answer; a refusal comes back as the status the
    /// unary call would have returned, so both paths share their handling of it.
    async fn call(
        &mut self,
        op: SessionOp,
    ) -> Result<Result<SessionResult, tonic::Status>, BenchError> {
        self.next_id += 1;
        let id = self.next_id;
        let closed = || {
            BenchError::rpc(
                NAME,
                "Session",
                tonic::Status::unavailable("session closed"),
            )
        };
        let request = SessionRequest { id, op: Some(op) };
        let response = match &mut self.transport {
            Transport::Grpc { sender, responses } => {
                sender.send(request).await.map_err(|_| closed())?;
                responses
                    .message()
                    .await
                    .map_err(|status| BenchError::rpc(NAME, "Session", status))?
                    .ok_or_else(closed)?
            }
            Transport::Framed(frames) => framed_call(frames, request).await?,
            Transport::FramedTls(frames) => framed_call(frames.as_mut(), request).await?,
        };
        if response.id != id {
            return Err(BenchError::rpc(
                NAME,
                "Session",
                tonic::Status::internal(format!("answer {} to request {id}", response.id)),
            ));
        }
        match response.result.ok_or_else(closed)? {
            SessionResult::Error(error) => Ok(Err(tonic::Status::new(
                Code::from_i32(error.code),
                error.message,
            ))),
            answer => Ok(Ok(answer)),
        }
    }
}

/// Sends one request on a framed connection and reads its answer, answering the server's
/// keepalive pings on the way.
async fn framed_call<S: AsyncRead + AsyncWrite + Unpin>(
    frames: &mut Framed<S, LengthDelimitedCodec>,
    request: SessionRequest,
) -> Result<SessionResponse, BenchError> {
    let closed = || {
        BenchError::rpc(
            NAME,
            "Session",
            tonic::Status::unavailable("session closed"),
        )
    };
    frames
        .send(Bytes::from(request.encode_to_vec()))
        .await
        .map_err(framed_error)?;
    let frame = loop {
        let frame = frames
            .next()
            .await
            .ok_or_else(closed)?
            .map_err(framed_error)?;
        if frame.as_ref() != fenced_proto::framed::PING {
            break frame;
        }
        // The server's keepalive ping, while a long wait is queued: answer it.
        frames
            .send(Bytes::from_static(fenced_proto::framed::PING))
            .await
            .map_err(framed_error)?;
    };
    SessionResponse::decode(frame).map_err(framed_error)
}

/// A session answer of the wrong kind, as a status.
fn unexpected(answer: SessionResult) -> tonic::Status {
    tonic::Status::internal(format!("unexpected answer {answer:?}"))
}

/// A grant: the lease that holds the lock (released whole).
pub struct FencedHeld {
    /// The lease id.
    lease_id: String,
}

impl FencedClient {
    /// One `Acquire`; `Ok(None)` when the server answers ABORTED (the lock stayed taken).
    async fn acquire_raw(
        &mut self,
        request: AcquireRequest,
    ) -> Result<Option<fenced_proto::v1::AcquireResponse>, BenchError> {
        let after = Duration::from_millis(request.wait_ms) + self.rpc_timeout;
        let call = async {
            let answer = match &self.session {
                Some(session) => match session
                    .lock()
                    .await
                    .call(SessionOp::Acquire(request))
                    .await?
                {
                    Ok(SessionResult::Acquired(granted)) => Ok(granted),
                    Ok(other) => Err(unexpected(other)),
                    Err(status) => Err(status),
                },
                None => self
                    .client
                    .acquire(request)
                    .await
                    .map(tonic::Response::into_inner),
            };
            match answer {
                Ok(granted) => Ok(Some(granted)),
                Err(status) if status.code() == Code::Aborted => Ok(None),
                Err(status) => Err(BenchError::rpc(NAME, "Acquire", status)),
            }
        };
        within(NAME, "Acquire", after, call).await
    }
}

impl LockClient for FencedClient {
    type Held = FencedHeld;

    async fn acquire(
        &mut self,
        lock: &str,
        wait: Duration,
    ) -> Result<Option<FencedHeld>, BenchError> {
        let request = acquire_request(lock, self.ttl, wait, String::new());
        let granted = self.acquire_raw(request).await?;
        Ok(granted.map(|response| FencedHeld {
            lease_id: response.lease_id,
        }))
    }

    async fn release(&mut self, held: FencedHeld) -> Result<(), BenchError> {
        let request = ReleaseRequest {
            lease_id: held.lease_id,
            lock: String::new(),
        };
        let call = async {
            let answer = match &self.session {
                Some(session) => match session
                    .lock()
                    .await
                    .call(SessionOp::Release(request))
                    .await?
                {
                    Ok(SessionResult::Released(_)) => Ok(()),
                    Ok(other) => Err(unexpected(other)),
                    Err(status) => Err(status),
                },
                None => self.client.release(request).await.map(|_| ()),
            };
            answer.map_err(|status| BenchError::rpc(NAME, "Release", status))
        };
        within(NAME, "Release", self.rpc_timeout, call).await?;
        Ok(())
    }

    async fn acquire_unrenewed(
        &mut self,
        lock: &str,
        ttl: Duration,
    ) -> Result<Duration, BenchError> {
        let request = acquire_request(lock, ttl, Duration::ZERO, String::new());
        match self.acquire_raw(request).await? {
            Some(response) => Ok(Duration::from_millis(response.ttl_ms)),
            None => Err(taken(lock)),
        }
    }

    async fn ping(&mut self) -> Result<(), BenchError> {
        let Some(session) = self.session.clone() else {
            let request = DescribeRequest {
                lock: "fenced-bench/ping".to_string(),
            };
            let call = async {
                self.client
                    .describe(request)
                    .await
                    .map_err(|status| BenchError::rpc(NAME, "Describe", status))
            };
            within(NAME, "Describe", self.rpc_timeout, call).await?;
            return Ok(());
        };
        // On a Session the round trip is a renewal of a lease of the client's own: the
        // stream a handoff's messages travel, and a renewal writes nothing. (A unary call
        // costs more than a message on an open stream, and made a limit fenced exceeded.)
        let lease_id = match &self.ping_lease {
            Some(lease_id) => lease_id.clone(),
            None => {
                let lock = format!("fenced-bench/ping/{}", rand::random::<u64>());
                let held = self
                    .acquire(&lock, Duration::ZERO)
                    .await?
                    .ok_or_else(|| taken(&lock))?;
                self.ping_lease = Some(held.lease_id.clone());
                held.lease_id
            }
        };
        let call = async {
            let answer = session
                .lock()
                .await
                .call(SessionOp::Renew(RenewRequest { lease_id }))
                .await?;
            match answer {
                Ok(SessionResult::Renewed(renewed)) if renewed.outcome() == Outcome::Renewed => {
                    Ok(())
                }
                Ok(other) => Err(BenchError::rpc(NAME, "Renew", unexpected(other))),
                Err(status) => Err(BenchError::rpc(NAME, "Renew", status)),
            }
        };
        within(NAME, "Renew", self.rpc_timeout, call).await
    }

    async fn close(mut self) -> Result<(), BenchError> {
        match self.ping_lease.take() {
            Some(lease_id) => self.release(FencedHeld { lease_id }).await,
            None => Ok(()),
        }
    }
}

fn acquire_request(lock: &str, ttl: Duration, wait: Duration, lease_id: String) -> AcquireRequest {
    AcquireRequest {
        lock: lock.to_string(),
        holder: HOLDER.to_string(),
        ttl_ms: duration_ms(ttl),
        wait_ms: duration_ms(wait),
        lock_delay_ms: 0,
        lease_id,
        new_lease_id: String::new(),
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl LeaseSystem for FencedSystem {
    type Conn = FencedLeases;

    async fn connect_leases(&self) -> Result<FencedLeases, BenchError> {
        // Unary calls, never a Session: the clones of this connection create and revoke
        // leases concurrently, and one Session here carries one request at a time.
        let unary = FencedSystem {
            transport: FencedTransport::Unary,
            ..self.clone()
        };
        Ok(FencedLeases {
            client: unary.connect(Duration::ZERO).await?,
        })
    }
}

/// Lease operations on one fenced connection (unary calls, many at once).
#[derive(Clone)]
pub struct FencedLeases {
    /// The connection (its `ttl` is unused: every call names its own).
    client: FencedClient,
}

impl LeaseConn for FencedLeases {
    type Lease = Arc<str>;

    async fn grant_with_lock(&mut self, lock: &str, ttl: Duration) -> Result<Arc<str>, BenchError> {
        let request = acquire_request(lock, ttl, Duration::ZERO, String::new());
        match self.client.acquire_raw(request).await? {
            Some(response) => Ok(Arc::from(response.lease_id)),
            None => Err(taken(lock)),
        }
    }

    async fn add_lock(
        &mut self,
        lease: &Arc<str>,
        lock: &str,
        ttl: Duration,
    ) -> Result<(), BenchError> {
        // Joining a lease keeps the TTL it was created with; the same one is sent anyway.
        let request = acquire_request(lock, ttl, Duration::ZERO, lease.to_string());
        match self.client.acquire_raw(request).await? {
            Some(_) => Ok(()),
            None => Err(taken(lock)),
        }
    }

    async fn revoke(&mut self, lease: &Arc<str>) -> Result<(), BenchError> {
        self.client
            .release(FencedHeld {
                lease_id: lease.to_string(),
            })
            .await
    }

    async fn keepalive(&mut self) -> Result<KeepAliveStream<Arc<str>>, BenchError> {
        let (renew, leases) = mpsc::channel::<Arc<str>>(1024);
        let requests = ReceiverStream::new(leases).map(|lease| RenewRequest {
            lease_id: lease.to_string(),
        });
        let mut client = self.client.client.clone();
        // The call is made when the answers are first polled, so the caller can send
        // renewals before the server has answered anything.
        let answers = futures::stream::once(async move { client.keep_alive(requests).await })
            .flat_map(|opened| match opened {
                Ok(response) => response
                    .into_inner()
                    .map(|answer| match answer {
                        Ok(answer) => Ok(answer.outcome() == Outcome::Renewed),
                        Err(status) => Err(BenchError::rpc(NAME, "KeepAlive", status)),
                    })
                    .boxed(),
                Err(status) => {
                    futures::stream::once(async { Err(BenchError::rpc(NAME, "KeepAlive", status)) })
                        .boxed()
                }
            })
            .boxed();
        Ok(KeepAliveStream { renew, answers })
    }
}

fn taken(lock: &str) -> BenchError {
    BenchError::Unexpected {
        system: NAME,
        op: "Acquire",
        detail: format!("the fresh lock {lock:?} was taken"),
    }
}
