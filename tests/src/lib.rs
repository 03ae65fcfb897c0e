//! Verge's test kit: what tests across the workspace share.
//!
//! - [`guest`] builds the wasm components the tests run (the samples and the test guests under
//!   `tests/guests/`) once per `cargo test` run, with the `wasm` profile for `wasm32-wasip2`,
//!   and returns their paths. Cargo's own lock and freshness checks make concurrent and repeated
//!   calls cheap.
//! - [`python_guest`] builds a Python sample (`samples/modules/{name}/build.sh`, componentize-py)
//!   once per test run and returns its component's path.
//! - [`workspace`] is the repository root.
//! - [`softhsm`] makes a private SoftHSM2 token (PKCS#11) for key store tests.
//! - [`Rng`]: a deterministic random generator for the tests that mutate inputs.
//! - [`mqtt`]: the Python MQTT clients, SAS tokens, loopback addresses for MQTT tests.
//! - [`certs`]: client certificates made with `openssl`.
//! - [`containerd`]: a private containerd (Debian's 1.6, runc) with its own socket, root and
//!   state; [`registry`]: a private OCI registry (Debian's `docker-registry`, htpasswd) on
//!   loopback; [`images`]: OCI image layouts (a busybox rootfs) and wasm OCI artifacts built
//!   locally. `tests/setup --containers` installs what they need.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};

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

/// IoT Edge's conformance vectors: `$VERGE_CONFORMANCE_DIR` (the `iotedge` folder itself, or its
/// parent), else `../shared/conformance/iotedge` beside the repository. Panics when they are not
/// there: the conformance tests must never pass by skipping.
pub fn conformance_dir() -> PathBuf {
    let dir = match std::env::var_os("VERGE_CONFORMANCE_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.join("iotedge").is_dir() {
                dir.join("iotedge")
            } else {
                dir
            }
        }
        None => workspace().join("../shared/conformance/iotedge"),
    };
    assert!(
        dir.join("conditions.json").is_file(),
        "IoT Edge conformance vectors not found at {} (set VERGE_CONFORMANCE_DIR)",
        dir.display()
    );
    dir
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
        cmd.current_dir(workspace()).args([
            "build",
            "--quiet",
            "--profile",
            "wasm",
            "--target",
            "wasm32-wasip2",
        ]);
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

/// The component of the Python sample `samples/modules/{name}`, built by its `build.sh` once per
/// test run (the script itself skips the build when the component is fresh). Panics with the
/// script's output if it fails.
///
/// The script writes `{target}/wasm32-wasip2/wasm/{name with _}.wasm`; it is given this run's
/// target directory as `CARGO_TARGET_DIR`. Its first run creates `target/py-venv` and installs
/// componentize-py (from PyPI); a build takes 6-15 s on 2 cores.
pub fn python_guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, Result<(), String>>>> = OnceLock::new();
    let target = workspace().join(target_dir());
    let built = {
        // Held during the build: tests asking for the same module wait for one build.
        let mut built = BUILT
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        built
            .entry(name.to_owned())
            .or_insert_with(|| {
                let script = workspace()
                    .join("samples/modules")
                    .join(name)
                    .join("build.sh");
                match Command::new("bash")
                    .arg(&script)
                    .env("CARGO_TARGET_DIR", &target)
                    .output()
                {
                    Ok(out) if out.status.success() => Ok(()),
                    Ok(out) => Err(format!(
                        "{} exited with {}:\n{}{}",
                        script.display(),
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    )),
                    Err(e) => Err(format!("cannot run {}: {e}", script.display())),
                }
            })
            .clone()
    };
    if let Err(e) = built {
        panic!("building the Python guest {name} failed:\n{e}");
    }
    let path = target
        .join("wasm32-wasip2/wasm")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} was not built", path.display());
    path
}
pub mod certs;
pub mod containerd;
pub mod daemon;
pub mod images;
pub mod mqtt;
pub mod registry;
mod rng;
pub use rng::Rng;
pub mod softhsm;
