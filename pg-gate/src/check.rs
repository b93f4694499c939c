//! The mark check a guarded transaction starts with, in plain SQL, and the statements it
//! runs as: [`RAISE_MARK`] raises `resource`'s mark to the presented token and locks its
//! row; [`READ_MARK`] reads the mark that refused a stale token.
//!
//! It is the same check as `fenced.sql`'s `fenced_check` (the same `fenced_marks` rows, so
//! Rust and SQL callers fence each other), without the PL/pgSQL call, so that it can be a
//! statement prepared once per connection. A refused check does not abort the
//! transaction, as `fenced_check`'s error does: the caller of [`RAISE_MARK`] rolls back.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Error, Row, Statement};

/// Inserts the mark row with the presented token, or raises an existing mark to it if the
/// mark is not above it; returns the new mark, or no row when the mark is above the token
/// (stale). PostgreSQL's `INSERT` documentation: "only rows for which this expression
/// returns true will be updated, although all rows will be locked when the ON CONFLICT DO
/// UPDATE action is taken", so the mark row stays locked until the transaction ends in
/// both cases, and under READ COMMITTED a check that waited for a newer holder's
/// transaction evaluates the `WHERE` against the mark that holder committed.
pub const RAISE_MARK: &str = "INSERT INTO fenced_marks AS m (resource, token) VALUES ($1, $2) \
     ON CONFLICT (resource) DO UPDATE SET token = EXCLUDED.token \
     WHERE m.token <= EXCLUDED.token \
     RETURNING m.token";

/// [`RAISE_MARK`]'s parameter types: the resource, the presented token.
pub const RAISE_MARK_TYPES: [Type; 2] = [Type::TEXT, Type::INT8];

/// The resource's mark, read after [`RAISE_MARK`] refused a token, in the same
/// transaction: a new statement, so under READ COMMITTED it sees the newer holder's
/// committed mark that the refusal was evaluated against (a subquery of [`RAISE_MARK`]
/// would see its older snapshot).
pub const READ_MARK: &str = "SELECT token FROM fenced_marks WHERE resource = $1";

/// [`READ_MARK`]'s parameter type: the resource.
pub const READ_MARK_TYPES: [Type; 1] = [Type::TEXT];

/// How the check's statements reach the server.
#[derive(Clone, Copy)]
pub enum CheckStatements<'s> {
    /// Prepared on this connection ([`PreparedCheck`]): bind and execute only.
    Prepared(&'s PreparedCheck),
    /// Sent as text with typed parameters: parsed and planned on every call, still one
    /// request (no separate prepare round trip).
    Unprepared,
}

/// [`RAISE_MARK`] and [`READ_MARK`] prepared on one connection; valid only on it.
pub struct PreparedCheck {
    /// [`RAISE_MARK`].
    raise: Statement,
    /// [`READ_MARK`].
    read: Statement,
}

impl PreparedCheck {
    /// Prepares both statements on `client` (one round trip each). `fenced_marks` must
    /// exist ([`crate::install`]).
    pub async fn prepare(client: &Client) -> Result<Self, Error> {
        Ok(PreparedCheck {
            raise: client.prepare_typed(RAISE_MARK, &RAISE_MARK_TYPES).await?,
            read: client.prepare_typed(READ_MARK, &READ_MARK_TYPES).await?,
        })
    }
}

impl CheckStatements<'_> {
    /// Runs [`RAISE_MARK`]: the new mark's row, or `None` for a stale token.
    pub async fn raise(
        self,
        client: &Client,
        resource: &str,
        token: i64,
    ) -> Result<Option<Row>, Error> {
        match self {
            CheckStatements::Prepared(check) => {
                client
                    .query_opt(&check.raise, &[&resource as &(dyn ToSql + Sync), &token])
                    .await
            }
            CheckStatements::Unprepared => {
                client
                    .query_typed_opt(RAISE_MARK, &[(&resource, Type::TEXT), (&token, Type::INT8)])
                    .await
            }
        }
    }

    /// Runs [`READ_MARK`]: the mark's row, `None` if the resource has none.
    pub async fn read(self, client: &Client, resource: &str) -> Result<Option<Row>, Error> {
        match self {
            CheckStatements::Prepared(check) => client.query_opt(&check.read, &[&resource]).await,
            CheckStatements::Unprepared => {
                client
                    .query_typed_opt(READ_MARK, &[(&resource, Type::TEXT)])
                    .await
            }
        }
    }
}
