//! The cost of the PostgreSQL gate: guarded transactions per second against the same
//! transactions without the check, at 1, 16 and 64 concurrent writers, in one run.
//!
//! ```sh
//! scripts/bench-postgres-gate.sh [seconds per cell]      # starts a throwaway cluster
//! cargo run --release -p fenced-gate-postgres --example pg_gate_cost -- URL [seconds]
//! ```
//!
//! Each writer is a task with a connection of its own and a row of its own in
//! `fenced_bench_orders`. Every transaction is the same write, a prepared `INSERT .. ON
//! CONFLICT DO UPDATE` of the writer's row, opened and ended six ways:
//! - plain: `BEGIN`; the upsert; `COMMIT` (three round trips), the write without the gate
//!   as `tokio_postgres::Transaction` runs it;
//! - plain, pipelined: `BEGIN` and the upsert in one round trip, then `COMMIT`;
//! - two round trips: `BEGIN`, then `SELECT fenced_check(..)` once `BEGIN` is answered,
//!   then the upsert and `COMMIT`: the gate as a caller of the SQL function writes it;
//! - `begin_guarded`: `BEGIN` and `SELECT fenced_check(..)` pipelined (one round trip);
//!   then the upsert and `COMMIT`;
//! - `GuardedClient::begin`: the same with the check a plain-SQL upsert of the mark,
//!   prepared once per connection;
//! - `GuardedClient::begin_executing`: `BEGIN`, the prepared check and the upsert in one
//!   round trip, then `COMMIT` (the guarded counterpart of "plain, pipelined").
//!
//! Writer `n` owns resource `bench-<cell>-<n>` and presents token `i + 1` on its `i`-th
//! write, so every check is accepted and raises the mark: the full cost, one more row
//! update in a transaction that commits anyway. Every commit waits for its WAL flush
//! (`synchronous_commit = on`); PostgreSQL shares flushes between concurrent commits.
//! Each cell runs every mode twice, in an order and its reverse, so that a drift of the
//! machine favours none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fenced_gate_postgres::pipeline::pipelined;
use fenced_gate_postgres::{begin_guarded, install, GuardedClient};
use fenced_types::{FencingToken, LockName};
use tokio_postgres::types::Type;
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
        "| writers | plain /s | plain, pipelined /s | two round trips /s | begin_guarded /s \
         | GuardedClient::begin /s | begin_executing /s | two round trips / plain \
         | begin_guarded / plain | GuardedClient::begin / plain \
         | begin_executing / plain | begin_executing / plain, pipelined |"
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let half = Duration::from_secs_f64(seconds / 2.0);
    let forward = [
        Mode::Plain,
        Mode::PlainPipelined,
        Mode::TwoRoundTrips,
        Mode::Guarded,
        Mode::Prepared,
        Mode::PreparedWithWrite,
    ];
    let order = forward.into_iter().chain(forward.into_iter().rev());
    for writers in [1usize, 16, 64] {
        let mut rates = [0.0f64; 6];
        for (round, mode) in order.clone().enumerate() {
            let rate = measure(&url, writers, half, mode, format!("{writers}-{round}")).await;
            rates[mode as usize] += rate / 2.0;
        }
        let [plain, plain_pipelined, two, guarded, prepared, with_write] = rates;
        println!(
            "| {writers} | {plain:.0} | {plain_pipelined:.0} | {two:.0} | {guarded:.0} \
             | {prepared:.0} | {with_write:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            two / plain,
            guarded / plain,
            prepared / plain,
            with_write / plain,
            with_write / plain_pipelined
        );
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// BEGIN; the upsert; COMMIT.
    Plain,
    /// BEGIN and the upsert, pipelined; COMMIT.
    PlainPipelined,
    /// BEGIN, answered; SELECT fenced_check(..); the upsert; COMMIT.
    TwoRoundTrips,
    /// begin_guarded (BEGIN and the check, pipelined); the upsert; COMMIT.
    Guarded,
    /// GuardedClient::begin (the same, the check prepared); the upsert; COMMIT.
    Prepared,
    /// GuardedClient::begin_executing (BEGIN, the check and the upsert, pipelined); COMMIT.
    PreparedWithWrite,
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
        .map(|(n, client)| {
            let start = Arc::clone(&start);
            let resource = LockName::new(format!("bench-{cell_name}-{n}")).unwrap();
            tokio::spawn(async move {
                let mut client = GuardedClient::new(client).await.unwrap();
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
                        Mode::PlainPipelined => {
                            let (begun, written) = pipelined(
                                client.batch_execute("BEGIN"),
                                client.execute(&upsert, &[&id, &"paid", &written_by]),
                            )
                            .await;
                            begun.unwrap();
                            written.unwrap();
                            client.batch_execute("COMMIT").await.unwrap();
                        }
                        Mode::TwoRoundTrips => {
                            let tx = client.transaction().await.unwrap();
                            tx.query_typed_one(
                                "SELECT fenced_check($1, $2)",
                                &[(&resource.as_str(), Type::TEXT), (&written_by, Type::INT8)],
                            )
                            .await
                            .unwrap();
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
                        Mode::Prepared => {
                            let token = FencingToken::new(done + 1).unwrap();
                            let tx = client.begin(&resource, token).await.unwrap();
                            tx.execute(&upsert, &[&id, &"paid", &written_by])
                                .await
                                .unwrap();
                            tx.commit().await.unwrap();
                        }
                        Mode::PreparedWithWrite => {
                            let token = FencingToken::new(done + 1).unwrap();
                            let (tx, written) = client
                                .begin_executing(
                                    &resource,
                                    token,
                                    &upsert,
                                    &[&id, &"paid", &written_by],
                                )
                                .await
                                .unwrap();
                            written.unwrap();
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
