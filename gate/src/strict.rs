//! Strict mode: before accepting a write, ask the lock server whether the token is still
//! the live holder's.
//!
//! # Which mode to choose
//! - **Mark only** ([`crate::Gate`] alone, the default) is what CONTRACT S5 needs: no write
//!   below the highest token seen gets through, with no extra round trip and no dependency
//!   on the lock server being up. Its one window: a holder whose lease has expired can
//!   still write until a newer holder writes or fences the resource. Close it by having
//!   every new holder call `fence` before it starts work (the SDK's job).
//! - **Strict** ([`Strict`]) also refuses a token that is no longer live even before any
//!   newer holder has touched the resource. It costs one `CheckToken` call per write and
//!   makes writes fail (not succeed unsafely) while the lock server is unreachable. It
//!   narrows the window but cannot close it alone (the lease may expire between the check
//!   and the write), which is why the mark is still checked after it. Choose it when a
//!   write by an expired holder is harmful even if no one else has written yet and the
//!   extra latency is affordable.

use std::future::Future;

use fenced_types::{FencingToken, LockName};

use crate::backend::Backend;
use crate::error::Error;
use crate::gate::Gate;
use crate::op::{Accepted, WriteOp};

/// What the lock server says about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// True only if a live lease holds the lock with exactly this token.
    pub current: bool,
    /// The live holder's token; `None` when the lock is free.
    pub live_token: Option<FencingToken>,
}

/// Asks a lock server whether a token is the live holder's. A trait so the gate needs no
/// RPC framework; `grpc::LockServiceChecker` (feature `tonic`) is the implementation over
/// fenced's `CheckToken`.
pub trait TokenChecker: Send + Sync {
    /// Whether `token` is the live token of `lock`. `Err` means the server could not be
    /// asked (the caller then refuses to write).
    fn check(
        &self,
        lock: &LockName,
        token: FencingToken,
    ) -> impl Future<Output = Result<Liveness, String>> + Send;
}

/// A gate in strict mode: every write and fence is first checked with a [`TokenChecker`]
/// (the resource name is the lock name), then goes through the gate's mark check as usual.
#[derive(Debug, Clone)]
pub struct Strict<B, C> {
    /// The gate (mark check and storage).
    gate: Gate<B>,
    /// The lock server.
    checker: C,
}

impl<B: Backend, C: TokenChecker> Strict<B, C> {
    /// Strict mode over a gate.
    pub fn new(gate: Gate<B>, checker: C) -> Self {
        Strict { gate, checker }
    }

    /// The gate underneath (reads go straight to it).
    pub fn gate(&self) -> &Gate<B> {
        &self.gate
    }

    /// Asks the lock server only: `Ok` if `token` is the live holder's token of `resource`.
    ///
    /// An async service with a blocking backend calls this, then runs
    /// [`Gate::write`] on a blocking thread.
    pub async fn admit(&self, resource: &LockName, token: FencingToken) -> Result<(), Error> {
        let liveness = self
            .checker
            .check(resource, token)
            .await
            .map_err(Error::CheckUnavailable)?;
        if liveness.current {
            Ok(())
        } else {
            Err(Error::NotLiveHolder {
                resource: resource.clone(),
                presented: token,
                live: liveness.live_token,
            })
        }
    }

    /// Checks the input, asks the lock server, then writes through the gate. The backend
    /// call runs on the calling task: with a disk backend prefer [`Strict::admit`] + a
    /// blocking thread.
    pub async fn write(
        &self,
        resource: &LockName,
        token: FencingToken,
        op: &WriteOp,
    ) -> Result<Accepted, Error> {
        self.gate.check_op(op)?;
        self.admit(resource, token).await?;
        self.gate.write(resource, token, op)
    }

    /// Asks the lock server, then fences through the gate.
    pub async fn fence(
        &self,
        resource: &LockName,
        token: FencingToken,
    ) -> Result<FencingToken, Error> {
        self.admit(resource, token).await?;
        self.gate.fence(resource, token)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::MemoryBackend;

    /// A lock server that knows one live token per lock.
    struct FakeServer(Mutex<Option<FencingToken>>);

    impl TokenChecker for FakeServer {
        async fn check(&self, _lock: &LockName, token: FencingToken) -> Result<Liveness, String> {
            let live = *self.0.lock().unwrap();
            Ok(Liveness {
                current: live == Some(token),
                live_token: live,
            })
        }
    }

    struct Down;

    impl TokenChecker for Down {
        async fn check(&self, _: &LockName, _: FencingToken) -> Result<Liveness, String> {
            Err("connection refused".into())
        }
    }

    fn t(v: u64) -> FencingToken {
        FencingToken::new(v).unwrap()
    }

    // checks: S5
    #[tokio::test]
    async fn refuses_an_expired_holder_before_anyone_else_wrote() {
        let orders = LockName::new("orders").unwrap();
        let strict = Strict::new(
            Gate::new(MemoryBackend::new()),
            FakeServer(Mutex::new(Some(t(5)))),
        );
        strict
            .write(&orders, t(5), &WriteOp::put("k", "v5"))
            .await
            .unwrap();
        // The lease of token 5 expires; nobody holds the lock yet.
        *strict.checker.0.lock().unwrap() = None;
        let refused = strict
            .write(&orders, t(5), &WriteOp::put("k", "late"))
            .await;
        assert_eq!(
            refused,
            Err(Error::NotLiveHolder {
                resource: orders.clone(),
                presented: t(5),
                live: None
            })
        );
        let stored = strict.gate().read(&orders, b"k").unwrap().unwrap();
        assert_eq!(stored.value, b"v5", "the refused write changed nothing");
    }

    #[tokio::test]
    async fn an_unreachable_server_refuses_and_changes_nothing() {
        let orders = LockName::new("orders").unwrap();
        let strict = Strict::new(Gate::new(MemoryBackend::new()), Down);
        let err = strict
            .write(&orders, t(1), &WriteOp::put("k", "v"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CheckUnavailable(_)));
        assert!(!err.is_refusal());
        assert_eq!(strict.gate().mark(&orders).unwrap(), None);
        assert!(matches!(
            strict.fence(&orders, t(1)).await,
            Err(Error::CheckUnavailable(_))
        ));
    }
}
