//! `kill -9` of the real `fenced-kv` binary during a write storm, and a power cut of the
//! filesystem under its data (`fenced_tests::power_cut`): nothing acknowledged goes back,
//! and the mark still refuses after the restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fenced_gate::grpc::stale_tokens;
use fenced_proto::kv::v1::{FenceRequest, GetRequest, PutRequest};
use fenced_tests::kv_server::TestKv;
use fenced_tests::power_cut::{scratch_fs_or_skip, ScratchFs};
use tonic::Code;

const RESOURCES: u64 = 3;
const KEYS: u64 = 5;

/// What the clients were told: every acknowledged put (resource, key, token) and every
/// acknowledged fence (resource, token).
#[derive(Default, Clone)]
struct Acked {
    puts: Vec<(String, String, u64)>,
    fences: Vec<(String, u64)>,
}

/// Runs 16 writers against `kv`, kills it with SIGKILL once 300 more writes have been
/// acknowledged (with the storm still going; cutting the power of `power` first, when
/// given), and returns once every writer has stopped. `next` hands out tokens that only go
/// up.
async fn storm_then_kill(
    kv: &mut TestKv,
    next: &Arc<AtomicU64>,
    acked: &Arc<Mutex<Acked>>,
    power: Option<&ScratchFs>,
) {
    let client = kv.client().await;
    let acks = Arc::new(AtomicU64::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let (mut client, next, acked, acks, dead) = (
                client.clone(),
                Arc::clone(next),
                Arc::clone(acked),
                Arc::clone(&acks),
                Arc::clone(&dead),
            );
            tokio::spawn(async move {
                loop {
                    let token = next.fetch_add(1, SeqCst);
                    let resource = format!("r{}", token % RESOURCES);
                    if token % 23 == 0 {
                        let answer = client
                            .fence(FenceRequest {
                                resource: resource.clone(),
                                token,
                                sequencer: Vec::new(),
                            })
                            .await;
                        match answer {
                            Ok(_) => acked.lock().unwrap().fences.push((resource, token)),
                            Err(status) if status.code() == Code::FailedPrecondition => {}
                            Err(_) if dead.load(SeqCst) => return,
                            Err(status) => panic!("unexpected failure while alive: {status:?}"),
                        }
                        continue;
                    }
                    let key = format!("k{}", (token / RESOURCES) % KEYS);
                    let answer = client
                        .put(PutRequest {
                            resource: resource.clone(),
                            key: key.clone(),
                            value: format!("v{token}").into_bytes(),
                            token,
                            sequencer: Vec::new(),
                        })
                        .await;
                    match answer {
                        Ok(_) => {
                            acked.lock().unwrap().puts.push((resource, key, token));
                            acks.fetch_add(1, SeqCst);
                        }
                        // Racing writers: a slower one with an older token is refused.
                        Err(status) if status.code() == Code::FailedPrecondition => {}
                        Err(_) if dead.load(SeqCst) => return,
                        Err(status) => panic!("unexpected failure while alive: {status:?}"),
                    }
                }
            })
        })
        .collect();
    // Kill once a few hundred writes have been acknowledged, with the storm still going.
    let before = acks.load(SeqCst);
    for _ in 0..6000 {
        if acks.load(SeqCst) >= before + 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        acks.load(SeqCst) >= before + 300,
        "the storm never got going"
    );
    dead.store(true, SeqCst);
    if let Some(fs) = power {
        fs.cut_power();
    }
    kv.kill();
    for writer in writers {
        writer.await.unwrap();
    }
}

/// After a restart: every key holds at least its highest acknowledged write (and a value
/// consistent with the token that wrote it), and every resource refuses a write below its
/// highest acknowledged token, reporting a mark at least that high.
async fn nothing_went_back(kv: &TestKv, acked: &Acked) {
    let mut client = kv.client().await;
    let mut per_key: HashMap<(String, String), u64> = HashMap::new();
    let mut per_resource: HashMap<String, u64> = HashMap::new();
    for (resource, key, token) in &acked.puts {
        let e = per_key.entry((resource.clone(), key.clone())).or_default();
        *e = (*e).max(*token);
        let m = per_resource.entry(resource.clone()).or_default();
        *m = (*m).max(*token);
    }
    for (resource, token) in &acked.fences {
        let m = per_resource.entry(resource.clone()).or_default();
        *m = (*m).max(*token);
    }
    for ((resource, key), highest) in &per_key {
        let stored = client
            .get(GetRequest {
                resource: resource.clone(),
                key: key.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(stored.found, "{resource}/{key}: acknowledged data lost");
        assert!(
            stored.token >= *highest,
            "{resource}/{key} went back: token {} < acknowledged {highest}",
            stored.token
        );
        assert_eq!(
            stored.value,
            format!("v{}", stored.token).into_bytes(),
            "{resource}/{key}: value and token came from different writes"
        );
    }
    for (resource, mark) in &per_resource {
        let below = mark - 1;
        let status = client
            .put(PutRequest {
                resource: resource.clone(),
                key: "probe".into(),
                value: b"zombie".to_vec(),
                token: below,
                sequencer: Vec::new(),
            })
            .await
            .expect_err("a write below the acknowledged mark must be refused");
        let (presented, current) = stale_tokens(&status).expect("a stale-token refusal");
        assert_eq!(presented.get(), below);
        assert!(
            current.get() >= *mark,
            "{resource}: mark went back to {current} below acknowledged {mark}"
        );
    }
}

// checks: S5
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_write_storm_takes_nothing_back() {
    let mut kv = TestKv::start();
    let next = Arc::new(AtomicU64::new(1));
    let acked = Arc::new(Mutex::new(Acked::default()));
    // Two rounds: storm, kill -9, restart on the same data directory, check everything
    // acknowledged so far (the first round's again after the second crash).
    for round in 1..=2 {
        storm_then_kill(&mut kv, &next, &acked, None).await;
        kv.restart();
        let so_far = acked.lock().unwrap().clone();
        nothing_went_back(&kv, &so_far).await;
        eprintln!(
            "round {round}: all {} puts and {} fences acknowledged so far survived",
            so_far.puts.len(),
            so_far.fences.len()
        );
    }
}

// checks: S5 (under a power cut: acknowledged writes and marks were on the disk, not only in
// the page cache that `kill -9` leaves alone)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_power_cut_during_a_write_storm_takes_nothing_back() {
    let Some(mut fs) = scratch_fs_or_skip("a_power_cut_during_a_write_storm") else {
        return;
    };
    let mut kv = TestKv::start_in(fs.path().join("data"), &[]);
    let next = Arc::new(AtomicU64::new(1));
    let acked = Arc::new(Mutex::new(Acked::default()));
    for round in 1..=2 {
        storm_then_kill(&mut kv, &next, &acked, Some(&fs)).await;
        fs.remount();
        kv.restart();
        let so_far = acked.lock().unwrap().clone();
        nothing_went_back(&kv, &so_far).await;
        eprintln!(
            "round {round}: all {} puts and {} fences acknowledged so far survived a power cut",
            so_far.puts.len(),
            so_far.fences.len()
        );
    }
}
