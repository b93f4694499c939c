//! Tests of the engine with a real store and committer, time driven by
//! `tokio::time::pause`: what a waiter leaves behind when it goes, and what a read makes
//! durable before it answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fenced_proto::v1 as pb;
use fenced_types::{LeaseId, LockName};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::*;
use crate::committer::run_committer;
use crate::config::Config;
use crate::service::LockServer;
use crate::serving::Serving;
use crate::session::SessionStream;
use crate::store::Recovered;
use crate::table::{Acquire, LeaseChoice, Limits};

/// An engine over a store in `dir`, with its committer thread running.
struct Running {
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
    committer: std::thread::JoinHandle<Result<(), Error>>,
}

fn config() -> Config {
    Config {
        fdatasync: false,
        ..Config::default()
    }
}

fn start(dir: &Path) -> (Running, Recovered) {
    let config = config();
    let (store, recovered) =
        Store::open(dir, false, 1024 * 1024, Duration::from_secs(3600)).unwrap();
    let clock = Clock::start();
    let table = LockTable::restore(
        Limits::from(&config),
        recovered.next_token,
        recovered.leases.clone(),
        recovered.locks.clone(),
        recovered.delays.clone(),
        clock.now(),
    )
    .unwrap();
    let engine = Arc::new(Engine::new(table, store, clock, CancellationToken::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let committer = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || run_committer(engine, stop))
    };
    (
        Running {
            engine,
            stop,
            committer,
        },
        recovered,
    )
}

impl Running {
    /// Stops the committer (its last commit makes everything staged durable).
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.engine.store().kick_committer();
        self.committer.join().unwrap().unwrap();
    }

    /// Reply channels the engine keeps for queued acquirers, and waiters the table holds.
    fn waiter_state(&self) -> (usize, usize) {
        let inner = self.engine.inner.lock().unwrap();
        (inner.waiting.len(), inner.table.waiter_count())
    }
}

fn acquire(lock: &str, wait_ms: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        lock: lock.to_string(),
        holder: "h".to_string(),
        ttl_ms: 3_600_000,
        wait_ms,
        ..Default::default()
    }
}

// checks: L2 (a waiter that times out, is cancelled or disconnects leaves nothing behind:
// not its place in the queue, nor its reply channel)
#[tokio::test(start_paused = true)]
async fn waiters_that_leave_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (running, _) = start(dir.path());
    let server = LockServer::new(Serving::single(running.engine.clone()), Arc::new(config()));
    server.acquire(acquire("busy", 0)).await.unwrap();

    tracing::info!("a waiter times out");
    let timed_out = server.acquire(acquire("busy", 100)).await.unwrap_err();
    assert_eq!(timed_out.code(), Code::Aborted, "{timed_out:?}");
    assert_eq!(running.waiter_state(), (0, 0), "after a time-out");

    tracing::info!("a waiter is cancelled: its request is dropped while it waits");
    let waiting = server.acquire(acquire("busy", 60_000));
    let cancelled = tokio::time::timeout(Duration::from_millis(10), waiting).await;
    assert!(cancelled.is_err(), "still waiting when dropped");
    assert_eq!(running.waiter_state(), (0, 0), "after a cancellation");

    tracing::info!("a session with a waiter in flight disconnects");
    let (requests, inbound) = tokio::sync::mpsc::channel::<Result<pb::SessionRequest, Status>>(4);
    let mut session = SessionStream::new(
        server.clone(),
        tokio_stream::wrappers::ReceiverStream::new(inbound),
        config().max_session_in_flight,
    );
    requests
        .send(Ok(pb::SessionRequest {
            id: 1,
            op: Some(pb::session_request::Op::Acquire(acquire("busy", 60_000))),
        }))
        .await
        .unwrap();
    let answered = tokio::time::timeout(Duration::from_millis(10), session.next()).await;
    assert!(answered.is_err(), "the acquire waits in the queue");
    assert_eq!(running.waiter_state().1, 1, "queued");
    requests
        .send(Err(Status::unavailable("connection reset")))
        .await
        .unwrap();
    assert!(session.next().await.is_none(), "a broken session ends");
    assert_eq!(running.waiter_state(), (0, 0), "after a disconnect");

    tracing::info!("directly on the engine: a queued acquire, then its cancellation");
    let (sender, receiver) = oneshot::channel();
    let queued = running
        .engine
        .execute(
            Command::Acquire(Acquire {
                lock: LockName::new("busy").unwrap(),
                holder: "h".into(),
                ttl: Duration::from_secs(10),
                lock_delay: Duration::ZERO,
                lease: LeaseChoice::New(LeaseId::random()),
                wait: true,
            }),
            Some(sender),
        )
        .unwrap();
    let Ok(Reply::Queued(waiter)) = queued.reply else {
        panic!("expected to queue, got {:?}", queued.reply);
    };
    drop(receiver);
    let cancelled = running
        .engine
        .execute(Command::CancelWait { waiter }, None)
        .unwrap();
    assert_eq!(cancelled.reply, Ok(Reply::Cancelled(true)));
    assert_eq!(
        running.waiter_state(),
        (0, 0),
        "after a cancel on the engine"
    );
    running.stop();
}

// checks: S2, S7 (a read that shows a lease as gone has made its expiry durable first, so a
// restart cannot revive it)
#[tokio::test(start_paused = true)]
async fn a_read_after_an_expiry_makes_the_expiry_durable_first() {
    let dir = tempfile::tempdir().unwrap();
    let (running, _) = start(dir.path());
    let server = LockServer::new(Serving::single(running.engine.clone()), Arc::new(config()));
    let lock = LockName::new("expiring").unwrap();
    let mut request = acquire("expiring", 0);
    request.ttl_ms = 100;
    server.acquire(request).await.unwrap();

    tracing::info!("the lease's time passes; no reaper runs, so only the read can expire it");
    tokio::time::advance(Duration::from_millis(150)).await;
    let before = running.engine.store().staged();
    let (view, seq) = running
        .engine
        .read(|table, now| table.describe(now, &lock))
        .unwrap();
    assert_eq!(view.holder, None, "the read shows the lock free");
    assert!(
        seq > before,
        "the read staged the expiry's writes (batch {seq}, staged before it {before})"
    );
    assert_eq!(running.engine.inner.lock().unwrap().table.lease_count(), 0);
    running.engine.durable(seq).await.unwrap();

    tracing::info!("a restart does not revive what the read said was gone");
    drop(server);
    running.stop();
    let (running, recovered) = start(dir.path());
    assert!(
        recovered.leases.is_empty() && recovered.locks.is_empty(),
        "revived: {:?} {:?}",
        recovered.leases,
        recovered.locks
    );
    running.stop();
}
