//! The zombie-leader demo as a test: real processes (`fenced`, `fenced-kv`, two SDK
//! workers), a real `SIGSTOP`, and the gate's verdict, with the gate on and then off, so
//! the test proves it can tell the difference. Every step waits for an event, not a sleep.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::Duration;

use fenced_demo::credentials::Secure;
use fenced_demo::scenario::{run, Options, Store};
use fenced_tests::binaries::binary;
use fenced_tests::postgres::postgres_or_skip;

/// The gated story's outcome: beta's token is above alpha's, the zombie's write was refused
/// with exactly those two tokens and not accepted, and the store holds beta's write.
fn assert_the_gate_turned_the_zombie_away(report: &fenced_demo::scenario::Report) {
    assert!(report.beta_token > report.alpha_token);
    assert_eq!(
        report.zombie_rejected,
        Some((report.alpha_token, report.beta_token))
    );
    assert!(!report.zombie_accepted);
    assert_eq!(report.final_value, "beta-1");
    assert_eq!(report.final_token, report.beta_token);
}

fn options(gate: bool) -> Options {
    options_with(Store::Kv, gate)
}

fn options_with(store: Store, gate: bool) -> Options {
    Options {
        fenced: binary("fenced"),
        kv: binary("fenced-kv"),
        worker: binary("fenced-demo-worker"),
        store,
        ttl: Duration::from_secs(1),
        gate,
        narrate: true,
        show_logs: false,
        secure: None,
    }
}

// checks: S4, S5, S7
#[tokio::test]
async fn the_gate_turns_the_paused_leader_away() {
    let report = run(&options(true)).await.expect("the demo runs");
    // Alpha got N, beta got N+1 > N.
    assert!(report.beta_token > report.alpha_token);
    // The zombie's in-flight write was rejected with exactly those two tokens.
    assert_eq!(
        report.zombie_rejected,
        Some((report.alpha_token, report.beta_token))
    );
    assert!(!report.zombie_accepted);
    // Alpha's SDK saw the pause (about a TTL long) and the lost lease, and then refused to
    // hand out its token again.
    let paused = report.alpha_pause_ms.expect("a reported pause");
    assert!(
        paused >= 500,
        "pause of {paused} ms reported; alpha was stopped past its 1 s TTL"
    );
    assert!(report.alpha_lost);
    assert!(report.alpha_refused_after);
    // The store holds beta's value.
    assert_eq!(report.final_value, "beta-1");
    assert_eq!(report.final_token, report.beta_token);
}

// checks: S5 (the counterfactual: without the gate the same story loses data)
#[tokio::test]
async fn without_the_gate_the_zombie_overwrites_the_new_leader() {
    let report = run(&options(false)).await.expect("the demo runs");
    assert!(report.beta_token > report.alpha_token);
    assert!(report.zombie_accepted, "the stale write landed");
    assert_eq!(report.zombie_rejected, None);
    assert_eq!(report.final_value, "alpha-2 (written by a zombie)");
    assert_eq!(report.final_token, report.alpha_token);
    // The SDK still did its part: the pause was seen and the lease given up.
    assert!(report.alpha_pause_ms.is_some());
    assert!(report.alpha_lost);
}

/// The same story against PostgreSQL: the workers write in transactions that start with
/// `fenced_check`, and the database refuses the zombie's write with both tokens.
// checks: S5
#[tokio::test]
async fn postgres_turns_the_paused_leader_away() {
    let Some(cluster) = postgres_or_skip("postgres_turns_the_paused_leader_away") else {
        return;
    };
    let store = Store::Postgres {
        url: cluster.connection_string(),
    };
    let report = run(&options_with(store, true))
        .await
        .expect("the demo runs");
    assert_the_gate_turned_the_zombie_away(&report);
}

/// The counterfactual against PostgreSQL: the same writes without `fenced_check` let the
/// zombie overwrite the new leader's row. Runs after a gated run on the same database, so
/// it also shows that each run starts from a clean mark.
// checks: S5
#[tokio::test]
async fn postgres_without_fenced_check_lets_the_zombie_overwrite() {
    let Some(cluster) = postgres_or_skip("postgres_without_fenced_check_lets_the_zombie_overwrite")
    else {
        return;
    };
    let store = Store::Postgres {
        url: cluster.connection_string(),
    };
    run(&options_with(store.clone(), true))
        .await
        .expect("the gated run");
    let report = run(&options_with(store, false))
        .await
        .expect("the demo runs");
    assert!(report.zombie_accepted, "the stale write landed");
    assert_eq!(report.zombie_rejected, None);
    assert_eq!(report.final_value, "alpha-2 (written by a zombie)");
    assert_eq!(report.final_token, report.alpha_token);
}

/// The secured story, with bearer tokens and with client certificates: every process
/// authenticates with its own credential, the policy lets only the workers lock, and
/// `fenced-kv` demands the server's signed sequencer with every write. The zombie's write
/// carries a genuine sequencer, and is still refused as stale; the holders shown are the
/// authenticated identities.
async fn secured_story(secure: Secure) {
    let report = run(&Options {
        secure: Some(secure),
        ..options(true)
    })
    .await
    .expect("the secured demo runs");
    assert_the_gate_turned_the_zombie_away(&report);
    let entries = report.timeline.entries();
    assert!(
        entries
            .iter()
            .any(|entry| entry.text.contains("granted the lock to alpha/alpha")),
        "the holder is the authenticated identity: {entries:#?}"
    );
}

// checks: S5, S8, A1, A2
#[tokio::test]
async fn secured_with_tokens_the_gate_turns_the_paused_leader_away() {
    secured_story(Secure::Tokens).await;
}

// checks: S5, S8, A1, A2
#[tokio::test]
async fn secured_with_certificates_the_gate_turns_the_paused_leader_away() {
    secured_story(Secure::Certificates).await;
}
