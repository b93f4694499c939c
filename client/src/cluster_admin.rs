//! A cluster's members through [`Client`]: [`Client::members`], [`Client::add_member`] and
//! [`Client::remove_member`] on the `fenced.v1.ClusterService`, following the leader like
//! every other call. Listing is a read (sent again after a failure); a change is sent
//! again only after a not-leader refusal or if it never left, since a change that reached
//! the leader may have been made.

use fenced_proto::v1::cluster_service_client::ClusterServiceClient;
use fenced_proto::v1::{AddMemberRequest, MembersRequest, MembersResponse, RemoveMemberRequest};

use crate::client::Client;
use crate::error::Error;
use crate::route::Resend;

/// One member of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// Where its peers reach it (`host:port`).
    pub raft_addr: String,
    /// Where clients reach it (`host:port`).
    pub client_addr: String,
    /// Whether it votes (false: a learner, catching up).
    pub voter: bool,
}

/// A cluster's members, and its leader as the answering member knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// Every member, by id.
    pub members: Vec<Member>,
    /// The leader's id, if known.
    pub leader: Option<u64>,
}

impl From<MembersResponse> for Members {
    fn from(response: MembersResponse) -> Members {
        Members {
            members: response
                .members
                .into_iter()
                .map(|member| Member {
                    id: member.id,
                    raft_addr: member.raft_addr,
                    client_addr: member.client_addr,
                    voter: member.voter,
                })
                .collect(),
            leader: (response.leader_id != 0).then_some(response.leader_id),
        }
    }
}

impl Client {
    /// The cluster's members, as the leader knows them. A single node answers
    /// [`Error::Server`] with `UNIMPLEMENTED`.
    pub async fn members(&self) -> Result<Members, Error> {
        self.cluster_call("members", Resend::Always, |mut rpc| async move {
            rpc.members(MembersRequest {}).await
        })
        .await
    }

    /// Adds member `id` (reached by its peers at `raft_addr`, by clients at
    /// `client_addr`; it must run, started without `--members`): it catches up as a
    /// learner, then votes. Answers once committed; waits up to a minute for the catch-up,
    /// so give this call that long.
    pub async fn add_member(
        &self,
        id: u64,
        raft_addr: &str,
        client_addr: &str,
    ) -> Result<Members, Error> {
        let request = AddMemberRequest {
            id,
            raft_addr: raft_addr.to_string(),
            client_addr: client_addr.to_string(),
        };
        self.cluster_call("add member", Resend::IfUnsent, |mut rpc| {
            let request = request.clone();
            async move { rpc.add_member(request).await }
        })
        .await
    }

    /// Removes member `id`. Answers once committed.
    pub async fn remove_member(&self, id: u64) -> Result<Members, Error> {
        self.cluster_call("remove member", Resend::IfUnsent, |mut rpc| async move {
            rpc.remove_member(RemoveMemberRequest { id }).await
        })
        .await
    }

    /// One `ClusterService` call on the leader, within a minute per attempt (an added
    /// member's catch-up takes up to that).
    async fn cluster_call<F, Fut>(
        &self,
        what: &'static str,
        resend: Resend,
        mut send: F,
    ) -> Result<Members, Error>
    where
        F: FnMut(ClusterServiceClient<crate::credentials::Authed>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<MembersResponse>, tonic::Status>>,
    {
        let limit = std::time::Duration::from_secs(60) + self.shared().config.request_timeout;
        self.shared()
            .route
            .call_on(what, limit, resend, |channel| {
                let call = send(ClusterServiceClient::new(channel));
                async move { call.await.map(|response| response.into_inner().into()) }
            })
            .await
    }
}
