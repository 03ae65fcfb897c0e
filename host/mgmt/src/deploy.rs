//! Applying a deployment manifest locally: what `verge deploy` and `verge run --deployment` do.
//!
//! The whole manifest is checked first, with IoT Edge's rules and status codes, and its routes
//! compiled; if anything is wrong it is refused (400, 412, 417) and nothing changes. Otherwise
//! the manifest sets desired properties, as IoT Hub would: each user module's twin, then
//! `$edgeHub` (routes), then `$edgeAgent` (modules). The agent and the hub act on those; this
//! waits for the agent to report on the new version and answers with its status (200, or 500
//! with what failed) and the modules. The accepted manifest is saved in the data directory, so
//! that a restarted daemon comes back with it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use verge_manifest::{
    Deployment, EDGE_AGENT_TWIN, EDGE_HUB_TWIN, HUB_ERROR_PREFIX, MODULES_CONTENT,
    PROPERTIES_DESIRED, StatusCode,
};

use crate::Services;
use crate::api::DeployReport;

/// The file, in the data directory, holding the last accepted deployment.
pub const SAVED_DEPLOYMENT: &str = "deployment.json";

fn refused(code: StatusCode, description: String) -> DeployReport {
    DeployReport {
        code: code.into(),
        description,
        version: 0,
        hub_version: 0,
        modules: Vec::new(),
    }
}

/// The `properties.desired` object of twin `id` in `manifest`.
fn desired_of(manifest: &Value, id: &str) -> Option<Map<String, Value>> {
    manifest
        .get(MODULES_CONTENT)?
        .get(id)?
        .get(PROPERTIES_DESIRED)?
        .as_object()
        .cloned()
}

/// Where the last accepted deployment is saved.
pub fn saved_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SAVED_DEPLOYMENT)
}

fn save(data_dir: &Path, manifest: &Value) -> std::io::Result<()> {
    let path = saved_path(data_dir);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// Check `manifest` and apply it. Refusals come back with their code and nothing changed.
pub async fn deploy(services: &Services, manifest: &Value) -> DeployReport {
    let deployment = match Deployment::from_value(manifest) {
        Ok(d) => d,
        Err(e) => return refused(e.code, e.description),
    };
    if let Err(e) = verge_hub::config::compile(&deployment.hub) {
        return refused(
            StatusCode::ConfigFormatError,
            format!("{HUB_ERROR_PREFIX}{e}"),
        );
    }
    let twins = &services.twins;
    let mut module_twins = Vec::new();
    for id in deployment.module_twins.keys() {
        let desired = desired_of(manifest, id).unwrap_or_default();
        if let Err(e) = verge_twin::TwinStore::check_desired(&desired) {
            return refused(
                StatusCode::ConfigFormatError,
                format!("module {id:?} desired properties: {e}"),
            );
        }
        module_twins.push((id.clone(), desired));
    }
    let agent_desired = desired_of(manifest, EDGE_AGENT_TWIN).unwrap_or_default();
    let hub_desired = desired_of(manifest, EDGE_HUB_TWIN).unwrap_or_default();
    for (id, doc) in [
        (EDGE_AGENT_TWIN, &agent_desired),
        (EDGE_HUB_TWIN, &hub_desired),
    ] {
        if let Err(e) = verge_twin::TwinStore::check_desired(doc) {
            return refused(
                StatusCode::ConfigFormatError,
                format!("{id} desired properties: {e}"),
            );
        }
    }

    // Checked: now set the twins, modules' first so that they start with their settings.
    for (id, desired) in module_twins {
        if let Err(e) = twins.set_desired(&id, desired) {
            return refused(StatusCode::ConfigFormatError, e.to_string());
        }
    }
    let set = twins
        .set_desired(EDGE_HUB_TWIN, hub_desired)
        .and_then(|hub_version| {
            Ok((
                hub_version,
                twins.set_desired(EDGE_AGENT_TWIN, agent_desired)?,
            ))
        });
    let (hub_version, version) = match set {
        Ok(versions) => versions,
        Err(e) => return refused(StatusCode::ConfigFormatError, e.to_string()),
    };
    if let Err(e) = save(&services.data_dir, manifest) {
        tracing::warn!(error = %e, "could not save the deployment; a restart will not restore it");
    }
    wait_for_hub(services, hub_version).await;
    match services
        .agent
        .acted_on(version, services.deploy_timeout)
        .await
    {
        Some(status) => DeployReport {
            code: status.code,
            description: status.description.clone(),
            version,
            hub_version,
            modules: crate::module_infos(&status),
        },
        None => DeployReport {
            code: StatusCode::Failed.into(),
            description: format!(
                "the agent did not finish applying version {version} within {:?}; see `verge list`",
                services.deploy_timeout
            ),
            version,
            hub_version,
            modules: crate::module_infos(&services.agent.status()),
        },
    }
}

/// Set the twins of child edge device `child` from `manifest` (`verge deploy --device`): each
/// twin of `modulesContent` becomes the desired properties of `devices/{child}/modules/{id}`.
/// The child picks them up over its upstream connection and judges them itself: its agent
/// reports the outcome (200, 400, 412, 417, ...) in the `$edgeAgent` reported properties.
pub fn deploy_to_child(services: &Services, child: &str, manifest: &Value) -> DeployReport {
    // A child edge device registered here, or one further down that a child acts for.
    let is_child = services
        .identities
        .get(&verge_hub::Identity::device(child))
        .is_some_and(|r| r.kind == verge_identity::IdentityKind::ChildEdgeDevice)
        || services.mqtt.behind().child_of(child).is_some();
    if !is_child {
        return refused(
            StatusCode::ConfigFormatError,
            format!(
                "{child:?} is not a child edge device here (verge identity add edge-device {child}), nor behind one"
            ),
        );
    }
    let Some(content) = manifest.get(MODULES_CONTENT).and_then(Value::as_object) else {
        return refused(
            StatusCode::ConfigFormatError,
            format!("the manifest has no {MODULES_CONTENT} object"),
        );
    };
    let mut twins = Vec::new();
    for (id, twin) in content {
        let desired = twin
            .get(PROPERTIES_DESIRED)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Err(e) = verge_twin::TwinStore::check_desired(&desired) {
            return refused(
                StatusCode::ConfigFormatError,
                format!("{id} desired properties: {e}"),
            );
        }
        twins.push((format!("devices/{child}/modules/{id}"), desired));
    }
    let mut versions = (0, 0);
    for (id, desired) in twins {
        match services.twins.set_desired(&id, desired) {
            Ok(v) if id.ends_with(&format!("/{EDGE_AGENT_TWIN}")) => versions.0 = v,
            Ok(v) if id.ends_with(&format!("/{EDGE_HUB_TWIN}")) => versions.1 = v,
            Ok(_) => {}
            Err(e) => return refused(StatusCode::ConfigFormatError, e.to_string()),
        }
    }
    DeployReport {
        code: StatusCode::Successful.into(),
        description: format!(
            "set for {child}; it applies it when connected (verge twin show devices/{child}/modules/{EDGE_AGENT_TWIN})"
        ),
        version: versions.0,
        hub_version: versions.1,
        modules: Vec::new(),
    }
}

async fn wait_for_hub(services: &Services, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while verge_hub::config::reported_status(&services.twins).0 < version
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
