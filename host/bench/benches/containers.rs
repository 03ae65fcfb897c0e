//! Container modules, deploy → running: `cargo bench -p verge-bench --bench containers`.
//!
//! A real `verge run` daemon (the test kit's dev build) whose `[containerd]` is the kit's private
//! containerd 1.6 + runc, and the kit's private registry (docker-registry, htpasswd) on loopback.
//! Images are built by the kit: busybox (1 MB gzipped, one layer) running a shell that traps
//! SIGTERM and sleeps, and the Python + azure-iot-device image (17.6 MB gzipped, two layers)
//! running `python3 -c 'import time; time.sleep(1e9)'`.
//!
//! The clock runs from just before `verge deploy FILE` starts until it returns, which it does
//! once the agent applied the deployment: the module's image pulled if needed, its container
//! created and its task started (status `running`, checked with `verge list` after each run).
//! Deployments alternate between an empty one (removing the module) and one with a module of a
//! new name, so every measured deployment creates a container:
//! - `present`: the image is in containerd (pulled by a first, unmeasured deployment);
//! - `pull`: the image was removed from containerd before (`ctr images rm --sync`, which also
//!   collects its content and snapshots), so the deployment pulls, unpacks and runs it.
//!
//! The peer, in the same run and on the same images: containerd's own client, `ctr run -d`
//! (create + start; the image present), and `ctr images pull` followed by `ctr run -d` (the
//! image removed before). `verge deploy` includes a CLI process start and the management API;
//! `ctr` includes its own process start.
//!
//! `VERGE_BENCH_CONTAINER_RUNS` (default 8) measured deployments per case. Figures go to
//! `target/bench/containers.json`. Needs root and `tests/setup --containers --clients`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use verge_bench::machine::Machine;
use verge_bench::report::write_json;
use verge_tests::containerd::Containerd as Rig;
use verge_tests::daemon::{Daemon, TEST_CONFIG, deployment};
use verge_tests::images::{self, Compression, ImageConfig, OciLayout, TempDir};
use verge_tests::registry::Registry;

struct Bench {
    rig: Rig,
    registry: Registry,
    daemon: Daemon,
    /// Holds the images' layouts and the daemon's run directory until the end.
    _work: TempDir,
    next: usize,
}

impl Bench {
    fn manifest(&self, module: Option<(&str, &str)>) -> Value {
        let modules = match module {
            None => json!({}),
            Some((name, image)) => json!({ name: {
                "version": "1.0", "type": "docker", "status": "running",
                "restartPolicy": "always",
                "settings": { "image": image, "createOptions": "{}" }
            }}),
        };
        let mut manifest = deployment(modules, json!({}), json!({}));
        manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"] = json!({ "rig": {
            "address": self.registry.host(),
            "username": self.registry.username(),
            "password": self.registry.password(),
        }});
        manifest
    }

    /// `verge deploy` of `manifest`: how long it took; panics unless it succeeded.
    fn deploy(&self, manifest: &Value) -> Duration {
        let begun = Instant::now();
        let out = self.daemon.deploy("bench.json", manifest);
        let took = begun.elapsed();
        assert!(
            out.status.success(),
            "{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.daemon.log()
        );
        took
    }

    /// Removes the module, then deploys a new one on `image`; the time of the second deployment.
    fn deploy_new(&mut self, image: &str, pull: bool) -> Duration {
        self.deploy(&self.manifest(None));
        if pull {
            self.remove_image(image);
        }
        self.next += 1;
        let name = format!("m{}", self.next);
        let took = self.deploy(&self.manifest(Some((&name, image))));
        let module = self.daemon.module(&name).unwrap_or(Value::Null);
        assert_eq!(module["status"], "running", "{module}");
        took
    }

    fn remove_image(&self, image: &str) {
        // Nothing else holds the image: no container, the module removed.
        let _ = self
            .rig
            .ctr()
            .args(["images", "rm", "--sync", image])
            .output();
    }

    /// `ctr run -d` (pulling first when `pull`): its time, the container removed afterwards.
    fn ctr_run(&mut self, image: &str, pull: bool) -> Duration {
        if pull {
            self.remove_image(image);
        }
        self.next += 1;
        let id = format!("ctr{}", self.next);
        let begun = Instant::now();
        if pull {
            let user = format!("{}:{}", self.registry.username(), self.registry.password());
            run(self
                .rig
                .ctr()
                .args(["images", "pull", "--plain-http", "--user", &user, image]));
        }
        run(self.rig.ctr().args([
            "run",
            "-d",
            "--runc-root",
            &self.rig.runc_root().display().to_string(),
            image,
            &id,
        ]));
        let took = begun.elapsed();
        let _ = self
            .rig
            .ctr()
            .args(["tasks", "kill", "-s", "SIGKILL", &id])
            .output();
        for _ in 0..50 {
            let out = self.rig.ctr().args(["tasks", "delete", &id]).output();
            if out.is_ok_and(|o| o.status.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.rig.ctr().args(["containers", "delete", &id]).output();
        took
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run ctr");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// min / median / max in ms.
fn summary(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let n = samples.len();
    (ms(samples[0]), ms(samples[n / 2]), ms(samples[n - 1]))
}

/// The images' tag.
const TAG: &str = "bench";

fn push(registry: &Registry, layout: &OciLayout, name: &str) -> String {
    registry.push(layout, name);
    registry.reference(name, TAG)
}

fn main() {
    let runs: usize = std::env::var("VERGE_BENCH_CONTAINER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let rig = Rig::start();
    let registry = Registry::start();
    let work = TempDir::new("bench-containers");
    let config = format!("{TEST_CONFIG}{}", rig.daemon_config(&work.join("run")));
    let daemon = Daemon::start("bench-containers", &config, None);
    let sleeper = ImageConfig::cmd(&[
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 1; done",
    ]);
    let busybox = images::busybox_image(&sleeper, Compression::Gzip, &work.join("busybox"), TAG);
    let python = images::python_image(
        &ImageConfig::cmd(&["python3", "-c", "import time; time.sleep(1e9)"]),
        Compression::Gzip,
        &work.join("python"),
        TAG,
    );
    let busybox_ref = push(&registry, &busybox, "busybox");
    let python_ref = push(&registry, &python, "python");
    let mut bench = Bench {
        rig,
        registry,
        daemon,
        _work: work,
        next: 0,
    };

    let mut results = Vec::new();
    println!("deploy → running, {runs} runs each (min / median / max, ms)");
    for (label, image) in [("busybox", &busybox_ref), ("python", &python_ref)] {
        // Warm-up: the first pull and start of this image.
        bench.deploy_new(image, false);
        for (case, pull) in [("present", false), ("pull", true)] {
            let mut verge: Vec<Duration> =
                (0..runs).map(|_| bench.deploy_new(image, pull)).collect();
            bench.deploy(&bench.manifest(None));
            let mut ctr: Vec<Duration> = (0..runs).map(|_| bench.ctr_run(image, pull)).collect();
            let (v_min, v_med, v_max) = summary(&mut verge);
            let (c_min, c_med, c_max) = summary(&mut ctr);
            println!(
                "{label:8} {case:8} verge deploy {v_min:7.0} / {v_med:7.0} / {v_max:7.0}   \
                 ctr {c_min:7.0} / {c_med:7.0} / {c_max:7.0}"
            );
            results.push(json!({
                "image": label, "case": case,
                "verge_ms": { "min": v_min, "median": v_med, "max": v_max },
                "ctr_ms": { "min": c_min, "median": c_med, "max": c_max },
            }));
        }
        // Leave the image present for nothing else; the next image starts clean.
        bench.deploy(&bench.manifest(None));
    }
    let report = Machine::this().json(vec![
        ("runs", json!(runs)),
        ("results", Value::Array(results)),
    ]);
    write_json("containers", &report);
}
