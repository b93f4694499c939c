//! A cluster as the lock server: its members on loopback ports chosen before they start
//! (the members list names them all), a [`Proxy`] in front of each member's raft port
//! (the list names the proxy, so a nemesis can cut a member's raft traffic), and how the
//! harness finds the member that leads.
//!
//! Each member is a [`Server`] with a fixed client address, its own data directory and
//! the same flags on every start; a member restarted on a data directory that holds the
//! cluster ignores `--members` and rejoins from its log.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fenced_proto::v1 as pb;
use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_tests::proxy::Proxy;
use tonic::transport::Endpoint;

use crate::history::Recorder;
use crate::system::{HarnessError, Server};

/// How long the harness waits for one member's answer when it looks for the leader: a
/// stopped member never answers.
const ASK_TIMEOUT: Duration = Duration::from_millis(400);

/// The history's target name of member `index` (0-based): `fenced-1`, `fenced-2`, ...
pub fn member_target(index: usize) -> String {
    format!("{}-{}", crate::check::model::LOCK_SERVER, index + 1)
}

/// The history's target name of the link into member `index`'s raft port:
/// `raft-fenced-1`, ...
pub fn raft_link_target(index: usize) -> String {
    format!("raft-{}", member_target(index))
}

/// A free loopback address (free when returned; the member binds it soon), below the
/// ephemeral port range, so that no other connection can take it while its member is
/// down and the member's restart finds it free.
fn free_addr() -> Result<SocketAddr, HarnessError> {
    Ok(fenced_tests::ports::restartable_addr())
}

/// Starts `size` members of a new cluster under `dir` (`fenced-1/`, ...), each with
/// `flags` besides the cluster's own, and a proxy in front of each raft port. Returns the
/// members in id order and their raft proxies.
pub async fn start(
    size: usize,
    program: &Path,
    dir: &Path,
    flags: &[String],
    show_logs: bool,
    recorder: &Recorder,
) -> Result<(Vec<Server>, Vec<Proxy>), HarnessError> {
    let mut raft = Vec::new();
    let mut clients = Vec::new();
    let mut proxies = Vec::new();
    for _ in 0..size {
        let raft_addr = free_addr()?;
        raft.push(raft_addr);
        clients.push(free_addr()?);
        proxies.push(Proxy::start(raft_addr).await);
    }
    let members_list = (0..size)
        .map(|i| format!("{}={}/{}", i + 1, proxies[i].addr(), clients[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Vec::new();
    for i in 0..size {
        let mut member_flags = vec![
            "--node-id".to_string(),
            (i + 1).to_string(),
            "--raft-listen".to_string(),
            raft[i].to_string(),
            "--members".to_string(),
            members_list.clone(),
        ];
        member_flags.extend(flags.iter().cloned());
        let target = member_target(i);
        let mut member = Server::on_addr(
            &target,
            program,
            dir.join(&target),
            clients[i].to_string(),
            member_flags,
            show_logs,
        );
        member.restart(recorder).await?;
        members.push(member);
    }
    Ok((members, proxies))
}

/// The member (index) that leads now among `endpoints` (`None` for one that is down):
/// the one that answers a `List` (the others answer not-leader, or nothing while
/// stopped). `None` when none does right now (an election is under way, or no quorum).
pub async fn leader(endpoints: &[Option<String>]) -> Option<usize> {
    for (index, endpoint) in endpoints.iter().enumerate() {
        let Some(endpoint) = endpoint else { continue };
        let Ok(endpoint) = Endpoint::from_shared(endpoint.clone()) else {
            continue;
        };
        let channel = endpoint
            .connect_timeout(ASK_TIMEOUT)
            .timeout(ASK_TIMEOUT)
            .connect_lazy();
        let mut client = LockServiceClient::new(channel);
        let asked =
            tokio::time::timeout(ASK_TIMEOUT, client.list(pb::ListRequest::default())).await;
        if let Ok(Ok(_)) = asked {
            return Some(index);
        }
    }
    None
}
