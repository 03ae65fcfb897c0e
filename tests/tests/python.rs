//! A Python module (componentize-py) deployed like any other: the sensor feeds it, its averages
//! leave for `$upstream`, its methods answer through `verge invoke`.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use verge_tests::daemon::{Daemon, TEST_CONFIG, deployment, wasm_module};

#[test]
fn a_python_module_runs_in_a_deployment() {
    let daemon = Daemon::start("python", TEST_CONFIG, None);
    let averager = wasm_module(
        &verge_tests::python_guest("py-averager"),
        &[],
        json!({"settings": {
            "image": verge_tests::python_guest("py-averager").display().to_string(),
            // The first load compiles an 18 MB component: give it time on a small machine.
            "createOptions": json!({"Wasm": {"InitTimeoutMs": 60000, "CallTimeoutMs": 5000}}).to_string()
        }}),
    );
    let sensor = wasm_module(
        &verge_tests::guest("temp-sensor"),
        &[("MessageCount", json!(-1))],
        json!({}),
    );
    let manifest = deployment(
        json!({"sensor": sensor, "averager": averager}),
        json!({
            "toAverager": "FROM /messages/modules/sensor/* INTO BrokeredEndpoint(\"/modules/averager/inputs/input1\")",
            "up": "FROM /messages/modules/averager/outputs/averageOutput INTO $upstream"
        }),
        json!({"sensor": {"SendInterval": 0.01}, "averager": {"WindowSize": 4}}),
    );
    let out = daemon.deploy("python.json", &manifest);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    let averages = daemon.monitor(3, 60.0, true);
    assert_eq!(averages.len(), 3, "{}", daemon.log());
    for m in &averages {
        assert_eq!(m["origin"]["moduleId"], "averager");
        assert_eq!(m["properties"]["source"], "py-averager");
        assert_eq!(m["body"]["windowSize"], 4);
        let (min, avg, max) = (
            m["body"]["min"].as_f64().unwrap(),
            m["body"]["average"].as_f64().unwrap(),
            m["body"]["max"].as_f64().unwrap(),
        );
        assert!(min <= avg && avg <= max, "{m}");
    }
    let stats: Value =
        serde_json::from_str(&daemon.cli_ok(&["invoke", "averager", "GetStats"])).unwrap();
    assert_eq!(stats["status"], 200, "{stats}");
    assert_eq!(daemon.twin("averager")["reported"]["WindowSize"], 4);
}
