//! The SDK against a cluster's members: a member that is not the leader refuses every rpc
//! (`UNAVAILABLE`, `fenced-error: not-leader`, `fenced-leader: host:port` when it knows
//! the leader), and every call and the renewals follow it to the leader, a real `fenced`
//! server. The members are [`FakeMember`]s: they forward to the real server as a leader,
//! or refuse as a follower, switched by the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use fenced_client::{AcquireOptions, Client, Error, Lease};
use fenced_tests::member::{FakeMember, Role};
use fenced_tests::proxy::Proxy;
use fenced_tests::server::TestServer;

/// A client of `endpoints`, holding leases as `holder`; pauses under 2 s are scheduling
/// noise on a loaded machine, not process pauses.
fn cluster(endpoints: &[String], holder: &str) -> fenced_client::ClientBuilder {
    Client::builder_for_cluster(endpoints.iter().cloned())
        .holder(holder)
        .pause_threshold(Duration::from_secs(2))
}

/// A client of `endpoints`, connected.
async fn connect(endpoints: &[String], holder: &str) -> Client {
    cluster(endpoints, holder).connect().await.unwrap()
}

/// A follower that names the real server as its leader.
async fn follower_of(server: &TestServer) -> FakeMember {
    FakeMember::start(Role::NotLeader(Some(server.addr().to_string()))).await
}

/// The lease's local deadline as an instant of this test; the lease must be held (a lost
/// lease has no time left, and its "deadline" would move with the clock).
fn deadline(lease: &Lease) -> Instant {
    let status = lease.status();
    assert!(status.state.is_held(), "{status:?}");
    Instant::now() + status.remaining
}

/// Polls `check` every 20 ms until it holds, failing after `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls (every 20 ms, for up to 20 s) until `lock` has `count` waiters on the server
/// `reader` reads.
async fn waiters_become(reader: &Client, lock: &str, count: u32) {
    let start = Instant::now();
    loop {
        let waiters = reader.describe(lock).await.unwrap().waiters;
        if waiters == count {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{lock}: {waiters} waiters, never {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An address where nothing listens.
async fn closed_addr() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The endpoint of an address where nothing listens.
async fn closed_port() -> String {
    format!("http://{}", closed_addr().await)
}

// checks: L3, C4 (a client given only a member that is not the leader reaches the leader, at
// an address it was never given, for every kind of call), S1 (the tokens are the real
// server's grants), S4 (fence on a lease granted through the redirect)
#[tokio::test]
async fn every_call_refused_by_a_follower_is_sent_again_to_the_leader() {
    let server = TestServer::start();
    let follower = follower_of(&server).await;
    let only_follower = [follower.endpoint()];
    let mut refused = 0;
    // Each call comes from a fresh client, so that each faces the refusal itself.
    let mut faced = |what: &str, client: &Client| {
        assert!(
            follower.refused() > refused,
            "{what}: the follower was never asked"
        );
        refused = follower.refused();
        assert_eq!(client.current_endpoint(), server.endpoint(), "{what}");
    };

    let watcher = connect(&only_follower, "watcher").await;
    let mut events = watcher.watch_prefix("cluster/").await.unwrap();
    faced("watch", &watcher);

    // A try-once acquire over the Session stream.
    let sessions = connect(&only_follower, "sessions").await;
    let first = sessions.try_acquire("cluster/session").await.unwrap();
    faced("acquire over the session", &sessions);
    assert!(sessions.uses_session());
    assert_eq!(first.fence().unwrap(), first.token());

    // A try-once acquire as a unary call.
    let unary = cluster(&only_follower, "unary")
        .session(false)
        .connect()
        .await
        .unwrap();
    let second = unary.try_acquire("cluster/unary").await.unwrap();
    faced("unary acquire", &unary);
    assert!(second.token() > first.token());

    // A waiting acquire (always unary).
    let waiter = connect(&only_follower, "waiter").await;
    let third = waiter
        .acquire(
            "cluster/waiting",
            AcquireOptions::wait(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    faced("waiting acquire", &waiter);
    assert!(third.token() > second.token());

    let reader = connect(&only_follower, "reader").await;
    let info = reader.describe("cluster/session").await.unwrap();
    faced("describe", &reader);
    assert_eq!(info.holder.unwrap().token, first.token());

    let reader = connect(&only_follower, "reader").await;
    let all = reader.list("cluster/").await.unwrap();
    faced("list", &reader);
    assert_eq!(all.len(), 3, "{all:?}");

    let reader = connect(&only_follower, "reader").await;
    let page = reader.list_page("cluster/", None, 1).await.unwrap();
    faced("list page", &reader);
    assert_eq!(page.locks.len(), 1);

    let reader = connect(&only_follower, "reader").await;
    let check = reader
        .check_token("cluster/unary", second.token())
        .await
        .unwrap();
    faced("check token", &reader);
    assert!(check.current);

    // Renewals on the leader: the deadline moves past where the grant put it.
    let granted = deadline(&first);
    eventually(
        Duration::from_secs(30),
        "a renewal of the first lease",
        || deadline(&first) > granted + Duration::from_secs(1),
    )
    .await;

    first.release().await.unwrap();
    second.release().await.unwrap();
    third.release().await.unwrap();
    assert!(reader.list("cluster/").await.unwrap().is_empty());

    // The watch, opened through the follower, saw all of it on the leader.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the watch's events come")
            .unwrap()
            .unwrap();
        seen.push((event.lock, event.kind));
    }
    assert!(
        seen.contains(&(
            "cluster/waiting".to_string(),
            fenced_client::LockEventKind::Released
        )),
        "{seen:?}"
    );
}

// checks: L3 (a holder whose member steps down finds the leader and has renewals
// confirmed there before its lease's local deadline; the lease stays held throughout),
// S4 (the deadline keeps counting from each confirmed renewal's send)
#[tokio::test]
async fn renewals_follow_the_leader_when_their_member_steps_down() {
    let server = TestServer::start();
    let front = FakeMember::start(Role::Forward(server.endpoint())).await;
    let client = cluster(&[front.endpoint()], "mover")
        .default_ttl(Duration::from_secs(3))
        .connect()
        .await
        .unwrap();
    let lease = client.try_acquire("move/a").await.unwrap();
    let granted = deadline(&lease);
    eventually(
        Duration::from_secs(20),
        "a renewal confirmed through the front",
        || deadline(&lease) > granted + Duration::from_millis(500),
    )
    .await;
    assert_eq!(client.current_endpoint(), front.endpoint());

    // The front steps down: its renewal stream ends with the not-leader refusal.
    front.set(Role::NotLeader(Some(server.addr().to_string())));
    let at_step_down = deadline(&lease);
    eventually(
        Duration::from_secs(20),
        "renewals confirmed by the leader after the step-down",
        || deadline(&lease) > at_step_down + Duration::from_millis(1_500),
    )
    .await;
    assert!(front.refused() >= 1);
    assert_eq!(client.current_endpoint(), server.endpoint());
    assert!(
        lease.history().iter().all(|change| change.state.is_held()),
        "{:?}",
        lease.history()
    );
    assert_eq!(lease.fence().unwrap(), lease.token());
    let info = server.sdk("reader").await.describe("move/a").await.unwrap();
    assert_eq!(info.holder.unwrap().token, lease.token());
    lease.release().await.unwrap();
}

// checks: L3 (the member a holder renews on dies: the renewal stream breaks, the renewer
// moves to the next endpoint, which names the leader, and renewals are confirmed there
// before the local deadline; the lease stays held throughout), S4
#[tokio::test]
async fn renewals_move_past_a_dead_member_to_the_leader_the_next_one_names() {
    let server = TestServer::start();
    let doomed = Proxy::start(server.addr()).await;
    let follower = follower_of(&server).await;
    let client = cluster(&[doomed.endpoint(), follower.endpoint()], "survivor")
        .default_ttl(Duration::from_secs(3))
        .connect()
        .await
        .unwrap();
    let lease = client.try_acquire("failover/a").await.unwrap();
    assert_eq!(client.current_endpoint(), doomed.endpoint());
    let granted = deadline(&lease);
    eventually(
        Duration::from_secs(20),
        "a renewal confirmed through the member",
        || deadline(&lease) > granted + Duration::from_millis(500),
    )
    .await;

    // The member dies: its connections are reset, and new ones are refused.
    doomed.set_target(closed_addr().await);
    doomed.reset();
    let at_death = deadline(&lease);
    eventually(
        Duration::from_secs(20),
        "renewals confirmed by the leader the next member named",
        || deadline(&lease) > at_death + Duration::from_millis(1_500),
    )
    .await;
    assert!(follower.refused() >= 1);
    assert_eq!(client.current_endpoint(), server.endpoint());
    assert!(
        lease.history().iter().all(|change| change.state.is_held()),
        "{:?}",
        lease.history()
    );
    assert_eq!(lease.fence().unwrap(), lease.token());
    lease.release().await.unwrap();
}

// checks: L3 (a release refused by a member that stepped down reaches the leader, so the
// lock is free at once instead of after the TTL)
#[tokio::test]
async fn a_release_refused_by_a_former_leader_is_sent_to_the_new_one() {
    let server = TestServer::start();
    let front = FakeMember::start(Role::Forward(server.endpoint())).await;
    let client = cluster(&[front.endpoint()], "releaser")
        .session(false)
        .default_ttl(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let lease = client.try_acquire("release/a").await.unwrap();
    // New calls are refused; the renewal stream stays on the front.
    front.set(Role::RefuseNew(Some(server.addr().to_string())));
    lease.release().await.unwrap();
    assert!(front.refused() >= 1);
    let rival = server.sdk("rival").await;
    rival.try_acquire("release/a").await.unwrap();
}

// checks: L3 (connecting skips a member that is down)
#[tokio::test]
async fn connect_skips_an_endpoint_where_nothing_listens() {
    let server = TestServer::start();
    let closed = closed_port().await;
    let client = connect(&[closed.clone(), server.endpoint()], "skipper").await;
    assert_eq!(client.current_endpoint(), server.endpoint());
    let lease = client.try_acquire("skip/a").await.unwrap();
    assert_eq!(lease.fence().unwrap(), lease.token());
    lease.release().await.unwrap();

    // None answers: the error names every endpoint tried.
    let other = closed_port().await;
    let result = Client::builder_for_cluster([closed.clone(), other.clone()])
        .timeouts(Duration::from_secs(2), Duration::from_secs(2))
        .connect()
        .await;
    match result {
        Err(Error::NoLeader { tried, why }) => {
            assert_eq!(tried, [closed.clone(), other.clone()]);
            assert!(why.contains(&closed) && why.contains(&other), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // A mix of schemes is refused before anything is tried.
    let result = Client::builder_for_cluster([server.endpoint(), "https://127.0.0.1:1".into()])
        .connect()
        .await;
    assert!(
        matches!(
            result,
            Err(Error::Config {
                field: "endpoints",
                ..
            })
        ),
        "{result:?}"
    );
    // The framed session names one server: refused with several endpoints.
    let result = Client::builder_for_cluster([server.endpoint(), closed])
        .framed_session("127.0.0.1:1")
        .connect()
        .await;
    assert!(
        matches!(
            result,
            Err(Error::Config {
                field: "framed_session",
                ..
            })
        ),
        "{result:?}"
    );
}

// checks: L3 (two members that name each other as leader cannot bounce a call forever: it
// ends with NoLeader after the bound on redirects)
#[tokio::test]
async fn a_redirect_loop_ends_with_no_leader() {
    let a = FakeMember::start(Role::NotLeader(None)).await;
    let b = FakeMember::start(Role::NotLeader(Some(a.addr().to_string()))).await;
    a.set(Role::NotLeader(Some(b.addr().to_string())));
    let client = connect(&[a.endpoint()], "bounced").await;
    let limit = Duration::from_secs(10);

    let describe = tokio::time::timeout(limit, client.describe("loop/a"))
        .await
        .expect("the redirects end");
    match describe {
        Err(Error::NoLeader { tried, .. }) => assert_eq!(tried.len(), 4, "{tried:?}"),
        other => panic!("{other:?}"),
    }
    let acquire = tokio::time::timeout(limit, client.try_acquire("loop/a"))
        .await
        .expect("the redirects end");
    assert!(
        matches!(acquire, Err(Error::NoLeader { .. })),
        "{acquire:?}"
    );
    let waiting = tokio::time::timeout(
        limit,
        client.acquire("loop/a", AcquireOptions::wait(Duration::from_secs(1))),
    )
    .await
    .expect("the redirects end");
    assert!(
        matches!(waiting, Err(Error::NoLeader { .. })),
        "{waiting:?}"
    );
    assert!(
        a.refused() + b.refused() < 40,
        "{}",
        a.refused() + b.refused()
    );
}

// checks: S3 (a busy refusal is the leader's answer: it is never sent to another member,
// where it could not be more true)
#[tokio::test]
async fn a_busy_refusal_is_not_sent_elsewhere() {
    let server = TestServer::start();
    let rival = server.sdk("rival").await;
    let held = rival.try_acquire("busy/a").await.unwrap();
    let leader = FakeMember::start(Role::Forward(server.endpoint())).await;
    let other = FakeMember::start(Role::NotLeader(None)).await;
    for session in [true, false] {
        let client = cluster(&[leader.endpoint(), other.endpoint()], "loser")
            .session(session)
            .connect()
            .await
            .unwrap();
        let refused = client.try_acquire("busy/a").await;
        match refused {
            Err(Error::Busy { token, .. }) => assert_eq!(token, Some(held.token())),
            other => panic!("session {session}: {other:?}"),
        }
        assert_eq!(other.refused(), 0, "session {session}");
        assert_eq!(client.current_endpoint(), leader.endpoint());
    }
}

// checks: L2, L3, C4 (a waiting acquire whose connection breaks mid-wait leaves the
// queue, and is sent again to the next member with the lease id the client chose and the
// rest of its wait, not the whole of it; it queues there and gets the lock once, when the
// holder lets go)
#[tokio::test]
async fn a_waiting_acquire_broken_in_transit_is_sent_again_with_the_rest_of_its_wait() {
    let server = TestServer::start();
    let rival = server.sdk("rival").await;
    let held = rival.try_acquire("transit/a").await.unwrap();
    let held_token = held.token();
    // The client reaches the member through a proxy, which breaks the connection; the
    // member sees every acquire, the first (through the proxy) and the one sent again.
    let member = FakeMember::start(Role::Forward(server.endpoint())).await;
    let proxy = Proxy::start(member.addr()).await;
    let client = connect(&[proxy.endpoint(), member.endpoint()], "waiter").await;
    let waiting = tokio::spawn(async move {
        let outcome = client
            .acquire("transit/a", AcquireOptions::wait(Duration::from_secs(60)))
            .await;
        (outcome, client)
    });
    let reader = server.sdk("reader").await;
    waiters_become(&reader, "transit/a", 1).await;
    proxy.reset();
    eventually(Duration::from_secs(20), "the acquire sent again", || {
        member.acquires().len() == 2 || waiting.is_finished()
    })
    .await;
    assert!(
        !waiting.is_finished(),
        "the broken acquire returned instead of waiting again elsewhere: {:?}",
        waiting.await.unwrap().0
    );
    let acquires = member.acquires();
    assert_eq!(acquires[1].new_lease_id, acquires[0].new_lease_id);
    assert!(
        acquires[1].wait_ms < acquires[0].wait_ms && acquires[1].wait_ms > 0,
        "sent with {} ms of its {} ms wait",
        acquires[1].wait_ms,
        acquires[0].wait_ms
    );
    // The first waiter left the server's queue (L2): one waiter, the one sent again.
    waiters_become(&reader, "transit/a", 1).await;
    held.release().await.unwrap();
    let (outcome, client) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiter is granted once the holder lets go")
        .unwrap();
    let lease = outcome.expect("the lock, through the member");
    assert_eq!(lease.id().to_string(), acquires[0].new_lease_id);
    assert!(lease.token() > held_token);
    assert_eq!(client.current_endpoint(), member.endpoint());
    let view = reader.describe("transit/a").await.unwrap();
    assert_eq!(view.holder.map(|holder| holder.token), Some(lease.token()));
    assert_eq!(view.waiters, 0);
    lease.release().await.unwrap();
    assert!(reader.describe("transit/a").await.unwrap().holder.is_none());
}

// checks: L2, L3, C4 (a waiting acquire cut off by its member's step-down, answered
// "outcome unknown", is sent to the next member with the rest of its wait and its lease
// id; dropping it there still takes it out of the queue, so the lock is free once its
// holder lets go)
#[tokio::test]
async fn a_waiting_acquire_cut_off_by_a_step_down_waits_on_with_the_rest_of_its_wait() {
    let server = TestServer::start();
    let rival = server.sdk("rival").await;
    let held = rival.try_acquire("stepdown/a").await.unwrap();
    let front = FakeMember::start(Role::Forward(server.endpoint())).await;
    let next = FakeMember::start(Role::Forward(server.endpoint())).await;
    let client = connect(&[front.endpoint(), next.endpoint()], "waiter").await;
    let waiting = tokio::spawn(async move {
        client
            .acquire("stepdown/a", AcquireOptions::wait(Duration::from_secs(60)))
            .await
    });
    let reader = server.sdk("reader").await;
    waiters_become(&reader, "stepdown/a", 1).await;
    front.set(Role::NotLeader(None));
    eventually(Duration::from_secs(20), "the acquire sent again", || {
        next.acquires().len() == 1 || waiting.is_finished()
    })
    .await;
    assert!(!waiting.is_finished(), "{:?}", waiting.await.unwrap());
    let (first, again) = (&front.acquires()[0], &next.acquires()[0]);
    assert_eq!(again.new_lease_id, first.new_lease_id);
    assert!(
        again.wait_ms < first.wait_ms && again.wait_ms > 0,
        "sent with {} ms of its {} ms wait",
        again.wait_ms,
        first.wait_ms
    );
    waiters_become(&reader, "stepdown/a", 1).await;
    // Dropped while it waits on the next member: it leaves the queue (L2).
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    waiters_become(&reader, "stepdown/a", 0).await;
    held.release().await.unwrap();
    let view = reader.describe("stepdown/a").await.unwrap();
    assert!(view.holder.is_none(), "{view:?}");
}

// checks: S3, L3, C4 (a try-once acquire whose answer was lost after the leader granted it is
// sent again with the lease id the client chose, and finds that grant: the same token, no
// second lease left holding the lock until its TTL ends)
#[tokio::test]
async fn an_acquire_whose_answer_was_lost_is_sent_again_and_finds_its_own_grant() {
    let server = TestServer::start();
    // The first member forwards to the real server, as a leader serves; when it "dies"
    // with the answer, the client moves on to the next member (here the server itself).
    let leader = FakeMember::start(Role::Forward(server.endpoint())).await;
    let client = cluster(&[leader.endpoint(), server.endpoint()], "lost-answer")
        .session(false)
        .connect()
        .await
        .unwrap();
    leader.lose_next_acquire_answer();
    let lease = client
        .acquire("lost/answer", AcquireOptions::try_once())
        .await
        .expect("the acquire is sent again and finds its grant");
    let token = lease.fence().unwrap();
    let view = client.describe("lost/answer").await.unwrap();
    assert_eq!(
        view.holder.as_ref().map(|holder| holder.token),
        Some(token),
        "{view:?}"
    );
    lease.release().await.unwrap();
    // Released, the lock is free at once: no second lease from the first attempt holds it.
    let other = connect(&[server.endpoint()], "other").await;
    other
        .acquire("lost/answer", AcquireOptions::try_once())
        .await
        .expect("the lock is free once the one lease is released");
}

// checks: S3, L3, C4 (a try-once acquire over the Session stream whose stream broke after
// the leader granted it, before the answer, is sent once more as a unary call with the
// lease id the client chose, and finds that grant: the application gets the same lease
// and token, and no second lease holds the lock)
#[tokio::test]
async fn a_session_acquire_whose_stream_broke_after_its_grant_finds_that_grant() {
    let server = TestServer::start();
    let leader = FakeMember::start(Role::Forward(server.endpoint())).await;
    let client = connect(&[leader.endpoint()], "broken-session").await;
    leader.break_session_at_next_grant();
    let lease = client
        .try_acquire("broken/session")
        .await
        .expect("the acquire is sent again and finds its grant");
    assert!(client.uses_session());
    let swallowed = leader.swallowed();
    assert_eq!(swallowed.len(), 1, "the stream broke at the grant");
    assert_eq!(lease.id().to_string(), swallowed[0].lease_id);
    assert_eq!(lease.token().get(), swallowed[0].token);
    let acquires = leader.acquires();
    assert_eq!(
        acquires.len(),
        2,
        "the session's, then one unary: {acquires:?}"
    );
    assert_eq!(acquires[1].new_lease_id, acquires[0].new_lease_id);
    // The one lease holds the lock; released, the lock is free at once.
    let rival = server.sdk("rival").await;
    match rival.try_acquire("broken/session").await {
        Err(Error::Busy { token, .. }) => assert_eq!(token, Some(lease.token())),
        other => panic!("{other:?}"),
    }
    lease.release().await.unwrap();
    rival
        .try_acquire("broken/session")
        .await
        .expect("the lock is free once the one lease is released");
}
