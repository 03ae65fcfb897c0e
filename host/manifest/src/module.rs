//! One module definition: `systemModules.edgeAgent`, `systemModules.edgeHub` or `modules.{id}`.
//!
//! Rules (iotedge.md §1.2, `DockerModule.cs`, `DockerDesiredModule.cs`, `EdgeHubDockerModule.cs`,
//! `DockerConfig.cs`, the SchemaStore schemas):
//! - `type` is required: `docker`, or Verge's `wasm`; anything else is a format error (400);
//! - `status` (`running` | `stopped`) is required for edgeHub and user modules;
//! - `restartPolicy` defaults to `on-unhealthy` for user modules (`Constants.DefaultRestartPolicy`)
//!   and to `always` for edgeHub; edgeAgent always runs with `always`;
//! - `imagePullPolicy` defaults to `on-create`; `startupOrder` to 4294967295 (edgeAgent: 0);
//! - `env` is `{"NAME": {"value": string | number | bool}}`, names matching `^[^\+#$\s\.]+$`;
//! - `settings.image` is required. For `docker` it is trimmed, checked loosely and gets `:latest`
//!   when it has no tag; a leading `$` must be `$upstream:<port>…` (resolved later by the agent).
//!   For `wasm` it is trimmed and must not be blank;
//! - `settings.createOptions*` are joined and parsed ([`crate::create_options`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::create_options::{self, CREATE_OPTIONS_KEY};
use crate::error::FormatError;
use crate::json::{Obj, kind};
use crate::policy::{DesiredStatus, ImagePullPolicy, ModuleType, RestartPolicy};

/// `Constants.DefaultStartupOrder`: start after every module with an explicit order.
pub const DEFAULT_STARTUP_ORDER: u32 = u32::MAX;
/// The tag Docker adds to an image reference without one.
pub const DEFAULT_IMAGE_TAG: &str = "latest";
/// The prefix of an image pulled through the parent device in nested edge.
pub const UPSTREAM_IMAGE_PREFIX: &str = "$upstream:";

/// Which slot of the manifest a module definition comes from; the defaults differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleKind {
    /// `systemModules.edgeAgent`.
    EdgeAgent,
    /// `systemModules.edgeHub`.
    EdgeHub,
    /// `modules.{id}`.
    User,
}

/// `settings`: what to run and how to create it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleSettings {
    /// Docker: the image reference (with `:latest` added when untagged; a `$upstream:` prefix is
    /// kept for the agent to resolve). Wasm: the component file or OCI reference, trimmed.
    pub image: String,
    /// The joined and parsed `createOptions*`; `None` for absent, blank or `"null"`.
    pub create_options: Option<Map<String, Value>>,
}

/// A module definition from `$edgeAgent` desired properties.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleConfig {
    /// `version`: free text, `""` when absent. A change redeploys the module.
    pub version: String,
    /// `type`.
    pub module_type: ModuleType,
    /// `status` (edgeAgent: always running).
    pub status: DesiredStatus,
    /// `restartPolicy`.
    pub restart_policy: RestartPolicy,
    /// `imagePullPolicy`.
    pub image_pull_policy: ImagePullPolicy,
    /// `startupOrder`: lower starts first; equal values start together.
    pub startup_order: u32,
    /// `env`, values as strings (numbers and booleans in their JSON spelling).
    pub env: BTreeMap<String, String>,
    /// `settings`.
    pub settings: ModuleSettings,
}

/// How a module's new definition differs from the one running (iotedge.md §2.4 plan shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleChange {
    /// Nothing changed.
    Unchanged,
    /// Only `status` changed: start or stop the module (IoT Edge's "desired status updated").
    DesiredStatus,
    /// `restartPolicy` and/or `startupOrder` changed (and maybe `status`), the definition did not.
    /// IoT Edge treats this as an update (recreate, restart stats cleared); Verge may apply it in
    /// place.
    Policy,
    /// The definition changed (version, type, image, createOptions, env or imagePullPolicy):
    /// pull, recreate and start as desired.
    Definition,
}

impl ModuleConfig {
    /// The parsed create options, if any.
    pub fn create_options(&self) -> Option<&Map<String, Value>> {
        self.settings.create_options.as_ref()
    }

    /// Whether the two definitions would run the same thing: version, type, image,
    /// createOptions, env and imagePullPolicy are equal. Status, restart policy and startup
    /// order are not compared.
    pub fn definition_eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.module_type == other.module_type
            && self.settings == other.settings
            && self.env == other.env
            && self.image_pull_policy == other.image_pull_policy
    }

    /// How `self` (the new desired definition) differs from `previous`.
    pub fn change_from(&self, previous: &Self) -> ModuleChange {
        if !self.definition_eq(previous) {
            ModuleChange::Definition
        } else if self.restart_policy != previous.restart_policy
            || self.startup_order != previous.startup_order
        {
            ModuleChange::Policy
        } else if self.status != previous.status {
            ModuleChange::DesiredStatus
        } else {
            ModuleChange::Unchanged
        }
    }

    /// The definition in manifest form (`createOptions` re-serialized and chunked).
    pub fn to_value(&self, kind: ModuleKind) -> Value {
        let mut out = Map::new();
        if !self.version.is_empty() {
            out.insert("version".into(), self.version.clone().into());
        }
        out.insert("type".into(), self.module_type.as_str().into());
        if kind != ModuleKind::EdgeAgent {
            out.insert("status".into(), self.status.as_str().into());
            out.insert("restartPolicy".into(), self.restart_policy.as_str().into());
        }
        out.insert(
            "imagePullPolicy".into(),
            self.image_pull_policy.as_str().into(),
        );
        if kind != ModuleKind::EdgeAgent && self.startup_order != DEFAULT_STARTUP_ORDER {
            out.insert("startupOrder".into(), self.startup_order.into());
        }
        if !self.env.is_empty() {
            let env: Map<String, Value> = self
                .env
                .iter()
                .map(|(name, value)| (name.clone(), serde_json::json!({ "value": value })))
                .collect();
            out.insert("env".into(), Value::Object(env));
        }
        let mut settings = Map::new();
        settings.insert("image".into(), self.settings.image.clone().into());
        if let Some(options) = &self.settings.create_options {
            let text = Value::Object(options.clone()).to_string();
            for (key, chunk) in create_options::chunk(&text) {
                settings.insert(key, chunk.into());
            }
        }
        out.insert("settings".into(), Value::Object(settings));
        Value::Object(out)
    }
}

/// Reads one module definition.
pub(crate) fn parse_module(obj: &Obj<'_>, kind: ModuleKind) -> Result<ModuleConfig, FormatError> {
    let module_type = parse_type(obj)?;
    let version = obj.str_opt("version")?.unwrap_or_default().to_owned();
    let (status, restart_policy, startup_order) = match kind {
        ModuleKind::EdgeAgent => (DesiredStatus::Running, RestartPolicy::Always, 0),
        ModuleKind::EdgeHub | ModuleKind::User => {
            let status = obj.enum_req("status", DesiredStatus::ALL)?;
            let default_policy = if kind == ModuleKind::EdgeHub {
                RestartPolicy::Always
            } else {
                RestartPolicy::OnUnhealthy
            };
            let policy = obj
                .enum_opt("restartPolicy", RestartPolicy::ALL)?
                .unwrap_or(default_policy);
            let order = obj
                .int_opt("startupOrder", 0, i64::from(u32::MAX))?
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(DEFAULT_STARTUP_ORDER);
            (status, policy, order)
        }
    };
    let image_pull_policy = obj
        .enum_opt("imagePullPolicy", ImagePullPolicy::ALL)?
        .unwrap_or_default();
    let env = match obj.obj_opt("env")? {
        Some(env) => parse_env(&env)?,
        None => BTreeMap::new(),
    };
    let settings = parse_settings(&obj.obj_req("settings")?, module_type)?;
    Ok(ModuleConfig {
        version,
        module_type,
        status,
        restart_policy,
        image_pull_policy,
        startup_order,
        env,
        settings,
    })
}

fn parse_type(obj: &Obj<'_>) -> Result<ModuleType, FormatError> {
    let text = obj.str_req("type")?;
    // IoT Edge compares the type exactly ("docker"), unlike the other enum fields.
    ModuleType::ALL
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            obj.error(
                "type",
                format!("unknown module type {text:?} (expected docker, wasm)"),
            )
        })
}

/// Whether `name` is a valid `env` key: `^[^\+#$\s\.]+$`.
pub fn is_valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| matches!(c, '+' | '#' | '$' | '.') || c.is_whitespace())
}

fn parse_env(env: &Obj<'_>) -> Result<BTreeMap<String, String>, FormatError> {
    let mut out = BTreeMap::new();
    for (name, entry) in env.entries() {
        if !is_valid_env_name(name) {
            return Err(env.error(
                name,
                format!(
                    "invalid environment variable name {name:?} (must be non-empty without '+', \
                     '#', '$', '.' or whitespace)"
                ),
            ));
        }
        let entry = Obj::new(env.path_of(name), entry)?;
        let value = match entry.required("value")? {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            other => {
                return Err(entry.error(
                    "value",
                    format!(
                        "expected a string, number or boolean, found {}",
                        kind(other)
                    ),
                ));
            }
        };
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}

fn parse_settings(
    settings: &Obj<'_>,
    module_type: ModuleType,
) -> Result<ModuleSettings, FormatError> {
    let raw = settings.str_req("image")?;
    let image = match module_type {
        ModuleType::Docker => {
            normalize_docker_image(raw).map_err(|message| settings.error("image", message))?
        }
        ModuleType::Wasm => {
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                return Err(settings.error("image", "must not be blank"));
            }
            trimmed.to_owned()
        }
    };
    let joined = create_options::join_chunks(settings)?;
    let create_options = create_options::parse(&settings.path_of(CREATE_OPTIONS_KEY), &joined)?;
    Ok(ModuleSettings {
        image,
        create_options,
    })
}

/// Checks a Docker image reference the way IoT Edge does (loosely:
/// `^(repo/)*name(:tag)?$`) and adds `:latest` when there is no tag.
pub fn normalize_docker_image(image: &str) -> Result<String, String> {
    let image = image.trim();
    if image.is_empty() {
        return Err("must not be blank".to_owned());
    }
    if image.starts_with('$') {
        let rest = image
            .strip_prefix(UPSTREAM_IMAGE_PREFIX)
            .unwrap_or_default();
        if !rest.starts_with(|c: char| ('1'..='9').contains(&c)) {
            return Err(format!(
                "image {image:?} is not in the right format: an image starting with '$' must be \
                 {UPSTREAM_IMAGE_PREFIX}<port>/…"
            ));
        }
    }
    let last = image.rsplit('/').next().unwrap_or_default();
    let mut parts = last.split(':');
    let name = parts.next().unwrap_or_default();
    let tag = parts.next();
    let well_formed =
        !name.is_empty() && tag.is_none_or(|t| !t.is_empty()) && parts.next().is_none();
    if !well_formed {
        return Err(format!("image {image:?} is not in the right format"));
    }
    Ok(if tag.is_some() {
        image.to_owned()
    } else {
        format!("{image}:{DEFAULT_IMAGE_TAG}")
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn module(value: Value, kind: ModuleKind) -> Result<ModuleConfig, FormatError> {
        parse_module(&Obj::new("m", &value).unwrap(), kind)
    }

    fn user(extra: Value) -> Value {
        let mut base = json!({
            "type": "docker",
            "status": "running",
            "settings": {"image": "repo/img:1"}
        });
        if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
            base.extend(extra);
        }
        base
    }

    #[test]
    fn defaults_follow_iot_edge() {
        let m = module(user(json!({})), ModuleKind::User).unwrap();
        assert_eq!(m.version, "");
        assert_eq!(m.restart_policy, RestartPolicy::OnUnhealthy);
        assert_eq!(m.image_pull_policy, ImagePullPolicy::OnCreate);
        assert_eq!(m.startup_order, DEFAULT_STARTUP_ORDER);
        assert_eq!(m.create_options(), None);
        let hub = module(user(json!({})), ModuleKind::EdgeHub).unwrap();
        assert_eq!(hub.restart_policy, RestartPolicy::Always);
        let agent = module(
            json!({"type": "docker", "settings": {"image": "a"}}),
            ModuleKind::EdgeAgent,
        )
        .unwrap();
        assert_eq!(
            (agent.status, agent.restart_policy, agent.startup_order),
            (DesiredStatus::Running, RestartPolicy::Always, 0)
        );
        assert_eq!(agent.settings.image, "a:latest");
    }

    #[test]
    fn env_values_become_strings() {
        let m = module(
            user(json!({"env": {"A": {"value": -1}, "B": {"value": true}, "C": {"value": "x"}, "D": {"value": 1.5}}})),
            ModuleKind::User,
        )
        .unwrap();
        let env: Vec<(&str, &str)> = m
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, [("A", "-1"), ("B", "true"), ("C", "x"), ("D", "1.5")]);
    }

    #[test]
    fn env_errors_name_the_variable() {
        let bad_name = module(
            user(json!({"env": {"A.B": {"value": 1}}})),
            ModuleKind::User,
        );
        assert_eq!(bad_name.unwrap_err().path, "m.env.A.B");
        let bad_value = module(
            user(json!({"env": {"A": {"value": [1]}}})),
            ModuleKind::User,
        );
        assert_eq!(bad_value.unwrap_err().path, "m.env.A.value");
        let missing = module(user(json!({"env": {"A": {}}})), ModuleKind::User);
        assert_eq!(missing.unwrap_err().path, "m.env.A.value");
        assert!(!is_valid_env_name("has space"));
        assert!(!is_valid_env_name(""));
        assert!(is_valid_env_name("experimentalFeatures__enabled"));
    }

    #[test]
    fn type_is_exact_and_wasm_is_accepted() {
        let wasm = module(
            user(json!({"type": "wasm", "settings": {"image": " ./filter.wasm "}})),
            ModuleKind::User,
        )
        .unwrap();
        assert_eq!(wasm.module_type, ModuleType::Wasm);
        assert_eq!(wasm.settings.image, "./filter.wasm");
        let foo = module(user(json!({"type": "foo"})), ModuleKind::User).unwrap_err();
        assert_eq!(
            foo.to_string(),
            "m.type: unknown module type \"foo\" (expected docker, wasm)"
        );
        assert!(module(user(json!({"type": "Docker"})), ModuleKind::User).is_err());
    }

    #[test]
    fn docker_images_are_checked_and_tagged() {
        assert_eq!(normalize_docker_image(" img ").unwrap(), "img:latest");
        assert_eq!(
            normalize_docker_image("host:5000/a/img").unwrap(),
            "host:5000/a/img:latest"
        );
        assert_eq!(normalize_docker_image("a/img:1.5").unwrap(), "a/img:1.5");
        assert_eq!(
            normalize_docker_image("img@sha256:abc").unwrap(),
            "img@sha256:abc"
        );
        assert_eq!(
            normalize_docker_image("$upstream:443/azureiotedge-agent:1.5").unwrap(),
            "$upstream:443/azureiotedge-agent:1.5"
        );
        for bad in [
            "",
            "  ",
            "a/",
            "img:",
            ":tag",
            "a:b:c",
            "$other/img",
            "$upstream:0/img",
        ] {
            assert!(normalize_docker_image(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn changes_are_classified() {
        let base = module(
            user(json!({"settings": {"image": "i:1", "createOptions": "{\"a\":1}"}})),
            ModuleKind::User,
        )
        .unwrap();
        assert_eq!(base.change_from(&base), ModuleChange::Unchanged);
        let mut stopped = base.clone();
        stopped.status = DesiredStatus::Stopped;
        assert_eq!(stopped.change_from(&base), ModuleChange::DesiredStatus);
        let mut policy = stopped.clone();
        policy.restart_policy = RestartPolicy::Never;
        assert_eq!(policy.change_from(&base), ModuleChange::Policy);
        let mut order = base.clone();
        order.startup_order = 3;
        assert_eq!(order.change_from(&base), ModuleChange::Policy);
        for edit in [
            |m: &mut ModuleConfig| m.version = "2".into(),
            |m: &mut ModuleConfig| m.settings.image = "i:2".into(),
            |m: &mut ModuleConfig| m.settings.create_options = None,
            |m: &mut ModuleConfig| {
                m.env.insert("X".into(), "1".into());
            },
            |m: &mut ModuleConfig| m.image_pull_policy = ImagePullPolicy::Never,
            |m: &mut ModuleConfig| m.module_type = ModuleType::Wasm,
        ] {
            let mut changed = policy.clone();
            edit(&mut changed);
            assert!(!changed.definition_eq(&base));
            assert_eq!(changed.change_from(&base), ModuleChange::Definition);
        }
    }

    #[test]
    fn create_options_compare_by_value_not_key_order() {
        let a = module(
            user(json!({"settings": {"image": "i", "createOptions": "{\"a\":1,\"b\":2}"}})),
            ModuleKind::User,
        )
        .unwrap();
        let b = module(
            user(json!({"settings": {"image": "i", "createOptions": "{ \"b\": 2, \"a\": 1 }"}})),
            ModuleKind::User,
        )
        .unwrap();
        assert!(a.definition_eq(&b));
    }

    #[test]
    fn to_value_parses_back_to_the_same_module() {
        let m = module(
            user(json!({
                "version": "1.0", "startupOrder": 2, "restartPolicy": "never",
                "env": {"A": {"value": 1}},
                "settings": {"image": "i:1", "createOptions": "{\"HostConfig\":{}}"}
            })),
            ModuleKind::User,
        )
        .unwrap();
        let value = m.to_value(ModuleKind::User);
        assert_eq!(module(value, ModuleKind::User).unwrap(), m);
    }
}
