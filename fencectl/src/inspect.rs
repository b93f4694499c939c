//! `list` (every page), `describe` and `check`, through the SDK.

use fenced_client::{Client, FencingToken, TokenCheck};

use crate::error::Error;
use crate::output::LockRow;

/// Every lock under `prefix` that is held or awaited, in name order, following the
/// server's cursor through all pages.
pub async fn list(client: &Client, prefix: &str) -> Result<Vec<LockRow>, Error> {
    Ok(client
        .list(prefix)
        .await?
        .into_iter()
        .map(LockRow::from)
        .collect())
}

/// One lock.
pub async fn describe(client: &Client, lock: &str) -> Result<LockRow, Error> {
    Ok(client.describe(lock).await?.into())
}

/// Whether `token` is the live holder's token of `lock`.
pub async fn check(client: &Client, lock: &str, token: FencingToken) -> Result<TokenCheck, Error> {
    Ok(client.check_token(lock, token).await?)
}
