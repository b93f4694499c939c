//! Running `cargo build` from a process that cargo started (the demo under `cargo run`, the
//! integration tests under `cargo test`), to get the workspace's other binaries.
//!
//! Cargo gives such a process variables that describe *its* package (`CARGO_MANIFEST_DIR`,
//! `CARGO_PKG_*`, ...). A nested `cargo build` that inherits them passes them on to build
//! scripts, and some build scripts (ring's) rerun when one of them changes: so a nested
//! build that inherits them rebuilds ring, rustls, tonic and everything above them, and
//! the next outer build rebuilds them back, every time. The command from [`build_command`]
//! leaves them out.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// When cargo runs this process, builds the binaries of `packages` in the profile whose
/// output directory is `dir` (`.../release` or `.../debug`), so they stand beside it; run
/// any other way, builds nothing. `manifest_dir` is the caller's package directory, where
/// the nested build runs.
pub fn build_beside(dir: &Path, manifest_dir: &str, packages: &[&str]) -> Result<(), String> {
    if std::env::var_os("CARGO").is_none() {
        return Ok(());
    }
    let mut command = build_command(["--bins"]);
    for package in packages {
        command.args(["-p", package]);
    }
    command.current_dir(manifest_dir);
    if dir.file_name().is_some_and(|name| name == "release") {
        command.arg("--release");
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building {} failed ({status})",
            packages.join(", ")
        ))
    }
}

/// `cargo build` with `args`, run by the cargo that started this process (`CARGO`, else
/// `cargo` on the path), without the variables that cargo set for this process alone.
pub fn build_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.arg("build").args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_this_process) {
            command.env_remove(name);
        }
    }
    command
}

/// Whether cargo sets this variable for the process it runs (as opposed to the user's own
/// settings, such as `CARGO_HOME` or `CARGO_TARGET_DIR`, which the nested build keeps).
fn set_by_cargo_for_this_process(name: &str) -> bool {
    const EXACT: [&str; 7] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    EXACT.contains(&name) || name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_BIN_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_description_goes_and_the_users_settings_stay() {
        for gone in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_BIN_EXE_fenced",
        ] {
            assert!(set_by_cargo_for_this_process(gone), "{gone}");
        }
        for kept in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO",
            "PATH",
            "RUSTFLAGS",
        ] {
            assert!(!set_by_cargo_for_this_process(kept), "{kept}");
        }
    }
}
