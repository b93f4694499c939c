//! The mark check a guarded transaction starts with, as one statement: [`RAISE_MARK`]
//! prepared once per connection, or [`CALL_FENCED_CHECK`] sent with typed parameters.
//!
//! [`RAISE_MARK`] does what `fenced.sql`'s `fenced_check` does (on the same
//! `fenced_marks` rows, so Rust and SQL callers fence each other), without a PL/pgSQL
//! call on the accepted path, which is the hot one; a refusal calls `fenced_check` for its
//! error. Either way a refused check aborts the transaction in the server, as a SQL
//! caller's does, so any statement sent behind it (pipelined) is refused too.
//!
//! Unprepared, the upsert would be parsed and planned on every call, which costs more
//! than calling `fenced_check`, whose statements PL/pgSQL plans once per session
//! (BENCHMARKS.md, "The cost of the PostgreSQL gate"): hence two statements.

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Error, Statement};

/// Inserts the mark row with the presented token, or raises an existing mark to it if the
/// mark is not above it, and returns the new mark. A mark above the token makes the upsert
/// return no row, and then `coalesce` evaluates its second argument, `fenced_check`, which
/// finds the same row above the token and raises SQLSTATE ZF001 with the current mark in
/// its DETAIL (`coalesce` evaluates only the arguments it needs: PostgreSQL's
/// documentation of it).
///
/// Locking: PostgreSQL's `INSERT` documentation says "only rows for which this expression
/// returns true will be updated, although all rows will be locked when the ON CONFLICT DO
/// UPDATE action is taken". An accepted token's mark row stays locked until the
/// transaction ends, so a newer holder waits for it; a refused token's row is locked
/// while `fenced_check` reads the mark that refused it, and the refusal's error then
/// aborts the transaction, which releases the lock. Under READ COMMITTED a check that
/// waited for a newer holder's transaction evaluates the `WHERE` against the mark that
/// holder committed.
pub const RAISE_MARK: &str = "WITH raised AS ( \
     INSERT INTO fenced_marks AS m (resource, token) VALUES ($1, $2) \
     ON CONFLICT (resource) DO UPDATE SET token = EXCLUDED.token \
     WHERE m.token <= EXCLUDED.token \
     RETURNING m.token) \
     SELECT coalesce((SELECT token FROM raised), fenced_check($1, $2))";

/// The parameter types of [`RAISE_MARK`] and [`CALL_FENCED_CHECK`]: the resource, the
/// presented token.
pub const CHECK_TYPES: [Type; 2] = [Type::TEXT, Type::INT8];

/// `fenced.sql`'s check as one call: the same answers as [`RAISE_MARK`] (the new mark,
/// or ZF001), cheaper than [`RAISE_MARK`] when the statement is not prepared.
pub const CALL_FENCED_CHECK: &str = "SELECT fenced_check($1, $2)";

/// Which statement the check is, and how it reaches the server.
#[derive(Clone, Copy)]
pub enum CheckStatement<'s> {
    /// [`RAISE_MARK`] prepared on this connection ([`PreparedCheck`]): bound and
    /// executed only.
    Prepared(&'s PreparedCheck),
    /// [`CALL_FENCED_CHECK`] sent as text with typed parameters: one request, no
    /// separate prepare round trip.
    Unprepared,
}

/// [`RAISE_MARK`] prepared on one connection; valid only on it.
pub struct PreparedCheck {
    /// The prepared statement.
    raise: Statement,
}

impl PreparedCheck {
    /// [`RAISE_MARK`], prepared.
    pub fn statement(&self) -> &Statement {
        &self.raise
    }

    /// Prepares [`RAISE_MARK`] on `client` (one round trip). `fenced.sql` must be
    /// installed ([`crate::install`]).
    pub async fn prepare(client: &Client) -> Result<Self, Error> {
        Ok(PreparedCheck {
            raise: client.prepare_typed(RAISE_MARK, &CHECK_TYPES).await?,
        })
    }
}
