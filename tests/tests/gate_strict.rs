//! Strict mode against a real `fenced` lock server: the gate asks `CheckToken` before it
//! accepts a write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fenced_gate::grpc::LockServiceChecker;
use fenced_gate::{Error, Gate, MemoryBackend, Strict, WriteOp};
use fenced_proto::v1::{AcquireRequest, ReleaseRequest};
use fenced_tests::server::TestServer;
use fenced_types::{FencingToken, LockName};

fn acquire(lock: &str) -> AcquireRequest {
    AcquireRequest {
        lock: lock.into(),
        holder: "gate-strict-test".into(),
        ttl_ms: 60_000,
        wait_ms: 0,
        lock_delay_ms: 0,
        lease_id: String::new(),
        new_lease_id: String::new(),
    }
}

// checks: S5, S7
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_a_token_the_lock_server_no_longer_backs() {
    // Phase 1: a holder takes the lock and writes through a strict gate.
    let mut server = TestServer::start();
    let mut locks = server.client().await;
    let grant = locks.acquire(acquire("orders")).await.unwrap().into_inner();
    let first = FencingToken::new(grant.token).unwrap();
    let checker = LockServiceChecker::connect(server.endpoint())
        .await
        .unwrap();
    let strict = Strict::new(Gate::new(MemoryBackend::new()), checker);
    let orders = LockName::new("orders").unwrap();
    strict
        .write(&orders, first, &WriteOp::put("o1", "paid"))
        .await
        .unwrap();

    // Phase 2: the lease is released. Nobody else has written or fenced, so the mark alone
    // would still accept the old token; strict mode does not.
    locks
        .release(ReleaseRequest {
            lease_id: grant.lease_id.clone(),
            lock: String::new(),
        })
        .await
        .unwrap();
    let refused = strict
        .write(&orders, first, &WriteOp::put("o1", "late"))
        .await;
    assert_eq!(
        refused,
        Err(Error::NotLiveHolder {
            resource: orders.clone(),
            presented: first,
            live: None
        })
    );

    // Phase 3: a new holder gets a higher token; the old one is refused naming the new one.
    let second = locks.acquire(acquire("orders")).await.unwrap().into_inner();
    let second = FencingToken::new(second.token).unwrap();
    assert!(second > first);
    let refused = strict.fence(&orders, first).await;
    assert_eq!(
        refused,
        Err(Error::NotLiveHolder {
            resource: orders.clone(),
            presented: first,
            live: Some(second)
        })
    );
    strict.fence(&orders, second).await.unwrap();
    let stored = strict.gate().read(&orders, b"o1").unwrap().unwrap();
    assert_eq!(stored.value, b"paid", "refused writes changed nothing");

    // Phase 4: with the lock server gone, strict writes fail as unavailable, not accepted.
    server.kill();
    let err = strict
        .write(&orders, second, &WriteOp::put("o1", "shipped"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CheckUnavailable(_)), "{err:?}");
    assert_eq!(
        strict.gate().read(&orders, b"o1").unwrap().unwrap().value,
        b"paid"
    );
}
