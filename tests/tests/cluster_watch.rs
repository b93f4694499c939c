//! Watching a three-member cluster of real `fenced` processes: every member serves Watch
//! with the same revisions, and an SDK watch on the leader resumes on another member when
//! the leader is killed with SIGKILL, missing and repeating nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fenced_client::LockEventKind;
use fenced_proto::v1::{self as pb};
use fenced_tests::cluster::{connect, Router, TestCluster};

/// How long one call may keep looking for the leader.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long the watchers get to see every acknowledged grant once writing stops.
const CATCH_UP: Duration = Duration::from_secs(30);

/// One event as compared between watchers: revision, kind, lock, token.
type Seen = (u64, &'static str, String, u64);

fn kind_name(kind: pb::watch_event::Kind) -> &'static str {
    match kind {
        pb::watch_event::Kind::Acquired => "acquired",
        pb::watch_event::Kind::Released => "released",
        pb::watch_event::Kind::Expired => "expired",
        pb::watch_event::Kind::Progress => "progress",
        pb::watch_event::Kind::Unspecified => "unspecified",
    }
}

fn sdk_kind_name(kind: LockEventKind) -> &'static str {
    match kind {
        LockEventKind::Acquired => "acquired",
        LockEventKind::Released => "released",
        LockEventKind::Expired => "expired",
    }
}

/// Takes and releases locks under `w/` through whoever leads until `stop`, recording the
/// token of every acknowledged grant.
async fn write(
    endpoints: Vec<String>,
    writer: usize,
    acked: Arc<Mutex<Vec<u64>>>,
    stop: Arc<Mutex<bool>>,
) {
    let mut router = Router::new(endpoints);
    let mut round = 0u64;
    while !*stop.lock().unwrap() {
        round += 1;
        let request = fenced_tests::cluster::new_lease_acquire(
            &format!("w/{writer}/{round}"),
            &format!("writer-{writer}"),
            3_000,
        );
        let Ok(grant) = router.acquire(PATIENCE, &request).await else {
            continue;
        };
        acked.lock().unwrap().push(grant.token);
        let release = pb::ReleaseRequest {
            lease_id: grant.lease_id,
            ..pb::ReleaseRequest::default()
        };
        // A release lost in the failover leaves the lease to expire: an event as well.
        let _ = router
            .call(PATIENCE, |mut client| {
                let release = release.clone();
                async move {
                    client
                        .release(release)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `seen` holds an `acquired` event for every token in `acked`.
fn covers(seen: &[Seen], acked: &[u64]) -> bool {
    let granted: std::collections::BTreeSet<u64> = seen
        .iter()
        .filter(|event| event.1 == "acquired")
        .map(|event| event.3)
        .collect();
    acked.iter().all(|token| granted.contains(token))
}

// checks: W1, C1, S1
// An SDK watch opened on the leader and a raw watch opened on a follower follow every
// change under `w/` while four writers take and release locks and the leader is killed
// with SIGKILL. Afterwards: the SDK watch resumed elsewhere and its revisions are
// contiguous (nothing missed: every event is under the prefix) and strictly increasing
// (nothing repeated); every acknowledged grant shows as exactly one `acquired` event with
// its token; and the follower, which never failed, saw the very same events with the very
// same revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_across_the_leaders_kill_missing_and_repeating_nothing() {
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    let leader = cluster.leader(&[]).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    // The SDK tries the leader first, so its watch opens there.
    let others: Vec<String> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| cluster.endpoint(id))
        .collect();
    let client = fenced_client::Client::builder(cluster.endpoint(leader))
        .endpoints(others)
        .connect()
        .await
        .unwrap();
    let mut sdk_watch = client.watch_prefix("w/").await.unwrap();

    let mut raw = connect(&cluster.endpoint(follower)).await.unwrap();
    let mut follower_watch = raw
        .watch(pb::WatchRequest {
            prefix: "w/".to_string(),
            ..pb::WatchRequest::default()
        })
        .await
        .expect("a member that does not lead serves Watch")
        .into_inner();

    let sdk_seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let sdk_reader = {
        let sdk_seen = sdk_seen.clone();
        tokio::spawn(async move {
            while let Some(event) = sdk_watch.next().await {
                let event = event.expect("the SDK watch resumes instead of failing");
                sdk_seen.lock().unwrap().push((
                    event.revision,
                    sdk_kind_name(event.kind),
                    event.lock,
                    event.token.get(),
                ));
            }
        })
    };
    let follower_seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let follower_reader = {
        let follower_seen = follower_seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(event)) = follower_watch.message().await {
                if event.kind() == pb::watch_event::Kind::Progress {
                    continue;
                }
                follower_seen.lock().unwrap().push((
                    event.revision,
                    kind_name(event.kind()),
                    event.lock,
                    event.token,
                ));
            }
        })
    };

    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(Mutex::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            tokio::spawn(write(
                cluster.endpoints(),
                writer,
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Some traffic, the kill, more traffic on the new leader.
    let wait_for_grants = |count: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + PATIENCE;
            while acked.lock().unwrap().len() < count {
                assert!(Instant::now() < deadline, "the cluster granted too little");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for_grants(40).await;
    let before_kill = sdk_seen.lock().unwrap().len();
    cluster.member(leader).kill();
    let acked_at_kill = acked.lock().unwrap().len();
    wait_for_grants(acked_at_kill + 40).await;
    *stop.lock().unwrap() = true;
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // Both watchers see every acknowledged grant.
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let sdk_done = covers(&sdk_seen.lock().unwrap(), &acked);
        let follower_done = covers(&follower_seen.lock().unwrap(), &acked);
        if sdk_done && follower_done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every acknowledged grant was watched (sdk: {sdk_done}, follower: {follower_done})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Events still in flight (releases, expiries of leases whose release was lost) settle.
    tokio::time::sleep(Duration::from_secs(4)).await;
    sdk_reader.abort();
    follower_reader.abort();
    let sdk_seen = sdk_seen.lock().unwrap().clone();
    let follower_seen = follower_seen.lock().unwrap().clone();
    assert!(before_kill > 0, "the SDK watch saw events before the kill");

    let revisions: Vec<u64> = sdk_seen.iter().map(|event| event.0).collect();
    for pair in revisions.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "the SDK watch's revisions skip or repeat: {revisions:?}"
        );
    }
    let mut grants: BTreeMap<u64, usize> = BTreeMap::new();
    for event in sdk_seen.iter().filter(|event| event.1 == "acquired") {
        *grants.entry(event.3).or_default() += 1;
    }
    assert!(
        grants.values().all(|count| *count == 1),
        "a grant was watched twice: {grants:?}"
    );
    assert!(covers(&sdk_seen, &acked));

    // The follower saw the same events with the same revisions (it may have seen fewer of
    // the last ones if the sleep above ended first on one side: compare the common part).
    let common = sdk_seen.len().min(follower_seen.len());
    assert!(common >= acked.len(), "too few events to compare");
    assert_eq!(sdk_seen[..common], follower_seen[..common]);
}

/// Events under `prefix` from `start_revision` on `endpoint`, until `count` of them came
/// (progress events left out), or the refusal that ended the watch.
async fn watch_from(
    endpoint: &str,
    prefix: &str,
    start_revision: u64,
    count: usize,
) -> Result<Vec<Seen>, tonic::Status> {
    let mut client = connect(endpoint).await.unwrap();
    let mut stream = client
        .watch(pb::WatchRequest {
            prefix: prefix.to_string(),
            start_revision,
            ..pb::WatchRequest::default()
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < count {
        let event = tokio::time::timeout(CATCH_UP, stream.message())
            .await
            .expect("the watch sends the kept events")?
            .expect("the watch stays open");
        if event.kind() == pb::watch_event::Kind::Progress {
            continue;
        }
        seen.push((
            event.revision,
            kind_name(event.kind()),
            event.lock,
            event.token,
        ));
    }
    Ok(seen)
}

// checks: W1, C1
// Every member is killed with SIGKILL and started again (a full-cluster restart). A watcher
// that resumes on any of them from a revision before the restart gets the very events it
// would have got before it, with the same revisions: each member recalls the events of
// the applied entries its raft log still holds, instead of telling the watcher to list
// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_members_restarted_since_its_revision() {
    let mut cluster = TestCluster::start(&["--no-fdatasync"]);
    let leader = cluster.leader(&[]).await;
    let mut router = Router::new(cluster.endpoints());
    // Grants and releases; a call that an election under load refuses only makes fewer
    // events (an unanswered release may still have landed: the watchers count it alike).
    let mut events = 0;
    for round in 0..10 {
        let request =
            fenced_tests::cluster::new_lease_acquire(&format!("r/{round}"), "restarter", 30_000);
        let Ok(grant) = router.acquire(PATIENCE, &request).await else {
            continue;
        };
        events += 1;
        let release = pb::ReleaseRequest {
            lease_id: grant.lease_id,
            ..pb::ReleaseRequest::default()
        };
        let released = router
            .call(PATIENCE, |mut client| {
                let release = release.clone();
                async move { client.release(release).await }
            })
            .await;
        if released.is_ok() {
            events += 1;
        }
    }
    assert!(events >= 10, "too few grants and releases: {events}");
    // What the leader sends a watcher from its first revision.
    let before = watch_from(&cluster.endpoint(leader), "r/", 1, events)
        .await
        .expect("nothing is compacted yet");
    let first = before[0].0;

    for id in 1..=3 {
        cluster.member(id).kill();
    }
    for id in 1..=3 {
        cluster.member(id).restart();
    }
    cluster.leader(&[]).await;

    for id in 1..=3 {
        let after = watch_from(&cluster.endpoint(id), "r/", first, before.len())
            .await
            .unwrap_or_else(|status| panic!("member {id} refused the resumed watch: {status:?}"));
        assert_eq!(after, before, "member {id} after the restart");
    }
}
