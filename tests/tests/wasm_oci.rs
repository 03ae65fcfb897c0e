//! Wasm modules from an OCI registry: `verge push` publishes the sample filter as a CNCF wasm
//! OCI artifact to the rig's registry (Debian's docker-registry on loopback, htpasswd), and a
//! deployment whose filter is `"type": "wasm", "settings": {"image": "<registry>/filter:1.0"}`
//! with `registryCredentials` runs it; no containerd is involved. Also: digest-pinned
//! references (and a restart with the registry gone), a wrong password, `imagePullPolicy:
//! never`, a file that is not a component, and a container image named by a wasm module. Needs
//! `tests/setup --containers` (the registry, htpasswd, skopeo); fails, rather than skips,
//! without them. Run with `--nocapture` to see the messages a user gets.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use verge_tests::daemon::{Daemon, TEST_CONFIG, deployment, verge_bin, wasm_module};
use verge_tests::images::{self, Compression, ImageConfig, TempDir};
use verge_tests::registry::Registry;

const SENSOR_TO_FILTER: &str = "FROM /messages/modules/sensor/outputs/temperatureOutput INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")";
const FILTER_UP: &str = "FROM /messages/modules/filter/outputs/* INTO $upstream";

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `verge push FILE REFERENCE --username U --password-stdin`, the password on stdin.
fn push(file: &Path, reference: &str, credentials: Option<(&str, &str)>) -> Output {
    let mut cmd = Command::new(verge_bin());
    cmd.arg("push").arg(file).arg(reference);
    if let Some((user, _)) = credentials {
        cmd.args(["--username", user, "--password-stdin"]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some((_, password)) = credentials {
        writeln!(stdin, "{password}").unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Pushes the sample filter as `filter:{tag}`; the printed `REFERENCE@DIGEST` and the digest.
fn push_filter(registry: &Registry, tag: &str) -> (String, String) {
    let reference = registry.reference("filter", tag);
    let out = push(
        &verge_tests::guest("filter"),
        &reference,
        registry.credentials(),
    );
    assert!(out.status.success(), "verge push failed: {}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let digest = printed
        .strip_prefix(&format!("{reference}@"))
        .unwrap_or_else(|| panic!("verge push printed {printed:?}"))
        .to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    (printed, digest)
}

fn sensor() -> Value {
    wasm_module(
        &verge_tests::guest("temp-sensor"),
        &[("MessageCount", json!(-1))],
        json!({"startupOrder": 2}),
    )
}

/// A wasm module whose component is the OCI reference `image`.
fn from_registry(image: &str, fields: Value) -> Value {
    wasm_module(Path::new(image), &[], fields)
}

/// Sensor → filter → `$upstream`, the filter from `filter_image`, credentials for `registry`
/// with `password`.
fn manifest(registry: &Registry, filter_image: &str, password: &str) -> Value {
    let mut manifest = deployment(
        json!({
            "sensor": sensor(),
            "filter": from_registry(filter_image, json!({"startupOrder": 1})),
        }),
        json!({"toFilter": SENSOR_TO_FILTER, "up": FILTER_UP}),
        json!({"sensor": {"SendInterval": 0.02}, "filter": {"TemperatureThreshold": 25}}),
    );
    manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"] = json!({
        "rig": {
            "address": registry.host(),
            "username": registry.username(),
            "password": password,
        }
    });
    manifest
}

fn modules(manifest: &mut Value) -> &mut serde_json::Map<String, Value> {
    manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
        .as_object_mut()
        .unwrap()
}

fn reported(daemon: &Daemon) -> Value {
    daemon.twin("$edgeAgent")["reported"].clone()
}

/// Waits until `$edgeAgent` reports `module` with imageHash `digest`.
fn wait_for_image_hash(daemon: &Daemon, module: &str, digest: &str) {
    daemon.wait_until(
        &format!("{module}'s imageHash {digest}"),
        Duration::from_secs(10),
        |d| reported(d)["modules"][module]["settings"]["imageHash"] == digest,
    );
}

/// Alerts from the filter reach `$upstream`, above its threshold.
fn alerts_flow(daemon: &Daemon) {
    let messages = daemon.monitor(3, 30.0, true);
    assert_eq!(messages.len(), 3, "too few alerts:\n{}", daemon.log());
    for m in &messages {
        assert_eq!(m["origin"]["moduleId"], "filter", "{m}");
        let t = m["body"]["machine"]["temperature"].as_f64().unwrap();
        assert!(t > 25.0, "the filter let {t} through: {m}");
    }
}

#[test]
fn a_pushed_component_runs_from_the_registry() {
    let registry = Registry::start();
    let (printed, digest) = push_filter(&registry, "1.0");
    // What the registry holds is the CNCF wasm artifact, under the digest `verge push` printed.
    let served = registry.manifest("filter", "1.0");
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(served.digest(), Some(digest.as_str()));
    let body = served.json();
    assert_eq!(body["config"]["mediaType"], images::media_type::WASM_CONFIG);
    assert_eq!(body["layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        body["layers"][0]["mediaType"],
        images::media_type::WASM_LAYER
    );
    assert_eq!(
        body["layers"][0]["digest"].as_str().map(str::to_owned),
        Some(format!(
            "sha256:{}",
            images::sha256_file(&verge_tests::guest("filter"))
        ))
    );
    let config = registry.blob("filter", body["config"]["digest"].as_str().unwrap());
    let config: Value = serde_json::from_slice(&config.body).unwrap();
    assert_eq!(
        (&config["architecture"], &config["os"]),
        (&json!("wasm"), &json!("wasip2"))
    );
    // The same file pushed again is the same artifact.
    assert_eq!(push_filter(&registry, "again").1, digest);

    let daemon = Daemon::start("oci-run", TEST_CONFIG, None);
    let reference = registry.reference("filter", "1.0");
    let out = daemon.deploy(
        "oci.json",
        &manifest(&registry, &reference, registry.password()),
    );
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    alerts_flow(&daemon);
    let filter = daemon.module("filter").unwrap();
    assert_eq!(filter["status"], "running", "{filter}");
    wait_for_image_hash(&daemon, "filter", &digest);
    let agent = reported(&daemon);
    assert_eq!(agent["modules"]["filter"]["settings"]["image"], reference);
    assert_eq!(agent["lastDesiredStatus"]["code"], 200);
    // The component sits in the daemon's OCI cache, by layer digest.
    let layer = body["layers"][0]["digest"].as_str().unwrap();
    let cached = daemon
        .data_dir()
        .join("cache/oci")
        .join(format!("{}.wasm", layer.trim_start_matches("sha256:")));
    assert!(cached.is_file(), "{} missing", cached.display());

    // Pinned by digest (the reference `verge push` printed, and repository@digest): runs the
    // same artifact.
    for (round, pinned) in [printed, format!("{}/filter@{digest}", registry.host())]
        .into_iter()
        .enumerate()
    {
        let mut m = manifest(&registry, &pinned, registry.password());
        modules(&mut m)["filter"]["version"] = json!(format!("pinned-{round}"));
        let out = daemon.deploy(&format!("pinned-{round}.json"), &m);
        assert!(out.status.success(), "{pinned}: {}", text(&out));
        assert_eq!(daemon.module("filter").unwrap()["status"], "running");
        daemon.wait_until("the pinned image reported", Duration::from_secs(10), |d| {
            reported(d)["modules"]["filter"]["settings"]["image"] == pinned
        });
        wait_for_image_hash(&daemon, "filter", &digest);
    }

    // `never` with a tag the cache resolved before: runs without asking the registry.
    let mut never = manifest(&registry, &reference, registry.password());
    modules(&mut never)["filter"]["imagePullPolicy"] = json!("never");
    let out = daemon.deploy("never-cached.json", &never);
    assert!(out.status.success(), "{}", text(&out));

    // With the registry gone, a restarted daemon brings the digest-pinned module back from
    // its cache.
    let mut pinned = manifest(
        &registry,
        &format!("{}/filter@{digest}", registry.host()),
        registry.password(),
    );
    modules(&mut pinned)["filter"]["version"] = json!("offline");
    let out = daemon.deploy("offline.json", &pinned);
    assert!(out.status.success(), "{}", text(&out));
    drop(registry);
    let mut daemon = daemon;
    daemon.restart();
    daemon.wait_until("the modules to run again", Duration::from_secs(30), |d| {
        ["sensor", "filter"]
            .iter()
            .all(|m| d.module(m).is_some_and(|m| m["status"] == "running"))
    });
    alerts_flow(&daemon);
}

#[test]
fn registry_failures_and_wrong_artifacts_fail_only_their_module() {
    let registry = Registry::start();
    let (_, digest) = push_filter(&registry, "1.0");
    let daemon = Daemon::start("oci-fail", TEST_CONFIG, None);
    let reference = registry.reference("filter", "1.0");
    let good = manifest(&registry, &reference, registry.password());
    let out = daemon.deploy("good.json", &good);
    assert!(out.status.success(), "{}", text(&out));
    let start = daemon.module("filter").unwrap()["lastStart"].clone();

    // A wrong password: 500 with the registry's own words; the running filter is untouched.
    let mut wrong = manifest(&registry, &reference, "not-the-password");
    modules(&mut wrong)["filter"]["version"] = json!("2.0");
    let out = daemon.deploy("wrong.json", &wrong);
    let why = text(&out);
    eprintln!("wrong password:\n{why}");
    assert_eq!(out.status.code(), Some(1), "{why}");
    assert!(
        why.contains("(500)") && why.contains("401") && why.contains("authentication required"),
        "{why}"
    );
    let filter = daemon.module("filter").unwrap();
    assert_eq!(
        (filter["status"].as_str(), &filter["lastStart"]),
        (Some("running"), &start),
        "{filter}"
    );
    assert_eq!(daemon.module("sensor").unwrap()["status"], "running");
    alerts_flow(&daemon);
    wait_for_image_hash(&daemon, "filter", &digest);

    // `never` with a component the cache never saw (it is in the registry): 500 naming it.
    let (_, _) = push_filter(&registry, "cold");
    let cold = registry.reference("filter", "cold");
    let mut never = good.clone();
    modules(&mut never).insert(
        "cold".into(),
        from_registry(&cold, json!({"imagePullPolicy": "never"})),
    );
    let out = daemon.deploy("never.json", &never);
    let why = text(&out);
    eprintln!("never, not cached:\n{why}");
    assert_eq!(out.status.code(), Some(1), "{why}");
    assert!(
        why.contains("(500)") && why.contains(&cold) && why.contains("never"),
        "{why}"
    );
    let module = daemon.module("cold").unwrap();
    assert_eq!(module["status"], "failed", "{module}");

    // A container image named by a wasm module: a clear 500.
    let work = TempDir::new("oci-busybox");
    let image = images::busybox_image(
        &ImageConfig::cmd(&["true"]),
        Compression::Gzip,
        &work.join("busybox"),
        "v1",
    );
    registry.push(&image, "busybox");
    let busybox = registry.reference("busybox", "v1");
    let mut boxed = good.clone();
    modules(&mut boxed).insert("box".into(), from_registry(&busybox, json!({})));
    let out = daemon.deploy("box.json", &boxed);
    let why = text(&out);
    eprintln!("a container image as wasm:\n{why}");
    assert_eq!(out.status.code(), Some(1), "{why}");
    assert!(
        why.contains("(500)")
            && why.contains(&busybox)
            && why.contains("container image")
            && why.contains("\"type\": \"docker\""),
        "{why}"
    );
    let module = daemon.module("box").unwrap();
    assert_eq!(module["status"], "failed", "{module}");

    // Through all of it, the filter of the first deployment ran on.
    let filter = daemon.module("filter").unwrap();
    assert_eq!(
        (filter["status"].as_str(), &filter["lastStart"]),
        (Some("running"), &start),
        "{filter}"
    );
    alerts_flow(&daemon);
}

#[test]
fn push_refuses_what_is_not_a_component_and_reports_the_registry() {
    let registry = Registry::start();
    let work = TempDir::new("oci-push");
    let core = work.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let text_file = work.join("notes.txt");
    std::fs::write(&text_file, b"not wasm at all").unwrap();
    for (file, needle) in [(&core, "core WebAssembly module"), (&text_file, "\\0asm")] {
        let reference = registry.reference("refused", "1");
        let out = push(file, &reference, registry.credentials());
        let why = text(&out);
        eprintln!("push {}: {why}", file.display());
        assert_eq!(out.status.code(), Some(2), "{why}");
        assert!(
            why.contains("not a WebAssembly component") && why.contains(needle),
            "{why}"
        );
    }
    // Nothing reached the registry.
    assert_eq!(registry.manifest("refused", "1").status, 404);

    // A wrong password: the registry's 401, exit 1.
    let out = push(
        &verge_tests::guest("filter"),
        &registry.reference("filter", "1"),
        Some((registry.username(), "wrong")),
    );
    let why = text(&out);
    eprintln!("push with a wrong password: {why}");
    assert_eq!(out.status.code(), Some(1), "{why}");
    assert!(
        why.contains("401") && why.contains("UNAUTHORIZED: authentication required"),
        "{why}"
    );
    assert_eq!(registry.manifest("filter", "1").status, 404);
}
