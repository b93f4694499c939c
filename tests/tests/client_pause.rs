//! A real process pause: a child holding a lease through the SDK is stopped with `SIGSTOP`
//! past its TTL and continued with `SIGCONT`. The first thing it is asked after waking is
//! a token for a write; it must refuse, and report the pause and the lost lease.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use fenced_client::{AcquireOptions, Client};
use fenced_tests::server::{signal, TestServer};

/// The `lease_holder` child, its stdin, and its stdout lines.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Holder {
    fn start(endpoint: &str, lock: &str, ttl_ms: u64) -> Holder {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lease_holder"))
            .args([endpoint, lock, &ttl_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Holder {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line starting with `prefix` among the lines from index `from` on
    /// (the child's lines come from two tasks, so their order is not fixed), returning it.
    fn expect_since(&mut self, from: usize, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.seen.iter().skip(from).find(|l| l.starts_with(prefix)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line {prefix:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Waits for the next line starting with `prefix`.
    fn expect(&mut self, prefix: &str) -> String {
        let from = self.seen.len();
        self.expect_since(from, prefix)
    }

    fn ask_fence(&mut self) {
        writeln!(self.stdin, "fence").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = signal_quiet(self.child.id(), "-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal_quiet(pid: u32, sig: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill").args([sig, &pid.to_string()]).status()
}

// checks: S4, S7 (pause rule: after a pause no token until the server confirms the lease)
#[tokio::test]
async fn a_process_stopped_past_its_ttl_reports_the_pause_and_refuses_its_token() {
    let server = TestServer::start_with(&["--min-ttl-ms", "50"]);
    let ttl_ms = 1_000;

    // Phase 1: the child holds the lease and hands out its token.
    let mut holder = Holder::start(&server.endpoint(), "paused", ttl_ms);
    let acquired = holder.expect("acquired token=");
    let token: u64 = acquired["acquired token=".len()..].parse().unwrap();
    holder.expect("state held");
    holder.ask_fence();
    assert_eq!(holder.expect("fence "), format!("fence ok token={token}"));

    // Phase 2: freeze it. Its lease expires on the server, which hands the lock on.
    let stopped = Instant::now();
    signal(holder.child.id(), "-STOP");
    let other = Client::connect(server.endpoint()).await.unwrap();
    let successor = other
        .acquire("paused", AcquireOptions::wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(successor.token().get() > token);
    // Keep it stopped well past its TTL and past the pause threshold.
    let frozen_for = Duration::from_millis(2_500);
    tokio::time::sleep(frozen_for.saturating_sub(stopped.elapsed())).await;

    // Phase 3: wake it and immediately ask for a token: refused.
    let woke = holder.seen.len();
    signal(holder.child.id(), "-CONT");
    holder.ask_fence();
    let answer = holder.expect_since(woke, "fence ");
    assert!(answer.starts_with("fence refused: "), "{answer}");

    // It reports the pause (with a duration close to the stop) and the lost lease.
    let suspect = holder.expect_since(woke, "state suspect: process paused for ");
    let paused_ms: u64 = suspect["state suspect: process paused for ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(paused_ms >= 2_000, "{suspect}");
    holder.expect_since(woke, "state lost: ");

    // Asked again, it still refuses: a lost lease stays lost.
    let asked = holder.seen.len();
    holder.ask_fence();
    let again = holder.expect_since(asked, "fence ");
    assert!(again.starts_with("fence refused: "), "{again}");
    assert!(
        !holder.seen[woke..]
            .iter()
            .any(|l| l.starts_with("fence ok")),
        "{:?}",
        holder.seen
    );
    assert!(successor.fence().is_ok());
}

// checks: S4 (pause rule: a short pause makes the lease suspect until a renewal sent after
// it is confirmed; then it is held again, with the same token)
#[tokio::test]
async fn a_short_pause_makes_the_lease_suspect_until_the_server_confirms_it() {
    let server = TestServer::start_with(&["--min-ttl-ms", "50"]);

    // Phase 1: the child holds a lease with a TTL far longer than the pause to come.
    let mut holder = Holder::start(&server.endpoint(), "short-pause", 6_000);
    let acquired = holder.expect("acquired token=");
    let token: u64 = acquired["acquired token=".len()..].parse().unwrap();
    holder.expect("state held");

    // Phase 2: stopped for 1.5 s (over the 500 ms pause threshold, under the TTL).
    let stopped = holder.seen.len();
    signal(holder.child.id(), "-STOP");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    signal(holder.child.id(), "-CONT");

    // Phase 3: it reports the pause, confirms the lease with the server, and is held again.
    let suspect = holder.expect_since(stopped, "state suspect: process paused for ");
    let paused_ms: u64 = suspect["state suspect: process paused for ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(paused_ms >= 1_200, "{suspect}");
    holder.expect("state held");
    holder.ask_fence();
    assert_eq!(holder.expect("fence "), format!("fence ok token={token}"));
    assert!(
        !holder.seen.iter().any(|l| l.starts_with("state lost")),
        "{:?}",
        holder.seen
    );
}
