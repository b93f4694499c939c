//! The storage gate in PostgreSQL (CONTRACT S5): the fencing check and the caller's own
//! writes in one transaction, so they commit together or not at all.
//!
//! Most data a zombie lock holder can corrupt lives in a relational database. This crate
//! puts the gate's check into PostgreSQL itself: a `fenced_marks` table keeps, per
//! resource, the highest fencing token seen, and `fenced_check(resource, token)` raises the
//! mark or refuses a stale token with SQLSTATE [`STALE_SQLSTATE`]. The check's upsert
//! locks the resource's mark row until the transaction ends, so a newer holder waits for
//! an older one's transaction, and an older holder that comes after a newer one's commit
//! is refused before it writes anything. No serializable retry loop is needed.
//!
//! ```no_run
//! use fenced_gate_postgres::{begin_guarded, install};
//! use fenced_types::{FencingToken, LockName};
//!
//! # async fn example(client: &mut tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
//! install(client).await?; // once per database; idempotent
//! let orders = LockName::new("orders")?;
//! let token = FencingToken::new(34)?; // from the lock grant
//! let tx = begin_guarded(client, &orders, token).await?; // StaleToken if a newer holder was here
//! tx.execute("UPDATE orders SET status = 'paid' WHERE id = $1", &[&1i32]).await?;
//! tx.commit().await?; // the mark and the update, together
//! # Ok(())
//! # }
//! ```
//!
//! Services in other languages use the same check from plain SQL: install
//! [`FENCED_SQL`] (`sql/fenced.sql`, documented there) and call `fenced_check` first in
//! each transaction.
//!
//! # Layout
//! - [`schema`]: [`FENCED_SQL`] (the SQL recipe) and [`install`], which runs it.
//! - [`guarded`]: [`begin_guarded`] and [`GuardedTransaction`], the caller's own
//!   statements behind the check (async, tokio-postgres).
//! - [`backend`]: [`PostgresBackend`], a `fenced_gate::Backend` (a guarded key/value table)
//!   for the gate's [`fenced_gate::Gate`] and its conformance suite.
//! - [`pool`]: the backend's small bounded pool of blocking connections.
//! - [`sqlerror`]: PostgreSQL errors to the gate's errors, with their evidence.
#![deny(missing_docs)]

pub mod backend;
pub mod guarded;
pub mod pool;
pub mod schema;
pub mod sqlerror;

pub use backend::PostgresBackend;
pub use guarded::{begin_guarded, GuardedTransaction};
pub use schema::{install, FENCED_SQL};
pub use sqlerror::{storage_error, STALE_SQLSTATE};
