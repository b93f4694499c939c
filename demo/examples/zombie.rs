//! The zombie-leader demo: `cargo run --release -p fenced-demo --example zombie`.
//!
//! Runs the story twice with real processes, the gate on and then off, narrates every
//! event with a timestamp, prints a verdict for each run and writes `zombie-demo.html`.
//!
//! `-- --store postgres --postgres-url URL` (or `FENCED_DEMO_POSTGRES_URL`) tells the same
//! story against a PostgreSQL database you run: the workers write in transactions that
//! start with `fenced_check`, and the database refuses the zombie's write. The demo
//! installs `fenced.sql` there and uses the table `fenced_demo_output`.
//!
//! `-- --secure tokens` (or `--secure certificates`) runs it secured: every worker (and the
//! director) authenticates with its own bearer token (or client certificate, over TLS), a
//! policy lets only the workers take the lock, and every grant carries a sequencer signed
//! by the server, which `fenced-kv` verifies with every write.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use fenced_demo::credentials::Secure;
use fenced_demo::{html, scenario};

/// Where the workers write, and whether the run is secured, from the command line.
fn parse_args() -> Result<(scenario::Store, Option<Secure>), String> {
    let mut store = "kv".to_string();
    let mut url = std::env::var("FENCED_DEMO_POSTGRES_URL").ok();
    let mut secure = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => store = value()?,
            "--postgres-url" => url = Some(value()?),
            "--secure" => {
                secure = Some(match value()?.as_str() {
                    "tokens" => Secure::Tokens,
                    "certificates" => Secure::Certificates,
                    other => return Err(format!("--secure {other:?}: tokens or certificates")),
                })
            }
            other => {
                return Err(format!(
                    "unknown flag {other:?} (flags: --store kv|postgres, --postgres-url URL, \
                     --secure tokens|certificates)"
                ))
            }
        }
    }
    let store = parse_store(&store, url)?;
    Ok((store, secure))
}

/// The store named on the command line.
fn parse_store(store: &str, url: Option<String>) -> Result<scenario::Store, String> {
    match (store, url) {
        ("kv", _) => Ok(scenario::Store::Kv),
        ("postgres", Some(url)) => Ok(scenario::Store::Postgres { url }),
        ("postgres", None) => Err(
            "--store postgres needs --postgres-url URL or FENCED_DEMO_POSTGRES_URL \
             (e.g. postgresql://postgres@127.0.0.1:5432/postgres)"
                .into(),
        ),
        (other, _) => Err(format!("--store {other:?}: kv or postgres")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (store, secure) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("zombie demo: {message}");
            return ExitCode::FAILURE;
        }
    };
    let binaries = match build_binaries() {
        Ok(dir) => dir,
        Err(message) => {
            eprintln!("zombie demo: {message}");
            return ExitCode::FAILURE;
        }
    };
    let mut reports = Vec::new();
    for gate in [true, false] {
        let options = scenario::Options {
            fenced: binaries.join("fenced"),
            kv: binaries.join("fenced-kv"),
            worker: binaries.join("fenced-demo-worker"),
            store: store.clone(),
            ttl: Duration::from_secs(2),
            gate,
            narrate: true,
            show_logs: std::env::var_os("RUST_LOG").is_some(),
            secure,
        };
        println!();
        match scenario::run(&options).await {
            Ok(report) => reports.push(report),
            Err(error) => {
                eprintln!("zombie demo failed: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!();
    for report in &reports {
        println!(
            "gate {:<3} -> {}",
            if report.gate { "on" } else { "off" },
            html::verdict(report).1
        );
    }
    let path = PathBuf::from("zombie-demo.html");
    match std::fs::write(&path, html::render(&reports)) {
        Ok(()) => println!("\nthe timeline: {}", path.display()),
        Err(error) => eprintln!("cannot write {}: {error}", path.display()),
    }
    ExitCode::SUCCESS
}

/// Builds the server, the store and the worker in this example's profile (when run by
/// cargo), and returns the folder they are in.
fn build_binaries() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/examples/zombie
    let dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or("cannot tell where the binaries are")?
        .to_path_buf();
    fenced_demo::cargo::build_beside(
        &dir,
        env!("CARGO_MANIFEST_DIR"),
        &["fenced", "fenced-kv", "fenced-demo"],
    )?;
    for name in ["fenced", "fenced-kv", "fenced-demo-worker"] {
        if !dir.join(name).exists() {
            return Err(format!("{} is missing", dir.join(name).display()));
        }
    }
    Ok(dir)
}
