//! Changing a running cluster's members through `ClusterService`, on real `fenced`
//! processes: a fourth member added (it catches up, then votes), an old one removed, and
//! the cluster then survives the loss of another original member only because the new one
//! votes. Refusals: a change sent to a member that does not lead, an unknown member, a
//! malformed address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_proto::v1::cluster_service_client::ClusterServiceClient;
use fenced_proto::v1::{self as pb};
use fenced_tests::cluster::{connect_channel, not_leader, Router, TestCluster};
use tonic::Code;

/// How long one call may keep looking for the leader (an added member's catch-up
/// included).
const PATIENCE: Duration = Duration::from_secs(60);

async fn members(router: &mut Router) -> pb::MembersResponse {
    router
        .call_on(PATIENCE, |channel| async move {
            ClusterServiceClient::new(channel)
                .members(pb::MembersRequest {})
                .await
                .map(tonic::Response::into_inner)
        })
        .await
        .expect("the members")
}

fn voters(members: &pb::MembersResponse) -> Vec<u64> {
    members
        .members
        .iter()
        .filter(|member| member.voter)
        .map(|member| member.id)
        .collect()
}

async fn grant(router: &mut Router, lock: &str) -> pb::AcquireResponse {
    let request = fenced_tests::cluster::new_lease_acquire(lock, "membership-test", 30_000);
    router.acquire(PATIENCE, &request).await.expect("a grant")
}

// checks: S1, S2, S3, C1, C4
// A member added to a running cluster catches up and votes: after an original member is
// removed and another is killed, the two that are left (one of them the new one) are a
// quorum of three and go on granting, with the lock held before every change still held
// with its token, and tokens still going up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_member_votes_and_a_removed_one_no_longer_counts() {
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    let leader = cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    let held = grant(&mut router, "held").await;

    let (new_id, raft, client) = cluster.start_joining(&["--no-fdatasync"]);
    let add = pb::AddMemberRequest {
        id: new_id,
        raft_addr: raft.to_string(),
        client_addr: client.to_string(),
    };
    // Sent to a member that does not lead, it is refused, naming the leader.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let refused =
        ClusterServiceClient::new(connect_channel(&cluster.endpoint(follower)).await.unwrap())
            .add_member(add.clone())
            .await
            .unwrap_err();
    assert!(not_leader(&refused).is_some(), "{refused:?}");

    let added = router
        .call_on(PATIENCE, |channel| {
            let add = add.clone();
            async move {
                ClusterServiceClient::new(channel)
                    .add_member(add)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
        .expect("the member is added");
    assert_eq!(voters(&added), vec![1, 2, 3, new_id], "{added:?}");

    // Remove an original member that does not lead, then kill another one that does not
    // lead: the leader and the new member are two of three voters.
    let removed = (1..=3).find(|id| *id != leader).unwrap();
    let remove = pb::RemoveMemberRequest { id: removed as u64 };
    let after = router
        .call_on(PATIENCE, |channel| async move {
            ClusterServiceClient::new(channel)
                .remove_member(remove)
                .await
                .map(tonic::Response::into_inner)
        })
        .await
        .expect("the member is removed");
    assert!(!voters(&after).contains(&(removed as u64)), "{after:?}");
    assert_eq!(voters(&after).len(), 3, "{after:?}");
    cluster.member(removed).kill();
    let other = (1..=3).find(|id| *id != leader && *id != removed).unwrap();
    cluster.member(other).kill();

    let next = grant(&mut router, "after-changes").await;
    assert!(
        next.token > held.token,
        "{} after {}",
        next.token,
        held.token
    );
    let listed = members(&mut router).await;
    assert!(voters(&listed).contains(&new_id), "{listed:?}");

    // Refusals that change nothing.
    for (request, code) in [
        (
            pb::AddMemberRequest {
                id: 9,
                raft_addr: "no-port".to_string(),
                client_addr: "127.0.0.1:1".to_string(),
            },
            Code::InvalidArgument,
        ),
        (
            pb::AddMemberRequest {
                id: new_id,
                raft_addr: raft.to_string(),
                client_addr: client.to_string(),
            },
            Code::AlreadyExists,
        ),
    ] {
        let refused = router
            .call_on(PATIENCE, |channel| {
                let request = request.clone();
                async move { ClusterServiceClient::new(channel).add_member(request).await }
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{refused:?}");
    }
    let unknown = router
        .call_on(PATIENCE, |channel| async move {
            ClusterServiceClient::new(channel)
                .remove_member(pb::RemoveMemberRequest { id: 77 })
                .await
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert_eq!(voters(&members(&mut router).await), voters(&listed));
}

/// Runs `fencectl --json --endpoints <all> ARGS...` and parses its JSON output.
fn fencectl_json(endpoints: &[String], args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new(fenced_tests::binaries::binary("fencectl"))
        .arg("--json")
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(args)
        .output()
        .expect("fencectl runs");
    assert!(
        output.status.success(),
        "fencectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("fencectl prints JSON")
}

fn json_voters(members: &serde_json::Value) -> Vec<u64> {
    members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|member| member["voter"] == true)
        .map(|member| member["id"].as_u64().unwrap())
        .collect()
}

// checks: C4 (fencectl lists, adds and removes members through whichever member leads)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencectl_lists_adds_and_removes_members() {
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    let leader = cluster.leader(&[]).await;
    let endpoints = cluster.endpoints();
    let listed = fencectl_json(&endpoints, &["members"]);
    assert_eq!(json_voters(&listed), vec![1, 2, 3], "{listed}");
    assert_eq!(listed["leader"].as_u64(), Some(leader as u64), "{listed}");

    let (id, raft, client) = cluster.start_joining(&["--no-fdatasync"]);
    let (id_text, raft, client) = (id.to_string(), raft.to_string(), client.to_string());
    let added = tokio::task::spawn_blocking({
        let endpoints = endpoints.clone();
        move || fencectl_json(&endpoints, &["add-member", &id_text, &raft, &client])
    })
    .await
    .unwrap();
    assert_eq!(json_voters(&added), vec![1, 2, 3, id], "{added}");
    let removed = tokio::task::spawn_blocking(move || {
        fencectl_json(&endpoints, &["remove-member", &id.to_string()])
    })
    .await
    .unwrap();
    assert_eq!(json_voters(&removed), vec![1, 2, 3], "{removed}");
}
