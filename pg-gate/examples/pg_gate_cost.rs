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
//! Writer `n` owns resource `bench-<cell>-<n>`, and the guarded modes run with two
//! workloads of tokens, in the same run:
//! - new token per write: token `i + 1` on the writer's `i`-th write, so every check
//!   raises the mark (a new holder per write, the worst case): one more row update in a
//!   transaction that commits anyway;
//! - one token per 100 writes: token `i / 100 + 1`, a holder's steady state (a holder is
//!   granted a token once and writes many times with it), so 99 checks in 100 find the
//!   mark already equal to the token and only lock the mark row.
//!
//! The two plain modes present no token; the tables show their rates beside both
//! workloads. Every commit waits for its WAL flush (`synchronous_commit = on`);
//! PostgreSQL shares flushes between concurrent commits. Each cell runs every mode twice,
//! in an order and its reverse, so that a drift of the machine favours none.
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
    let half = Duration::from_secs_f64(seconds / 2.0);
    let guarded = [
        Mode::TwoRoundTrips,
        Mode::Guarded,
        Mode::Prepared,
        Mode::PreparedWithWrite,
    ];
    let mut forward = vec![
        (Mode::Plain, Tokens::PerWrite),
        (Mode::PlainPipelined, Tokens::PerWrite),
    ];
    for tokens in [Tokens::PerWrite, Tokens::Kept] {
        forward.extend(guarded.iter().map(|&mode| (mode, tokens)));
    }
    let order: Vec<_> = forward
        .iter()
        .chain(forward.iter().rev())
        .copied()
        .collect();
    // One table per workload of tokens, its rows kept until every cell has run.
    let mut tables = [Vec::new(), Vec::new()];
    for writers in [1usize, 16, 64] {
        // rates[workload][mode]; the plain modes are measured once, filed under both.
        let mut rates = [[0.0f64; 6]; 2];
        for (round, &(mode, tokens)) in order.iter().enumerate() {
            let cell = format!("{writers}-{round}");
            let rate = measure(&url, writers, half, mode, tokens, cell).await;
            match mode {
                Mode::Plain | Mode::PlainPipelined => {
                    for workload in &mut rates {
                        workload[mode as usize] += rate / 2.0;
                    }
                }
                _ => rates[tokens as usize][mode as usize] += rate / 2.0,
            }
        }
        for (table, workload) in tables.iter_mut().zip(rates) {
            let [plain, plain_pipelined, two, guarded, prepared, with_write] = workload;
            table.push(format!(
                "| {writers} | {plain:.0} | {plain_pipelined:.0} | {two:.0} | {guarded:.0} \
                 | {prepared:.0} | {with_write:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                two / plain,
                guarded / plain,
                prepared / plain,
                with_write / plain,
                with_write / plain_pipelined
            ));
        }
    }
    for (tokens, rows) in [Tokens::PerWrite, Tokens::Kept].into_iter().zip(tables) {
        println!();
        println!("{}:", tokens.title());
        println!();
        println!(
            "| writers | plain /s | plain, pipelined /s | two round trips /s | begin_guarded /s \
             | GuardedClient::begin /s | begin_executing /s | two round trips / plain \
             | begin_guarded / plain | GuardedClient::begin / plain \
             | begin_executing / plain | begin_executing / plain, pipelined |"
        );
        println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for row in rows {
            println!("{row}");
        }
    }
}

/// How many writes a writer makes with one token in [`Tokens::Kept`].
const WRITES_PER_TOKEN: u64 = 100;

/// Which tokens a guarded writer presents.
#[derive(Debug, Clone, Copy)]
enum Tokens {
    /// A new token on every write: every check raises the mark.
    PerWrite,
    /// A new token every [`WRITES_PER_TOKEN`] writes: the other checks find the mark
    /// equal to the token.
    Kept,
}

impl Tokens {
    /// The token of a writer's `i`-th write (from 0).
    fn token(self, i: u64) -> u64 {
        match self {
            Tokens::PerWrite => i + 1,
            Tokens::Kept => i / WRITES_PER_TOKEN + 1,
        }
    }

    /// The workload's table title.
    fn title(self) -> String {
        match self {
            Tokens::PerWrite => "New token per write (every check raises the mark)".to_string(),
            Tokens::Kept => format!(
                "One token per {WRITES_PER_TOKEN} writes (a holder's steady state: the mark \
                 is raised once per token)"
            ),
        }
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

/// Runs `writers` tasks for `cell`, the guarded ones presenting `tokens`; returns
/// committed transactions per second.
async fn measure(
    url: &str,
    writers: usize,
    cell: Duration,
    mode: Mode,
    tokens: Tokens,
    cell_name: String,
) -> f64 {
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
                    let token = FencingToken::new(tokens.token(done)).unwrap();
                    let written_by = token.get() as i64;
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
                            let tx = begin_guarded(&mut client, &resource, token).await.unwrap();
                            tx.execute(&upsert, &[&id, &"paid", &written_by])
                                .await
                                .unwrap();
                            tx.commit().await.unwrap();
                        }
                        Mode::Prepared => {
                            let tx = client.begin(&resource, token).await.unwrap();
                            tx.execute(&upsert, &[&id, &"paid", &written_by])
                                .await
                                .unwrap();
                            tx.commit().await.unwrap();
                        }
                        Mode::PreparedWithWrite => {
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
