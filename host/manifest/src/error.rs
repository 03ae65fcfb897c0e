//! Deployment errors and the IoT Edge status codes they map to.
//!
//! edgeAgent reports the outcome of reading a deployment as `lastDesiredStatus: {code,
//! description}` (iotedge.md §2.2); edgeHub reports `400` with
//! `"Error while parsing desired properties - …"` (§3.5). [`DeploymentError`] carries the code, the
//! description to report, and which twin the error belongs to.
//!
//! Inside the crate, readers fail with a [`FormatError`] (a JSON path plus a message); the twin
//! parsers turn it into a [`DeploymentError`] with the right code and wording.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `lastDesiredStatus.code` values (`DeploymentStatusCode.cs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
pub enum StatusCode {
    /// 200: the deployment was applied (or there was nothing to do).
    Successful,
    /// 400: the desired properties could not be read.
    ConfigFormatError,
    /// 406: the agent is not connected or is shutting down.
    Unknown,
    /// 412: `schemaVersion` is missing, unparsable or not supported.
    InvalidSchemaVersion,
    /// 417: the agent's desired properties are empty.
    ConfigEmptyError,
    /// 500: planning or executing the deployment failed.
    Failed,
}

impl StatusCode {
    /// The numeric code IoT Edge reports.
    pub const fn as_u16(self) -> u16 {
        match self {
            Self::Successful => 200,
            Self::ConfigFormatError => 400,
            Self::Unknown => 406,
            Self::InvalidSchemaVersion => 412,
            Self::ConfigEmptyError => 417,
            Self::Failed => 500,
        }
    }

    /// The code for a number, if IoT Edge defines it.
    pub const fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            200 => Self::Successful,
            400 => Self::ConfigFormatError,
            406 => Self::Unknown,
            412 => Self::InvalidSchemaVersion,
            417 => Self::ConfigEmptyError,
            500 => Self::Failed,
            _ => return None,
        })
    }

    /// IoT Edge's enum name (`DeploymentStatusCode`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Successful => "Successful",
            Self::ConfigFormatError => "ConfigFormatError",
            Self::Unknown => "Unknown",
            Self::InvalidSchemaVersion => "InvalidSchemaVersion",
            Self::ConfigEmptyError => "ConfigEmptyError",
            Self::Failed => "Failed",
        }
    }
}

impl From<StatusCode> for u16 {
    fn from(code: StatusCode) -> u16 {
        code.as_u16()
    }
}

impl TryFrom<u16> for StatusCode {
    type Error = String;

    fn try_from(code: u16) -> Result<Self, Self::Error> {
        Self::from_u16(code).ok_or_else(|| format!("unknown deployment status code {code}"))
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.as_u16(), self.name())
    }
}

/// Which twin of the deployment an error belongs to, so that the right module reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorOrigin {
    /// The manifest envelope (`modulesContent`) or its JSON text; the agent reports these.
    Manifest,
    /// `$edgeAgent` desired properties.
    EdgeAgent,
    /// `$edgeHub` desired properties.
    EdgeHub,
    /// The desired properties of a user module's twin.
    ModuleTwin(String),
}

/// A deployment that cannot be applied, with the status IoT Edge would report for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct DeploymentError {
    /// The `lastDesiredStatus.code` to report.
    pub code: StatusCode,
    /// The `lastDesiredStatus.description` to report: IoT Edge's wording plus the precise detail.
    pub description: String,
    /// The twin the error was found in.
    pub origin: ErrorOrigin,
}

/// IoT Edge's description for a 400 from edgeAgent.
pub const AGENT_FORMAT_ERROR: &str = "Agent configuration format is invalid.";
/// IoT Edge's description for a 417.
pub const AGENT_EMPTY_ERROR: &str =
    "This device has an empty configuration for the edge agent. Please set a deployment manifest.";
/// IoT Edge's prefix for an edgeHub desired-properties error.
pub const HUB_ERROR_PREFIX: &str = "Error while parsing desired properties - ";

impl DeploymentError {
    /// A 400 from the manifest envelope.
    pub(crate) fn manifest(error: FormatError) -> Self {
        Self {
            code: StatusCode::ConfigFormatError,
            description: format!("{AGENT_FORMAT_ERROR} {error}"),
            origin: ErrorOrigin::Manifest,
        }
    }

    /// A 400 from `$edgeAgent` (deserialization failed).
    pub(crate) fn agent_format(error: FormatError) -> Self {
        Self {
            code: StatusCode::ConfigFormatError,
            description: format!("{AGENT_FORMAT_ERROR} {error}"),
            origin: ErrorOrigin::EdgeAgent,
        }
    }

    /// A 412 from `$edgeAgent`.
    pub(crate) fn agent_schema(detail: String) -> Self {
        Self {
            code: StatusCode::InvalidSchemaVersion,
            description: detail,
            origin: ErrorOrigin::EdgeAgent,
        }
    }

    /// The 417 for empty `$edgeAgent` desired properties.
    pub(crate) fn agent_empty() -> Self {
        Self {
            code: StatusCode::ConfigEmptyError,
            description: AGENT_EMPTY_ERROR.to_owned(),
            origin: ErrorOrigin::EdgeAgent,
        }
    }

    /// A 400 from `$edgeHub`.
    pub(crate) fn hub(error: FormatError) -> Self {
        Self {
            code: StatusCode::ConfigFormatError,
            description: format!("{HUB_ERROR_PREFIX}{error}"),
            origin: ErrorOrigin::EdgeHub,
        }
    }

    /// A 400 from a user module's twin entry.
    pub(crate) fn module_twin(module: &str, error: FormatError) -> Self {
        Self {
            code: StatusCode::ConfigFormatError,
            description: error.to_string(),
            origin: ErrorOrigin::ModuleTwin(module.to_owned()),
        }
    }
}

/// A value in the wrong place or of the wrong shape: the JSON path and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FormatError {
    /// Dotted path from the twin name, e.g. `$edgeAgent.modules.filter.restartPolicy`.
    pub path: String,
    /// What is wrong with the value.
    pub message: String,
}

impl FormatError {
    /// An error at `path`.
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_numbers() {
        for code in [
            StatusCode::Successful,
            StatusCode::ConfigFormatError,
            StatusCode::Unknown,
            StatusCode::InvalidSchemaVersion,
            StatusCode::ConfigEmptyError,
            StatusCode::Failed,
        ] {
            assert_eq!(StatusCode::from_u16(code.as_u16()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, code.as_u16().to_string());
            assert_eq!(serde_json::from_str::<StatusCode>(&json).unwrap(), code);
        }
        assert_eq!(StatusCode::from_u16(201), None);
        assert!(serde_json::from_str::<StatusCode>("201").is_err());
    }

    #[test]
    fn display_names_code_and_path() {
        let error =
            DeploymentError::agent_format(FormatError::new("$edgeAgent.runtime", "missing"));
        assert_eq!(
            error.to_string(),
            "400 ConfigFormatError: Agent configuration format is invalid. $edgeAgent.runtime: missing"
        );
    }
}
