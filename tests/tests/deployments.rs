//! Changing the deployment of a running daemon: routes, module twins, modules removed; and bad
//! deployments refused with IoT Edge's status while the running one stays untouched.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use verge_tests::daemon::{Daemon, TEST_CONFIG, deployment, wasm_module};

fn sensor() -> Value {
    wasm_module(
        &verge_tests::guest("temp-sensor"),
        &[("MessageCount", json!(-1))],
        json!({"startupOrder": 2}),
    )
}

fn filter() -> Value {
    wasm_module(
        &verge_tests::guest("filter"),
        &[],
        json!({"startupOrder": 1}),
    )
}

const SENSOR_TO_FILTER: &str = "FROM /messages/modules/sensor/outputs/temperatureOutput INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")";
const FILTER_UP: &str = "FROM /messages/modules/filter/outputs/* INTO $upstream";

fn base() -> Value {
    deployment(
        json!({"sensor": sensor(), "filter": filter()}),
        json!({"toFilter": SENSOR_TO_FILTER, "up": FILTER_UP}),
        json!({"sensor": {"SendInterval": 0.02}, "filter": {"TemperatureThreshold": 25}}),
    )
}

fn output(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_changed_deployment_applies_without_restarting_anything() {
    let daemon = Daemon::start("change", TEST_CONFIG, None);
    let out = daemon.deploy("base.json", &base());
    assert!(out.status.success(), "{}", output(&out));
    let first = daemon.monitor(3, 20.0, true);
    assert!(
        first.iter().all(|m| m["origin"]["moduleId"] == "filter"),
        "{first:?}"
    );
    let started = |d: &Daemon, m: &str| d.module(m).unwrap()["lastStart"].clone();
    let (sensor_start, filter_start) = (started(&daemon, "sensor"), started(&daemon, "filter"));

    // Route changed (a second route straight from the sensor, on even sequence numbers) and a
    // module twin changed (a threshold nothing reaches).
    let mut changed = base();
    changed["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["direct"] = json!(
        "FROM /messages/modules/sensor/outputs/* WHERE as_number(sequenceNumber) % 2 = 0 INTO $upstream"
    );
    changed["modulesContent"]["filter"]["properties.desired"]["TemperatureThreshold"] = json!(1000);
    let out = daemon.deploy("changed.json", &changed);
    assert!(out.status.success(), "{}", output(&out));
    daemon.wait_until(
        "the filter to report the new threshold",
        Duration::from_secs(10),
        |d| d.twin("filter")["reported"]["TemperatureThreshold"] == json!(1000.0),
    );
    let after = daemon.monitor(6, 20.0, false);
    assert_eq!(after.len(), 6);
    for m in &after {
        assert_eq!(
            m["origin"]["moduleId"], "sensor",
            "the filter still forwards: {m}"
        );
        let seq: u64 = m["properties"]["sequenceNumber"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(seq % 2, 0, "the new route's condition is not applied: {m}");
    }
    assert_eq!(
        started(&daemon, "sensor"),
        sensor_start,
        "the sensor was restarted"
    );
    assert_eq!(
        started(&daemon, "filter"),
        filter_start,
        "the filter was restarted"
    );

    // A module removed, with its routes.
    let mut removed = changed.clone();
    let desired = &mut removed["modulesContent"]["$edgeAgent"]["properties.desired"];
    desired["modules"].as_object_mut().unwrap().remove("filter");
    let routes = &mut removed["modulesContent"]["$edgeHub"]["properties.desired"]["routes"];
    routes
        .as_object_mut()
        .unwrap()
        .retain(|name, _| name == "direct");
    removed["modulesContent"]
        .as_object_mut()
        .unwrap()
        .remove("filter");
    let out = daemon.deploy("removed.json", &removed);
    assert!(out.status.success(), "{}", output(&out));
    assert!(
        daemon.module("filter").is_none(),
        "the filter is still listed"
    );
    assert_eq!(
        started(&daemon, "sensor"),
        sensor_start,
        "the sensor was restarted"
    );
    assert_eq!(daemon.monitor(2, 10.0, false).len(), 2);
    let agent = daemon.twin("$edgeAgent")["reported"].clone();
    assert!(
        agent["modules"]["filter"].is_null(),
        "reported still has the filter: {agent}"
    );
    assert_eq!(agent["lastDesiredStatus"]["code"], 200);
}

#[test]
fn bad_deployments_are_refused_and_the_running_one_is_untouched() {
    let daemon = Daemon::start("refuse", TEST_CONFIG, None);
    assert!(daemon.deploy("base.json", &base()).status.success());
    let before = daemon.list();
    let version = daemon.twin("$edgeAgent")["desired"]["$version"].clone();

    let mut schema = base();
    schema["modulesContent"]["$edgeAgent"]["properties.desired"]["schemaVersion"] = json!("2.0");
    let mut route = base();
    route["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["bad"] =
        json!("FROM /messages WHERE INTO $upstream");
    let mut typed = base();
    typed["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["bad"] =
        json!("FROM /messages WHERE 3 + true > 1 INTO $upstream");
    let mut empty = base();
    empty["modulesContent"]["$edgeAgent"]["properties.desired"] = json!({});
    let mut policy = base();
    policy["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["sensor"]["restartPolicy"] =
        json!("sometimes");
    let cases = [
        ("schema.json", schema, "(412)"),
        ("route.json", route, "(400)"),
        ("typed.json", typed, "(400)"),
        ("empty.json", empty, "(417)"),
        ("policy.json", policy, "sometimes"),
    ];
    for (name, manifest, expected) in cases {
        let out = daemon.deploy(name, &manifest);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name} was accepted: {}",
            output(&out)
        );
        let text = output(&out);
        assert!(
            text.contains("refused") && text.contains(expected),
            "{name}: {text}"
        );
    }
    std::fs::write(daemon.dir().join("broken.json"), "{\"modulesContent\": ").unwrap();
    let out = daemon.cli(&["deploy", daemon.dir().join("broken.json").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(output(&out).contains("not JSON"), "{}", output(&out));

    // Nothing changed: same modules, same starts, same desired version, alerts still flowing.
    // Uptime moves on by itself; everything else must be as it was.
    let without_uptime = |list: &Value| {
        let mut modules = list["modules"].clone();
        for m in modules.as_array_mut().into_iter().flatten() {
            if let Some(m) = m.as_object_mut() {
                m.remove("uptimeSecs");
            }
        }
        modules
    };
    let after = daemon.list();
    assert_eq!(
        without_uptime(&after),
        without_uptime(&before),
        "modules changed"
    );
    assert_eq!(daemon.twin("$edgeAgent")["desired"]["$version"], version);
    assert_eq!(daemon.monitor(2, 10.0, false).len(), 2);
}

#[test]
fn a_container_module_without_containerd_fails_with_the_reason() {
    // A socket nothing listens on, whatever this machine runs.
    let config = format!("{TEST_CONFIG}[containerd]\nsocket = \"/nonexistent/containerd.sock\"\n");
    let daemon = Daemon::start("docker", &config, None);
    let mut manifest = base();
    manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["box"] = json!({
        "version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always",
        "settings": {"image": "busybox:1.36", "createOptions": "{}"}
    });
    let out = daemon.deploy("docker.json", &manifest);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(output(&out).contains("(500)"), "{}", output(&out));
    let boxed = daemon.module("box").unwrap();
    assert_eq!(boxed["status"], "failed");
    assert!(
        boxed["description"]
            .as_str()
            .unwrap()
            .contains("cannot reach containerd at /nonexistent/containerd.sock"),
        "{boxed}"
    );
    // Its neighbours run.
    assert_eq!(daemon.module("sensor").unwrap()["status"], "running");
    assert_eq!(
        daemon.twin("$edgeAgent")["reported"]["lastDesiredStatus"]["code"],
        500
    );
}

#[test]
fn a_missing_component_fails_its_module_and_keeps_the_previous_definition() {
    let daemon = Daemon::start("missing", TEST_CONFIG, None);
    assert!(daemon.deploy("base.json", &base()).status.success());
    let start = daemon.module("filter").unwrap()["lastStart"].clone();
    let mut broken = base();
    broken["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["filter"]["settings"]
        ["image"] = json!("/nonexistent/filter.wasm");
    broken["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["filter"]["version"] =
        json!("2.0");
    let out = daemon.deploy("broken.json", &broken);
    assert_eq!(out.status.code(), Some(1));
    let text = output(&out);
    assert!(
        text.contains("(500)") && text.contains("/nonexistent/filter.wasm"),
        "{text}"
    );
    // The filter of the previous deployment still runs and forwards.
    let filter = daemon.module("filter").unwrap();
    assert_eq!(
        (filter["status"].as_str(), &filter["lastStart"]),
        (Some("running"), &start)
    );
    assert_eq!(daemon.monitor(2, 10.0, true).len(), 2);
}

#[test]
fn desired_status_stops_and_starts_a_module() {
    let daemon = Daemon::start("status", TEST_CONFIG, None);
    assert!(daemon.deploy("base.json", &base()).status.success());
    let mut stopped = base();
    stopped["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["filter"]["status"] =
        json!("stopped");
    let out = daemon.deploy("stopped.json", &stopped);
    assert!(out.status.success(), "{}", output(&out));
    let filter = daemon.module("filter").unwrap();
    assert_eq!(
        (filter["status"].as_str(), filter["exitCode"].as_i64()),
        (Some("stopped"), Some(0))
    );
    // Stopped stays stopped: no restart policy applies to a module desired stopped.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(daemon.module("filter").unwrap()["status"], "stopped");
    assert_eq!(daemon.module("sensor").unwrap()["status"], "running");

    // `verge logs -f` follows the module as it starts again.
    let mut follow = std::process::Command::new(verge_tests::daemon::verge_bin())
        .arg("-d")
        .arg(daemon.data_dir())
        .args(["logs", "filter", "-f", "--tail", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(daemon.deploy("running.json", &base()).status.success());
    let filter = daemon.module("filter").unwrap();
    assert_eq!(
        (filter["status"].as_str(), filter["restartCount"].as_u64()),
        (Some("running"), Some(0))
    );
    let stdout = follow.stdout.take().unwrap();
    let line = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .next()
            .and_then(Result::ok)
    });
    std::thread::sleep(Duration::from_millis(500));
    let _ = follow.kill();
    let _ = follow.wait();
    let line = line.join().unwrap().unwrap_or_default();
    assert!(
        line.contains("forwarding readings above 25"),
        "followed: {line:?}"
    );
}

#[test]
fn a_broken_component_is_reported_by_the_compiler_process() {
    let daemon = Daemon::start("broken-component", TEST_CONFIG, None);
    // A component header followed by garbage: only compiling finds out.
    let broken = daemon.dir().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x0d\0\x01\0\x07garbage-that-is-no-section").unwrap();
    let mut manifest = base();
    manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["bad"] =
        wasm_module(&broken, &[], json!({}));
    let out = daemon.deploy("broken.json", &manifest);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    let bad = daemon.module("bad").unwrap();
    assert_eq!(bad["status"], "failed");
    let why = bad["description"].as_str().unwrap();
    assert!(why.contains("not a valid component"), "{why}");
    // The daemon, and the modules beside it, are fine.
    assert_eq!(daemon.module("filter").unwrap()["status"], "running");
    assert_eq!(daemon.monitor(1, 10.0, true).len(), 1);
}

#[test]
fn a_module_whose_definition_changes_is_replaced_once_and_keeps_running() {
    let daemon = Daemon::start("redefine", TEST_CONFIG, None);
    let out = daemon.deploy("base.json", &base());
    assert!(out.status.success(), "{}", output(&out));
    let first_start = daemon.module("filter").unwrap()["lastStart"].clone();

    // The same module with another environment: a new definition, so a new instance. The old
    // instance's exit must not be taken for the new one's (which would restart it for ever).
    for round in 1..=3 {
        let mut changed = base();
        changed["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["filter"] =
            wasm_module(
                &verge_tests::guest("filter"),
                &[("Round", json!(round.to_string()))],
                json!({"startupOrder": 1}),
            );
        let out = daemon.deploy(&format!("round{round}.json"), &changed);
        assert!(out.status.success(), "{}", output(&out));
    }
    std::thread::sleep(Duration::from_secs(3));
    let filter = daemon.module("filter").unwrap();
    assert_eq!(filter["status"], "running", "{filter}\n{}", daemon.log());
    assert_eq!(filter["restartCount"], 0, "{filter}");
    assert_ne!(filter["lastStart"], first_start, "not replaced: {filter}");
    let log = daemon.log();
    assert!(
        !log.contains("already has a consumer"),
        "two instances at once:\n{log}"
    );
    // And it still does its work.
    let up = daemon.monitor(2, 20.0, false);
    assert!(
        up.iter().all(|m| m["origin"]["moduleId"] == "filter"),
        "{up:?}"
    );
}
