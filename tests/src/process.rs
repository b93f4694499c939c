//! Spawning a workspace binary that announces its address on stdout, shared by the
//! harnesses ([`crate::server::TestServer`], [`crate::kv_server::TestKv`]).
//!
//! Each binary prints exactly one line `<banner><addr>` once it serves; the harness waits
//! for that line, so tests synchronise on readiness instead of sleeping.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::binaries::binary;

/// Spawns workspace binary `name` with `args` and waits (up to a generous minute) for its
/// stdout line `<banner><addr>`; returns the child and the address. Keeps draining stdout
/// afterwards so the child never blocks on a full pipe. Panics if the line never comes.
pub fn spawn_listening(name: &str, banner: &str, args: &[OsString]) -> (Child, SocketAddr) {
    let mut child = Command::new(binary(name))
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    let banner = banner.to_string();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix(&banner) {
                let _ = sender.send(addr.trim().to_string());
                break;
            }
        }
        for _ in lines {}
    });
    let addr = match receiver.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            panic!("{name} did not report listening within 60 s (exit: {status:?})");
        }
    };
    (child, addr.parse().expect("a socket address"))
}

/// Sends a signal with the `kill` command, so the harness needs no unsafe code.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid} failed");
}
