//! The cost of the PostgreSQL gate: guarded transactions per second against the same
//! transactions without the check, at 1, 16 and 64 concurrent writers, in one run.
//!
//! ```sh
//! scripts/bench-postgres-gate.sh [seconds per cell] [bodies]  # starts a throwaway cluster
//! cargo run --release -p fenced-gate-postgres --example pg_gate_cost -- URL [seconds] [bodies]
//! ```
//!
//! `bodies` is `one-row`, `five-statement` or both, comma-separated (the default: both).
//!
//! One-row body: each writer is a task with a connection of its own and a row of its own
//! in `fenced_bench_orders`. Every transaction is the same write, a prepared `INSERT ..
//! ON CONFLICT DO UPDATE` of the writer's row, opened and ended six ways:
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
//! Five-statement body: the transaction is five prepared statements shaped like
//! pgbench's TPC-B transaction on the writer's own rows (an account, a teller and a branch
//! updated, the account read back, a history row inserted), each awaited before the next
//! as an application writes them; opened and ended four ways: plain, plain pipelined (the
//! first statement in `BEGIN`'s round trip), `GuardedClient::begin` and
//! `GuardedClient::begin_executing` (the first statement in the check's round trip).
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
use tokio_postgres::{Client, NoTls, Statement};

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
        .expect("usage: pg_gate_cost URL [seconds per cell] [bodies]");
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let bodies: Vec<Body> = args
        .next()
        .unwrap_or_else(|| "one-row,five-statement".to_string())
        .split(',')
        .map(|body| match body {
            "one-row" => Body::OneRow,
            "five-statement" => Body::FiveStatements,
            other => panic!("unknown body {other:?}: one-row or five-statement"),
        })
        .collect();
    let setup = connect(&url).await;
    install(&setup).await.unwrap();
    setup
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS fenced_bench_orders \
               (id int PRIMARY KEY, status text NOT NULL, written_by bigint NOT NULL); \
             TRUNCATE fenced_bench_orders; \
             DELETE FROM fenced_marks WHERE resource LIKE 'bench-%'; \
             CREATE TABLE IF NOT EXISTS fenced_bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL); \
             CREATE TABLE IF NOT EXISTS fenced_bench_tellers (id int PRIMARY KEY, balance bigint NOT NULL); \
             CREATE TABLE IF NOT EXISTS fenced_bench_branches (id int PRIMARY KEY, balance bigint NOT NULL); \
             CREATE TABLE IF NOT EXISTS fenced_bench_history \
               (teller int, branch int, account int, delta bigint, at timestamptz); \
             TRUNCATE fenced_bench_accounts, fenced_bench_tellers, fenced_bench_branches, \
               fenced_bench_history; \
             INSERT INTO fenced_bench_accounts SELECT g, 0 FROM generate_series(0, 63) g; \
             INSERT INTO fenced_bench_tellers SELECT g, 0 FROM generate_series(0, 63) g; \
             INSERT INTO fenced_bench_branches SELECT g, 0 FROM generate_series(0, 63) g;",
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
    for body in bodies {
        run_body(&url, half, body).await;
    }
}

/// Measures every mode of `body` at 1, 16 and 64 writers and prints one table per
/// workload of tokens.
async fn run_body(url: &str, half: Duration, body: Body) {
    let guarded: &[Mode] = match body {
        Body::OneRow => &[
            Mode::TwoRoundTrips,
            Mode::Guarded,
            Mode::Prepared,
            Mode::PreparedWithWrite,
        ],
        Body::FiveStatements => &[Mode::Prepared, Mode::PreparedWithWrite],
    };
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
            let cell = format!("{}-{writers}-{round}", body.name());
            let rate = measure(url, writers, half, body, mode, tokens, cell).await;
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
            table.push(match body {
                Body::OneRow => format!(
                    "| {writers} | {plain:.0} | {plain_pipelined:.0} | {two:.0} | {guarded:.0} \
                     | {prepared:.0} | {with_write:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    two / plain,
                    guarded / plain,
                    prepared / plain,
                    with_write / plain,
                    with_write / plain_pipelined
                ),
                Body::FiveStatements => format!(
                    "| {writers} | {plain:.0} | {plain_pipelined:.0} | {prepared:.0} \
                     | {with_write:.0} | {:.2} | {:.2} | {:.2} |",
                    prepared / plain,
                    with_write / plain,
                    with_write / plain_pipelined
                ),
            });
        }
    }
    for (tokens, rows) in [Tokens::PerWrite, Tokens::Kept].into_iter().zip(tables) {
        println!();
        println!("{}, {}:", body.title(), tokens.title());
        println!();
        match body {
            Body::OneRow => {
                println!(
                    "| writers | plain /s | plain, pipelined /s | two round trips /s \
                     | begin_guarded /s | GuardedClient::begin /s | begin_executing /s \
                     | two round trips / plain | begin_guarded / plain \
                     | GuardedClient::begin / plain | begin_executing / plain \
                     | begin_executing / plain, pipelined |"
                );
                println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
            }
            Body::FiveStatements => {
                println!(
                    "| writers | plain /s | plain, pipelined /s | GuardedClient::begin /s \
                     | begin_executing /s | GuardedClient::begin / plain \
                     | begin_executing / plain | begin_executing / plain, pipelined |"
                );
                println!("|--:|--:|--:|--:|--:|--:|--:|--:|");
            }
        }
        for row in rows {
            println!("{row}");
        }
    }
}

/// What a transaction does between its check and its commit.
#[derive(Debug, Clone, Copy)]
enum Body {
    /// One upsert of the writer's row in `fenced_bench_orders`.
    OneRow,
    /// Five statements shaped like pgbench's TPC-B transaction, on the writer's rows.
    FiveStatements,
}

impl Body {
    /// The body's name on the command line and in cell names.
    fn name(self) -> &'static str {
        match self {
            Body::OneRow => "one-row",
            Body::FiveStatements => "five-statement",
        }
    }

    /// The body's part of a table title.
    fn title(self) -> &'static str {
        match self {
            Body::OneRow => "One-row transactions",
            Body::FiveStatements => "Five-statement transactions",
        }
    }
}

/// The five-statement body's statements, prepared on one connection. `credit` is the
/// one a pipelined mode sends in the opening round trip.
struct FiveStatements {
    /// Adds the delta to the writer's account.
    credit: Statement,
    /// Reads the account's balance back.
    read: Statement,
    /// Adds the delta to the writer's teller.
    teller: Statement,
    /// Adds the delta to the writer's branch.
    branch: Statement,
    /// Records the change in the history.
    history: Statement,
}

impl FiveStatements {
    async fn prepare(client: &Client) -> FiveStatements {
        let prepare = |sql: &'static str| client.prepare(sql);
        FiveStatements {
            credit: prepare(
                "UPDATE fenced_bench_accounts SET balance = balance + $2 WHERE id = $1",
            )
            .await
            .unwrap(),
            read: prepare("SELECT balance FROM fenced_bench_accounts WHERE id = $1")
                .await
                .unwrap(),
            teller: prepare("UPDATE fenced_bench_tellers SET balance = balance + $2 WHERE id = $1")
                .await
                .unwrap(),
            branch: prepare(
                "UPDATE fenced_bench_branches SET balance = balance + $2 WHERE id = $1",
            )
            .await
            .unwrap(),
            history: prepare(
                "INSERT INTO fenced_bench_history VALUES ($1, $1, $1, $2, CURRENT_TIMESTAMP)",
            )
            .await
            .unwrap(),
        }
    }

    /// Runs the four statements after `credit`, each awaited before the next, on
    /// `client` (inside whatever transaction it is in).
    async fn run_rest(&self, client: &Client, id: i32, delta: i64) {
        client.query_one(&self.read, &[&id]).await.unwrap();
        client.execute(&self.teller, &[&id, &delta]).await.unwrap();
        client.execute(&self.branch, &[&id, &delta]).await.unwrap();
        client.execute(&self.history, &[&id, &delta]).await.unwrap();
    }

    /// One five-statement transaction, opened and ended as `mode` says.
    async fn transaction(
        &self,
        client: &mut GuardedClient,
        mode: Mode,
        resource: &LockName,
        token: FencingToken,
        id: i32,
        delta: i64,
    ) {
        match mode {
            Mode::Plain => {
                let tx = client.transaction().await.unwrap();
                tx.execute(&self.credit, &[&id, &delta]).await.unwrap();
                self.run_rest(tx.client(), id, delta).await;
                tx.commit().await.unwrap();
            }
            Mode::PlainPipelined => {
                let (begun, credited) = pipelined(
                    client.batch_execute("BEGIN"),
                    client.execute(&self.credit, &[&id, &delta]),
                )
                .await;
                begun.unwrap();
                credited.unwrap();
                self.run_rest(client, id, delta).await;
                client.batch_execute("COMMIT").await.unwrap();
            }
            Mode::Prepared => {
                let tx = client.begin(resource, token).await.unwrap();
                tx.execute(&self.credit, &[&id, &delta]).await.unwrap();
                self.run_rest(&tx, id, delta).await;
                tx.commit().await.unwrap();
            }
            Mode::PreparedWithWrite => {
                let (tx, credited) = client
                    .begin_executing(resource, token, &self.credit, &[&id, &delta])
                    .await
                    .unwrap();
                credited.unwrap();
                self.run_rest(&tx, id, delta).await;
                tx.commit().await.unwrap();
            }
            Mode::TwoRoundTrips | Mode::Guarded => {
                unreachable!("{mode:?} is not measured on the five-statement body")
            }
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
            Tokens::PerWrite => "new token per write (every check raises the mark)".to_string(),
            Tokens::Kept => format!(
                "one token per {WRITES_PER_TOKEN} writes (a holder's steady state: the mark \
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

/// Runs `writers` tasks for `cell`, each running `body` transactions, the guarded ones
/// presenting `tokens`; returns committed transactions per second.
async fn measure(
    url: &str,
    writers: usize,
    cell: Duration,
    body: Body,
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
                let five = match body {
                    Body::FiveStatements => Some(FiveStatements::prepare(&client).await),
                    Body::OneRow => None,
                };
                let id = n as i32;
                start.wait().await;
                let deadline = Instant::now() + cell;
                let mut done: u64 = 0;
                while Instant::now() < deadline {
                    let token = FencingToken::new(tokens.token(done)).unwrap();
                    let written_by = token.get() as i64;
                    if let Some(five) = &five {
                        let delta = (done % 11) as i64 - 5;
                        five.transaction(&mut client, mode, &resource, token, id, delta)
                            .await;
                        done += 1;
                        continue;
                    }
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
