//! TLS end to end: the server serves TLS with a certificate from a test CA, and the SDK
//! connects over `https://`, trusting that CA, takes a lock and fences with it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::Duration;

use fenced_client::{AcquireOptions, Client};
use fenced_tests::pki::TestPki;
use fenced_tests::server::TestServer;
use tonic::transport::{Certificate, ClientTlsConfig};

// checks: S4 (the SDK's deadline and fence work the same over TLS)
#[tokio::test]
async fn the_sdk_takes_a_lock_over_tls_and_refuses_an_unknown_ca() {
    let pki = TestPki::new();
    let files = tempfile::tempdir().unwrap();
    let cert = files.path().join("server.pem");
    let key = files.path().join("server.key");
    std::fs::write(&cert, &pki.server_cert).unwrap();
    std::fs::write(&key, &pki.server_key).unwrap();
    let server = TestServer::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let url = format!("https://localhost:{}", server.addr().port());

    // Phase 1: trusting the test CA, the SDK connects, acquires and fences.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let client = Client::builder(url.clone())
        .tls(tls)
        .connect()
        .await
        .unwrap();
    let lease = client
        .acquire(
            "tls/lock",
            AcquireOptions::try_once().ttl(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_eq!(lease.fence().unwrap(), lease.token());
    lease.release().await.unwrap();

    // Phase 2: a client that trusts another CA is refused: no lock is taken.
    let stranger = TestPki::new();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&stranger.ca))
        .domain_name("localhost");
    let refused = match Client::builder(url).tls(tls).connect().await {
        Err(_) => true,
        Ok(client) => client
            .acquire("tls/other", AcquireOptions::try_once())
            .await
            .is_err(),
    };
    assert!(refused, "a client trusting another CA got through");
}
