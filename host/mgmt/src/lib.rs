//! Verge's management plane: the API the `verge` CLI talks to, over HTTP on a Unix socket in the
//! data directory (`mgmt.sock`), so that it is reachable with `curl --unix-socket` too.
//!
//! [`api`] lists the requests and answers; [`server`] serves them from the daemon's parts
//! ([`Services`]); [`client`] is the CLI's side; [`deploy`] is how a manifest is applied.

pub mod api;
pub mod client;
pub mod deploy;
pub mod metrics;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use verge_agent::{AgentHandle, AgentStatus};
use verge_hub::Hub;
use verge_message::time::rfc3339;
use verge_twin::TwinStore;

use api::{DeploymentState, ModuleInfo};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "mgmt.sock";

/// The daemon's parts the management API works on.
#[derive(Clone, Debug)]
pub struct Services {
    /// The hub.
    pub hub: Arc<Hub>,
    /// Twins.
    pub twins: Arc<TwinStore>,
    /// The agent.
    pub agent: AgentHandle,
    /// The data directory (the accepted deployment is saved there).
    pub data_dir: PathBuf,
    /// How long `deploy` waits for the agent to apply a deployment.
    pub deploy_timeout: Duration,
    /// The identity registry.
    pub identities: Arc<verge_identity::Registry>,
    /// The edge CA certificate (PEM): what clients trust.
    pub trust_bundle: Arc<str>,
    /// The MQTT front.
    pub mqtt: Arc<verge_mqtt::Broker>,
}

/// The deployment's state from an agent status.
pub fn deployment_state(status: &AgentStatus) -> DeploymentState {
    DeploymentState {
        version: status.last_desired_version,
        code: status.code,
        description: status.description.clone(),
    }
}

/// `verge list`'s rows from an agent status.
pub fn module_infos(status: &AgentStatus) -> Vec<ModuleInfo> {
    let now = SystemTime::now();
    status
        .modules
        .iter()
        .map(|m| ModuleInfo {
            name: m.name.clone(),
            kind: m.kind.clone(),
            status: m.status.clone(),
            description: m.description.clone(),
            exit_code: m.exit_code,
            restart_count: m.restart_count,
            last_start: m.last_start.map(rfc3339),
            last_exit: m.last_exit.map(rfc3339),
            uptime_secs: (m.status == "running")
                .then(|| m.last_start.and_then(|t| now.duration_since(t).ok()))
                .flatten()
                .map(|d| d.as_secs()),
            image: m.image.clone(),
            version: m.version.clone(),
        })
        .collect()
}
