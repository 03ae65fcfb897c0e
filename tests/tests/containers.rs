//! Container modules in the daemon, end to end: a private containerd (Debian's, with runc) and a
//! private registry (htpasswd) from the kit, images built by the tests and pushed there, and a
//! `verge` daemon whose `[containerd]` points at the rig. Deployments go through `verge deploy`
//! as a user's would.
//!
//! - An unmodified IoT Edge Python module (`tests/clients/edge_module.py`, the Azure IoT SDK's
//!   `IoTHubModuleClient.create_from_edge_environment()`) in a container: workload API, SAS
//!   token signed by the module's key, TLS to the hub trusting the workload trust bundle; its
//!   output reaches a wasm module through a route and the wasm module's output comes back to
//!   its input; its twin and a direct method work; a process outside its container is refused
//!   by its workload socket.
//! - A crash-looping container goes through backoff to `failed`; a wrong registry password and
//!   an unknown createOptions key are refused (500) with the reason; a container module removed
//!   from the deployment leaves no container, snapshot or lease behind.
//!
//! Needs root and `tests/setup --containers --clients`; fails, rather than skips, without them.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use verge_tests::containerd::Containerd as Rig;
use verge_tests::daemon::{Daemon, deployment, wasm_module};
use verge_tests::images::{self, Compression, ImageConfig, TempDir};
use verge_tests::mqtt::{config, loopback_ip};
use verge_tests::registry::Registry;

/// A rig, a registry and a daemon using them (MQTT over TLS on its own loopback address).
struct Setup {
    rig: Rig,
    registry: Registry,
    daemon: Daemon,
    work: TempDir,
}

impl Setup {
    fn new(tag: &str) -> Self {
        let rig = Rig::start();
        let registry = Registry::start();
        let work = TempDir::new(tag);
        let ip = loopback_ip();
        let config = format!("{}{}", config(&ip, 0), rig.daemon_config(&work.join("run")));
        let daemon = Daemon::start(tag, &config, None);
        Self {
            rig,
            registry,
            daemon,
            work,
        }
    }

    /// A manifest with the registry's credentials (`password` as given).
    fn manifest(&self, modules: Value, routes: Value, twins: Value, password: &str) -> Value {
        let mut manifest = deployment(modules, routes, twins);
        manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"] = json!({
            "rig": {
                "address": self.registry.host(),
                "username": self.registry.username(),
                "password": password,
            }
        });
        manifest
    }

    /// Deploys `manifest`; the `verge deploy` output (stdout and stderr) and whether it
    /// succeeded.
    fn deploy(&self, name: &str, manifest: &Value) -> (bool, String) {
        let out = self.daemon.deploy(name, manifest);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `ctr` list output in the rig's namespace (`containers`, `snapshots`, `leases`…).
    fn ctr_ls(&self, what: &[&str]) -> String {
        self.rig.ctr_ok(what)
    }

    fn module(&self, name: &str) -> Value {
        self.daemon.module(name).unwrap_or(Value::Null)
    }
}

/// A `docker` module definition.
fn container_module(image: &str, create_options: Value, extra: Value) -> Value {
    let mut module = json!({
        "version": "1.0",
        "type": "docker",
        "status": "running",
        "restartPolicy": "always",
        "settings": { "image": image, "createOptions": create_options.to_string() },
    });
    if let (Some(m), Value::Object(extra)) = (module.as_object_mut(), extra) {
        for (k, v) in extra {
            m.insert(k, v);
        }
    }
    module
}

fn reported(daemon: &Daemon, module: &str) -> Value {
    daemon.twin(module)["reported"].clone()
}

#[test]
fn an_iot_edge_python_module_in_a_container_talks_to_a_wasm_module_through_routes() {
    let setup = Setup::new("sdk");
    let image = images::python_image(
        &ImageConfig::cmd(&["python3", "-c", "print('no command given')"]),
        Compression::Gzip,
        &setup.work.join("python"),
        "3",
    );
    setup.registry.push(&image, "python");
    let reference = setup.registry.reference("python", "3");
    let app = setup.work.join("app");
    std::fs::create_dir_all(&app).unwrap();
    let script = verge_tests::workspace().join("tests/clients/edge_module.py");
    std::fs::copy(&script, app.join("module.py")).unwrap();

    let modules = json!({
        "pymod": container_module(
            &reference,
            json!({
                "Cmd": ["python3", "-u", "/app/module.py"],
                "HostConfig": { "Binds": [format!("{}:/app:ro", app.display())] }
            }),
            json!({}),
        ),
        "filter": wasm_module(&verge_tests::guest("filter"), &[], json!({})),
    });
    let routes = json!({
        "toWasm": "FROM /messages/modules/pymod/outputs/out INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")",
        "toContainer": "FROM /messages/modules/filter/outputs/output1 INTO BrokeredEndpoint(\"/modules/pymod/inputs/fromFilter\")",
    });
    let twins = json!({ "pymod": { "greeting": "hello" } });
    let manifest = setup.manifest(modules, routes, twins, setup.registry.password());
    let (ok, text) = setup.deploy("sdk.json", &manifest);
    assert!(ok, "{text}\n{}", setup.daemon.log());
    let daemon = &setup.daemon;
    assert_eq!(setup.module("pymod")["status"], "running");
    let hash =
        daemon.twin("$edgeAgent")["reported"]["modules"]["pymod"]["settings"]["imageHash"].clone();
    assert_eq!(hash, json!(image.manifest.digest), "imageHash");

    // The SDK connected through the workload API and read its desired properties.
    daemon.wait_until("the module's first report", Duration::from_secs(60), |d| {
        reported(d, "pymod")["started"] == true
    });
    assert_eq!(reported(daemon, "pymod")["desiredAtStart"], "hello");

    // Output → wasm filter (only readings above 25 pass) → back to the container's input.
    daemon.wait_until(
        "messages back from the wasm module",
        Duration::from_secs(30),
        |d| reported(d, "pymod")["inputCount"].as_u64().unwrap_or(0) >= 3,
    );
    let last = reported(daemon, "pymod")["lastInput"].clone();
    assert_eq!(last["input"], "fromFilter", "{last}");
    let body: Value = serde_json::from_str(last["body"].as_str().unwrap_or("{}")).unwrap();
    assert_eq!(body["machine"]["temperature"], 100, "filtered: {body}");

    // Desired patch and direct method.
    daemon.cli_ok(&["twin", "update", "pymod", r#"{"greeting": "again"}"#]);
    daemon.wait_until("the desired patch", Duration::from_secs(20), |d| {
        reported(d, "pymod")["lastPatch"]["greeting"] == "again"
    });
    let answer: Value =
        serde_json::from_str(&daemon.cli_ok(&["invoke", "pymod", "echo", r#"{"n": 7}"#])).unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["payload"]["echo"]["n"], 7, "{answer}");
    assert_eq!(answer["payload"]["module"], "pymod", "{answer}");

    // The module's stdout is in its log, after the pull's progress (Verge's lines, on stderr).
    let logs = daemon.cli(&["logs", "pymod"]);
    let stdout = String::from_utf8_lossy(&logs.stdout);
    assert!(stdout.contains("connected as pymod"), "{stdout}");
    let notes = String::from_utf8_lossy(&logs.stderr);
    assert!(
        notes.contains(&format!("pulling {reference}: 2 layer(s)"))
            && notes.contains("(100 %)")
            && notes.contains(&format!("pulled {reference}")),
        "{notes}"
    );

    // A process on the host (not in pymod's container) is refused by pymod's socket.
    let socket = setup.work.join("run/workload/pymod/workload.sock");
    assert!(socket.exists(), "{}", socket.display());
    let answer = http_over_unix(&socket, "GET /trust-bundle?api-version=2022-08-03");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    // Removed from the deployment: the container and its snapshot go, the socket closes.
    let modules = json!({ "filter": wasm_module(&verge_tests::guest("filter"), &[], json!({})) });
    let manifest = setup.manifest(modules, json!({}), json!({}), setup.registry.password());
    let (ok, text) = setup.deploy("removed.json", &manifest);
    assert!(ok, "{text}");
    assert_clean(&setup);
    assert!(!socket.exists(), "the workload socket of a removed module");
}

/// One HTTP/1.1 request over a Unix socket; the raw answer.
fn http_over_unix(socket: &Path, request_line: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "{request_line} HTTP/1.1\r\nHost: workload\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// No container, no rootfs snapshot of one, no lease is left in the rig's namespace.
fn assert_clean(setup: &Setup) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let containers = setup.ctr_ls(&["containers", "ls", "-q"]);
        let leases = setup.ctr_ls(&["leases", "ls", "-q"]);
        let tasks = setup.ctr_ls(&["tasks", "ls", "-q"]);
        // Image layers are committed snapshots named by chain ID (sha256:…); a container's
        // rootfs is an active snapshot keyed by the container id.
        let snapshots = setup.ctr_ls(&["snapshots", "ls"]);
        let active: Vec<&str> = snapshots
            .lines()
            .skip(1)
            .filter(|l| l.contains("Active"))
            .collect();
        let clean = containers.trim().is_empty()
            && leases.trim().is_empty()
            && tasks.trim().is_empty()
            && active.is_empty();
        if clean {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: containers {containers:?} tasks {tasks:?} leases {leases:?} snapshots {active:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn crash_loops_bad_credentials_and_bad_create_options_are_reported_and_leave_nothing_behind() {
    let setup = Setup::new("failing");
    let crash = images::busybox_image(
        &ImageConfig::cmd(&["sh", "-c", "echo crashing; exit 3"]),
        Compression::Gzip,
        &setup.work.join("crash"),
        "v1",
    );
    setup.registry.push(&crash, "crash");
    let crash_ref = setup.registry.reference("crash", "v1");
    let steady = images::busybox_image(
        &ImageConfig::cmd(&[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 1; done",
        ]),
        Compression::Gzip,
        &setup.work.join("steady"),
        "v1",
    );
    setup.registry.push(&steady, "steady");
    let steady_ref = setup.registry.reference("steady", "v1");

    // Wrong password: 500 with the registry's words; nothing runs, nothing is pulled.
    let modules = json!({ "box": container_module(&steady_ref, json!({}), json!({})) });
    let manifest = setup.manifest(modules.clone(), json!({}), json!({}), "wrong-password");
    let (ok, text) = setup.deploy("wrong.json", &manifest);
    assert!(!ok && text.contains("(500)"), "{text}");
    let description = setup.module("box")["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        description.contains("401") || description.to_lowercase().contains("unauthorized"),
        "{description}"
    );
    assert!(
        setup.daemon.twin("$edgeAgent")["reported"]["lastDesiredStatus"]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("box"),
        "the deployment's status names the module"
    );

    // The right password: it runs (the failed definition is tried again with the new
    // credentials).
    let manifest = setup.manifest(modules, json!({}), json!({}), setup.registry.password());
    let (ok, text) = setup.deploy("right.json", &manifest);
    assert!(ok, "{text}\n{}", setup.daemon.log());
    assert_eq!(setup.module("box")["status"], "running");

    // An unknown createOptions key: refused by name, the running module left alone.
    let mut modules = json!({
        "box": container_module(&steady_ref, json!({}), json!({})),
        "ipc": container_module(&steady_ref, json!({"HostConfig": {"IpcMode": "host"}}), json!({})),
    });
    let manifest = setup.manifest(
        modules.clone(),
        json!({}),
        json!({}),
        setup.registry.password(),
    );
    let (ok, text) = setup.deploy("ipc.json", &manifest);
    assert!(!ok && text.contains("(500)"), "{text}");
    assert!(text.contains("HostConfig.IpcMode"), "{text}");
    assert_eq!(setup.module("box")["status"], "running");

    // A crash loop: backoff per the restart policy, then failed after MaxRestartCount; the
    // other module and the daemon carry on.
    modules.as_object_mut().unwrap().remove("ipc");
    modules["crash"] = container_module(&crash_ref, json!({}), json!({}));
    let mut manifest = setup.manifest(modules, json!({}), json!({}), setup.registry.password());
    manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["systemModules"]["edgeAgent"]
        ["env"] = json!({ "MaxRestartCount": { "value": "2" } });
    let (ok, text) = setup.deploy("crash.json", &manifest);
    assert!(ok, "{text}");
    let mut saw_backoff = false;
    setup.daemon.wait_until(
        "the crash loop to end in failed",
        Duration::from_secs(60),
        |d| {
            let m = d.module("crash").unwrap_or(Value::Null);
            saw_backoff |= m["status"] == "backoff";
            m["status"] == "failed" && m["restartCount"] == 2
        },
    );
    assert!(saw_backoff, "backoff between the restarts");
    let crash = setup.module("crash");
    assert_eq!(crash["exitCode"], 3, "{crash}");
    let agent = setup.daemon.twin("$edgeAgent")["reported"].clone();
    assert_eq!(agent["modules"]["crash"]["runtimeStatus"], "failed");
    assert_eq!(agent["modules"]["crash"]["exitCode"], 3);
    assert_eq!(setup.module("box")["status"], "running");
    let logs = setup.daemon.cli_ok(&["logs", "crash"]);
    assert_eq!(logs.matches("crashing").count(), 3, "{logs}");

    // Everything removed: no container, snapshot or lease is left.
    let manifest = setup.manifest(json!({}), json!({}), json!({}), setup.registry.password());
    let (ok, text) = setup.deploy("empty.json", &manifest);
    assert!(ok, "{text}");
    assert_clean(&setup);
}

#[test]
fn a_restarted_daemon_adopts_the_running_container_instead_of_starting_another() {
    let mut setup = Setup::new("adopt");
    let ticker = images::busybox_image(
        &ImageConfig::cmd(&[
            "sh",
            "-c",
            "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done",
        ]),
        Compression::Gzip,
        &setup.work.join("ticker"),
        "v1",
    );
    setup.registry.push(&ticker, "ticker");
    let reference = setup.registry.reference("ticker", "v1");
    let modules = json!({ "tick": container_module(&reference, json!({}), json!({})) });
    let manifest = setup.manifest(modules, json!({}), json!({}), setup.registry.password());
    let (ok, text) = setup.deploy("tick.json", &manifest);
    assert!(ok, "{text}");
    setup
        .daemon
        .wait_until("two ticks", Duration::from_secs(20), |d| {
            d.cli_ok(&["logs", "tick"]).contains("tick 2")
        });
    let tasks = setup.ctr_ls(&["tasks", "ls", "-q"]);
    let ids: Vec<&str> = tasks.split_whitespace().collect();
    assert_eq!(ids.len(), 1, "{tasks}");
    let id = ids[0].to_owned();

    // The daemon dies; its container runs on (its shim keeps it).
    setup.daemon.kill();
    std::thread::sleep(Duration::from_secs(2));
    let tasks = setup.ctr_ls(&["tasks", "ls"]);
    assert!(tasks.contains(&id) && tasks.contains("RUNNING"), "{tasks}");

    // Started again: the same container is adopted, not a second one started, and its output
    // flows into the module's log again.
    setup.daemon.start_again();
    setup
        .daemon
        .wait_until("the module running again", Duration::from_secs(30), |d| {
            d.module("tick").is_some_and(|m| m["status"] == "running")
        });
    let tasks = setup.ctr_ls(&["tasks", "ls", "-q"]);
    assert_eq!(tasks.split_whitespace().collect::<Vec<_>>(), [id.as_str()]);
    // Verge's own lines are on stderr, the module's stdout on stdout (as `docker logs`).
    let logs = setup.daemon.cli(&["logs", "tick"]);
    let runtime_lines = String::from_utf8_lossy(&logs.stderr);
    assert!(
        runtime_lines.contains(&format!("adopted container {id}")),
        "{runtime_lines}"
    );
    setup
        .daemon
        .wait_until("ticks after the restart", Duration::from_secs(20), |d| {
            d.cli_ok(&["logs", "tick"]).matches("tick ").count() >= 2
        });

    // A new definition replaces the adopted container.
    let modules =
        json!({ "tick": container_module(&reference, json!({}), json!({"version": "2.0"})) });
    let manifest = setup.manifest(modules, json!({}), json!({}), setup.registry.password());
    let (ok, text) = setup.deploy("tick2.json", &manifest);
    assert!(ok, "{text}");
    let tasks = setup.ctr_ls(&["tasks", "ls", "-q"]);
    let ids: Vec<&str> = tasks.split_whitespace().collect();
    assert_eq!(ids.len(), 1, "{tasks}");
    assert_ne!(ids[0], id, "a new container for the new definition");
}
