//! `$edgeAgent` reported properties, in IoT Edge's schema (iotedge.md §2.1): `schemaVersion`,
//! `version`, `lastDesiredVersion`, `lastDesiredStatus`, `runtime`, `systemModules`, `modules`.
//!
//! Verge is both edgeAgent and edgeHub, so the system modules are reported `running` for as long
//! as the daemon runs, with the images the deployment names.

use std::time::SystemTime;

use serde_json::{Map, Value, json};
use verge_manifest::{AgentConfig, ModuleConfig, StatusCode};
use verge_message::time::iotedge;
use verge_restart::RestartPolicyManager;

use crate::module::Module;

/// The reported properties' schema version.
pub const SCHEMA_VERSION: &str = "1.0";

/// Which build of Verge is reporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Release version.
    pub version: String,
    /// Build id.
    pub build: String,
    /// Source commit.
    pub commit: String,
}

fn time(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| iotedge(t).into())
}

fn create_options_text(config: &ModuleConfig) -> String {
    config
        .create_options()
        .map_or_else(|| "{}".into(), |o| Value::Object(o.clone()).to_string())
}

fn settings(config: &ModuleConfig, image_hash: Option<&str>) -> Value {
    let mut s = Map::new();
    s.insert("image".into(), config.settings.image.clone().into());
    if let Some(hash) = image_hash {
        s.insert("imageHash".into(), hash.into());
    }
    s.insert("createOptions".into(), create_options_text(config).into());
    Value::Object(s)
}

fn env(config: &ModuleConfig) -> Value {
    config
        .env
        .iter()
        .map(|(k, v)| (k.clone(), json!({ "value": v })))
        .collect::<Map<_, _>>()
        .into()
}

/// A system module Verge itself plays: running since the daemon started.
fn system_module(config: &ModuleConfig, agent: bool, started: SystemTime) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), config.module_type.as_str().into());
    if !agent {
        m.insert("status".into(), "running".into());
        m.insert(
            "restartPolicy".into(),
            config.restart_policy.as_str().into(),
        );
        m.insert("restartCount".into(), 0.into());
        m.insert("lastRestartTimeUtc".into(), time(Some(started)));
    } else {
        m.insert("startupOrder".into(), 0.into());
    }
    m.insert(
        "imagePullPolicy".into(),
        config.image_pull_policy.as_str().into(),
    );
    m.insert("runtimeStatus".into(), "running".into());
    m.insert("statusDescription".into(), "running".into());
    m.insert("exitCode".into(), 0.into());
    m.insert("lastStartTimeUtc".into(), time(Some(started)));
    m.insert("lastExitTimeUtc".into(), Value::Null);
    m.insert("settings".into(), settings(config, None));
    Value::Object(m)
}

fn module(module: &Module, manager: &RestartPolicyManager, now: SystemTime) -> Value {
    let c = &module.config;
    let mut m = Map::new();
    m.insert("type".into(), c.module_type.as_str().into());
    if !c.version.is_empty() {
        m.insert("version".into(), c.version.clone().into());
    }
    m.insert("status".into(), c.status.as_str().into());
    m.insert("restartPolicy".into(), c.restart_policy.as_str().into());
    m.insert(
        "imagePullPolicy".into(),
        c.image_pull_policy.as_str().into(),
    );
    if c.startup_order != verge_manifest::DEFAULT_STARTUP_ORDER {
        m.insert("startupOrder".into(), c.startup_order.into());
    }
    m.insert("env".into(), env(c));
    m.insert("settings".into(), settings(c, module.image_hash.as_deref()));
    m.insert(
        "runtimeStatus".into(),
        module.runtime_status(manager).as_str().into(),
    );
    m.insert(
        "statusDescription".into(),
        module.status_description(manager, now).into(),
    );
    m.insert("exitCode".into(), module.exit_code.into());
    m.insert("lastStartTimeUtc".into(), time(module.last_start));
    m.insert("lastExitTimeUtc".into(), time(module.last_exit));
    m.insert("restartCount".into(), module.restart_count.into());
    m.insert("lastRestartTimeUtc".into(), time(module.last_restart));
    Value::Object(m)
}

/// Everything the report is made of.
pub struct ReportInput<'a> {
    pub version: &'a VersionInfo,
    pub last_desired_version: u64,
    pub status: (StatusCode, &'a str),
    pub config: Option<&'a AgentConfig>,
    pub modules: &'a [&'a Module],
    pub manager: &'a RestartPolicyManager,
    pub started: SystemTime,
    pub now: SystemTime,
}

/// Build the reported properties.
pub fn reported(input: &ReportInput<'_>) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("schemaVersion".into(), SCHEMA_VERSION.into());
    r.insert(
        "version".into(),
        json!({
            "version": input.version.version,
            "build": input.version.build,
            "commit": input.version.commit,
        }),
    );
    r.insert(
        "lastDesiredVersion".into(),
        input.last_desired_version.into(),
    );
    r.insert(
        "lastDesiredStatus".into(),
        json!({ "code": u16::from(input.status.0), "description": input.status.1 }),
    );
    let platform = json!({
        "os": std::env::consts::OS,
        "architecture": std::env::consts::ARCH,
        "version": input.version.version,
    });
    let mut runtime = Map::new();
    runtime.insert("platform".into(), platform);
    if let Some(config) = input.config {
        runtime.insert("type".into(), config.runtime.runtime_type.clone().into());
        let s = &config.runtime.settings;
        let mut settings = Map::new();
        if let Some(v) = &s.min_docker_version {
            settings.insert("minDockerVersion".into(), v.clone().into());
        }
        if let Some(v) = &s.logging_options {
            settings.insert("loggingOptions".into(), v.clone().into());
        }
        // Credentials are never reported, as IoT Edge reports an empty object.
        settings.insert("registryCredentials".into(), json!({}));
        runtime.insert("settings".into(), Value::Object(settings));
        let sys = &config.system_modules;
        r.insert(
            "systemModules".into(),
            json!({
                "edgeAgent": system_module(&sys.edge_agent, true, input.started),
                "edgeHub": system_module(&sys.edge_hub, false, input.started),
            }),
        );
    }
    r.insert("runtime".into(), Value::Object(runtime));
    let modules: Map<String, Value> = input
        .modules
        .iter()
        .map(|m| (m.name.clone(), module(m, input.manager, input.now)))
        .collect();
    r.insert("modules".into(), Value::Object(modules));
    r
}
