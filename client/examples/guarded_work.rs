//! Take a lock, do guarded work: the shape of every fenced client.
//!
//! Run a server (`fenced --listen 127.0.0.1:7500 --data-dir /tmp/fenced`), then
//! `cargo run -p fenced-client --example guarded_work -- http://127.0.0.1:7500`.
//! Start two at once: the second waits for the first to finish.

use std::time::Duration;

use fenced_client::{AcquireOptions, Client};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:7500".to_string());
    let client = Client::builder(endpoint)
        .holder("guarded-work-example")
        .connect()
        .await?;

    // Queue for the lock for up to 30 s; the SDK renews it in the background.
    let lease = client
        .acquire(
            "examples/report",
            AcquireOptions::wait(Duration::from_secs(30)).ttl(Duration::from_secs(5)),
        )
        .await?;
    println!("holding {} with token {}", lease.lock(), lease.token());

    // The work loop stops as soon as the lease is lost.
    let lost = lease.lost();
    tokio::pin!(lost);
    for step in 1..=5 {
        tokio::select! {
            reason = &mut lost => {
                eprintln!("lease lost ({reason}): stopping");
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Right before each write: the token, or an error that says why not (suspect
        // after a pause, deadline passed, lost). Send the token with the write, e.g.
        // `lease.request(msg)?` for a gRPC call with `fencing-token` metadata, or
        // `gate.write(&resource, token, &op)` with the fenced-gate crate.
        match lease.fence() {
            Ok(token) => println!("step {step}: write with token {token}"),
            Err(why) => {
                eprintln!("step {step}: not writing: {why}");
                continue;
            }
        }
    }

    // Hand the lock to the next waiter at once.
    lease.release().await?;
    Ok(())
}
