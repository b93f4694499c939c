//! The storage gate in PostgreSQL (CONTRACT S5): the fencing check and the caller's own
//! writes in one transaction, so they commit together or not at all.
//!
//! Most data a zombie lock holder can corrupt lives in a relational database. This crate
//! puts the gate's check into PostgreSQL itself: a `fenced_marks` table keeps, per
//! resource, the highest fencing token seen, and the check raises the mark or refuses a
//! stale token. The check locks the resource's mark row until the transaction ends, so a
//! newer holder waits for an older one's transaction, and an older holder that comes
//! after a newer one's commit is refused before it writes anything. No serializable retry
//! loop is needed. From Rust the check goes out pipelined with `BEGIN` (one round
//! trip); from SQL it is `fenced_check(resource, token)`, which refuses with SQLSTATE
//! [`STALE_SQLSTATE`].
//!
//! ```no_run
//! use fenced_gate_postgres::{install, GuardedClient};
//! use fenced_types::{FencingToken, LockName};
//!
//! # async fn example(client: tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
//! install(&client).await?; // once per database; idempotent
//! let mut client = GuardedClient::new(client).await?; // prepares the check on this connection
//! let orders = LockName::new("orders")?;
//! let token = FencingToken::new(34)?; // from the lock grant
//! let tx = client.begin(&orders, token).await?; // StaleToken if a newer holder was here
//! tx.execute("UPDATE orders SET status = 'paid' WHERE id = $1", &[&1i32]).await?;
//! tx.commit().await?; // the mark and the update, together
//! # Ok(())
//! # }
//! ```
//!
//! [`GuardedClient::begin_executing`] also sends the transaction's first statement in
//! the same round trip. [`begin_guarded`] opens the same transaction on a plain
//! `tokio_postgres::Client`, the check a call of `fenced_check`.
//!
//! Services in other languages use the same check from plain SQL: install
//! [`FENCED_SQL`] (`sql/fenced.sql`, documented there) and call `fenced_check` first in
//! each transaction.
//!
//! # Layout
//! - [`schema`]: [`FENCED_SQL`] (the SQL recipe) and [`install`], which runs it.
//! - [`guarded`]: [`GuardedTransaction`], the caller's own statements behind the check
//!   (async, tokio-postgres), and [`begin_guarded`], which opens one on a plain client.
//! - [`guarded_client`]: [`GuardedClient`], a connection with the check prepared on it.
//! - [`check`]: the check as one SQL statement (an upsert of the mark row; `fenced_check`'s
//!   error on a refusal), prepared or not.
//! - [`pipeline`]: two requests in one round trip; a request sent from `Drop`.
//! - [`backend`]: [`PostgresBackend`], a `fenced_gate::Backend` (a guarded key/value table)
//!   for the gate's [`fenced_gate::Gate`] and its conformance suite.
//! - [`pool`]: the backend's small bounded pool of blocking connections.
//! - [`sqlerror`]: PostgreSQL errors to the gate's errors, with their evidence.
#![deny(missing_docs)]

pub mod backend;
pub mod check;
pub mod guarded;
pub mod guarded_client;
pub mod pipeline;
pub mod pool;
pub mod schema;
pub mod sqlerror;

pub use backend::PostgresBackend;
pub use guarded::{begin_guarded, GuardedTransaction};
pub use guarded_client::GuardedClient;
pub use schema::{install, FENCED_SQL};
pub use sqlerror::{storage_error, STALE_SQLSTATE};
