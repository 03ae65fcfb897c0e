//! The deployment manifest envelope (iotedge.md §1.1).
//!
//! `{"modulesContent": {"$edgeAgent": {"properties.desired": …}, "$edgeHub": {…},
//! "<moduleId>": {"properties.desired": …}}}`. `$edgeAgent` and `$edgeHub` are required; every
//! other key is a module id (`^[a-zA-Z0-9_-]+$`) whose desired properties replace that module
//! twin's. Errors are checked in this order: JSON text, envelope, `$edgeAgent`, `$edgeHub`,
//! module twins; the first one found is returned.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::agent::{AgentConfig, is_valid_module_id};
use crate::error::{DeploymentError, FormatError};
use crate::hub::HubConfig;
use crate::json::{Obj, is_twin_metadata};

/// The envelope key.
pub const MODULES_CONTENT: &str = "modulesContent";
/// The key of a twin's desired properties inside `modulesContent`.
pub const PROPERTIES_DESIRED: &str = "properties.desired";
/// The edgeAgent twin.
pub const EDGE_AGENT_TWIN: &str = "$edgeAgent";
/// The edgeHub twin.
pub const EDGE_HUB_TWIN: &str = "$edgeHub";

/// A parsed deployment manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    /// `$edgeAgent` desired properties.
    pub agent: AgentConfig,
    /// `$edgeHub` desired properties.
    pub hub: HubConfig,
    /// The desired properties of other module twins, by module id, without `$version` /
    /// `$metadata`.
    pub module_twins: BTreeMap<String, Map<String, Value>>,
}

impl Deployment {
    /// Parses a manifest from its JSON text.
    pub fn parse(text: &str) -> Result<Self, DeploymentError> {
        let value: Value = serde_json::from_str(text).map_err(|error| {
            DeploymentError::manifest(FormatError::new(
                "manifest",
                format!("not valid JSON: {error}"),
            ))
        })?;
        Self::from_value(&value)
    }

    /// Parses a manifest from a JSON value.
    pub fn from_value(value: &Value) -> Result<Self, DeploymentError> {
        let content = modules_content(value).map_err(DeploymentError::manifest)?;
        let agent_desired =
            twin_desired(&content, EDGE_AGENT_TWIN).map_err(DeploymentError::manifest)?;
        let hub_desired =
            twin_desired(&content, EDGE_HUB_TWIN).map_err(DeploymentError::manifest)?;
        let agent = AgentConfig::from_desired(agent_desired)?;
        let hub = HubConfig::from_desired(hub_desired)?;
        let mut module_twins = BTreeMap::new();
        for (id, _) in content.entries() {
            if id == EDGE_AGENT_TWIN || id == EDGE_HUB_TWIN {
                continue;
            }
            let desired = module_twin(&content, id)
                .map_err(|error| DeploymentError::module_twin(id, error))?;
            module_twins.insert(id.to_owned(), desired);
        }
        Ok(Self {
            agent,
            hub,
            module_twins,
        })
    }

    /// The manifest in JSON form; parsing it again gives an equal [`Deployment`].
    pub fn to_value(&self) -> Value {
        let mut content = Map::new();
        content.insert(EDGE_AGENT_TWIN.into(), wrap(self.agent.to_value()));
        content.insert(EDGE_HUB_TWIN.into(), wrap(self.hub.to_value()));
        for (id, desired) in &self.module_twins {
            content.insert(id.clone(), wrap(Value::Object(desired.clone())));
        }
        let mut root = Map::new();
        root.insert(MODULES_CONTENT.into(), Value::Object(content));
        Value::Object(root)
    }
}

fn wrap(desired: Value) -> Value {
    let mut twin = Map::new();
    twin.insert(PROPERTIES_DESIRED.into(), desired);
    Value::Object(twin)
}

fn modules_content(value: &Value) -> Result<Obj<'_>, FormatError> {
    let root = Obj::new("manifest", value)?;
    if root.get(MODULES_CONTENT).is_none() && root.get("moduleContent").is_some() {
        return Err(FormatError::new(
            MODULES_CONTENT,
            "required field is missing (found the 2018 preview spelling \"moduleContent\"; \
             rename it to \"modulesContent\")",
        ));
    }
    let content = root
        .required(MODULES_CONTENT)
        .map_err(|error| FormatError::new(MODULES_CONTENT, error.message))?;
    Obj::new(MODULES_CONTENT, content)
}

fn twin_desired<'a>(content: &Obj<'a>, twin: &str) -> Result<&'a Value, FormatError> {
    let entry = content.obj_req(twin)?;
    entry.required(PROPERTIES_DESIRED)
}

fn module_twin(content: &Obj<'_>, id: &str) -> Result<Map<String, Value>, FormatError> {
    if !is_valid_module_id(id) {
        return Err(content.error(
            id,
            format!("invalid module id {id:?} (allowed: letters, digits, '_' and '-')"),
        ));
    }
    let entry = content.obj_req(id)?;
    let desired = entry.obj_req(PROPERTIES_DESIRED)?;
    Ok(desired
        .map()
        .iter()
        .filter(|(key, _)| !is_twin_metadata(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::{ErrorOrigin, StatusCode};

    fn manifest() -> Value {
        json!({"modulesContent": {
            "$edgeAgent": {"properties.desired": {
                "schemaVersion": "1.1",
                "runtime": {"type": "docker", "settings": {}},
                "systemModules": {
                    "edgeAgent": {"type": "docker", "settings": {"image": "agent:1"}},
                    "edgeHub": {"type": "docker", "status": "running", "settings": {"image": "hub:1"}}
                },
                "modules": {}
            }},
            "$edgeHub": {"properties.desired": {
                "schemaVersion": "1.1", "routes": {},
                "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}
            }},
            "m": {"properties.desired": {"$version": 2, "SendData": true}}
        }})
    }

    #[test]
    fn module_twins_drop_bookkeeping_keys() {
        let deployment = Deployment::from_value(&manifest()).unwrap();
        let twin = &deployment.module_twins["m"];
        assert_eq!(twin.len(), 1);
        assert_eq!(twin["SendData"], json!(true));
        assert_eq!(
            Deployment::from_value(&deployment.to_value()).unwrap(),
            deployment
        );
    }

    #[test]
    fn envelope_errors() {
        let err = Deployment::parse("{").unwrap_err();
        assert_eq!(
            (err.code, err.origin),
            (StatusCode::ConfigFormatError, ErrorOrigin::Manifest)
        );
        let err = Deployment::from_value(&json!({"moduleContent": {}})).unwrap_err();
        assert!(
            err.description.contains("moduleContent"),
            "{}",
            err.description
        );
        let mut no_hub = manifest();
        no_hub["modulesContent"]
            .as_object_mut()
            .unwrap()
            .remove("$edgeHub");
        let err = Deployment::from_value(&no_hub).unwrap_err();
        assert!(
            err.description
                .contains("modulesContent.$edgeHub: required field is missing")
        );
        let mut bad_twin = manifest();
        bad_twin["modulesContent"]["m"] = json!({"properties.desired": 3});
        let err = Deployment::from_value(&bad_twin).unwrap_err();
        assert_eq!(err.origin, ErrorOrigin::ModuleTwin("m".into()));
        let mut bad_id = manifest();
        bad_id["modulesContent"]["$other"] = json!({"properties.desired": {}});
        assert!(Deployment::from_value(&bad_id).is_err());
    }
}
