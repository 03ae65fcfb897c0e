//! The complete example manifest of the reference study (iotedge.md §1.5), copied verbatim into
//! `tests/fixtures/iotedge_reference_example.json`: it parses, and it round-trips.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use verge_manifest::{
    DEFAULT_STARTUP_ORDER, Deployment, ImagePullPolicy, RestartPolicy, SchemaVersion,
};

const EXAMPLE: &str = include_str!("fixtures/iotedge_reference_example.json");

#[test]
fn parses_with_expected_content() {
    let d = Deployment::parse(EXAMPLE).unwrap();
    assert_eq!(d.agent.schema_version, SchemaVersion::new(1, 1));
    let creds = &d.agent.runtime.settings.registry_credentials["ContosoRegistry"];
    assert_eq!(
        (creds.username.as_str(), creds.address.as_str()),
        ("myacr", "myacr.azurecr.io")
    );

    let hub = &d.agent.system_modules.edge_hub;
    assert_eq!(hub.startup_order, 0);
    assert_eq!(hub.env["UpstreamProtocol"], "Amqp");
    assert_eq!(hub.settings.image, "mcr.microsoft.com/azureiotedge-hub:1.5");

    let sensor = &d.agent.modules["SimulatedTemperatureSensor"];
    assert_eq!(sensor.startup_order, 1);
    assert_eq!(sensor.env["MessageCount"], "-1");
    assert_eq!(sensor.image_pull_policy, ImagePullPolicy::OnCreate);
    assert_eq!(sensor.create_options(), Some(&serde_json::Map::new()));
    let filter = &d.agent.modules["filtermodule"];
    assert_eq!(filter.startup_order, DEFAULT_STARTUP_ORDER);
    assert_eq!(filter.restart_policy, RestartPolicy::Always);

    let routes: Vec<(&str, Option<u8>, Option<u32>)> = d
        .hub
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.priority, r.time_to_live_secs))
        .collect();
    assert_eq!(
        routes,
        [
            ("sensorToFilter", None, None),
            ("filterAlerts", Some(0), Some(86400)),
            ("filterToIoTHub", None, None),
        ]
    );
    assert_eq!(
        d.hub.routes[1].route,
        "FROM /messages/modules/filtermodule/outputs/output1 WHERE $body.machine.temperature > 100 INTO $upstream"
    );
    assert_eq!(d.hub.store_and_forward.time_to_live_secs, 7200);

    assert_eq!(
        Value::Object(d.module_twins["SimulatedTemperatureSensor"].clone()),
        json!({"SendData": true, "SendInterval": 5})
    );
}

#[test]
fn round_trips() {
    let original: Value = serde_json::from_str(EXAMPLE).unwrap();
    let d = Deployment::from_value(&original).unwrap();
    let written = d.to_value();
    assert_eq!(Deployment::from_value(&written).unwrap(), d);

    // What is written back matches the original, apart from the normalisations Verge applies
    // (explicit imagePullPolicy, env values as strings).
    let content = &written["modulesContent"];
    let source = &original["modulesContent"];
    assert_eq!(content["$edgeHub"], source["$edgeHub"]);
    assert_eq!(
        content["SimulatedTemperatureSensor"],
        source["SimulatedTemperatureSensor"]
    );
    let agent = &content["$edgeAgent"]["properties.desired"];
    let source_agent = &source["$edgeAgent"]["properties.desired"];
    assert_eq!(agent["runtime"], source_agent["runtime"]);
    assert_eq!(
        agent["systemModules"]["edgeHub"]["settings"],
        source_agent["systemModules"]["edgeHub"]["settings"],
        "compact createOptions are written back byte for byte"
    );
    assert_eq!(
        agent["modules"]["filtermodule"]["settings"],
        source_agent["modules"]["filtermodule"]["settings"]
    );
    assert_eq!(
        agent["modules"]["SimulatedTemperatureSensor"]["env"]["MessageCount"]["value"],
        "-1"
    );
}
