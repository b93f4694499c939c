//! Requests refused by a cluster member that is not the leader and knows none (an
//! election): the refusal changed nothing, so the SDK sends the request again, a bounded
//! number of times, and each grant's deadline counts from the send that was answered.
//! Following a named leader to another member is tested against real processes in
//! `tests/tests/client_cluster.rs`.

use std::time::Duration;

use super::*;

// checks: S4 (the deadline of a grant sent again after a refusal counts from the second
// send, not the first), L3 (a member that refuses a Session message as not the leader does
// not fail the request: it goes out again on a new stream)
#[tokio::test]
async fn a_session_request_refused_as_not_the_leader_is_sent_again_on_a_new_stream() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;
    {
        let mut script = server.script.lock().unwrap();
        // Each acquire takes 500 ms on the way to the server, the refused one too.
        script.delay = ms(500);
        script.not_leader = 1;
    }
    let lease = client
        .acquire("a", AcquireOptions::try_once().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    // 3 s * 0.95 - 100 ms - 500 ms from the second send; from the first it would be
    // 500 ms less.
    assert_eq!(lease.remaining(), ms(2_250));
    let calls = server.calls();
    assert_eq!(
        (calls.acquire_session, calls.sessions, calls.acquire_unary),
        (2, 2, 0),
        "{calls:?}"
    );

    // A release refused once goes out again too.
    server.script.lock().unwrap().not_leader = 1;
    let id = lease.id().to_string();
    lease.release().await.unwrap();
    assert_eq!(server.script.lock().unwrap().released, vec![id]);

    // Refused every time: the bound on attempts ends it, with NoLeader.
    server.script.lock().unwrap().not_leader = usize::MAX;
    let refused = client.try_acquire("b").await;
    assert!(
        matches!(refused, Err(Error::NoLeader { .. })),
        "{refused:?}"
    );
    let acquires = server.script.lock().unwrap().acquires.len();
    assert_eq!(acquires, 2 + 4, "one try and three more");
}

// checks: L3 (a unary call refused as not the leader by the only endpoint, with no leader
// named, reports NoLeader at once: nothing was applied, and there is nowhere else to go)
#[tokio::test]
async fn a_unary_refusal_with_no_leader_named_is_no_leader() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server
        .builder(&clock, Duration::from_secs(60))
        .session(false)
        .connect()
        .await
        .unwrap();
    server.script.lock().unwrap().not_leader = 1;
    let refused = client.try_acquire("a").await;
    match refused {
        Err(error @ Error::NoLeader { .. }) => assert!(error.is_transient()),
        other => panic!("{other:?}"),
    }
    // Nothing changed on the server: the next try is granted.
    client.try_acquire("a").await.unwrap();
}

// checks: L3, C4 (a waiting acquire that finds no leader looks again a fixed number of
// rounds, never more, each time with its lease id and what is left of its wait; it ends
// with NoLeader)
#[tokio::test]
async fn a_waiting_acquire_that_finds_no_leader_looks_again_a_bounded_number_of_times() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server
        .builder(&clock, Duration::from_secs(60))
        .retry(ms(10), ms(20))
        .connect()
        .await
        .unwrap();
    server.script.lock().unwrap().not_leader = usize::MAX;
    let refused = client
        .acquire("a", AcquireOptions::wait(Duration::from_secs(30)))
        .await;
    assert!(
        matches!(refused, Err(Error::NoLeader { .. })),
        "{refused:?}"
    );
    let acquires = server.script.lock().unwrap().acquires.clone();
    assert_eq!(acquires.len(), 3, "one attempt in each of three rounds");
    assert_eq!(acquires[0].wait_ms, 30_000);
    for (earlier, later) in acquires.iter().zip(&acquires[1..]) {
        assert_eq!(later.new_lease_id, earlier.new_lease_id);
        assert!(
            later.wait_ms < earlier.wait_ms && later.wait_ms > 20_000,
            "{} ms after {} ms",
            later.wait_ms,
            earlier.wait_ms
        );
    }
}
