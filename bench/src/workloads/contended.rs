//! contended: every client queues on one lock (waiting up to the configured maximum),
//! releases as soon as it is granted, and queues again: handoffs per second, how long a
//! waiter waits, whether grants followed arrival order, and whether two ever overlapped.
//!
//! A handoff is a grant that moves the lock to another client. A lock without a queue
//! (Redis) often goes back to the client that just released it, whose next try comes
//! before any waiter's retry: such a re-grant is counted as a grant, not as a handoff, so
//! the rate compared is the rate at which waiters get the lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::driver::{LockClient, LockSystem};
use crate::error::BenchError;
use crate::fifo::{analyse, handoffs, Grant, OrderReport};
use crate::latency::{Latencies, LatencySummary};
use crate::workloads::{connect_all, Errors, Window, ERROR_PAUSE};

/// What one contended phase measured.
#[derive(Clone, Debug)]
pub struct ContendedResult {
    /// Grants in the window that moved the lock to another client.
    pub handoffs: u64,
    /// Handoffs per second over the window.
    pub rate: f64,
    /// Grants in the window, re-grants to the last holder included.
    pub grants: u64,
    /// Grants per second over the window.
    pub grant_rate: f64,
    /// From request sent to grant received, for the handoffs in the window.
    pub wait: LatencySummary,
    /// Order and exclusion over every grant of the phase (warmup and drain included).
    pub order: OrderReport,
    /// Waits that ended without the lock (the configured maximum passed).
    pub gave_up: u64,
    /// Failed operations.
    pub errors: Errors,
}

/// Runs `clients` clients on one lock for the configured warmup and duration. When the
/// window ends clients stop queueing again, and those still queued drain (bounded by the
/// maximum wait).
pub async fn run<S: LockSystem>(
    system: &S,
    clients: usize,
    config: &Config,
    prefix: &str,
    ops: Arc<AtomicU64>,
) -> Result<ContendedResult, BenchError> {
    let connected = connect_all(system, clients, config.ttl).await?;
    let lock = format!("{prefix}/contended/{clients}");
    let window = Window::starting_now(config.warmup, config.duration);
    let per_client_cap = config.max_ops_per_phase / clients as u64 + 1;
    let tasks: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            tokio::spawn(client_loop(
                i,
                client,
                lock.clone(),
                config.max_wait,
                window,
                per_client_cap,
                ops.clone(),
            ))
        })
        .collect();
    let mut grants = Vec::new();
    let mut gave_up = 0;
    let mut errors = Errors::default();
    for task in tasks {
        match task.await {
            Ok(done) => {
                grants.extend(done.grants);
                gave_up += done.gave_up;
                errors.merge(done.errors);
            }
            Err(join) => errors.add(&BenchError::Unexpected {
                system: system.name(),
                op: "contended",
                detail: format!("client task failed: {join}"),
            }),
        }
    }
    // Sorts the grants in the order granted, which the handoff count needs.
    let order = analyse(&mut grants, config.fifo_margin);
    let mut wait = Latencies::new();
    let (mut granted, mut handed_off) = (0, 0);
    for (grant, moved) in handoffs(&grants) {
        if !window.contains(grant.granted) {
            continue;
        }
        granted += 1;
        if moved {
            handed_off += 1;
            wait.record(grant.granted.saturating_duration_since(grant.requested));
        }
    }
    let seconds = window.length().as_secs_f64();
    Ok(ContendedResult {
        handoffs: handed_off,
        rate: handed_off as f64 / seconds,
        grants: granted,
        grant_rate: granted as f64 / seconds,
        wait: wait.summary(),
        order,
        gave_up,
        errors,
    })
}

/// One client's share of the phase.
struct ClientDone {
    /// Every grant it received.
    grants: Vec<Grant>,
    /// Waits that ended without the lock.
    gave_up: u64,
    /// Failed operations.
    errors: Errors,
}

async fn client_loop<C: LockClient>(
    id: usize,
    mut client: C,
    lock: String,
    max_wait: Duration,
    window: Window,
    cap: u64,
    ops: Arc<AtomicU64>,
) -> ClientDone {
    let mut done = ClientDone {
        grants: Vec::new(),
        gave_up: 0,
        errors: Errors::default(),
    };
    let mut tries = 0;
    while !window.is_over() && tries < cap {
        tries += 1;
        let requested = Instant::now();
        let held = match client.acquire(&lock, max_wait).await {
            Ok(Some(held)) => held,
            Ok(None) => {
                done.gave_up += 1;
                continue;
            }
            Err(error) => {
                done.errors.add(&error);
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        let granted = Instant::now();
        done.grants.push(Grant {
            client: id,
            requested,
            granted,
            released: Instant::now(),
        });
        match client.release(held).await {
            Ok(()) => {
                ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                done.errors.add(&error);
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    if let Err(error) = client.close().await {
        done.errors.add(&error);
    }
    done
}
