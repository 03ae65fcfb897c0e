//! `verge route test ROUTE --message FILE`, which needs no daemon: true, false or undefined with
//! exit 0; a route or message that does not parse, exit 2 with the reason.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::process::Output;

use serde_json::{Value, json};

fn route_test(route: &str, message: &Value) -> Output {
    let file = std::env::temp_dir().join(format!(
        "verge-route-{}-{:x}.json",
        std::process::id(),
        route.len() ^ message.to_string().len() << 8 ^ (route.as_ptr() as usize)
    ));
    std::fs::write(&file, message.to_string()).unwrap();
    let out = std::process::Command::new(verge_tests::daemon::verge_bin())
        .args(["route", "test", route, "--message"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(file);
    out
}

fn answer(route: &str, message: &Value) -> String {
    let out = route_test(route, message);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{route}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn reading(temperature: f64) -> Value {
    json!({
        "properties": {"sequenceNumber": "7", "MessageType": "Alert"},
        "systemProperties": {
            "contentType": "application/json", "contentEncoding": "utf-8",
            "connectionDeviceId": "dev", "connectionModuleId": "sensor", "outputName": "temperatureOutput"
        },
        "body": {"machine": {"temperature": temperature}}
    })
}

#[test]
fn conditions_evaluate_to_three_values() {
    let hot = reading(30.5);
    let from = "FROM /messages/modules/sensor/outputs/temperatureOutput";
    assert_eq!(
        answer(
            &format!("{from} WHERE $body.machine.temperature > 25 INTO $upstream"),
            &hot
        ),
        "true"
    );
    assert_eq!(
        answer(
            &format!("{from} WHERE $body.machine.temperature > 40 INTO $upstream"),
            &hot
        ),
        "false"
    );
    assert_eq!(
        answer(&format!("{from} WHERE missing = 'x' INTO $upstream"), &hot),
        "undefined"
    );
    assert_eq!(
        answer(
            &format!(
                "{from} WHERE MessageType = 'Alert' AND as_number(sequenceNumber) = 7 INTO $upstream"
            ),
            &hot
        ),
        "true"
    );
    assert_eq!(
        answer(
            "FROM /* INTO BrokeredEndpoint(\"/modules/m/inputs/i\")",
            &hot
        ),
        "true"
    );
    // The message's source follows from its system properties: a leaf device's message does
    // not come from a module.
    let mut leaf = hot.clone();
    leaf["systemProperties"]
        .as_object_mut()
        .unwrap()
        .remove("connectionModuleId");
    assert_eq!(
        answer("FROM /messages/modules/* INTO $upstream", &leaf),
        "false"
    );
    assert_eq!(
        answer(
            "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream",
            &leaf
        ),
        "true"
    );
    assert_eq!(
        answer("FROM /messages/modules/other/* INTO $upstream", &hot),
        "false"
    );
}

#[test]
fn body_encodings_and_monitor_lines() {
    let b64 = json!({"body": "AAEC", "bodyEncoding": "base64", "properties": {"k": "v"}});
    assert_eq!(
        answer("FROM /messages WHERE k = 'v' INTO $upstream", &b64),
        "true"
    );
    // A line as `verge monitor` prints it (with origin and enqueuedTime) is a message file.
    let mut line = reading(26.0);
    line["origin"] =
        json!({"deviceId": "dev", "moduleId": "sensor", "outputName": "temperatureOutput"});
    line["enqueuedTime"] = json!("2026-11-22T10:00:00.000Z");
    assert_eq!(
        answer(
            "FROM /messages/modules/sensor/* WHERE $body.machine.temperature > 25 INTO $upstream",
            &line
        ),
        "true"
    );
    // Without a content type, body queries are undefined, and the command says why.
    let mut bare = reading(26.0);
    bare["systemProperties"]
        .as_object_mut()
        .unwrap()
        .remove("contentType");
    let out = route_test(
        "FROM /messages WHERE $body.machine.temperature > 25 INTO $upstream",
        &bare,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "undefined");
    assert!(String::from_utf8_lossy(&out.stderr).contains("contentType"));
}

#[test]
fn bad_routes_and_messages_exit_2_with_the_reason() {
    let msg = reading(30.0);
    for (route, needle) in [
        ("FROM /messages WHERE temp == 100 INTO $upstream", "column"),
        ("FROM /messages WHERE 3 + true > 1 INTO $upstream", "'bool'"),
        (
            "FROM /messages INTO BrokeredEndpoint(\"/modules/m\")",
            "/modules/{mid}/inputs/{input}",
        ),
        ("FROM /messages INTO $cloud", "$cloud"),
        ("SELECT FROM", "FROM"),
    ] {
        let out = route_test(route, &msg);
        assert_eq!(out.status.code(), Some(2), "{route} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{route}: {err}");
    }
    for (message, needle) in [
        (json!({"properties": {"a": 1}}), "\"a\" must be a string"),
        (json!({"body": "***", "bodyEncoding": "base64"}), "base64"),
        (json!({"sytemProperties": {}}), "sytemProperties"),
    ] {
        let out = route_test("FROM /* INTO $upstream", &message);
        assert_eq!(out.status.code(), Some(2), "{message} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
