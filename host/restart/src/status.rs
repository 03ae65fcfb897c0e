//! `RuntimeStatus`: what a module is actually doing (iotedge.md §2.3, `Agent.Core/IModule.cs`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A module's runtime status, serialized as IoT Edge reports it (`runtimeStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeStatus {
    /// The status cannot be determined. The restart rules refuse it.
    Unknown,
    /// The module had trouble running and waits for its cool-off period before a restart.
    Backoff,
    /// The module is running.
    Running,
    /// The module runs but reports itself unhealthy.
    Unhealthy,
    /// The module exited with code 0.
    Stopped,
    /// The module exited with a non-zero code, or its restart budget is spent.
    Failed,
    /// The module could not be removed; it can only be removed.
    Dead,
}

impl RuntimeStatus {
    /// Every status with its reported spelling.
    pub const ALL: &'static [(&'static str, RuntimeStatus)] = &[
        ("unknown", Self::Unknown),
        ("backoff", Self::Backoff),
        ("running", Self::Running),
        ("unhealthy", Self::Unhealthy),
        ("stopped", Self::Stopped),
        ("failed", Self::Failed),
        ("dead", Self::Dead),
    ];

    /// The reported spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Backoff => "backoff",
            Self::Running => "running",
            Self::Unhealthy => "unhealthy",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    /// Parses a reported status (ASCII case ignored).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|(_, status)| *status)
    }
}

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_uses_iot_edge_spelling() {
        for (name, status) in RuntimeStatus::ALL {
            assert_eq!(
                serde_json::to_string(status).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(RuntimeStatus::parse(name), Some(*status));
            assert_eq!(status.to_string(), *name);
        }
        assert_eq!(
            serde_json::from_str::<RuntimeStatus>("\"backoff\"").unwrap(),
            RuntimeStatus::Backoff
        );
        assert!(serde_json::from_str::<RuntimeStatus>("\"sleeping\"").is_err());
    }
}
