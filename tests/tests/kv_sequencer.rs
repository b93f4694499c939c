//! Signed tokens (sequencers) end to end, against the real binaries: `fencectl keygen`
//! makes the keys, `fenced --signing-key` signs every grant (try-once over the gRPC
//! `Session`, over the framed listener, and a queued handoff), and
//! `fenced-kv --verify-keys` takes a write only with a genuine sequencer of the resource's
//! lock. Every forged or borrowed sequencer, and a bare token, is refused and leaves the
//! stored value and the mark as they were.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fenced_client::{AcquireOptions, Lease};
use fenced_proto::kv::v1::gated_kv_client::GatedKvClient;
use fenced_proto::kv::v1::{FenceRequest, GetRequest, PutRequest};
use fenced_proto::metadata::{FENCING_SEQUENCER, FENCING_TOKEN, SEQUENCER_REFUSED};
use fenced_tests::binaries::binary;
use fenced_tests::kv_server::TestKv;
use fenced_tests::process::refused_start;
use fenced_tests::server::TestServer;
use fenced_types::sequencer::{generate_key, SigningKey, SIGNATURE_BYTES};
use fenced_types::{KeyId, LockName, Sequencer};
use tonic::transport::Channel;
use tonic::Code;

/// `fencectl keygen KEY_ID` into `dir`, appending to `dir/fenced.pub`; the printed line.
fn keygen(dir: &Path, key_id: &str) -> String {
    let output = Command::new(binary("fencectl"))
        .args(["keygen", key_id, "--private-key"])
        .arg(dir.join(format!("{key_id}.pk8")))
        .arg("--public-keys")
        .arg(dir.join("fenced.pub"))
        .output()
        .expect("fencectl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A put of `value` to `orders/k`, carrying nothing yet.
fn put(resource: &str, value: &str) -> PutRequest {
    PutRequest {
        resource: resource.into(),
        key: "k".into(),
        value: value.into(),
        token: 0,
        sequencer: Vec::new(),
    }
}

/// A put carrying `sequencer` as `fencing-sequencer` metadata (text form, as the SDK
/// sends it) and nothing else.
fn put_with_metadata(value: &str, sequencer: &str) -> tonic::Request<PutRequest> {
    let mut request = tonic::Request::new(put("orders", value));
    request
        .metadata_mut()
        .insert(FENCING_SEQUENCER, sequencer.parse().unwrap());
    request
}

/// `orders/k`'s value and the token that wrote it.
async fn stored(kv: &mut GatedKvClient<Channel>) -> (String, u64) {
    let reply = kv
        .get(GetRequest {
            resource: "orders".into(),
            key: "k".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.found);
    (String::from_utf8(reply.value).unwrap(), reply.token)
}

/// Checks a refusal: its code and `fencing-sequencer-refused` kind, and that it names
/// `words`.
fn refused(status: tonic::Status, code: Code, kind: &str, words: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(SEQUENCER_REFUSED)
            .map(|v| v.to_str().unwrap()),
        Some(kind),
        "{status:?}"
    );
    for word in words {
        assert!(
            status.message().contains(word),
            "{word:?} not in {status:?}"
        );
    }
}

/// The lease's sequencer, which a signing server always sends.
fn sequencer_of(lease: &Lease) -> Sequencer {
    lease
        .fence_sequencer()
        .unwrap()
        .expect("a signing server sends a sequencer with every grant")
        .clone()
}

// checks: S5, S8
#[tokio::test]
async fn forged_borrowed_and_bare_tokens_are_refused_and_nothing_is_written() {
    // Phase 1: keys. k1 is retired but still listed (rotation); k2 signs.
    let keys = tempfile::tempdir().unwrap();
    let k1_line = keygen(keys.path(), "k1");
    let k2_line = keygen(keys.path(), "k2");
    assert!(k1_line.starts_with("k1 ") && k2_line.starts_with("k2 "));
    let file = std::fs::read_to_string(keys.path().join("fenced.pub")).unwrap();
    assert_eq!(file, format!("{k1_line}\n{k2_line}\n"));
    let public_keys = keys.path().join("fenced.pub");

    // Phase 2: the server signs with k2; the store demands sequencers.
    let k2_key = keys.path().join("k2.pk8");
    let server = TestServer::start_with_sessions(&[
        "--signing-key",
        k2_key.to_str().unwrap(),
        "--signing-key-id",
        "k2",
    ]);
    let audit = keys.path().join("kv-audit.jsonl");
    let store = TestKv::start_with(&[
        "--verify-keys",
        public_keys.to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
    ]);
    let mut kv = store.client().await;

    // Phase 3: the holder writes with its sequencer, which the SDK attaches.
    let client = server.sdk("holder").await;
    let lease = client
        .acquire("orders", AcquireOptions::try_once())
        .await
        .unwrap();
    let genuine = sequencer_of(&lease);
    assert_eq!(genuine.key_id().as_str(), "k2");
    assert_eq!(
        (genuine.lock().as_str(), genuine.token()),
        ("orders", lease.token())
    );
    let request = lease.request(put("orders", "v1")).unwrap();
    kv.put(request).await.unwrap();
    assert_eq!(stored(&mut kv).await, ("v1".into(), lease.token().get()));
    let written = stored(&mut kv).await;

    // Phase 4: each forgery is refused, and nothing changes.
    let token = lease.token().get();
    // A bare token, the holder's very own (anyone can read it from Describe).
    let seen = client.describe("orders").await.unwrap();
    assert_eq!(seen.holder.map(|h| h.token.get()), Some(token));
    let mut bare = tonic::Request::new(put("orders", "bare"));
    bare.metadata_mut()
        .insert(FENCING_TOKEN, token.to_string().parse().unwrap());
    let status = kv.put(bare).await.unwrap_err();
    refused(
        status,
        Code::PermissionDenied,
        "required",
        &["demands a signed sequencer", &token.to_string()],
    );
    let mut body_only = put("orders", "bare");
    body_only.token = token + 1;
    let status = kv.put(body_only).await.unwrap_err();
    refused(
        status,
        Code::PermissionDenied,
        "required",
        &["bare fencing token"],
    );

    // Made up: k2's id, a higher token, a signature of zeros.
    let made_up = Sequencer::from_parts(
        LockName::new("orders").unwrap(),
        fenced_types::FencingToken::new(token + 1_000).unwrap(),
        KeyId::new("k2").unwrap(),
        [0u8; SIGNATURE_BYTES],
    );
    let status = kv
        .put(put_with_metadata("made-up", &made_up.to_text()))
        .await
        .unwrap_err();
    refused(
        status,
        Code::PermissionDenied,
        "bad-signature",
        &["k2", "orders", &(token + 1_000).to_string()],
    );

    // The genuine sequencer with its token raised.
    let mut tampered = genuine.encode();
    let at = tampered.len() - SIGNATURE_BYTES - 8;
    tampered[at..at + 8].copy_from_slice(&(token + 1_000).to_be_bytes());
    let mut body = put("orders", "tampered-token");
    body.sequencer = tampered;
    let status = kv.put(body).await.unwrap_err();
    refused(
        status,
        Code::PermissionDenied,
        "bad-signature",
        &["forged or tampered"],
    );

    // The genuine sequencer with one bit of its signature flipped.
    let mut flipped = genuine.encode();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x80;
    let mut body = put("orders", "tampered-signature");
    body.sequencer = flipped;
    let status = kv.put(body).await.unwrap_err();
    refused(status, Code::PermissionDenied, "bad-signature", &["k2"]);

    // A real key pair that signs correctly, but that no verifier lists.
    let stranger_id = KeyId::new("k9").unwrap();
    let stranger = generate_key(&stranger_id).unwrap();
    let stranger = SigningKey::from_pkcs8(stranger_id, &stranger.pkcs8).unwrap();
    let unknown = stranger.sign(
        &LockName::new("orders").unwrap(),
        fenced_types::FencingToken::new(token + 1_000).unwrap(),
    );
    let status = kv
        .put(put_with_metadata("unknown-key", &unknown.to_text()))
        .await
        .unwrap_err();
    refused(
        status,
        Code::PermissionDenied,
        "unknown-key",
        &["unknown key \"k9\""],
    );

    // Borrowed: a genuine, newer sequencer, of another lock.
    let other = client
        .acquire("invoices", AcquireOptions::try_once())
        .await
        .unwrap();
    let borrowed = sequencer_of(&other);
    assert!(borrowed.token() > lease.token());
    let status = kv
        .put(put_with_metadata("borrowed", &borrowed.to_text()))
        .await
        .unwrap_err();
    refused(
        status,
        Code::PermissionDenied,
        "other-lock",
        &["invoices", "orders"],
    );
    // ...nor can it fence the resource.
    let status = kv
        .fence(FenceRequest {
            resource: "orders".into(),
            token: 0,
            sequencer: borrowed.encode(),
        })
        .await
        .unwrap_err();
    refused(status, Code::PermissionDenied, "other-lock", &["invoices"]);

    // Garbage and truncated bytes: bad input, no panic.
    let status = kv
        .put(put_with_metadata("garbage", "%%%%"))
        .await
        .unwrap_err();
    refused(
        status,
        Code::InvalidArgument,
        "malformed",
        &["malformed sequencer"],
    );
    let mut body = put("orders", "truncated");
    body.sequencer = genuine.encode()[..20].to_vec();
    let status = kv.put(body).await.unwrap_err();
    refused(
        status,
        Code::InvalidArgument,
        "malformed",
        &["malformed sequencer"],
    );

    assert_eq!(
        stored(&mut kv).await,
        written,
        "a refused write changed the value"
    );
    // The mark did not move either: the holder still writes with its own sequencer.
    kv.put(lease.request(put("orders", "v2")).unwrap())
        .await
        .unwrap();
    assert_eq!(stored(&mut kv).await, ("v2".into(), token));

    // Phase 5: the next holder gets the lock by a queued handoff, with its own sequencer;
    // its write goes in and shuts the first holder out (S5 on verified tokens).
    let next_client = server.sdk("next").await;
    let waiting = tokio::spawn(async move {
        let lease = next_client
            .acquire("orders", AcquireOptions::wait(Duration::from_secs(30)))
            .await
            .unwrap();
        (next_client, lease)
    });
    // Once the waiter is in the queue, hand over.
    let mut queued = false;
    for _ in 0..200 {
        if client.describe("orders").await.unwrap().waiters == 1 {
            queued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(queued, "the next holder never queued");
    let first = genuine;
    lease.release().await.unwrap();
    let (_next_client, next) = waiting.await.unwrap();
    let handed = sequencer_of(&next);
    assert!(handed.token() > first.token());
    kv.put(next.request(put("orders", "v3")).unwrap())
        .await
        .unwrap();
    let status = kv
        .put(put_with_metadata("zombie", &first.to_text()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(stored(&mut kv).await, ("v3".into(), handed.token().get()));

    // Phase 6: grants over the framed Session listener carry a sequencer too.
    let framed = fenced_client::Client::builder(server.endpoint())
        .holder("framed")
        .framed_session(server.session_addr().unwrap().to_string())
        .connect()
        .await
        .unwrap();
    let over_framed = framed
        .acquire("framed/seq", AcquireOptions::try_once())
        .await
        .unwrap();
    assert_eq!(sequencer_of(&over_framed).lock().as_str(), "framed/seq");

    // Every refusal above left its line in the store's audit log: each kind of refused
    // sequencer, and the genuine but stale one with both tokens.
    let records = fenced_tests::audit::records_until(&audit, "a stale token's line", |records| {
        records
            .iter()
            .any(|record| record["code"] == "FailedPrecondition")
    })
    .await;
    let kinds: std::collections::BTreeSet<&str> = records
        .iter()
        .filter_map(|record| record["sequencer_refused"].as_str())
        .collect();
    for kind in ["bad-signature", "other-lock", "unknown-key"] {
        assert!(kinds.contains(kind), "no {kind} line: {records:#?}");
    }
    let stale = records
        .iter()
        .find(|record| record["code"] == "FailedPrecondition")
        .unwrap();
    assert_eq!(stale["kind"], "write-refused");
    assert_eq!(stale["resource"], "orders");
    assert_eq!(stale["token"], first.token().get().to_string(), "{stale}");
    assert_eq!(
        stale["current"],
        handed.token().get().to_string(),
        "{stale}"
    );
    assert!(
        stale["peer"]
            .as_str()
            .is_some_and(|peer| peer.starts_with("127.0.0.1:")),
        "{stale}"
    );
}

// A server without a signing key sends no sequencer (the default), and a store without
// keys takes bare tokens as before.
// checks: S5, S8
#[tokio::test]
async fn without_keys_there_are_no_sequencers_and_bare_tokens_work() {
    let server = TestServer::start();
    let store = TestKv::start();
    let mut kv = store.client().await;
    let client = server.sdk("plain").await;
    let lease = client
        .acquire("orders", AcquireOptions::try_once())
        .await
        .unwrap();
    assert_eq!(lease.fence_sequencer().unwrap(), None);
    let request = lease.request(put("orders", "v1")).unwrap();
    assert!(request.metadata().get(FENCING_SEQUENCER).is_none());
    kv.put(request).await.unwrap();
    assert_eq!(stored(&mut kv).await, ("v1".into(), lease.token().get()));
}

// A store given an unusable public-keys file does not start, and says why.
// checks: S8
#[test]
fn fenced_kv_refuses_to_start_with_a_bad_public_keys_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pub");
    std::fs::write(&bad, "k1 not-a-key\n").unwrap();
    let stderr = refused_start("fenced-kv", &["--verify-keys", bad.to_str().unwrap()]);
    assert!(
        stderr.contains("bad.pub") && stderr.contains("line 1"),
        "{stderr}"
    );
}
