//! Durations too long to add to a clock: a caller who writes `Duration::MAX` for "as long
//! as it takes" gets the server's refusal or a clear settings error, never a panic.

use std::time::Duration;

use super::*;

// checks: the CONTRACT's "Bad input" rule on the client side (an unreasonable duration is
// refused with a message that names it, never a panic)
#[tokio::test]
async fn an_acquire_with_durations_beyond_any_clock_is_sent_saturated() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server.connect(&clock).await;

    // Waiting: the unary call's own deadline (the wait plus the request timeout) does not
    // overflow; the request says "the longest there is" and the server judges it.
    let lease = client
        .acquire("forever", AcquireOptions::wait(Duration::MAX))
        .await
        .unwrap();
    drop(lease);
    // Try-once, with a TTL and a lock-delay beyond any clock.
    let lease = client
        .acquire(
            "long",
            AcquireOptions::try_once()
                .ttl(Duration::MAX)
                .lock_delay(Duration::MAX),
        )
        .await
        .unwrap();
    assert!(lease.fence().is_ok());
    let acquires = server.script.lock().unwrap().acquires.clone();
    assert_eq!(acquires[0].wait_ms, u64::MAX);
    assert_eq!(
        (acquires[1].ttl_ms, acquires[1].lock_delay_ms),
        (u64::MAX, u64::MAX)
    );
}

// checks: S4 (the deadline arithmetic of a TTL beyond any clock, with no drift bound,
// does not overflow)
#[tokio::test]
async fn a_ttl_beyond_any_clock_with_no_drift_bound_does_not_panic() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let client = server
        .builder(&clock, Duration::from_secs(60))
        .drift_bound(0.0)
        .connect()
        .await
        .unwrap();
    let lease = client
        .acquire("long", AcquireOptions::try_once().ttl(Duration::MAX))
        .await
        .unwrap();
    assert!(lease.fence().is_ok());
}

/// Changes one setting of a builder.
type Settings = fn(ClientBuilder) -> ClientBuilder;

// checks: the CONTRACT's "Bad input" rule on the client side: settings no timer can hold
// are refused at connect, naming the setting
#[tokio::test]
async fn settings_beyond_any_clock_are_refused_by_name() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let server = Server::start(&clock).await;
    let cases: [(&str, Settings); 7] = [
        ("default_ttl", |b| {
            b.drift_bound(0.0).default_ttl(Duration::MAX)
        }),
        ("connect_timeout", |b| {
            b.timeouts(Duration::MAX, Duration::from_secs(1))
        }),
        ("request_timeout", |b| {
            b.timeouts(Duration::from_secs(1), Duration::MAX)
        }),
        ("http2_keepalive_interval", |b| {
            b.http2_keepalive(Duration::MAX, Duration::from_secs(1))
        }),
        ("http2_keepalive_timeout", |b| {
            b.http2_keepalive(Duration::from_secs(1), Duration::MAX)
        }),
        ("retry_max", |b| {
            b.retry(Duration::from_millis(50), Duration::MAX)
        }),
        ("pause_threshold", |b| b.pause_threshold(Duration::MAX)),
    ];
    for (name, settings) in cases {
        let result = settings(server.builder(&clock, Duration::from_secs(60)))
            .connect()
            .await;
        match result {
            Err(Error::Config { field, why }) => {
                assert_eq!(field, name, "{why}");
                assert!(why.contains("longest"), "{field}: {why}");
            }
            other => panic!("{name} = Duration::MAX: expected a config error, got {other:?}"),
        }
    }
}
