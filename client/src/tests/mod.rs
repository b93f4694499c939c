//! Tests of the whole SDK (client, renewal task, watchdog, fence, session) with an injected
//! [`ManualClock`] against an in-process fake server whose answers the test controls.
//! The real server is exercised by the `tests/` crate; here every instant is the test's.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fenced_proto::session::session_error;
use fenced_proto::v1::lock_service_server::{LockService, LockServiceServer};
use fenced_proto::v1::renew_response::Outcome;
use fenced_proto::v1::session_request::Op;
use fenced_proto::v1::session_response::Result as Reply;
use fenced_proto::v1::*;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    AcquireOptions, Client, ClientBuilder, Clock, Error, FenceError, LeaseState, LostReason,
    ManualClock, SuspectReason,
};

mod abandoned;
mod cluster;
mod framed;
mod huge_durations;
mod sequencer;

/// Which rpc carried the fake's acquires and releases, and how many sessions were opened.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Calls {
    /// Unary `Acquire` calls.
    acquire_unary: usize,
    /// Acquires received on a `Session` stream.
    acquire_session: usize,
    /// Unary `Release` calls.
    release_unary: usize,
    /// Releases received on a `Session` stream.
    release_session: usize,
    /// `Session` rpcs (answered or refused).
    sessions: usize,
    /// `Session` streams whose request half the client ended.
    sessions_ended: usize,
}

/// What the fake server answers and what it saw.
#[derive(Debug)]
struct Script {
    /// The outcome of every renewal.
    outcome: Outcome,
    /// Renewals received, in order, with the manual clock's time at receipt.
    renewals: Vec<Duration>,
    /// The clock the test drives, read when a renewal arrives.
    clock: ManualClock,
    /// Which rpcs were used.
    calls: Calls,
    /// Refuse every acquire as busy, held by this holder with this token (as the real
    /// server words and tags it).
    busy: Option<(String, u64)>,
    /// Refuse every release with this status.
    release_refusal: Option<Status>,
    /// Acquires of this lock wait until the `held` gate opens.
    hold: Option<String>,
    /// How many acquires are waiting at the gate.
    holding: usize,
    /// How many held acquires were dropped before they were answered (their caller went
    /// away: the unary call's stream was reset).
    abandoned: usize,
    /// The manual clock moves this much when an acquire arrives (a slow network).
    delay: Duration,
    /// Answer `Session` with UNIMPLEMENTED, like a server that predates it.
    no_session: bool,
    /// The answer streams of the open sessions, so that a test can break them.
    sessions: Vec<mpsc::Sender<Result<SessionResponse, Status>>>,
    /// Every grant: lease id to lock.
    granted: HashMap<String, String>,
    /// Every released lease id.
    released: Vec<String>,
    /// The token every grant carries (7 unless a test scripts a broken server with 0).
    token: u64,
    /// Every acquire received, whichever rpc carried it, in order.
    acquires: Vec<AcquireRequest>,
    /// The sequencer every grant carries (none unless a test scripts one).
    sequencer: Vec<u8>,
    /// Refuse this many of the next acquires and releases (whichever rpc carries them) as
    /// a cluster member that is not the leader and knows none.
    not_leader: usize,
    /// Refuse every unary acquire with this status (a server that is going away).
    unary_acquire_refusal: Option<Status>,
}

impl Script {
    /// A script that grants and renews everything.
    fn new(clock: ManualClock) -> Self {
        Script {
            outcome: Outcome::Renewed,
            renewals: Vec::new(),
            clock,
            calls: Calls::default(),
            busy: None,
            release_refusal: None,
            hold: None,
            holding: 0,
            abandoned: 0,
            delay: Duration::ZERO,
            no_session: false,
            sessions: Vec::new(),
            granted: HashMap::new(),
            released: Vec::new(),
            token: 7,
            acquires: Vec::new(),
            sequencer: Vec::new(),
            not_leader: 0,
            unary_acquire_refusal: None,
        }
    }
}

/// A fake lock server: grants every acquire with token 7 (unless scripted otherwise) and
/// answers renewals as scripted. Its `Session` answers each request as its unary call
/// would, in a task of its own (so out of order), with the refusal's status turned into a
/// `SessionError` the way the real server does it.
#[derive(Clone)]
struct Fake {
    /// The script, shared with the test.
    script: Arc<Mutex<Script>>,
    /// Held acquires wait until this is `true`.
    gate: watch::Receiver<bool>,
}

type Answers = Pin<Box<dyn tokio_stream::Stream<Item = Result<RenewResponse, Status>> + Send>>;
type Events = Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchEvent, Status>> + Send>>;
type SessionAnswers =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<SessionResponse, Status>> + Send>>;

impl Fake {
    /// One acquire, whichever rpc carried it.
    async fn grant(&self, request: AcquireRequest) -> Result<AcquireResponse, Status> {
        let held = {
            let mut script = self.script.lock().unwrap();
            script.acquires.push(request.clone());
            script.clock.advance(script.delay);
            if script.not_leader > 0 {
                script.not_leader -= 1;
                return Err(not_leader());
            }
            if let Some((holder, token)) = &script.busy {
                // Worded and tagged as the real server's `Refusal::Busy`.
                let mut status = Status::aborted(format!(
                    "lock {:?} is held by {holder:?} with token {token}",
                    request.lock
                ));
                let meta = status.metadata_mut();
                meta.insert("fenced-error", "busy".parse().unwrap());
                meta.insert("fenced-holder", holder.parse().unwrap());
                meta.insert("fenced-token", token.to_string().parse().unwrap());
                return Err(status);
            }
            let held = script.hold.as_deref() == Some(request.lock.as_str());
            if held {
                script.holding += 1;
            }
            held
        };
        if held {
            let mut abandoned = Abandoned(Some(self.script.clone()));
            let mut gate = self.gate.clone();
            let _ = gate.wait_for(|open| *open).await;
            abandoned.0 = None;
        }
        let lease_id = fenced_types::LeaseId::random().to_string();
        let mut script = self.script.lock().unwrap();
        script.granted.insert(lease_id.clone(), request.lock);
        Ok(AcquireResponse {
            lease_id,
            token: script.token,
            ttl_ms: request.ttl_ms,
            sequencer: script.sequencer.clone(),
        })
    }

    /// One release, whichever rpc carried it.
    fn free(&self, request: ReleaseRequest) -> Result<ReleaseResponse, Status> {
        let mut script = self.script.lock().unwrap();
        if let Some(status) = script.release_refusal.clone() {
            return Err(status);
        }
        if script.not_leader > 0 {
            script.not_leader -= 1;
            return Err(not_leader());
        }
        script.released.push(request.lease_id);
        Ok(ReleaseResponse {})
    }
}

/// A cluster member's refusal as not the leader, with no leader known.
fn not_leader() -> Status {
    let mut status = Status::unavailable("not the leader");
    status.metadata_mut().insert(
        fenced_proto::metadata::ERROR_CODE,
        fenced_proto::metadata::NOT_LEADER_CODE.parse().unwrap(),
    );
    status
}

/// Counts a held acquire whose future is dropped before the gate opens.
struct Abandoned(Option<Arc<Mutex<Script>>>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(script) = self.0.take() {
            script.lock().unwrap().abandoned += 1;
        }
    }
}

#[tonic::async_trait]
impl LockService for Fake {
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        let refusal = {
            let mut script = self.script.lock().unwrap();
            script.calls.acquire_unary += 1;
            script.unary_acquire_refusal.clone()
        };
        if let Some(status) = refusal {
            self.script
                .lock()
                .unwrap()
                .acquires
                .push(request.into_inner());
            return Err(status);
        }
        self.grant(request.into_inner()).await.map(Response::new)
    }

    async fn renew(&self, _: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        Err(Status::unimplemented("the SDK renews over KeepAlive"))
    }

    type KeepAliveStream = Answers;

    async fn keep_alive(
        &self,
        request: Request<Streaming<RenewRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let mut requests = request.into_inner();
        let (sender, receiver) = mpsc::channel(16);
        let script = self.script.clone();
        tokio::spawn(async move {
            while let Some(Ok(renew)) = requests.next().await {
                let answer = {
                    let mut script = script.lock().unwrap();
                    let now = script.clock.now();
                    script.renewals.push(now);
                    let renewed = script.outcome == Outcome::Renewed;
                    RenewResponse {
                        lease_id: renew.lease_id,
                        ttl_ms: if renewed { 3_000 } else { 0 },
                        outcome: script.outcome as i32,
                        message: if renewed {
                            String::new()
                        } else {
                            "lease expired".into()
                        },
                    }
                };
                if sender.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        self.script.lock().unwrap().calls.release_unary += 1;
        self.free(request.into_inner()).map(Response::new)
    }

    async fn describe(&self, _: Request<DescribeRequest>) -> Result<Response<LockInfo>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    type WatchStream = Events;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Events>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn check_token(
        &self,
        _: Request<CheckTokenRequest>,
    ) -> Result<Response<CheckTokenResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    type SessionStream = SessionAnswers;

    async fn session(
        &self,
        request: Request<Streaming<SessionRequest>>,
    ) -> Result<Response<SessionAnswers>, Status> {
        let (sender, receiver) = mpsc::channel(1024);
        {
            let mut script = self.script.lock().unwrap();
            script.calls.sessions += 1;
            if script.no_session {
                return Err(Status::unimplemented("unknown method Session"));
            }
            script.sessions.push(sender.clone());
        }
        let mut requests = request.into_inner();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(request)) = requests.next().await {
                let (fake, sender) = (fake.clone(), sender.clone());
                // Each request in a task of its own, as the real server does: a held
                // acquire does not hold up the answers behind it.
                tokio::spawn(async move {
                    let result = match request.op {
                        Some(Op::Acquire(acquire)) => {
                            fake.script.lock().unwrap().calls.acquire_session += 1;
                            fake.grant(acquire).await.map(Reply::Acquired)
                        }
                        Some(Op::Release(release)) => {
                            fake.script.lock().unwrap().calls.release_session += 1;
                            fake.free(release).map(Reply::Released)
                        }
                        Some(Op::Renew(_)) => Err(Status::unimplemented("not in the fake")),
                        None => Err(Status::invalid_argument(
                            "session request without an operation",
                        )),
                    };
                    let answer = SessionResponse {
                        id: request.id,
                        result: Some(result.unwrap_or_else(|s| Reply::Error(session_error(&s)))),
                    };
                    let _ = sender.send(Ok(answer)).await;
                });
            }
            fake.script.lock().unwrap().calls.sessions_ended += 1;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// A running fake: its script, and the gate that lets held acquires through.
struct Server {
    /// The script, shared with the fake.
    script: Arc<Mutex<Script>>,
    /// Opens the gate for held acquires.
    gate: watch::Sender<bool>,
    /// Where it listens.
    endpoint: String,
}

impl Server {
    /// Starts a fake on a free loopback port.
    async fn start(clock: &ManualClock) -> Server {
        let script = Arc::new(Mutex::new(Script::new(clock.clone())));
        let (gate, gate_receiver) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Fake {
            script: script.clone(),
            gate: gate_receiver,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LockServiceServer::new(fake))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Server {
            script,
            gate,
            endpoint: format!("http://{addr}"),
        }
    }

    /// A client of this fake on `clock`, with a drift bound of 5 % and a margin of 100 ms.
    fn builder(&self, clock: &ManualClock, pause_threshold: Duration) -> ClientBuilder {
        Client::builder(self.endpoint.clone())
            .clock(clock.clone())
            .drift_bound(0.05)
            .safety_margin(Duration::from_millis(100))
            .pause_threshold(pause_threshold)
    }

    /// A connected client of this fake on `clock` (no pause detection in practice: 60 s).
    async fn connect(&self, clock: &ManualClock) -> Client {
        self.builder(clock, Duration::from_secs(60))
            .connect()
            .await
            .unwrap()
    }

    /// Which rpcs were used so far.
    fn calls(&self) -> Calls {
        self.script.lock().unwrap().calls.clone()
    }

    /// Breaks every open session: the server ends each answer stream with UNAVAILABLE.
    async fn break_sessions(&self) {
        let sessions = std::mem::take(&mut self.script.lock().unwrap().sessions);
        for session in sessions {
            let _ = session
                .send(Err(Status::unavailable("connection reset by the fake")))
                .await;
        }
    }
}

/// Starts the fake on a free loopback port and a client on a manual clock, with a pause
/// threshold (tests that jump the clock without meaning a pause make it long).
async fn setup(pause_threshold: Duration) -> (Client, Arc<Mutex<Script>>, ManualClock) {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server
        .builder(&clock, pause_threshold)
        .connect()
        .await
        .unwrap();
    (client, server.script, clock)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Waits (in real time, up to 5 s) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(ms(10)).await;
    }
    panic!("never: {what}");
}

/// Polls `future` (in real time, up to 5 s) until `check` holds, without letting it
/// finish: how a test walks a call up to a point and then abandons it there.
async fn poll_until<F: std::future::Future + Unpin>(
    what: &str,
    future: &mut F,
    mut check: impl FnMut() -> bool,
) {
    for _ in 0..500 {
        if futures::poll!(&mut *future).is_ready() {
            panic!("finished before: {what}");
        }
        if check() {
            return;
        }
        tokio::time::sleep(ms(10)).await;
    }
    panic!("never: {what}");
}

// checks: S4
#[tokio::test]
async fn deadline_is_the_send_time_plus_the_ttl_less_drift_and_margin() {
    let (client, _, clock) = setup(ms(500)).await;
    let sent = clock.now();
    let lease = client
        .acquire("a", AcquireOptions::try_once().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    // 3 s * 0.95 - 100 ms = 2750 ms after the send (the manual clock did not move).
    assert_eq!(lease.remaining(), ms(2_750));
    assert_eq!(lease.fence().unwrap().get(), 7);
    // Just before the deadline the token is handed out, at it not: the clock is read at
    // the call, whatever state was last published. (Advance in steps under the pause
    // threshold, as a running process's watchdog would see it.)
    for _ in 0..(2_749 / 400) {
        clock.advance(ms(400));
        lease.fence().unwrap();
    }
    clock.set(sent + ms(2_749));
    assert!(lease.fence().is_ok(), "{:?}", lease.status());
    clock.set(sent + ms(2_750));
    assert_eq!(
        lease.fence(),
        Err(FenceError::Suspect {
            lock: lease.lock().clone(),
            reason: SuspectReason::DeadlinePassed
        })
    );
}

// checks: S4 (pause rule)
#[tokio::test]
async fn fence_sees_a_pause_itself_and_a_confirmed_renewal_clears_it() {
    let (client, script, clock) = setup(ms(500)).await;
    let lease = client
        .acquire("a", AcquireOptions::try_once().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    assert!(lease.fence().is_ok());

    // The process "freezes" for 1.2 s: over the 500 ms threshold, under the deadline.
    clock.advance(ms(1_200));
    match lease.fence() {
        Err(FenceError::Suspect {
            reason: SuspectReason::Paused { paused },
            ..
        }) => assert!(paused >= ms(1_200), "{paused:?}"),
        other => panic!("expected a pause, got {other:?}"),
    }

    // The watchdog woke the renewal task: a renewal sent after the pause is confirmed.
    let mut changes = lease.watch();
    tokio::time::timeout(Duration::from_secs(5), changes.wait_for(|s| s.is_held()))
        .await
        .unwrap()
        .unwrap();
    assert!(lease.fence().is_ok());
    let renewals = script.lock().unwrap().renewals.clone();
    assert!(
        renewals.iter().any(|&at| at >= clock.now()),
        "a renewal went out after the pause: {renewals:?}"
    );
    let states: Vec<_> = lease.history().into_iter().map(|c| c.state).collect();
    assert!(matches!(
        states.as_slice(),
        [
            LeaseState::Held,
            LeaseState::Suspect { .. },
            LeaseState::Held
        ]
    ));
}

// checks: S4, L3
#[tokio::test]
async fn renewals_go_out_at_a_third_of_the_ttl_and_move_the_deadline() {
    let (client, script, clock) = setup(Duration::from_secs(60)).await;
    let lease = client
        .acquire("a", AcquireOptions::try_once().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    let start = clock.now();
    // Not due before a third of the TTL.
    clock.advance(ms(900));
    tokio::time::sleep(ms(100)).await;
    assert!(script.lock().unwrap().renewals.is_empty());
    // Due at a third: the renewal task's next wake-up sends it.
    clock.advance(ms(100));
    until("a renewal", || !script.lock().unwrap().renewals.is_empty()).await;
    until("the deadline moved", || {
        lease.remaining() > ms(2_750 - 1_000)
    })
    .await;
    // The new deadline counts from the renewal's send, at start + 1 s.
    assert_eq!(lease.remaining(), ms(2_750));
    assert_eq!(script.lock().unwrap().renewals[0], start + ms(1_000));
}

// checks: S7
#[tokio::test]
async fn lost_for_good_when_the_server_says_expired() {
    let (client, script, clock) = setup(Duration::from_secs(60)).await;
    let lease = client
        .acquire("a", AcquireOptions::try_once().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    script.lock().unwrap().outcome = Outcome::Expired;
    clock.advance(ms(1_000));
    let reason = tokio::time::timeout(Duration::from_secs(5), lease.lost())
        .await
        .unwrap();
    assert!(
        matches!(reason, LostReason::Expired { ref message } if message == "lease expired"),
        "{reason:?}"
    );
    // Well before the local deadline, no token; and renewals stop.
    assert!(matches!(lease.fence(), Err(FenceError::Lost { .. })));
    script.lock().unwrap().outcome = Outcome::Renewed;
    let seen = script.lock().unwrap().renewals.len();
    clock.advance(ms(1_000));
    tokio::time::sleep(ms(200)).await;
    assert_eq!(script.lock().unwrap().renewals.len(), seen);
    assert!(lease.state().is_lost());
}

// checks: S5 (the token travels with the write)
#[tokio::test]
async fn the_token_is_attached_to_requests_only_while_held() {
    let (client, _, clock) = setup(ms(500)).await;
    let lease = client
        .acquire("a", AcquireOptions::try_once().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    let request = lease.request("payload").unwrap();
    let token = request
        .metadata()
        .get(fenced_proto::metadata::FENCING_TOKEN)
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(token, "7");
    // After a pause, no request can be made with the token.
    clock.advance(ms(2_000));
    let mut request = tonic::Request::new("payload");
    assert!(lease.attach(&mut request).is_err());
    assert!(request
        .metadata()
        .get(fenced_proto::metadata::FENCING_TOKEN)
        .is_none());
}

#[tokio::test]
async fn https_endpoints_get_tls_and_bad_settings_are_refused() {
    // TLS is configured for https (the handshake itself needs a TLS server: not here).
    let result = Client::builder("https://127.0.0.1:1")
        .timeouts(ms(200), ms(200))
        .connect()
        .await;
    assert!(
        matches!(result, Err(crate::Error::Connect { .. })),
        "{result:?}"
    );
    let result = Client::builder("http://127.0.0.1:1")
        .pause_threshold(ms(10))
        .connect()
        .await;
    assert!(
        matches!(
            result,
            Err(crate::Error::Config {
                field: "pause_threshold",
                ..
            })
        ),
        "{result:?}"
    );
}

// checks: S4 (pause rule): the guarded write may be the first code to run after SIGCONT
#[tokio::test]
async fn fence_detects_a_pause_before_the_watchdog_thread_runs() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    // The watchdog thread sleeps 100 s of real time: it will not beat during this test.
    let client = Client::builder(server.endpoint.clone())
        .clock(clock.clone())
        .watchdog_period(Duration::from_secs(100))
        .pause_threshold(Duration::from_secs(200))
        .connect()
        .await
        .unwrap();
    let lease = client
        .acquire(
            "a",
            AcquireOptions::try_once().ttl(Duration::from_secs(3_600)),
        )
        .await
        .unwrap();
    // Frozen for 300 s: far under the hour's deadline, over the threshold. No other code
    // has run since (a current-thread runtime, no await): fence alone must notice.
    clock.advance(Duration::from_secs(300));
    match lease.fence() {
        Err(FenceError::Suspect {
            reason: SuspectReason::Paused { paused },
            ..
        }) => assert_eq!(paused, Duration::from_secs(300)),
        other => panic!("expected the pause, got {other:?}"),
    }
}

/// Fails the test if `result` is not `Busy` on `lock` held by `holder` with `token`.
fn assert_busy(result: &Result<crate::Lease, Error>, lock: &str, holder: &str, token: u64) {
    match result {
        Err(Error::Busy {
            lock: busy_lock,
            holder: busy_holder,
            token: busy_token,
            ..
        }) => {
            assert_eq!(busy_lock, lock);
            assert_eq!(busy_holder.as_deref(), Some(holder));
            assert_eq!(busy_token.map(|t| t.get()), Some(token));
        }
        other => panic!("expected Busy, got {other:?}"),
    }
}

// checks: S4 (the deadline counts from the send of the session message), S6 (the release
// names the lease it was granted)
#[tokio::test]
async fn try_once_acquires_and_releases_share_one_session() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;
    // Each acquire takes 500 ms on the way to the server.
    server.script.lock().unwrap().delay = ms(500);

    // Phase 1: two try-once acquires, both over one session; each deadline counts from the
    // send, before the 500 ms: 3 s * 0.95 - 100 ms - 500 ms.
    let ttl = Duration::from_secs(3);
    let a = client
        .acquire("a", AcquireOptions::try_once().ttl(ttl))
        .await
        .unwrap();
    assert_eq!(a.remaining(), ms(2_250));
    let b = client
        .acquire("b", AcquireOptions::try_once().ttl(ttl))
        .await
        .unwrap();
    assert_eq!(b.remaining(), ms(2_250));
    assert_eq!(
        server.calls(),
        Calls {
            acquire_session: 2,
            sessions: 1,
            ..Calls::default()
        }
    );

    // Phase 2: an explicit release and a dropped lease go over the session too.
    let (a_id, b_id) = (a.id().to_string(), b.id().to_string());
    a.release().await.unwrap();
    drop(b);
    until("the dropped lease is released", || {
        server.script.lock().unwrap().released.len() == 2
    })
    .await;
    assert_eq!(server.script.lock().unwrap().released, vec![a_id, b_id]);
    let calls = server.calls();
    assert_eq!((calls.release_session, calls.release_unary), (2, 0));
    assert_eq!((calls.acquire_unary, calls.sessions), (0, 1));
}

// checks: S4 (the same deadline arithmetic on the unary path), and the CONTRACT
// "Bad input" rule that a refusal reaches the caller with what the server said
#[tokio::test]
async fn refusals_over_the_session_are_the_same_errors_as_unary() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let over_session = server.connect(&clock).await;
    let unary = server
        .builder(&clock, Duration::from_secs(60))
        .session(false)
        .connect()
        .await
        .unwrap();

    // Phase 1: leases for the release refusals below; the switch keeps `unary` off the
    // session, with the same send-time deadline.
    server.script.lock().unwrap().delay = ms(500);
    let ttl = Duration::from_secs(3);
    let lease_s = over_session
        .acquire("x", AcquireOptions::try_once().ttl(ttl))
        .await
        .unwrap();
    assert_eq!(lease_s.remaining(), ms(2_250));
    let lease_u = unary
        .acquire("y", AcquireOptions::try_once().ttl(ttl))
        .await
        .unwrap();
    assert_eq!(lease_u.remaining(), ms(2_250));

    // Phase 2: busy, with holder and token, identical on both paths.
    server.script.lock().unwrap().busy = Some(("alpha".into(), 42));
    let busy_s = over_session.try_acquire("jobs").await;
    let busy_u = unary.try_acquire("jobs").await;
    assert_busy(&busy_s, "jobs", "alpha", 42);
    assert_eq!(format!("{busy_s:?}"), format!("{busy_u:?}"));

    // Phase 3: a release refused as expired: LeaseExpired on both paths.
    let mut expired = Status::failed_precondition("lease 1234 has expired");
    expired
        .metadata_mut()
        .insert("fenced-error", "lease-expired".parse().unwrap());
    server.script.lock().unwrap().release_refusal = Some(expired);
    let refused_s = lease_s.release().await;
    let refused_u = lease_u.release().await;
    assert!(
        matches!(refused_s, Err(Error::LeaseExpired { ref message }) if message == "lease 1234 has expired"),
        "{refused_s:?}"
    );
    assert_eq!(format!("{refused_s:?}"), format!("{refused_u:?}"));

    // Phase 4: a refusal without details (the message is all there is) maps alike too.
    server.script.lock().unwrap().release_refusal =
        Some(Status::invalid_argument("lease_id \"zz\" is not a UUID"));
    let lease_s = {
        server.script.lock().unwrap().busy = None;
        over_session.try_acquire("x2").await.unwrap()
    };
    let lease_u = unary.try_acquire("y2").await.unwrap();
    let bad_s = lease_s.release().await;
    let bad_u = lease_u.release().await;
    assert!(
        matches!(bad_s, Err(Error::InvalidArgument { .. })),
        "{bad_s:?}"
    );
    assert_eq!(format!("{bad_s:?}"), format!("{bad_u:?}"));

    let calls = server.calls();
    assert_eq!((calls.acquire_session, calls.acquire_unary), (3, 3));
    assert_eq!((calls.release_session, calls.release_unary), (2, 2));
    assert_eq!(calls.sessions, 1, "the unary client never opened one");
}

// checks: S6 (each caller gets the lease id granted for its own request, whatever the
// order of the answers)
#[tokio::test]
async fn answers_out_of_order_are_matched_by_id() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;
    server.script.lock().unwrap().hold = Some("slow".into());

    // Phase 1: the acquire of "slow" is held by the server.
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.try_acquire("slow").await }
    });
    until("the server holds the slow acquire", || {
        server.script.lock().unwrap().holding == 1
    })
    .await;

    // Phase 2: twenty acquires sent after it, concurrently, are answered first.
    let fast: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.try_acquire(&format!("fast/{i}")).await })
        })
        .collect();
    let mut leases = Vec::new();
    for task in fast {
        leases.push(task.await.unwrap().unwrap());
    }
    assert!(
        !slow.is_finished(),
        "the slow acquire cannot be answered yet"
    );
    assert_eq!(client.shared().session.pending(), 1);

    // Phase 3: the slow one is answered last, with its own grant.
    server.gate.send(true).unwrap();
    leases.push(slow.await.unwrap().unwrap());
    let granted = server.script.lock().unwrap().granted.clone();
    for lease in &leases {
        assert_eq!(
            granted.get(&lease.id().to_string()).map(String::as_str),
            Some(lease.lock().as_str())
        );
    }
    assert_eq!(client.shared().session.pending(), 0);
    let calls = server.calls();
    assert_eq!((calls.acquire_session, calls.sessions), (21, 1));
}

// checks: C4 (a try-once acquire that may have been applied is sent again only with the
// lease id it was created with, once, as a unary call), and the SDK's failure rule: when
// that call fails too, the broken session's error reaches the caller
#[tokio::test]
async fn a_broken_session_fails_its_pending_requests_and_the_next_call_reopens() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;
    {
        let mut script = server.script.lock().unwrap();
        script.hold = Some("slow".into());
        script.unary_acquire_refusal = Some(Status::unavailable("the fake is going away"));
    }

    // Phase 1: two requests wait on the session when it breaks.
    let pending: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.try_acquire("slow").await })
        })
        .collect();
    until("the server holds both acquires", || {
        server.script.lock().unwrap().holding == 2
    })
    .await;
    assert_eq!(client.shared().session.pending(), 2);
    server.break_sessions().await;

    // Phase 2: each is sent once more as a unary call with its own lease id; that fails
    // too, so both fail with the session's transport error, as a unary call would.
    for task in pending {
        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        match result {
            Err(error @ Error::Unavailable { .. }) => {
                assert!(error.is_transient());
                assert!(error.to_string().contains("connection reset by the fake"));
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    assert_eq!(client.shared().session.pending(), 0);
    let calls = server.calls();
    assert_eq!((calls.acquire_session, calls.acquire_unary), (2, 2));
    let ids = |acquires: &[AcquireRequest]| {
        let mut ids: Vec<String> = acquires.iter().map(|a| a.new_lease_id.clone()).collect();
        ids.sort();
        ids
    };
    {
        let script = server.script.lock().unwrap();
        let (session, unary) = script.acquires.split_at(2);
        assert_eq!(
            ids(session),
            ids(unary),
            "the same two lease ids, once each"
        );
        assert_ne!(session[0].new_lease_id, session[1].new_lease_id);
    }

    // Phase 3: the next acquire opens a new session and succeeds.
    server.script.lock().unwrap().unary_acquire_refusal = None;
    let lease = client.try_acquire("after").await.unwrap();
    assert!(lease.fence().is_ok());
    let calls = server.calls();
    assert_eq!(
        (calls.sessions, calls.acquire_session, calls.acquire_unary),
        (2, 3, 2)
    );
}

// checks: C4, S4 (a try-once acquire whose session broke after it was sent is sent once
// more as a unary call with the same lease id, and the grant that call brings is the
// caller's, its deadline counted from that call's send)
#[tokio::test]
async fn a_session_acquire_cut_off_by_a_broken_stream_is_sent_once_as_a_unary_call() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;
    server.script.lock().unwrap().hold = Some("slow".into());
    let acquire = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .acquire(
                    "slow",
                    AcquireOptions::try_once().ttl(Duration::from_secs(3)),
                )
                .await
        }
    });
    until("the server holds the acquire", || {
        server.script.lock().unwrap().holding == 1
    })
    .await;
    clock.advance(ms(300));
    server.break_sessions().await;
    until("the acquire is sent again", || {
        server.script.lock().unwrap().acquires.len() == 2
    })
    .await;
    clock.advance(ms(400));
    server.gate.send(true).unwrap();
    let lease = tokio::time::timeout(Duration::from_secs(5), acquire)
        .await
        .unwrap()
        .unwrap()
        .expect("the unary call's grant");
    // Counted from the unary send, 400 ms before the answer: 3 s * 0.95 - 100 ms - 400 ms
    // (from the session's send, 300 ms earlier, it would be 300 ms less).
    assert_eq!(lease.remaining(), ms(2_350));
    let script = server.script.lock().unwrap();
    assert_eq!(
        (script.calls.acquire_session, script.calls.acquire_unary),
        (1, 1)
    );
    assert_eq!(
        script.acquires[1].new_lease_id,
        script.acquires[0].new_lease_id
    );
}

// checks: no CONTRACT id directly: a server without Session is served by unary calls
#[tokio::test]
async fn a_server_without_session_gets_unary_calls_for_good() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    server.script.lock().unwrap().no_session = true;
    let client = server.connect(&clock).await;

    let a = client.try_acquire("a").await.unwrap();
    let b = client.try_acquire("b").await.unwrap();
    assert!(!client.shared().session.active());
    a.release().await.unwrap();
    b.release().await.unwrap();
    let calls = server.calls();
    assert_eq!(
        calls,
        Calls {
            acquire_unary: 2,
            release_unary: 2,
            sessions: 1,
            ..Calls::default()
        },
        "asked once, then unary only"
    );
}

// checks: L1 (a grant that came too late for its caller is released at once rather than
// keeping the lock for a TTL)
#[tokio::test]
async fn a_session_request_that_times_out_leaves_no_slot_and_its_late_grant_is_released() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let timeout = Duration::from_secs(2);
    let client = server
        .builder(&clock, Duration::from_secs(60))
        .timeouts(Duration::from_secs(3), timeout)
        .connect()
        .await
        .unwrap();
    server.script.lock().unwrap().hold = Some("slow".into());

    // Phase 1: the acquire waits for an answer that does not come, in its slot.
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.try_acquire("slow").await }
    });
    until("the server holds the acquire", || {
        server.script.lock().unwrap().holding == 1
    })
    .await;
    assert_eq!(client.shared().session.pending(), 1);

    // Phase 2: it times out with the timeout error, and its slot is gone.
    match slow.await.unwrap() {
        Err(Error::Timeout { what, after }) => {
            assert_eq!(what, "acquire");
            assert_eq!(after, timeout);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(client.shared().session.pending(), 0);

    // Phase 3: the grant comes late: the SDK releases it over the session.
    server.gate.send(true).unwrap();
    until("the late grant is released", || {
        !server.script.lock().unwrap().released.is_empty()
    })
    .await;
    let script = server.script.lock().unwrap();
    let released = &script.released[0];
    assert_eq!(
        script.granted.get(released).map(String::as_str),
        Some("slow")
    );
    assert_eq!(script.calls.release_session, 1);
}

// checks: L2 (a waiting acquire is a unary call, and dropping it ends the server's
// handling of it)
#[tokio::test]
async fn waiting_acquires_use_the_unary_call() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;

    // Phase 1: a waiting acquire goes unary, a try-once one over the session.
    let waited = client
        .acquire("w", AcquireOptions::wait(Duration::from_secs(1)))
        .await
        .unwrap();
    let tried = client.try_acquire("t").await.unwrap();
    let calls = server.calls();
    assert_eq!((calls.acquire_unary, calls.acquire_session), (1, 1));
    drop((waited, tried));

    // Phase 2: dropping a waiting acquire resets its call: the server drops its handling
    // of it (the real server's queue guard runs there).
    server.script.lock().unwrap().hold = Some("queue".into());
    let waiting = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .acquire("queue", AcquireOptions::wait(Duration::from_secs(30)))
                .await
        }
    });
    until("the server holds the waiting acquire", || {
        server.script.lock().unwrap().holding == 1
    })
    .await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    until("the server dropped the abandoned acquire", || {
        server.script.lock().unwrap().abandoned == 1
    })
    .await;
    assert_eq!(server.calls().acquire_unary, 2);
}

// checks: no CONTRACT id directly: a dropped client leaves no session stream behind
#[tokio::test]
async fn dropping_the_client_ends_its_session_after_the_last_release() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;
    let lease = client.try_acquire("a").await.unwrap();
    let id = lease.id().to_string();
    // The lease's background release still needs the session when the client goes.
    drop(client);
    drop(lease);
    until("the session's request half ended", || {
        server.calls().sessions_ended == 1
    })
    .await;
    let script = server.script.lock().unwrap();
    assert_eq!(script.released, vec![id]);
    assert_eq!(script.calls.release_session, 1);
}
