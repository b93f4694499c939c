//! The mark check a guarded transaction starts with, as one statement: [`RAISE_MARK`] or
//! [`KEEP_MARK`] prepared once per connection, or [`CALL_FENCED_CHECK`] sent with typed
//! parameters.
//!
//! [`RAISE_MARK`] does what `fenced.sql`'s `fenced_check` does (on the same
//! `fenced_marks` rows, so Rust and SQL callers fence each other), without a PL/pgSQL
//! call on the accepted path, which is the hot one; a refusal calls `fenced_check` for its
//! error. Either way a refused check aborts the transaction in the server, as a SQL
//! caller's does, so any statement sent behind it (pipelined) is refused too. Every form
//! only locks the mark row when it already equals the token, a holder's steady state (one
//! token, many writes): no new row version, and less than half the WAL a raise adds.
//!
//! [`KEEP_MARK`] gives the same answers as [`RAISE_MARK`] and is cheaper when the mark
//! already equals the token (a locking read of the mark, no upsert), dearer when it raises
//! the mark (a call of `fenced_check`); [`crate::GuardedClient`] sends it when its
//! connection's last check accepted the same resource and token.
//!
//! Unprepared, the upsert would be parsed and planned on every call, which costs more
//! than calling `fenced_check`, whose statements PL/pgSQL plans once per session
//! (BENCHMARKS.md, "The cost of the PostgreSQL gate"): hence two statements.

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Error, Statement};

use crate::pipeline::pipelined;

/// Inserts the mark row with the presented token, raises an existing mark below it, or
/// finds it already equal (a holder's second and later writes), and returns the mark;
/// a mark above the token is refused with `fenced_check`'s error.
///
/// Three answers, in `coalesce`'s order (it evaluates only the arguments it needs:
/// PostgreSQL's documentation of it):
/// 1. `raised`: the upsert inserted the row or raised the mark (`m.token <
///    EXCLUDED.token`), a new row version.
/// 2. The mark already equals the token: the upsert's `WHERE` was false, so it wrote no
///    row version, and the locking sub-select reads the mark. Under READ COMMITTED a
///    plain sub-select would read the statement's snapshot, which can predate a newer
///    holder's raise that the upsert waited for; `FOR NO KEY UPDATE` follows the row to
///    its newest version and re-checks `m.token = $2` there, so a mark raised above the
///    token since the snapshot yields no row. The lock is the one the upsert already
///    holds (the same strength), so taking it costs no wait.
/// 3. Otherwise `fenced_check`, whose statements take fresh snapshots: it accepts the
///    token if the newest mark equals it (a same-token check committed after this
///    statement's snapshot) and raises SQLSTATE ZF001 with the current mark in its DETAIL
///    if the mark is above it.
///
/// Locking: PostgreSQL's `INSERT` documentation says "only rows for which this expression
/// returns true will be updated, although all rows will be locked when the ON CONFLICT DO
/// UPDATE action is taken". So every answer leaves the mark row locked (`FOR NO KEY
/// UPDATE` strength) until the transaction ends, an equal token's included: a newer
/// holder's raise waits for this transaction, and the check and the writes after it
/// commit before that raise or not at all. Under READ COMMITTED a check that waited for a
/// newer holder's transaction evaluates the `WHERE` against the mark that holder
/// committed; a refusal's error aborts the transaction, which releases the lock.
pub const RAISE_MARK: &str = "WITH raised AS ( \
     INSERT INTO fenced_marks AS m (resource, token) VALUES ($1, $2) \
     ON CONFLICT (resource) DO UPDATE SET token = EXCLUDED.token \
     WHERE m.token < EXCLUDED.token \
     RETURNING m.token) \
     SELECT coalesce((SELECT token FROM raised), \
     (SELECT m.token FROM fenced_marks AS m WHERE m.resource = $1 AND m.token = $2 \
     FOR NO KEY UPDATE), \
     fenced_check($1, $2))";

/// Finds the mark already equal to the token and locks it, or else calls `fenced_check`:
/// the same answers as [`RAISE_MARK`] (the mark, or ZF001), for a token the caller expects
/// to find there (a holder's second and later writes).
///
/// The sub-select is [`RAISE_MARK`]'s second answer on its own. It is a locking read (`FOR
/// NO KEY UPDATE`, the strength `fenced_check`'s upsert takes): under READ COMMITTED it
/// waits for a transaction that holds the mark row, follows the row to its newest version
/// and re-checks `m.token = $2` there, so it yields the token only if the newest mark
/// equals it, and leaves that row locked until the transaction ends. Under REPEATABLE READ
/// and SERIALIZABLE a mark changed since the transaction's snapshot fails it with SQLSTATE
/// 40001, as it fails the upsert. No row (no mark yet, or one above or below the token)
/// leaves the answer to `fenced_check`, which raises the mark or refuses with ZF001; the
/// same check, one PL/pgSQL call dearer than [`RAISE_MARK`] on that path.
pub const KEEP_MARK: &str = "SELECT coalesce( \
     (SELECT m.token FROM fenced_marks AS m WHERE m.resource = $1 AND m.token = $2 \
     FOR NO KEY UPDATE), \
     fenced_check($1, $2))";

/// The parameter types of [`RAISE_MARK`], [`KEEP_MARK`] and [`CALL_FENCED_CHECK`]: the
/// resource, the presented token.
pub const CHECK_TYPES: [Type; 2] = [Type::TEXT, Type::INT8];

/// `fenced.sql`'s check as one call: the same answers as [`RAISE_MARK`] (the new mark,
/// or ZF001), cheaper than [`RAISE_MARK`] when the statement is not prepared.
pub const CALL_FENCED_CHECK: &str = "SELECT fenced_check($1, $2)";

/// Which statement the check is, and how it reaches the server.
#[derive(Clone, Copy)]
pub enum CheckStatement<'s> {
    /// [`RAISE_MARK`] or [`KEEP_MARK`] prepared on this connection ([`PreparedCheck`]):
    /// bound and executed only.
    Prepared(&'s Statement),
    /// [`CALL_FENCED_CHECK`] sent as text with typed parameters: one request, no
    /// separate prepare round trip.
    Unprepared,
}

/// [`RAISE_MARK`] and [`KEEP_MARK`] prepared on one connection; valid only on it.
pub struct PreparedCheck {
    /// [`RAISE_MARK`], prepared.
    raise: Statement,
    /// [`KEEP_MARK`], prepared.
    keep: Statement,
}

impl PreparedCheck {
    /// [`RAISE_MARK`], prepared: for a token that may be new to the resource.
    pub fn raise(&self) -> &Statement {
        &self.raise
    }

    /// [`KEEP_MARK`], prepared: for a token expected to equal the mark already.
    pub fn keep(&self) -> &Statement {
        &self.keep
    }

    /// Prepares [`RAISE_MARK`] and [`KEEP_MARK`] on `client` (one round trip).
    /// `fenced.sql` must be installed ([`crate::install`]).
    pub async fn prepare(client: &Client) -> Result<Self, Error> {
        let (raise, keep) = pipelined(
            client.prepare_typed(RAISE_MARK, &CHECK_TYPES),
            client.prepare_typed(KEEP_MARK, &CHECK_TYPES),
        )
        .await;
        Ok(PreparedCheck {
            raise: raise?,
            keep: keep?,
        })
    }
}
