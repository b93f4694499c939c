//! The admin HTTP listener of a real `fenced` process (`--admin-listen`): Prometheus
//! metrics that move with the work, health and readiness, a 404 for anything else, and the
//! status page's event stream and its cap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fenced_client::AcquireOptions;
use fenced_tests::http::{get, EventStream};
use fenced_tests::server::TestServer;

fn admin(server: &TestServer) -> SocketAddr {
    server
        .admin_addr()
        .expect("the server announced its admin listener")
}

/// The value of the sample `series` (a name, with its labels as rendered) in Prometheus
/// text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// Scrapes `/metrics` until `done` holds for the text (the committer counts grants after
/// their batch is durable, a moment after the client has its answer), for up to 30 s.
async fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = get(addr, "/metrics").await;
        assert_eq!(response.status, 200, "{response:?}");
        if done(&response.body) {
            return response.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within 30 s; last scrape:\n{}",
            response.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// checks: none (operations)
#[tokio::test]
async fn metrics_move_with_grants_releases_and_refusals() {
    tracing_phase("a fresh server's counters start at zero");
    let server = TestServer::start_with_admin(&[]);
    let addr = admin(&server);
    let first = get(addr, "/metrics").await;
    assert_eq!(first.status, 200);
    assert!(first.head.contains("text/plain"), "{}", first.head);
    assert_eq!(sample(&first.body, "fenced_grants_total"), Some(0.0));
    assert_eq!(sample(&first.body, "fenced_releases_total"), Some(0.0));

    tracing_phase("a grant: counted, its lease and lock in the gauges, its commit timed");
    let holder = server.sdk("metrics-holder").await;
    let lease = holder
        .acquire(
            "metrics/a",
            AcquireOptions::try_once().ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let text = scrape_until(addr, "one grant counted", |text| {
        sample(text, "fenced_grants_total") == Some(1.0)
    })
    .await;
    assert_eq!(sample(&text, "fenced_leases"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "fenced_locks_held"), Some(1.0), "{text}");
    assert!(
        sample(&text, "fenced_journal_sync_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "fenced_journal_batch_writes_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, r#"fenced_connections_open{listener="grpc"}"#).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // No metric names a lock: no per-lock series.
    assert!(!text.contains("metrics/a"), "{text}");

    tracing_phase("a busy acquire: refused, counted by code and reason");
    let other = server.sdk("metrics-other").await;
    let refused = other.acquire("metrics/a", AcquireOptions::try_once()).await;
    assert!(refused.is_err(), "the lock is held");
    scrape_until(addr, "one busy refusal counted", |text| {
        sample(
            text,
            r#"fenced_refusals_total{code="ABORTED",reason="busy"}"#,
        ) == Some(1.0)
    })
    .await;

    tracing_phase("a malformed request: refused before the table, counted as invalid");
    let mut raw = server.client().await;
    let malformed = raw
        .describe(fenced_proto::v1::DescribeRequest {
            lock: String::new(),
        })
        .await;
    assert_eq!(
        malformed.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::InvalidArgument)
    );
    scrape_until(addr, "one invalid request counted", |text| {
        sample(
            text,
            r#"fenced_refusals_total{code="INVALID_ARGUMENT",reason="invalid-argument"}"#,
        ) == Some(1.0)
    })
    .await;

    tracing_phase("a queued acquirer: a waiter in the gauge");
    let queued = tokio::spawn(async move {
        let lease = other
            .acquire(
                "metrics/a",
                AcquireOptions::wait(Duration::from_secs(60)).ttl(Duration::from_secs(30)),
            )
            .await
            .unwrap();
        (other, lease)
    });
    scrape_until(addr, "one waiter", |text| {
        sample(text, "fenced_waiters") == Some(1.0)
    })
    .await;

    tracing_phase("a release hands the lock on: a release, a grant and a handoff timed");
    lease.release().await.unwrap();
    let (_other, second) = queued.await.unwrap();
    let text = scrape_until(addr, "the handoff counted", |text| {
        sample(text, "fenced_handoff_latency_seconds_count") == Some(1.0)
    })
    .await;
    assert_eq!(sample(&text, "fenced_releases_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "fenced_grants_total"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "fenced_waiters"), Some(0.0), "{text}");

    tracing_phase("the last release: the gauges back to zero");
    second.release().await.unwrap();
    let text = scrape_until(addr, "two releases counted", |text| {
        sample(text, "fenced_releases_total") == Some(2.0)
    })
    .await;
    assert_eq!(sample(&text, "fenced_locks_held"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "fenced_leases"), Some(0.0), "{text}");
}

// checks: none (operations)
#[tokio::test]
async fn health_and_readiness_and_a_bad_path_is_404() {
    tracing_phase("a serving server is healthy and ready");
    let mut server = TestServer::start_with_admin(&["--drain-timeout-ms", "8000"]);
    let addr = admin(&server);
    let health = get(addr, "/healthz").await;
    assert_eq!(health.status, 200, "{health:?}");
    // The "listening" line comes as serving starts; readiness a moment later (503 until).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = get(addr, "/readyz").await;
        if ready.status == 200 {
            break;
        }
        assert_eq!(ready.status, 503, "{ready:?}");
        assert!(tokio::time::Instant::now() < deadline, "ready within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(addr, "/no/such/page").await.status, 404);
    assert_eq!(get(addr, "/metricsx").await.status, 404);

    tracing_phase("while shutdown drains a request in flight, /readyz says 503");
    let holder = server.sdk("drain-holder").await;
    let _lease = holder
        .acquire(
            "drain/a",
            AcquireOptions::try_once().ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    // A queued acquire is a request in flight: the drain waits for it (up to 8 s).
    let waiter = server.sdk("drain-waiter").await;
    let queued = tokio::spawn(async move {
        let _ = waiter
            .acquire("drain/a", AcquireOptions::wait(Duration::from_secs(60)))
            .await;
    });
    scrape_until(addr, "the waiter queued", |text| {
        sample(text, "fenced_waiters") == Some(1.0)
    })
    .await;
    fenced_tests::server::signal(server.pid().unwrap(), "-TERM");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let ready = get(addr, "/readyz").await;
        if ready.status == 503 {
            break;
        }
        assert_eq!(ready.status, 200, "{ready:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz turned 503 within 8 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(addr, "/healthz").await.status, 200, "still serving");
    queued.abort();
    server.stop();
}

// checks: none (operations)
#[tokio::test]
async fn the_event_stream_delivers_a_grant_and_counts_against_max_watchers() {
    tracing_phase("an event stream opens; a second one is past --max-watchers 1");
    let server = TestServer::start_with_admin(&["--max-watchers", "1"]);
    let addr = admin(&server);
    let mut events = EventStream::open(addr, "/events").await;
    let refused = get(addr, "/events").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("max_watchers"), "{refused:?}");
    let metrics = get(addr, "/metrics").await;
    assert_eq!(
        sample(
            &metrics.body,
            r#"fenced_refusals_total{code="RESOURCE_EXHAUSTED",reason="exhausted"}"#
        ),
        Some(1.0),
        "the refused watcher is counted:\n{}",
        metrics.body
    );

    tracing_phase("a grant arrives on the stream as an `acquired` event");
    let holder = server.sdk("sse-holder").await;
    let lease = holder
        .acquire(
            "sse/one",
            AcquireOptions::try_once().ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let seen = events
        .until("\"lock\":\"sse/one\"", Duration::from_secs(30))
        .await
        .to_string();
    assert!(seen.contains("event: acquired"), "{seen}");
    assert!(seen.contains("\"holder\":\"sse-holder\""), "{seen}");
    assert!(
        seen.contains(&format!("\"token\":{}", lease.token().get())),
        "{seen}"
    );

    tracing_phase("the release follows; the page's JSON shows the holder's history");
    lease.release().await.unwrap();
    events
        .until("event: released", Duration::from_secs(30))
        .await;
    // The history is fed from the same events, by its own task: wait for it too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let locks = get(addr, "/api/locks").await;
        assert_eq!(locks.status, 200, "{locks:?}");
        let answer: serde_json::Value = serde_json::from_str(&locks.body).unwrap();
        if answer["history"][0]["holders"][0]["ended"] == "released" {
            break answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        answer["locks"].as_array().map(Vec::len),
        Some(0),
        "{answer}"
    );
    let history = &answer["history"][0];
    assert_eq!(history["lock"], "sse/one", "{answer}");
    assert_eq!(history["holders"][0]["ended"], "released", "{answer}");
    assert_eq!(history["holders"][0]["holder"], "sse-holder", "{answer}");
}

fn tracing_phase(phase: &str) {
    eprintln!("== {phase}");
}

// checks: none (operations)
#[tokio::test]
async fn admin_connections_are_capped_and_a_closed_one_frees_its_slot() {
    tracing_phase("two event streams take both slots of --max-connections 2");
    let server = TestServer::start_with_admin(&["--max-connections", "2"]);
    let addr = admin(&server);
    let first = EventStream::open(addr, "/events").await;
    let _second = EventStream::open(addr, "/events").await;

    tracing_phase("a third connection is closed at once, unanswered");
    let answer = refused_or_answered(addr).await;
    assert!(answer.is_empty(), "closed without an answer: {answer:?}");

    tracing_phase("one stream closes: its slot comes back");
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = refused_or_answered(addr).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(answer.is_empty(), "{answer:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "a slot freed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET /healthz` on a fresh connection: everything the server sent before closing it
/// (nothing, when it refused the connection).
async fn refused_or_answered(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server may close before the request is written: that is a refusal too.
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("answered or closed within 30 s")
}
