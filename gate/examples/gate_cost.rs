//! The cost of the gate: gated writes per second against plain sled writes at the same
//! durability (sled flush + fdatasync of `<dir>/db`, the same group commit), in one run, at
//! 1, 16 and 64 concurrent writers.
//!
//! ```sh
//! cargo run --release -p fenced-gate --features sled --example gate_cost [seconds per cell]
//! ```
//!
//! Each writer is an OS thread. Gated: writer `n` owns resource `bench-n` and presents
//! token `i + 1` on its `i`-th write, so every write is accepted and raises the mark (the
//! full cost: read and check the mark, then data and mark in one sled transaction, shared
//! with the writes queued beside it). Plain:
//! writer `n` does `Tree::insert` of the same 64-byte value (plus an 8-byte counter, the
//! size the gate adds) to its own key. Both wait on the same `GroupCommit`. The two run
//! one after the other for each writer count, on fresh databases in one temporary
//! directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fenced_gate::{Gate, GroupCommit, SledBackend, WriteOp};
use fenced_types::{FencingToken, LockName};

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let cell = Duration::from_secs_f64(seconds);
    let root = std::env::temp_dir().join(format!("gate_cost-{}", std::process::id()));
    println!(
        "each cell runs {seconds} s; databases under {}",
        root.display()
    );
    println!(
        "| writers | plain sled writes/s | sled transaction, no gate /s | gated writes/s | gated / plain |"
    );
    println!("|--------:|------:|------:|------:|------:|");
    for writers in [1usize, 16, 64] {
        let plain = plain_sled(&root.join(format!("plain-{writers}")), writers, cell);
        let tx = plain_transaction(&root.join(format!("tx-{writers}")), writers, cell);
        let gated = gated(&root.join(format!("gated-{writers}")), writers, cell);
        println!(
            "| {writers} | {plain:.0} | {tx:.0} | {gated:.0} | {:.2} |",
            gated / plain
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// Runs `writers` threads for `cell`, each calling `write(thread, i)` in a loop; returns
/// completed writes per second.
fn measure(
    writers: usize,
    cell: Duration,
    write: impl Fn(usize, u64) + Send + Sync + 'static,
) -> f64 {
    let write = Arc::new(write);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(writers + 1));
    let threads: Vec<_> = (0..writers)
        .map(|thread| {
            let (write, stop, done, barrier) = (
                Arc::clone(&write),
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                barrier.wait();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    write(thread, i);
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(cell);
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    for t in threads {
        t.join().unwrap();
    }
    counted as f64 / elapsed.as_secs_f64()
}

/// Plain sled: `insert`, then the same group-commit wait the gate uses.
fn plain_sled(dir: &std::path::Path, writers: usize, cell: Duration) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let db = sled::Config::new().path(dir).open().unwrap();
    let tree = db.open_tree("data").unwrap();
    let group = GroupCommit::new(db.clone(), dir).unwrap();
    let value = vec![7u8; 64];
    measure(writers, cell, move |thread, i| {
        let key = format!("bench/key-{thread}");
        let mut record = i.to_be_bytes().to_vec();
        record.extend_from_slice(&value);
        tree.insert(key.as_bytes(), record).unwrap();
        group.commit().unwrap();
    })
}

/// The diagnostic middle column: the same two-tree sled transaction the gate runs (read
/// one key, write two), without the gate's check, with the same group commit. sled 0.34's
/// `flush` holds its global concurrency-control lock in read mode for the whole write, and
/// a transaction needs it in write mode, so transactions stall during every flush: this
/// column shows how much of the gate's cost is that, not the gate.
fn plain_transaction(dir: &std::path::Path, writers: usize, cell: Duration) -> f64 {
    use sled::Transactional;
    std::fs::create_dir_all(dir).unwrap();
    let db = sled::Config::new().path(dir).open().unwrap();
    let marks = db.open_tree("marks").unwrap();
    let data = db.open_tree("data").unwrap();
    let group = GroupCommit::new(db.clone(), dir).unwrap();
    let value = vec![7u8; 64];
    measure(writers, cell, move |thread, i| {
        let key = format!("bench/key-{thread}");
        let mut record = i.to_be_bytes().to_vec();
        record.extend_from_slice(&value);
        (&marks, &data)
            .transaction(|(marks, data)| {
                let _ = marks.get(key.as_bytes())?;
                marks.insert(key.as_bytes(), &i.to_be_bytes())?;
                data.insert(key.as_bytes(), record.clone())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .unwrap();
        group.commit().unwrap();
    })
}

/// Through the gate: read and check the mark, write data and the new mark in one sled
/// transaction, group commit. Each writer owns a resource and presents token `i + 1` on its
/// `i`-th write, so every write raises the mark (the full cost: two keys per transaction)
/// and none is refused.
fn gated(dir: &std::path::Path, writers: usize, cell: Duration) -> f64 {
    let gate = Gate::new(SledBackend::open(dir).unwrap());
    let resources: Vec<LockName> = (0..writers)
        .map(|thread| LockName::new(format!("bench-{thread}")).unwrap())
        .collect();
    let value = vec![7u8; 64];
    measure(writers, cell, move |thread, i| {
        let token = FencingToken::new(i + 1).unwrap();
        let op = WriteOp::put("key", value.clone());
        let accepted = gate.write(&resources[thread], token, &op).unwrap();
        assert_eq!(accepted.mark, token);
    })
}
