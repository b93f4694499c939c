//! `list` (every page), `describe` and `check`.

use fenced_client::Client;
use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_proto::v1::{CheckTokenRequest, ListRequest};
use tonic::transport::Channel;

use crate::error::Error;
use crate::output::LockRow;

/// Every lock under `prefix` that is held or awaited, in name order, following the
/// server's cursor through all pages.
pub async fn list(
    rpc: &mut LockServiceClient<Channel>,
    prefix: &str,
) -> Result<Vec<LockRow>, Error> {
    let mut rows = Vec::new();
    let mut cursor = String::new();
    loop {
        let request = ListRequest {
            prefix: prefix.to_string(),
            page_size: 0,
            cursor: cursor.clone(),
        };
        let page = rpc
            .list(request)
            .await
            .map_err(|status| Error::Rpc {
                what: "list",
                status: Box::new(status),
            })?
            .into_inner();
        rows.extend(page.locks.into_iter().map(LockRow::from));
        if page.next_cursor.is_empty() {
            return Ok(rows);
        }
        if page.next_cursor == cursor {
            return Err(Error::Protocol(format!(
                "list answered the cursor {cursor:?} with itself: it would never end"
            )));
        }
        cursor = page.next_cursor;
    }
}

/// One lock, through the SDK.
pub async fn describe(client: &Client, lock: &str) -> Result<LockRow, Error> {
    Ok(client.describe(lock).await?.into())
}

/// What the server says of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCheck {
    /// Whether a live lease holds the lock with exactly this token.
    pub current: bool,
    /// The live holder's token; 0 when the lock is free.
    pub current_token: u64,
}

/// Whether `token` is the live holder's token of `lock`.
pub async fn check(
    rpc: &mut LockServiceClient<Channel>,
    lock: &str,
    token: u64,
) -> Result<TokenCheck, Error> {
    let reply = rpc
        .check_token(CheckTokenRequest {
            lock: lock.to_string(),
            token,
        })
        .await
        .map_err(|status| Error::Rpc {
            what: "check",
            status: Box::new(status),
        })?
        .into_inner();
    Ok(TokenCheck {
        current: reply.current,
        current_token: reply.current_token,
    })
}
