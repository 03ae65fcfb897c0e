//! Nested Verges on loopback: a root, its child edge devices, their leaf devices and children.
//! Everything the root does for a device behind a child (twins, deployments, cloud-to-device
//! messages, direct methods) travels on the child's one upstream connection.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use verge_tests::daemon::{Daemon, deployment, wasm_module};
use verge_tests::mqtt::{self, SdkClient, add_identity};
use verge_tests::{certs, guest};

/// A Verge whose `[upstream]` is `parent`, registered there as edge device `name`, serving MQTT
/// over TLS on `ip`:8883 (its host name) for devices of its own. `[mqtt]` comes last.
fn nested_config(parent: &Daemon, name: &str, ip: &str) -> String {
    let cs = add_identity(parent, "edge-device", name);
    let ca = parent.dir().join(format!("{name}-parent-ca.pem"));
    std::fs::write(&ca, parent.cli_ok(&["trust-bundle"])).unwrap();
    format!(
        "device_id = \"{name}\"\nhostname = \"{ip}\"\n\
         [metrics]\nbind = \"{ip}\"\nport = 0\n\
         [upstream]\nconnection_string = \"{cs}\"\ntrust_bundle = \"{}\"\n\
         [agent]\ncool_off_time_unit_secs = 1\nstop_grace_secs = 2\ndeploy_timeout_secs = 60\n\
         [mqtt]\nbind = \"{ip}\"\ntls_port = 8883\nhttps_port = 0\n",
        ca.display()
    )
}

/// `verge deploy FILE --device DEVICE` on `root`, retried while `root` does not know the device
/// yet (a grandchild becomes known when its parent first acts for it).
fn deploy_to(root: &Daemon, device: &str, name: &str, manifest: &Value) {
    let started = Instant::now();
    loop {
        let out = root.deploy_to(device, &format!("{name}.json"), manifest);
        if out.status.success() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            mqtt::output_text(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A deployment of routes only.
fn routes(routes: Value) -> Value {
    deployment(json!({}), routes, json!({}))
}

/// A root on `ip` whose one route queues for `$upstream` (where `verge monitor` shows them) the
/// messages from device `from`.
fn root(tag: &str, ip: &str, from: &str) -> Daemon {
    let root = Daemon::start(tag, &mqtt::config(ip, mqtt::free_port()), None);
    let up = format!("FROM /messages/* WHERE $connectionDeviceId = '{from}' INTO $upstream");
    let out = root.deploy("root", &routes(json!({ "up": up })));
    assert!(out.status.success(), "{}", mqtt::output_text(&out));
    root
}

fn agent_reported(root: &Daemon, device: &str) -> Value {
    root.twin(&format!("devices/{device}/modules/$edgeAgent"))["reported"].clone()
}

#[test]
fn a_leaf_device_behind_a_child_gets_twin_patches_messages_and_methods_from_the_root() {
    let (root_ip, child_ip) = (mqtt::loopback_ip(), mqtt::loopback_ip());
    let mut root = root("leaf-root", &root_ip, "leaf");
    let child = Daemon::start(
        "leaf-child",
        &nested_config(&root, "child", &child_ip),
        None,
    );
    // The child's routes come from the root, like everything it runs.
    deploy_to(
        &root,
        "child",
        "child",
        &routes(json!({ "up": "FROM /messages/* INTO $upstream" })),
    );
    root.wait_until(
        "the child applied its routes",
        Duration::from_secs(30),
        |r| agent_reported(r, "child")["lastDesiredStatus"]["code"] == 200,
    );

    // A device registered at both: the root keeps it to itself (403 to the child's requests for
    // it), and the child's link goes on serving everyone else.
    add_identity(&root, "device", "taken");
    add_identity(&child, "device", "taken");
    child.wait_until("the root's refusal", Duration::from_secs(30), |c| {
        c.log().contains("the parent refused a twin request")
    });

    // The leaf device is the child's: registered there, connected there.
    let leaf = add_identity(&child, "device", "leaf");
    let ca = child.dir().join("leaf-ca.pem");
    std::fs::write(&ca, child.cli_ok(&["trust-bundle"])).unwrap();
    let mut device = SdkClient::start("device", &leaf, &ca);
    device.event("connected");
    device.event("reported");
    device.event("sent");

    // Reported properties reach the root's twin of the leaf; telemetry arrives from the leaf.
    root.wait_until(
        "the leaf's reported properties at the root",
        Duration::from_secs(30),
        |r| r.twin("devices/leaf")["reported"]["kind"] == "device",
    );
    let clients = |r: &Daemon| {
        r.twin("devices/child/modules/$edgeHub")["reported"]["clients"]["leaf"].clone()
    };
    root.wait_until(
        "the child's $edgeHub reports the leaf connected",
        Duration::from_secs(30),
        |r| clients(r)["status"] == "Connected",
    );
    let up = root.monitor(1, 30.0, true);
    assert_eq!(up.len(), 1, "{}", child.log());
    assert_eq!(up[0]["origin"]["deviceId"], "leaf", "{}", up[0]);
    assert_eq!(up[0]["properties"]["origin"], "python-sdk", "{}", up[0]);

    // A desired patch set at the root reaches the leaf.
    root.cli_ok(&["twin", "update", "devices/leaf", r#"{"interval": 7}"#]);
    let patch = device.expect("the desired patch", |v| v["event"] == "desired");
    assert_eq!(patch["patch"]["interval"], 7, "{patch}");

    // A cloud-to-device message from the root.
    root.cli_ok(&[
        "send",
        "--device",
        "leaf",
        "--property",
        "kind=greeting",
        "--message-id",
        "m-1",
        "hello leaf",
    ]);
    let c2d = device.event("c2d");
    assert_eq!(c2d["data"], "hello leaf", "{c2d}");
    assert_eq!(c2d["properties"]["kind"], "greeting", "{c2d}");
    assert_eq!(c2d["message_id"], "m-1", "{c2d}");

    // A direct method invoked at the root is answered by the leaf.
    let answer: Value =
        serde_json::from_str(&root.cli_ok(&["invoke", "--device", "leaf", "reboot", r#""now""#]))
            .unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["payload"]["echo"], "now", "{answer}");
    assert_eq!(device.event("method")["name"], "reboot");
    device.close();
    root.wait_until(
        "the child's $edgeHub reports the leaf disconnected",
        Duration::from_secs(30),
        |r| {
            clients(r)["status"] == "Disconnected"
                && clients(r)["lastDisconnectedTimeUtc"].is_string()
        },
    );

    // A module of the child run elsewhere (an MQTT client): its twin and methods come from the
    // root the same way.
    let ext = add_identity(&child, "module", "ext");
    let mut module = SdkClient::start("module", &ext, &ca);
    module.event("connected");
    module.event("reported");
    root.wait_until(
        "the module's reported properties at the root",
        Duration::from_secs(30),
        |r| r.twin("devices/child/modules/ext")["reported"]["kind"] == "module",
    );
    root.cli_ok(&[
        "twin",
        "update",
        "devices/child/modules/ext",
        r#"{"greeting": "from the root"}"#,
    ]);
    let patch = module.expect("the module's desired patch", |v| v["event"] == "desired");
    assert_eq!(patch["patch"]["greeting"], "from the root", "{patch}");
    let answer: Value = serde_json::from_str(&root.cli_ok(&[
        "invoke",
        "--device",
        "child",
        "--module",
        "ext",
        "ping",
        r#"{"n": 1}"#,
    ]))
    .unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["payload"]["echo"]["n"], 1, "{answer}");
    module.close();

    // The root keeps the twins of the devices below it across a restart (in its store).
    root.restart();
    let twin = root.twin("devices/leaf");
    assert_eq!(twin["desired"]["interval"], 7, "{twin}");
    assert_eq!(twin["desired"]["$version"], 1, "{twin}");
    assert_eq!(twin["reported"]["kind"], "device", "{twin}");

    // A device nobody knows: refused at once, nothing queued.
    let out = root.cli(&["send", "--device", "nobody", "x"]);
    assert!(!out.status.success());
    assert!(
        mqtt::output_text(&out).contains("not a device of this one"),
        "{}",
        mqtt::output_text(&out)
    );
}

#[test]
fn a_three_level_chain_carries_deployments_down_and_telemetry_up() {
    let ips = [
        mqtt::loopback_ip(),
        mqtt::loopback_ip(),
        mqtt::loopback_ip(),
    ];
    let root = root("chain-root", &ips[0], "leafedge");
    let middle = Daemon::start(
        "chain-middle",
        &nested_config(&root, "middle", &ips[1]),
        None,
    );
    let leafedge = Daemon::start(
        "chain-leafedge",
        &nested_config(&middle, "leafedge", &ips[2]),
        None,
    );
    deploy_to(
        &root,
        "middle",
        "middle",
        &routes(json!({ "up": "FROM /messages/* INTO $upstream" })),
    );

    // The root deploys to the grandchild, which it knows only through the middle.
    let misbehave = guest("misbehave");
    let good = deployment(
        json!({ "source": wasm_module(&misbehave, &[("Mode", json!("source")), ("Burst", json!("1")),
            ("TickMs", json!("50")), ("Size", json!("16")), ("Total", json!("20"))], json!({})) }),
        json!({ "up": "FROM /messages/modules/source/outputs/* INTO $upstream" }),
        json!({ "source": { "greeting": "hello" } }),
    );
    deploy_to(&root, "leafedge", "good", &good);
    root.wait_until(
        "the grandchild reports 200 with its module running",
        Duration::from_secs(60),
        |r| {
            let rep = agent_reported(r, "leafedge");
            rep["lastDesiredStatus"]["code"] == 200
                && rep["modules"]["source"]["runtimeStatus"] == "running"
        },
    );
    assert_eq!(
        leafedge.module("source").unwrap()["status"],
        "running",
        "{}",
        leafedge.log()
    );
    // The module's own twin came down too.
    leafedge.wait_until(
        "the module's desired properties on the grandchild",
        Duration::from_secs(30),
        |l| l.twin("source")["desired"]["greeting"] == "hello",
    );
    // Its module's telemetry climbs two levels and keeps its origin.
    let up = root.monitor(3, 60.0, true);
    assert_eq!(up.len(), 3, "{}", middle.log());
    for m in &up {
        assert_eq!(m["origin"]["deviceId"], "leafedge", "{m}");
        assert_eq!(m["origin"]["moduleId"], "source", "{m}");
    }

    // Bad deployments through the twin: the grandchild says why, and keeps running.
    let mut malformed = good.clone();
    malformed["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"] = json!(5);
    deploy_to(&root, "leafedge", "malformed", &malformed);
    root.wait_until("400 from the grandchild", Duration::from_secs(30), |r| {
        agent_reported(r, "leafedge")["lastDesiredStatus"]["code"] == 400
    });
    let mut empty = good.clone();
    empty["modulesContent"]["$edgeAgent"]["properties.desired"] = json!({});
    deploy_to(&root, "leafedge", "empty", &empty);
    root.wait_until("417 from the grandchild", Duration::from_secs(30), |r| {
        agent_reported(r, "leafedge")["lastDesiredStatus"]["code"] == 417
    });
    assert_eq!(
        leafedge.module("source").unwrap()["status"],
        "running",
        "the last good deployment stopped:\n{}",
        leafedge.log()
    );
}

#[test]
fn a_child_proves_itself_to_its_root_with_a_client_certificate() {
    let ip = mqtt::loopback_ip();
    let root = Daemon::start("x509-root", &mqtt::config(&ip, mqtt::free_port()), None);
    let dir = root.dir().to_owned();
    let (cert, key) = certs::self_signed(&dir, "xchild");
    let print = certs::thumbprint(&dir, &cert);
    // The parent prints the connection string of a device proved by its certificate.
    let cs = root
        .cli_ok(&[
            "identity",
            "add",
            "edge-device",
            "xchild",
            "--thumbprint",
            &print,
        ])
        .trim()
        .to_owned();
    assert_eq!(
        cs,
        format!("HostName={ip};DeviceId=xchild;x509=true;GatewayHostName={ip}")
    );
    let ca = dir.join("xchild-parent-ca.pem");
    std::fs::write(&ca, root.cli_ok(&["trust-bundle"])).unwrap();
    let config = |cert: &str, key: &str| {
        format!(
            "device_id = \"xchild\"\n[mqtt]\ntls_port = 0\nhttps_port = 0\n[metrics]\nport = 0\n\
             [upstream]\nconnection_string = \"{cs}\"\n\
             trust_bundle = \"{}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
             [agent]\ncool_off_time_unit_secs = 1\n",
            ca.display(),
            dir.join(cert).display(),
            dir.join(key).display()
        )
    };
    let child = Daemon::start("x509-child", &config(&cert, &key), None);
    deploy_to(
        &root,
        "xchild",
        "x",
        &routes(json!({ "up": "FROM /messages/* INTO $upstream" })),
    );
    root.wait_until(
        "the child, proved by its certificate, applies its deployment",
        Duration::from_secs(30),
        |r| agent_reported(r, "xchild")["lastDesiredStatus"]["code"] == 200,
    );
    drop(child);

    // A certificate the root does not know for that name: refused, and the child says so.
    let (other_cert, other_key) = certs::self_signed(&dir, "xother");
    let imposter = Daemon::start("x509-imposter", &config(&other_cert, &other_key), None);
    imposter.wait_until("the refusal", Duration::from_secs(10), |d| {
        d.log().contains("the parent refused the connection")
    });
    assert!(
        !imposter.log().contains("upstream connected"),
        "{}",
        imposter.log()
    );
    drop(imposter);

    // A key that does not go with the certificate: the daemon does not start, and says why.
    let path = dir.join("mismatch.toml");
    std::fs::write(&path, config(&cert, &other_key)).unwrap();
    let out = std::process::Command::new(verge_tests::daemon::verge_bin())
        .args(["run", "-d"])
        .arg(dir.join("mismatch-data"))
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started:\n{stderr}");
    assert!(
        stderr.contains("[upstream]") && stderr.contains("private key"),
        "{stderr}"
    );
}
