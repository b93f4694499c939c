//! Reading the lock table: [`Client::describe`], [`Client::list`] and
//! [`Client::list_page`], [`Client::check_token`], [`Client::watch`] and
//! [`Client::watch_prefix`] (and their `_from` forms, which start at a revision). None of
//! these take or keep a lease.

use std::future::Future;
use std::time::Duration;

use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_proto::v1::{CheckTokenRequest, DescribeRequest, ListRequest, WatchEvent, WatchRequest};
use fenced_types::{FencingToken, LockName};
use tonic::Streaming;

use crate::client::{Client, Holder, LockInfo, LockWatch};
use crate::credentials::Authed;
use crate::error::Error;
use crate::route::Resend;

/// One page of [`Client::list_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// The held or awaited locks of this page, in name order. A page may hold fewer locks
    /// than asked for (even none) while more follow.
    pub locks: Vec<LockInfo>,
    /// Where the next page starts, to pass to the next call; `None` on the last page.
    pub next_cursor: Option<String>,
    /// The revision of the last event this page reflects: [`Client::watch_prefix_from`]
    /// `revision + 1` misses no change made after it.
    pub revision: u64,
}

/// What the server says of a token ([`Client::check_token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCheck {
    /// Whether a live lease holds the lock with exactly this token.
    pub current: bool,
    /// The live holder's token; `None` when the lock is free.
    pub current_token: Option<FencingToken>,
}

impl Client {
    /// Who holds a lock, with which token, and how many wait.
    pub async fn describe(&self, lock: &str) -> Result<LockInfo, Error> {
        let name = LockName::new(lock)?;
        let request = DescribeRequest {
            lock: name.to_string(),
        };
        let info = self
            .read("describe", |mut rpc| {
                let request = request.clone();
                async move { rpc.describe(request).await }
            })
            .await?;
        lock_info(info)
    }

    /// One page of the held or awaited locks whose names start with `prefix` (empty: all),
    /// in name order, starting after `cursor` (`None`: at the first). `page_size` 0, or
    /// more than the server's maximum, asks for the server's maximum.
    pub async fn list_page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<ListPage, Error> {
        let request = ListRequest {
            prefix: prefix.to_string(),
            page_size,
            cursor: cursor.unwrap_or_default().to_string(),
        };
        let page = self
            .read("list", |mut rpc| {
                let request = request.clone();
                async move { rpc.list(request).await }
            })
            .await?;
        let locks = page
            .locks
            .into_iter()
            .map(lock_info)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = (!page.next_cursor.is_empty()).then_some(page.next_cursor);
        if next_cursor.is_some() && next_cursor.as_deref() == cursor {
            return Err(Error::Protocol {
                what: format!("list answered the cursor {cursor:?} with itself"),
            });
        }
        Ok(ListPage {
            locks,
            next_cursor,
            revision: page.revision,
        })
    }

    /// Every held or awaited lock whose name starts with `prefix` (empty: all), in name
    /// order, following the server's pages to the end. The answer holds the whole list in
    /// memory; [`Client::list_page`] reads it a page at a time.
    pub async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>, Error> {
        let mut locks = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.list_page(prefix, cursor.as_deref(), 0).await?;
            locks.extend(page.locks);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(locks),
            }
        }
    }

    /// Whether `token` is the live holder's token of `lock`: the strict check for a
    /// storage service that keeps no token mark of its own.
    pub async fn check_token(&self, lock: &str, token: FencingToken) -> Result<TokenCheck, Error> {
        let name = LockName::new(lock)?;
        let request = CheckTokenRequest {
            lock: name.to_string(),
            token: token.get(),
        };
        let reply = self
            .read("check token", |mut rpc| {
                let request = request.clone();
                async move { rpc.check_token(request).await }
            })
            .await?;
        let current_token = match reply.current_token {
            0 => None,
            n => Some(FencingToken::new(n).map_err(|e| Error::Protocol {
                what: format!("check token answered with current token: {e}"),
            })?),
        };
        if reply.current && current_token != Some(token) {
            return Err(Error::Protocol {
                what: format!(
                    "check token called {token} current while the current token is {:?}",
                    reply.current_token
                ),
            });
        }
        Ok(TokenCheck {
            current: reply.current,
            current_token,
        })
    }

    /// Streams every acquire, release and expiry of one lock, from now on. The stream
    /// resumes by itself after a failure or a failover ([`LockWatch`]).
    pub async fn watch(&self, lock: &str) -> Result<LockWatch, Error> {
        self.watch_from(lock, 0).await
    }

    /// [`Client::watch`] starting with the event of `revision` (0: from now), as a
    /// [`LockEvent::revision`](crate::LockEvent) or [`ListPage::revision`] + 1 gives it.
    /// [`Error::WatchCompacted`] when the member no longer keeps the events from there.
    pub async fn watch_from(&self, lock: &str, revision: u64) -> Result<LockWatch, Error> {
        let name = LockName::new(lock)?;
        LockWatch::open(
            self.clone(),
            WatchRequest {
                lock: name.to_string(),
                prefix: String::new(),
                start_revision: revision,
            },
        )
        .await
    }

    /// Streams every acquire, release and expiry of every lock whose name starts with
    /// `prefix` (empty: all locks), from now on, resuming by itself as [`Client::watch`].
    pub async fn watch_prefix(&self, prefix: &str) -> Result<LockWatch, Error> {
        self.watch_prefix_from(prefix, 0).await
    }

    /// [`Client::watch_prefix`] starting with the event of `revision` (0: from now).
    pub async fn watch_prefix_from(&self, prefix: &str, revision: u64) -> Result<LockWatch, Error> {
        LockWatch::open(
            self.clone(),
            WatchRequest {
                lock: String::new(),
                prefix: prefix.to_string(),
                start_revision: revision,
            },
        )
        .await
    }

    /// Opens one watch stream within the request timeout, where the route points (any
    /// member serves watches; the route follows the leader, so that is usually where it
    /// opens).
    pub(crate) async fn open_watch_stream(
        &self,
        request: WatchRequest,
    ) -> Result<Streaming<WatchEvent>, Error> {
        self.read("watch", |mut rpc| {
            let request = request.clone();
            async move { rpc.watch(request).await }
        })
        .await
    }

    /// Runs one read within the request timeout per attempt, on the leader: reads change
    /// nothing, so they are sent again after a failure, where the route then points
    /// ([`Route`](crate::route::Route)).
    async fn read<T, F, Fut>(&self, what: &'static str, mut send: F) -> Result<T, Error>
    where
        F: FnMut(LockServiceClient<Authed>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let shared = self.shared();
        shared
            .route
            .call(what, shared.config.request_timeout, Resend::Always, |rpc| {
                let call = send(rpc);
                async move { call.await.map(tonic::Response::into_inner) }
            })
            .await
    }
}

/// A lock as the server described it, checked.
fn lock_info(info: fenced_proto::v1::LockInfo) -> Result<LockInfo, Error> {
    let lock = LockName::new(info.lock).map_err(|e| Error::Protocol {
        what: format!("a lock description named an invalid lock: {e}"),
    })?;
    let holder = if info.held {
        Some(Holder {
            name: info.holder,
            token: FencingToken::new(info.token).map_err(|e| Error::Protocol {
                what: format!("a held lock was described with token: {e}"),
            })?,
            remaining: Duration::from_millis(info.remaining_ms),
        })
    } else {
        None
    };
    Ok(LockInfo {
        lock,
        holder,
        waiters: info.waiters,
    })
}
