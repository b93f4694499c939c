//! The committer and the reaper: the engine's two background tasks.
//!
//! The committer (an OS thread) makes staged batches durable (group commit: one journal
//! append and sync for everything staged so far), then dispatches what waited on them,
//! and now and then hands the journal to the checkpoint thread. Nothing else blocks it:
//! the token marker and the next journal file are the checkpoint thread's work. The
//! reaper sleeps until the next expiry or lock-delay end, or until told something earlier
//! is due, and ticks the table. Both stop on the shutdown token; either stops the server
//! on a fatal error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::Error;
use crate::table::Command;

/// Commits staged batches and dispatches their notifications until `stop` is set; on the
/// way out, commits once more so nothing staged is left behind and moves everything into
/// sled. Runs on its own OS thread: the journal's `fdatasync` blocks, and a dedicated thread
/// saves the hops through tokio's blocking pool on every commit.
pub fn run_committer(engine: Arc<Engine>, stop: Arc<AtomicBool>) -> Result<(), Error> {
    let result = (|| {
        while !stop.load(Ordering::SeqCst) && !engine.is_closed() {
            engine.store().wait_for_work(&stop);
            let durable = engine.store().commit()?;
            engine.dispatch(durable)?;
            engine.store().maybe_checkpoint()?;
        }
        if engine.is_closed() {
            // A cluster leader's term ended: what it staged is answered "outcome unknown"
            // already, and the next term starts from what the cluster committed.
            return Ok(());
        }
        let durable = engine.store().commit()?;
        engine.dispatch(durable)?;
        engine.store().close()
    })();
    if engine.is_closed() {
        // A cluster leader's term ended: what failed is this term's engine, not the server.
        return Ok(());
    }
    if let Err(error) = &result {
        tracing::error!(%error, "committer failed; stopping the server");
        engine.store().fail();
        engine.fatal().cancel();
    }
    result
}

/// Starts [`run_committer`] on its own OS thread, `fenced-committer`.
pub fn spawn_committer(
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<Result<(), Error>>> {
    std::thread::Builder::new()
        .name("fenced-committer".into())
        .spawn(move || run_committer(engine, stop))
}

/// Expires leases and ends lock-delays when they are due, until `stop` is cancelled.
pub async fn run_reaper(engine: Arc<Engine>, stop: CancellationToken) -> Result<(), Error> {
    loop {
        if engine.is_closed() {
            return Ok(());
        }
        let due = engine.reaper_due()?;
        let sleep = async {
            match due {
                Some(due) => tokio::time::sleep_until(engine.clock().instant_of(due)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = engine.reaper_wake().notified() => continue,
            _ = sleep => {}
        }
        match engine.execute(Command::Tick, None) {
            Ok(_) => {}
            Err(Error::LeadershipLost) => return Ok(()),
            Err(error) => return Err(error),
        }
    }
}
