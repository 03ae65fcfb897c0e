//! Every real manifest in the IoT Edge conformance folder parses, with the expected content.
//!
//! The `*.template.json` files carry `<Placeholder>` text inside string values (registry, build
//! number, architecture); they are valid JSON and parse as they are: the placeholders land in
//! image references, registry credentials and env values, where no rule rejects them.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use serde_json::Value;
use verge_manifest::{
    AgentConfig, Deployment, DesiredStatus, ModuleType, RestartPolicy, SchemaVersion, StatusCode,
};

fn load(name: &str) -> Deployment {
    let path = common::conformance_dir().join("manifests").join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Deployment::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn module_ids(d: &Deployment) -> Vec<&str> {
    d.agent.modules.keys().map(String::as_str).collect()
}

fn routes(d: &Deployment) -> Vec<(&str, &str)> {
    d.hub
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.route.as_str()))
        .collect()
}

#[test]
fn every_manifest_in_the_folder_parses() {
    let dir = common::conformance_dir().join("manifests");
    let mut parsed = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let deployment = Deployment::parse(&text)
            .unwrap_or_else(|e| panic!("{} did not parse: {e}", path.display()));
        // Writing the deployment back out and reading it again gives the same deployment.
        let again = Deployment::from_value(&deployment.to_value()).unwrap();
        assert_eq!(again, deployment, "{}", path.display());
        parsed += 1;
    }
    assert_eq!(
        parsed, 4,
        "expected the 4 manifests listed in the conformance README"
    );
}

#[test]
fn quickstart_template() {
    let d = load("quickstart_deployment.template.json");
    assert_eq!(d.agent.schema_version, SchemaVersion::new(1, 0));
    assert_eq!(d.hub.schema_version, SchemaVersion::new(1, 0));
    assert_eq!(module_ids(&d), ["tempSensor"]);
    let sensor = &d.agent.modules["tempSensor"];
    assert_eq!(sensor.version, "1.0");
    assert_eq!(sensor.module_type, ModuleType::Docker);
    assert_eq!(sensor.status, DesiredStatus::Running);
    assert_eq!(sensor.restart_policy, RestartPolicy::Always);
    assert_eq!(
        sensor.create_options(),
        None,
        "\"\" means no create options"
    );
    assert_eq!(
        sensor.settings.image,
        "<Container_Registry>/microsoft/azureiotedge-simulated-temperature-sensor:<Build.BuildNumber>-linux-<Architecture>"
    );
    let hub = &d.agent.system_modules.edge_hub;
    assert_eq!(hub.env["NestedEdgeEnabled"], "false");
    let bindings = &hub.create_options().unwrap()["HostConfig"]["PortBindings"];
    assert_eq!(bindings.as_object().unwrap().len(), 3);
    assert_eq!(bindings["8883/tcp"][0]["HostPort"], "8883");
    assert!(d.agent.system_modules.edge_agent.env.is_empty());
    let creds = &d.agent.runtime.settings.registry_credentials["buildcr"];
    assert_eq!(creds.address, "<Container_Registry>");
    assert_eq!(routes(&d), [("route", "FROM /* INTO $upstream")]);
    assert_eq!(d.hub.store_and_forward.time_to_live_secs, 7200);
    assert_eq!(d.hub.store_and_forward.max_size_bytes, None);
    assert!(d.module_twins.is_empty());
}

#[test]
fn module_to_module_template() {
    let d = load("module_to_module_deployment.template.json");
    assert_eq!(module_ids(&d), ["tempFilter", "tempSensor"]);
    assert_eq!(
        d.agent.modules["tempFilter"].env["TemperatureThreshold"],
        "19"
    );
    assert_eq!(
        routes(&d),
        [
            (
                "TempFilterToCloud",
                "FROM /messages/modules/tempFilter/outputs/* INTO $upstream"
            ),
            (
                "TempSensorToTempFilter",
                "FROM /messages/modules/tempSensor/outputs/temperatureOutput INTO BrokeredEndpoint(\"/modules/tempFilter/inputs/input1\")"
            ),
        ]
    );
    assert!(
        d.hub
            .routes
            .iter()
            .all(|r| r.priority.is_none() && r.time_to_live_secs.is_none())
    );
    assert_eq!(d.hub.store_and_forward.time_to_live_secs, 7200);
}

#[test]
fn nested_edge_top_layer() {
    let d = load("nestededge_topLayerBaseDeployment_mqtt.json");
    assert_eq!(d.agent.schema_version, SchemaVersion::new(1, 1));
    assert_eq!(d.hub.schema_version, SchemaVersion::new(1, 2));
    assert_eq!(
        module_ids(&d),
        ["IoTEdgeAPIProxy", "dockerContainerRegistry"]
    );
    let registry = &d.agent.modules["dockerContainerRegistry"];
    assert_eq!(registry.startup_order, 2);
    assert_eq!(
        registry.settings.image,
        "mcr.microsoft.com/oss/v2/docker/registry:v3.0.0"
    );
    assert_eq!(
        registry.env["REGISTRY_PROXY_REMOTEURL"],
        "https://<Container_Registry>:443"
    );
    let ports = &registry.create_options().unwrap()["HostConfig"]["PortBindings"];
    assert_eq!(ports["5000/tcp"][0]["HostPort"], "5000");
    assert_eq!(d.agent.modules["IoTEdgeAPIProxy"].startup_order, 3);
    let hub_env = &d.agent.system_modules.edge_hub.env;
    assert_eq!(
        hub_env["DeviceScopeCacheRefreshDelaySecs"], "0",
        "number value becomes text"
    );
    assert_eq!(
        d.agent.system_modules.edge_agent.env["https_proxy"],
        "<proxyAddress>"
    );
    assert_eq!(
        routes(&d),
        [("ToUpstream", "FROM /messages/* INTO $upstream")]
    );
    assert_eq!(d.hub.mqtt_broker, None);
}

#[test]
fn nested_edge_middle_layer() {
    let d = load("nestededge_middleLayerBaseDeployment_mqtt.json");
    assert_eq!(module_ids(&d), ["iotedgeApiProxy"]);
    assert_eq!(d.agent.modules["iotedgeApiProxy"].startup_order, 3);
    for (name, module) in d.agent.all_modules() {
        assert!(
            module
                .settings
                .image
                .starts_with("$upstream:443/microsoft/"),
            "{name}: {}",
            module.settings.image
        );
    }
    let hub = &d.agent.system_modules.edge_hub;
    assert_eq!(hub.env["experimentalFeatures__enabled"], "true");
    assert_eq!(
        hub.create_options().unwrap()["HostConfig"]["LogConfig"]["Type"],
        "json-file"
    );
    assert_eq!(d.hub.store_and_forward.time_to_live_secs, 7200);
}

#[test]
fn reported_states_doc_desired_example() {
    // The $edgeAgent desired half of doc/reported_states_during_deployment.md, with its $version.
    let path = common::conformance_dir()
        .join("manifests/reported_states_doc/edgeagent_desired_example.json");
    let twin: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let config = AgentConfig::from_desired(&twin["properties"]["desired"]).unwrap();
    assert_eq!(config.schema_version, SchemaVersion::new(1, 1));
    let m1 = &config.modules["m1"];
    assert_eq!(m1.version, "1.1");
    assert_eq!(
        m1.settings.image,
        "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.1"
    );
    assert_eq!(
        config.runtime.settings.min_docker_version.as_deref(),
        Some("v1.25")
    );
    assert!(config.runtime.settings.registry_credentials.is_empty());
}

#[test]
fn status_codes_match_the_doc_table() {
    let path = common::conformance_dir().join("manifests/reported_states_doc/status_codes.json");
    let table: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let rows = table["last_desired_status_codes"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for row in rows {
        let number = u16::try_from(row["code"].as_u64().unwrap()).unwrap();
        let code = StatusCode::from_u16(number).unwrap_or_else(|| panic!("code {number} missing"));
        // The doc calls 200 "Ok"; the enum in DeploymentStatusCode.cs calls it "Successful".
        if number != 200 {
            assert_eq!(code.name(), row["name"].as_str().unwrap());
        }
    }
}
