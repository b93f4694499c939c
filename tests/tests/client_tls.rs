//! TLS end to end: the server serves TLS with a certificate from a test CA, and the SDK
//! connects over `https://`, trusting that CA, takes a lock and fences with it, over gRPC
//! and over the framed session.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::Duration;

use fenced_client::{AcquireOptions, Client, FramedTls};
use fenced_tests::pki::TestPki;
use fenced_tests::proxy::Proxy;
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

/// Writes the server's certificate and key into `dir`: the `--tls-cert`/`--tls-key` flags.
fn tls_flags(pki: &TestPki, dir: &std::path::Path) -> Vec<String> {
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    std::fs::write(&cert, &pki.server_cert).unwrap();
    std::fs::write(&key, &pki.server_key).unwrap();
    vec![
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ]
}

// checks: S1, S4 (grants and fences over the framed session on TLS); a framed session
// that cannot verify the server (unknown CA, or a name the certificate does not carry) takes
// nothing
#[tokio::test]
async fn the_framed_session_runs_over_tls_and_refuses_an_unknown_ca_or_name() {
    let pki = TestPki::new();
    let files = tempfile::tempdir().unwrap();
    let flags = tls_flags(&pki, files.path());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TestServer::start_with_sessions(&flags);
    let url = format!("https://localhost:{}", server.addr().port());
    // The proxy counts the framed connections; TLS passes through it untouched.
    let proxy = Proxy::start(server.session_addr().unwrap()).await;
    let framed = format!("localhost:{}", proxy.addr().port());
    let builder = |framed: &str, tls: FramedTls| {
        Client::builder(url.clone())
            .tls(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&pki.ca))
                    .domain_name("localhost"),
            )
            .framed_session(framed)
            .framed_tls(tls)
            .pause_threshold(Duration::from_secs(2))
    };

    // Phase 1: trusting the test CA, try-once acquires and releases go over the framed
    // connection, and the token fences. The name verified is the address's host,
    // "localhost", which the certificate carries.
    let client = builder(&framed, FramedTls::new(pki.ca.clone()))
        .connect()
        .await
        .unwrap();
    let first = client.try_acquire("tls/framed").await.unwrap();
    assert_eq!(
        proxy.accepted(),
        1,
        "the acquire went to the framed listener"
    );
    assert_eq!(first.fence().unwrap(), first.token());
    let first_token = first.token();
    first.release().await.unwrap();
    let second = client.try_acquire("tls/framed").await.unwrap();
    assert!(second.token() > first_token);
    second.release().await.unwrap();
    assert_eq!(
        proxy.accepted(),
        1,
        "one TLS connection carried the session"
    );
    assert!(client.uses_session());
    assert_eq!(client.describe("tls/framed").await.unwrap().holder, None);

    // Phase 2: a framed session that trusts another CA fails its handshake, says so, and
    // takes no lock (gRPC, which trusts the right CA, shows the lock free).
    let stranger = TestPki::new();
    let client = builder(&framed, FramedTls::new(stranger.ca))
        .connect()
        .await
        .unwrap();
    let error = client.try_acquire("tls/stranger").await.unwrap_err();
    assert!(error.to_string().contains("TLS"), "{error}");
    assert_eq!(client.describe("tls/stranger").await.unwrap().holder, None);

    // Phase 3: by IP address, the name verified is "127.0.0.1", which the certificate
    // does not carry: refused. Told to verify "localhost" instead, it goes through.
    let by_ip = proxy.addr().to_string();
    let client = builder(&by_ip, FramedTls::new(pki.ca.clone()))
        .connect()
        .await
        .unwrap();
    let error = client.try_acquire("tls/by-ip").await.unwrap_err();
    assert!(error.to_string().contains("TLS"), "{error}");
    assert_eq!(client.describe("tls/by-ip").await.unwrap().holder, None);
    let client = builder(&by_ip, FramedTls::new(pki.ca.clone()).domain("localhost"))
        .connect()
        .await
        .unwrap();
    let lease = client.try_acquire("tls/by-ip").await.unwrap();
    lease.release().await.unwrap();
}
