//! Shared helpers for the integration tests: locating the IoT Edge conformance data.

use std::path::PathBuf;

/// The IoT Edge conformance folder: `$VERGE_CONFORMANCE_DIR` (the folder itself, or its parent
/// holding `iotedge/`), else `<CARGO_MANIFEST_DIR>/../../../shared/conformance/iotedge`.
/// Panics when it cannot be found: the conformance tests must not pass by skipping.
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
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/iotedge")
        }
    };
    assert!(
        dir.join("manifests").is_dir(),
        "IoT Edge conformance data not found at {} (set VERGE_CONFORMANCE_DIR)",
        dir.display()
    );
    dir
}
