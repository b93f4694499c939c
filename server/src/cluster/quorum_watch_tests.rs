//! [`Seen::stale`]: when the quorum watch makes a leader step down, with the time given
//! (no sleeps).

use std::time::{Duration, Instant};

use super::quorum_watch::{Look, Seen};

const AFTER: Duration = Duration::from_secs(4);

fn leader(term: u64, since_quorum_ack: Option<Duration>) -> Look {
    Look {
        leading: true,
        voters: 3,
        term,
        since_quorum_ack,
    }
}

// checks: C2 (a leader acknowledged by a quorum within the bound keeps leading; one that is
// not steps down from its term)
#[test]
fn a_leader_steps_down_once_no_quorum_acknowledged_it_for_longer_than_the_bound() {
    let now = Instant::now();
    let mut seen = Seen::default();
    assert_eq!(
        seen.stale(leader(7, Some(Duration::from_millis(100))), now, AFTER),
        None
    );
    assert_eq!(seen.stale(leader(7, Some(AFTER)), now, AFTER), None);
    assert_eq!(
        seen.stale(
            leader(7, Some(AFTER + Duration::from_millis(1))),
            now,
            AFTER
        ),
        Some(7)
    );
}

// checks: C2 (a leader that no quorum has acknowledged since it was elected is counted from
// the first look at its leadership, and a new term starts the count again)
#[test]
fn a_leader_never_acknowledged_is_counted_from_the_first_look_at_its_term() {
    let start = Instant::now();
    let mut seen = Seen::default();
    assert_eq!(seen.stale(leader(7, None), start, AFTER), None);
    assert_eq!(seen.stale(leader(7, None), start + AFTER, AFTER), None);
    assert_eq!(
        seen.stale(
            leader(7, None),
            start + AFTER + Duration::from_millis(1),
            AFTER
        ),
        Some(7)
    );
    // Elected again in a later term: counted from its first look at that term.
    let later = start + 3 * AFTER;
    assert_eq!(seen.stale(leader(8, None), later, AFTER), None);
    assert_eq!(seen.stale(leader(8, None), later + AFTER, AFTER), None);
    assert_eq!(
        seen.stale(leader(8, None), later + 2 * AFTER, AFTER),
        Some(8)
    );
}

// checks: C2 (a follower, and the leader of a cluster of one voter, never step down; a
// follower's look forgets a leadership seen before)
#[test]
fn a_follower_or_a_sole_voter_never_steps_down() {
    let start = Instant::now();
    let silent = Some(10 * AFTER);
    let mut seen = Seen::default();
    let follower = Look {
        leading: false,
        ..leader(7, silent)
    };
    let sole = Look {
        voters: 1,
        ..leader(7, silent)
    };
    assert_eq!(seen.stale(follower, start, AFTER), None);
    assert_eq!(seen.stale(sole, start, AFTER), None);

    // Seen leading term 9 unacknowledged, then following, then leading term 9 again (the
    // metrics of one term cannot go back to leading, but the memory must not outlive a
    // look that is not a leader's): counted afresh.
    assert_eq!(seen.stale(leader(9, None), start, AFTER), None);
    assert_eq!(
        seen.stale(
            Look {
                leading: false,
                ..leader(9, None)
            },
            start,
            AFTER
        ),
        None
    );
    assert_eq!(seen.stale(leader(9, None), start + 2 * AFTER, AFTER), None);
}
