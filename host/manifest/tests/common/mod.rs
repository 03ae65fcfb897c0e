//! Shared helpers for the integration tests: locating the IoT Edge conformance data.

use std::path::PathBuf;

/// The IoT Edge conformance folder (see [`verge_tests::conformance_dir`]).
pub fn conformance_dir() -> PathBuf {
    verge_tests::conformance_dir()
}
