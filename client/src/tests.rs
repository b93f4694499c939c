//! Tests of the whole SDK (client, renewal task, watchdog, fence) with an injected
//! [`ManualClock`] against an in-process fake server whose answers the test controls.
//! The real server is exercised by the `tests/` crate; here every instant is the test's.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fenced_proto::v1::lock_service_server::{LockService, LockServiceServer};
use fenced_proto::v1::renew_response::Outcome;
use fenced_proto::v1::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    AcquireOptions, Client, Clock, FenceError, LeaseState, LostReason, ManualClock, SuspectReason,
};

/// What the fake server answers and what it saw.
#[derive(Debug)]
struct Script {
    /// The outcome of every renewal.
    outcome: Outcome,
    /// Renewals received, in order, with the manual clock's time at receipt.
    renewals: Vec<Duration>,
    /// The clock the test drives, read when a renewal arrives.
    clock: ManualClock,
}

/// A fake lock server: grants every acquire with token 7 and answers renewals as scripted.
#[derive(Clone)]
struct Fake(Arc<Mutex<Script>>);

type Answers = Pin<Box<dyn tokio_stream::Stream<Item = Result<RenewResponse, Status>> + Send>>;
type Events = Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl LockService for Fake {
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        Ok(Response::new(AcquireResponse {
            lease_id: fenced_types::LeaseId::random().to_string(),
            token: 7,
            ttl_ms: request.into_inner().ttl_ms,
        }))
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
        let script = self.0.clone();
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
        _: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        Ok(Response::new(ReleaseResponse {}))
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

    type SessionStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<fenced_proto::v1::SessionResponse, Status>>
                + Send,
        >,
    >;

    async fn session(
        &self,
        _: Request<tonic::Streaming<fenced_proto::v1::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

/// Starts the fake on a free loopback port and a client on a manual clock, with a pause
/// threshold (tests that jump the clock without meaning a pause make it long).
async fn setup(pause_threshold: Duration) -> (Client, Arc<Mutex<Script>>, ManualClock) {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let script = Arc::new(Mutex::new(Script {
        outcome: Outcome::Renewed,
        renewals: Vec::new(),
        clock: clock.clone(),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LockServiceServer::new(Fake(script.clone())))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let client = Client::builder(format!("http://{addr}"))
        .clock(clock.clone())
        .drift_bound(0.05)
        .safety_margin(Duration::from_millis(100))
        .pause_threshold(pause_threshold)
        .connect()
        .await
        .unwrap();
    (client, script, clock)
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
    let script = Arc::new(Mutex::new(Script {
        outcome: Outcome::Renewed,
        renewals: Vec::new(),
        clock: clock.clone(),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LockServiceServer::new(Fake(script.clone())))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    // The watchdog thread sleeps 100 s of real time: it will not beat during this test.
    let client = Client::builder(format!("http://{addr}"))
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
