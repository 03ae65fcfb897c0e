//! The Azure IoT Edge deployment manifest, as Verge reads it.
//!
//! [`Deployment::parse`] turns a manifest (`{"modulesContent": {"$edgeAgent": …, "$edgeHub": …,
//! "<moduleId>": …}}`) into typed configuration: [`AgentConfig`] (runtime, system modules and
//! modules), [`HubConfig`] (routes and store-and-forward) and the desired properties of the other
//! module twins. Acceptance rules, defaults and status codes follow IoT Edge (reference study
//! `iotedge.md` §1–§3), so manifests written for IoT Edge work unchanged. Verge's one deviation:
//! a module may have `"type": "wasm"` (a WebAssembly component) besides `"type": "docker"`.
//!
//! A rejected deployment is a [`DeploymentError`]: the status code edgeAgent/edgeHub would report
//! (400, 412, 417), a description with IoT Edge's wording plus the JSON path of the problem, and
//! the twin it belongs to. [`AgentConfig::from_desired`] and [`HubConfig::from_desired`] read one
//! twin's desired properties on their own, for twin updates.
//!
//! Route text is carried, not compiled; that is the router's job.

mod agent;
pub mod create_options;
mod deployment;
mod error;
mod hub;
mod json;
mod module;
mod paths;
mod policy;
mod version;

pub use agent::{
    AGENT_SCHEMA_VERSION, AgentConfig, EDGE_AGENT, EDGE_HUB, RegistryCredential, RuntimeConfig,
    RuntimeSettings, SystemModules, is_valid_module_id,
};
pub use deployment::{
    Deployment, EDGE_AGENT_TWIN, EDGE_HUB_TWIN, MODULES_CONTENT, PROPERTIES_DESIRED,
};
pub use error::{
    AGENT_EMPTY_ERROR, AGENT_FORMAT_ERROR, DeploymentError, ErrorOrigin, FormatError,
    HUB_ERROR_PREFIX, StatusCode,
};
pub use hub::{
    DEFAULT_ROUTE_PRIORITY, HUB_LATEST_SCHEMA_VERSION, HubConfig, MAX_ROUTE_PRIORITY, RouteConfig,
    StoreAndForward, is_valid_route_name,
};
pub use module::{
    DEFAULT_STARTUP_ORDER, ModuleChange, ModuleConfig, ModuleKind, ModuleSettings,
    is_valid_env_name, normalize_docker_image,
};
pub use paths::{is_local_path, resolve_local_images};
pub use policy::{DesiredStatus, ImagePullPolicy, ModuleType, RestartPolicy};
pub use version::{SchemaVersion, VersionParseError};
