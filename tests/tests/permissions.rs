//! Permissions per lock-name prefix on the real `fenced` binary (`--policy` beside
//! `--auth-tokens`): for `lock`, `read` and `admin`, an allowed call is served and a refused
//! one gets PERMISSION_DENIED naming the permission and the lock, and changes nothing;
//! List and Watch show only what the caller may read; the holder a lock shows begins with
//! the caller's identity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use fenced_proto::v1 as pb;
use fenced_proto::v1::cluster_service_client::ClusterServiceClient;
use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_tests::cluster::{connect_channel, TestCluster};
use fenced_tests::process::refused_start;
use fenced_tests::server::TestServer;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Code;

/// `printf %s alice-secret | sha256sum`, and the same for bob and ops.
const TOKENS: &str = "\
alice 0c848abb03307b06cf70cd4e29c157dc81af5e94ab3eb1d0c59a120269572376
bob   9f03ef1533a68d2f506f81ef463c1183a82a6bd40e45613f36e6fe1889cf1b99
ops   32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f
";

/// alice locks and reads a/, bob b/; ops administers; everyone reads shared/.
const POLICY: &str = "\
# IDENTITY PERMISSION PATTERN
alice lock  a/*
alice read  a/*
bob   lock  b/*
bob   read  b/*
ops   admin *
*     read  shared/*
";

const ALICE: &str = "alice-secret";
const BOB: &str = "bob-secret";
const OPS: &str = "ops-secret";

/// The tokens and policy files in `dir`, as `fenced` flags.
fn flags(dir: &Path) -> Vec<String> {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    let policy = dir.join("policy");
    std::fs::write(&policy, POLICY).unwrap();
    vec![
        "--auth-tokens".to_string(),
        tokens.to_str().unwrap().to_string(),
        "--policy".to_string(),
        policy.to_str().unwrap().to_string(),
    ]
}

fn start(dir: &Path) -> TestServer {
    start_with(dir, &[])
}

/// [`start`] with `extra` flags.
fn start_with(dir: &Path, extra: &[&str]) -> TestServer {
    let flags = flags(dir);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    TestServer::start_with(&args)
}

fn as_<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

fn acquire(lock: &str, holder: &str) -> pb::AcquireRequest {
    pb::AcquireRequest {
        lock: lock.to_string(),
        holder: holder.to_string(),
        ttl_ms: 60_000,
        ..pb::AcquireRequest::default()
    }
}

fn describe(lock: &str) -> pb::DescribeRequest {
    pb::DescribeRequest {
        lock: lock.to_string(),
    }
}

/// Asserts a PERMISSION_DENIED that names the permission and `what`.
fn assert_denied(status: &tonic::Status, permission: &str, what: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.metadata().get("fenced-error").unwrap(),
        "permission-denied",
        "{status:?}"
    );
    assert!(
        status.message().contains(permission) && status.message().contains(what),
        "{status:?}"
    );
}

async fn holder_of(client: &mut LockServiceClient<Channel>, token: &str, lock: &str) -> String {
    let info = client
        .describe(as_(token, describe(lock)))
        .await
        .unwrap()
        .into_inner();
    assert!(info.held, "{lock} is held: {info:?}");
    info.holder
}

// checks: A2, A1
// `lock`: alice takes a/ locks, not b/ ones; bob cannot renew, release or join alice's
// lease (its lock is under a/), in unary calls, KeepAlive or a Session; every refusal
// changes nothing. Holders begin with the identity, whatever label the client sends.
#[tokio::test]
async fn lock_is_granted_under_the_prefix_and_refused_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut client = server.client().await;

    // Phase: alice takes a/1; a/ is hers, b/ is not.
    let alices = client
        .acquire(as_(ALICE, acquire("a/1", "worker-1")))
        .await
        .expect("alice may lock a/1")
        .into_inner();
    let refused = client
        .acquire(as_(ALICE, acquire("b/1", "worker-1")))
        .await
        .unwrap_err();
    assert_denied(&refused, "lock", "\"b/1\"");
    let b1 = client
        .describe(as_(BOB, describe("b/1")))
        .await
        .unwrap()
        .into_inner();
    assert!(!b1.held, "the refused acquire took nothing: {b1:?}");

    // Phase: the holder shown is the identity, then the label.
    assert_eq!(holder_of(&mut client, ALICE, "a/1").await, "alice/worker-1");
    client
        .acquire(as_(BOB, acquire("b/1", "alice")))
        .await
        .expect("bob may lock b/1");
    assert_eq!(
        holder_of(&mut client, BOB, "b/1").await,
        "bob/alice",
        "a label cannot pass for another identity"
    );
    client.acquire(as_(BOB, acquire("b/2", ""))).await.unwrap();
    assert_eq!(holder_of(&mut client, BOB, "b/2").await, "bob");

    // Phase: bob, with alice's lease id, can neither renew, release nor join it.
    let renew = pb::RenewRequest {
        lease_id: alices.lease_id.clone(),
    };
    assert_denied(
        &client.renew(as_(BOB, renew.clone())).await.unwrap_err(),
        "lock",
        "\"a/1\"",
    );
    let release = pb::ReleaseRequest {
        lease_id: alices.lease_id.clone(),
        lock: String::new(),
    };
    assert_denied(
        &client.release(as_(BOB, release.clone())).await.unwrap_err(),
        "lock",
        "\"a/1\"",
    );
    let release_one = pb::ReleaseRequest {
        lease_id: alices.lease_id.clone(),
        lock: "a/1".to_string(),
    };
    assert_denied(
        &client.release(as_(BOB, release_one)).await.unwrap_err(),
        "lock",
        "\"a/1\"",
    );
    let join = pb::AcquireRequest {
        lease_id: alices.lease_id.clone(),
        ..acquire("b/3", "joiner")
    };
    assert_denied(
        &client.acquire(as_(BOB, join)).await.unwrap_err(),
        "lock",
        "\"a/1\"",
    );
    let mut keep_alive = client
        .keep_alive(as_(BOB, tokio_stream::iter([renew.clone()])))
        .await
        .unwrap()
        .into_inner();
    let ended = keep_alive.next().await.unwrap().unwrap_err();
    assert_denied(&ended, "lock", "\"a/1\"");
    let info = client
        .describe(as_(ALICE, describe("a/1")))
        .await
        .unwrap()
        .into_inner();
    assert!(
        info.held && info.token == alices.token,
        "alice still holds a/1: {info:?}"
    );
    let b3 = client
        .describe(as_(BOB, describe("b/3")))
        .await
        .unwrap()
        .into_inner();
    assert!(!b3.held, "the refused join took nothing: {b3:?}");

    // Phase: in a Session the same rules hold, request by request.
    let requests = [
        pb::SessionRequest {
            id: 1,
            op: Some(pb::session_request::Op::Acquire(acquire("b/9", "s"))),
        },
        pb::SessionRequest {
            id: 2,
            op: Some(pb::session_request::Op::Acquire(acquire("a/9", "s"))),
        },
    ];
    let mut answers = client
        .session(as_(ALICE, tokio_stream::iter(requests)))
        .await
        .unwrap()
        .into_inner();
    let mut refused_ids = Vec::new();
    let mut granted_ids = Vec::new();
    for _ in 0..2 {
        let answer = answers.next().await.unwrap().unwrap();
        match answer.result.unwrap() {
            pb::session_response::Result::Acquired(_) => granted_ids.push(answer.id),
            pb::session_response::Result::Error(error) => {
                assert!(error.message.contains("lock"), "{error:?}");
                refused_ids.push(answer.id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((refused_ids, granted_ids), (vec![1], vec![2]));

    // Phase: alice renews and releases her own lease.
    client.renew(as_(ALICE, renew)).await.expect("alice renews");
    client
        .release(as_(ALICE, release))
        .await
        .expect("alice releases");
    let info = client
        .describe(as_(ALICE, describe("a/1")))
        .await
        .unwrap()
        .into_inner();
    assert!(!info.held, "{info:?}");
}

// checks: A2
// `read`: Describe and CheckToken of a lock under the caller's prefixes are answered,
// others refused; List shows only readable locks, page after page, and a prefix with
// nothing readable is refused; Watch forwards only readable events.
#[tokio::test]
async fn read_shows_only_what_the_caller_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut client = server.client().await;
    for lock in ["a/1", "a/2"] {
        client
            .acquire(as_(ALICE, acquire(lock, "w")))
            .await
            .unwrap();
    }
    let b1 = client
        .acquire(as_(BOB, acquire("b/1", "w")))
        .await
        .unwrap()
        .into_inner();

    // Phase: Describe and CheckToken.
    assert_denied(
        &client
            .describe(as_(ALICE, describe("b/1")))
            .await
            .unwrap_err(),
        "read",
        "\"b/1\"",
    );
    let check = pb::CheckTokenRequest {
        lock: "b/1".to_string(),
        token: b1.token,
    };
    assert_denied(
        &client
            .check_token(as_(ALICE, check.clone()))
            .await
            .unwrap_err(),
        "read",
        "\"b/1\"",
    );
    let checked = client
        .check_token(as_(BOB, check))
        .await
        .expect("bob reads b/")
        .into_inner();
    assert!(checked.current);

    // Phase: List: alice pages through everything and sees only a/.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let page = client
            .list(as_(
                ALICE,
                pb::ListRequest {
                    prefix: String::new(),
                    page_size: 1,
                    cursor: cursor.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.locks.into_iter().map(|info| info.lock));
        cursor = page.next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    assert!(cursor.is_empty(), "the cursor reaches the end");
    assert_eq!(seen, ["a/1", "a/2"]);
    let refused = client
        .list(as_(
            ALICE,
            pb::ListRequest {
                prefix: "b/".to_string(),
                ..pb::ListRequest::default()
            },
        ))
        .await
        .unwrap_err();
    assert_denied(&refused, "read", "\"b/\"");
    let bobs = client
        .list(as_(BOB, pb::ListRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = bobs.locks.iter().map(|info| info.lock.as_str()).collect();
    assert_eq!(names, ["b/1"]);

    // Phase: Watch: a lock or prefix alice cannot read is refused.
    let refused = client
        .watch(as_(
            ALICE,
            pb::WatchRequest {
                lock: "b/1".to_string(),
                ..pb::WatchRequest::default()
            },
        ))
        .await
        .unwrap_err();
    assert_denied(&refused, "read", "\"b/1\"");
    let refused = client
        .watch(as_(
            ALICE,
            pb::WatchRequest {
                prefix: "b/".to_string(),
                ..pb::WatchRequest::default()
            },
        ))
        .await
        .unwrap_err();
    assert_denied(&refused, "read", "\"b/\"");

    // Phase: Watch of everything, from the first revision: only a/ events.
    let mut events = client
        .watch(as_(
            ALICE,
            pb::WatchRequest {
                start_revision: 1,
                ..pb::WatchRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    client.acquire(as_(BOB, acquire("b/2", "w"))).await.unwrap();
    client
        .acquire(as_(ALICE, acquire("a/3", "w")))
        .await
        .unwrap();
    let mut locks = Vec::new();
    while locks.last().map(String::as_str) != Some("a/3") {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("the a/3 event comes")
            .unwrap()
            .unwrap();
        if event.kind() != pb::watch_event::Kind::Progress {
            locks.push(event.lock);
        }
    }
    assert_eq!(locks, ["a/1", "a/2", "a/3"], "no b/ event reaches alice");
}

// checks: A2
// `admin`: the ClusterService answers ops (admin on `*`) and refuses alice, who has no
// admin rule; the refused change leaves the members as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_needed_for_the_cluster_service() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--no-fdatasync".to_string()];
    args.extend(flags(dir.path()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cluster = TestCluster::start(&args);
    let channel = connect_channel(&cluster.endpoint(1)).await.unwrap();
    let mut admin = ClusterServiceClient::new(channel);

    // Phase: ops may see the members (once a leader is known).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let members = loop {
        let members = admin
            .members(as_(OPS, pb::MembersRequest {}))
            .await
            .expect("ops may call the ClusterService")
            .into_inner();
        if members.leader_id != 0 {
            break members;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(members.members.len(), 3);

    // Phase: alice may not, and her change is refused before anything happens.
    assert_denied(
        &admin
            .members(as_(ALICE, pb::MembersRequest {}))
            .await
            .unwrap_err(),
        "admin",
        "every lock",
    );
    let leader = cluster.endpoint(usize::try_from(members.leader_id).unwrap());
    let mut at_leader = ClusterServiceClient::new(connect_channel(&leader).await.unwrap());
    let remove = pb::RemoveMemberRequest {
        id: members
            .members
            .iter()
            .find(|member| member.id != members.leader_id)
            .unwrap()
            .id,
    };
    assert_denied(
        &at_leader
            .remove_member(as_(ALICE, remove))
            .await
            .unwrap_err(),
        "admin",
        "every lock",
    );
    let refused = at_leader
        .remove_member(as_(OPS, pb::RemoveMemberRequest { id: 99 }))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::NotFound,
        "ops gets past the check: {refused:?}"
    );
    let after = at_leader
        .members(as_(OPS, pb::MembersRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.members.len(), 3, "nobody was removed: {after:?}");
}

// checks: A2
// With authentication and no policy file, every authenticated client may do everything,
// and the holder shown still begins with its identity.
#[tokio::test]
async fn without_a_policy_authenticated_clients_may_do_everything() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    let server = TestServer::start_with(&["--auth-tokens", tokens.to_str().unwrap()]);
    let mut client = server.client().await;
    client
        .acquire(as_(ALICE, acquire("b/1", "w")))
        .await
        .expect("no policy: alice may lock anything");
    assert_eq!(holder_of(&mut client, BOB, "b/1").await, "alice/w");
}

// checks: A2
// A policy file without authentication, or with a line that is not a rule, stops the
// server at start, saying why.
#[test]
fn the_server_refuses_a_policy_without_authentication_or_with_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let flags = flags(dir.path());
    let (tokens, policy) = (flags[1].as_str(), flags[3].as_str());
    let bad = dir.path().join("bad-policy");
    std::fs::write(&bad, "alice lock a/*\nalice write b/*\n").unwrap();
    for (args, words) in [
        (vec!["--policy", policy], "needs authentication on"),
        (
            vec!["--auth-tokens", tokens, "--policy", bad.to_str().unwrap()],
            "line 2",
        ),
    ] {
        let stderr = refused_start("fenced", &args);
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
}

// checks: A3, S6
// With --max-watchers-per-identity, one identity's Watch streams past the limit are
// refused with RESOURCE_EXHAUSTED while another identity still gets its own; a stream that
// ends gives its place back.
#[tokio::test]
async fn one_identity_cannot_take_every_watch() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), &["--max-watchers-per-identity", "2"]);
    let mut client = server.client().await;
    let watch_a = || pb::WatchRequest {
        prefix: "a/".to_string(),
        ..pb::WatchRequest::default()
    };

    // Phase: alice opens her two streams; a third is refused.
    let first = client.watch(as_(ALICE, watch_a())).await.unwrap();
    let _second = client.watch(as_(ALICE, watch_a())).await.unwrap();
    let refused = client.watch(as_(ALICE, watch_a())).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("alice") && refused.message().contains("per identity"),
        "{refused:?}"
    );

    // Phase: bob still gets his.
    client
        .watch(as_(
            BOB,
            pb::WatchRequest {
                prefix: "b/".to_string(),
                ..pb::WatchRequest::default()
            },
        ))
        .await
        .expect("another identity is not held back by alice's streams");

    // Phase: once alice closes a stream, she may open one again.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client.watch(as_(ALICE, watch_a())).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the closed stream's place never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn waiters(client: &mut LockServiceClient<Channel>, token: &str, lock: &str) -> u32 {
    client
        .describe(as_(token, describe(lock)))
        .await
        .unwrap()
        .into_inner()
        .waiters
}

/// Waits until `lock` has `count` queued acquirers.
async fn until_waiters(
    client: &mut LockServiceClient<Channel>,
    token: &str,
    lock: &str,
    count: u32,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while waiters(client, token, lock).await != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{lock} never had {count} waiters"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// checks: A3, S6
// With --max-waiters-per-identity, an identity's acquires that may wait are refused past
// the limit with RESOURCE_EXHAUSTED, while another identity still queues and the identity
// still takes free locks at once; an acquire that ends gives its place back.
#[tokio::test]
async fn one_identity_cannot_take_every_waiting_place() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), &["--max-waiters-per-identity", "1"]);
    let mut client = server.client().await;
    let waiting = |lock: &str, wait_ms: u64| pb::AcquireRequest {
        wait_ms,
        ..acquire(lock, "waiter")
    };
    client
        .acquire(as_(ALICE, acquire("a/1", "holder")))
        .await
        .unwrap();
    client
        .acquire(as_(BOB, acquire("b/1", "holder")))
        .await
        .unwrap();

    // Phase: alice queues once; her second waiting acquire is refused.
    let queued = {
        let mut client = client.clone();
        tokio::spawn(async move { client.acquire(as_(ALICE, waiting("a/1", 60_000))).await })
    };
    until_waiters(&mut client, ALICE, "a/1", 1).await;
    let refused = client
        .acquire(as_(ALICE, waiting("a/1", 60_000)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("alice") && refused.message().contains("per identity"),
        "{refused:?}"
    );
    assert_eq!(
        waiters(&mut client, ALICE, "a/1").await,
        1,
        "the refusal queued nothing"
    );

    // Phase: bob still queues, and alice still takes a free lock at once.
    let bobs = {
        let mut client = client.clone();
        tokio::spawn(async move { client.acquire(as_(BOB, waiting("b/1", 60_000))).await })
    };
    until_waiters(&mut client, BOB, "b/1", 1).await;
    client
        .acquire(as_(ALICE, acquire("a/2", "now")))
        .await
        .expect("an acquire that does not wait is not counted");

    // Phase: once alice's queued acquire goes away, she may wait again.
    queued.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = client
            .acquire(as_(ALICE, waiting("a/1", 100)))
            .await
            .unwrap_err();
        if status.code() == Code::Aborted {
            break; // it waited, and timed out: the place came back
        }
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended acquire's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bobs.abort();
}

// checks: A2, S7 (revoking a holding needs `admin` on its lock: alice, who may lock a/,
// may not revoke a/ holdings, and her attempt leaves the holding alone; ops may)
#[tokio::test]
async fn admin_is_needed_to_revoke_a_holding() {
    use fenced_proto::v1::admin_service_client::AdminServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut client = server.client().await;
    let grant = client
        .acquire(as_(ALICE, acquire("a/revoked", "worker")))
        .await
        .unwrap()
        .into_inner();
    let mut admin = AdminServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let request = || pb::RevokeRequest {
        lock: "a/revoked".to_string(),
        token: grant.token,
    };
    assert_denied(
        &admin.revoke_lease(as_(ALICE, request())).await.unwrap_err(),
        "admin",
        "a/revoked",
    );
    assert_eq!(
        holder_of(&mut client, ALICE, "a/revoked").await,
        "alice/worker",
        "a refused revocation leaves the holding alone"
    );
    let revoked = admin
        .revoke_lease(as_(OPS, request()))
        .await
        .expect("ops administers every lock")
        .into_inner();
    assert_eq!(revoked.token, grant.token);
    let renewed = client
        .renew(as_(
            ALICE,
            pb::RenewRequest {
                lease_id: grant.lease_id,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(renewed.code(), Code::FailedPrecondition, "{renewed:?}");
}

// checks: A1, A2, S7 (every grant, release, expiry, revocation and refused call leaves its
// line in the audit log, naming who and what)
#[tokio::test]
async fn the_audit_log_records_grants_releases_expiries_revocations_and_refusals() {
    use fenced_proto::v1::admin_service_client::AdminServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = start_with(
        dir.path(),
        &[
            "--audit-log",
            audit.to_str().unwrap(),
            "--min-ttl-ms",
            "100",
        ],
    );
    let mut client = server.client().await;

    // A grant and its release; a grant that expires; a grant an administrator revokes.
    let released = client
        .acquire(as_(ALICE, acquire("a/released", "worker")))
        .await
        .unwrap()
        .into_inner();
    client
        .release(as_(
            ALICE,
            pb::ReleaseRequest {
                lease_id: released.lease_id.clone(),
                ..pb::ReleaseRequest::default()
            },
        ))
        .await
        .unwrap();
    let mut short = acquire("a/expired", "worker");
    short.ttl_ms = 300;
    client.acquire(as_(ALICE, short)).await.unwrap();
    let revoked = client
        .acquire(as_(ALICE, acquire("a/revoked", "worker")))
        .await
        .unwrap()
        .into_inner();
    let mut admin = AdminServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    admin
        .revoke_lease(as_(
            OPS,
            pb::RevokeRequest {
                lock: "a/revoked".to_string(),
                token: revoked.token,
            },
        ))
        .await
        .unwrap();
    // Refused: no token, and a permission alice lacks.
    assert_eq!(
        client
            .acquire(acquire("a/anonymous", "x"))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        client
            .acquire(as_(ALICE, acquire("b/1", "worker")))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    let kinds = [
        "grant",
        "release",
        "expiry",
        "revoke-lease",
        "unauthenticated",
        "permission-denied",
    ];
    let records = fenced_tests::audit::records_until(
        &audit,
        &format!("one of each of {kinds:?}"),
        |records| {
            kinds
                .iter()
                .all(|kind| fenced_tests::audit::has_kind(records, kind))
        },
    )
    .await;
    let find = |kind: &str, lock: &str| {
        records
            .iter()
            .find(|record| record["kind"] == kind && record["lock"] == lock)
            .unwrap_or_else(|| panic!("no {kind} of {lock}: {records:#?}"))
            .clone()
    };
    let from_loopback = |record: &serde_json::Value| {
        assert!(
            record["peer"]
                .as_str()
                .is_some_and(|peer| peer.starts_with("127.0.0.1:")),
            "{record}"
        );
    };
    // The lease id's non-secret prefix: the first 8 hex digits of its UUID.
    let prefix = |lease_id: &str| lease_id.replace('-', "")[..8].to_string();
    let grant = find("grant", "a/released");
    assert_eq!(grant["holder"], "alice/worker");
    assert_eq!(grant["token"], released.token);
    assert!(grant["time_ms"].as_u64().unwrap() > 0);
    assert_eq!(grant["identity"], "alice");
    assert_eq!(grant["lease"], prefix(&released.lease_id));
    from_loopback(&grant);
    let release = find("release", "a/released");
    assert_eq!(release["identity"], "alice");
    assert_eq!(release["lease"], prefix(&released.lease_id));
    from_loopback(&release);
    let expiry = find("expiry", "a/expired");
    assert_eq!(expiry["identity"], "alice");
    assert_eq!(expiry["lease"].as_str().map(str::len), Some(8), "{expiry}");
    from_loopback(&expiry);
    let revoke = find("revoke-lease", "a/revoked");
    assert_eq!(revoke["identity"], "ops");
    assert_eq!(revoke["token"], revoked.token);
    assert_eq!(revoke["lease"], prefix(&revoked.lease_id));
    from_loopback(&revoke);
    let denied = find("permission-denied", "lock \"b/1\"");
    assert_eq!(denied["identity"], "alice");
    assert_eq!(denied["permission"], "lock");
    from_loopback(&denied);
    let anonymous = records
        .iter()
        .find(|record| record["kind"] == "unauthenticated")
        .unwrap();
    assert!(
        anonymous["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{anonymous}"
    );
}

// checks: A3, S2 (with --max-leases-per-identity, an identity's new leases are refused
// past the limit with RESOURCE_EXHAUSTED `identity-leases`, another identity's are not,
// the count survives a kill -9 and restart, and an ended lease gives its place back)
#[tokio::test]
async fn one_identity_cannot_take_every_lease() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_with(dir.path(), &["--max-leases-per-identity", "2"]);
    let mut client = server.client().await;
    let mut leases = Vec::new();
    for lock in ["a/1", "a/2"] {
        let grant = client
            .acquire(as_(ALICE, acquire(lock, "worker")))
            .await
            .unwrap()
            .into_inner();
        leases.push(grant.lease_id);
    }
    let assert_refused = |status: tonic::Status| {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(
            status.metadata().get("fenced-error").unwrap(),
            "identity-leases",
            "{status:?}"
        );
        assert!(status.message().contains("alice"), "{status:?}");
    };
    assert_refused(
        client
            .acquire(as_(ALICE, acquire("a/3", "worker")))
            .await
            .unwrap_err(),
    );
    let free = client
        .describe(as_(ALICE, describe("a/3")))
        .await
        .unwrap()
        .into_inner();
    assert!(!free.held, "the refusal took nothing: {free:?}");
    // Joining one of her leases takes no new lease; bob has his own count.
    client
        .acquire(as_(
            ALICE,
            pb::AcquireRequest {
                lease_id: leases[0].clone(),
                ..acquire("a/3", "worker")
            },
        ))
        .await
        .expect("a join creates no lease");
    client
        .acquire(as_(BOB, acquire("b/1", "worker")))
        .await
        .expect("bob is not held to alice's count");

    // The count is durable: after a kill -9 and a restart alice is still at her limit.
    server.kill();
    server.restart();
    let mut client = server.client().await;
    assert_refused(
        client
            .acquire(as_(ALICE, acquire("a/4", "worker")))
            .await
            .unwrap_err(),
    );
    // A released lease gives its place back.
    client
        .release(as_(
            ALICE,
            pb::ReleaseRequest {
                lease_id: leases[1].clone(),
                ..pb::ReleaseRequest::default()
            },
        ))
        .await
        .unwrap();
    client
        .acquire(as_(ALICE, acquire("a/4", "worker")))
        .await
        .expect("a place came back");
}

// checks: A1, A2 (with authentication on, the admin listener shows lock data only to a
// listed bearer token, and only the locks its identity may read; probes stay open)
#[tokio::test]
async fn the_status_pages_data_needs_a_token_and_shows_only_what_it_may_read() {
    use fenced_tests::http::{get, get_with, EventStream};
    let dir = tempfile::tempdir().unwrap();
    let flags = flags(dir.path());
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TestServer::start_with_admin(&args);
    let admin = server.admin_addr().expect("an admin listener");
    let mut client = server.client().await;
    client
        .acquire(as_(ALICE, acquire("a/1", "worker")))
        .await
        .unwrap();
    client
        .acquire(as_(BOB, acquire("b/1", "worker")))
        .await
        .unwrap();

    // No token, a wrong one: 401 for the data routes, and nothing of the locks shown.
    for headers in [vec![], vec![("authorization", "Bearer not-a-token")]] {
        for path in ["/api/locks", "/events"] {
            let refused = get_with(admin, path, &headers).await;
            assert_eq!(refused.status, 401, "{path} {headers:?}: {refused:?}");
            assert!(!refused.body.contains("a/1"), "{refused:?}");
        }
    }
    // Probes and the page itself name no lock and stay open.
    for path in ["/metrics", "/healthz", "/"] {
        assert_eq!(get(admin, path).await.status, 200, "{path}");
    }

    // Alice sees her lock and not bob's.
    let alice = format!("Bearer {ALICE}");
    let answer = get_with(admin, "/api/locks", &[("authorization", &alice)]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let locks: Vec<&str> = answer["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lock| lock["lock"].as_str().unwrap())
        .collect();
    assert_eq!(locks, ["a/1"], "{answer}");

    // Her event stream carries her locks' events only: bob's grant comes first and is not
    // shown, hers after it is.
    let mut events = EventStream::open_with(admin, "/events", &[("authorization", &alice)]).await;
    client
        .acquire(as_(BOB, acquire("b/2", "worker")))
        .await
        .unwrap();
    client
        .acquire(as_(ALICE, acquire("a/2", "worker")))
        .await
        .unwrap();
    let seen = events
        .until("\"lock\":\"a/2\"", Duration::from_secs(30))
        .await
        .to_string();
    assert!(!seen.contains("b/2"), "{seen}");
    assert!(seen.contains("\"holder\":\"alice/worker\""), "{seen}");
}
