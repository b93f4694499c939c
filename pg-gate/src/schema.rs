//! [`FENCED_SQL`]: the SQL recipe (`sql/fenced.sql`), and [`install`], which runs it.

use fenced_gate::Error;

use crate::sqlerror::storage_error;

/// `sql/fenced.sql`: the `fenced_marks` table, `fenced_check(resource, token)` and the
/// `fenced_guard(table, resource_column, token_column)` trigger helper. Idempotent; its
/// header documents the errors, the isolation levels and durability.
pub const FENCED_SQL: &str = include_str!("../sql/fenced.sql");

/// Installs [`FENCED_SQL`] in the connected database. Safe to run again and from several
/// clients at once: it is one implicit transaction (one simple-query batch) that takes an
/// advisory lock first.
pub async fn install(client: &tokio_postgres::Client) -> Result<(), Error> {
    client
        .batch_execute(FENCED_SQL)
        .await
        .map_err(storage_error("installing fenced.sql"))?;
    Ok(())
}
