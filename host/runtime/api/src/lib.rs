//! The module-runtime trait: one way for the agent to run a module, whatever runs it.
//!
//! A [`ModuleRuntime`] turns a [`ModuleSpec`] (a module of the deployment manifest, with paths
//! resolved) into a running module, given a [`ModuleContext`]: the module's identity, the hub it
//! sends to and receives from, the twin store, and its log. It answers with a
//! [`ModuleHandle`], through which the agent learns when the module exits and asks it to stop.
//!
//! The wasm runtime runs components in-process; the container runtime (later) runs OCI
//! containers through containerd, whose modules reach the hub over MQTT. The agent treats both
//! the same: restart policies, backoff and status are decided above this trait.

pub mod log;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use verge_hub::{Hub, Identity};
use verge_twin::TwinStore;

pub use log::{LogLine, ModuleLog, Stream};

/// A boxed future, for object-safe async trait methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a runtime needs to know of a module: the manifest's definition, resolved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModuleSpec {
    /// Module id.
    pub name: String,
    /// `type` in the manifest: `wasm` or `docker`.
    pub kind: String,
    /// `settings.image`: for wasm, an absolute path to the component.
    pub image: String,
    /// `version` (informational; part of what makes a module changed).
    pub version: String,
    /// `settings.createOptions`, joined from its chunks and parsed.
    pub create_options: Option<serde_json::Value>,
    /// `env` from the manifest.
    pub env: BTreeMap<String, String>,
    /// `imagePullPolicy`.
    pub pull_policy: PullPolicy,
    /// The deployment's `registryCredentials` (every entry: the runtime picks the one whose
    /// address is the image's registry).
    pub registry_credentials: Vec<RegistryCredentials>,
}

/// `imagePullPolicy`: whether a runtime may fetch a module's image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// `on-create`: fetch the image when it is not present.
    #[default]
    OnCreate,
    /// `never`: the image must be present.
    Never,
}

/// Credentials for one registry, as in the deployment manifest's
/// `$edgeAgent.properties.desired.runtime.settings.registryCredentials.<name>`. `Debug` hides
/// the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// `address`: the registry's `host[:port]` (a scheme and a trailing `/` are tolerated).
    pub address: String,
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("address", &self.address)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl RegistryCredentials {
    /// The entry of `all` for registry `host` (`host[:port]`, compared case-insensitively).
    pub fn for_registry<'a>(all: &'a [Self], host: &str) -> Option<&'a Self> {
        all.iter().find(|c| {
            let address = c
                .address
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            address.eq_ignore_ascii_case(host)
        })
    }
}

/// Everything a running module is connected to.
#[derive(Clone, Debug)]
pub struct ModuleContext {
    /// The module's identity on the edge device.
    pub identity: Identity,
    /// Changes each time the module is created anew (IoT Hub's module generation id).
    pub generation_id: String,
    /// The IoT Hub host name (`IOTEDGE_IOTHUBHOSTNAME`).
    pub iothub_hostname: String,
    /// The gateway's host name for this module (`IOTEDGE_GATEWAYHOSTNAME`).
    pub gateway_hostname: String,
    /// The hub.
    pub hub: Arc<Hub>,
    /// Twins.
    pub twins: Arc<TwinStore>,
    /// The module's log; it outlives restarts of the module.
    pub log: ModuleLog,
}

impl ModuleContext {
    /// The module's environment: IoT Edge's module variables, then the manifest's `env`
    /// (which may override them, as in IoT Edge).
    pub fn environment(&self, spec: &ModuleSpec) -> Vec<(String, String)> {
        self.environment_with(spec, &[])
    }

    /// [`ModuleContext::environment`] with the runtime's own variables (e.g. the workload
    /// API's) among IoT Edge's, before the manifest's `env`.
    pub fn environment_with(
        &self,
        spec: &ModuleSpec,
        runtime: &[(String, String)],
    ) -> Vec<(String, String)> {
        let module = self.identity.module_id().unwrap_or_default();
        let mut env: BTreeMap<String, String> = [
            ("IOTEDGE_DEVICEID", self.identity.device_id()),
            ("IOTEDGE_MODULEID", module),
            ("IOTEDGE_MODULEGENERATIONID", &self.generation_id),
            ("IOTEDGE_IOTHUBHOSTNAME", &self.iothub_hostname),
            ("IOTEDGE_GATEWAYHOSTNAME", &self.gateway_hostname),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(runtime.iter().cloned());
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.into_iter().collect()
    }
}

/// How a module ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code: 0 for a clean stop. The wasm runtime documents its codes (trap, deadline,
    /// memory limit); containers give the process's.
    pub code: i64,
    /// Why, for `statusDescription`.
    pub description: String,
    /// When.
    pub at: SystemTime,
}

impl Exit {
    /// An exit now.
    pub fn new(code: i64, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            at: SystemTime::now(),
        }
    }
}

/// Why a runtime could not prepare or start a module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The image (component file, container image) is not there.
    #[error("image not found: {0}")]
    NotFound(String),
    /// The image or the module's options are not valid for this runtime.
    #[error("{0}")]
    Invalid(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// What preparing a module found out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// The image's content digest (`sha256:…`), reported as `settings.imageHash`.
    pub image_hash: Option<String>,
}

/// A way of running modules (`wasm`, `docker`).
pub trait ModuleRuntime: Send + Sync + 'static {
    /// The module `type` this runtime runs.
    fn kind(&self) -> &'static str;

    /// Check the module and fetch or compile what it needs, so that `start` is fast. Called on
    /// deployment, before anything is stopped, so a module that cannot run is reported without
    /// disturbing the running one.
    fn prepare<'a>(&'a self, spec: &'a ModuleSpec)
    -> BoxFuture<'a, Result<Prepared, RuntimeError>>;

    /// [`ModuleRuntime::prepare`], telling the module's log how what takes time (an image
    /// pull) goes. By default, `prepare`.
    fn prepare_logged<'a>(
        &'a self,
        spec: &'a ModuleSpec,
        log: &'a ModuleLog,
    ) -> BoxFuture<'a, Result<Prepared, RuntimeError>> {
        let _ = log;
        self.prepare(spec)
    }

    /// Start the module. Returns once it runs (for wasm: instantiated and `init` returned).
    fn start<'a>(
        &'a self,
        spec: &'a ModuleSpec,
        context: ModuleContext,
    ) -> BoxFuture<'a, Result<ModuleHandle, RuntimeError>>;
}

/// The agent's side of a running module.
#[derive(Clone, Debug)]
pub struct ModuleHandle {
    stop: watch::Sender<Option<Duration>>,
    exit: watch::Receiver<Option<Exit>>,
}

/// The runtime's side of a running module: learn when to stop, report the exit.
#[derive(Debug)]
pub struct ModuleControl {
    stop: watch::Receiver<Option<Duration>>,
    exit: watch::Sender<Option<Exit>>,
}

impl ModuleHandle {
    /// A connected handle and control.
    pub fn new() -> (Self, ModuleControl) {
        let (stop_tx, stop_rx) = watch::channel(None);
        let (exit_tx, exit_rx) = watch::channel(None);
        (
            Self {
                stop: stop_tx,
                exit: exit_rx,
            },
            ModuleControl {
                stop: stop_rx,
                exit: exit_tx,
            },
        )
    }

    /// Ask the module to stop, giving it `grace` before it is killed.
    pub fn request_stop(&self, grace: Duration) {
        self.stop.send_replace(Some(grace));
    }

    /// The exit, if the module has exited.
    pub fn exit(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Wait for the module to exit.
    pub async fn exited(&mut self) -> Exit {
        loop {
            if let Some(exit) = self.exit.borrow_and_update().clone() {
                return exit;
            }
            if self.exit.changed().await.is_err() {
                // The runtime dropped its control without reporting: treat as a crash.
                return self
                    .exit()
                    .unwrap_or_else(|| Exit::new(-1, "the runtime lost track of the module"));
            }
        }
    }

    /// Stop the module and wait for it.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        self.request_stop(grace);
        self.exited().await
    }
}

impl ModuleControl {
    /// Wait until a stop is requested; returns the grace period.
    pub async fn stop_requested(&mut self) -> Duration {
        loop {
            if let Some(grace) = *self.stop.borrow_and_update() {
                return grace;
            }
            if self.stop.changed().await.is_err() {
                // The agent dropped the handle: stop now.
                return Duration::ZERO;
            }
        }
    }

    /// Report the exit (first report wins).
    pub fn exited(&self, exit: Exit) {
        self.exit.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(exit);
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_and_exit_travel_between_handle_and_control() {
        let (mut handle, mut control) = ModuleHandle::new();
        let runtime = tokio::spawn(async move {
            let grace = control.stop_requested().await;
            control.exited(Exit::new(0, format!("stopped within {grace:?}")));
            control.exited(Exit::new(1, "ignored: first report wins"));
        });
        assert!(handle.exit().is_none());
        let exit = handle.stop(Duration::from_secs(3)).await;
        assert_eq!(
            (exit.code, exit.description.as_str()),
            (0, "stopped within 3s")
        );
        runtime.await.unwrap();
        assert_eq!(handle.exit().unwrap().code, 0);
    }

    #[tokio::test]
    async fn a_vanished_runtime_reads_as_a_crash() {
        let (mut handle, control) = ModuleHandle::new();
        drop(control);
        assert_eq!(handle.exited().await.code, -1);
    }
}
