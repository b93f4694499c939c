//! An administrator ending a holding: [`Client::revoke_lease`] (the whole lease that holds a
//! lock) and [`Client::force_release`] (the lock alone), through the server's
//! `AdminService`. The lock goes on to its next waiter with a new token; the old holder's
//! writes are turned away at the gate once the new holder writes or fences, and its SDK
//! learns at its next renewal that the lease is gone.

use fenced_proto::v1::admin_service_client::AdminServiceClient;
use fenced_proto::v1::{RevokeRequest, RevokeResponse};
use fenced_types::{FencingToken, LockName};

use crate::client::Client;
use crate::error::Error;
use crate::route::Resend;

/// The holding a revocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Its token.
    pub token: FencingToken,
    /// The first 8 hex digits of its lease id.
    pub lease_prefix: String,
}

impl Client {
    /// Ends the whole lease that holds `lock` (held with `token`, if given: a newer holding
    /// is then left alone, and the call fails with [`Error::FailedPrecondition`]). Sent once
    /// (again only after a not-leader refusal, which applied nothing).
    pub async fn revoke_lease(
        &self,
        lock: &str,
        token: Option<FencingToken>,
    ) -> Result<Revoked, Error> {
        self.revoke(lock, token, true).await
    }

    /// Releases `lock` alone from the lease that holds it (held with `token`, if given) and
    /// hands it on; the lease keeps its other locks.
    pub async fn force_release(
        &self,
        lock: &str,
        token: Option<FencingToken>,
    ) -> Result<Revoked, Error> {
        self.revoke(lock, token, false).await
    }

    async fn revoke(
        &self,
        lock: &str,
        token: Option<FencingToken>,
        whole_lease: bool,
    ) -> Result<Revoked, Error> {
        let request = RevokeRequest {
            lock: LockName::new(lock)?.to_string(),
            token: token.map_or(0, FencingToken::get),
        };
        let shared = self.shared();
        let answer: RevokeResponse = shared
            .route
            .call_on(
                if whole_lease {
                    "revoke lease"
                } else {
                    "force release"
                },
                shared.config.request_timeout,
                Resend::IfUnsent,
                |channel| {
                    let request = request.clone();
                    async move {
                        let mut rpc = AdminServiceClient::new(channel);
                        let answer = if whole_lease {
                            rpc.revoke_lease(request).await
                        } else {
                            rpc.force_release(request).await
                        };
                        answer.map(tonic::Response::into_inner)
                    }
                },
            )
            .await?;
        Ok(Revoked {
            token: FencingToken::new(answer.token).map_err(|e| Error::Protocol {
                what: format!("a revocation answered token {}: {e}", answer.token),
            })?,
            lease_prefix: answer.lease_prefix,
        })
    }
}
