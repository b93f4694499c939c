//! Operating fenced-kv: the standard gRPC health service and the admin listener's
//! Prometheus `/metrics` and `/healthz`, on the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use fenced_proto::kv::v1::{GetRequest, PutRequest};
use fenced_tests::kv_server::TestKv;
use fenced_tests::thin_disk::thin_disk_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The service name health checks ask about (besides `""`, the server as a whole).
const KV_SERVICE: &str = "fenced.kv.v1.GatedKv";

async fn health_client(kv: &TestKv) -> HealthClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(kv.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

fn put(key: &str, value: Vec<u8>, token: u64) -> PutRequest {
    PutRequest {
        resource: "orders".into(),
        key: key.into(),
        value,
        token,
        sequencer: Vec::new(),
    }
}

/// `GET path` on the admin listener: the status code and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("the admin listener answers within 30 s")
    .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {head}"));
    (status, body.to_string())
}

/// The value of the sample `series` (name and labels exactly as rendered) in Prometheus
/// text, 0 when it is not there yet.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

fn admin_addr(kv: &TestKv) -> SocketAddr {
    kv.announced("fenced-kv admin on ")
        .expect("fenced-kv announces its admin listener")
}

// checks: none (operations)
#[tokio::test]
async fn the_health_service_says_serving_while_the_store_works() {
    let kv = TestKv::start();
    let mut health = health_client(&kv).await;
    for service in ["", KV_SERVICE] {
        let status = health
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

// checks: S5 (a stale write is refused), and the counters that show it
#[tokio::test]
async fn metrics_count_accepted_and_stale_writes_reads_and_syncs() {
    let kv = TestKv::start_with(&["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&kv);
    let mut client = kv.client().await;

    // Phase 1: the admin listener serves /healthz and /metrics, and nothing else.
    assert_eq!(http_get(admin, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http_get(admin, "/nothing").await.0, 404);
    let (status, before) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let accepted = r#"fenced_kv_writes_accepted_total{op="put"}"#;
    let stale = r#"fenced_kv_writes_refused_stale_total{op="put"}"#;
    let reads = "fenced_kv_reads_total";
    let syncs = "fenced_kv_sync_seconds_count";

    // Phase 2: an accepted write, a stale one and a read.
    client.put(put("a", b"one".to_vec(), 5)).await.unwrap();
    let refused = client.put(put("b", b"two".to_vec(), 3)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    client
        .get(GetRequest {
            resource: "orders".into(),
            key: "a".into(),
        })
        .await
        .unwrap();

    // Phase 3: each counter moved by one; the accepted write was synced.
    let (_, after) = http_get(admin, "/metrics").await;
    assert_eq!(
        sample(&after, accepted) - sample(&before, accepted),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, stale) - sample(&before, stale),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, reads) - sample(&before, reads),
        1.0,
        "{after}"
    );
    assert!(sample(&after, syncs) > sample(&before, syncs), "{after}");
    assert!(
        after.contains("# TYPE fenced_kv_sync_seconds histogram"),
        "sync latency is a histogram: {after}"
    );
}

// checks: S5 (after a failed sync nothing more is acknowledged; health says so)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_when_a_failed_sync_stops_the_store() {
    let Some(disk) = thin_disk_or_skip("health_turns_not_serving_when_a_failed_sync") else {
        return;
    };
    // A drain far longer than the test: the process stays up while the health stream is
    // open, so both the stream and /healthz can be asked.
    let mut kv = TestKv::start_in(
        disk.path().join("data"),
        &[
            "--drain-timeout-ms",
            "120000",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    );
    let admin = admin_addr(&kv);
    let mut client = kv.client().await;
    let mut health = health_client(&kv).await;

    // Phase 1: serving, and a write on the healthy disk is acknowledged.
    let mut watch = health.watch(check(KV_SERVICE)).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    client.put(put("synced", b"one".to_vec(), 1)).await.unwrap();

    // Phase 2: the disk fails a sync; the write that met it is refused.
    disk.fill();
    let failed = tokio::time::timeout(
        Duration::from_secs(30),
        client.put(put("lost", vec![7u8; 1024 * 1024], 2)),
    )
    .await
    .expect("the write that met the failed disk is answered promptly")
    .expect_err("a write was acknowledged although its sync failed");
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");

    // Phase 3: the health stream says NOT_SERVING, and /healthz names the failure.
    let next = tokio::time::timeout(Duration::from_secs(30), watch.message())
        .await
        .expect("the health stream is told within 30 s")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    let (status, body) = http_get(admin, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("stopped"), "{body}");

    // Phase 4: once its clients are gone, it exits with a failure, as before.
    disk.grow();
    drop((watch, health, client));
    let exited = kv
        .wait_for_exit(Duration::from_secs(90))
        .expect("fenced-kv exits once its connections have closed");
    assert!(!exited.success(), "{exited}");
}

// checks: none (operations)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_kv_tells_systemd_ready_once_it_serves_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
    let mut buffer = vec![0u8; 4096];

    // Phase 1: READY=1 names the address, and a write there is acknowledged.
    let starting = std::thread::spawn(move || {
        fenced_tests::process::ServerProcess::start_with_env(
            "fenced-kv",
            "fenced-kv listening on ",
            &[],
            &[("NOTIFY_SOCKET", path.as_os_str())],
        )
    });
    let n = tokio::time::timeout(Duration::from_secs(60), socket.recv(&mut buffer))
        .await
        .expect("READY=1 within 60 s")
        .unwrap();
    let ready = String::from_utf8_lossy(&buffer[..n]).into_owned();
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    let addr: SocketAddr = ready
        .lines()
        .find_map(|line| line.strip_prefix("STATUS=serving gRPC on "))
        .unwrap_or_else(|| panic!("READY names the address: {ready:?}"))
        .parse()
        .unwrap();
    let mut client =
        fenced_proto::kv::v1::gated_kv_client::GatedKvClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
    client.put(put("ready", b"yes".to_vec(), 1)).await.unwrap();
    let mut kv = starting.join().unwrap();

    // Phase 2: SIGTERM: STOPPING=1, and a clean exit.
    drop(client);
    let status = tokio::task::spawn_blocking(move || kv.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let n = tokio::time::timeout(Duration::from_secs(60), socket.recv(&mut buffer))
        .await
        .expect("STOPPING=1 within 60 s")
        .unwrap();
    assert!(buffer[..n].starts_with(b"STOPPING=1"), "{:?}", &buffer[..n]);
}
