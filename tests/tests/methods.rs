//! Direct methods over HTTPS with the unmodified Azure IoT device SDK for Python: a module
//! (`verge identity add module caller`) calls `invoke_method`, which POSTs to the hub's port 443;
//! the target is a wasm module, an MQTT-connected SDK module client, or an SDK device client.
//! A caller with a wrong key gets 401, a target nobody serves 404.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use verge_tests::daemon::{Daemon, deployment, wasm_module};
use verge_tests::guest;
use verge_tests::mqtt::{self, SdkClient, add_identity, with_wrong_key};

/// `iothub_client.py invoke`: the SDK's `invoke_method` as the module of `caller`; the one
/// event it prints (`invoked` with the result, or `failed` with the error chain).
fn invoke(
    caller: &str,
    ca: &Path,
    device: &str,
    module: &str,
    method: &str,
    payload: Value,
) -> Value {
    let out = Command::new(mqtt::python())
        .arg(mqtt::client_script())
        .args([
            "invoke",
            caller,
            &ca.display().to_string(),
            device,
            module,
            method,
        ])
        .arg(payload.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "invoke printed no event\nstdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The HTTP status in a `failed` event (the SDK says "HTTP operation returned: 401 …").
fn failed_status(event: &Value) -> u16 {
    assert_eq!(event["event"], "failed", "{event}");
    let error = event["error"].as_str().unwrap();
    let after = error
        .split("HTTP operation returned: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no HTTP status in {error}"));
    after[..3].parse().unwrap()
}

#[test]
fn the_sdk_invokes_wasm_modules_and_mqtt_clients_over_https() {
    let ip = mqtt::loopback_ip();
    let daemon = Daemon::start("methods", &mqtt::config(&ip, mqtt::free_port()), None);
    let manifest = deployment(
        json!({"answerer": wasm_module(&guest("misbehave"), &[], json!({}))}),
        json!({"up": "FROM /messages/modules/answerer/* INTO $upstream"}),
        json!({}),
    );
    let out = daemon.deploy("methods.json", &manifest);
    assert!(out.status.success(), "{}", daemon.log());
    let caller = add_identity(&daemon, "module", "caller");
    let ext = add_identity(&daemon, "module", "ext");
    let leaf = add_identity(&daemon, "device", "leaf1");
    let ca = daemon.dir().join("trust-bundle.pem");
    std::fs::write(&ca, daemon.cli_ok(&["trust-bundle"])).unwrap();

    // A wasm module's method handler answers (misbehave echoes `echo`'s payload).
    let answer = invoke(&caller, &ca, "edge", "answerer", "echo", json!({"n": 7}));
    assert_eq!(
        answer,
        json!({"event": "invoked", "result": {"status": 200, "payload": {"n": 7}}}),
        "{}",
        daemon.log()
    );
    // Its status for a method it does not have comes back as the method's status.
    let answer = invoke(&caller, &ca, "edge", "answerer", "nope", json!(null));
    assert_eq!(answer["result"]["status"], 404, "{answer}");

    // An SDK module client connected over MQTT answers (iothub_client.py echoes the payload).
    let mut module = SdkClient::start("module", &ext, &ca);
    module.event("connected");
    module.event("sent");
    let answer = invoke(&caller, &ca, "edge", "ext", "ping", json!({"x": [1, 2]}));
    assert_eq!(
        answer,
        json!({"event": "invoked", "result": {"status": 200, "payload": {"echo": {"x": [1, 2]}}}}),
        "{}",
        daemon.log()
    );
    let seen = module.event("method");
    assert_eq!(seen["name"], "ping", "{seen}");
    module.close();

    // A leaf device's SDK client: `/twins/{device}/methods`.
    let mut device = SdkClient::start("device", &leaf, &ca);
    device.event("connected");
    device.event("sent");
    let answer = invoke(&caller, &ca, "leaf1", "-", "reboot", json!("now"));
    assert_eq!(
        answer,
        json!({"event": "invoked", "result": {"status": 200, "payload": {"echo": "now"}}}),
        "{}",
        daemon.log()
    );
    device.close();

    // Nobody serves the target: 404 (also the module client, now gone).
    let answer = invoke(&caller, &ca, "edge", "nobody", "ping", json!({}));
    assert_eq!(failed_status(&answer), 404, "{answer}");
    let answer = invoke(&caller, &ca, "edge", "ext", "ping", json!({}));
    assert_eq!(failed_status(&answer), 404, "{answer}");

    // The caller's token is signed with a wrong key: 401, and nothing is invoked.
    let wrong = with_wrong_key(&caller);
    let answer = invoke(&wrong, &ca, "edge", "answerer", "echo", json!({}));
    assert_eq!(failed_status(&answer), 401, "{answer}");
    assert!(
        daemon.log().contains("HTTPS request refused"),
        "{}",
        daemon.log()
    );
}
