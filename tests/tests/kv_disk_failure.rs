//! A disk that fails a sync, then works again (`fenced_tests::thin_disk`), under the sled
//! gate and under the real `fenced-kv` binary: after one failed `fdatasync` nothing more is
//! acknowledged, although the next sync would report clean; fenced-kv stops by itself, and
//! a reopen or restart serves what was synced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_gate::{Error as GateError, Gate, SledBackend, StorageError, WriteOp};
use fenced_proto::kv::v1::{FenceRequest, GetRequest, PutRequest};
use fenced_tests::kv_server::TestKv;
use fenced_tests::thin_disk::thin_disk_or_skip;
use fenced_types::{FencingToken, LockName};
use tonic::Code;

/// A value large enough that sled stores it in a blob file of its own (which only the gate's
/// group commit syncs, and whose blocks are new to the disk, so their writeback fails).
const BIG_VALUE_BYTES: usize = 1024 * 1024;

fn put(key: &str, value: Vec<u8>, token: u64) -> PutRequest {
    PutRequest {
        resource: "orders".into(),
        key: key.into(),
        value,
        token,
        sequencer: Vec::new(),
    }
}

fn get(key: &str) -> GetRequest {
    GetRequest {
        resource: "orders".into(),
        key: key.into(),
    }
}

/// The kernel's words for the failure: the loop device reports a full pool as `ENOSPC`
/// (some kernels say `EIO`).
fn names_the_disk_failure(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("Input/output error")
}

// checks: S5 (the mark and data a caller is told about are durable: once a sync has failed
// on a real disk, no later write, fence or read is acknowledged, although the disk works
// again and the next fdatasync would report clean; a reopen serves what was synced)
#[test]
fn a_gate_whose_disk_failed_a_sync_acknowledges_nothing_more() {
    let Some(disk) = thin_disk_or_skip("a_gate_whose_disk_failed_a_sync") else {
        return;
    };
    let dir = disk.path().join("data");
    let gate = Gate::new(SledBackend::open(&dir).unwrap());
    let orders = LockName::new("orders").unwrap();
    let t = |value| FencingToken::new(value).unwrap();
    gate.write(&orders, t(1), &WriteOp::put("synced", "one"))
        .expect("a write on a healthy disk is acknowledged");

    // The disk runs out of room: the large value's writeback fails, and so does its sync.
    disk.fill();
    let failed = gate.write(
        &orders,
        t(2),
        &WriteOp::put("lost", vec![7u8; BIG_VALUE_BYTES]),
    );
    let first = match failed {
        Err(GateError::Storage(stopped @ StorageError::Stopped { .. })) => stopped,
        other => panic!("the write whose sync failed: {other:?}"),
    };
    assert!(names_the_disk_failure(&first.to_string()), "{first}");

    // The disk works again; Linux would now report the next fdatasync as clean.
    disk.grow();
    let refused = |what: &str, result: Result<(), GateError>| {
        assert_eq!(
            result,
            Err(GateError::Storage(first.clone())),
            "{what} after a failed sync: refused, naming the first failure"
        );
    };
    refused(
        "a later write",
        gate.write(&orders, t(3), &WriteOp::put("later", "three"))
            .map(drop),
    );
    refused("a later fence", gate.fence(&orders, t(4)).map(drop));
    refused("a later read", gate.read(&orders, b"synced").map(drop));
    refused("a later read of the mark", gate.mark(&orders).map(drop));
    refused("the flush on shutdown", gate.flush());
    assert_eq!(gate.backend().stopped(), Some(first.clone()));

    // Reopened, the store reads what the disk holds and serves again.
    drop(gate);
    let gate = Gate::new(SledBackend::open(&dir).unwrap());
    let synced = gate.read(&orders, b"synced").unwrap().unwrap();
    assert_eq!((synced.value.as_slice(), synced.token), (&b"one"[..], t(1)));
    assert_eq!(gate.read(&orders, b"later").unwrap(), None);
    gate.write(&orders, t(5), &WriteOp::put("after-reopen", "five"))
        .expect("the reopened store serves writes again");
}

// checks: S5 (as above, through the real binary: the write that met the failed sync gets
// UNAVAILABLE naming it, nothing later is acknowledged, the process exits with a failure,
// and a restart serves what was synced)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_sync_fenced_kv_refuses_everything_and_exits() {
    let Some(disk) = thin_disk_or_skip("after_a_failed_sync_fenced_kv_refuses_everything") else {
        return;
    };
    // A drain timeout far longer than the test's patience: the refused request must be
    // answered at once, not when the shutdown gives up on its connection.
    let mut kv = TestKv::start_in(disk.path().join("data"), &["--drain-timeout-ms", "60000"]);
    let mut client = kv.client().await;
    client
        .put(put("synced", b"one".to_vec(), 1))
        .await
        .expect("a write on a healthy disk is acknowledged");

    disk.fill();
    let failed = tokio::time::timeout(
        Duration::from_secs(30),
        client.put(put("lost", vec![7u8; BIG_VALUE_BYTES], 2)),
    )
    .await
    .expect("the write that met the failed disk is answered promptly")
    .expect_err("a write was acknowledged although its sync failed");
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    assert!(
        failed.message().contains("stopped") && names_the_disk_failure(failed.message()),
        "the refusal names the failure: {failed:?}"
    );

    // The disk works again. fenced-kv may already be gone; if it still answers, it refuses.
    disk.grow();
    let later = client.put(put("later", b"three".to_vec(), 3)).await;
    let later = later.expect_err("a write was acknowledged after a failed sync");
    if later.message().contains("stopped") {
        assert_eq!(later.code(), Code::Unavailable, "{later:?}");
    }
    let fence = client
        .fence(FenceRequest {
            resource: "orders".into(),
            token: 4,
            sequencer: Vec::new(),
        })
        .await;
    fence.expect_err("a fence was acknowledged after a failed sync");

    // It stops by itself, with a failure, as the lock server does when its disk fails.
    let status = kv
        .wait_for_exit(Duration::from_secs(90))
        .expect("fenced-kv stops by itself after a failed sync");
    assert!(
        !status.success(),
        "fenced-kv must exit with a failure after a failed sync, got {status}"
    );

    // A restart reads what the disk holds: the acknowledged write, not the refused ones.
    kv.restart();
    let mut client = kv.client().await;
    let synced = client.get(get("synced")).await.unwrap().into_inner();
    assert!(
        synced.found && synced.value == b"one" && synced.token == 1,
        "the acknowledged write survives: {synced:?}"
    );
    let later = client.get(get("later")).await.unwrap().into_inner();
    assert!(!later.found, "a write refused after the stop was applied");
    client
        .put(put("after-restart", b"five".to_vec(), 5))
        .await
        .expect("the restarted store serves writes again");
}
