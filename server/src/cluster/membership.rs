//! [`Membership`]: the `fenced.v1.ClusterService`, a cluster's members and changes to them
//! through openraft's membership API.
//!
//! Adding a member is two membership changes, as openraft intends: the new node joins as a
//! learner and is sent the log (or a snapshot) until it has caught up, then the voters
//! become the old voters plus it (openraft commits that through a joint configuration, so
//! no two majorities can decide at once). Removing one is a single change of the voters.
//! Both answer once the change is committed. A member that does not lead refuses a change
//! with the not-leader refusal, as it refuses lock calls.
//!
//! Under a policy file ([`crate::policy`]), every call of this service needs `admin` on
//! `*`: the members' addresses and changes to them concern every lock.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fenced_proto::v1 as pb;
use fenced_proto::v1::cluster_service_server::ClusterService;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{ChangeMembers, Raft};
use tonic::{Request, Response, Status};

use crate::access::Caller;
use crate::cluster::settings::is_host_port;
use crate::cluster::types::{ClusterNode, NodeId, TypeConfig};
use crate::convert::invalid;
use crate::policy::{Permission, Policy};
use crate::serving::Serving;

/// How long an added member has to catch up with the log before the change gives up.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a change waits for the previous one to be committed before it is refused as
/// in progress.
pub const IN_PROGRESS_PATIENCE: Duration = Duration::from_secs(10);

/// The cluster service of one member.
#[derive(Clone)]
pub struct Membership {
    /// This member's raft core.
    raft: Raft<TypeConfig>,
    /// For the not-leader refusal.
    serving: Serving,
    /// What each identity may do, when a policy file is given.
    policy: Option<Arc<Policy>>,
}

impl Membership {
    /// The service of the member whose raft core is `raft`.
    pub fn new(raft: Raft<TypeConfig>, serving: Serving) -> Membership {
        Membership {
            raft,
            serving,
            policy: None,
        }
    }

    /// Holds every call to `policy` (`None`: every authenticated caller may call).
    pub fn with_policy(mut self, policy: Option<Arc<Policy>>) -> Membership {
        self.policy = policy;
        self
    }

    /// `Ok` if the caller of `request` may administer the cluster.
    fn check_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        Caller::from_extensions(request.extensions(), self.policy.as_ref())
            .check_all(Permission::Admin)
    }

    /// The members as this member's last applied membership has them.
    fn members(&self) -> pb::MembersResponse {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| pb::Member {
                id: *id,
                raft_addr: node.raft_addr.clone(),
                client_addr: node.client_addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        pb::MembersResponse {
            members,
            leader_id: metrics.current_leader.unwrap_or(0),
        }
    }

    /// The voters now.
    fn voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// A failed membership write as a status: not-leader, a change already running, or
    /// what openraft said.
    fn refused(&self, error: RaftError<NodeId, ClientWriteError<NodeId, ClusterNode>>) -> Status {
        match error {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => self.serving.not_leader(),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(progress),
            )) => Status::failed_precondition(format!(
                "another membership change is in progress: {progress}; try again once it is committed"
            )),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(other)) => {
                Status::failed_precondition(format!("membership change refused: {other}"))
            }
            RaftError::Fatal(fatal) => {
                Status::unavailable(format!("this member's raft core stopped: {fatal}"))
            }
        }
    }
}

#[tonic::async_trait]
impl ClusterService for Membership {
    async fn members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        self.check_admin(&request)?;
        Ok(Response::new(Membership::members(self)))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        self.check_admin(&request)?;
        let request = request.into_inner();
        if request.id == 0 {
            return Err(invalid("id must be above zero".to_string()));
        }
        for (field, addr) in [
            ("raft_addr", &request.raft_addr),
            ("client_addr", &request.client_addr),
        ] {
            if !is_host_port(addr) {
                return Err(invalid(format!("{field} {addr:?} is not host:port")));
            }
        }
        let mut voters = self.voters();
        if voters.contains(&request.id) {
            return Err(Status::already_exists(format!(
                "node {} is a voter already",
                request.id
            )));
        }
        let node = ClusterNode {
            raft_addr: request.raft_addr,
            client_addr: request.client_addr,
        };
        let caught_up = tokio::time::timeout(
            CATCH_UP_TIMEOUT,
            while_in_progress(|| self.raft.add_learner(request.id, node.clone(), true)),
        )
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "node {} did not catch up with the log within {CATCH_UP_TIMEOUT:?}; it stays a learner (is it running, at that raft address?)",
                request.id
            ))
        })?;
        caught_up.map_err(|error| self.refused(error))?;
        voters.insert(request.id);
        while_in_progress(|| self.raft.change_membership(voters.clone(), false))
            .await
            .map_err(|error| self.refused(error))?;
        tracing::info!(node = request.id, "added a member");
        Ok(Response::new(Membership::members(self)))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        self.check_admin(&request)?;
        let id = request.into_inner().id;
        let known = Membership::members(self)
            .members
            .iter()
            .any(|member| member.id == id);
        if !known {
            return Err(Status::not_found(format!("node {id} is not a member")));
        }
        let mut voters = self.voters();
        let change = if voters.remove(&id) {
            if voters.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "node {id} is the last voter: a cluster needs one"
                )));
            }
            // Removed from the voters, and (retain: false) from the cluster.
            ChangeMembers::ReplaceAllVoters(voters)
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        while_in_progress(|| self.raft.change_membership(change.clone(), false))
            .await
            .map_err(|error| self.refused(error))?;
        tracing::info!(node = id, "removed a member");
        Ok(Response::new(Membership::members(self)))
    }
}

/// Runs a membership change, again while openraft refuses it because the previous
/// one is not committed yet (right after the cluster starts, its first membership is
/// such a change), for up to [`IN_PROGRESS_PATIENCE`].
pub async fn while_in_progress<F, Fut>(
    change: F,
) -> Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, ClusterNode>>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<
        Output = Result<
            ClientWriteResponse<TypeConfig>,
            RaftError<NodeId, ClientWriteError<NodeId, ClusterNode>>,
        >,
    >,
{
    let deadline = tokio::time::Instant::now() + IN_PROGRESS_PATIENCE;
    loop {
        match change().await {
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            ))) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}
