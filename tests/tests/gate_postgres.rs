//! The PostgreSQL gate against a real throwaway server (no mock): the gate's conformance
//! suite on `PostgresBackend`, a real crash (kill -9 of the postmaster) between commit and
//! reopen, the async `GuardedClient` and `begin_guarded` APIs under races, drops and lost
//! connections, and the SQL recipe from psql.
//! checks: S5
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fenced_gate::conformance::{self, Harness};
use fenced_gate::{Error, Gate, WriteOp};
use fenced_gate_postgres::check::{KEEP_MARK, RAISE_MARK};
use fenced_gate_postgres::{
    begin_guarded, install, GuardedClient, PostgresBackend, STALE_SQLSTATE,
};
use fenced_tests::postgres::{postgres_or_skip, TestPostgres};
use fenced_types::{FencingToken, LockName};
use futures::FutureExt;

fn t(value: u64) -> FencingToken {
    FencingToken::new(value).unwrap()
}

fn name(text: &str) -> LockName {
    LockName::new(text).unwrap()
}

/// `pg-gate/sql/<file>`.
fn sql_file(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pg-gate/sql")
        .join(file)
}

/// Installs fenced.sql through psql, as a service in another language would.
fn install_with_psql(cluster: &TestPostgres) {
    let fenced_sql = sql_file("fenced.sql");
    let installed = cluster.psql(&["--single-transaction", "-f", fenced_sql.to_str().unwrap()]);
    assert!(
        installed.status.success(),
        "installing fenced.sql: {}",
        String::from_utf8_lossy(&installed.stderr)
    );
}

/// Runs one of pg-gate/sql's test scripts through psql, which must stop at the stale
/// write's error (psql exits with 3 when a script stops at an error under ON_ERROR_STOP);
/// psql's stderr.
fn run_script_refused(cluster: &TestPostgres, script: &str) -> String {
    let script = sql_file(script);
    let run = cluster.psql(&["-f", script.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(
        run.status.code(),
        Some(3),
        "the stale write was not refused: {stderr}"
    );
    stderr
}

/// One query's rows through psql, unaligned (`a|b`), trimmed.
fn psql_rows(cluster: &TestPostgres, query: &str) -> String {
    let read = cluster.psql(&["-At", "-c", query]);
    assert!(
        read.status.success(),
        "{query}: {}",
        String::from_utf8_lossy(&read.stderr)
    );
    String::from_utf8_lossy(&read.stdout).trim().to_string()
}

/// The conformance harness: every `open` is a fresh database on one cluster (the checks
/// reuse resource names); `reopen` closes every connection and connects again, after a
/// real crash of the server when `crash_on_reopen` is set.
struct Postgres {
    cluster: TestPostgres,
    /// Databases made so far, for fresh names; the last one is the one `reopen` reopens.
    databases: usize,
    crash_on_reopen: bool,
}

impl Postgres {
    fn new(cluster: TestPostgres, crash_on_reopen: bool) -> Self {
        Postgres {
            cluster,
            databases: 0,
            crash_on_reopen,
        }
    }

    fn database(&self) -> String {
        format!("conformance_{}", self.databases)
    }

    fn connect(&self) -> PostgresBackend {
        PostgresBackend::connect(
            &self.cluster.connection_string_to(&self.database()),
            PostgresBackend::DEFAULT_POOL_SIZE,
        )
        .unwrap()
    }
}

impl Harness for Postgres {
    type Backend = PostgresBackend;

    fn open(&mut self) -> PostgresBackend {
        self.databases += 1;
        let mut admin =
            postgres::Client::connect(&self.cluster.connection_string(), postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {}", self.database()))
            .unwrap();
        self.connect()
    }

    fn reopen(&mut self, backend: PostgresBackend) -> PostgresBackend {
        drop(backend);
        if self.crash_on_reopen {
            self.cluster.crash_restart();
        }
        self.connect()
    }
}

/// The whole conformance suite, races and a close-and-reconnect included.
// checks: S5
#[test]
fn conformance_suite_passes_on_postgres() {
    let Some(cluster) = postgres_or_skip("conformance_suite_passes_on_postgres") else {
        return;
    };
    conformance::run_all(&mut Postgres::new(cluster, false));
}

/// Marks and data acknowledged before a kill -9 of the postmaster are there after crash
/// recovery, and the mark still refuses the older holder.
// checks: S5
#[test]
fn acknowledged_writes_survive_a_postmaster_kill() {
    let Some(cluster) = postgres_or_skip("acknowledged_writes_survive_a_postmaster_kill") else {
        return;
    };
    conformance::durable_across_reopen(&mut Postgres::new(cluster, true));
}

/// While the server is down the backend answers with a storage failure carrying the
/// driver's evidence, not a panic and not a refusal.
// checks: S5
#[test]
fn a_dead_server_is_a_storage_failure() {
    let Some(mut cluster) = postgres_or_skip("a_dead_server_is_a_storage_failure") else {
        return;
    };
    let gate = Gate::new(PostgresBackend::connect(&cluster.connection_string(), 2).unwrap());
    let orders = name("orders");
    gate.write(&orders, t(34), &WriteOp::put("o1", "paid"))
        .unwrap();
    cluster.kill_postmaster();
    match gate.write(&orders, t(35), &WriteOp::put("o1", "shipped")) {
        Err(error @ Error::Storage(_)) => assert!(!error.is_refusal(), "{error}"),
        other => panic!("a write to a dead server must fail as storage: {other:?}"),
    }
    cluster.start_again();
    // A closed connection is replaced: the same backend works again.
    let mut retries = 0;
    loop {
        match gate.write(&orders, t(35), &WriteOp::put("o1", "shipped")) {
            Ok(_) => break,
            Err(Error::Storage(_)) if retries < 4 => retries += 1,
            other => panic!("after the restart: {other:?}"),
        }
    }
    assert_eq!(gate.mark(&orders).unwrap(), Some(t(35)));
}

/// Connects an async client to `database` on `cluster`, its connection driven by a task.
async fn client(cluster: &TestPostgres, database: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &cluster.connection_string_to(database),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A holder's stale `begin_guarded` is refused with both tokens, and the caller's table
/// and the mark are as the newer holder left them.
// checks: S5
#[tokio::test]
async fn stale_begin_guarded_is_refused_and_changes_nothing() {
    let Some(cluster) = postgres_or_skip("stale_begin_guarded_is_refused_and_changes_nothing")
    else {
        return;
    };
    let mut db = client(&cluster, "postgres").await;
    install(&db).await.unwrap();
    install(&db).await.unwrap(); // idempotent
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, written_by bigint NOT NULL)",
    )
    .await
    .unwrap();
    let orders = name("orders");

    // The new holder (34) writes.
    let tx = begin_guarded(&mut db, &orders, t(34)).await.unwrap();
    assert_eq!(tx.mark(), t(34));
    tx.execute("INSERT INTO orders VALUES (1, 'paid', 34)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The old holder (33) wakes up: refused before it can run a statement.
    match begin_guarded(&mut db, &orders, t(33)).await {
        Err(Error::StaleToken {
            resource,
            presented,
            current,
        }) => assert_eq!(
            (resource, presented, current),
            (orders.clone(), t(33), t(34))
        ),
        Err(other) => panic!("expected StaleToken {{ 33, 34 }}, got {other:?}"),
        Ok(_) => panic!("a stale token opened a guarded transaction"),
    }

    // A token PostgreSQL's bigint cannot hold is a storage failure, not a wrapped number.
    match begin_guarded(&mut db, &orders, t(u64::MAX)).await {
        Err(Error::Storage(failure)) => assert!(
            failure.to_string().contains("bigint"),
            "the failure names the range: {failure}"
        ),
        Err(other) => panic!("expected a storage failure, got {other:?}"),
        Ok(_) => panic!("token 2^64-1 opened a guarded transaction"),
    }

    // The same connection still works, and nothing changed.
    let row = db
        .query_one("SELECT status, written_by FROM orders WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1)),
        ("paid".to_string(), 34)
    );
    let mark: i64 = db
        .query_one(
            "SELECT token FROM fenced_marks WHERE resource = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mark, 34, "a refused check moved the mark");

    // A caller that gets an error mid-transaction and drops it rolls back the mark too.
    {
        let tx = begin_guarded(&mut db, &orders, t(40)).await.unwrap();
        assert!(tx
            .execute("INSERT INTO orders VALUES (1, 'dup', 40)", &[])
            .await
            .is_err());
    }
    let mark: i64 = db
        .query_one(
            "SELECT token FROM fenced_marks WHERE resource = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mark, 34, "a rolled-back guarded transaction kept its mark");
}

/// How a race holder opens its guarded transaction.
#[derive(Clone, Copy)]
enum Begin {
    /// `begin_guarded` on the plain client (the check a call of `fenced_check`).
    Unprepared,
    /// `GuardedClient::begin` (the check prepared on the connection).
    Prepared,
    /// `GuardedClient::begin_executing`: the write sent in the check's round trip.
    PreparedWithWrite,
}

/// One holder's turn in a race round: its guarded transaction writing `token` into the
/// round's row, with a pause between the check and the commit, where a newer holder would
/// commit if the mark row were not locked.
async fn race_holder(
    db: &mut GuardedClient,
    begin: Begin,
    resource: &LockName,
    token: u64,
    round: i32,
) -> Result<(), Error> {
    const WRITE: &str = "INSERT INTO race VALUES ($1, $2) \
                         ON CONFLICT (round) DO UPDATE SET written_by = EXCLUDED.written_by";
    let written_by = token as i64;
    let pause = Duration::from_millis((round as u64 * 7 + token) % 3);
    let tx = match begin {
        Begin::Unprepared | Begin::Prepared => {
            let tx = match begin {
                Begin::Unprepared => begin_guarded(db, resource, t(token)).await?,
                _ => db.begin(resource, t(token)).await?,
            };
            tokio::time::sleep(pause).await;
            tx.execute(WRITE, &[&round, &written_by]).await.unwrap();
            tx
        }
        Begin::PreparedWithWrite => {
            let write = db.prepare(WRITE).await.unwrap();
            let (tx, written) = db
                .begin_executing(resource, t(token), &write, &[&round, &written_by])
                .await?;
            assert_eq!(written.unwrap(), 1);
            tokio::time::sleep(pause).await;
            tx
        }
    };
    tx.commit().await
}

/// The mark of a race round's resource when its two holders are released.
#[derive(Clone, Copy, PartialEq)]
enum MarkBefore {
    /// No mark: both checks find no row, and 33 and 34 each insert or raise it.
    None,
    /// Already 33, written by the old holder's own connection the way it opens its
    /// transactions, as after its earlier writes: 33's check finds its own token there and
    /// writes no row version (the equal-token path; a `GuardedClient` sends `KEEP_MARK`,
    /// having seen 33 accepted last), 34's raises it.
    Older,
}

/// Two holders with tokens 33 and 34 on separate connections, released together, 100
/// rounds ([`race_holder`]), 33 opening its transactions the way `begins[0]` says and 34
/// the way `begins[1]` says: 33's row never lands over 34's (an accepted 33 committed
/// before 34's check raised the mark), 34 is never refused, and a refused 33 sees both
/// tokens.
async fn race_33_against_34(cluster: &TestPostgres, begins: [Begin; 2], mark: MarkBefore) {
    let setup = client(cluster, "postgres").await;
    install(&setup).await.unwrap();
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS race; \
             CREATE TABLE race (round int PRIMARY KEY, written_by bigint NOT NULL); \
             DELETE FROM fenced_marks WHERE resource LIKE 'race-%'",
        )
        .await
        .unwrap();
    let mut holders = Vec::new();
    for _ in 0..2 {
        let db = GuardedClient::new(client(cluster, "postgres").await)
            .await
            .unwrap();
        holders.push(Some(db));
    }
    let rounds = 100;
    let mut refused_33 = 0;
    for round in 0..rounds {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let resource = name(&format!("race-{round}"));
        if mark == MarkBefore::Older {
            let old = holders[0].as_mut().unwrap();
            let tx = match begins[0] {
                Begin::Unprepared => begin_guarded(old, &resource, t(33)).await.unwrap(),
                Begin::Prepared | Begin::PreparedWithWrite => {
                    old.begin(&resource, t(33)).await.unwrap()
                }
            };
            assert_eq!(tx.mark(), t(33));
            tx.commit().await.unwrap();
        }
        let tasks: Vec<_> = [33u64, 34]
            .into_iter()
            .zip(begins)
            .zip(holders.iter_mut())
            .map(|((token, begin), slot)| {
                let mut db = slot.take().unwrap();
                let (barrier, resource) = (Arc::clone(&barrier), resource.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let result = race_holder(&mut db, begin, &resource, token, round).await;
                    (db, result)
                })
            })
            .collect();
        let mut results = Vec::new();
        for (slot, task) in holders.iter_mut().zip(tasks) {
            let (db, result) = task.await.unwrap();
            *slot = Some(db);
            results.push(result);
        }
        assert!(
            results[1].is_ok(),
            "round {round}: 34 refused: {:?}",
            results[1]
        );
        match &results[0] {
            Ok(()) => {}
            Err(Error::StaleToken {
                presented, current, ..
            }) => {
                assert_eq!((*presented, *current), (t(33), t(34)));
                refused_33 += 1;
            }
            Err(other) => panic!("round {round}: 33 failed: {other:?}"),
        }
        let written_by: i64 = setup
            .query_one("SELECT written_by FROM race WHERE round = $1", &[&round])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            written_by, 34,
            "round {round}: 33's row over 34's ({results:?})"
        );
    }
    eprintln!("33 was refused in {refused_33} of {rounds} rounds (it went first in the rest)");
}

/// [`race_33_against_34`] on a PostgreSQL cluster started for `test` (skipped where none
/// can start, unless `FENCED_REQUIRE_POSTGRES=1`).
async fn race_on_a_cluster_of_its_own(test: &str, begins: [Begin; 2], mark: MarkBefore) {
    if let Some(cluster) = postgres_or_skip(test) {
        race_33_against_34(&cluster, begins, mark).await;
    }
}

/// The 33/34 race through `begin_guarded`.
// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_guarded_transactions_never_let_33_over_34() {
    race_on_a_cluster_of_its_own(
        "racing_guarded_transactions_never_let_33_over_34",
        [Begin::Unprepared; 2],
        MarkBefore::None,
    )
    .await;
}

/// The 33/34 race through `GuardedClient::begin`.
// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_guarded_client_transactions_never_let_33_over_34() {
    race_on_a_cluster_of_its_own(
        "racing_guarded_client_transactions_never_let_33_over_34",
        [Begin::Prepared; 2],
        MarkBefore::None,
    )
    .await;
}

/// A database with `fenced.sql` installed and an `orders` table, and a `GuardedClient` on
/// it.
async fn orders_database(cluster: &TestPostgres) -> GuardedClient {
    let db = client(cluster, "postgres").await;
    install(&db).await.unwrap();
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, written_by bigint NOT NULL)",
    )
    .await
    .unwrap();
    GuardedClient::new(db).await.unwrap()
}

/// [`orders_database`] after holder 34 committed a guarded transaction on `orders`, and
/// a second connection to watch it from.
async fn orders_fenced_at_34(cluster: &TestPostgres) -> (GuardedClient, tokio_postgres::Client) {
    let mut db = orders_database(cluster).await;
    db.begin(&name("orders"), t(34))
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    (db, client(cluster, "postgres").await)
}

/// `orders`' rows as `(id, status, written_by)`, by id, and the `orders` mark.
async fn orders_and_mark(db: &tokio_postgres::Client) -> (Vec<(i32, String, i64)>, Option<i64>) {
    let rows = db
        .query("SELECT id, status, written_by FROM orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let mark = db
        .query_opt(
            "SELECT token FROM fenced_marks WHERE resource = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .map(|row| row.get(0));
    (rows, mark)
}

/// Fails unless `db`'s session is outside any transaction block: `SAVEPOINT` outside one
/// is an error (25P01, no_active_sql_transaction).
async fn assert_outside_a_transaction(db: &tokio_postgres::Client) {
    match db.batch_execute("SAVEPOINT probe").await {
        Err(error) if error.code().map(|c| c.code()) == Some("25P01") => {}
        Err(error) => panic!("probing for an open transaction: {error:?}"),
        Ok(()) => panic!("the connection was left inside a transaction"),
    }
}

/// The 33/34 race through `GuardedClient::begin_executing`, each holder's write in its
/// check's round trip.
// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_pipelined_writes_never_let_33_over_34() {
    race_on_a_cluster_of_its_own(
        "racing_pipelined_writes_never_let_33_over_34",
        [Begin::PreparedWithWrite; 2],
        MarkBefore::None,
    )
    .await;
}

/// The 33/34 race with the mark already 33 (the old holder wrote before), through
/// `GuardedClient::begin`: 33's check writes no row version but still locks the mark row,
/// so 34's raise waits for 33's transaction, and a 33 check that waited for 34's commit
/// reads 34's mark, not its statement snapshot's 33, and is refused.
// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_a_repeated_token_never_lands_after_a_newer_one() {
    race_on_a_cluster_of_its_own(
        "racing_a_repeated_token_never_lands_after_a_newer_one",
        [Begin::Prepared; 2],
        MarkBefore::Older,
    )
    .await;
}

/// The repeated-token race through `begin_guarded` (`fenced_check`, the SQL recipe's
/// check).
// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_a_repeated_token_through_fenced_check_never_lands_after_a_newer_one() {
    race_on_a_cluster_of_its_own(
        "racing_a_repeated_token_through_fenced_check_never_lands_after_a_newer_one",
        [Begin::Unprepared; 2],
        MarkBefore::Older,
    )
    .await;
}

/// The repeated-token race through `GuardedClient::begin_executing`, each holder's write
/// in its check's round trip.
// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_a_repeated_pipelined_write_never_lands_after_a_newer_one() {
    race_on_a_cluster_of_its_own(
        "racing_a_repeated_pipelined_write_never_lands_after_a_newer_one",
        [Begin::PreparedWithWrite; 2],
        MarkBefore::Older,
    )
    .await;
}

/// Rust's prepared check and `fenced_check` fence each other on the same mark rows: the
/// repeated-token race with 33 through `fenced_check` and 34 through the prepared check,
/// then the other way round; and the fresh-mark race the same two ways.
// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_sql_checks_fence_each_other_in_a_race() {
    let Some(cluster) = postgres_or_skip("rust_and_sql_checks_fence_each_other_in_a_race") else {
        return;
    };
    for mark in [MarkBefore::Older, MarkBefore::None] {
        race_33_against_34(&cluster, [Begin::Unprepared, Begin::Prepared], mark).await;
        race_33_against_34(&cluster, [Begin::Prepared, Begin::Unprepared], mark).await;
    }
}

/// The mark row's physical version, `(ctid, xmin)`: both change when a statement writes a
/// new row version, and neither does when one only locks the row.
async fn orders_mark_version(db: &tokio_postgres::Client) -> (String, String) {
    let row = db
        .query_one(
            "SELECT ctid::text, xmin::text FROM fenced_marks WHERE resource = 'orders'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A holder's later writes with its token (the mark already equals it) are accepted
/// without a new version of the mark row, through each way in; while such a transaction
/// is open, the mark row is locked (a newer holder's check waits for it); an older token
/// is still refused with both tokens; and a newer one still raises the mark.
// checks: S5
#[tokio::test]
async fn an_equal_token_is_accepted_without_raising_the_mark() {
    let Some(cluster) = postgres_or_skip("an_equal_token_is_accepted_without_raising_the_mark")
    else {
        return;
    };
    let (mut db, observer) = orders_fenced_at_34(&cluster).await;
    let orders = name("orders");
    let write = db
        .prepare("INSERT INTO orders VALUES ($1, 'paid', 34)")
        .await
        .unwrap();
    let version = orders_mark_version(&observer).await;

    // 34 writes again, each way in: GuardedClient::begin, begin_executing, begin_guarded.
    let tx = db.begin(&orders, t(34)).await.unwrap();
    assert_eq!(tx.mark(), t(34));
    tx.execute(&write, &[&1i32]).await.unwrap();
    tx.commit().await.unwrap();
    let (tx, written) = db
        .begin_executing(&orders, t(34), &write, &[&2i32])
        .await
        .unwrap();
    assert_eq!((tx.mark(), written.unwrap()), (t(34), 1));
    tx.commit().await.unwrap();
    let tx = begin_guarded(&mut db, &orders, t(34)).await.unwrap();
    assert_eq!(tx.mark(), t(34));
    tx.execute(&write, &[&3i32]).await.unwrap();
    tx.commit().await.unwrap();
    let (rows, mark) = orders_and_mark(&observer).await;
    assert_eq!((rows.len(), mark), (3, Some(34)));
    assert_eq!(
        orders_mark_version(&observer).await,
        version,
        "an equal token wrote a new version of the mark row"
    );

    // An open equal-token transaction locks the mark row, each way in: 35 waits for it.
    let mut newer = GuardedClient::new(client(&cluster, "postgres").await)
        .await
        .unwrap();
    newer
        .batch_execute("SET lock_timeout = '200ms'")
        .await
        .unwrap();
    for begin in [Begin::Prepared, Begin::Unprepared] {
        let held = match begin {
            Begin::Unprepared => begin_guarded(&mut db, &orders, t(34)).await.unwrap(),
            _ => db.begin(&orders, t(34)).await.unwrap(),
        };
        match newer.begin(&orders, t(35)).await {
            Err(error @ Error::Storage(_)) => {
                assert!(error.to_string().contains("55P03"), "{error}")
            }
            Err(other) => panic!("expected a lock timeout, got {other:?}"),
            Ok(_) => panic!("35 raised the mark under an open equal-token transaction"),
        }
        held.rollback().await.unwrap();
    }

    // 33 is still refused, each way in, and the mark row is as it was.
    match db.begin(&orders, t(33)).await {
        Err(Error::StaleToken {
            presented, current, ..
        }) => assert_eq!((presented, current), (t(33), t(34))),
        Err(other) => panic!("expected StaleToken {{ 33, 34 }}, got {other:?}"),
        Ok(_) => panic!("a stale token opened a guarded transaction"),
    }
    match begin_guarded(&mut db, &orders, t(33)).await {
        Err(Error::StaleToken {
            presented, current, ..
        }) => assert_eq!((presented, current), (t(33), t(34))),
        Err(other) => panic!("expected StaleToken {{ 33, 34 }}, got {other:?}"),
        Ok(_) => panic!("a stale token opened a guarded transaction"),
    }
    assert_eq!(orders_mark_version(&observer).await, version);

    // 35 raises the mark: a new row version.
    newer
        .begin(&orders, t(35))
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    assert_eq!(orders_and_mark(&observer).await.1, Some(35));
    assert_ne!(orders_mark_version(&observer).await, version);
}

/// A stale holder's write sent in its check's round trip (`begin_executing`) is refused
/// with both tokens and changes nothing: the server refuses the write behind the refused
/// check. A current holder's write lands with its commit.
// checks: S5
#[tokio::test]
async fn a_write_pipelined_behind_a_stale_check_changes_nothing() {
    let Some(cluster) = postgres_or_skip("a_write_pipelined_behind_a_stale_check_changes_nothing")
    else {
        return;
    };
    let (mut db, observer) = orders_fenced_at_34(&cluster).await;
    let orders = name("orders");
    let write = db
        .prepare("INSERT INTO orders VALUES ($1, $2, $3)")
        .await
        .unwrap();

    let (tx, written) = db
        .begin_executing(&orders, t(34), &write, &[&1i32, &"paid", &34i64])
        .await
        .unwrap();
    assert_eq!(written.unwrap(), 1);
    tx.commit().await.unwrap();
    let before = orders_and_mark(&observer).await;
    assert_eq!(before, (vec![(1, "paid".to_string(), 34)], Some(34)));

    match db
        .begin_executing(&orders, t(33), &write, &[&2i32, &"zombie", &33i64])
        .await
    {
        Err(Error::StaleToken {
            presented, current, ..
        }) => assert_eq!((presented, current), (t(33), t(34))),
        Err(other) => panic!("expected StaleToken {{ 33, 34 }}, got {other:?}"),
        Ok(_) => panic!("a stale token opened a guarded transaction"),
    }
    assert_outside_a_transaction(&db).await;
    assert_eq!(orders_and_mark(&observer).await, before);
}

/// A `GuardedClient` holder with a stale token is refused with both tokens before it runs
/// a statement; the table and the mark are as the newer holder left them, the connection
/// is not left inside a transaction, and the check needs `fenced.sql` installed.
// checks: S5
#[tokio::test]
async fn stale_guarded_client_is_refused_and_changes_nothing() {
    let Some(cluster) = postgres_or_skip("stale_guarded_client_is_refused_and_changes_nothing")
    else {
        return;
    };
    let bare = client(&cluster, "postgres").await;
    match GuardedClient::new(bare).await {
        Err(Error::Storage(failure)) => assert!(
            failure.to_string().contains("fenced.sql"),
            "the failure says what is missing: {failure}"
        ),
        Err(other) => panic!("expected a storage failure, got {other:?}"),
        Ok(_) => panic!("a GuardedClient on a database without fenced_marks"),
    }

    let mut db = orders_database(&cluster).await;
    let orders = name("orders");

    // The new holder (34) writes.
    let tx = db.begin(&orders, t(34)).await.unwrap();
    assert_eq!(tx.mark(), t(34));
    tx.execute("INSERT INTO orders VALUES (1, 'paid', 34)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let before = orders_and_mark(&db).await;
    assert_eq!(before, (vec![(1, "paid".to_string(), 34)], Some(34)));

    // The old holder (33) wakes up: refused before it can run a statement.
    match db.begin(&orders, t(33)).await {
        Err(Error::StaleToken {
            resource,
            presented,
            current,
        }) => assert_eq!(
            (resource, presented, current),
            (orders.clone(), t(33), t(34))
        ),
        Err(other) => panic!("expected StaleToken {{ 33, 34 }}, got {other:?}"),
        Ok(_) => panic!("a stale token opened a guarded transaction"),
    }
    // Rolled back: the connection is outside any transaction, and nothing changed.
    assert_outside_a_transaction(&db).await;
    assert_eq!(orders_and_mark(&db).await, before);

    // The same token again is accepted (a holder writes many times with one token).
    let tx = db.begin(&orders, t(34)).await.unwrap();
    tx.execute("UPDATE orders SET status = 'shipped' WHERE id = 1", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        orders_and_mark(&db).await,
        (vec![(1, "shipped".to_string(), 34)], Some(34))
    );
}

/// Dropping a guarded transaction without committing rolls back the check and the
/// caller's writes, and so does dropping `begin` after its requests went out but before
/// its answer: the connection is reused at once, and only what the next transaction
/// commits lands.
// checks: S5
#[tokio::test]
async fn dropping_a_guarded_transaction_rolls_back_the_check_and_the_writes() {
    let Some(cluster) =
        postgres_or_skip("dropping_a_guarded_transaction_rolls_back_the_check_and_the_writes")
    else {
        return;
    };
    let (mut db, observer) = orders_fenced_at_34(&cluster).await;
    let orders = name("orders");

    // Dropped after a write.
    {
        let tx = db.begin(&orders, t(40)).await.unwrap();
        tx.execute("INSERT INTO orders VALUES (1, 'dropped', 40)", &[])
            .await
            .unwrap();
    }
    // Dropped after BEGIN and the check went out, before their answer.
    assert!(
        db.begin(&orders, t(50)).now_or_never().is_none(),
        "begin answered without a round trip"
    );
    // The connection at once: a transaction that would be refused (41 < 50) or would
    // commit the dropped write (still inside the first transaction) if either drop had
    // left its transaction open.
    let tx = db.begin(&orders, t(41)).await.unwrap();
    tx.execute("INSERT INTO orders VALUES (2, 'kept', 41)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        orders_and_mark(&observer).await,
        (vec![(2, "kept".to_string(), 41)], Some(41))
    );

    // The mark row is free: another connection's check does not wait for a dropped one.
    let mut other = GuardedClient::new(client(&cluster, "postgres").await)
        .await
        .unwrap();
    {
        let _held = db.begin(&orders, t(42)).await.unwrap();
    }
    let tx = tokio::time::timeout(Duration::from_secs(30), other.begin(&orders, t(43)))
        .await
        .expect("the dropped transaction still holds the mark row")
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(orders_and_mark(&observer).await.1, Some(43));
}

/// A connection lost in the middle of a guarded transaction: its commit is a storage
/// failure (not a refusal, not a success), nothing it wrote lands, and a new transaction
/// on the dead connection is a storage failure too.
// checks: S5
#[tokio::test]
async fn a_connection_lost_mid_transaction_is_a_storage_failure() {
    let Some(cluster) = postgres_or_skip("a_connection_lost_mid_transaction_is_a_storage_failure")
    else {
        return;
    };
    let (mut db, observer) = orders_fenced_at_34(&cluster).await;
    let orders = name("orders");

    let tx = db.begin(&orders, t(35)).await.unwrap();
    tx.execute("INSERT INTO orders VALUES (1, 'lost', 35)", &[])
        .await
        .unwrap();
    let pid: i32 = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let terminated: bool = observer
        .query_one("SELECT pg_terminate_backend($1, 30000)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(terminated, "the guarded connection's backend did not end");
    match tx.commit().await {
        Err(error @ Error::Storage(_)) => assert!(!error.is_refusal(), "{error}"),
        other => panic!("a commit on a lost connection must fail as storage: {other:?}"),
    }
    assert_eq!(orders_and_mark(&observer).await, (Vec::new(), Some(34)));
    match db.begin(&orders, t(36)).await {
        Err(error @ Error::Storage(_)) => assert!(!error.is_refusal(), "{error}"),
        Err(other) => panic!("expected a storage failure, got {other:?}"),
        Ok(_) => panic!("a guarded transaction opened on a dead connection"),
    };
}

/// The PostgreSQL behaviour the checks rely on (its `INSERT` documentation): the mark
/// upsert of `fenced_check` and of [`RAISE_MARK`] locks the mark row even when its `WHERE`
/// refuses the token, so the mark read after a refusal is the one that refused it; and
/// [`RAISE_MARK`]'s refusal is `fenced_check`'s error, which aborts the transaction.
// checks: S5
#[tokio::test]
async fn a_refused_mark_upsert_still_locks_the_mark_row() {
    let Some(cluster) = postgres_or_skip("a_refused_mark_upsert_still_locks_the_mark_row") else {
        return;
    };
    let (_holder, other) = orders_fenced_at_34(&cluster).await;
    let mut stale = client(&cluster, "postgres").await;
    let tx = stale.transaction().await.unwrap();
    let refused = tx
        .query_opt(
            "INSERT INTO fenced_marks AS m (resource, token) VALUES ('orders', 33) \
             ON CONFLICT (resource) DO UPDATE SET token = EXCLUDED.token \
             WHERE m.token <= EXCLUDED.token RETURNING m.token",
            &[],
        )
        .await
        .unwrap();
    assert!(refused.is_none(), "the upsert accepted 33 over 34");
    assert_orders_mark_locked(&other, "the refused check left the mark row unlocked").await;
    tx.rollback().await.unwrap();
    let mark: i64 = other
        .query_one(LOCK_ORDERS_MARK_NOWAIT, &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(mark, 34);

    let tx = stale.transaction().await.unwrap();
    assert_refuses_33_and_aborts(&tx, RAISE_MARK).await;
}

/// Locks the `orders` mark row, or fails at once (55P03) if another transaction holds it.
const LOCK_ORDERS_MARK_NOWAIT: &str =
    "SELECT token FROM fenced_marks WHERE resource = 'orders' FOR UPDATE NOWAIT";

/// Fails with `why` unless another transaction holds the `orders` mark row's lock:
/// `other`'s [`LOCK_ORDERS_MARK_NOWAIT`] must fail with 55P03.
async fn assert_orders_mark_locked(other: &tokio_postgres::Client, why: &str) {
    let error = other
        .query_one(LOCK_ORDERS_MARK_NOWAIT, &[])
        .await
        .expect_err(why);
    assert_eq!(error.code().map(|c| c.code()), Some("55P03"), "{error:?}");
}

/// `check` ([`RAISE_MARK`] or [`KEEP_MARK`]) refuses token 33 against the `orders` mark
/// 34 with ZF001 inside `tx`, and the refusal aborts `tx`: the next statement fails with
/// 25P02.
async fn assert_refuses_33_and_aborts(tx: &tokio_postgres::Transaction<'_>, check: &str) {
    let refused = tx
        .query_one(check, &[&"orders", &33i64])
        .await
        .expect_err("the check accepted 33 over 34");
    assert_eq!(refused.code().map(|c| c.code()), Some(STALE_SQLSTATE));
    let aborted = tx
        .query_one("SELECT 1", &[])
        .await
        .expect_err("a statement after the refusal ran");
    assert_eq!(aborted.code().map(|c| c.code()), Some("25P02"));
}

/// [`KEEP_MARK`] gives [`RAISE_MARK`]'s answers with the mark at 34: 34 is accepted with
/// the mark row locked and no new row version; 33 is refused with ZF001 and aborts the
/// transaction; 35 raises the mark; a resource with no mark gets one.
// checks: S5
#[tokio::test]
async fn keep_mark_gives_the_answers_of_raise_mark() {
    let Some(cluster) = postgres_or_skip("keep_mark_gives_the_answers_of_raise_mark") else {
        return;
    };
    let (_holder, other) = orders_fenced_at_34(&cluster).await;
    let mut db = client(&cluster, "postgres").await;
    let version = orders_mark_version(&other).await;

    let tx = db.transaction().await.unwrap();
    let kept: i64 = tx
        .query_one(KEEP_MARK, &[&"orders", &34i64])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 34);
    assert_orders_mark_locked(&other, "an accepted equal token left the mark row unlocked").await;
    tx.commit().await.unwrap();
    assert_eq!(orders_mark_version(&other).await, version);

    let tx = db.transaction().await.unwrap();
    assert_refuses_33_and_aborts(&tx, KEEP_MARK).await;
    drop(tx);
    assert_eq!(orders_and_mark(&other).await.1, Some(34));

    let tx = db.transaction().await.unwrap();
    for (resource, token) in [("orders", 35i64), ("invoices", 7)] {
        let mark: i64 = tx
            .query_one(KEEP_MARK, &[&resource, &token])
            .await
            .unwrap()
            .get(0);
        assert_eq!(mark, token, "{resource}");
    }
    tx.commit().await.unwrap();
    let marks: Vec<(String, i64)> = other
        .query(
            "SELECT resource, token FROM fenced_marks WHERE resource IN ('orders', 'invoices') \
             ORDER BY resource",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        marks,
        [("invoices".to_string(), 7), ("orders".to_string(), 35)]
    );
}

/// The SQL recipe from a non-Rust client: psql installs fenced.sql, the new holder writes
/// with token 34, and the old holder's `SELECT fenced_check('orders', 33); UPDATE ...`
/// fails with the documented SQLSTATE; the table reads back unchanged.
// checks: S5
#[test]
fn psql_stale_write_is_refused_with_the_documented_sqlstate() {
    let Some(cluster) =
        postgres_or_skip("psql_stale_write_is_refused_with_the_documented_sqlstate")
    else {
        return;
    };
    // Twice: installing is idempotent.
    install_with_psql(&cluster);
    install_with_psql(&cluster);
    let stderr = run_script_refused(&cluster, "test_stale_write.sql");
    assert!(
        stderr.contains(&format!("ERROR:  {STALE_SQLSTATE}: stale fencing token: presented 33, current 34 (resource 'orders')")),
        "psql's error: {stderr}"
    );
    assert!(
        stderr.contains(r#"DETAIL:  {"resource" : "orders", "presented" : 33, "current" : 34}"#),
        "psql's detail: {stderr}"
    );
    // A token that is not positive is invalid_parameter_value, not a stale token.
    for token in ["0", "-1", "NULL"] {
        let sql = format!("SELECT fenced_check('orders', {token})");
        let bad = cluster.psql(&["--set=VERBOSITY=verbose", "-c", &sql]);
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(
            !bad.status.success() && stderr.contains("ERROR:  22023"),
            "{sql}: {stderr}"
        );
    }
    assert_eq!(
        psql_rows(
            &cluster,
            "SELECT status, written_by FROM orders ORDER BY id"
        ),
        "paid|34",
        "the table changed"
    );
}

/// The trigger helper from psql: a table guarded by `fenced_guard` refuses the old
/// holder's UPDATE (token 33 after 34) with the documented SQLSTATE although the writer
/// never called fenced_check, and the row reads back unchanged.
// checks: S5
#[test]
fn psql_guarded_table_refuses_a_stale_update() {
    let Some(cluster) = postgres_or_skip("psql_guarded_table_refuses_a_stale_update") else {
        return;
    };
    install_with_psql(&cluster);
    let stderr = run_script_refused(&cluster, "test_guarded_table.sql");
    assert!(
        stderr.contains(&format!(
            "ERROR:  {STALE_SQLSTATE}: stale fencing token: presented 33, current 34 (resource 'accounts')"
        )),
        "psql's error: {stderr}"
    );
    assert_eq!(
        psql_rows(&cluster, "SELECT balance, token FROM accounts"),
        "100|34",
        "the table changed"
    );
}

/// What fenced.sql documents for REPEATABLE READ: a check whose snapshot predates a newer
/// holder's commit fails with 40001 (retry), never passes; the retried transaction gets
/// the stale-token refusal.
// checks: S5
#[tokio::test]
async fn repeatable_read_sees_a_concurrent_raise_as_a_serialization_failure() {
    let Some(cluster) =
        postgres_or_skip("repeatable_read_sees_a_concurrent_raise_as_a_serialization_failure")
    else {
        return;
    };
    let mut old = client(&cluster, "postgres").await;
    let mut new = client(&cluster, "postgres").await;
    install(&old).await.unwrap();
    let orders = name("orders");
    begin_guarded(&mut old, &orders, t(33))
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();

    // The old holder's transaction takes its snapshot; the new holder then raises the mark.
    let tx = old
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    tx.query_one("SELECT 1", &[]).await.unwrap();
    begin_guarded(&mut new, &orders, t(34))
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let error = tx
        .query_one("SELECT fenced_check('orders', 33)", &[])
        .await
        .expect_err("a check older than the mark passed");
    assert_eq!(
        error.code().map(|c| c.code()),
        Some("40001"),
        "expected a serialization failure: {error:?}"
    );
    tx.rollback().await.unwrap();

    // The retry sees the new mark and is refused as stale.
    let tx = old
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    let error = tx
        .query_one("SELECT fenced_check('orders', 33)", &[])
        .await
        .expect_err("the retried stale check passed");
    assert_eq!(error.code().map(|c| c.code()), Some(STALE_SQLSTATE));
}

/// What `begin_guarded` documents for REPEATABLE READ, for the check in Rust: an old
/// holder whose check waited for a newer holder's transaction on the mark row fails with
/// 40001 (a storage failure: retry) when that transaction commits, never passes; the
/// retry is refused as stale.
// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatable_read_check_that_waited_for_a_newer_holder_fails_to_serialize() {
    let Some(cluster) =
        postgres_or_skip("repeatable_read_check_that_waited_for_a_newer_holder_fails_to_serialize")
    else {
        return;
    };
    let mut new = orders_database(&cluster).await;
    let mut old = GuardedClient::new(client(&cluster, "postgres").await)
        .await
        .unwrap();
    let observer = client(&cluster, "postgres").await;
    old.batch_execute("SET default_transaction_isolation TO 'repeatable read'")
        .await
        .unwrap();
    let old_pid: i32 = old
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let orders = name("orders");
    old.begin(&orders, t(33))
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();

    // The new holder holds the mark row; the old holder's check waits for it.
    let held = new.begin(&orders, t(34)).await.unwrap();
    let waiting = {
        let orders = orders.clone();
        tokio::spawn(async move {
            let result = old.begin(&orders, t(33)).await.map(|tx| tx.mark());
            (old, result)
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let blocked: bool = observer
            .query_one(
                "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1",
                &[&old_pid],
            )
            .await
            .unwrap()
            .get(0);
        if blocked {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old holder's check never waited for the mark row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    held.commit().await.unwrap();
    let (mut old, result) = waiting.await.unwrap();
    match result {
        Err(error @ Error::Storage(_)) => {
            assert!(!error.is_refusal(), "{error}");
            assert!(error.to_string().contains("40001"), "{error}");
        }
        other => panic!("expected a serialization failure, got {other:?}"),
    }

    // The retry sees the new mark and is refused as stale.
    match old.begin(&orders, t(33)).await {
        Err(Error::StaleToken {
            presented, current, ..
        }) => assert_eq!((presented, current), (t(33), t(34))),
        Err(other) => panic!("expected StaleToken {{ 33, 34 }}, got {other:?}"),
        Ok(_) => panic!("the retried stale check passed"),
    }
    assert_eq!(orders_and_mark(&observer).await.1, Some(34));
}
