//! serial: the fastest a durable handoff can go one after another on this machine. Each
//! handoff needs at least one fdatasync (the grant on disk) and one loopback round trip
//! (the holder's release in, the next grant out), so the limit is
//! 1 / (median fdatasync + median round trip) handoffs per second.
//!
//! The fdatasync probe overwrites 4 KiB blocks of a preallocated 1 MiB file in the
//! servers' directory (data only, no metadata: what a preallocated log segment costs, the
//! strictest bound). The round trip is a write-free request to the server itself, over
//! the same transport the workloads use (for fenced in session mode, a renewal on its
//! `Session` stream: renewals write nothing).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::driver::{LockClient, LockSystem};
use crate::error::BenchError;
use crate::latency::{Latencies, LatencySummary};

/// Size of the probe's file.
const FILE_BYTES: u64 = 1 << 20;
/// Size of one probe write.
const BLOCK_BYTES: usize = 4096;
/// Upper bound on probe iterations, whatever the probe duration.
const MAX_PROBES: u64 = 1_000_000;

/// The serial limit and its two halves.
#[derive(Clone, Debug)]
pub struct SerialLimit {
    /// One 4 KiB write + fdatasync.
    pub fdatasync: LatencySummary,
    /// One write-free round trip.
    pub round_trip: LatencySummary,
    /// The system the round trip went to.
    pub round_trip_to: &'static str,
    /// What carried it, in the system's words (a call, a message on a stream).
    pub round_trip_over: &'static str,
}

impl SerialLimit {
    /// Handoffs per second one after another: 1 / (median fdatasync + median round trip).
    pub fn handoffs_per_second(&self) -> f64 {
        let each = (self.fdatasync.p50 + self.round_trip.p50).as_secs_f64();
        if each > 0.0 {
            1.0 / each
        } else {
            0.0
        }
    }
}

/// Probes the disk under `config.sync_dir`, then round trips to `system`.
pub async fn run<S: LockSystem>(system: &S, config: &Config) -> Result<SerialLimit, BenchError> {
    let dir = config.sync_dir.clone();
    let probe = config.serial_probe;
    let fdatasync = tokio::task::spawn_blocking(move || fdatasync_probe(&dir, probe))
        .await
        .map_err(|join| BenchError::Io {
            what: "the fdatasync probe".to_string(),
            source: std::io::Error::other(join.to_string()),
        })??;
    let mut client = system.connect(config.ttl).await?;
    let mut round_trip = Latencies::new();
    client.ping().await?;
    let until = Instant::now() + probe;
    let mut count = 0;
    while Instant::now() < until && count < MAX_PROBES {
        let sent = Instant::now();
        client.ping().await?;
        round_trip.record(sent.elapsed());
        count += 1;
    }
    client.close().await?;
    Ok(SerialLimit {
        fdatasync: fdatasync.summary(),
        round_trip: round_trip.summary(),
        round_trip_to: system.name(),
        round_trip_over: system.ping_carrier(),
    })
}

/// Writes and fdatasyncs 4 KiB blocks of a preallocated file in `dir` for `probe`.
fn fdatasync_probe(dir: &Path, probe: Duration) -> Result<Latencies, BenchError> {
    let path = dir.join(format!("fenced-bench-fdatasync-{}.tmp", std::process::id()));
    let io = |what: &str, source| BenchError::Io {
        what: format!("{what} {}", path.display()),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io("creating", e))?;
    let result = (|| {
        let block = vec![0x5a_u8; BLOCK_BYTES];
        for _ in 0..FILE_BYTES / BLOCK_BYTES as u64 {
            file.write_all(&block).map_err(|e| io("preallocating", e))?;
        }
        file.sync_all().map_err(|e| io("syncing", e))?;
        let mut latencies = Latencies::new();
        let until = Instant::now() + probe;
        let mut offset = 0;
        let mut count = 0;
        while Instant::now() < until && count < MAX_PROBES {
            let started = Instant::now();
            file.write_all_at(&block, offset)
                .map_err(|e| io("writing", e))?;
            file.sync_data().map_err(|e| io("fdatasync of", e))?;
            latencies.record(started.elapsed());
            offset = (offset + BLOCK_BYTES as u64) % FILE_BYTES;
            count += 1;
        }
        Ok(latencies)
    })();
    let removed = std::fs::remove_file(&path).map_err(|e| io("removing", e));
    let latencies = result?;
    removed?;
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_measures_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let latencies = fdatasync_probe(dir.path(), Duration::from_millis(50)).unwrap();
        assert!(latencies.summary().count > 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_limit_adds_both_halves() {
        let half = |ms| LatencySummary {
            count: 1,
            p50: Duration::from_millis(ms),
            p99: Duration::from_millis(ms),
            max: Duration::from_millis(ms),
        };
        let limit = SerialLimit {
            fdatasync: half(3),
            round_trip: half(1),
            round_trip_to: "fenced",
            round_trip_over: "a test",
        };
        assert!((limit.handoffs_per_second() - 250.0).abs() < 1e-6);
    }
}
