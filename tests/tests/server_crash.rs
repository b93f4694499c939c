//! Crash tests with the real binary: `kill -9` the server at random moments under load, or
//! cut the power of the filesystem under its data directory (`fenced_tests::power_cut`),
//! restart it on the same data directory, and check what survived.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fenced_proto::v1 as pb;
use fenced_tests::binaries::binary;
use fenced_tests::power_cut::{scratch_fs_or_skip, ScratchFs};
use fenced_tests::server::TestServer;

/// An acknowledged grant.
#[derive(Debug, Clone)]
struct Held {
    lease_id: String,
    token: u64,
}

/// What the clients were told, shared by the client tasks.
#[derive(Default)]
struct Ledger {
    /// Acknowledged grants whose release was never attempted, by lock.
    held: HashMap<String, Held>,
    /// Every token any client was given.
    tokens: Vec<u64>,
    /// Acknowledged releases: the lock and the token of the grant released.
    released: Vec<(String, u64)>,
}

/// A cheap deterministic generator (xorshift), so runs differ by seed without a new crate.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn client_loop(endpoint: String, id: u64, ledger: Arc<Mutex<Ledger>>) {
    let Ok(mut client) = pb::lock_service_client::LockServiceClient::connect(endpoint).await else {
        return;
    };
    let mut random = 0x9E37_79B9_7F4A_7C15 ^ (id + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    loop {
        // Half the time a lock of our own, half the time one of four shared, contended ones.
        let lock = if next_random(&mut random).is_multiple_of(2) {
            format!("own/{id}/{}", next_random(&mut random) % 16)
        } else {
            format!("shared/{}", next_random(&mut random) % 4)
        };
        let request = pb::AcquireRequest {
            lock: lock.clone(),
            holder: format!("client-{id}"),
            ttl_ms: 120_000,
            wait_ms: 0,
            lock_delay_ms: 0,
            ..pb::AcquireRequest::default()
        };
        match client.acquire(request).await {
            Ok(grant) => {
                let grant = grant.into_inner();
                let mut ledger = ledger.lock().unwrap();
                ledger.tokens.push(grant.token);
                ledger.held.insert(
                    lock.clone(),
                    Held {
                        lease_id: grant.lease_id.clone(),
                        token: grant.token,
                    },
                );
            }
            Err(status) if status.code() == tonic::Code::Aborted => {}
            Err(_) => return, // the server is gone
        }
        if next_random(&mut random).is_multiple_of(2) {
            // Release something we hold: forget it *before* asking, since from the moment
            // the request leaves, the outcome is unknown until acknowledged.
            let victim = {
                let mut ledger = ledger.lock().unwrap();
                let mine: Vec<String> = ledger
                    .held
                    .keys()
                    .filter(|name| {
                        name.starts_with(&format!("own/{id}/")) || name.starts_with("shared/")
                    })
                    .cloned()
                    .collect();
                if mine.is_empty() {
                    None
                } else {
                    let name =
                        mine[(next_random(&mut random) % mine.len() as u64) as usize].clone();
                    ledger.held.remove(&name).map(|held| (name, held))
                }
            };
            if let Some((name, held)) = victim {
                let release = pb::ReleaseRequest {
                    lease_id: held.lease_id,
                    lock: String::new(),
                };
                if client.release(release).await.is_err() {
                    return;
                }
                ledger.lock().unwrap().released.push((name, held.token));
            }
        }
    }
}

// checks: S1, S2, S7
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_under_load_loses_no_acknowledged_grant_and_no_token_goes_back() {
    // The default checkpoint interval (1 s) is longer than a cycle: every restart replays
    // the journal.
    crash_cycles(&[], 8, 0x2545_F491_4F6C_DD1D, Crash::Kill).await;
}

// checks: S1, S2, S7
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_during_checkpoints_loses_nothing_either() {
    // Checkpoints every 20 ms: kills land while sled is being written and journal files are
    // being replaced and deleted.
    crash_cycles(
        &["--checkpoint-ms", "20"],
        6,
        0x9E37_79B9_7F4A_7C15,
        Crash::Kill,
    )
    .await;
}

// checks: S1, S2, S7 (under a power cut: what the server acknowledged was on the disk, not
// only in the page cache that `kill -9` leaves alone)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_under_load_loses_no_acknowledged_grant_and_no_token_goes_back() {
    let Some(fs) = scratch_fs_or_skip("a_power_cut_under_load") else {
        return;
    };
    // Checkpoints every 50 ms: cuts land while sled is flushed, the token marker is raised
    // and journal files are prepared, replaced and deleted, as well as between them.
    let args = ["--checkpoint-ms", "50"];
    crash_cycles(&args, 5, 0xD1B5_4A32_D192_ED03, Crash::PowerCut(fs)).await;
}

// checks: S2 (the test of the power-cut test: the harness does lose what was not synced, so
// the test above would catch a server that answered before its fdatasync)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_acknowledged_grants_when_the_server_skips_its_fdatasync() {
    let Some(mut fs) = scratch_fs_or_skip("a_power_cut_without_fdatasync") else {
        return;
    };
    // No sync before answering, and no checkpoint (sled's own flush) during the test.
    let args = ["--no-fdatasync", "--checkpoint-ms", "600000"];
    let mut server = TestServer::start_in(fs.path().join("data"), &args);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let tasks: Vec<_> = (0..8)
        .map(|id| tokio::spawn(client_loop(server.endpoint(), id, ledger.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    fs.cut_power();
    server.kill();
    for task in tasks {
        task.await.unwrap();
    }
    fs.remount();
    server.restart();

    let held = ledger.lock().unwrap().held.clone();
    assert!(!held.is_empty(), "the clients got no grant at all");
    let mut client = server.client().await;
    let mut lost = 0;
    for (lock, grant) in &held {
        let info = describe(&mut client, lock).await;
        if !(info.held && info.token == grant.token) {
            lost += 1;
        }
    }
    assert!(
        lost > 0,
        "all {} acknowledged grants survived a power cut without fdatasync: the harness \
         did not lose the page cache, so it could not catch a missing sync",
        held.len()
    );
}

// checks: S2 (a grant the disk did not take is never acknowledged), S1 (the server stops
// rather than serve from a disk that fails, and starts again with every token above the
// ones it gave)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fails_stops_the_server_and_nothing_unsynced_is_acknowledged() {
    let Some(mut fs) = scratch_fs_or_skip("a_disk_that_fails") else {
        return;
    };
    // A drain timeout far longer than the test's patience: the failed request must be
    // answered at once, not when the shutdown gives up on its connection.
    let mut server = TestServer::start_in(fs.path().join("data"), &["--drain-timeout-ms", "60000"]);
    let mut client = server.client().await;
    let acquire = |lock: &str| pb::AcquireRequest {
        lock: lock.to_string(),
        holder: "disk-test".into(),
        ttl_ms: 120_000,
        ..Default::default()
    };
    let before = client
        .acquire(acquire("before"))
        .await
        .unwrap()
        .into_inner();

    // From now on every write and sync fails with EIO, as on a disk that died.
    fs.cut_power();
    let after = tokio::time::timeout(Duration::from_secs(15), client.acquire(acquire("after")))
        .await
        .expect("the request that met the failed disk is answered promptly");
    let refused = after.expect_err("a grant was acknowledged although the disk took nothing");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let status = server
        .wait_for_exit(Duration::from_secs(90))
        .expect("the server stops by itself when its disk fails");
    assert!(
        !status.success(),
        "the server must exit with a failure when its disk fails, got {status}"
    );

    // The disk comes back: what was acknowledged is there, what was not is not.
    fs.remount();
    server.restart();
    let mut client = server.client().await;
    let restored = describe(&mut client, "before").await;
    assert!(
        restored.held && restored.token == before.token,
        "{restored:?}"
    );
    assert!(!describe(&mut client, "after").await.held);
    let next = client.acquire(acquire("next")).await.unwrap().into_inner();
    assert!(next.token > before.token);
}

/// How a crash cycle brings the server down.
enum Crash {
    /// `kill -9`: the page cache survives.
    Kill,
    /// A power cut of the filesystem under the data directory, then `kill -9`: what was not
    /// synced is lost.
    PowerCut(ScratchFs),
}

impl Crash {
    fn name(&self) -> &'static str {
        match self {
            Crash::Kill => "kill -9",
            Crash::PowerCut(_) => "a power cut",
        }
    }
}

async fn describe(
    client: &mut pb::lock_service_client::LockServiceClient<tonic::transport::Channel>,
    lock: &str,
) -> pb::LockInfo {
    client
        .describe(pb::DescribeRequest {
            lock: lock.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// `cycles` rounds of: load, a crash at a random moment, restart, check the ledger.
async fn crash_cycles(server_args: &[&str], cycles: u32, seed: u64, mut crash: Crash) {
    let mut server = match &crash {
        Crash::Kill => TestServer::start_with(server_args),
        Crash::PowerCut(fs) => TestServer::start_in(fs.path().join("data"), server_args),
    };
    let how = crash.name();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut random = seed;
    let mut max_token_before = 0;

    for cycle in 0..cycles {
        // Phase 1: concurrent acquirers and releasers, then a crash at a random moment.
        let tasks: Vec<_> = (0..8)
            .map(|id| tokio::spawn(client_loop(server.endpoint(), id, ledger.clone())))
            .collect();
        let pause = 100 + next_random(&mut random) % 400;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if let Crash::PowerCut(fs) = &crash {
            fs.cut_power();
        }
        server.kill();
        for task in tasks {
            task.await.unwrap();
        }

        // Phase 2: restart on the same data directory (after the power comes back).
        if let Crash::PowerCut(fs) = &mut crash {
            fs.remount();
        }
        server.restart();
        let mut client = server.client().await;
        let ledger_now = {
            let ledger = ledger.lock().unwrap();
            (
                ledger.held.clone(),
                ledger.tokens.clone(),
                ledger.released.clone(),
            )
        };
        let (held, tokens, released) = ledger_now;
        assert!(
            !tokens.is_empty(),
            "cycle {cycle}: the clients got no grant at all"
        );

        // S2: every acknowledged, unreleased lease is still held, with its token.
        for (lock, grant) in &held {
            let info = describe(&mut client, lock).await;
            assert!(
                info.held,
                "cycle {cycle}: acknowledged grant on {lock} lost after {how}"
            );
            assert_eq!(
                info.token, grant.token,
                "cycle {cycle}: {lock} has another token"
            );
        }

        // S7: no acknowledged release came back to life.
        for (lock, token) in &released {
            let info = describe(&mut client, lock).await;
            assert!(
                !(info.held && info.token == *token),
                "cycle {cycle}: {lock} is held again by token {token}, released before {how}"
            );
        }

        // S1: no token was given twice, and every token after the restart is above all before.
        let unique: HashSet<u64> = tokens.iter().copied().collect();
        assert_eq!(
            unique.len(),
            tokens.len(),
            "cycle {cycle}: a token was issued twice"
        );
        let max_token = tokens.iter().copied().max().unwrap_or(0);
        assert!(max_token > max_token_before, "cycle {cycle}: no progress");
        max_token_before = max_token;
        let probe = client
            .acquire(pb::AcquireRequest {
                lock: format!("probe/{cycle}"),
                holder: "probe".into(),
                ttl_ms: 120_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            probe.token > max_token,
            "cycle {cycle}: token {} after restart, {max_token} before",
            probe.token
        );
        ledger.lock().unwrap().tokens.push(probe.token);
        // S2: a restored lease can still be renewed by its holder.
        if let Some(grant) = held.values().next() {
            client
                .renew(pb::RenewRequest {
                    lease_id: grant.lease_id.clone(),
                })
                .await
                .unwrap();
        }
    }
}

// checks: S1
#[test]
fn a_corrupt_data_directory_is_a_clear_error_not_a_panic_or_a_reset() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    // A real data directory first, with a grant in it that has been checkpointed into sled
    // (a grant still in the journal would be recovered from it, rightly).
    {
        let mut server = TestServer::start_with(&["--checkpoint-ms", "20"]);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let mut client = server.client().await;
            client
                .acquire(pb::AcquireRequest {
                    lock: "x".into(),
                    ttl_ms: 60_000,
                    ..Default::default()
                })
                .await
                .unwrap();
        });
        // The first journal file is deleted once sled holds its writes.
        let first_journal = server
            .data_dir()
            .join("journal")
            .join(format!("{:020}.log", 1));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while first_journal.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint within a minute"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server.kill();
        copy_dir(server.data_dir(), &data);
    }
    // Overwrite sled's data file with garbage.
    let file = data.join("db");
    let length = std::fs::metadata(&file).unwrap().len() as usize;
    std::fs::write(&file, vec![0xA5; length.max(4096)]).unwrap();

    let mut child = std::process::Command::new(binary("fenced"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit by itself; one that serves is killed after a minute and fails the test.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "started on a corrupt directory: {stdout}"
    );
    assert!(
        !stdout.contains("listening"),
        "served from a corrupt directory"
    );
    assert!(
        !stderr.contains("panicked"),
        "panicked instead of a clear error: {stderr}"
    );
    assert!(
        stderr.contains(&data.display().to_string()),
        "the error names the directory: {stderr}"
    );
}

/// Starts `fenced` on `data` and expects it to refuse: it must exit by itself, with a
/// failure, without serving or panicking. Returns what it said on stderr.
fn start_expecting_refusal(data: &std::path::Path) -> String {
    let mut child = std::process::Command::new(binary("fenced"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit by itself; one that serves is killed after a minute and fails the test.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "started: {stdout}");
    assert!(!stdout.contains("listening"), "served: {stdout}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    stderr
}

/// Where each record of a journal file starts, and where the last one ends (the record
/// format: a 4-byte little-endian length, 8 bytes of checks, the payload; then the file's
/// end or its zeros).
fn journal_records(bytes: &[u8]) -> Vec<usize> {
    let mut starts = vec![8];
    loop {
        let at = *starts.last().unwrap();
        let Some(length) = bytes.get(at..at + 4) else {
            return starts;
        };
        let length = u32::from_le_bytes(length.try_into().unwrap()) as usize;
        if length == 0 {
            return starts;
        }
        starts.push(at + 12 + length);
    }
}

// checks: S1, S2 (a journal record damaged on disk, with acknowledged grants after it, stops
// the start with the file and the offset instead of dropping them; a torn last append is
// still dropped and the server starts)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_record_stops_the_start_and_a_torn_last_append_does_not() {
    // No checkpoint during the test: the grants stay in the journal.
    let mut server = TestServer::start_with(&["--checkpoint-ms", "600000"]);
    let mut client = server.client().await;
    for lock in ["first", "second", "third"] {
        client
            .acquire(pb::AcquireRequest {
                lock: lock.into(),
                holder: "journal-test".into(),
                ttl_ms: 600_000,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    drop(client);
    server.kill();
    let file = server
        .data_dir()
        .join("journal")
        .join(format!("{:020}.log", 1));
    let original = std::fs::read(&file).unwrap();
    let starts = journal_records(&original);
    assert_eq!(starts.len(), 4, "one record per grant: {starts:?}");

    // Phase 1: a flipped bit in the first record's payload.
    let mut damaged = original.clone();
    damaged[starts[1] - 1] ^= 0x20;
    std::fs::write(&file, &damaged).unwrap();
    let stderr = start_expecting_refusal(server.data_dir());
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("at byte 8"),
        "the refusal names the file and the offset: {stderr}"
    );

    // Phase 2: the last append cut short instead (its second half never reached the disk).
    let mut torn = original;
    torn[(starts[2] + starts[3]) / 2..starts[3]].fill(0);
    std::fs::write(&file, &torn).unwrap();
    server.restart();
    let mut client = server.client().await;
    assert!(describe(&mut client, "first").await.held);
    assert!(describe(&mut client, "second").await.held);
    assert!(!describe(&mut client, "third").await.held);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The stable error code of a refusal (`fenced-error` metadata).
fn error_code(status: &tonic::Status) -> String {
    status
        .metadata()
        .get(fenced_proto::metadata::ERROR_CODE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

// checks: S2, S3, L1 (the lock-delay an expired holder asked for survives `kill -9` inside
// the delay, and is counted again in full from the restart: never shorter than promised)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_delay_survives_kill_dash_nine_and_runs_in_full_from_the_restart() {
    // Long enough that the restart lands well inside it on a loaded machine; the lease's
    // TTL short, so the test does not wait long for the expiry.
    const DELAY: Duration = Duration::from_secs(10);
    let mut server = TestServer::start();
    let mut client = server.client().await;
    let acquire = |holder: &str, lock_delay: Duration| pb::AcquireRequest {
        lock: "delayed".into(),
        holder: holder.into(),
        ttl_ms: 500,
        lock_delay_ms: lock_delay.as_millis() as u64,
        ..Default::default()
    };

    // Phase 1: a holder that asked for a lock-delay stops renewing and expires.
    let first = client
        .acquire(acquire("old-holder", DELAY))
        .await
        .unwrap()
        .into_inner();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while describe(&mut client, "delayed").await.held {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease did not expire"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A describe answers only once what it shows is durable: the expiry is on disk.
    let refused = client
        .acquire(acquire("new-holder", Duration::ZERO))
        .await
        .expect_err("granted inside the lock-delay");
    assert_eq!(error_code(&refused), "lock-delay", "{refused:?}");

    // Phase 2: kill -9 inside the delay and restart.
    let restarting = std::time::Instant::now();
    server.kill();
    server.restart();
    let mut client = server.client().await;
    let refused = client
        .acquire(acquire("new-holder", Duration::ZERO))
        .await
        .expect_err("a restart inside the lock-delay forgot it");
    assert_eq!(error_code(&refused), "lock-delay", "{refused:?}");

    // Phase 3: granted once the delay has run in full, counted from the restart.
    let granted = loop {
        match client.acquire(acquire("new-holder", Duration::ZERO)).await {
            Ok(grant) => break grant.into_inner(),
            Err(status) => {
                assert_eq!(error_code(&status), "lock-delay", "{status:?}");
                assert!(
                    restarting.elapsed() < DELAY + Duration::from_secs(60),
                    "the lock-delay never ended"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(
        restarting.elapsed() >= DELAY,
        "granted {:?} after the restart began, inside the {DELAY:?} lock-delay",
        restarting.elapsed()
    );
    assert!(granted.token > first.token);
}
