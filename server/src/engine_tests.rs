//! Tests of the engine with a real store and committer, time driven by
//! `tokio::time::pause`: what a waiter leaves behind when it goes, and what a read makes
//! durable before it answers, and how events are numbered.

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
use crate::access::Caller;
use crate::committer::run_committer;
use crate::config::Config;
use crate::event_log::{Compacted, EventLog, Since, DEFAULT_CAPACITY};
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
    event_log: Arc<EventLog>,
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
        recovered.waiters.clone(),
        clock.now(),
    )
    .unwrap();
    let event_log = EventLog::new(DEFAULT_CAPACITY, recovered.last_revision);
    let engine = Arc::new(Engine::new(
        table,
        store,
        clock,
        CancellationToken::new(),
        recovered.last_revision,
        Some(event_log.clone()),
    ));
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
            event_log,
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
    let server = LockServer::new(
        Serving::single(running.engine.clone(), running.event_log.clone()),
        Arc::new(config()),
    );
    server
        .acquire(&Caller::default(), acquire("busy", 0))
        .await
        .unwrap();

    tracing::info!("a waiter times out");
    let timed_out = server
        .acquire(&Caller::default(), acquire("busy", 100))
        .await
        .unwrap_err();
    assert_eq!(timed_out.code(), Code::Aborted, "{timed_out:?}");
    assert_eq!(running.waiter_state(), (0, 0), "after a time-out");

    tracing::info!("a waiter is cancelled: its request is dropped while it waits");
    let anyone = Caller::default();
    let waiting = server.acquire(&anyone, acquire("busy", 60_000));
    let cancelled = tokio::time::timeout(Duration::from_millis(10), waiting).await;
    assert!(cancelled.is_err(), "still waiting when dropped");
    assert_eq!(running.waiter_state(), (0, 0), "after a cancellation");

    tracing::info!("a session with a waiter in flight disconnects");
    let (requests, inbound) = tokio::sync::mpsc::channel::<Result<pb::SessionRequest, Status>>(4);
    let mut session = SessionStream::new(
        server.clone(),
        Caller::default(),
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
                origin: None,
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
    let server = LockServer::new(
        Serving::single(running.engine.clone(), running.event_log.clone()),
        Arc::new(config()),
    );
    let lock = LockName::new("expiring").unwrap();
    let mut request = acquire("expiring", 0);
    request.ttl_ms = 100;
    server.acquire(&Caller::default(), request).await.unwrap();

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

/// The revisions and kinds of the events a watch stream sends, up to its progress mark.
async fn events_until_progress(
    stream: &mut crate::watch::WatchStream,
) -> (Vec<(u64, pb::watch_event::Kind)>, u64) {
    let mut events = Vec::new();
    loop {
        let event = stream.next().await.unwrap().unwrap();
        if event.kind() == pb::watch_event::Kind::Progress {
            return (events, event.revision);
        }
        events.push((event.revision, event.kind()));
    }
}

// checks: W1 (revisions count on above the last durable one after a restart; a watcher that
// resumes before the restart is told the events are gone, never sent a gap)
#[tokio::test]
async fn event_revisions_go_on_above_the_last_after_a_restart() {
    use pb::watch_event::Kind;
    let dir = tempfile::tempdir().unwrap();
    let (running, recovered) = start(dir.path());
    assert_eq!(recovered.last_revision, 0);
    let server = LockServer::new(
        Serving::single(running.engine.clone(), running.event_log.clone()),
        Arc::new(config()),
    );
    let granted = server
        .acquire(&Caller::default(), acquire("a", 0))
        .await
        .unwrap();
    server
        .release(
            &Caller::default(),
            pb::ReleaseRequest {
                lease_id: granted.lease_id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    server
        .acquire(&Caller::default(), acquire("b", 0))
        .await
        .unwrap();
    // The committer publishes events right after it releases the replies.
    while running.event_log.last_revision() < 3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(running.event_log.last_revision(), 3);

    // A watcher from revision 2 gets 2 and 3, then the progress mark at 3.
    let mut resumed = server
        .watch(
            Caller::default(),
            pb::WatchRequest {
                start_revision: 2,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        events_until_progress(&mut resumed).await,
        (vec![(2, Kind::Released), (3, Kind::Acquired)], 3)
    );
    drop(resumed);
    running.stop();

    let (running, recovered) = start(dir.path());
    assert_eq!(recovered.last_revision, 3, "the last revision is durable");
    let server = LockServer::new(
        Serving::single(running.engine.clone(), running.event_log.clone()),
        Arc::new(config()),
    );
    let refused = server
        .watch(
            Caller::default(),
            pb::WatchRequest {
                start_revision: 3,
                ..Default::default()
            },
        )
        .expect_err("revision 3 was published before the restart");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert_eq!(
        refused.metadata().get("fenced-error").unwrap(),
        "compacted",
        "{refused:?}"
    );
    assert_eq!(
        running.event_log.subscribe(Since::Revision(3)).err(),
        Some(Compacted {
            requested: 3,
            oldest: 4
        })
    );
    let mut next = server
        .watch(
            Caller::default(),
            pb::WatchRequest {
                start_revision: 4,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(events_until_progress(&mut next).await, (vec![], 3));
    server
        .acquire(&Caller::default(), acquire("c", 0))
        .await
        .unwrap();
    let event = next.next().await.unwrap().unwrap();
    assert_eq!(
        (event.revision, event.kind(), event.lock.as_str()),
        (4, Kind::Acquired, "c")
    );
    let listed = server
        .list(&Caller::default(), pb::ListRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.revision, 4, "a list says the revision it reflects");
    drop(next);
    running.stop();
}
