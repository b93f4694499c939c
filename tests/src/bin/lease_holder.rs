//! A process that holds a lease through the SDK, for tests that stop it with `SIGSTOP`.
//!
//! Usage: `lease_holder ENDPOINT LOCK TTL_MS`. It prints one line per event on stdout, so a
//! test can synchronise on them:
//! - `acquired token=N` once it holds the lock;
//! - `state held`, `state suspect: REASON`, `state lost: REASON` for every state change
//!   (from the lease's history, so none is skipped);
//! - for each line `fence` on stdin, `fence ok token=N` or `fence refused: ERROR`.
//!
//! It exits when stdin closes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fenced_client::{AcquireOptions, Client};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, lock, ttl_ms] = args.as_slice() else {
        eprintln!("usage: lease_holder ENDPOINT LOCK TTL_MS");
        std::process::exit(2);
    };
    let ttl = Duration::from_millis(ttl_ms.parse().expect("TTL_MS is a number"));
    let client = Client::builder(endpoint.as_str())
        .holder("lease_holder")
        .connect()
        .await
        .expect("connects");
    let lease = client
        .acquire(lock, AcquireOptions::wait(Duration::from_secs(10)).ttl(ttl))
        .await
        .expect("acquires");
    println!("acquired token={}", lease.token());

    // Print every state change, in order, from the history (a watch alone may skip one).
    // The receiver is made first, so no change can fall between the two.
    let mut changes = lease.watch();
    let mut printed = 0;
    for change in lease.history() {
        println!("state {}", change.state);
        printed += 1;
    }
    let lease = std::sync::Arc::new(lease);
    let watcher = lease.clone();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let all = watcher.history();
            for change in all.iter().skip(printed) {
                println!("state {}", change.state);
            }
            printed = all.len();
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "fence" {
            match lease.fence() {
                Ok(token) => println!("fence ok token={token}"),
                Err(error) => println!("fence refused: {error}"),
            }
        }
    }
}
