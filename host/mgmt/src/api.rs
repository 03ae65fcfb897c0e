//! The management API's requests and answers, shared by the server and the client.
//!
//! | request | answer |
//! |---|---|
//! | `GET /modules` | [`ModuleList`] |
//! | `POST /deployment` (a deployment manifest) | [`DeployReport`]; 400 with a report when refused |
//! | `GET /twins/{id}` | [`Twin`] |
//! | `GET /modules/{name}/logs?tail=N&follow=true` | newline-delimited [`LogEntry`] |
//! | `POST /modules/{name}/restart` | 204 |
//! | `POST /modules/{name}/methods` ([`MethodRequest`]) | [`MethodAnswer`] (IoT Hub's shape) |
//! | `GET /monitor?queued=true` | newline-delimited [`verge_message::json::MessageDoc`] |
//!
//! Errors are [`ApiError`] bodies with an HTTP status.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One module, as `verge list` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleInfo {
    /// Module id.
    pub name: String,
    /// `wasm`, `docker`, or `system` (edgeAgent, edgeHub: Verge itself).
    pub kind: String,
    /// IoT Edge's `runtimeStatus`.
    pub status: String,
    /// `statusDescription`.
    pub description: String,
    /// Last exit code.
    pub exit_code: i64,
    /// Restarts counted by the restart policy.
    pub restart_count: u32,
    /// Last start, RFC 3339.
    pub last_start: Option<String>,
    /// Last exit, RFC 3339.
    pub last_exit: Option<String>,
    /// Seconds since the last start, when running.
    pub uptime_secs: Option<u64>,
    /// `settings.image`.
    pub image: String,
    /// `version`.
    pub version: String,
}

/// The deployment's state as the agent last reported it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentState {
    /// `lastDesiredVersion`.
    pub version: u64,
    /// `lastDesiredStatus.code`.
    pub code: u16,
    /// `lastDesiredStatus.description`.
    pub description: String,
}

/// `GET /modules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleList {
    /// The deployment's state.
    pub deployment: DeploymentState,
    /// Every module, system modules first.
    pub modules: Vec<ModuleInfo>,
}

/// The outcome of `POST /deployment`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployReport {
    /// IoT Edge's status: 200 applied, 500 applied with failures, 400/412/417 refused.
    pub code: u16,
    /// What went wrong, if anything.
    pub description: String,
    /// The `$edgeAgent` desired version of this deployment (0 if refused).
    pub version: u64,
    /// The `$edgeHub` desired version of this deployment (0 if refused).
    #[serde(default)]
    pub hub_version: u64,
    /// The modules after applying it.
    pub modules: Vec<ModuleInfo>,
}

/// `GET /twins/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Twin {
    /// Desired properties with `$version`.
    pub desired: Value,
    /// Reported properties with `$version`.
    pub reported: Value,
}

/// One line of a module's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// RFC 3339.
    pub time: String,
    /// `stdout`, `stderr` or `verge` (the runtime, about the module).
    pub stream: String,
    /// The text.
    pub text: String,
}

/// `POST /modules/{name}/methods`, in IoT Hub's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodRequest {
    /// Method name.
    pub method_name: String,
    /// JSON payload.
    #[serde(default)]
    pub payload: Value,
    /// Seconds to wait for the answer (default 30).
    #[serde(default)]
    pub response_timeout_in_seconds: Option<u64>,
}

/// A method's answer, in IoT Hub's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodAnswer {
    /// The module's status.
    pub status: i32,
    /// The module's JSON payload.
    pub payload: Value,
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub message: String,
}
