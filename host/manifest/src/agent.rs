//! `$edgeAgent` desired properties (iotedge.md §1.2) and the order of its status codes (§2.2).
//!
//! [`AgentConfig::from_desired`] checks in IoT Edge's order (`EdgeAgentConnection.cs`):
//! 1. no content besides `$version` / `$metadata` → **417** `ConfigEmptyError`;
//! 2. the body does not deserialize → **400** `ConfigFormatError` (a missing or `null`
//!    `schemaVersion` is one of these: IoT Edge's constructor rejects it while deserializing);
//! 3. `schemaVersion` is blank or not a version, its major is not 1, its minor is not 0 or 1, or
//!    it is 1.0 and a module sets `startupOrder` → **412** `InvalidSchemaVersion`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::error::{DeploymentError, FormatError};
use crate::json::Obj;
use crate::module::{DEFAULT_STARTUP_ORDER, ModuleConfig, ModuleKind, parse_module};
use crate::version::SchemaVersion;

/// The agent schema version Verge implements (`EdgeAgentConnection.ExpectedSchemaVersion`).
pub const AGENT_SCHEMA_VERSION: SchemaVersion = SchemaVersion {
    major: 1,
    minor: 1,
    build: Some(0),
    revision: None,
};

/// The module names reserved for `systemModules`.
pub const EDGE_AGENT: &str = "edgeAgent";
/// See [`EDGE_AGENT`].
pub const EDGE_HUB: &str = "edgeHub";

/// The only `runtime.type` IoT Edge defines.
pub const RUNTIME_TYPE_DOCKER: &str = "docker";

/// `$edgeAgent` → `properties.desired`.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// `schemaVersion` (1.0 or 1.1).
    pub schema_version: SchemaVersion,
    /// `runtime`.
    pub runtime: RuntimeConfig,
    /// `systemModules`.
    pub system_modules: SystemModules,
    /// `modules`, by module id.
    pub modules: BTreeMap<String, ModuleConfig>,
    /// `integrity` (manifest signing), kept as raw JSON.
    pub integrity: Option<Value>,
}

/// `runtime`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `runtime.type`: always `docker` in an IoT Edge manifest.
    pub runtime_type: String,
    /// `runtime.settings`.
    pub settings: RuntimeSettings,
}

/// `runtime.settings`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// `minDockerVersion` (informational).
    pub min_docker_version: Option<String>,
    /// `loggingOptions`.
    pub logging_options: Option<String>,
    /// `registryCredentials`, by name.
    pub registry_credentials: BTreeMap<String, RegistryCredential>,
}

/// One entry of `registryCredentials`. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: String,
    /// `address`: the registry host, without whitespace.
    pub address: String,
}

impl fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("address", &self.address)
            .finish()
    }
}

/// `systemModules`.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemModules {
    /// `edgeAgent`: always running, restart policy `always`.
    pub edge_agent: ModuleConfig,
    /// `edgeHub`.
    pub edge_hub: ModuleConfig,
}

/// Whether `id` is a valid user module id: `^[a-zA-Z0-9_-]+$`.
pub fn is_valid_module_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether a registry credential name is valid: `^[^\.\$# ]+$`.
fn is_valid_credential_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['.', '$', '#', ' '])
}

impl AgentConfig {
    /// Reads `$edgeAgent` desired properties with IoT Edge's status codes (see the module docs).
    pub fn from_desired(desired: &Value) -> Result<Self, DeploymentError> {
        let root = Obj::new("$edgeAgent", desired).map_err(DeploymentError::agent_format)?;
        if root.is_empty_content() {
            return Err(DeploymentError::agent_empty());
        }
        let (config, schema_text) = parse_body(&root).map_err(DeploymentError::agent_format)?;
        let schema_version = validate_schema_version(&schema_text, &config.modules)
            .map_err(DeploymentError::agent_schema)?;
        Ok(Self {
            schema_version,
            ..config
        })
    }

    /// Every module, system modules included, by name.
    pub fn all_modules(&self) -> impl Iterator<Item = (&str, &ModuleConfig)> {
        [
            (EDGE_AGENT, &self.system_modules.edge_agent),
            (EDGE_HUB, &self.system_modules.edge_hub),
        ]
        .into_iter()
        .chain(self.modules.iter().map(|(id, m)| (id.as_str(), m)))
    }

    /// The desired properties in manifest form.
    pub fn to_value(&self) -> Value {
        let mut settings = Map::new();
        let s = &self.runtime.settings;
        if let Some(v) = &s.min_docker_version {
            settings.insert("minDockerVersion".into(), v.clone().into());
        }
        if let Some(v) = &s.logging_options {
            settings.insert("loggingOptions".into(), v.clone().into());
        }
        if !s.registry_credentials.is_empty() {
            let creds: Map<String, Value> = s
                .registry_credentials
                .iter()
                .map(|(name, c)| {
                    let entry = serde_json::json!({
                        "username": c.username, "password": c.password, "address": c.address
                    });
                    (name.clone(), entry)
                })
                .collect();
            settings.insert("registryCredentials".into(), Value::Object(creds));
        }
        let modules: Map<String, Value> = self
            .modules
            .iter()
            .map(|(id, m)| (id.clone(), m.to_value(ModuleKind::User)))
            .collect();
        let mut out = serde_json::json!({
            "schemaVersion": self.schema_version.to_string(),
            "runtime": {"type": self.runtime.runtime_type, "settings": settings},
            "systemModules": {
                EDGE_AGENT: self.system_modules.edge_agent.to_value(ModuleKind::EdgeAgent),
                EDGE_HUB: self.system_modules.edge_hub.to_value(ModuleKind::EdgeHub),
            },
            "modules": modules,
        });
        if let (Some(integrity), Value::Object(map)) = (&self.integrity, &mut out) {
            map.insert("integrity".into(), integrity.clone());
        }
        out
    }
}

/// Step 2: deserialize. The schema version is returned as text for step 3.
fn parse_body(root: &Obj<'_>) -> Result<(AgentConfig, String), FormatError> {
    let schema_text = root.str_req("schemaVersion")?.to_owned();
    let runtime = parse_runtime(&root.obj_req("runtime")?)?;
    let system = root.obj_req("systemModules")?;
    let system_modules = SystemModules {
        edge_agent: parse_module(&system.obj_req(EDGE_AGENT)?, ModuleKind::EdgeAgent)?,
        edge_hub: parse_module(&system.obj_req(EDGE_HUB)?, ModuleKind::EdgeHub)?,
    };
    let mut modules = BTreeMap::new();
    if let Some(list) = root.obj_opt("modules")? {
        for (id, value) in list.entries() {
            if !is_valid_module_id(id) {
                return Err(list.error(
                    id,
                    format!("invalid module id {id:?} (allowed: letters, digits, '_' and '-')"),
                ));
            }
            if id.eq_ignore_ascii_case(EDGE_AGENT) || id.eq_ignore_ascii_case(EDGE_HUB) {
                return Err(list.error(
                    id,
                    format!("module id {id:?} is reserved for systemModules"),
                ));
            }
            let module = parse_module(&Obj::new(list.path_of(id), value)?, ModuleKind::User)?;
            modules.insert(id.to_owned(), module);
        }
    }
    let integrity = root.get("integrity").cloned();
    let config = AgentConfig {
        schema_version: AGENT_SCHEMA_VERSION,
        runtime,
        system_modules,
        modules,
        integrity,
    };
    Ok((config, schema_text))
}

fn parse_runtime(runtime: &Obj<'_>) -> Result<RuntimeConfig, FormatError> {
    let runtime_type = runtime.str_req("type")?;
    if runtime_type != RUNTIME_TYPE_DOCKER {
        return Err(runtime.error(
            "type",
            format!("unknown runtime type {runtime_type:?} (expected docker)"),
        ));
    }
    let mut settings = RuntimeSettings::default();
    if let Some(obj) = runtime.obj_opt("settings")? {
        settings.min_docker_version = obj.str_opt("minDockerVersion")?.map(str::to_owned);
        settings.logging_options = obj.str_opt("loggingOptions")?.map(str::to_owned);
        if let Some(creds) = obj.obj_opt("registryCredentials")? {
            for (name, value) in creds.entries() {
                if !is_valid_credential_name(name) {
                    return Err(creds.error(
                        name,
                        format!("invalid registry credential name {name:?} (must not contain '.', '$', '#' or ' ')"),
                    ));
                }
                let entry = Obj::new(creds.path_of(name), value)?;
                let address = entry.str_req("address")?;
                if address.is_empty() || address.chars().any(char::is_whitespace) {
                    return Err(entry.error(
                        "address",
                        format!("invalid registry address {address:?} (must be non-empty without whitespace)"),
                    ));
                }
                let credential = RegistryCredential {
                    username: entry.str_req("username")?.to_owned(),
                    password: entry.str_req("password")?.to_owned(),
                    address: address.to_owned(),
                };
                settings
                    .registry_credentials
                    .insert(name.to_owned(), credential);
            }
        }
    }
    Ok(RuntimeConfig {
        runtime_type: runtime_type.to_owned(),
        settings,
    })
}

/// Step 3: `ValidateSchemaVersion`. The error text becomes the 412 description.
fn validate_schema_version(
    text: &str,
    modules: &BTreeMap<String, ModuleConfig>,
) -> Result<SchemaVersion, String> {
    let version: SchemaVersion = text
        .parse()
        .map_err(|_| format!("Invalid desired properties schema version {text:?}"))?;
    let incompatible = || {
        format!(
            "The desired properties schema version {text} is not compatible with the expected \
             version {AGENT_SCHEMA_VERSION}"
        )
    };
    if version.major != AGENT_SCHEMA_VERSION.major {
        return Err(incompatible());
    }
    match version.minor {
        0 => {
            // Schema 1.0 has no startup order: any module that sets one is refused.
            let ordered = modules
                .iter()
                .find(|(_, m)| m.startup_order != DEFAULT_STARTUP_ORDER);
            if let Some((id, module)) = ordered {
                return Err(format!(
                    "Module startup order is not supported in schema {version}, module: {id}, \
                     startupOrder: {}",
                    module.startup_order
                ));
            }
            Ok(version)
        }
        1 => Ok(version),
        _ => Err(incompatible()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::StatusCode;

    fn minimal(schema: Value) -> Value {
        json!({
            "schemaVersion": schema,
            "runtime": {"type": "docker", "settings": {}},
            "systemModules": {
                "edgeAgent": {"type": "docker", "settings": {"image": "agent:1"}},
                "edgeHub": {"type": "docker", "status": "running", "settings": {"image": "hub:1"}}
            }
        })
    }

    fn code(desired: Value) -> StatusCode {
        AgentConfig::from_desired(&desired).unwrap_err().code
    }

    #[test]
    fn accepts_minimal_and_defaults_modules_to_empty() {
        let config = AgentConfig::from_desired(&minimal(json!("1.1"))).unwrap();
        assert!(config.modules.is_empty());
        assert_eq!(config.all_modules().count(), 2);
        assert_eq!(config.schema_version, SchemaVersion::new(1, 1));
    }

    #[test]
    fn empty_comes_before_everything() {
        assert_eq!(code(json!({})), StatusCode::ConfigEmptyError);
        assert_eq!(
            code(json!({"$version": 7, "$metadata": {}})),
            StatusCode::ConfigEmptyError
        );
        let err = AgentConfig::from_desired(&json!({})).unwrap_err();
        assert_eq!(
            err.description,
            "This device has an empty configuration for the edge agent. Please set a deployment manifest."
        );
    }

    #[test]
    fn format_errors_come_before_schema_errors() {
        let mut desired = minimal(json!("2.0"));
        desired["runtime"]["type"] = json!("kubernetes");
        assert_eq!(code(desired), StatusCode::ConfigFormatError);
        let mut missing = minimal(json!("1.1"));
        missing.as_object_mut().unwrap().remove("schemaVersion");
        assert_eq!(code(missing), StatusCode::ConfigFormatError);
        assert_eq!(code(minimal(json!(null))), StatusCode::ConfigFormatError);
        assert_eq!(code(minimal(json!(1.1))), StatusCode::ConfigFormatError);
    }

    #[test]
    fn schema_versions() {
        for ok in ["1.0", "1.1", "1.1.0", "1.0.0.0"] {
            assert!(
                AgentConfig::from_desired(&minimal(json!(ok))).is_ok(),
                "{ok}"
            );
        }
        for bad in ["", " ", "1", "2.0", "0.9", "1.2", "v1.1", "abc"] {
            assert_eq!(
                code(minimal(json!(bad))),
                StatusCode::InvalidSchemaVersion,
                "{bad}"
            );
        }
    }

    #[test]
    fn schema_1_0_refuses_startup_order() {
        let mut desired = minimal(json!("1.0"));
        desired["modules"] = json!({"m": {
            "type": "docker", "status": "running", "startupOrder": 1, "settings": {"image": "i"}
        }});
        let err = AgentConfig::from_desired(&desired).unwrap_err();
        assert_eq!(err.code, StatusCode::InvalidSchemaVersion);
        assert!(
            err.description.contains("module: m, startupOrder: 1"),
            "{}",
            err.description
        );
        desired["schemaVersion"] = json!("1.1");
        assert!(AgentConfig::from_desired(&desired).is_ok());
        // edgeHub's startupOrder is not checked, as in IoT Edge.
        let mut hub_ordered = minimal(json!("1.0"));
        hub_ordered["systemModules"]["edgeHub"]["startupOrder"] = json!(0);
        assert!(AgentConfig::from_desired(&hub_ordered).is_ok());
    }

    #[test]
    fn module_ids_and_credentials_are_checked() {
        let mut desired = minimal(json!("1.1"));
        desired["modules"] = json!({"bad id": {}});
        let err = AgentConfig::from_desired(&desired).unwrap_err();
        assert!(
            err.description
                .contains("$edgeAgent.modules.bad id: invalid module id"),
            "{err}"
        );
        desired["modules"] = json!({"EdgeHub": {}});
        assert_eq!(code(desired), StatusCode::ConfigFormatError);

        let mut creds = minimal(json!("1.1"));
        creds["runtime"]["settings"]["registryCredentials"] =
            json!({"r": {"username": "u", "password": "secret", "address": "a b"}});
        assert_eq!(code(creds.clone()), StatusCode::ConfigFormatError);
        creds["runtime"]["settings"]["registryCredentials"]["r"]["address"] = json!("reg.io");
        let config = AgentConfig::from_desired(&creds).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("secret"), "password leaked: {debug}");
        creds["runtime"]["settings"]["registryCredentials"] = json!({"a.b": {}});
        assert_eq!(code(creds), StatusCode::ConfigFormatError);
    }

    #[test]
    fn to_value_round_trips() {
        let mut desired = minimal(json!("1.1"));
        desired["modules"] = json!({"m": {
            "version": "2", "type": "wasm", "status": "stopped", "restartPolicy": "on-failure",
            "startupOrder": 1, "settings": {"image": "m.wasm"}
        }});
        desired["integrity"] = json!({"header": {}});
        let config = AgentConfig::from_desired(&desired).unwrap();
        assert_eq!(
            AgentConfig::from_desired(&config.to_value()).unwrap(),
            config
        );
    }
}
