//! Finds the workspace's binaries (`fenced`, `fenced-kv`, `fencectl`, ...) for tests that run them as
//! real processes, building them first.
//!
//! Cargo builds a package's own binaries for its integration tests, but not another
//! package's, so the harness runs `cargo build --workspace --bins` once per test process. The
//! outer `cargo test` does not hold the build lock while tests run, so this does not
//! deadlock, and when the binaries are fresh it is a no-op of a second or so. The inner build leaves out the variables `cargo test` set for the test process
//! ([`fenced_demo::cargo`] says why).

use std::path::PathBuf;
use std::sync::OnceLock;

/// The path of a workspace binary, built (once per test process) if needed.
///
/// Panics with cargo's output if the build fails: a test that cannot get its binary has
/// nothing to test.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate lives inside the workspace")
            .to_path_buf();
        let output = fenced_demo::cargo::build_command(["--workspace", "--bins"])
            .current_dir(&workspace)
            .output()
            .expect("cargo runs");
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
