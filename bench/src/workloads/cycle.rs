//! cycle: every client acquires its own lock (lease TTL as configured, no waiting) and
//! releases it, as fast as it can: cycles per second and acquire latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::driver::{LockClient, LockSystem};
use crate::error::BenchError;
use crate::latency::{Latencies, LatencySummary};
use crate::workloads::{connect_all, Errors, Window, ERROR_PAUSE};

/// What one cycle phase measured.
#[derive(Clone, Debug)]
pub struct CycleResult {
    /// Acquire + release pairs completed in the window.
    pub cycles: u64,
    /// Cycles per second over the window.
    pub rate: f64,
    /// Acquire latency (request sent to grant received).
    pub acquire: LatencySummary,
    /// Failed operations (including a client's own lock found taken).
    pub errors: Errors,
}

/// Runs `clients` clients for the configured warmup and duration.
pub async fn run<S: LockSystem>(
    system: &S,
    clients: usize,
    config: &Config,
    prefix: &str,
    ops: Arc<AtomicU64>,
) -> Result<CycleResult, BenchError> {
    let connected = connect_all(system, clients, config.ttl).await?;
    let window = Window::starting_now(config.warmup, config.duration);
    let per_client_cap = config.max_ops_per_phase / clients as u64 + 1;
    let tasks: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let lock = format!("{prefix}/cycle/{clients}/{i}");
            tokio::spawn(client_loop(
                system.name(),
                client,
                lock,
                window,
                per_client_cap,
                ops.clone(),
            ))
        })
        .collect();
    let mut cycles = 0;
    let mut acquire = Latencies::new();
    let mut errors = Errors::default();
    for task in tasks {
        match task.await {
            Ok(done) => {
                cycles += done.cycles;
                acquire.merge(&done.acquire);
                errors.merge(done.errors);
            }
            Err(join) => errors.add(&BenchError::Unexpected {
                system: system.name(),
                op: "cycle",
                detail: format!("client task failed: {join}"),
            }),
        }
    }
    Ok(CycleResult {
        cycles,
        rate: cycles as f64 / window.length().as_secs_f64(),
        acquire: acquire.summary(),
        errors,
    })
}

/// One client's share of the phase.
struct ClientDone {
    /// Cycles completed in the window.
    cycles: u64,
    /// Acquire latencies of requests sent in the window.
    acquire: Latencies,
    /// Failed operations.
    errors: Errors,
}

async fn client_loop<C: LockClient>(
    system: &'static str,
    mut client: C,
    lock: String,
    window: Window,
    cap: u64,
    ops: Arc<AtomicU64>,
) -> ClientDone {
    let mut done = ClientDone {
        cycles: 0,
        acquire: Latencies::new(),
        errors: Errors::default(),
    };
    let mut tries = 0;
    while !window.is_over() && tries < cap {
        tries += 1;
        let sent = Instant::now();
        let held = match client.acquire(&lock, Duration::ZERO).await {
            Ok(Some(held)) => held,
            Ok(None) => {
                done.errors.add(&BenchError::Unexpected {
                    system,
                    op: "acquire",
                    detail: format!("the client's own lock {lock:?} was taken"),
                });
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
            Err(error) => {
                done.errors.add(&error);
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        if window.contains(sent) {
            done.acquire.record(sent.elapsed());
        }
        match client.release(held).await {
            Ok(()) => {
                ops.fetch_add(1, Ordering::Relaxed);
                if window.contains(Instant::now()) {
                    done.cycles += 1;
                }
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
