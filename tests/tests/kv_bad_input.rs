//! Bad input to `fenced-kv`: missing or malformed tokens, bad resource names and keys,
//! oversize values. Each gets `INVALID_ARGUMENT` with a message naming the problem, and
//! changes nothing: afterwards a write with token 1 is still accepted (no mark was raised)
//! and no key was created.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fenced_proto::kv::v1::gated_kv_client::GatedKvClient;
use fenced_proto::kv::v1::{DeleteRequest, FenceRequest, GetRequest, PutRequest};
use fenced_proto::metadata::FENCING_TOKEN;
use fenced_tests::kv_server::TestKv;
use tonic::transport::Channel;
use tonic::{Code, Status};

fn put(resource: &str, key: &str, value: Vec<u8>, token: u64) -> PutRequest {
    PutRequest {
        resource: resource.into(),
        key: key.into(),
        value,
        token,
        sequencer: Vec::new(),
    }
}

fn with_token_metadata<T>(message: T, raw: &[u8]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = tonic::metadata::MetadataValue::try_from(raw).unwrap();
    request.metadata_mut().insert(FENCING_TOKEN, value);
    request
}

fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, names: &str) {
    let status = result.expect_err("bad input must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(names),
        "message {:?} should name the problem ({names:?})",
        status.message()
    );
}

/// Nothing was written to `orders` (no key, no mark): token 1 is still accepted.
async fn assert_untouched(client: &mut GatedKvClient<Channel>) {
    for key in ["k"] {
        let got = client
            .get(GetRequest {
                resource: "orders".into(),
                key: key.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!got.found, "a refused request wrote {key}");
    }
    let reply = client
        .put(put("orders", "canary", b"ok".to_vec(), 1))
        .await
        .expect("token 1 is accepted: no refused request raised the mark")
        .into_inner();
    assert_eq!(reply.mark, 1);
}

// checks: S5
#[tokio::test]
async fn missing_and_malformed_tokens_are_refused_and_change_nothing() {
    let kv = TestKv::start();
    let mut client = kv.client().await;

    // No token anywhere.
    assert_invalid(
        client.put(put("orders", "k", b"v".to_vec(), 0)).await,
        "no fencing token",
    );
    assert_invalid(
        client
            .delete(DeleteRequest {
                resource: "orders".into(),
                key: "k".into(),
                token: 0,
                sequencer: Vec::new(),
            })
            .await,
        "no fencing token",
    );
    assert_invalid(
        client
            .fence(FenceRequest {
                resource: "orders".into(),
                token: 0,
                sequencer: Vec::new(),
            })
            .await,
        "no fencing token",
    );
    // Malformed metadata, refused by the interceptor before the handler runs.
    for raw in [
        &b"abc"[..],
        b"0",
        b"-1",
        b"1.5",
        b"99999999999999999999",
        b"",
    ] {
        let request = with_token_metadata(put("orders", "k", b"v".to_vec(), 0), raw);
        assert_invalid(client.put(request).await, "fencing token");
    }
    // Body and metadata disagree.
    let request = with_token_metadata(put("orders", "k", b"v".to_vec(), 100), b"101");
    assert_invalid(client.put(request).await, "differs");

    assert_untouched(&mut client).await;
}

// checks: S5
#[tokio::test]
async fn bad_names_keys_and_oversize_values_are_refused_and_change_nothing() {
    let kv = TestKv::start_with(&["--max-value-bytes", "1024"]);
    let mut client = kv.client().await;

    assert_invalid(
        client.put(put("", "k", b"v".to_vec(), 100)).await,
        "name is empty",
    );
    assert_invalid(
        client.put(put("ord\ners", "k", b"v".to_vec(), 100)).await,
        "control character",
    );
    assert_invalid(
        client
            .put(put(&"x".repeat(257), "k", b"v".to_vec(), 100))
            .await,
        "257 bytes",
    );
    assert_invalid(
        client
            .fence(FenceRequest {
                resource: String::new(),
                token: 100,
                sequencer: Vec::new(),
            })
            .await,
        "name is empty",
    );
    assert_invalid(
        client
            .get(GetRequest {
                resource: String::new(),
                key: "k".into(),
            })
            .await,
        "name is empty",
    );
    assert_invalid(
        client.put(put("orders", "", b"v".to_vec(), 100)).await,
        "key is empty",
    );
    assert_invalid(
        client
            .put(put("orders", &"k".repeat(1025), b"v".to_vec(), 100))
            .await,
        "key is 1025 bytes",
    );
    assert_invalid(
        client.put(put("orders", "k", vec![0u8; 1025], 100)).await,
        "value is 1025 bytes long: values are at most 1024 bytes",
    );

    assert_untouched(&mut client).await;
    // The limit is inclusive, and the server kept serving throughout.
    client
        .put(put("orders", "k", vec![0u8; 1024], 1))
        .await
        .expect("a value of exactly the limit is fine");
}

// checks: S5
#[tokio::test]
async fn the_default_limit_is_one_mebibyte() {
    let kv = TestKv::start();
    let mut client = kv.client().await;
    assert_invalid(
        client
            .put(put("orders", "k", vec![1u8; 1024 * 1024 + 1], 100))
            .await,
        "values are at most 1048576 bytes",
    );
    assert_untouched(&mut client).await;
}
