//! Verge's test kit: what tests across the workspace share.
//!
//! - [`guest`] builds the wasm components the tests run (the samples and the test guests under
//!   `tests/guests/`) once per `cargo test` run, with the `wasm` profile for `wasm32-wasip2`,
//!   and returns their paths. Cargo's own lock and freshness checks make concurrent and repeated
//!   calls cheap.
//! - [`workspace`] is the repository root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn workspace() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    })
}

/// The target directory cargo uses.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Every guest component the tests use, by package name.
pub const GUESTS: &[&str] = &["temp-sensor", "filter", "misbehave"];

/// The component of guest package `name`, built if needed. Panics with cargo's output if the
/// build fails: a test cannot run without its guest.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(workspace())
            .args(["build", "--quiet", "--profile", "wasm", "--target", "wasm32-wasip2"]);
        for guest in GUESTS {
            cmd.args(["-p", guest]);
        }
        match cmd.output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(e) => Err(format!("cannot run cargo: {e}")),
        }
    });
    if let Err(e) = built {
        panic!("building the guest components failed:\n{e}");
    }
    let path = target_dir()
        .join("wasm32-wasip2/wasm")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} was not built", path.display());
    path
}
