//! [`Revocations`]: the gRPC `AdminService`, an administrator ending a holding: the whole
//! lease that holds a lock (`RevokeLease`) or the lock alone (`ForceRelease`).
//!
//! With a policy, the caller needs the `admin` permission on the lock
//! ([`crate::access`]); the refusal changes nothing.
//!
//! Both are one table command ([`Command::Revoke`]), applied by the engine that answers
//! (a single node's, or a cluster leader's) and answered once durable, like a release. The
//! lock goes on to its next waiter with a new token, so the old holder's writes are turned
//! away at the gate as soon as the new holder writes or fences (S5); its SDK learns at its
//! next renewal that the lease is gone (S7).

use std::sync::Arc;

use fenced_proto::v1 as pb;
use fenced_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use crate::access::Caller;
use crate::config::Config;
use crate::convert;
use crate::policy::{Permission, Policy};
use crate::serving::Serving;
use crate::table::{Command, Reply};

/// The `AdminService`. Cheap to clone.
#[derive(Clone)]
pub struct Revocations {
    /// Which engine answers.
    serving: Serving,
    /// The limits (lock names).
    config: Arc<Config>,
    /// Who may revoke what, if a policy is given.
    policy: Option<Arc<Policy>>,
}

impl Revocations {
    /// Revocations applied by whichever engine `serving` names.
    pub fn new(serving: Serving, config: Arc<Config>) -> Revocations {
        Revocations {
            serving,
            config,
            policy: None,
        }
    }

    /// Revocations that need the `admin` permission on the lock under `policy`.
    pub fn with_policy(mut self, policy: Option<Arc<Policy>>) -> Revocations {
        self.policy = policy;
        self
    }

    /// Ends the holding `request` names: the whole lease, or the lock alone.
    async fn revoke(
        &self,
        caller: Caller,
        request: pb::RevokeRequest,
        whole_lease: bool,
    ) -> Result<pb::RevokeResponse, Status> {
        let lock = convert::lock_name(&self.config, "lock", request.lock)?;
        caller.check(Permission::Admin, lock.as_str())?;
        let token = convert::optional_token(request.token);
        let engine = self.serving.engine()?;
        let executed = engine.execute(
            Command::Revoke {
                lock: lock.clone(),
                token,
                whole_lease,
            },
            None,
        )?;
        let reply = executed.reply?;
        engine.durable(executed.seq).await?;
        match reply {
            Reply::Revoked { lease, token } => {
                crate::audit::revoked(
                    caller.identity(),
                    caller.peer(),
                    lock.as_str(),
                    token.get(),
                    &lease.short(),
                    whole_lease,
                );
                tracing::warn!(%lock, token = token.get(), lease = %lease.short(), whole_lease, "an administrator revoked a holding");
                Ok(pb::RevokeResponse {
                    token: token.get(),
                    lease_prefix: lease.short(),
                })
            }
            other => Err(Status::internal(format!(
                "a revocation was answered {other:?}"
            ))),
        }
    }
}

#[tonic::async_trait]
impl AdminService for Revocations {
    async fn revoke_lease(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = Caller::from_extensions(request.extensions(), self.policy.as_ref());
        self.revoke(caller, request.into_inner(), true)
            .await
            .map(Response::new)
    }

    async fn force_release(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = Caller::from_extensions(request.extensions(), self.policy.as_ref());
        self.revoke(caller, request.into_inner(), false)
            .await
            .map(Response::new)
    }
}
