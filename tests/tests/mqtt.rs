//! The MQTT front with real clients on loopback: mosquitto_pub / mosquitto_sub with SAS tokens,
//! the unmodified Azure IoT device SDK for Python over TLS, raw sockets for malformed packets.
//! Messages from MQTT clients and from wasm modules meet in the same routes.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use verge_tests::daemon::{Daemon, deployment, wasm_module};
use verge_tests::guest;
use verge_tests::mqtt::{
    self, RawClient, SdkClient, add_identity, output_text as text, with_wrong_key,
};

const API: &str = "api-version=2021-04-12";

fn routes() -> Value {
    json!({
        "leafToFilter": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")",
        "extToFilter": "FROM /messages/modules/ext/outputs/out INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")",
        "filterUp": "FROM /messages/modules/filter/outputs/output1 INTO $upstream",
        "sensorToExt": "FROM /messages/modules/sensor/outputs/temperatureOutput INTO BrokeredEndpoint(\"/modules/ext/inputs/sensor\")",
        "extEchoUp": "FROM /messages/modules/ext/outputs/echo INTO $upstream",
    })
}

fn manifest(dir: &Path, greeting: &str) -> std::path::PathBuf {
    let modules = json!({
        "filter": wasm_module(&guest("filter"), &[], json!({})),
        "sensor": wasm_module(&guest("temp_sensor"), &[("MessageCount", json!(3))], json!({})),
    });
    let twins = json!({
        "sensor": { "SendData": true, "SendInterval": 1 },
        "ext": { "greeting": greeting },
    });
    let path = dir.join(format!("deployment-{greeting}.json"));
    let text = serde_json::to_string_pretty(&deployment(modules, routes(), twins)).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn mosquitto_pub(
    port: u16,
    client: &str,
    username: &str,
    password: &str,
    topic: &str,
    body: &str,
) -> Output {
    let port = port.to_string();
    mqtt::mosquitto_pub(&[
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-i",
        client,
        "-u",
        username,
        "-P",
        password,
        "-t",
        topic,
        "-m",
        body,
    ])
}

#[test]
fn mqtt_clients_and_wasm_modules_share_the_routes() {
    let ip = mqtt::loopback_ip();
    let plain = mqtt::free_port();
    let daemon = Daemon::start("mqtt-routes", &mqtt::config(&ip, plain), None);
    let first = manifest(daemon.dir(), "hello");
    daemon.cli_ok(&["deploy", first.to_str().unwrap()]);
    let leaf = add_identity(&daemon, "device", "leaf1");
    let ext = add_identity(&daemon, "module", "ext");
    assert!(leaf.contains(&format!("GatewayHostName={ip}")), "{leaf}");
    let ca = daemon.dir().join("trust-bundle.pem");
    std::fs::write(&ca, daemon.cli_ok(&["trust-bundle"])).unwrap();
    // Deployed modules get identities of their own (keys generated in the store).
    daemon.wait_until("module identities", Duration::from_secs(10), |d| {
        let listed = d.cli_ok(&["identity", "list", "--json"]);
        listed.contains("\"edge/filter\"") && listed.contains("\"edge/sensor\"")
    });
    let listed = daemon.cli_ok(&["identity", "list"]);
    assert!(
        listed.contains("leaf1") && listed.contains("edge/ext"),
        "{listed}"
    );

    // mosquitto_pub as the leaf device, SAS over plain MQTT: telemetry → filter (wasm) → upstream.
    let monitor = std::thread::scope(|s| {
        let monitor = s.spawn(|| daemon.monitor(1, 30.0, false));
        std::thread::sleep(Duration::from_millis(300));
        let token = mqtt::token(&leaf, 600);
        let body = r#"{"machine":{"temperature":80.5},"from":"mosquitto"}"#;
        let out = mosquitto_pub(
            plain,
            "leaf1",
            &format!("{ip}/leaf1/?{API}"),
            &token,
            "devices/leaf1/messages/events/%24.ct=application%2Fjson&origin=mosquitto",
            body,
        );
        assert!(
            out.status.success(),
            "mosquitto_pub: {}\n{}",
            text(&out),
            daemon.log()
        );
        monitor.join().unwrap()
    });
    assert_eq!(monitor.len(), 1, "{}", daemon.log());
    assert_eq!(
        monitor[0]["properties"]["MessageType"], "Alert",
        "{monitor:?}"
    );
    assert!(
        monitor[0]["body"].to_string().contains("80.5"),
        "{monitor:?}"
    );

    // The SDK's module client over TLS: twin, reported properties, inputs from a wasm module,
    // outputs to a wasm module, methods, desired patches.
    let mut module = SdkClient::start("module", &ext, &ca);
    module.event("connected");
    let twin = module.event("twin");
    assert_eq!(twin["twin"]["desired"]["greeting"], "hello", "{twin}");
    module.event("reported");
    let input = module.expect("a sensor reading on input sensor", |v| {
        v["event"] == "input" && v["input"] == "sensor"
    });
    assert!(
        input["data"].as_str().unwrap().contains("machine"),
        "{input}"
    );
    // Upstream holds the mosquitto alert, the SDK's alert and the echoes of the 3 readings.
    let up = daemon.monitor(5, 30.0, true);
    let echoed = up.iter().any(|m| m["properties"]["echoed"] == "yes");
    let alert_from_sdk = up.iter().any(|m| m["body"].to_string().contains("sdk"));
    assert!(echoed && alert_from_sdk, "{up:?}\n{}", daemon.log());
    let reported = daemon.twin("ext");
    assert_eq!(
        reported["reported"]["sdk"], "azure-iot-device",
        "{reported}"
    );
    let answer = daemon.cli_ok(&["invoke", "ext", "ping", r#"{"n":7}"#]);
    assert!(
        answer.contains("\"echo\"") && answer.contains('7'),
        "{answer}"
    );
    let module_event = module.event("method");
    assert_eq!(module_event["name"], "ping");
    let second = manifest(daemon.dir(), "changed");
    daemon.cli_ok(&["deploy", second.to_str().unwrap()]);
    let patch = module.expect("the desired patch", |v| v["event"] == "desired");
    assert_eq!(patch["patch"]["greeting"], "changed", "{patch}");
    module.close();

    // The SDK's device client over TLS, as a leaf device.
    let mut device = SdkClient::start("device", &leaf, &ca);
    device.event("connected");
    device.event("twin");
    device.event("reported");
    device.event("sent");
    daemon.cli_ok(&["twin", "update", "devices/leaf1", r#"{"interval": 5}"#]);
    let patch = device.expect("the device's desired patch", |v| v["event"] == "desired");
    assert_eq!(patch["patch"]["interval"], 5, "{patch}");
    device.close();
    assert_eq!(daemon.twin("devices/leaf1")["reported"]["kind"], "device");

    // A bare paho-mqtt client: twin GET answered with 200, telemetry PUBACKed.
    let out = Command::new(mqtt::python())
        .arg(mqtt::client_script())
        .args(["paho", &leaf, &ca.display().to_string()])
        .output()
        .unwrap();
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let twin = events.iter().find(|e| e["event"] == "message");
    let twin = twin.unwrap_or_else(|| panic!("{events:?} {}", text(&out)));
    assert!(
        twin["topic"]
            .as_str()
            .unwrap()
            .starts_with("$iothub/twin/res/200/?$rid=42"),
        "{twin}"
    );
    assert!(
        twin["payload"].as_str().unwrap().contains("\"interval\":5"),
        "{twin}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "published" && e["acked"] == true),
        "{events:?}"
    );
}

/// Read until the server closes the connection (or 10 s pass): whether it closed.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn wrong_credentials_foreign_topics_and_bad_packets_are_refused() {
    let ip = mqtt::loopback_ip();
    let plain = mqtt::free_port();
    let daemon = Daemon::start("mqtt-refused", &mqtt::config(&ip, plain), None);
    let first = manifest(daemon.dir(), "hello");
    daemon.cli_ok(&["deploy", first.to_str().unwrap()]);
    let leaf = add_identity(&daemon, "device", "leaf1");
    let other = add_identity(&daemon, "device", "leaf2");
    let ext = add_identity(&daemon, "module", "ext");
    let user = format!("{ip}/leaf1/?{API}");
    let topic = "devices/leaf1/messages/events/";

    let refused = |out: Output, why: &str| {
        assert!(!out.status.success(), "{why}: accepted\n{}", text(&out));
        let t = text(&out).to_lowercase();
        assert!(
            t.contains("not authori") || t.contains("bad user name"),
            "{why}: {t}"
        );
    };
    let wrong_key = with_wrong_key(&leaf);
    refused(
        mosquitto_pub(
            plain,
            "leaf1",
            &user,
            &mqtt::token(&wrong_key, 600),
            topic,
            "x",
        ),
        "wrong key",
    );
    refused(
        mosquitto_pub(plain, "leaf1", &user, &mqtt::token(&leaf, -900), topic, "x"),
        "expired token",
    );
    refused(
        mosquitto_pub(plain, "leaf1", &user, &mqtt::token(&other, 600), topic, "x"),
        "another identity's token",
    );
    refused(
        mosquitto_pub(plain, "leaf1", &user, "", topic, "x"),
        "no password and no certificate",
    );

    // A module publishing as another module: the connection is closed, nothing is routed.
    let ext_user = format!("{ip}/edge/ext/?{API}");
    let out = mosquitto_pub(
        plain,
        "edge/ext",
        &ext_user,
        &mqtt::token(&ext, 600),
        "devices/edge/modules/filter/messages/events/%24.on=output1",
        r#"{"machine":{"temperature":99}}"#,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(daemon.log().contains("may not publish"), "{}", daemon.log());
    // A module subscribing to another module's inputs: SUBACK failure.
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &plain.to_string(),
            "-V",
            "mqttv311",
            "-i",
            "edge/ext",
        ])
        .args([
            "-u",
            &ext_user,
            "-P",
            &mqtt::token(&ext, 600),
            "-t",
            "devices/edge/modules/filter/inputs/#",
            "-C",
            "1",
            "-W",
            "3",
        ])
        .output()
        .unwrap();
    assert!(text(&sub).contains("denied"), "{}", text(&sub));

    // Malformed packets: garbage, a PUBLISH before CONNECT, a CONNECT claiming 200 MB.
    for bytes in [
        &b"\xff\xff\xff\xff\xff"[..],
        &b"\x30\x05\x00\x01tab"[..],
        &b"\x10\xff\xff\xff\x7f"[..],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", plain)).unwrap();
        s.write_all(bytes).unwrap();
        assert!(
            closed_by_server(&mut s),
            "{bytes:?} left the connection open"
        );
    }
    // The daemon is unaffected: a good client still gets through.
    let out = mosquitto_pub(
        plain,
        "leaf1",
        &user,
        &mqtt::token(&leaf, 600),
        topic,
        r#"{"machine":{"temperature":1}}"#,
    );
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    assert!(daemon.log().contains("refused"), "{}", daemon.log());
    // Every refusal is counted.
    let stats: Value = serde_json::from_str(&daemon.cli_ok(&["stats"])).unwrap();
    let at_least = |key: &str, n: u64| {
        assert!(stats[key].as_u64().unwrap() >= n, "{key}: {stats}");
    };
    at_least("mqttConnectionsRefused", 4);
    at_least("mqttPublishesRefused", 1);
    at_least("mqttSubscriptionsRefused", 1);
    at_least("mqttMalformed", 2);
    at_least("mqttMessagesIn", 1);
}

#[test]
fn deliveries_not_acknowledged_come_again_after_a_reconnect() {
    use mqttbytes::QoS;
    use mqttbytes::v4::{PubAck, Publish, Subscribe};
    let ip = mqtt::loopback_ip();
    let plain = mqtt::free_port();
    let daemon = Daemon::start("mqtt-redeliver", &mqtt::config(&ip, plain), None);
    let manifest = deployment(
        json!({}),
        json!({ "toExt": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint(\"/modules/ext/inputs/in\")" }),
        json!({}),
    );
    assert!(daemon.deploy("redeliver", &manifest).status.success());
    let leaf = add_identity(&daemon, "device", "leaf1");
    let ext = add_identity(&daemon, "module", "ext");
    let ext_user = format!("{ip}/edge/ext/?{API}");
    let inputs = "devices/edge/modules/ext/inputs/#";

    let mut first = RawClient::connect(plain, "edge/ext", &ext_user, &mqtt::token(&ext, 600));
    first.send(|o| {
        Subscribe::new(inputs, QoS::AtLeastOnce).write(o).unwrap();
    });
    for n in 1..=3 {
        let body = format!(r#"{{"n":{n}}}"#);
        let out = mosquitto_pub(
            plain,
            "leaf1",
            &format!("{ip}/leaf1/?{API}"),
            &mqtt::token(&leaf, 600),
            &format!("devices/leaf1/messages/events/seq={n}"),
            &body,
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    // The first client acks message 1, takes 2 and 3 without acking them, and goes away.
    let one = first.publish();
    assert!(
        one.topic.starts_with("devices/edge/modules/ext/inputs/in/"),
        "{}",
        one.topic
    );
    assert_eq!(&one.payload[..], br#"{"n":1}"#);
    assert_eq!((one.qos, one.dup), (QoS::AtLeastOnce, false));
    first.send(|o| {
        PubAck::new(one.pkid).write(o).unwrap();
    });
    let two = first.publish();
    let three = first.publish();
    assert_eq!(
        (&two.payload[..], &three.payload[..]),
        (&br#"{"n":2}"#[..], &br#"{"n":3}"#[..])
    );
    drop(first);

    // The next connection gets 2 and 3 again, in order, and not 1.
    let mut second = RawClient::connect(plain, "edge/ext", &ext_user, &mqtt::token(&ext, 600));
    second.send(|o| {
        Subscribe::new(inputs, QoS::AtLeastOnce).write(o).unwrap();
    });
    let again: Vec<Publish> = (0..2).map(|_| second.publish()).collect();
    let bodies: Vec<&[u8]> = again.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(
        bodies,
        [&br#"{"n":2}"#[..], &br#"{"n":3}"#[..]],
        "{}",
        daemon.log()
    );
    assert!(again[0].topic.contains("seq=2"), "{}", again[0].topic);
    assert!(
        again.iter().all(|p| p.dup),
        "redeliveries carry the DUP flag"
    );
}

#[test]
fn a_connection_ends_when_its_sas_token_does() {
    let ip = mqtt::loopback_ip();
    let plain = mqtt::free_port();
    let daemon = Daemon::start("mqtt-expiry", &mqtt::config(&ip, plain), None);
    let leaf = add_identity(&daemon, "device", "leaf1");
    let user = format!("{ip}/leaf1/?{API}");
    // Expired 296 s ago: still inside the 300 s clock skew, so accepted, for about 4 s more.
    let started = std::time::Instant::now();
    let mut client = RawClient::connect(plain, "leaf1", &user, &mqtt::token(&leaf, -296));
    assert!(closed_by_server(&mut client.stream), "{}", daemon.log());
    let lasted = started.elapsed();
    assert!(lasted >= Duration::from_secs(2), "closed after {lasted:?}");
    assert!(
        daemon.log().contains("its SAS token expired"),
        "{}",
        daemon.log()
    );
}
