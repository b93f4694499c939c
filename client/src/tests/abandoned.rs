//! Calls whose caller goes away at the worst moment: the server has acted (granted a lock)
//! but the caller never looks at the answer. The SDK must hand such a grant back at once,
//! so that it does not keep the lock from everyone for its TTL (CONTRACT L1).
//!
//! Each test walks the call's future up to the moment with [`poll_until`] and drops it
//! there, on a current-thread runtime, so the order of events is the test's.

use std::time::Duration;

use super::*;

/// The lock of the lease `id` the fake granted, if it granted one.
fn granted_lock(server: &Server, id: &str) -> Option<String> {
    server.script.lock().unwrap().granted.get(id).cloned()
}

// checks: L1 (a grant whose caller went away is released at once, not held for its TTL)
#[tokio::test]
async fn a_grant_that_reached_a_dropped_try_once_acquire_is_released() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;
    server.script.lock().unwrap().hold = Some("raced".into());

    // Phase 1: the acquire goes out on the session and the server holds it.
    let mut acquire = Box::pin(client.try_acquire("raced"));
    poll_until("the server holds the acquire", &mut acquire, || {
        server.script.lock().unwrap().holding == 1
    })
    .await;
    assert_eq!(client.shared().session.pending(), 1);

    // Phase 2: the grant reaches the client (the session's reader hands it to the
    // caller's slot), and the caller drops the call before it looks: a `select!` whose
    // other branch won, an aborted task.
    server.gate.send(true).unwrap();
    until("the grant reached the caller's slot", || {
        client.shared().session.pending() == 0
    })
    .await;
    drop(acquire);

    // Phase 3: the SDK releases that grant, nobody else could.
    until("the grant nobody saw is released", || {
        !server.script.lock().unwrap().released.is_empty()
    })
    .await;
    let released = server.script.lock().unwrap().released.clone();
    assert_eq!(released.len(), 1);
    assert_eq!(
        granted_lock(&server, &released[0]).as_deref(),
        Some("raced")
    );
}

// checks: L1, L2 (a waiting acquire that is dropped leaves the queue; if its grant had
// already reached the client, that grant is released rather than held for its TTL)
#[tokio::test]
async fn a_grant_that_reached_a_dropped_waiting_acquire_is_released() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;
    abandon_a_unary_acquire_after_its_grant_arrived(
        &server,
        &client,
        AcquireOptions::wait(Duration::from_secs(30)),
    )
    .await;
}

// checks: L1 (the same for a try-once acquire on the unary call: session off)
#[tokio::test]
async fn a_grant_that_reached_a_dropped_unary_try_once_acquire_is_released() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server
        .builder(&clock, Duration::from_secs(60))
        .session(false)
        .connect()
        .await
        .unwrap();
    abandon_a_unary_acquire_after_its_grant_arrived(&server, &client, AcquireOptions::try_once())
        .await;
}

/// Walks a unary acquire of the lock "unary" with `options` until its grant has reached
/// the client's connection, drops it there, and checks that the SDK releases the grant.
async fn abandon_a_unary_acquire_after_its_grant_arrived(
    server: &Server,
    client: &Client,
    options: AcquireOptions,
) {
    server.script.lock().unwrap().hold = Some("unary".into());

    // Phase 1: the acquire is at the server, held there.
    let mut acquire = Box::pin(client.acquire("unary", options));
    poll_until("the server holds the acquire", &mut acquire, || {
        server.script.lock().unwrap().holding == 1
    })
    .await;
    assert_eq!(server.calls().acquire_unary, 1);

    // Phase 2: the server grants, and the answer crosses loopback to the client's
    // connection (1 s of margin), but the caller does not look before it drops the call.
    server.gate.send(true).unwrap();
    until("the server granted the lock", || {
        !server.script.lock().unwrap().granted.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(acquire);

    // Phase 3: the SDK releases the grant it holds unseen.
    until("the grant nobody saw is released", || {
        !server.script.lock().unwrap().released.is_empty()
    })
    .await;
    let released = server.script.lock().unwrap().released.clone();
    assert_eq!(granted_lock(server, &released[0]).as_deref(), Some("unary"));
}

// checks: L1 (a release the caller abandoned before it was sent still reaches the server)
#[tokio::test]
async fn a_release_dropped_before_it_was_sent_still_releases() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;
    let lease = client.try_acquire("a").await.unwrap();
    let id = lease.id().to_string();

    // Phase 1: the session breaks, so the release must open a new one first.
    server.break_sessions().await;
    until("the client saw its session break", || {
        !client.shared().session.is_open()
    })
    .await;

    // Phase 2: the release starts (the lease stops being renewed and hands out no token)
    // and is dropped while the new session is still opening: nothing was sent yet.
    let mut release = Box::pin(lease.release());
    assert!(futures::poll!(&mut release).is_pending());
    drop(release);

    // Phase 3: the SDK sends the release anyway, in the background.
    until("the abandoned release reaches the server", || {
        server.script.lock().unwrap().released.contains(&id)
    })
    .await;
}

// checks: L1 (a grant the SDK refuses to use, because the server broke the protocol, is
// handed back rather than left held for its TTL)
#[tokio::test]
async fn a_grant_with_a_malformed_answer_is_released() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;
    // Token 0 is never a valid fencing token.
    server.script.lock().unwrap().token = 0;

    let error = client.try_acquire("broken").await.unwrap_err();
    assert!(matches!(error, Error::Protocol { .. }), "{error:?}");
    until("the unusable grant is released", || {
        !server.script.lock().unwrap().released.is_empty()
    })
    .await;
    let released = server.script.lock().unwrap().released.clone();
    assert_eq!(
        granted_lock(&server, &released[0]).as_deref(),
        Some("broken")
    );
}
