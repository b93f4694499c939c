//! `fenced` under systemd: the readiness protocol (`Type=notify`) spoken to a socket the
//! test holds, as systemd would, and the unit file checked by `systemd-analyze verify`.
//! Without `NOTIFY_SOCKET` every other test runs the server, and nothing is sent.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fenced_proto::v1 as pb;
use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_tests::server::TestServer;
use tokio::net::UnixDatagram;

/// Waits (generously) for the next notification on `socket`, as text.
async fn next_notification(socket: &UnixDatagram) -> String {
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), socket.recv(&mut buffer))
        .await
        .expect("a notification within 60 s")
        .expect("the socket receives");
    String::from_utf8(buffer[..n].to_vec()).expect("notifications are text")
}

// checks: none (operations)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_sent_once_the_server_serves_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();

    // Phase 1: the server starts with NOTIFY_SOCKET set; the harness waits on another thread.
    let starting = std::thread::spawn(move || {
        TestServer::start_with_env(&[], &[("NOTIFY_SOCKET", path.as_os_str())])
    });

    // Phase 2: READY=1 arrives, naming the address; at that moment an acquire succeeds.
    let ready = next_notification(&socket).await;
    let mut lines = ready.lines();
    assert_eq!(lines.next(), Some("READY=1"), "{ready:?}");
    let addr: SocketAddr = lines
        .find_map(|line| line.strip_prefix("STATUS=serving gRPC on "))
        .unwrap_or_else(|| panic!("READY names the address in STATUS: {ready:?}"))
        .parse()
        .unwrap();
    let mut client = LockServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("the gRPC port answers once READY=1 is sent");
    let grant = client
        .acquire(pb::AcquireRequest {
            lock: "ready".into(),
            holder: "systemd-test".into(),
            ttl_ms: 30_000,
            wait_ms: 0,
            lock_delay_ms: 0,
            lease_id: String::new(),
            new_lease_id: String::new(),
        })
        .await
        .expect("an acquire right after READY=1 is granted")
        .into_inner();
    assert!(grant.token >= 1);
    let mut server = starting.join().unwrap();
    assert_eq!(
        server.addr(),
        addr,
        "READY names the address the server printed"
    );

    // Phase 3: on SIGTERM, STOPPING=1 arrives and the server exits cleanly.
    let status = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap()
        .expect("the server was running");
    assert!(
        status.success(),
        "fenced exits cleanly on SIGTERM: {status}"
    );
    let stopping = next_notification(&socket).await;
    assert_eq!(stopping.lines().next(), Some("STOPPING=1"), "{stopping:?}");
}

// checks: none (operations)
#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for binary in ["fenced", "fenced-kv"] {
        let unit_name = format!("{binary}.service");
        let unit = std::fs::read_to_string(repo.join("packaging").join(&unit_name)).unwrap();
        // verify checks that ExecStart exists: point it at the binary the tests built.
        let installed = format!("/usr/local/bin/{binary} ");
        assert!(unit.contains(&installed), "{unit_name} runs {installed}");
        let built = fenced_tests::binaries::binary(binary);
        let unit = unit.replace(&installed, &format!("{} ", built.display()));
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(&unit_name);
        std::fs::write(&copy, unit).unwrap();
        let verified = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            verified.status.success() && verified.stderr.is_empty(),
            "systemd-analyze verify {unit_name}: {}\n{}",
            verified.status,
            String::from_utf8_lossy(&verified.stderr)
        );
    }
}
