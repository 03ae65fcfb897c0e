//! The quickstart, as a user runs it: `verge run --deployment samples/quickstart/deployment.json`,
//! then `verge list`, `verge monitor`, `verge logs`, `verge invoke`, `verge twin show`,
//! `verge restart`; a restarted daemon comes back with its deployment.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use verge_tests::daemon::{Daemon, TEST_CONFIG};

/// The quickstart manifest, sending every 20 ms instead of every second.
fn quickstart(daemon: &Daemon) -> std::path::PathBuf {
    verge_tests::guest("temp-sensor");
    let path = verge_tests::workspace().join("samples/quickstart/deployment.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["modulesContent"]["SimulatedTemperatureSensor"]["properties.desired"]["SendInterval"] =
        json!(0.02);
    // Keep the relative component paths working from the test directory.
    let modules = manifest
        .pointer_mut("/modulesContent/$edgeAgent/properties.desired/modules")
        .and_then(Value::as_object_mut)
        .unwrap();
    for module in modules.values_mut() {
        let image = module["settings"]["image"].as_str().unwrap().to_owned();
        let absolute = path.parent().unwrap().join(image).canonicalize().unwrap();
        module["settings"]["image"] = json!(absolute.display().to_string());
    }
    let fast = daemon.dir().join("quickstart.json");
    std::fs::write(&fast, serde_json::to_vec(&manifest).unwrap()).unwrap();
    fast
}

#[test]
fn quickstart_alerts_reach_monitor_with_the_filters_semantics() {
    let mut daemon = Daemon::start("quickstart", TEST_CONFIG, None);
    let manifest = quickstart(&daemon);
    let out = daemon.cli_ok(&["deploy", manifest.to_str().unwrap()]);
    assert!(out.contains("deployment applied"), "{out}");

    let messages = daemon.monitor(10, 30.0, true);
    assert_eq!(messages.len(), 10, "too few alerts:\n{}", daemon.log());
    for m in &messages {
        let t = m["body"]["machine"]["temperature"].as_f64().unwrap();
        assert!(t > 25.0, "the filter let {t} through: {m}");
        assert_eq!(m["properties"]["MessageType"], "Alert");
        assert_eq!(m["origin"]["moduleId"], "filtermodule");
        assert_eq!(m["origin"]["outputName"], "output1");
        assert_eq!(m["origin"]["deviceId"], "test-device");
        assert_eq!(m["systemProperties"]["contentType"], "application/json");
        assert!(m["properties"]["sequenceNumber"].is_string());
        assert!(m["properties"]["batchId"].is_string());
        assert!(m["body"]["ambient"]["humidity"].is_number());
    }

    // `verge list`, as `iotedge list`.
    let table = daemon.cli_ok(&["list"]);
    for needle in [
        "NAME",
        "STATUS",
        "DESCRIPTION",
        "edgeAgent",
        "edgeHub",
        "SimulatedTemperatureSensor",
        "filtermodule",
        "Up ",
    ] {
        assert!(table.contains(needle), "{needle} missing in:\n{table}");
    }
    let sensor = daemon.module("SimulatedTemperatureSensor").unwrap();
    assert_eq!(sensor["status"], "running");
    assert_eq!(sensor["restartCount"], 0);

    // Logs of each module, the filter's own words among them.
    let logs = daemon.cli(&["logs", "filtermodule"]);
    let all =
        String::from_utf8_lossy(&logs.stdout).into_owned() + &String::from_utf8_lossy(&logs.stderr);
    assert!(all.contains("forwarding readings above 25"), "{all}");
    let tail = daemon.cli_ok(&["logs", "SimulatedTemperatureSensor", "--tail", "1", "-t"]);
    assert!(tail.lines().count() <= 1, "{tail}");

    // A direct method, and the twins.
    let answer: Value =
        serde_json::from_str(&daemon.cli_ok(&["invoke", "SimulatedTemperatureSensor", "reset"]))
            .unwrap();
    assert_eq!(
        answer,
        json!({"status": 200, "payload": {"temperature": 21.0}})
    );
    let twin = daemon.twin("filtermodule");
    assert_eq!(twin["desired"]["TemperatureThreshold"], 25);
    assert_eq!(twin["reported"]["TemperatureThreshold"], 25.0);
    let agent = daemon.twin("$edgeAgent");
    let reported = &agent["reported"];
    assert_eq!(reported["lastDesiredStatus"]["code"], 200);
    assert_eq!(reported["schemaVersion"], "1.0");
    for field in [
        "runtimeStatus",
        "statusDescription",
        "exitCode",
        "lastStartTimeUtc",
        "restartCount",
        "settings",
    ] {
        assert!(
            !reported["modules"]["filtermodule"][field].is_null(),
            "reported lacks {field}: {reported}"
        );
    }
    assert_eq!(
        reported["modules"]["filtermodule"]["runtimeStatus"],
        "running"
    );
    assert!(
        reported["modules"]["filtermodule"]["settings"]["imageHash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(
        reported["systemModules"]["edgeHub"]["runtimeStatus"],
        "running"
    );
    assert_eq!(
        daemon.twin("$edgeHub")["reported"]["lastDesiredStatus"]["code"],
        200
    );

    // `verge restart`: a new start, not counted by the restart policy.
    let before = daemon.module("filtermodule").unwrap()["lastStart"].clone();
    std::thread::sleep(Duration::from_millis(20));
    daemon.cli_ok(&["restart", "filtermodule"]);
    let after = daemon.module("filtermodule").unwrap();
    assert_ne!(after["lastStart"], before);
    assert_eq!(
        (after["status"].as_str(), after["restartCount"].as_u64()),
        (Some("running"), Some(0))
    );
    let unknown = daemon.cli(&["restart", "nosuchmodule"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nosuchmodule"));

    // A restarted daemon comes back with the saved deployment.
    daemon.restart();
    daemon.wait_until("the modules to run again", Duration::from_secs(20), |d| {
        ["SimulatedTemperatureSensor", "filtermodule"]
            .iter()
            .all(|m| d.module(m).is_some_and(|m| m["status"] == "running"))
    });
    assert_eq!(
        daemon.monitor(2, 20.0, false).len(),
        2,
        "no alerts after the restart"
    );
}

#[test]
fn one_daemon_per_data_directory() {
    let daemon = Daemon::start("lock", TEST_CONFIG, None);
    let out = std::process::Command::new(verge_tests::daemon::verge_bin())
        .args(["run", "-d"])
        .arg(daemon.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another verge daemon"), "{err}");
    // The first one is unaffected.
    daemon.cli_ok(&["list"]);
}

#[test]
fn commands_without_a_daemon_say_so() {
    let dir = std::env::temp_dir().join(format!("verge-nodaemon-{}", std::process::id()));
    let out = std::process::Command::new(verge_tests::daemon::verge_bin())
        .arg("-d")
        .arg(&dir)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the Verge daemon") && err.contains("verge run"),
        "{err}"
    );
}
