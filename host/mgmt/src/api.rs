//! The management API's requests and answers, shared by the server and the client.
//!
//! | request | answer |
//! |---|---|
//! | `GET /modules` | [`ModuleList`] |
//! | `POST /deployment` (a deployment manifest) | [`DeployReport`]; 400 with a report when refused |
//! | `GET /twins/{id}` | [`Twin`] |
//! | `POST /twins/{id}/desired` (a JSON merge patch) | [`Twin`] after the patch; 400 if refused |
//! | `GET /modules/{name}/logs?tail=N&follow=true` | newline-delimited [`LogEntry`] |
//! | `POST /modules/{name}/restart` | 204 |
//! | `POST /modules/{name}/methods` ([`MethodRequest`]) | [`MethodAnswer`] (IoT Hub's shape) |
//! | `POST /devices/{device}[/modules/{module}]/methods` ([`MethodRequest`]) | [`MethodAnswer`]: a leaf device, or a client behind a child edge device |
//! | `POST /devices/{device}/messages` ([`verge_message::json::MessageDoc`]) | 202: a cloud-to-device message, stored until the device takes it |
//! | `POST /devices/{child}/deployment` (a deployment manifest) | [`DeployReport`]: the child's twins are set |
//! | `GET /monitor?queued=true` | newline-delimited [`verge_message::json::MessageDoc`] |
//! | `GET /identities` | [`IdentityInfo`]s |
//! | `POST /identities` ([`NewIdentity`]) | 201 [`AddedIdentity`] (SAS keys only here, once) |
//! | `DELETE /identities/{device}[/{module}]` | 204 |
//! | `GET /trust-bundle` | [`TrustBundle`]: the edge CA certificate |
//! | `GET /stats` | [`Stats`]: the hub's and the MQTT front's counters |
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

/// One registered identity (never its keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityInfo {
    /// `device` or `device/module`.
    pub id: String,
    /// `edge_device`, `module` (deployed, keys never leave the store), `external_module`,
    /// `leaf_device`, `edge_device_child`.
    pub kind: String,
    /// `SAS`, `X.509 thumbprint` or `X.509 CA`.
    pub auth: String,
    /// Changes when the identity is created again.
    pub generation_id: String,
}

/// `POST /identities`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewIdentity {
    /// `device` (a leaf device) or `module` (a module of this edge device run elsewhere).
    pub kind: String,
    /// The device or module id.
    pub id: String,
    /// Thumbprint authentication: the primary certificate's SHA-256 or SHA-1 thumbprint.
    #[serde(default)]
    pub thumbprint: Option<String>,
    /// The secondary thumbprint.
    #[serde(default)]
    pub secondary_thumbprint: Option<String>,
    /// CA authentication (devices): a certificate chained to the edge CA with CN = the id.
    #[serde(default)]
    pub ca: bool,
}

/// The answer to `POST /identities`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddedIdentity {
    /// The identity.
    pub identity: IdentityInfo,
    /// With SAS: the connection string with the primary key (shown this once).
    pub connection_string: Option<String>,
    /// With SAS: the connection string with the secondary key.
    pub secondary_connection_string: Option<String>,
}

/// `GET /trust-bundle`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrustBundle {
    /// The edge CA certificate, PEM.
    pub pem: String,
}

/// `GET /stats`: counters since the daemon started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Messages that entered the hub.
    pub messages_received: u64,
    /// Deliveries queued (a message routed to three destinations counts three).
    pub messages_routed: u64,
    /// Messages no route selected.
    pub messages_dropped_no_route: u64,
    /// MQTT clients connected now.
    pub mqtt_connected: u64,
    /// MQTT CONNECTs accepted.
    pub mqtt_connections_accepted: u64,
    /// MQTT CONNECTs refused (credentials, client id) and failed TLS handshakes.
    pub mqtt_connections_refused: u64,
    /// PUBLISHes refused (the client was disconnected).
    pub mqtt_publishes_refused: u64,
    /// SUBSCRIBE filters refused.
    pub mqtt_subscriptions_refused: u64,
    /// Connections closed for a malformed packet.
    pub mqtt_malformed: u64,
    /// Messages MQTT clients sent.
    pub mqtt_messages_in: u64,
    /// Messages delivered to MQTT clients.
    pub mqtt_messages_out: u64,
}
