//! Finds the workspace's binaries (`fenced`, `fenced-kv`, ...) for tests that run them as
//! real processes, building them first.
//!
//! Cargo builds a package's own binaries for its integration tests, but not another
//! package's, so the harness runs `cargo build --workspace --bins` once per test process. The
//! outer `cargo test` does not hold the build lock while tests run, so this does not
//! deadlock, and when the binaries are fresh it is a no-op of a second or so.
//!
//! The inner build runs without the variables `cargo test` sets for the test process
//! (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...). Some build scripts (ring's) rerun when one of
//! them changes, so inheriting them made every inner build and the next outer one rebuild
//! ring, rustls, tonic and everything above them, each undoing the other.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The path of a workspace binary, built (once per test process) if needed.
///
/// Panics with cargo's output if the build fails: a test that cannot get its binary has
/// nothing to test.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate lives inside the workspace")
            .to_path_buf();
        let mut build = Command::new(cargo);
        build
            .args(["build", "--workspace", "--bins"])
            .current_dir(&workspace);
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(set_by_cargo_for_the_test) {
                build.env_remove(name);
            }
        }
        let output = build.output().expect("cargo runs");
        assert!(
            output.status.success(),
            "building the workspace binaries failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The test executable is target/<profile>/deps/<name>-<hash>: binaries are two up.
        let exe = std::env::current_exe().expect("the test knows its own path");
        exe.parent()
            .and_then(|deps| deps.parent())
            .expect("test executables live in target/<profile>/deps")
            .to_path_buf()
    });
    let path = dir.join(name);
    assert!(path.exists(), "no binary at {}", path.display());
    path
}

/// Whether `cargo test` sets this variable for the test process (as opposed to the user's
/// own settings, such as `CARGO_HOME` or `CARGO_TARGET_DIR`, which the inner build keeps).
fn set_by_cargo_for_the_test(name: &str) -> bool {
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
