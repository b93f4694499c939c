//! The benchmark's serial-limit probe against a real server: its round trip goes over the
//! transport the workloads use, and it leaves nothing held behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_bench::config::{Config, FencedTransport, MeasuredServer};
use fenced_bench::drivers::fenced::FencedSystem;
use fenced_bench::workloads::serial;
use fenced_tests::server::TestServer;

#[tokio::test]
async fn the_serial_probe_round_trips_over_a_session_or_unary_calls() {
    let server = TestServer::start_with_sessions(&[]);
    let framed = server.session_addr().unwrap().to_string();
    let sync_dir = tempfile::tempdir().unwrap();
    let config = Config {
        sync_dir: sync_dir.path().to_path_buf(),
        serial_probe: Duration::from_millis(200),
        ..Config::default()
    };
    // (gRPC Session, framed Session, unary calls)
    for (transport, framed) in [
        (FencedTransport::Session, None),
        (FencedTransport::Framed, Some(framed)),
        (FencedTransport::Unary, None),
    ] {
        let target = MeasuredServer {
            endpoint: server.endpoint(),
            pid: None,
        };
        let session = transport != FencedTransport::Unary;
        let over_framed = framed.is_some();
        let system = FencedSystem::new(target, Duration::from_secs(10), transport, framed, None);
        // On a session each round trip is a renewal, which must come back RENEWED for the
        // probe to succeed at all.
        let limit = serial::run(&system, &config).await.unwrap();
        assert!(limit.round_trip.count > 0, "no round trips measured");
        assert!(limit.fdatasync.count > 0, "no syncs measured");
        assert_eq!(
            limit.round_trip_over.contains("Session"),
            session,
            "{}",
            limit.round_trip_over
        );
        assert_eq!(
            limit.round_trip_over.contains("framed"),
            over_framed,
            "{}",
            limit.round_trip_over
        );
    }
    // Each session probe took a lock of its own to renew; closing its client released it
    // (held, it would stay listed for its 10 s TTL).
    let mut client = server.client().await;
    let listed = client
        .list(fenced_proto::v1::ListRequest {
            prefix: "fenced-bench/ping/".to_string(),
            page_size: 0,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.locks.is_empty(), "{:?}", listed.locks);
}
