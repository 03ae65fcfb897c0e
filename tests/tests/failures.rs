//! Modules that fail, under the agent: a trapping module is restarted with backoff while its
//! neighbours keep running; an endless loop hits its call deadline; a memory bomb hits its cap.
//! The daemon stays up throughout.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use verge_tests::daemon::{Daemon, TEST_CONFIG, deployment, wasm_module};

fn misbehave(mode: &str, fields: Value) -> Value {
    wasm_module(
        &verge_tests::guest("misbehave"),
        &[("Mode", json!(mode))],
        fields,
    )
}

fn reported(daemon: &Daemon, module: &str) -> Value {
    daemon.twin("$edgeAgent")["reported"]["modules"][module].clone()
}

#[test]
fn a_trapping_module_backs_off_while_its_neighbours_keep_running() {
    let daemon = Daemon::start("trap", TEST_CONFIG, None);
    let source = wasm_module(
        &verge_tests::guest("misbehave"),
        &[
            ("Mode", json!("source")),
            ("TickMs", json!(50)),
            ("Size", json!(16)),
        ],
        json!({}),
    );
    let manifest = deployment(
        json!({
            "source": source,
            "crasher": misbehave("trap", json!({})),
            "neighbour": wasm_module(&verge_tests::guest("temp-sensor"), &[("MessageCount", json!(-1))], json!({})),
        }),
        json!({
            "feed": "FROM /messages/modules/source/* INTO BrokeredEndpoint(\"/modules/crasher/inputs/in\")",
            "up": "FROM /messages/modules/neighbour/* INTO $upstream",
        }),
        json!({"neighbour": {"SendInterval": 0.05}}),
    );
    assert!(
        daemon.deploy("trap.json", &manifest).status.success(),
        "{}",
        daemon.log()
    );

    // Backoff with a 1 s unit: restarts at ~1 s, ~2 s, ~4 s after each exit.
    let mut seen_backoff = false;
    daemon.wait_until("three restarts", Duration::from_secs(30), |d| {
        let m = d.module("crasher").unwrap();
        seen_backoff |= m["status"] == "backoff";
        m["restartCount"].as_u64().unwrap_or(0) >= 3
    });
    assert!(seen_backoff, "never seen in backoff");
    let crasher = reported(&daemon, "crasher");
    assert_eq!(crasher["exitCode"], 134, "{crasher}");
    assert!(
        crasher["statusDescription"]
            .as_str()
            .unwrap()
            .contains("trapped"),
        "{crasher}"
    );
    let logs = daemon.cli(&["logs", "crasher"]);
    let text = String::from_utf8_lossy(&logs.stderr);
    assert!(
        text.contains("told to trap") && text.contains("exited (134)"),
        "{text}"
    );

    // The neighbour never stopped.
    let neighbour = daemon.module("neighbour").unwrap();
    assert_eq!(
        (
            neighbour["status"].as_str(),
            neighbour["restartCount"].as_u64()
        ),
        (Some("running"), Some(0))
    );
    assert_eq!(
        daemon.monitor(5, 10.0, false).len(),
        5,
        "the neighbour's messages stopped"
    );
    // The deployment itself is fine: a crashing module is not a failed deployment.
    assert_eq!(
        daemon.twin("$edgeAgent")["reported"]["lastDesiredStatus"]["code"],
        200
    );
}

#[test]
fn after_max_restarts_a_module_is_failed_for_good() {
    let config = format!("{TEST_CONFIG}max_restart_count = 2\ncool_off_time_unit_secs = 0\n")
        .replace("[agent]\ncool_off_time_unit_secs = 1\n", "[agent]\n");
    let daemon = Daemon::start("maxrestart", &config, None);
    let manifest = deployment(
        json!({"quitter": misbehave("init-fail", json!({}))}),
        json!({}),
        json!({}),
    );
    daemon.deploy("quit.json", &manifest);
    daemon.wait_until("failed after 2 restarts", Duration::from_secs(20), |d| {
        let m = d.module("quitter").unwrap();
        m["status"] == "failed" && m["restartCount"] == 2
    });
    std::thread::sleep(Duration::from_millis(1500));
    let m = daemon.module("quitter").unwrap();
    assert_eq!(
        (m["status"].as_str(), m["restartCount"].as_u64()),
        (Some("failed"), Some(2)),
        "{m}"
    );
    assert!(
        m["description"]
            .as_str()
            .unwrap()
            .contains("failed after 2 restarts"),
        "{m}"
    );
}

#[test]
fn deadlines_and_memory_caps_end_modules_not_the_daemon() {
    let daemon = Daemon::start("limits", TEST_CONFIG, None);
    let source = wasm_module(
        &verge_tests::guest("misbehave"),
        &[
            ("Mode", json!("source")),
            ("TickMs", json!(200)),
            ("Size", json!(8)),
        ],
        json!({}),
    );
    let never = |mode: &str, options: Value| {
        misbehave(
            mode,
            json!({"restartPolicy": "never", "settings": {"image": verge_tests::guest("misbehave").display().to_string(), "createOptions": options.to_string()}}),
        )
    };
    let manifest = deployment(
        json!({
            "source": source,
            "looper": never("loop", json!({"Wasm": {"CallTimeoutMs": 200}})),
            "bomber": never("oom", json!({"HostConfig": {"Memory": 16 << 20}})),
            "sleeper": never("sleep", json!({"Wasm": {"CallTimeoutMs": 300}})),
        }),
        json!({
            "toLooper": "FROM /messages/modules/source/* INTO BrokeredEndpoint(\"/modules/looper/inputs/in\")",
            "toBomber": "FROM /messages/modules/source/* INTO BrokeredEndpoint(\"/modules/bomber/inputs/in\")",
            "toSleeper": "FROM /messages/modules/source/* INTO BrokeredEndpoint(\"/modules/sleeper/inputs/in\")",
        }),
        json!({}),
    );
    assert!(
        daemon.deploy("limits.json", &manifest).status.success(),
        "{}",
        daemon.log()
    );
    daemon.wait_until("all three to fail", Duration::from_secs(20), |d| {
        ["looper", "bomber", "sleeper"]
            .iter()
            .all(|m| d.module(m).is_some_and(|m| m["status"] == "failed"))
    });
    for (module, code, words) in [
        ("looper", 124, "deadline of 200ms"),
        ("sleeper", 124, "deadline of 300ms"),
        ("bomber", 137, "memory limit of 16777216 bytes"),
    ] {
        let r = reported(&daemon, module);
        assert_eq!(r["exitCode"], code, "{module}: {r}");
        assert!(
            r["statusDescription"].as_str().unwrap().contains(words),
            "{module}: {r}"
        );
        assert_eq!(r["runtimeStatus"], "failed");
    }
    // The daemon and the source run on.
    assert_eq!(daemon.module("source").unwrap()["status"], "running");
    daemon.cli_ok(&["list"]);
}
