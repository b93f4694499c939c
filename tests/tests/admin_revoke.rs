//! An administrator revokes a live holder's lease with `fencectl revoke` on the real
//! binaries: the lock goes to the waiter with a higher token, the old holder's next write
//! to `fenced-kv` is refused once the new holder wrote, and the old holder's SDK gives the
//! lease up. A revocation that names a stale token changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use fenced_client::AcquireOptions;
use fenced_proto::kv::v1::{GetRequest, PutRequest};
use fenced_tests::binaries::binary;
use fenced_tests::kv_server::TestKv;
use fenced_tests::server::TestServer;
use tonic::Code;

fn put(value: &str, token: u64) -> PutRequest {
    PutRequest {
        resource: "orders".into(),
        key: "total".into(),
        value: value.into(),
        token,
        sequencer: Vec::new(),
    }
}

fn fencectl(server: &TestServer, args: &[&str]) -> Output {
    Command::new(binary("fencectl"))
        .env_remove("FENCED_TOKEN")
        .args(["--endpoints", &server.endpoint(), "--json"])
        .args(args)
        .output()
        .unwrap()
}

// checks: S1, S3, S5, S7
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_hands_the_lock_on_and_the_old_holders_write_is_refused() {
    let server = TestServer::start();
    let kv = TestKv::start();
    let mut store = kv.client().await;

    let holder = server.sdk("holder").await;
    let held = holder
        .acquire(
            "orders",
            AcquireOptions::try_once().ttl(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    let old_token = held.fence().unwrap().get();
    store
        .put(put("written by the holder", old_token))
        .await
        .unwrap();

    let waiter = server.sdk("waiter").await;
    let waiting = tokio::spawn(async move {
        let lease = waiter
            .acquire(
                "orders",
                AcquireOptions::wait(Duration::from_secs(60)).ttl(Duration::from_secs(30)),
            )
            .await
            .unwrap();
        (waiter, lease)
    });
    // The waiter is queued before the revocation.
    let deadline = Instant::now() + Duration::from_secs(20);
    while holder.describe("orders").await.unwrap().waiters == 0 {
        assert!(Instant::now() < deadline, "the waiter never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A revocation naming a stale token changes nothing.
    let stale = fencectl(
        &server,
        &[
            "revoke",
            "orders",
            "--token",
            &(old_token + 1000).to_string(),
        ],
    );
    assert!(!stale.status.success(), "{stale:?}");
    let view = holder.describe("orders").await.unwrap();
    assert_eq!(view.holder.map(|h| h.token.get()), Some(old_token));

    let revoked = fencectl(
        &server,
        &["revoke", "orders", "--token", &old_token.to_string()],
    );
    assert!(revoked.status.success(), "{revoked:?}");
    let answer: serde_json::Value = serde_json::from_slice(&revoked.stdout).unwrap();
    assert_eq!(answer["token"], old_token);

    let (_waiter, lease) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiter is handed the lock")
        .unwrap();
    let new_token = lease.fence().unwrap().get();
    assert!(new_token > old_token);
    store
        .put(put("written by the new holder", new_token))
        .await
        .unwrap();

    // The old holder, not yet told, writes with its old token: refused, nothing changed.
    let refused = store
        .put(put("a zombie's write", old_token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let stored = store
        .get(GetRequest {
            resource: "orders".into(),
            key: "total".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.value, b"written by the new holder");

    // Its SDK learns at its next renewal that the lease is gone, and stops fencing.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !held.status().state.is_lost() {
        assert!(
            Instant::now() < deadline,
            "the revoked lease was not given up: {:?}",
            held.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(held.fence().is_err());

    // Nothing holds a free lock to revoke.
    lease.release().await.unwrap();
    let free = fencectl(&server, &["revoke", "orders", "--lock-only"]);
    assert!(!free.status.success(), "{free:?}");
    assert!(
        String::from_utf8_lossy(&free.stderr).contains("not held"),
        "{free:?}"
    );
}
