//! contended: every client queues on one lock (waiting up to the configured maximum),
//! releases as soon as it is granted, and queues again: handoffs per second, how long a
//! waiter waits, whether grants followed arrival order, and whether two ever overlapped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::driver::{LockClient, LockSystem};
use crate::error::BenchError;
use crate::fifo::{analyse, Grant, OrderReport};
use crate::latency::{Latencies, LatencySummary};
use crate::workloads::{connect_all, Errors, Window, ERROR_PAUSE};

/// What one contended phase measured.
#[derive(Clone, Debug)]
pub struct ContendedResult {
    /// Grants received in the window.
    pub handoffs: u64,
    /// Grants per second over the window.
    pub rate: f64,
    /// From request sent to grant received, for grants in the window.
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
        .map(|client| {
            tokio::spawn(client_loop(
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
    let mut wait = Latencies::new();
    let mut handoffs = 0;
    for grant in grants.iter().filter(|g| window.contains(g.granted)) {
        handoffs += 1;
        wait.record(grant.granted.saturating_duration_since(grant.requested));
    }
    Ok(ContendedResult {
        handoffs,
        rate: handoffs as f64 / window.length().as_secs_f64(),
        wait: wait.summary(),
        order: analyse(&mut grants, config.fifo_margin),
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
