//! Authentication on the real `fenced` binary (`--auth-tokens`): calls without a listed
//! bearer token are refused with UNAUTHENTICATED and change nothing; the SDK and fencectl
//! get in with theirs; the health service stays open; a tokens file that cannot be used,
//! or the framed listener beside authentication, stops the server at start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use fenced_client::{AcquireOptions, Client};
use fenced_proto::v1 as pb;
use fenced_tests::audit::{has_kind, records_until};
use fenced_tests::binaries::binary;
use fenced_tests::process::refused_start;
use fenced_tests::server::TestServer;
use tonic::metadata::MetadataValue;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const TOKEN: &str = "alice-secret";
/// `printf %s alice-secret | sha256sum`
const TOKEN_SHA256: &str = "0c848abb03307b06cf70cd4e29c157dc81af5e94ab3eb1d0c59a120269572376";

fn tokens_file(dir: &Path) -> String {
    let path = dir.join("tokens");
    std::fs::write(&path, format!("# clients\nalice {TOKEN_SHA256}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

fn acquire(lock: &str) -> pb::AcquireRequest {
    pb::AcquireRequest {
        lock: lock.to_string(),
        holder: "auth-test".to_string(),
        ttl_ms: 30_000,
        ..pb::AcquireRequest::default()
    }
}

fn assert_unauthenticated(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.metadata().get("fenced-error").unwrap(),
        "unauthenticated",
        "{status:?}"
    );
}

/// An SDK acquire of `lock` by `client` is refused as unauthenticated, not as a transient
/// failure to retry.
async fn assert_sdk_refused(client: &Client, lock: &str) {
    let refused = client
        .acquire(lock, AcquireOptions::try_once())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            fenced_client::Error::Server {
                code: Code::Unauthenticated,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(!refused.is_transient());
}

// checks: A1, S6
// Without a token, with a wrong one, or with a malformed header, every kind of call is
// refused with UNAUTHENTICATED and nothing changes; with the listed token it is served;
// health answers everyone.
#[tokio::test]
async fn calls_without_a_listed_token_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let server = TestServer::start_with(&["--auth-tokens", &tokens]);
    let mut client = server.client().await;

    let refused = client.acquire(acquire("guarded")).await.unwrap_err();
    assert_unauthenticated(&refused);
    let refused = client
        .acquire(with_token(acquire("guarded"), "wrong-secret"))
        .await
        .unwrap_err();
    assert_unauthenticated(&refused);
    let mut basic = tonic::Request::new(acquire("guarded"));
    basic.metadata_mut().insert(
        "authorization",
        MetadataValue::from_static("Basic YWxpY2U6YWxpY2Utc2VjcmV0"),
    );
    assert_unauthenticated(&client.acquire(basic).await.unwrap_err());
    assert_unauthenticated(&client.list(pb::ListRequest::default()).await.unwrap_err());
    assert_unauthenticated(&client.watch(pb::WatchRequest::default()).await.unwrap_err());
    assert_unauthenticated(
        &client
            .describe(pb::DescribeRequest {
                lock: "guarded".to_string(),
            })
            .await
            .unwrap_err(),
    );

    // Nothing changed: the lock is free, and the listed token is served.
    let listed = client
        .list(with_token(pb::ListRequest::default(), TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.locks.is_empty(), "{listed:?}");
    let grant = client
        .acquire(with_token(acquire("guarded"), TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(grant.token > 0);

    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health stays open")
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
}

// checks: A1
// The SDK with the token takes and releases a lock; without it, its calls are refused as
// unauthenticated (not as a transient failure to retry).
#[tokio::test]
async fn the_sdk_gets_in_with_its_bearer_token_and_not_without() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let server = TestServer::start_with(&["--auth-tokens", &tokens]);

    let client = Client::builder(server.endpoint())
        .holder("sdk")
        .bearer_token(TOKEN)
        .connect()
        .await
        .unwrap();
    let lease = client
        .acquire("sdk/lock", AcquireOptions::try_once())
        .await
        .expect("the SDK with its token gets the lock");
    lease.fence().unwrap();
    let mut watch = client
        .watch_prefix("sdk/")
        .await
        .expect("watch with the token");
    lease.release().await.unwrap();
    let event = watch.next().await.unwrap().unwrap();
    assert_eq!(event.lock, "sdk/lock");

    let stranger = Client::builder(server.endpoint())
        .holder("stranger")
        .connect()
        .await
        .unwrap();
    assert_sdk_refused(&stranger, "sdk/lock").await;

    let bad = Client::builder(server.endpoint())
        .bearer_token("has a space")
        .connect()
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("bearer_token"), "{bad}");
}

// checks: A1
// fencectl reads the token from FENCED_TOKEN or --token-file; without it, it fails.
#[tokio::test]
async fn fencectl_uses_the_token_from_the_environment_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let server = TestServer::start_with(&["--auth-tokens", &tokens]);
    let fencectl = || {
        let mut command = Command::new(binary("fencectl"));
        command
            .env_remove("FENCED_TOKEN")
            .env_remove("FENCED_TOKEN_FILE")
            .args(["--endpoints", &server.endpoint(), "list"]);
        command
    };
    let without = fencectl().output().unwrap();
    assert!(!without.status.success(), "{without:?}");
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("authentication"),
        "{without:?}"
    );
    let with_env = fencectl().env("FENCED_TOKEN", TOKEN).output().unwrap();
    assert!(with_env.status.success(), "{with_env:?}");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let with_file = fencectl()
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .unwrap();
    assert!(with_file.status.success(), "{with_file:?}");
}

// checks: A1 (a tokens file that cannot be used, or the framed listener, which carries no
// credentials, beside authentication: the server does not start, and says why)
#[test]
fn the_server_refuses_to_start_with_an_unusable_tokens_file_or_the_framed_listener() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad-tokens");
    std::fs::write(&bad, "alice not-a-digest\n").unwrap();
    let good = tokens_file(dir.path());
    for (args, words) in [
        (vec!["--auth-tokens", bad.to_str().unwrap()], "line 1"),
        (
            vec!["--auth-tokens", &good, "--session-listen", "127.0.0.1:0"],
            "carries no credentials",
        ),
    ] {
        let stderr = refused_start("fenced", &args);
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
}

/// Writes `pem` to `dir/name` and returns the path as text.
fn write_pem(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.to_str().unwrap().to_string()
}

/// The server's certificate and key and the CA's certificate of `pki`, written to `dir`:
/// their paths as text.
fn write_pki(dir: &Path, pki: &fenced_tests::pki::TestPki) -> (String, String, String) {
    (
        write_pem(dir, "server.pem", &pki.server_cert),
        write_pem(dir, "server.key", &pki.server_key),
        write_pem(dir, "ca.pem", &pki.ca),
    )
}

// checks: A1
// With --client-ca: a certificate the client CA signed authenticates the SDK and fencectl;
// a client with no certificate and no token is refused UNAUTHENTICATED and changes nothing;
// a certificate from another CA fails the handshake, so it takes no lock either.
#[tokio::test]
async fn client_certificates_from_the_client_ca_authenticate_and_no_others() {
    let pki = fenced_tests::pki::TestPki::new();
    let stranger = fenced_tests::pki::TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (server_cert, server_key, ca) = write_pki(dir.path(), &pki);
    let audit = dir.path().join("audit.jsonl");
    let server = TestServer::start_with(&[
        "--tls-cert",
        &server_cert,
        "--tls-key",
        &server_key,
        "--client-ca",
        &ca,
        "--audit-log",
        audit.to_str().unwrap(),
    ]);
    let url = format!("https://localhost:{}", server.addr().port());
    let trust = || {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&pki.ca))
            .domain_name("localhost")
    };
    let connect = |tls: tonic::transport::ClientTlsConfig| {
        Client::builder(url.clone())
            .holder("mtls")
            .tls(tls)
            .connect()
    };

    let (alice_cert, alice_key) = pki.client("alice");
    let alice = connect(trust().identity(tonic::transport::Identity::from_pem(
        &alice_cert,
        &alice_key,
    )))
    .await
    .unwrap();
    let lease = alice
        .acquire("mtls/lock", AcquireOptions::try_once())
        .await
        .expect("a certificate from the client CA authenticates");
    lease.release().await.unwrap();

    let anonymous = connect(trust()).await.unwrap();
    assert_sdk_refused(&anonymous, "mtls/lock").await;

    let (mallory_cert, mallory_key) = stranger.client("alice");
    let impostor = match connect(trust().identity(tonic::transport::Identity::from_pem(
        &mallory_cert,
        &mallory_key,
    )))
    .await
    {
        Err(_) => None,
        Ok(client) => Some(
            client
                .acquire("mtls/lock", AcquireOptions::try_once())
                .await,
        ),
    };
    assert!(
        !matches!(impostor, Some(Ok(_))),
        "a certificate from another CA took a lock"
    );
    // The refused handshake and the refused anonymous call left their audit lines.
    records_until(
        &audit,
        "a tls-refused and an unauthenticated line",
        |records| has_kind(records, "tls-refused") && has_kind(records, "unauthenticated"),
    )
    .await;

    // Nothing the refused clients did changed anything.
    let view = alice.describe("mtls/lock").await.unwrap();
    assert!(view.holder.is_none(), "{view:?}");

    // fencectl with the client certificate.
    let alice_cert = write_pem(dir.path(), "alice.pem", &alice_cert);
    let alice_key = write_pem(dir.path(), "alice.key", &alice_key);
    let listed = Command::new(binary("fencectl"))
        .env_remove("FENCED_TOKEN")
        .args([
            "--endpoints",
            &url,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &alice_cert,
            "--tls-key",
            &alice_key,
            "list",
        ])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
}

// checks: A1, S5 (fenced-kv with --auth-tokens: a write without a listed token is refused
// with UNAUTHENTICATED and writes nothing; with the token it is served; health stays open)
#[tokio::test]
async fn fenced_kv_refuses_callers_without_a_listed_token_and_writes_nothing() {
    use fenced_proto::kv::v1::{GetRequest, PutRequest};
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let audit = dir.path().join("kv-audit.jsonl");
    let kv = fenced_tests::kv_server::TestKv::start_with(&[
        "--auth-tokens",
        &tokens,
        "--audit-log",
        audit.to_str().unwrap(),
    ]);
    let mut client = kv.client().await;
    let put = || PutRequest {
        resource: "orders".into(),
        key: "k".into(),
        value: "v".into(),
        token: 7,
        sequencer: Vec::new(),
    };
    let get = || GetRequest {
        resource: "orders".into(),
        key: "k".into(),
    };
    assert_unauthenticated(&client.put(put()).await.unwrap_err());
    assert_unauthenticated(&client.put(with_token(put(), "wrong")).await.unwrap_err());
    assert_unauthenticated(&client.get(get()).await.unwrap_err());
    let nothing = client
        .get(with_token(get(), TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(!nothing.found, "a refused write wrote: {nothing:?}");
    client.put(with_token(put(), TOKEN)).await.unwrap();
    let written = client
        .get(with_token(get(), TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(written.found, "{written:?}");

    let channel = tonic::transport::Endpoint::from_shared(kv.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health stays open")
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);

    // Each refused call left its line in the store's audit log, with the caller's address.
    let unauthenticated = |record: &&serde_json::Value| record["kind"] == "unauthenticated";
    let records = records_until(&audit, "three refusals' lines", |records| {
        records.iter().filter(unauthenticated).count() >= 3
    })
    .await;
    let refused: Vec<_> = records.iter().filter(unauthenticated).collect();
    assert!(
        refused.iter().all(|record| record["peer"]
            .as_str()
            .is_some_and(|peer| peer.starts_with("127.0.0.1:"))),
        "{refused:#?}"
    );
}

// checks: A1, S5 (fenced-kv with --client-ca over TLS: a certificate the client CA signed
// lets a writer in; a client with neither certificate nor token is refused
// UNAUTHENTICATED and writes nothing; a certificate from another CA fails the handshake
// and writes nothing; with --auth-tokens too, a token alone still gets in)
#[tokio::test]
async fn fenced_kv_lets_in_client_certificates_from_its_client_ca_and_no_others() {
    use fenced_proto::kv::v1::gated_kv_client::GatedKvClient;
    use fenced_proto::kv::v1::{GetRequest, PutRequest};
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let pki = fenced_tests::pki::TestPki::new();
    let stranger = fenced_tests::pki::TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (server_cert, server_key, ca) = write_pki(dir.path(), &pki);
    let tokens = tokens_file(dir.path());
    let kv = fenced_tests::kv_server::TestKv::start_with(&[
        "--tls-cert",
        &server_cert,
        "--tls-key",
        &server_key,
        "--client-ca",
        &ca,
        "--auth-tokens",
        &tokens,
    ]);
    let url = format!("https://localhost:{}", kv.addr().port());
    let connect = |identity: Option<(String, String)>| {
        let url = url.clone();
        let ca = pki.ca.clone();
        async move {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .domain_name("localhost");
            if let Some((cert, key)) = identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            let channel = Endpoint::from_shared(url)
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await?;
            Ok::<_, tonic::transport::Error>(GatedKvClient::new(channel))
        }
    };
    let put = |key: &str, token: u64| PutRequest {
        resource: "orders".into(),
        key: key.into(),
        value: "v".into(),
        token,
        sequencer: Vec::new(),
    };
    let get = |key: &str| GetRequest {
        resource: "orders".into(),
        key: key.into(),
    };

    let mut alice = connect(Some(pki.client("alice"))).await.unwrap();
    alice
        .put(put("by-certificate", 7))
        .await
        .expect("a certificate from the client CA lets the writer in");

    let mut anonymous = connect(None).await.unwrap();
    assert_unauthenticated(&anonymous.put(put("anonymous", 8)).await.unwrap_err());
    anonymous
        .put(with_token(put("by-token", 8), TOKEN))
        .await
        .expect("a listed token gets in without a certificate");

    let impostor = match connect(Some(stranger.client("alice"))).await {
        Err(_) => None,
        Ok(mut client) => Some(client.put(put("impostor", 9)).await),
    };
    assert!(
        !matches!(impostor, Some(Ok(_))),
        "a certificate from another CA wrote"
    );

    for (key, found) in [
        ("by-certificate", true),
        ("by-token", true),
        ("anonymous", false),
        ("impostor", false),
    ] {
        let answer = alice.get(get(key)).await.unwrap().into_inner();
        assert_eq!(answer.found, found, "{key}: {answer:?}");
    }
}
