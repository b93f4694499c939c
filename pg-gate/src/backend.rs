//! [`PostgresBackend`]: the gate's [`Backend`] on PostgreSQL, a guarded key/value table.
//!
//! Each commit is one READ COMMITTED transaction on a pooled connection: it makes sure the
//! resource's mark row exists (`INSERT .. ON CONFLICT DO NOTHING`), locks it
//! (`SELECT .. FOR UPDATE`), lets [`Admission::decide`] rule in Rust, and applies the
//! write and the new mark before committing. The row lock serialises commits on one
//! resource; commits on different resources run in parallel on separate connections.
//! The marks are `fenced.sql`'s `fenced_marks`, so SQL callers of `fenced_check` and this
//! backend fence each other.

use fenced_gate::rule::Decision;
use fenced_gate::{Accepted, Admission, Backend, StorageError, Stored, Verdict, WriteOp};
use fenced_types::{FencingToken, LockName};

use crate::pool::Pool;
use crate::schema::FENCED_SQL;
use crate::sqlerror::{from_bigint, storage_error, to_bigint};

/// The data table, next to `fenced.sql`'s marks. Idempotent.
pub const KV_SQL: &str = "
SELECT pg_advisory_xact_lock(hashtext('fenced_kv'));
CREATE TABLE IF NOT EXISTS fenced_kv (
    resource text NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    token bigint NOT NULL CHECK (token > 0),
    PRIMARY KEY (resource, key)
);";

/// Session settings every connection gets: an acknowledged commit is flushed to the WAL
/// (the [`Backend`] contract: `Accepted` only once durable), whatever the server's
/// default for `synchronous_commit`.
const SESSION_OPTIONS: &str = "-c synchronous_commit=on";

/// A [`Backend`] over PostgreSQL: `fenced_marks` for the marks, `fenced_kv` for the data.
///
/// Durability is PostgreSQL's: every commit waits for its WAL flush (`synchronous_commit
/// = on` is set per session); the server must run with `fsync = on` (its default).
///
/// Its calls block (the gate's [`Backend`] is synchronous, and the `postgres` crate runs
/// each connection on a runtime of its own): from async code, call the gate inside
/// `tokio::task::spawn_blocking`, or use [`crate::begin_guarded`].
pub struct PostgresBackend {
    /// The connections.
    pool: Pool,
}

impl PostgresBackend {
    /// The default pool size: enough connections for a busy service's concurrent writes.
    pub const DEFAULT_POOL_SIZE: usize = 16;

    /// Connects with a libpq-style connection string (`host=.. port=.. user=..
    /// dbname=..` or a `postgresql://` URL), without TLS, installs `fenced.sql` and the
    /// data table, and keeps at most `pool_size` connections.
    pub fn connect(params: &str, pool_size: usize) -> Result<Self, StorageError> {
        let mut config: postgres::Config = params
            .parse()
            .map_err(storage_error("parsing the connection string"))?;
        let options = match config.get_options() {
            Some(theirs) => format!("{theirs} {SESSION_OPTIONS}"),
            None => SESSION_OPTIONS.to_string(),
        };
        config.options(&options);
        config.application_name("fenced-gate-postgres");
        let backend = PostgresBackend {
            pool: Pool::new(config, pool_size),
        };
        {
            let mut conn = backend.pool.get()?;
            conn.client()
                .batch_execute(FENCED_SQL)
                .map_err(storage_error("installing fenced.sql"))?;
            conn.client()
                .batch_execute(KV_SQL)
                .map_err(storage_error("creating the fenced_kv table"))?;
        }
        Ok(backend)
    }

    /// The most connections it opens.
    pub fn pool_size(&self) -> usize {
        self.pool.size()
    }
}

impl Backend for PostgresBackend {
    fn commit(
        &self,
        resource: &LockName,
        token: FencingToken,
        op: Option<&WriteOp>,
        admission: Admission,
    ) -> Result<Verdict, StorageError> {
        let presented = to_bigint(token)?;
        let name = resource.as_str();
        let mut conn = self.pool.get()?;
        let mut tx = conn
            .client()
            .transaction()
            .map_err(storage_error("beginning a gate commit"))?;
        // A row to lock: a fresh resource gets one with the presented token (which is
        // what the rule admits for a resource without a mark).
        let created = tx
            .execute(
                "INSERT INTO fenced_marks (resource, token) VALUES ($1, $2) \
                 ON CONFLICT (resource) DO NOTHING",
                &[&name, &presented],
            )
            .map_err(storage_error("creating the mark row"))?;
        let mark = if created == 1 {
            None
        } else {
            let row = tx
                .query_one(
                    "SELECT token FROM fenced_marks WHERE resource = $1 FOR UPDATE",
                    &[&name],
                )
                .map_err(storage_error("locking the mark row"))?;
            let stored: i64 = row.try_get(0).map_err(storage_error("reading the mark"))?;
            Some(from_bigint(stored, "reading the mark")?)
        };
        let new_mark = match admission.decide(mark, token) {
            Decision::Refuse { current } => {
                tx.rollback()
                    .map_err(storage_error("rolling back a refused commit"))?;
                return Ok(Verdict::Stale { current });
            }
            Decision::Admit { new_mark } => new_mark,
        };
        if mark.is_some_and(|mark| mark != new_mark) {
            tx.execute(
                "UPDATE fenced_marks SET token = $2 WHERE resource = $1",
                &[&name, &to_bigint(new_mark)?],
            )
            .map_err(storage_error("raising the mark"))?;
        }
        let existed = match op {
            Some(WriteOp::Put { key, value }) => {
                let row = tx
                    .query_one(
                        "WITH old AS (SELECT 1 FROM fenced_kv WHERE resource = $1 AND key = $2), \
                         put AS (INSERT INTO fenced_kv (resource, key, value, token) \
                                 VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (resource, key) DO UPDATE \
                                 SET value = EXCLUDED.value, token = EXCLUDED.token) \
                         SELECT EXISTS (SELECT 1 FROM old)",
                        &[&name, &key.as_slice(), &value.as_slice(), &presented],
                    )
                    .map_err(storage_error("writing a value"))?;
                row.try_get(0)
                    .map_err(storage_error("reading whether the key existed"))?
            }
            Some(WriteOp::Delete { key }) => {
                tx.execute(
                    "DELETE FROM fenced_kv WHERE resource = $1 AND key = $2",
                    &[&name, &key.as_slice()],
                )
                .map_err(storage_error("deleting a value"))?
                    > 0
            }
            None => false,
        };
        tx.commit()
            .map_err(storage_error("committing a gate commit"))?;
        Ok(Verdict::Accepted(Accepted {
            mark: new_mark,
            existed,
        }))
    }

    fn read(&self, resource: &LockName, key: &[u8]) -> Result<Option<Stored>, StorageError> {
        let mut conn = self.pool.get()?;
        let row = conn
            .client()
            .query_opt(
                "SELECT value, token FROM fenced_kv WHERE resource = $1 AND key = $2",
                &[&resource.as_str(), &key],
            )
            .map_err(storage_error("reading a value"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let value: Vec<u8> = row.try_get(0).map_err(storage_error("reading a value"))?;
        let token: i64 = row
            .try_get(1)
            .map_err(storage_error("reading a value's token"))?;
        Ok(Some(Stored {
            value,
            token: from_bigint(token, "reading a value's token")?,
        }))
    }

    fn mark(&self, resource: &LockName) -> Result<Option<FencingToken>, StorageError> {
        let mut conn = self.pool.get()?;
        let row = conn
            .client()
            .query_opt(
                "SELECT token FROM fenced_marks WHERE resource = $1",
                &[&resource.as_str()],
            )
            .map_err(storage_error("reading the mark"))?;
        row.map(|row| {
            let token: i64 = row.try_get(0).map_err(storage_error("reading the mark"))?;
            from_bigint(token, "reading the mark")
        })
        .transpose()
    }

    /// Nothing to do: every commit already waited for its WAL flush.
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
