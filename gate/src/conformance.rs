//! The conformance suite every [`Backend`] runs (feature `conformance`), as openraft
//! tests every log store with one suite.
//!
//! A backend's test implements [`Harness`] (open a fresh store; close and reopen one) and
//! calls [`run_all`], or each check by name. The checks panic with the evidence on a
//! violation; every one of them checks CONTRACT S5.
//!
//! - [`ordering`]: equal and higher tokens are accepted, lower ones refused with both tokens.
//! - [`refusal_has_no_effect`]: a refused put, delete or fence changes nothing.
//! - [`fence_shuts_out_older_holders`]: a fence raises the mark without data, also for keys
//!   the new holder never touched.
//! - [`deletes_are_gated`]: deletion under the same rule.
//! - [`marks_are_per_resource`]: resources do not share marks or keys.
//! - [`race_33_34`]: two writers released together, many times: 33 never lands over 34.
//! - [`race_33_34_over_a_mark`]: the same race on resources that already have a mark, where
//!   both writers can read the old mark before either writes (a backend that reads the
//!   mark without locking it fails here, and can pass on fresh resources).
//! - [`random_race`]: many threads, random tokens, random order; real-time order of accepted
//!   writes never goes down and the survivor is the highest accepted write.
//! - [`durable_across_reopen`]: marks and data survive a close and reopen, and the mark
//!   still refuses.
//! - [`unfenced_mode`]: with the gate off, writes are accepted and tokens still recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Barrier};

use fenced_types::{FencingToken, LockName};

use crate::backend::Backend;
use crate::config::Config;
use crate::error::Error;
use crate::gate::Gate;
use crate::op::WriteOp;
use crate::rule::Admission;

/// How the suite gets stores.
pub trait Harness {
    /// The backend under test.
    type Backend: Backend;

    /// A fresh, empty store.
    fn open(&mut self) -> Self::Backend;

    /// Closes `backend` (dropping it) and opens the same storage again, as a restarted
    /// service would.
    fn reopen(&mut self, backend: Self::Backend) -> Self::Backend;
}

/// Runs every check.
pub fn run_all<H: Harness>(harness: &mut H) {
    ordering(harness);
    refusal_has_no_effect(harness);
    fence_shuts_out_older_holders(harness);
    deletes_are_gated(harness);
    marks_are_per_resource(harness);
    race_33_34(harness);
    race_33_34_over_a_mark(harness);
    random_race(harness);
    durable_across_reopen(harness);
    unfenced_mode(harness);
}

fn t(value: u64) -> FencingToken {
    FencingToken::new(value).unwrap()
}

fn name(text: &str) -> LockName {
    LockName::new(text).unwrap()
}

fn gate<H: Harness>(harness: &mut H) -> Gate<H::Backend> {
    Gate::new(harness.open())
}

fn value_of<B: Backend>(gate: &Gate<B>, resource: &LockName, key: &str) -> Option<(Vec<u8>, u64)> {
    gate.read(resource, key.as_bytes())
        .unwrap()
        .map(|s| (s.value, s.token.get()))
}

fn assert_stale<T: std::fmt::Debug>(result: Result<T, Error>, presented: u64, current: u64) {
    match result {
        Err(Error::StaleToken {
            presented: p,
            current: c,
            ..
        }) => assert_eq!(
            (p.get(), c.get()),
            (presented, current),
            "stale refusal must report (presented, current)"
        ),
        other => panic!("expected StaleToken {{ {presented}, {current} }}, got {other:?}"),
    }
}

/// Equal and higher tokens are accepted and raise the mark; lower ones are refused with
/// both tokens.
pub fn ordering<H: Harness>(harness: &mut H) {
    let gate = gate(harness);
    let orders = name("orders");
    assert_eq!(
        gate.mark(&orders).unwrap(),
        None,
        "a fresh resource has no mark"
    );
    let a = gate
        .write(&orders, t(5), &WriteOp::put("k", "five"))
        .unwrap();
    assert_eq!((a.mark, a.existed), (t(5), false));
    let again = gate
        .write(&orders, t(5), &WriteOp::put("k", "five again"))
        .unwrap();
    assert_eq!(
        (again.mark, again.existed),
        (t(5), true),
        "equal token: same holder"
    );
    gate.write(&orders, t(7), &WriteOp::put("k", "seven"))
        .unwrap();
    assert_stale(gate.write(&orders, t(6), &WriteOp::put("k", "six")), 6, 7);
    assert_stale(
        gate.write(&orders, t(1), &WriteOp::put("other", "one")),
        1,
        7,
    );
    assert_eq!(value_of(&gate, &orders, "k"), Some((b"seven".to_vec(), 7)));
    assert_eq!(gate.mark(&orders).unwrap(), Some(t(7)));
}

/// A refused put, delete or fence changes neither data nor mark.
pub fn refusal_has_no_effect<H: Harness>(harness: &mut H) {
    let gate = gate(harness);
    let r = name("inventory");
    gate.write(&r, t(10), &WriteOp::put("a", "ten")).unwrap();
    assert_stale(gate.write(&r, t(9), &WriteOp::put("a", "nine")), 9, 10);
    assert_stale(gate.write(&r, t(9), &WriteOp::put("b", "nine")), 9, 10);
    assert_stale(gate.write(&r, t(9), &WriteOp::delete("a")), 9, 10);
    assert_stale(gate.fence(&r, t(9)), 9, 10);
    assert_eq!(value_of(&gate, &r, "a"), Some((b"ten".to_vec(), 10)));
    assert_eq!(
        value_of(&gate, &r, "b"),
        None,
        "a refused put created a key"
    );
    assert_eq!(gate.mark(&r).unwrap(), Some(t(10)));
}

/// A fence raises the mark without writing data; afterwards older holders are refused on
/// every key, including keys the new holder has not written.
pub fn fence_shuts_out_older_holders<H: Harness>(harness: &mut H) {
    let gate = gate(harness);
    let r = name("accounts");
    gate.write(&r, t(3), &WriteOp::put("alice", "100")).unwrap();
    assert_eq!(gate.fence(&r, t(4)).unwrap(), t(4));
    assert_eq!(
        value_of(&gate, &r, "alice"),
        Some((b"100".to_vec(), 3)),
        "fence wrote data"
    );
    assert_stale(gate.write(&r, t(3), &WriteOp::put("bob", "zombie")), 3, 4);
    assert_eq!(value_of(&gate, &r, "bob"), None);
    assert_eq!(
        gate.fence(&r, t(4)).unwrap(),
        t(4),
        "fencing again with the mark is fine"
    );
    gate.write(&r, t(4), &WriteOp::put("bob", "new holder"))
        .unwrap();
    // A fence on a fresh resource sets its first mark.
    let fresh = name("fresh");
    assert_eq!(gate.fence(&fresh, t(50)).unwrap(), t(50));
    assert_stale(gate.write(&fresh, t(49), &WriteOp::put("k", "v")), 49, 50);
}

/// Deletions follow the same rule and report whether the key existed.
pub fn deletes_are_gated<H: Harness>(harness: &mut H) {
    let gate = gate(harness);
    let r = name("carts");
    gate.write(&r, t(1), &WriteOp::put("c1", "x")).unwrap();
    let deleted = gate.write(&r, t(2), &WriteOp::delete("c1")).unwrap();
    assert_eq!((deleted.mark, deleted.existed), (t(2), true));
    assert_eq!(value_of(&gate, &r, "c1"), None);
    let missing = gate.write(&r, t(3), &WriteOp::delete("c1")).unwrap();
    assert_eq!(
        (missing.mark, missing.existed),
        (t(3), false),
        "deleting a missing key is still a write: it raises the mark"
    );
    assert_stale(gate.write(&r, t(2), &WriteOp::put("c1", "back")), 2, 3);
}

/// Each resource has its own mark and its own keys.
pub fn marks_are_per_resource<H: Harness>(harness: &mut H) {
    let gate = gate(harness);
    let (a, b) = (name("a"), name("ab"));
    gate.fence(&a, t(100)).unwrap();
    gate.write(&b, t(1), &WriteOp::put("c", "b's")).unwrap();
    gate.write(&a, t(100), &WriteOp::put("bc", "a's")).unwrap();
    assert_eq!(gate.mark(&a).unwrap(), Some(t(100)));
    assert_eq!(gate.mark(&b).unwrap(), Some(t(1)));
    // `a`+`bc` and `ab`+`c` must not share storage.
    assert_eq!(value_of(&gate, &b, "c"), Some((b"b's".to_vec(), 1)));
    assert_eq!(value_of(&gate, &a, "bc"), Some((b"a's".to_vec(), 100)));
    assert_eq!(value_of(&gate, &a, "c"), None);
}

/// Two writers with tokens 33 and 34, released together by a barrier, on a fresh resource
/// each round: 33's data is never left over 34's.
pub fn race_33_34<H: Harness>(harness: &mut H) {
    race_33_34_rounds(harness, None);
}

/// [`race_33_34`] on resources fenced with token 1 first: both writers find a mark below
/// their token, so a backend must lock the mark it read until its write is applied.
pub fn race_33_34_over_a_mark<H: Harness>(harness: &mut H) {
    race_33_34_rounds(harness, Some(t(1)));
}

/// 100 rounds of the 33/34 race, each on a fresh resource fenced with `first_mark` (if
/// any) before the writers are released.
fn race_33_34_rounds<H: Harness>(harness: &mut H, first_mark: Option<FencingToken>) {
    let gate = gate(harness);
    for round in 0..100 {
        let r = name(&format!("race-{round}"));
        if let Some(mark) = first_mark {
            gate.fence(&r, mark).unwrap();
        }
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = [33u64, 34]
            .into_iter()
            .map(|token| {
                let (gate, barrier, r) = (gate.clone(), Arc::clone(&barrier), r.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    gate.write(&r, t(token), &WriteOp::put("k", token.to_string()))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(results[1].is_ok(), "34 is never stale: {:?}", results[1]);
        if results[0].is_err() {
            assert_stale(results[0].clone(), 33, 34);
        }
        assert_eq!(
            value_of(&gate, &r, "k"),
            Some((b"34".to_vec(), 34)),
            "round {round}: 33's data over 34's ({results:?})"
        );
    }
}

/// A small deterministic PRNG (xorshift64*), so the suite needs no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value; zero is remapped).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// One write in a race, as the writer saw it: when it started and ended on a shared
/// logical clock, its token, and the answer.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Logical time before the call.
    pub start: u64,
    /// Logical time after the answer.
    pub end: u64,
    /// The token presented.
    pub token: u64,
    /// `Ok(mark)` or `Err(current)` for a stale refusal.
    pub result: Result<u64, u64>,
}

/// Checks a history of racing writes to one key against S5:
/// - for accepted writes A, B where A ended before B started: `A.token <= B.token`;
/// - a refusal reports a `current` above its token, no lower than any write accepted before
///   it started, and equal to some presented token;
/// - the highest presented token was accepted, and `final_token` (the token of the stored
///   value) is that highest accepted token.
///
/// Panics with the offending pair. Public so network-level tests can check their
/// histories with the same rules.
pub fn check_history(history: &[Observed], final_token: Option<u64>) {
    let accepted: Vec<&Observed> = history.iter().filter(|o| o.result.is_ok()).collect();
    let presented: std::collections::HashSet<u64> = history.iter().map(|o| o.token).collect();
    let mut by_end = accepted.clone();
    by_end.sort_by_key(|o| o.end);
    // For each write, the highest token accepted by a write that ended before it started.
    let highest_before = |start: u64| -> Option<u64> {
        by_end
            .iter()
            .take_while(|a| a.end < start)
            .map(|a| a.token)
            .max()
    };
    for o in history {
        let before = highest_before(o.start);
        match o.result {
            Ok(mark) => {
                assert!(
                    mark >= o.token,
                    "accepted {o:?} with a mark below its token"
                );
                if let Some(before) = before {
                    assert!(
                        o.token >= before,
                        "accepted token {} after token {before} had been accepted: {o:?}",
                        o.token
                    );
                }
            }
            Err(current) => {
                assert!(
                    current > o.token,
                    "refusal {o:?} with current not above token"
                );
                assert!(
                    presented.contains(&current),
                    "current {current} was never presented"
                );
                if let Some(before) = before {
                    assert!(
                        current >= before,
                        "refusal {o:?} reports a mark below {before}"
                    );
                }
            }
        }
    }
    let max_presented = history.iter().map(|o| o.token).max();
    let max_accepted = accepted.iter().map(|o| o.token).max();
    assert_eq!(
        max_accepted, max_presented,
        "the highest token can never be stale"
    );
    assert_eq!(
        final_token, max_accepted,
        "the stored value must be the highest accepted write's"
    );
}

/// Many threads write one key of one resource with random tokens in random order; the
/// history must pass [`check_history`], and the stored value must be the one the highest
/// token wrote.
pub fn random_race<H: Harness>(harness: &mut H) {
    let gate = gate(harness);
    let r = name("contended");
    let clock = Arc::new(AtomicU64::new(0));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let threads = 16;
    let per_thread = 40;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (gate, r, clock, barrier) = (
                gate.clone(),
                r.clone(),
                Arc::clone(&clock),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                barrier.wait();
                (0..per_thread)
                    .map(|_| {
                        let token = rng.range(1, 1000);
                        let start = clock.fetch_add(1, SeqCst);
                        let result =
                            gate.write(&r, t(token), &WriteOp::put("k", token.to_string()));
                        let end = clock.fetch_add(1, SeqCst);
                        let result = match result {
                            Ok(accepted) => Ok(accepted.mark.get()),
                            Err(Error::StaleToken { current, .. }) => Err(current.get()),
                            Err(other) => panic!("unexpected error: {other}"),
                        };
                        Observed {
                            start,
                            end,
                            token,
                            result,
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let history: Vec<Observed> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let stored = gate.read(&r, b"k").unwrap().expect("something was written");
    check_history(&history, Some(stored.token.get()));
    assert_eq!(
        stored.value,
        stored.token.to_string().into_bytes(),
        "the value is the one its token wrote (seed {seed})"
    );
    assert_eq!(gate.mark(&r).unwrap(), Some(stored.token));
}

/// Marks and data survive closing and reopening the store; the mark still refuses.
pub fn durable_across_reopen<H: Harness>(harness: &mut H) {
    let shared = Arc::new(harness.open());
    let (orders, fenced) = (name("orders"), name("fenced-only"));
    {
        let gate = Gate::new(Arc::clone(&shared));
        gate.write(&orders, t(20), &WriteOp::put("o1", "paid"))
            .unwrap();
        gate.write(&orders, t(21), &WriteOp::put("o2", "shipped"))
            .unwrap();
        gate.write(&orders, t(21), &WriteOp::delete("o1")).unwrap();
        gate.fence(&fenced, t(77)).unwrap();
    }
    // The gate is gone; take the backend back to close and reopen it.
    let Ok(backend) = Arc::try_unwrap(shared) else {
        panic!("a handle to the backend is still alive");
    };
    let reopened = harness.reopen(backend);
    {
        let gate = Gate::new(reopened);
        assert_eq!(
            gate.mark(&orders).unwrap(),
            Some(t(21)),
            "the mark went back"
        );
        assert_eq!(
            gate.mark(&fenced).unwrap(),
            Some(t(77)),
            "the fence was lost"
        );
        assert_eq!(
            value_of(&gate, &orders, "o2"),
            Some((b"shipped".to_vec(), 21))
        );
        assert_eq!(value_of(&gate, &orders, "o1"), None, "the delete was lost");
        assert_stale(
            gate.write(&orders, t(20), &WriteOp::put("o2", "zombie")),
            20,
            21,
        );
        assert_stale(
            gate.write(&fenced, t(76), &WriteOp::put("k", "zombie")),
            76,
            77,
        );
        gate.write(&orders, t(22), &WriteOp::put("o2", "delivered"))
            .unwrap();
    }
}

/// With [`Admission::Unfenced`] every write lands and tokens are still recorded: the
/// counterfactual the gate exists to prevent.
pub fn unfenced_mode<H: Harness>(harness: &mut H) {
    let config = Config {
        admission: Admission::Unfenced,
        ..Config::default()
    };
    let gate = Gate::with_config(harness.open(), config).unwrap();
    let r = name("unguarded");
    gate.write(&r, t(34), &WriteOp::put("k", "new holder"))
        .unwrap();
    let zombie = gate.write(&r, t(33), &WriteOp::put("k", "zombie")).unwrap();
    assert_eq!(
        zombie.mark,
        t(34),
        "the mark still records the highest token"
    );
    assert_eq!(value_of(&gate, &r, "k"), Some((b"zombie".to_vec(), 33)));
}
