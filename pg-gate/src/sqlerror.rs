//! PostgreSQL errors to the gate's errors: a stale token to [`Error::StaleToken`] with both
//! tokens, everything else to a [`StorageError`] that carries the SQLSTATE and message.

use fenced_gate::{Error, StorageError};
use fenced_types::{FencingToken, LockName};

/// The SQLSTATE `fenced_check` raises for a stale token (`sql/fenced.sql` says why this
/// code). Its DETAIL is `{"resource": .., "presented": .., "current": ..}`.
pub const STALE_SQLSTATE: &str = "ZF001";

/// A closure for `map_err` that turns a driver error into a storage failure during
/// `during`, keeping the SQLSTATE, message and detail as evidence.
pub fn storage_error(during: &'static str) -> impl Fn(tokio_postgres::Error) -> StorageError {
    move |error| StorageError::new(during, evidence(&error))
}

/// The driver error as text: for a database error its SQLSTATE, message and detail
/// (the driver's `Display` says only "db error").
pub fn evidence(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" (detail: {detail})"));
            }
            if db.code().code() == "42883" || db.code().code() == "42P01" {
                text.push_str(" (is fenced.sql installed? see fenced_gate_postgres::install)");
            }
            text
        }
        None => error.to_string(),
    }
}

/// If `error` is `fenced_check`'s stale-token refusal, the gate's [`Error::StaleToken`]
/// with the mark from its DETAIL; `None` for any other error. A refusal whose DETAIL
/// cannot be read is a storage failure, with the DETAIL as evidence.
pub fn stale_token(
    error: &tokio_postgres::Error,
    resource: &LockName,
    presented: FencingToken,
) -> Option<Error> {
    let db = error.as_db_error()?;
    if db.code().code() != STALE_SQLSTATE {
        return None;
    }
    let detail = db.detail().unwrap_or_default();
    let current = serde_json::from_str::<serde_json::Value>(detail)
        .ok()
        .and_then(|json| json.get("current")?.as_u64())
        .and_then(|current| FencingToken::new(current).ok());
    Some(match current {
        Some(current) => Error::StaleToken {
            resource: resource.clone(),
            presented,
            current,
        },
        None => Error::Storage(StorageError::new(
            "reading fenced_check's stale-token detail",
            format!("{}: {:?}", db.message(), detail),
        )),
    })
}

/// A token as PostgreSQL's `bigint`. Tokens above `i64::MAX` (2^63 grants: never, in
/// practice) do not fit, and are a storage failure rather than a silent wrap.
pub fn to_bigint(token: FencingToken) -> Result<i64, StorageError> {
    i64::try_from(token.get()).map_err(|_| {
        StorageError::new(
            "converting a fencing token to bigint",
            format!("token {token} is above PostgreSQL's bigint range (2^63-1)"),
        )
    })
}

/// A stored `bigint` as a token; the schema's `CHECK (token > 0)` makes a failure here a
/// sign of a damaged or foreign table, reported with the value.
pub fn from_bigint(value: i64, during: &'static str) -> Result<FencingToken, StorageError> {
    u64::try_from(value)
        .ok()
        .and_then(|v| FencingToken::new(v).ok())
        .ok_or_else(|| StorageError::new(during, format!("stored token {value} is not positive")))
}
