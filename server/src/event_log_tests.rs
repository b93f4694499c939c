//! The event log: resuming from a revision sends every later event once, in order; a
//! revision no longer kept is refused, never answered with a gap.

use std::sync::Arc;

use fenced_types::{FencingToken, LockName};

use super::*;
use crate::table::EventKind;

fn event(revision: u64) -> RevisedEvent {
    RevisedEvent {
        revision,
        event: Event {
            kind: EventKind::Acquired,
            lock: LockName::new(format!("lock-{revision}")).expect("a valid name"),
            holder: Arc::from("holder"),
            token: FencingToken::new(revision).expect("a valid token"),
            handoff: false,
            lease: None,
            origin: None,
        },
    }
}

fn revisions(events: &[Arc<RevisedEvent>]) -> Vec<u64> {
    events.iter().map(|event| event.revision).collect()
}

fn drain(live: &mut broadcast::Receiver<Arc<RevisedEvent>>) -> Vec<u64> {
    let mut seen = Vec::new();
    while let Ok(event) = live.try_recv() {
        seen.push(event.revision);
    }
    seen
}

// checks: W1
#[test]
fn a_watcher_resuming_from_a_kept_revision_gets_every_later_event_once() {
    let log = EventLog::new(8, 0);
    log.publish((1..=5).map(event));
    let mut subscription = log
        .subscribe(Since::Revision(3))
        .expect("revision 3 is kept");
    assert_eq!(revisions(&subscription.backlog), [3, 4, 5]);
    assert_eq!(subscription.last_published, 5);
    log.publish((6..=7).map(event));
    assert_eq!(
        drain(&mut subscription.live),
        [6, 7],
        "live feed starts after the backlog"
    );
}

// checks: W1
#[test]
fn an_event_published_again_is_not_sent_twice() {
    let log = EventLog::new(8, 0);
    log.publish((1..=3).map(event));
    let mut subscription = log.subscribe(Since::Now).expect("now is always possible");
    log.publish((2..=4).map(event));
    assert_eq!(drain(&mut subscription.live), [4]);
    assert_eq!(log.last_revision(), 4);
}

// checks: W1
#[test]
fn a_revision_pushed_out_of_the_ring_is_refused_as_compacted() {
    let log = EventLog::new(4, 0);
    log.publish((1..=10).map(event));
    let refused = log
        .subscribe(Since::Revision(6))
        .expect_err("revision 6 was pushed out by 7..=10");
    assert_eq!(
        refused,
        Compacted {
            requested: 6,
            oldest: 7
        }
    );
    let kept = log
        .subscribe(Since::Revision(7))
        .expect("7 is the oldest kept");
    assert_eq!(revisions(&kept.backlog), [7, 8, 9, 10]);
}

// checks: W1
#[test]
fn events_before_a_restart_are_refused_and_later_ones_are_sent() {
    // A node that restarted after revision 20 kept nothing before it.
    let log = EventLog::new(8, 20);
    assert_eq!(
        log.subscribe(Since::Revision(20)).err(),
        Some(Compacted {
            requested: 20,
            oldest: 21
        })
    );
    let mut waiting = log
        .subscribe(Since::Revision(21))
        .expect("the next revision may be waited for");
    assert!(waiting.backlog.is_empty());
    log.publish([event(21)]);
    assert_eq!(drain(&mut waiting.live), [21]);
}

// checks: W1
#[test]
fn a_jump_in_revisions_drops_what_was_kept_so_no_stream_has_a_gap() {
    let log = EventLog::new(8, 0);
    log.publish((1..=3).map(event));
    log.publish([event(7)]);
    assert_eq!(
        log.subscribe(Since::Revision(2)).err(),
        Some(Compacted {
            requested: 2,
            oldest: 7
        })
    );
    log.restart_after(30);
    assert_eq!(log.last_revision(), 30);
    assert_eq!(
        log.subscribe(Since::Revision(7)).err(),
        Some(Compacted {
            requested: 7,
            oldest: 31
        })
    );
}

// checks: W1
#[test]
fn a_watcher_ahead_of_this_node_waits_for_its_revision() {
    let log = EventLog::new(8, 0);
    log.publish((1..=2).map(event));
    let subscription = log
        .subscribe(Since::Revision(5))
        .expect("a revision not yet published is waited for");
    assert!(subscription.backlog.is_empty());
    assert_eq!(subscription.last_published, 2);
}

// checks: W1
#[test]
fn recalled_events_are_sent_to_a_watcher_resuming_from_before_the_restart() {
    // A member that restarted after revision 20 recalls 12..=20 from its log.
    let log = EventLog::new(8, 20);
    assert_eq!(
        log.recall((12..=20).map(event).collect()),
        8,
        "the newest 8 fit"
    );
    let resumed = log.subscribe(Since::Revision(14)).expect("14 was recalled");
    assert_eq!(revisions(&resumed.backlog), [14, 15, 16, 17, 18, 19, 20]);
    assert_eq!(
        log.subscribe(Since::Revision(12)).err(),
        Some(Compacted {
            requested: 12,
            oldest: 13
        })
    );
    log.publish([event(21)]);
    assert_eq!(log.last_revision(), 21);
}

// checks: W1
#[test]
fn only_recalled_events_that_run_without_a_gap_up_to_the_last_revision_are_kept() {
    // A gap (8 missing): only the run after it counts.
    let log = EventLog::new(16, 10);
    let events = [5, 6, 7, 9, 10].into_iter().map(event).collect();
    assert_eq!(log.recall(events), 2);
    assert_eq!(
        log.subscribe(Since::Revision(7)).err(),
        Some(Compacted {
            requested: 7,
            oldest: 9
        })
    );
    // A repeated revision (a batch recalled twice would show as one): the run restarts.
    let log = EventLog::new(16, 4);
    let events = [1, 2, 3, 2, 3, 4].into_iter().map(event).collect();
    assert_eq!(log.recall(events), 3);
    // Events that do not end at the last revision the log started after: none are kept.
    let log = EventLog::new(16, 10);
    assert_eq!(log.recall((1..=9).map(event).collect()), 0);
    assert_eq!(log.recall((1..=11).map(event).collect()), 0);
    // Nothing is recalled once something was published.
    let log = EventLog::new(16, 10);
    log.publish([event(11)]);
    assert_eq!(log.recall((1..=11).map(event).collect()), 0);
    assert_eq!(
        revisions(
            &log.subscribe(Since::Revision(11))
                .expect("11 is kept")
                .backlog
        ),
        [11]
    );
}
