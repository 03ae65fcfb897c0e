//! Container modules' lifecycle against the real rig: a private containerd 1.6 with runc and a
//! private registry (htpasswd), busybox images built by the kit. Each test has its own
//! containerd, registry and namespace (runc's state and cgroups are global per namespace and
//! container id). Needs root and `tests/setup --containers`; fails, rather than skips, without
//! them. `--nocapture` shows the times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use verge_hub::{Hub, HubOptions, Identity, QueueLimits};
use verge_runtime::{
    Exit, ModuleContext, ModuleHandle, ModuleLog, ModuleRuntime, ModuleSpec, RuntimeError, Stream,
};
use verge_runtime_containerd::{
    ContainerOptions, ContainerRuntime, Containerd, Credentials, PullPolicy,
};
use verge_tests::containerd::Containerd as Rig;
use verge_tests::images::{self, Compression, ImageConfig, TempDir};
use verge_tests::registry::Registry;
use verge_twin::TwinStore;

const DEVICE: &str = "dev1";

/// A rig, a registry, and a runtime on them.
struct Setup {
    rig: Rig,
    registry: Registry,
    runtime: ContainerRuntime,
    work: TempDir,
    hub: Arc<Hub>,
    twins: Arc<TwinStore>,
}

impl Setup {
    async fn new() -> Self {
        let rig = Rig::start();
        let registry = Registry::start();
        let work = TempDir::new("lifecycle");
        let containerd = Containerd::connect(rig.socket(), rig.namespace())
            .await
            .expect("connect to the rig's containerd")
            .with_snapshotter(rig.snapshotter());
        let runtime = ContainerRuntime::new(
            containerd,
            ContainerOptions {
                fifo_dir: work.join("fifo"),
                runc_root: Some(rig.runc_root()),
                ..ContainerOptions::default()
            },
        );
        runtime.set_credentials(vec![Credentials {
            address: registry.host(),
            username: registry.username().to_owned(),
            password: registry.password().to_owned(),
        }]);
        let hub = Hub::new(HubOptions {
            device_id: DEVICE.into(),
            queue_limits: QueueLimits::default(),
            resident_per_queue: usize::MAX,
        });
        Self {
            rig,
            registry,
            runtime,
            work,
            hub,
            twins: Arc::new(TwinStore::new()),
        }
    }

    /// Builds a busybox image with `config`, pushes it as `name:v1`; its reference.
    fn image(&self, name: &str, config: &ImageConfig) -> String {
        let layout = images::busybox_image(config, Compression::Gzip, &self.work.join(name), "v1");
        self.registry.push(&layout, name);
        self.registry.reference(name, "v1")
    }

    fn spec(name: &str, image: &str, env: &[(&str, &str)]) -> ModuleSpec {
        ModuleSpec {
            name: name.into(),
            kind: "docker".into(),
            image: image.into(),
            version: "1".into(),
            create_options: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..ModuleSpec::default()
        }
    }

    /// Prepares and starts `spec`; its handle, log, and how long start took.
    async fn start(&self, spec: &ModuleSpec) -> (ModuleHandle, ModuleLog, Duration) {
        self.runtime.prepare(spec).await.expect("prepare");
        let log = ModuleLog::new(1 << 20);
        let context = ModuleContext {
            identity: Identity::module(DEVICE, &spec.name),
            generation_id: "gen1".into(),
            iothub_hostname: "hub.example".into(),
            gateway_hostname: "edge.example".into(),
            hub: Arc::clone(&self.hub),
            twins: Arc::clone(&self.twins),
            log: log.clone(),
        };
        let begun = Instant::now();
        let handle = self.runtime.start(spec, context).await.expect("start");
        (handle, log, begun.elapsed())
    }

    /// Asserts that no container, task, active snapshot or lease is left.
    fn assert_clean(&self) {
        let containers = self.rig.ctr_ok(&["containers", "ls", "-q"]);
        assert!(containers.trim().is_empty(), "containers: {containers}");
        let tasks = self.rig.ctr_ok(&["tasks", "ls", "-q"]);
        assert!(tasks.trim().is_empty(), "tasks: {tasks}");
        let snapshots =
            self.rig
                .ctr_ok(&["snapshots", "--snapshotter", self.rig.snapshotter(), "ls"]);
        assert!(
            !snapshots.contains("Active"),
            "an active snapshot is left: {snapshots}"
        );
        let leases = self.rig.ctr_ok(&["leases", "ls", "-q"]);
        assert!(leases.trim().is_empty(), "leases: {leases}");
        let fifos: Vec<_> = std::fs::read_dir(self.work.join("fifo"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(fifos.is_empty(), "FIFOs left: {fifos:?}");
    }
}

fn lines(log: &ModuleLog, stream: Stream) -> Vec<String> {
    log.tail(None)
        .into_iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.text)
        .collect()
}

async fn exited_within(handle: &mut ModuleHandle, limit: Duration) -> Exit {
    tokio::time::timeout(limit, handle.exited())
        .await
        .expect("the container exits in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_stdout_and_stderr_reach_the_agent_and_nothing_is_left() {
    let setup = Setup::new().await;
    let image = setup.image(
        "exit3",
        &ImageConfig::cmd(&["sh", "-c", "echo hello; echo oops >&2; exit 3"]),
    );
    let spec = Setup::spec("exiter", &image, &[]);
    let prepared = setup.runtime.prepare(&spec).await.expect("prepare pulls");
    assert!(
        prepared
            .image_hash
            .as_deref()
            .is_some_and(|h| h.starts_with("sha256:"))
    );
    let (mut handle, log, start) = setup.start(&spec).await;
    let begun = Instant::now();
    let exit = exited_within(&mut handle, Duration::from_secs(20)).await;
    eprintln!(
        "start (create → running) {start:?}; exit reported {:?} later",
        begun.elapsed()
    );
    assert_eq!(exit.code, 3, "{exit:?}");
    assert!(exit.description.contains("code 3"), "{exit:?}");
    assert_eq!(
        lines(&log, Stream::Stdout),
        ["hello"],
        "{:?}",
        log.tail(None)
    );
    assert_eq!(
        lines(&log, Stream::Stderr),
        ["oops"],
        "{:?}",
        log.tail(None)
    );
    setup.assert_clean();

    // The image stays; a second start runs again.
    let (mut handle, log, start) = setup.start(&spec).await;
    let exit = exited_within(&mut handle, Duration::from_secs(20)).await;
    eprintln!("second start {start:?}");
    assert_eq!(exit.code, 3);
    assert_eq!(lines(&log, Stream::Stdout), ["hello"]);
    setup.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_modules_environment_and_the_images_user_reach_the_process() {
    let setup = Setup::new().await;
    let config = ImageConfig {
        entrypoint: vec!["sh".into(), "-c".into()],
        cmd: vec!["echo \"$GREETING $IMAGE_VAR $IOTEDGE_MODULEID\"; id -u; id -g; pwd".into()],
        env: vec!["IMAGE_VAR=fromimage".into(), "GREETING=overridden".into()],
        working_dir: "/tmp".into(),
        user: "1000:1001".into(),
        ..ImageConfig::default()
    };
    let image = setup.image("envy", &config);
    let spec = Setup::spec("envy", &image, &[("GREETING", "hi there")]);
    let (mut handle, log, _) = setup.start(&spec).await;
    let exit = exited_within(&mut handle, Duration::from_secs(20)).await;
    assert_eq!(exit.code, 0, "{exit:?} {:?}", log.tail(None));
    assert_eq!(
        lines(&log, Stream::Stdout),
        ["hi there fromimage envy", "1000", "1001", "/tmp"],
        "{:?}",
        log.tail(None)
    );
    setup.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_sigterm_then_sigkill_after_the_grace_period() {
    let setup = Setup::new().await;
    // A process that handles SIGTERM ends at once (and what it prints then is logged).
    let handles = setup.image(
        "handles",
        &ImageConfig::cmd(&[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 0' TERM; echo ready; sleep 1000 & wait",
        ]),
    );
    // One that ignores it is killed after the grace period.
    let ignores = setup.image(
        "ignores",
        &ImageConfig::cmd(&["sh", "-c", "trap '' TERM; echo ready; sleep 1000 & wait"]),
    );
    // A plain `sleep` as the container's pid 1: the kernel drops signals pid 1 has no handler
    // for, so SIGTERM does nothing and SIGKILL ends it.
    let sleeps = setup.image("sleeps", &ImageConfig::cmd(&["sleep", "1000"]));
    let grace = Duration::from_secs(2);

    let mut started = Vec::new();
    for (name, image) in [
        ("handles", &handles),
        ("ignores", &ignores),
        ("sleeps", &sleeps),
    ] {
        let (handle, log, start) = setup.start(&Setup::spec(name, image, &[])).await;
        eprintln!("{name}: start {start:?}");
        started.push((name, handle, log));
    }
    // Wait until the shells are past their trap.
    for (name, _, log) in &started[..2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lines(log, Stream::Stdout).contains(&"ready".to_owned()) {
            assert!(Instant::now() < deadline, "{name} never said ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (name, mut handle, log) in started {
        let begun = Instant::now();
        let exit = tokio::time::timeout(Duration::from_secs(15), handle.stop(grace))
            .await
            .expect("stopped in time");
        let took = begun.elapsed();
        eprintln!("{name}: stop took {took:?}: {}", exit.description);
        match name {
            "handles" => {
                assert_eq!(exit.code, 0, "{exit:?}");
                assert!(took < Duration::from_millis(1500), "{took:?}");
                assert!(
                    lines(&log, Stream::Stdout).contains(&"got TERM".to_owned()),
                    "{:?}",
                    log.tail(None)
                );
            }
            _ => {
                assert_eq!(exit.code, 137, "{exit:?}");
                assert!(exit.description.contains("SIGKILL"), "{exit:?}");
                assert!(took >= grace, "{took:?}");
                assert!(took < grace + Duration::from_secs(3), "{took:?}");
            }
        }
    }
    setup.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_policy_never_and_create_options_are_refused_clearly() {
    let setup = Setup::new().await;
    let image = setup.image("present", &ImageConfig::cmd(&["true"]));
    let absent = setup.registry.reference("absent", "v1");
    let strict = ModuleSpec {
        pull_policy: PullPolicy::Never,
        ..Setup::spec("strict", &absent, &[])
    };
    let error = setup
        .runtime
        .prepare(&strict)
        .await
        .expect_err("an absent image with policy never");
    let RuntimeError::NotFound(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.contains(&absent) && message.contains("never"),
        "{message}"
    );
    // Nothing was pulled.
    assert!(!setup.rig.ctr_ok(&["images", "ls", "-q"]).contains(&absent));

    // Once the image is there (pulled for another module), `never` accepts it.
    setup
        .runtime
        .prepare(&Setup::spec("other", &image, &[]))
        .await
        .expect("on-create pulls");
    setup
        .runtime
        .prepare(&ModuleSpec {
            pull_policy: PullPolicy::Never,
            ..Setup::spec("strict", &image, &[])
        })
        .await
        .expect("present image with policy never");

    let mut spec = Setup::spec("opts", &image, &[]);
    spec.create_options = Some(serde_json::json!({"HostConfig": {"PidMode": "host"}}));
    let error = setup.runtime.prepare(&spec).await.expect_err("refused");
    assert!(
        matches!(&error, RuntimeError::Invalid(m) if m.contains("HostConfig")),
        "{error:?}"
    );
    setup.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_name_is_resolved_from_the_images_passwd_in_an_upper_layer() {
    let setup = Setup::new().await;
    let base = TempDir::new("base");
    images::busybox_rootfs(base.path());
    // The second layer replaces /etc/passwd and /etc/group.
    let top = TempDir::new("top");
    std::fs::create_dir_all(top.join("etc")).expect("etc");
    std::fs::write(
        top.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345::/tmp:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(
        top.join("etc/group"),
        "root:x:0:\napp:x:2345:\nextra:x:3456:app\n",
    )
    .expect("group");
    let config = ImageConfig {
        cmd: vec!["sh".into(), "-c".into(), "id -u; id -g; id -G".into()],
        user: "app".into(),
        ..ImageConfig::default()
    };
    let layout = images::build_image(
        &[base.path(), top.path()],
        &config,
        Compression::Gzip,
        &setup.work.join("named"),
        "v1",
    );
    setup.registry.push(&layout, "named");
    let image = setup.registry.reference("named", "v1");
    let (mut handle, log, _) = setup.start(&Setup::spec("named", &image, &[])).await;
    let exit = exited_within(&mut handle, Duration::from_secs(20)).await;
    assert_eq!(exit.code, 0, "{exit:?} {:?}", log.tail(None));
    assert_eq!(
        lines(&log, Stream::Stdout),
        ["1234", "2345", "2345 3456"],
        "{:?}",
        log.tail(None)
    );
    setup.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_leaves_nothing_behind() {
    let setup = Setup::new().await;
    let image = setup.image("broken", &ImageConfig::cmd(&["/no/such/binary"]));
    let spec = Setup::spec("broken", &image, &[]);
    setup.runtime.prepare(&spec).await.expect("prepare");
    let context = ModuleContext {
        identity: Identity::module(DEVICE, "broken"),
        generation_id: "gen1".into(),
        iothub_hostname: "hub.example".into(),
        gateway_hostname: "edge.example".into(),
        hub: Arc::clone(&setup.hub),
        twins: Arc::clone(&setup.twins),
        log: ModuleLog::new(1 << 20),
    };
    let error = setup
        .runtime
        .start(&spec, context)
        .await
        .expect_err("no such binary");
    eprintln!("start error: {error}");
    assert!(
        error.to_string().contains("/no/such/binary"),
        "the error names the binary: {error}"
    );
    setup.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_share_the_hosts_network() {
    let setup = Setup::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let port = listener.local_addr().expect("address").port();
    let image = setup.image(
        "net",
        &ImageConfig::cmd(&[
            "sh",
            "-c",
            &format!("echo ping | nc 127.0.0.1 {port}; test -s /etc/resolv.conf && echo dns"),
        ]),
    );
    let (mut handle, log, _) = setup.start(&Setup::spec("net", &image, &[])).await;
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
        .await
        .expect("the container connects to the host's loopback")
        .expect("accept");
    let mut received = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut socket, &mut received)
        .await
        .expect("read");
    assert_eq!(received, "ping\n");
    // busybox nc waits for the other side to close.
    drop(socket);
    let exit = exited_within(&mut handle, Duration::from_secs(20)).await;
    assert_eq!(exit.code, 0, "{exit:?} {:?}", log.tail(None));
    if std::path::Path::new("/etc/resolv.conf").is_file() {
        assert_eq!(lines(&log, Stream::Stdout), ["dns"], "{:?}", log.tail(None));
    }
    setup.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_options_env_cmd_working_dir_binds_memory_and_labels_take_effect() {
    let setup = Setup::new().await;
    let config = ImageConfig {
        env: vec!["IMAGE_VAR=image".into(), "FROM_OPTS=image".into()],
        ..ImageConfig::cmd(&["sh", "-c", "echo the image's command; exit 9"])
    };
    let image = setup.image("opts", &config);
    let shared = TempDir::new("bind");
    let mut spec = Setup::spec("opts", &image, &[("GREETING", "from the module")]);
    spec.create_options = Some(serde_json::json!({
        "Env": ["FROM_OPTS=createOptions", "GREETING=createOptions"],
        "Cmd": [
            "sh",
            "-c",
            "echo \"$IMAGE_VAR $FROM_OPTS $GREETING\"; pwd; \
             cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
             echo written by the container > /data/out.txt; \
             while [ ! -e /data/go ]; do sleep 0.05; done",
        ],
        "WorkingDir": "/tmp",
        "Labels": {"app": "opts-test"},
        "HostConfig": {
            "Binds": [format!("{}:/data", shared.path().display())],
            "Memory": 67_108_864,
            "NetworkMode": "azure-iot-edge",
        },
    }));
    let (mut handle, log, _) = setup.start(&spec).await;

    // The container writes into the host directory; meanwhile it runs, with its label and its
    // cgroup's memory limit as seen from the host.
    let out = shared.join("out.txt");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.is_file() {
        assert!(
            Instant::now() < deadline,
            "no out.txt: {:?}",
            log.tail(None)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = setup
        .rig
        .ctr_ok(&["containers", "ls", "-q"])
        .trim()
        .to_owned();
    assert!(id.starts_with("opts-"), "{id}");
    let info = setup.rig.ctr_ok(&["containers", "info", &id]);
    assert!(info.contains("\"app\": \"opts-test\""), "{info}");
    assert!(info.contains("\"verge.module\": \"opts\""), "{info}");
    let host_limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/{}/{id}/memory.limit_in_bytes",
        setup.rig.namespace()
    ))
    .expect("the container's memory cgroup on the host");
    assert_eq!(host_limit.trim(), "67108864");
    std::fs::write(shared.join("go"), "").expect("go");

    let exit = exited_within(&mut handle, Duration::from_secs(20)).await;
    assert_eq!(exit.code, 0, "{exit:?} {:?}", log.tail(None));
    assert_eq!(
        std::fs::read_to_string(&out).expect("out.txt"),
        "written by the container\n"
    );
    // Image env < createOptions Env < the module's env; Cmd and WorkingDir replaced; the limit
    // is visible inside.
    assert_eq!(
        lines(&log, Stream::Stdout),
        ["image createOptions from the module", "/tmp", "67108864"],
        "{:?}",
        log.tail(None)
    );
    // What takes no effect is said in the module's log.
    let runtime = lines(&log, Stream::Runtime).join("\n");
    assert!(
        runtime.contains(
            "createOptions.HostConfig.NetworkMode azure-iot-edge: Verge runs containers on the host network"
        ),
        "{runtime}"
    );
    setup.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_create_option_is_refused_by_name() {
    let setup = Setup::new().await;
    let image = setup.image("ipc", &ImageConfig::cmd(&["true"]));
    let mut spec = Setup::spec("ipc", &image, &[]);
    spec.create_options = Some(serde_json::json!({
        "Env": ["A=1"],
        "HostConfig": {"Memory": 67_108_864, "IpcMode": "host"},
    }));
    let error = setup.runtime.prepare(&spec).await.expect_err("refused");
    let RuntimeError::Invalid(message) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(
        message,
        "module ipc: createOptions.HostConfig.IpcMode is not supported by Verge"
    );
    let context = ModuleContext {
        identity: Identity::module(DEVICE, "ipc"),
        generation_id: "gen1".into(),
        iothub_hostname: "hub.example".into(),
        gateway_hostname: "edge.example".into(),
        hub: Arc::clone(&setup.hub),
        twins: Arc::clone(&setup.twins),
        log: ModuleLog::new(1 << 20),
    };
    let error = setup
        .runtime
        .start(&spec, context)
        .await
        .expect_err("start refuses too");
    assert!(error.to_string().contains("HostConfig.IpcMode"), "{error}");
    setup.assert_clean();
}
