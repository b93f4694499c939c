//! `fenced --config FILE`: the real binary reads its settings from a TOML file, below the
//! command line and the environment, and refuses to start on a bad file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fenced_tests::server::TestServer;

// checks: none (operations)
#[test]
fn the_server_takes_settings_from_the_file_and_flags_win_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fenced.toml");
    // `listen` is overridden by the harness's --listen flag; `session_listen` is not.
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1\"\nsession_listen = \"127.0.0.1:0\"\nmax_ttl_ms = 60000\n",
    )
    .unwrap();
    let server = TestServer::start_with(&["--config", file.to_str().unwrap()]);
    assert_ne!(server.addr().port(), 1, "the command line's --listen wins");
    assert!(
        server.session_addr().is_some(),
        "session_listen comes from the file"
    );
}

// checks: none (operations)
#[test]
fn a_bad_config_file_stops_the_server_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown.toml", "max_ttl = 5\n", "unknown key `max_ttl`"),
        ("type.toml", "max_ttl_ms = true\n", "`max_ttl_ms`"),
        ("value.toml", "listen = \"nowhere\"\n", "`listen`"),
    ];
    for (name, text, says) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let output = run_briefly(
            Command::new(fenced_tests::binaries::binary("fenced"))
                .args(["--listen", "127.0.0.1:0", "--data-dir"])
                .arg(dir.path().join("data"))
                .env("FENCED_CONFIG", &file),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(file.to_str().unwrap()) && stderr.contains(says),
            "{name}: the error names the file and {says}: {stderr}"
        );
    }
    assert!(
        !dir.path().join("data").exists(),
        "the server did not start (it made no data directory)"
    );
}

/// Runs `command` to its exit, killing it after a generous minute (a server that started
/// despite a bad file would otherwise run for ever): its output, stdin closed.
fn run_briefly(command: &mut Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
