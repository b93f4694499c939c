//! The cost of the PostgreSQL gate: guarded transactions per second against the same
//! transactions without the check, at 1, 16 and 64 concurrent writers, in one run.
//!
//! ```sh
//! scripts/bench-postgres-gate.sh [seconds per cell]      # starts a throwaway cluster
//! cargo run --release -p fenced-gate-postgres --example pg_gate_cost -- URL [seconds]
//! ```
//!
//! Each writer is a task with a connection of its own and a row of its own in
//! `fenced_bench_orders`. Plain: `BEGIN; INSERT .. ON CONFLICT DO UPDATE` (its row);
//! `COMMIT`. Guarded: the same, started by `begin_guarded` (writer `n` owns resource
//! `bench-<cell>-<n>` and presents token `i + 1` on its `i`-th write, so every check is
//! accepted and raises the mark: the full cost, one more statement and one more row
//! update in a transaction that commits anyway). Every commit waits for its WAL flush
//! (`synchronous_commit = on`); PostgreSQL shares flushes between concurrent commits.
//! A third column, "plain + SELECT 1", is the plain transaction with one more statement
//! that does nothing (`SELECT 1` after BEGIN): the share of the gate's cost that is the
//! extra round trip rather than the check. Each cell runs every mode twice, in the order
//! plain, +SELECT 1, guarded, guarded, +SELECT 1, plain, so that a drift of the machine
//! favours none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fenced_gate_postgres::{begin_guarded, install};
use fenced_types::{FencingToken, LockName};
use tokio_postgres::{Client, NoTls};

const UPSERT: &str =
    "INSERT INTO fenced_bench_orders (id, status, written_by) VALUES ($1, $2, $3) \
                      ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, \
                      written_by = EXCLUDED.written_by";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("FENCED_BENCH_POSTGRES_URL").ok())
        .expect("usage: pg_gate_cost URL [seconds per cell]");
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let setup = connect(&url).await;
    install(&setup).await.unwrap();
    setup
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS fenced_bench_orders \
               (id int PRIMARY KEY, status text NOT NULL, written_by bigint NOT NULL); \
             TRUNCATE fenced_bench_orders; \
             DELETE FROM fenced_marks WHERE resource LIKE 'bench-%';",
        )
        .await
        .unwrap();
    let settings = setup
        .query_one(
            "SELECT current_setting('server_version'), current_setting('fsync'), \
                    current_setting('synchronous_commit')",
            &[],
        )
        .await
        .unwrap();
    println!(
        "PostgreSQL {}, fsync = {}, synchronous_commit = {}; each cell runs {seconds} s",
        settings.get::<_, String>(0),
        settings.get::<_, String>(1),
        settings.get::<_, String>(2)
    );
    println!(
        "| writers | plain transactions/s | plain + SELECT 1 /s | guarded transactions/s | guarded / plain |"
    );
    println!("|--------:|------:|------:|------:|------:|");
    let half = Duration::from_secs_f64(seconds / 2.0);
    let order = [
        Mode::Plain,
        Mode::RoundTrip,
        Mode::Guarded,
        Mode::Guarded,
        Mode::RoundTrip,
        Mode::Plain,
    ];
    for writers in [1usize, 16, 64] {
        let (mut plain, mut round_trip, mut guarded) = (0.0, 0.0, 0.0);
        for (round, mode) in order.into_iter().enumerate() {
            let rate = measure(&url, writers, half, mode, format!("{writers}-{round}")).await;
            match mode {
                Mode::Plain => plain += rate / 2.0,
                Mode::RoundTrip => round_trip += rate / 2.0,
                Mode::Guarded => guarded += rate / 2.0,
            }
        }
        println!(
            "| {writers} | {plain:.0} | {round_trip:.0} | {guarded:.0} | {:.2} |",
            guarded / plain
        );
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// BEGIN; the upsert; COMMIT.
    Plain,
    /// BEGIN; SELECT 1; the upsert; COMMIT.
    RoundTrip,
    /// begin_guarded (BEGIN; fenced_check); the upsert; COMMIT.
    Guarded,
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Runs `writers` tasks for `cell`; returns committed transactions per second.
async fn measure(url: &str, writers: usize, cell: Duration, mode: Mode, cell_name: String) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..writers {
        clients.push(connect(url).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(writers + 1));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(n, mut client)| {
            let start = Arc::clone(&start);
            let resource = LockName::new(format!("bench-{cell_name}-{n}")).unwrap();
            tokio::spawn(async move {
                let upsert = client.prepare(UPSERT).await.unwrap();
                let id = n as i32;
                start.wait().await;
                let deadline = Instant::now() + cell;
                let mut done: u64 = 0;
                while Instant::now() < deadline {
                    let written_by = done as i64 + 1;
                    match mode {
                        Mode::Plain => {
                            let tx = client.transaction().await.unwrap();
                            tx.execute(&upsert, &[&id, &"paid", &written_by])
                                .await
                                .unwrap();
                            tx.commit().await.unwrap();
                        }
                        Mode::RoundTrip => {
                            let tx = client.transaction().await.unwrap();
                            tx.query_typed_one("SELECT 1", &[]).await.unwrap();
                            tx.execute(&upsert, &[&id, &"paid", &written_by])
                                .await
                                .unwrap();
                            tx.commit().await.unwrap();
                        }
                        Mode::Guarded => {
                            let token = FencingToken::new(done + 1).unwrap();
                            let tx = begin_guarded(&mut client, &resource, token).await.unwrap();
                            tx.execute(&upsert, &[&id, &"paid", &written_by])
                                .await
                                .unwrap();
                            tx.commit().await.unwrap();
                        }
                    }
                    done += 1;
                }
                done
            })
        })
        .collect();
    start.wait().await;
    let began = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / began.elapsed().as_secs_f64()
}
