//! Wall-clock time as IoT Hub writes it (`2026-11-22T10:00:00.123Z`), without a date crate.
//!
//! The formatting is the host's own (`host/message/src/time.rs`), shared as source so module
//! timestamps and hub timestamps read the same.

#[path = "../../host/message/src/time.rs"]
#[allow(dead_code)]
mod shared;

pub use shared::rfc3339;

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}
