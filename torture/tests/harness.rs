//! The harness end to end: real processes, a recorded history, the checker's verdict.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::path::PathBuf;
use std::time::Duration;

use fenced_tests::binaries::binary;
use fenced_torture::check::Options as CheckOptions;
use fenced_torture::history::{Event, Op, Outcome};
use fenced_torture::nemesis::Kind;
use fenced_torture::run::{run, RunOptions};
use fenced_torture::system::Binaries;

fn options(mix: Vec<Kind>) -> RunOptions {
    RunOptions {
        binaries: Binaries {
            fenced: binary("fenced"),
            kv: binary("fenced-kv"),
            torture: PathBuf::from(env!("CARGO_BIN_EXE_fenced-torture")),
        },
        length: Duration::from_millis(2500),
        workers: 3,
        locks: 2,
        mix,
        concurrent_faults: 1,
        fault_gap: Duration::from_millis(400),
        ttl_min: Duration::from_millis(500),
        ttl_max: Duration::from_millis(1500),
        hold_max: Duration::from_millis(200),
        weaken: None,
        show_logs: false,
        cluster: None,
        check: CheckOptions::default(),
    }
}

// checks: S1, S2, S3, S4, S5, S7, L2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_records_every_kind_of_operation_and_the_checker_passes_it() {
    let result = run(&options(vec![]), 7).await.expect("the run runs");
    assert!(
        result.report.violations.is_empty(),
        "{:#?}",
        result.report.violations
    );
    assert!(result.report.grants > 0, "no grant in the whole run");
    let completed = |wanted: fn(&Op) -> bool| {
        let invoked: Vec<(&str, u64)> = result
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Invoke {
                    process, id, op, ..
                } if wanted(op) => Some((process.as_str(), *id)),
                _ => None,
            })
            .collect();
        result.events.iter().any(|e| match e {
            Event::Complete {
                process,
                id,
                outcome,
                ..
            } => {
                invoked.contains(&(process.as_str(), *id))
                    && !matches!(outcome, Outcome::Unknown { .. } | Outcome::Failed { .. })
            }
            _ => false,
        })
    };
    assert!(completed(|op| matches!(op, Op::Fence { .. })), "no fence()");
    assert!(completed(|op| matches!(op, Op::Put { .. })), "no write");
    assert!(
        completed(|op| matches!(op, Op::Release { .. })),
        "no release"
    );
    assert!(
        completed(|op| matches!(op, Op::FinalRead { .. })),
        "no final read"
    );
    assert!(
        result
            .events
            .iter()
            .any(|e| matches!(e, Event::LeaseState { .. })),
        "no lease state recorded"
    );
}

// checks: S1, S2, S3, S4, S5, S7
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_pauses_are_carried_out_recorded_and_survived() {
    let result = run(&options(vec![Kind::KillServer, Kind::PauseWorker]), 11)
        .await
        .expect("the run runs");
    assert!(
        result.report.violations.is_empty(),
        "{:#?}",
        result.report.violations
    );
    let faults: usize = result.faults.values().sum();
    assert!(faults > 0, "no fault in {:?}", result.faults);
    let recorded = result
        .events
        .iter()
        .filter(|e| matches!(e, Event::Fault { .. }))
        .count();
    assert_eq!(recorded, 2 * faults, "each fault has a start and an end");
}

// checks: S1, S2, S3, S4, S5, S7 (in a cluster: C1-C4)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_under_its_nemeses_and_the_checker_passes_it() {
    let mut options = options(vec![
        Kind::KillLeader,
        Kind::KillFollower,
        Kind::PauseLeader,
        Kind::PauseFollower,
        Kind::RaftNet,
        Kind::Isolate,
    ]);
    options.cluster = Some(3);
    options.length = Duration::from_millis(5000);
    let result = run(&options, 23).await.expect("the run runs");
    assert!(
        result.report.violations.is_empty(),
        "{:#?}",
        result.report.violations
    );
    assert!(result.report.grants > 0, "no grant in the whole run");
    let faults: usize = result.faults.values().sum();
    assert!(faults > 0, "no fault in {:?}", result.faults);
    // Every fault struck a member or a member's raft link, by name, and was healed. (The
    // leader watch's observations, target `cluster`, are not the nemeses' faults.)
    let mut recorded = 0;
    for event in &result.events {
        if let Event::Fault { target, kind, .. } = event {
            if target == "cluster" {
                assert_eq!(kind, "leader-change");
                continue;
            }
            recorded += 1;
            assert!(
                target.starts_with("fenced-") || target.starts_with("raft-fenced-"),
                "{target} {kind}"
            );
            assert!(
                kind.ends_with("-leader") || kind.ends_with("-follower"),
                "{target} {kind}"
            );
        }
    }
    assert_eq!(recorded, 2 * faults, "each fault has a start and an end");
    // Every member came up, and was killed at the end.
    for member in ["fenced-1", "fenced-2", "fenced-3"] {
        assert!(
            result.events.iter().any(|e| matches!(
                e,
                Event::Server { target, .. } if target == member
            )),
            "{member} never recorded"
        );
    }
}
