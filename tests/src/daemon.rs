//! A real `verge` daemon for end-to-end tests, driven through the CLI as a user would.
//!
//! [`Daemon::start`] runs `verge run` with its own data directory and configuration, waits for
//! its management socket, and stops it (SIGTERM, then SIGKILL) when dropped. [`Daemon::cli`] runs
//! `verge` commands against it. [`deployment`] and [`wasm_module`] build manifests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::workspace;

/// The `verge` binary, built once per test run in the profile the tests run in.
pub fn verge_bin() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace())
            .args(["build", "--quiet", "-p", "verge", "--bin", "verge"])
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(crate::target_dir().join("debug").join("verge"))
    });
    match built {
        Ok(path) => path.clone(),
        Err(e) => panic!("building verge failed:\n{e}"),
    }
}

/// A running daemon.
pub struct Daemon {
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    env: Vec<(String, std::ffi::OsString)>,
}

/// Configuration for tests: no MQTT/HTTPS ports, quick backoff, short deadlines. `[agent]` comes
/// last so that tests may append keys to it.
pub const TEST_CONFIG: &str = "\
device_id = \"test-device\"
[mqtt]
tls_port = 0
https_port = 0
[metrics]
port = 0
[agent]
cool_off_time_unit_secs = 1
stop_grace_secs = 2
deploy_timeout_secs = 60
";

impl Daemon {
    /// Start a daemon with `config` (TOML) and, if given, a startup deployment.
    pub fn start(tag: &str, config: &str, deployment: Option<&Path>) -> Self {
        Self::start_with_env(tag, config, deployment, &[])
    }

    /// [`Daemon::start`] with extra environment variables for the daemon (e.g. `SOFTHSM2_CONF`).
    pub fn start_with_env(
        tag: &str,
        config: &str,
        deployment: Option<&Path>,
        env: &[(&str, &Path)],
    ) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "verge-e2e-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ (std::ptr::from_ref(&tag) as usize as u128)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config_path = dir.join("verge.toml");
        std::fs::write(&config_path, config).expect("config");
        let data = dir.join("data");
        let mut daemon = Self {
            dir,
            config: config_path,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_os_str().to_owned()))
                .collect(),
        };
        daemon.spawn(&data, deployment);
        daemon
    }

    fn spawn(&mut self, data: &Path, deployment: Option<&Path>) {
        let log = std::fs::File::create(self.dir.join("daemon.log")).expect("log file");
        let mut cmd = Command::new(verge_bin());
        cmd.arg("run")
            .arg("-d")
            .arg(data)
            .arg("-c")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(d) = deployment {
            cmd.arg("--deployment").arg(d);
        }
        self.child = Some(cmd.spawn().expect("spawn verge run"));
        let socket = data.join("mgmt.sock");
        let started = Instant::now();
        while !(socket.exists() && self.cli(&["list", "--json"]).status.success()) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("verge run exited ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "daemon did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The test's directory (holds `data/`, the configuration and `daemon.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The daemon's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Run `verge ARGS` against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(verge_bin())
            .arg("-d")
            .arg(self.data_dir())
            .args(args)
            .output()
            .expect("run verge")
    }

    /// Run `verge ARGS`, which must succeed; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "verge {args:?} failed ({}):\n{}{}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `verge list --json`.
    pub fn list(&self) -> Value {
        serde_json::from_str(&self.cli_ok(&["list", "--json"])).expect("list JSON")
    }

    /// A module's row of `verge list`.
    pub fn module(&self, name: &str) -> Option<Value> {
        self.list()["modules"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
    }

    /// `verge twin show ID`.
    pub fn twin(&self, id: &str) -> Value {
        serde_json::from_str(&self.cli_ok(&["twin", "show", id])).expect("twin JSON")
    }

    /// Wait until `check` holds, polling; panics with the daemon's log after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Self) -> bool) {
        let started = Instant::now();
        while !check(self) {
            assert!(
                started.elapsed() < timeout,
                "timed out waiting for {what}; verge list:\n{}\ndaemon log:\n{}",
                serde_json::to_string_pretty(&self.list()).unwrap_or_default(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `verge monitor` lines (JSON), up to `count` within `timeout` seconds.
    pub fn monitor(&self, count: usize, timeout: f64, queued: bool) -> Vec<Value> {
        let mut args = vec![
            "monitor".to_owned(),
            "--count".into(),
            count.to_string(),
            "--timeout".into(),
            timeout.to_string(),
        ];
        if queued {
            args.push("--queued".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.cli(&args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("monitor line is JSON"))
            .collect()
    }

    /// Write `manifest` into the test directory as `name` and deploy it; the command's output.
    pub fn deploy(&self, name: &str, manifest: &Value) -> Output {
        let path = self.write_manifest(name, manifest);
        self.cli(&["deploy", path.to_str().expect("utf-8 path")])
    }

    /// The same for a device below this one (`verge deploy FILE --device DEVICE`: its twins).
    pub fn deploy_to(&self, device: &str, name: &str, manifest: &Value) -> Output {
        let path = self.write_manifest(name, manifest);
        self.cli(&[
            "deploy",
            path.to_str().expect("utf-8 path"),
            "--device",
            device,
        ])
    }

    fn write_manifest(&self, name: &str, manifest: &Value) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(manifest).expect("manifest"),
        )
        .expect("write manifest");
        path
    }

    /// Stop with SIGTERM and wait; the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill with SIGKILL (no chance to clean up: a crash or a power cut for the process) and wait.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same data directory after [`Daemon::kill`] or [`Daemon::stop`].
    pub fn start_again(&mut self) {
        let data = self.data_dir();
        self.spawn(&data, None);
    }

    /// Stop and start again on the same data directory (no startup deployment: the saved one).
    pub fn restart(&mut self) {
        self.stop();
        let data = self.data_dir();
        self.spawn(&data, None);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A `wasm` module definition for a manifest.
pub fn wasm_module(component: &Path, env: &[(&str, Value)], fields: Value) -> Value {
    let env: Map<String, Value> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!({ "value": v })))
        .collect();
    let mut module = json!({
        "version": "1.0",
        "type": "wasm",
        "status": "running",
        "restartPolicy": "always",
        "env": env,
        "settings": { "image": component.display().to_string() },
    });
    if let (Some(m), Value::Object(extra)) = (module.as_object_mut(), fields) {
        for (k, v) in extra {
            m.insert(k, v);
        }
    }
    module
}

/// A complete deployment manifest: `modules` (id → definition), `routes` (name → route or
/// route object), `twins` (module id → desired properties).
pub fn deployment(modules: Value, routes: Value, twins: Value) -> Value {
    let mut content = json!({
        "$edgeAgent": { "properties.desired": {
            "schemaVersion": "1.1",
            "runtime": { "type": "docker", "settings": { "minDockerVersion": "v1.25" } },
            "systemModules": {
                "edgeAgent": { "type": "docker", "settings": { "image": "mcr.microsoft.com/azureiotedge-agent:1.5" } },
                "edgeHub": { "type": "docker", "status": "running", "restartPolicy": "always",
                             "settings": { "image": "mcr.microsoft.com/azureiotedge-hub:1.5" } }
            },
            "modules": modules
        }},
        "$edgeHub": { "properties.desired": {
            "schemaVersion": "1.1",
            "routes": routes,
            "storeAndForwardConfiguration": { "timeToLiveSecs": 7200 }
        }}
    });
    if let (Some(c), Value::Object(twins)) = (content.as_object_mut(), twins) {
        for (id, desired) in twins {
            c.insert(id, json!({ "properties.desired": desired }));
        }
    }
    json!({ "modulesContent": content })
}
