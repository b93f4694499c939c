//! `fenced-kv` over gRPC: the API's behaviour, stale refusals with both tokens, the
//! `--unfenced` counterfactual, graceful shutdown, and running in-process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fenced_gate::grpc::stale_tokens;
use fenced_proto::kv::v1::gated_kv_client::GatedKvClient;
use fenced_proto::kv::v1::{DeleteRequest, FenceRequest, GetRequest, PutRequest};
use fenced_proto::metadata::{FENCING_TOKEN, FENCING_TOKEN_CURRENT, FENCING_TOKEN_PRESENTED};
use fenced_tests::kv_server::TestKv;
use tonic::transport::Channel;
use tonic::Code;

fn put(resource: &str, key: &str, value: &str, token: u64) -> PutRequest {
    PutRequest {
        resource: resource.into(),
        key: key.into(),
        value: value.as_bytes().to_vec(),
        token,
        sequencer: Vec::new(),
    }
}

async fn get(
    client: &mut GatedKvClient<Channel>,
    resource: &str,
    key: &str,
) -> (bool, String, u64) {
    let reply = client
        .get(GetRequest {
            resource: resource.into(),
            key: key.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (
        reply.found,
        String::from_utf8(reply.value).unwrap(),
        reply.token,
    )
}

// checks: S5
#[tokio::test]
async fn writes_fences_and_stale_refusals_over_grpc() {
    let kv = TestKv::start();
    let mut client = kv.client().await;

    // Phase 1: the holder of token 33 writes; equal tokens are the same holder.
    assert_eq!(
        client
            .put(put("orders", "o1", "paid", 33))
            .await
            .unwrap()
            .into_inner()
            .mark,
        33
    );
    client
        .put(put("orders", "o1", "paid twice", 33))
        .await
        .unwrap();
    assert_eq!(
        get(&mut client, "orders", "o1").await,
        (true, "paid twice".into(), 33)
    );

    // Phase 2: a new holder (34) fences before working; the old holder is shut out, also
    // from a key the new holder never touched.
    assert_eq!(
        client
            .fence(FenceRequest {
                resource: "orders".into(),
                token: 34,
                sequencer: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .mark,
        34
    );
    let status = client
        .put(put("orders", "o2", "zombie", 33))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .starts_with("stale fencing token: presented 33, current 34"),
        "{}",
        status.message()
    );
    assert_eq!(status.metadata().get(FENCING_TOKEN_CURRENT).unwrap(), "34");
    assert_eq!(
        status.metadata().get(FENCING_TOKEN_PRESENTED).unwrap(),
        "33"
    );
    assert_eq!(
        get(&mut client, "orders", "o2").await,
        (false, String::new(), 0)
    );
    let refused_delete = client
        .delete(DeleteRequest {
            resource: "orders".into(),
            key: "o1".into(),
            token: 33,
            sequencer: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused_delete.code(), Code::FailedPrecondition);
    assert_eq!(get(&mut client, "orders", "o1").await.1, "paid twice");

    // Phase 3: the token may travel only as metadata; deletes report whether the key was there.
    let mut request = tonic::Request::new(DeleteRequest {
        resource: "orders".into(),
        key: "o1".into(),
        token: 0,
        sequencer: Vec::new(),
    });
    request
        .metadata_mut()
        .insert(FENCING_TOKEN, "34".parse().unwrap());
    let deleted = client.delete(request).await.unwrap().into_inner();
    assert!(deleted.existed);
    assert_eq!(deleted.mark, 34);
    assert!(!get(&mut client, "orders", "o1").await.0);

    // Phase 4: another resource has its own mark.
    client.put(put("invoices", "i1", "draft", 1)).await.unwrap();
    assert_eq!(
        get(&mut client, "invoices", "i1").await,
        (true, "draft".into(), 1)
    );
}

// checks: S5
#[tokio::test]
async fn unfenced_mode_lets_the_zombie_through_and_records_its_token() {
    // The counterfactual the demo shows: with the gate off, the stale write lands.
    let kv = TestKv::start_with(&["--unfenced"]);
    let mut client = kv.client().await;
    client
        .put(put("orders", "o1", "new holder", 34))
        .await
        .unwrap();
    let reply = client
        .put(put("orders", "o1", "zombie", 33))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.mark, 34, "the mark still records the highest token");
    assert_eq!(
        get(&mut client, "orders", "o1").await,
        (true, "zombie".into(), 33)
    );
}

// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_the_data_and_mark_survive() {
    let mut kv = TestKv::start();
    let mut client = kv.client().await;
    client.put(put("orders", "o1", "kept", 7)).await.unwrap();
    drop(client);
    let status = kv.stop().expect("it was running");
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
    kv.restart();
    let mut client = kv.client().await;
    assert_eq!(
        get(&mut client, "orders", "o1").await,
        (true, "kept".into(), 7)
    );
    let stale = client
        .put(put("orders", "o2", "zombie", 6))
        .await
        .unwrap_err();
    assert_eq!(
        stale_tokens(&stale).map(|(p, c)| (p.get(), c.get())),
        Some((6, 7))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_frozen_client_cannot_hold_shutdown_hostage() {
    // The client's connection lives on this single-threaded runtime, which `stop` blocks:
    // the connection cannot answer the server's HTTP/2 GOAWAY ping, as a frozen client
    // could not. The drain timeout must still let the server exit, and cleanly.
    let mut kv = TestKv::start_with(&["--drain-timeout-ms", "300"]);
    let mut client = kv.client().await;
    client.put(put("orders", "o1", "v", 1)).await.unwrap();
    let began = std::time::Instant::now();
    let status = kv.stop().expect("it was running");
    assert!(
        status.success(),
        "exits 0 after the drain timeout, got {status:?}"
    );
    assert!(
        began.elapsed() < std::time::Duration::from_secs(30),
        "shutdown took {:?}",
        began.elapsed()
    );
    drop(client);
}

// checks: S5
#[tokio::test]
async fn runs_in_process_and_stops_on_its_shutdown_future() {
    let dir = tempfile::tempdir().unwrap();
    let config = fenced_kv::Config {
        data_dir: dir.path().join("kv"),
        ..fenced_kv::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fenced_kv::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let mut client = GatedKvClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    client.put(put("orders", "o1", "v", 3)).await.unwrap();
    let status = client.put(put("orders", "o1", "old", 2)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    drop(client);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();

    // A bad config is refused before anything opens.
    let bad = fenced_kv::Config {
        data_dir: std::path::PathBuf::new(),
        ..fenced_kv::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = fenced_kv::run(bad, listener, std::future::pending()).await;
    assert!(
        matches!(refused, Err(fenced_kv::Error::Config(_))),
        "{refused:?}"
    );
}
