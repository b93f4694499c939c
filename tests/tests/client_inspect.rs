//! The SDK's reads of the lock table against a real `fenced` server: list a prefix page by
//! page and in full, check a token, watch a prefix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_client::{AcquireOptions, Error, FencingToken, LockEventKind};
use fenced_tests::server::TestServer;

// checks: S1 (the tokens a listing shows are the grants' tokens), L2 (a waiter shows in
// the listing's waiter count)
#[tokio::test]
async fn list_reads_a_prefix_page_by_page_and_in_full() {
    let server = TestServer::start();
    let client = server.sdk("lister").await;
    let other = server.sdk("waiter").await;
    let mut leases = Vec::new();
    for name in ["shelf/a", "shelf/b", "shelf/c", "elsewhere/d"] {
        leases.push(client.try_acquire(name).await.unwrap());
    }
    // A waiter on shelf/b, so one listed lock has a queue.
    let waiting = tokio::spawn(async move {
        other
            .acquire("shelf/b", AcquireOptions::wait(Duration::from_secs(30)))
            .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client.describe("shelf/b").await.unwrap().waiters == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the waiter never queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // In full: the three under the prefix, in name order, with their holders' tokens.
    let all = client.list("shelf/").await.unwrap();
    let names: Vec<&str> = all.iter().map(|l| l.lock.as_str()).collect();
    assert_eq!(names, ["shelf/a", "shelf/b", "shelf/c"]);
    for (info, lease) in all.iter().zip(&leases) {
        let holder = info.holder.as_ref().unwrap();
        assert_eq!(holder.token, lease.token());
        assert_eq!(holder.name, "lister");
    }
    assert_eq!(all[1].waiters, 1);

    // Page by page, one lock at a time, following the cursor to the same answer.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client
            .list_page("shelf/", cursor.as_deref(), 1)
            .await
            .unwrap();
        pages += 1;
        assert!(page.locks.len() <= 1, "{page:?}");
        paged.extend(page.locks);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "the cursor never ended");
    }
    // Time left moves between reads; the rest must be the same.
    let key = |l: &fenced_client::LockInfo| {
        (
            l.lock.clone(),
            l.holder.as_ref().map(|h| (h.name.clone(), h.token)),
            l.waiters,
        )
    };
    assert_eq!(
        paged.iter().map(key).collect::<Vec<_>>(),
        all.iter().map(key).collect::<Vec<_>>()
    );
    assert!(pages >= 3);

    // A cursor the server never gave is refused, not read from somewhere else.
    let bad = client.list_page("shelf/", Some("elsewhere/d"), 1).await;
    assert!(matches!(bad, Err(Error::InvalidArgument { .. })), "{bad:?}");

    for lease in leases {
        lease.release().await.unwrap();
    }
    let granted = waiting.await.unwrap().unwrap();
    granted.release().await.unwrap();
    assert!(client.list("shelf/").await.unwrap().is_empty());
}

// checks: S1, S7 (the holder's token is current; an older token of the same lock, and any
// token once the lock is released, is not)
#[tokio::test]
async fn check_token_says_which_token_is_current() {
    let server = TestServer::start();
    let client = server.sdk("checker").await;
    let first = client.try_acquire("checked").await.unwrap();
    let old = first.token();
    first.release().await.unwrap();
    let second = client.try_acquire("checked").await.unwrap();
    let current = second.token();
    assert!(current > old);

    let check = client.check_token("checked", current).await.unwrap();
    assert!(check.current);
    assert_eq!(check.current_token, Some(current));
    let check = client.check_token("checked", old).await.unwrap();
    assert!(!check.current);
    assert_eq!(check.current_token, Some(current));

    second.release().await.unwrap();
    let check = client.check_token("checked", current).await.unwrap();
    assert!(!check.current);
    assert_eq!(check.current_token, None);

    let bad = client.check_token("", FencingToken::new(1).unwrap()).await;
    assert!(bad.is_err(), "{bad:?}");
}

// checks: S1 (each event carries its grant's token)
#[tokio::test]
async fn watch_prefix_sees_every_lock_under_the_prefix_and_nothing_else() {
    let server = TestServer::start();
    let client = server.sdk("watcher").await;
    let mut events = client.watch_prefix("watched/").await.unwrap();

    let outside = client.try_acquire("unwatched/x").await.unwrap();
    let a = client.try_acquire("watched/a").await.unwrap();
    let b = client.try_acquire("watched/b").await.unwrap();
    let (token_a, token_b) = (a.token(), b.token());
    a.release().await.unwrap();
    outside.release().await.unwrap();
    b.release().await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("an event within 20 s")
            .expect("the stream is open")
            .unwrap();
        seen.push((event.kind, event.lock, event.token));
    }
    assert_eq!(
        seen,
        [
            (LockEventKind::Acquired, "watched/a".to_string(), token_a),
            (LockEventKind::Acquired, "watched/b".to_string(), token_b),
            (LockEventKind::Released, "watched/a".to_string(), token_a),
            (LockEventKind::Released, "watched/b".to_string(), token_b),
        ]
    );
}
