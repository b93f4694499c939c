//! What 500,000 timed-out waits on a held lock cost the server's resident memory: nothing
//! that stays. In process, against the service the gRPC and framed edges call
//! (`LockServer::acquire`: the queue, the reply channel, the time-out, the cancellation)
//! with the binary's allocator, so the figure is the server's own; the network is left
//! out because half a million waits through it take minutes on a small machine, and it
//! keeps no per-waiter state of its own past the request. Its own test binary, so no
//! other test shares the process whose memory is measured. A waiter's place is durable (a
//! record put as it queues and deleted as it leaves), so the store runs with the server's
//! checkpoint interval: what the journal holds between checkpoints is the store's working
//! set, not the waiters' (it stays the same over three times as many waits).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fenced::access::Caller;
use fenced::clock::Clock;
use fenced::committer::run_committer;
use fenced::engine::Engine;
use fenced::event_log::{EventLog, DEFAULT_CAPACITY};
use fenced::service::LockServer;
use fenced::serving::Serving;
use fenced::store::Store;
use fenced::table::{Limits, LockTable};
use fenced::Config;
use fenced_proto::v1 as pb;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// The server binary's allocator, so freed memory behaves as it does in the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Waits measured.
const WAITS: usize = 500_000;
/// Waits run first, so the maps, the allocator and the timer wheel reach their working size.
const WARM_UP: usize = 20_000;
/// Waits in the queue at once (each session of the framed protocol allows up to 1,024).
const CONCURRENT: usize = 64;
/// How much resident memory may grow across [`WAITS`]: a leak of even 40 bytes a wait
/// would exceed it.
const ALLOWED_GROWTH: u64 = 16 * 1024 * 1024;

fn acquire(wait_ms: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        lock: "busy".to_string(),
        holder: "h".to_string(),
        ttl_ms: 3_600_000,
        wait_ms,
        ..Default::default()
    }
}

/// This process's resident memory in bytes (`VmRSS` in `/proc/self/status`).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// Runs `count` acquires on the held lock that each wait 1 ms and time out.
async fn time_out(server: &LockServer, count: usize) {
    let anyone = Caller::default();
    let mut in_flight = FuturesUnordered::new();
    let mut started = 0;
    while started < count || !in_flight.is_empty() {
        while started < count && in_flight.len() < CONCURRENT {
            in_flight.push(server.acquire(&anyone, acquire(1)));
            started += 1;
        }
        if let Some(answer) = in_flight.next().await {
            let status = answer.expect_err("the lock stays held");
            assert_eq!(status.code(), Code::Aborted, "{status:?}");
        }
    }
}

// checks: L2 (a waiter that times out leaves nothing behind)
#[tokio::test(start_paused = true)]
async fn timed_out_waits_leave_resident_memory_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        fdatasync: false,
        ..Config::default()
    };
    let (store, recovered) =
        Store::open(dir.path(), false, 1024 * 1024, config.checkpoint_interval).unwrap();
    let clock = Clock::start();
    let table = LockTable::restore(
        Limits::from(&config),
        recovered.next_token,
        recovered.leases,
        recovered.locks,
        recovered.delays,
        recovered.waiters,
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
    let server = LockServer::new(Serving::single(engine.clone(), event_log), Arc::new(config));
    server
        .acquire(&Caller::default(), acquire(0))
        .await
        .unwrap();

    time_out(&server, WARM_UP).await;
    let before = resident_bytes();
    let started = std::time::Instant::now();
    time_out(&server, WAITS).await;
    let after = resident_bytes();
    eprintln!(
        "{WAITS} timed-out waits in {:?}: resident {} KiB before, {} KiB after",
        started.elapsed(),
        before / 1024,
        after / 1024
    );
    assert!(
        after <= before + ALLOWED_GROWTH,
        "resident memory grew by {} KiB across {WAITS} timed-out waits (allowed {} KiB)",
        after.saturating_sub(before) / 1024,
        ALLOWED_GROWTH / 1024
    );

    drop(server);
    stop.store(true, Ordering::SeqCst);
    engine.store().kick_committer();
    drop(engine);
    committer.join().unwrap().unwrap();
}
