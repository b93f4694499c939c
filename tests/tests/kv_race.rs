//! Racing writers against a real `fenced-kv` over gRPC: many tokio tasks, random tokens,
//! random order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use fenced_gate::conformance::{check_history, Observed, Rng};
use fenced_gate::grpc::stale_tokens;
use fenced_proto::kv::v1::{GetRequest, PutRequest};
use fenced_proto::metadata::FENCING_TOKEN;
use fenced_tests::kv_server::TestKv;
use tonic::Code;

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A put whose token travels in the body or, every other time, only as metadata.
fn put(resource: &str, key: &str, token: u64, as_metadata: bool) -> tonic::Request<PutRequest> {
    let mut request = tonic::Request::new(PutRequest {
        resource: resource.into(),
        key: key.into(),
        value: format!("v{token}").into_bytes(),
        token: if as_metadata { 0 } else { token },
        sequencer: Vec::new(),
    });
    if as_metadata {
        request
            .metadata_mut()
            .insert(FENCING_TOKEN, token.to_string().parse().unwrap());
    }
    request
}

// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_never_leave_a_lower_token_on_top() {
    // Phase 1: a real fenced-kv, 32 tasks, 25 writes each, tokens drawn at random, each
    // task yielding a random number of times between writes so the order is shuffled.
    let kv = TestKv::start();
    let client = kv.client().await;
    let clock = Arc::new(AtomicU64::new(0));
    let seed = seed();
    let tasks: Vec<_> = (0..32u64)
        .map(|task| {
            let (mut client, clock) = (client.clone(), Arc::clone(&clock));
            tokio::spawn(async move {
                let mut rng = Rng::new(seed ^ (task + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let mut history = Vec::new();
                for _ in 0..25 {
                    for _ in 0..rng.range(0, 3) {
                        tokio::task::yield_now().await;
                    }
                    let token = rng.range(1, 500);
                    let as_metadata = rng.range(0, 1) == 1;
                    let start = clock.fetch_add(1, SeqCst);
                    let answer = client.put(put("orders", "k", token, as_metadata)).await;
                    let end = clock.fetch_add(1, SeqCst);
                    let result = match answer {
                        Ok(reply) => Ok(reply.into_inner().mark),
                        Err(status) => {
                            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                            let (presented, current) =
                                stale_tokens(&status).expect("both tokens in metadata");
                            assert_eq!(presented.get(), token);
                            assert!(status
                                .message()
                                .contains(&format!("presented {token}, current {current}")));
                            Err(current.get())
                        }
                    };
                    history.push(Observed {
                        start,
                        end,
                        token,
                        result,
                    });
                }
                history
            })
        })
        .collect();
    let mut history = Vec::new();
    for task in tasks {
        history.extend(task.await.unwrap());
    }

    // Phase 2: no accepted token below an earlier accepted one, refusals report real marks,
    // and the survivor is the highest accepted write, with its own value.
    let stored = client
        .clone()
        .get(GetRequest {
            resource: "orders".into(),
            key: "k".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stored.found);
    check_history(&history, Some(stored.token));
    assert_eq!(
        stored.value,
        format!("v{}", stored.token).into_bytes(),
        "seed {seed}"
    );
    let accepted = history.iter().filter(|o| o.result.is_ok()).count();
    let refused = history.len() - accepted;
    assert!(
        accepted > 0 && refused > 0,
        "a race with no refusals raced nothing"
    );
}

// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_mark_per_resource_guards_every_key() {
    // Phase 1: tasks write random keys of three resources with random tokens.
    let kv = TestKv::start();
    let client = kv.client().await;
    let seed = seed();
    let tasks: Vec<_> = (0..24u64)
        .map(|task| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(seed ^ (task + 7).wrapping_mul(0xD1B5_4A32_D192_ED03));
                let mut accepted = Vec::new();
                for _ in 0..20 {
                    let resource = format!("r{}", rng.range(0, 2));
                    let key = format!("k{}", rng.range(0, 3));
                    let token = rng.range(1, 300);
                    match client.put(put(&resource, &key, token, false)).await {
                        Ok(_) => accepted.push((resource, key, token)),
                        Err(status) => assert_eq!(status.code(), Code::FailedPrecondition),
                    }
                    tokio::task::yield_now().await;
                }
                accepted
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for task in tasks {
        accepted.extend(task.await.unwrap());
    }

    // Phase 2: each key holds its highest accepted write (accepted writes of a resource
    // are ordered by token), and each resource refuses anything below its highest token.
    let mut highest_per_key: HashMap<(String, String), u64> = HashMap::new();
    let mut highest_per_resource: HashMap<String, u64> = HashMap::new();
    for (resource, key, token) in &accepted {
        let entry = highest_per_key
            .entry((resource.clone(), key.clone()))
            .or_default();
        *entry = (*entry).max(*token);
        let mark = highest_per_resource.entry(resource.clone()).or_default();
        *mark = (*mark).max(*token);
    }
    let mut client = client.clone();
    for ((resource, key), highest) in &highest_per_key {
        let stored = client
            .get(GetRequest {
                resource: resource.clone(),
                key: key.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stored.token, *highest, "{resource}/{key} (seed {seed})");
        assert_eq!(stored.value, format!("v{highest}").into_bytes());
    }
    for (resource, mark) in &highest_per_resource {
        if *mark > 1 {
            let status = client
                .put(put(resource, "never-written", mark - 1, false))
                .await
                .unwrap_err();
            assert_eq!(stale_tokens(&status).map(|(_, c)| c.get()), Some(*mark));
        }
    }
}
