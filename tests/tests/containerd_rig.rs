//! The container test rig works end to end, without Verge: a private containerd (Debian's 1.6
//! with runc) pulls images built by the kit from a private registry (Debian's docker-registry,
//! htpasswd) on loopback and runs them; a wasm component pushed as a CNCF wasm OCI artifact
//! comes back unchanged. Needs root and `tests/setup --containers`; fails, rather than skips,
//! without them. Run with `--nocapture` to see the times.

use std::time::Instant;

use verge_tests::containerd::Containerd;
use verge_tests::images::{self, Compression, ImageConfig, TempDir, WasmComponentInfo, media_type};
use verge_tests::registry::Registry;

#[test]
fn containerd_pulls_from_the_authenticated_registry_and_runs_busybox() {
    let containerd = Containerd::start();
    eprintln!(
        "containerd answered in {:?}; snapshotter {}; namespace {}",
        containerd.startup(),
        containerd.snapshotter(),
        containerd.namespace()
    );
    let version = containerd.ctr_ok(&["version"]);
    assert!(version.contains("Server:"), "ctr version: {version}");

    let registry = Registry::start();
    eprintln!("registry answered in {:?}", registry.startup());
    let work = TempDir::new("rig");

    // One gzipped layer; the image's own Cmd and Env.
    let config = ImageConfig {
        cmd: vec!["sh".into(), "-c".into(), "echo \"$GREETING\"".into()],
        env: vec!["GREETING=hello from the image".into()],
        ..ImageConfig::default()
    };
    let begun = Instant::now();
    let image = images::busybox_image(&config, Compression::Gzip, &work.join("busybox"), "v1");
    eprintln!("built the busybox image in {:?}", begun.elapsed());
    let begun = Instant::now();
    let digest = registry.push(&image, "busybox");
    eprintln!("pushed it in {:?}", begun.elapsed());
    assert_eq!(digest, image.manifest.digest);

    let manifest = registry.manifest("busybox", "v1");
    assert_eq!(manifest.status, 200, "{manifest:?}");
    assert_eq!(manifest.digest(), Some(digest.as_str()));
    assert_eq!(manifest.content_type(), Some(media_type::MANIFEST));
    assert_eq!(
        manifest.json()["layers"][0]["mediaType"],
        media_type::LAYER_TAR_GZIP
    );

    let reference = registry.reference("busybox", "v1");
    let snapshotter = containerd.snapshotter().to_owned();
    let begun = Instant::now();
    ctr_pull(&containerd, &registry, &reference);
    eprintln!("ctr pulled and unpacked it in {:?}", begun.elapsed());
    let listed = containerd.ctr_ok(&["images", "ls"]);
    assert!(
        listed.contains(&reference) && listed.contains(&digest),
        "ctr images ls: {listed}"
    );
    let snapshots = containerd.ctr_ok(&["snapshots", "--snapshotter", &snapshotter, "ls"]);
    assert!(
        snapshots.contains(&image.chain_id()),
        "the unpacked snapshot {} is missing: {snapshots}",
        image.chain_id()
    );

    let run = |id: &str, args: &[&str]| ctr_run(&containerd, &reference, id, args);
    assert_eq!(run("echo-hello", &["echo", "hello"]), "hello\n");
    // No arguments: the image's Cmd with its Env.
    assert_eq!(run("image-cmd", &[]), "hello from the image\n");

    // A wrong password: 401 from the registry, through ctr and through plain HTTP.
    let wrong = format!("{}:not-the-password", registry.username());
    let out = containerd
        .ctr()
        .args([
            "images",
            "pull",
            "--plain-http",
            "--user",
            &wrong,
            &reference,
        ])
        .output()
        .expect("run ctr");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("401 Unauthorized"),
        "ctr pull with a wrong password: {}\n{stderr}",
        out.status
    );
    let denied = registry.get_as(
        "/v2/busybox/manifests/v1",
        &[media_type::MANIFEST],
        Some((registry.username(), "not-the-password")),
    );
    assert_eq!(denied.status, 401);
    assert_eq!(
        registry
            .get_as("/v2/", &[], None)
            .header("www-authenticate"),
        Some("Basic realm=\"verge-test-registry\"")
    );
    assert!(containerd.ctr_ok(&["tasks", "ls", "-q"]).trim().is_empty());
}

#[test]
fn a_two_layer_uncompressed_image_unpacks_to_its_chain_id_and_runs() {
    let containerd = Containerd::start();
    let registry = Registry::start();
    let work = TempDir::new("rig");
    let base = work.join("base");
    images::busybox_rootfs(&base);
    let top = work.join("top");
    std::fs::create_dir_all(top.join("etc")).expect("top layer");
    std::fs::write(top.join("etc/motd"), "from the second layer\n").expect("motd");
    let image = images::build_image(
        &[&base, &top],
        &ImageConfig {
            entrypoint: vec!["cat".into()],
            cmd: vec!["/etc/motd".into()],
            ..ImageConfig::default()
        },
        Compression::None,
        &work.join("layout"),
        "two",
    );
    assert_eq!(image.layers.len(), 2);
    // Uncompressed: the layer digests are the diff_ids, and skopeo keeps them.
    assert_eq!(image.layers[1].digest, image.diff_ids[1]);
    assert_eq!(registry.push(&image, "layered"), image.manifest.digest);

    let reference = registry.reference("layered", "two");
    let snapshotter = containerd.snapshotter().to_owned();
    ctr_pull(&containerd, &registry, &reference);
    let snapshots = containerd.ctr_ok(&["snapshots", "--snapshotter", &snapshotter, "ls"]);
    assert!(
        snapshots.contains(&image.chain_id()) && snapshots.contains(&image.diff_ids[0]),
        "snapshots {} (top) and {} (base) expected: {snapshots}",
        image.chain_id(),
        image.diff_ids[0]
    );
    let runc_root = containerd.runc_root().display().to_string();
    let out = containerd.ctr_ok(&[
        "run",
        "--rm",
        "--snapshotter",
        &snapshotter,
        "--runc-root",
        &runc_root,
        &reference,
        "motd",
    ]);
    assert_eq!(out, "from the second layer\n");
}

#[test]
fn a_wasm_component_round_trips_as_a_cncf_wasm_artifact() {
    let registry = Registry::start();
    let work = TempDir::new("rig");
    // The smallest valid component: the component-model preamble, no sections.
    let component = work.join("empty.wasm");
    std::fs::write(&component, b"\0asm\x0d\x00\x01\x00").expect("component");
    let info = WasmComponentInfo {
        exports: vec!["verge:module/handlers@0.1.0".into()],
        imports: vec!["verge:module/outputs@0.1.0".into()],
        target: None,
    };
    let artifact = images::build_wasm_artifact(&component, &info, &work.join("wasm"), "0.1.0");
    let begun = Instant::now();
    let digest = registry.push(&artifact, "modules/empty");
    eprintln!("pushed the wasm artifact in {:?}", begun.elapsed());
    assert_eq!(digest, artifact.manifest.digest);

    let manifest = registry.manifest("modules/empty", "0.1.0");
    assert_eq!(manifest.status, 200, "{manifest:?}");
    assert_eq!(manifest.digest(), Some(digest.as_str()));
    let json = manifest.json();
    assert_eq!(json["mediaType"], media_type::MANIFEST);
    assert_eq!(json["config"]["mediaType"], media_type::WASM_CONFIG);
    assert_eq!(json["layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(json["layers"][0]["mediaType"], media_type::WASM_LAYER);

    let config = registry
        .blob("modules/empty", &artifact.config.digest)
        .json();
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip2");
    assert_eq!(
        config["layerDigests"][0],
        artifact.layers[0].digest.as_str()
    );
    assert_eq!(
        config["component"]["exports"][0],
        "verge:module/handlers@0.1.0"
    );
    let layer = registry.blob("modules/empty", &artifact.layers[0].digest);
    assert_eq!(layer.status, 200);
    assert_eq!(
        layer.body,
        std::fs::read(&component).expect("component bytes")
    );

    // The same by digest, and nothing without credentials.
    assert_eq!(registry.manifest("modules/empty", &digest).status, 200);
    let anonymous = registry.get_as("/v2/modules/empty/manifests/0.1.0", &[], None);
    assert_eq!(anonymous.status, 401);
}

#[test]
fn a_registry_without_auth_takes_anonymous_pushes() {
    let registry = Registry::start_without_auth();
    assert!(registry.credentials().is_none());
    let work = TempDir::new("rig");
    let image = images::busybox_image(
        &ImageConfig::cmd(&["echo", "open"]),
        Compression::Gzip,
        &work.join("open"),
        "latest",
    );
    assert_eq!(registry.push(&image, "open"), image.manifest.digest);
    let manifest = registry.get_as("/v2/open/manifests/latest", &[media_type::MANIFEST], None);
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.digest(), Some(image.manifest.digest.as_str()));
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Starts `sleep 600` detached in a fresh rig (image imported, no registry); returns the rig
/// and the container's pid as the host sees it.
fn rig_with_a_sleeping_container(work: &TempDir, name: &str) -> (Containerd, String) {
    let containerd = Containerd::start();
    let image = images::busybox_image(
        &ImageConfig::cmd(&["sleep", "600"]),
        Compression::Gzip,
        &work.join(name),
        "v1",
    );
    let archive = image.tar(&work.join(format!("{name}.tar")));
    containerd.import(&archive, &format!("local/{name}"));
    let runc_root = containerd.runc_root().display().to_string();
    let snapshotter = containerd.snapshotter().to_owned();
    containerd.ctr_ok(&[
        "run",
        "-d",
        "--snapshotter",
        &snapshotter,
        "--runc-root",
        &runc_root,
        &format!("local/{name}:v1"),
        "sleeper",
    ]);
    let tasks = containerd.ctr_ok(&["tasks", "ls"]);
    let pid = tasks
        .lines()
        .find(|l| l.starts_with("sleeper"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no sleeper task: {tasks}"))
        .to_owned();
    assert!(!gone(&pid), "the container is not running: {tasks}");
    (containerd, pid)
}

#[test]
fn dropping_the_rig_stops_its_containers_even_after_containerd_died() {
    let work = TempDir::new("rig");
    let wait_gone = |pid: &str| {
        let begun = Instant::now();
        while !gone(pid) {
            assert!(
                begun.elapsed().as_secs() < 10,
                "container process {pid} survived the rig"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };

    let (containerd, pid) = rig_with_a_sleeping_container(&work, "sleeper-a");
    let dir = containerd.dir().to_path_buf();
    drop(containerd);
    wait_gone(&pid);
    assert!(!dir.exists(), "{} was not removed", dir.display());

    // containerd killed under the rig: its shim and container are still there until the drop.
    let (containerd, pid) = rig_with_a_sleeping_container(&work, "sleeper-b");
    let daemon = containerd.pid().expect("containerd pid");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &daemon.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!gone(&pid), "the container died with containerd");
    let dir = containerd.dir().to_path_buf();
    drop(containerd);
    wait_gone(&pid);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&*dir.to_string_lossy()),
        "mounts left under {}",
        dir.display()
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

/// What the Python image runs by default: the imports an Azure IoT Edge Python module needs,
/// then the SDK's version. azure-iot-device 2.14 has no `__version__`: its version (the one in
/// its user agent) is `azure.iot.device.constant.VERSION`.
const PYTHON_IMPORTS: &str = "import azure.iot.device, requests_unixsocket, ssl; \
     from azure.iot.device.constant import VERSION; print(VERSION)";

/// The Python image (the venv's interpreter and packages, built locally, cached under
/// `target/verge-images/`) runs the SDK in the rig. Also needs `tests/setup --clients`.
#[test]
fn a_python_image_with_the_azure_iot_sdk_runs_in_containerd() {
    // The version the image must report: the venv's own.
    let host = images::python_host();
    let venv_python = host.venv.join("bin/python");
    let out = std::process::Command::new(&venv_python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('azure-iot-device'))",
        ])
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "python image from {} ({}), site-packages at {}",
        host.interpreter.display(),
        host.version_short,
        host.image_site_packages
    );

    let containerd = Containerd::start();
    let registry = Registry::start();
    let work = TempDir::new("rig");
    let config = ImageConfig::cmd(&["python3", "-c", PYTHON_IMPORTS]);
    // The first call in a run builds the layers unless an earlier run cached them.
    let begun = Instant::now();
    let image = images::python_image(&config, Compression::Gzip, &work.join("python"), "3");
    eprintln!(
        "python image (built or cached) in {:?}: layers {:?} bytes",
        begun.elapsed(),
        image.layers.iter().map(|l| l.size).collect::<Vec<_>>()
    );
    let begun = Instant::now();
    let again = images::python_image(&config, Compression::Gzip, &work.join("again"), "3");
    eprintln!("python image from the cache in {:?}", begun.elapsed());
    assert_eq!(again.manifest, image.manifest);
    assert_eq!(image.layers.len(), 2);

    let begun = Instant::now();
    assert_eq!(registry.push(&image, "python"), image.manifest.digest);
    eprintln!("pushed it in {:?}", begun.elapsed());

    let reference = registry.reference("python", "3");
    let begun = Instant::now();
    ctr_pull(&containerd, &registry, &reference);
    eprintln!("ctr pulled and unpacked it in {:?}", begun.elapsed());

    let run = |id: &str, args: &[&str]| ctr_run(&containerd, &reference, id, args);
    // The image's Cmd: the SDK, requests-unixsocket (the workload API) and ssl import.
    assert_eq!(run("python-imports", &[]), expected);
    // busybox's shell below, the interpreter found on PATH, its prefix found from its place.
    assert_eq!(
        run(
            "python-prefix",
            &[
                "sh",
                "-c",
                "python -c 'import sys; print(sys.prefix, sys.executable)'"
            ]
        ),
        "/usr/local /usr/local/bin/python\n"
    );
    // A TLS context, the module client class, and daemon threads still running at exit: they
    // call pthread_exit when they meet the interpreter's shutdown, for which glibc dlopens
    // libgcc_s.so.1 (without it: "libgcc_s.so.1 must be installed for pthread_exit to work",
    // abort, status 134, in about half the runs).
    let script = "import ssl, threading, time\n\
                  from azure.iot.device import IoTHubModuleClient\n\
                  ssl.create_default_context()\n\
                  def spin():\n    while True: time.sleep(0.0001)\n\
                  for _ in range(4): threading.Thread(target=spin, daemon=True).start()\n\
                  time.sleep(0.05)\n\
                  print(IoTHubModuleClient.create_from_edge_environment.__name__)";
    assert_eq!(
        run("python-client", &["python3", "-c", script]),
        "create_from_edge_environment\n"
    );
}

/// `ctr images pull` of `reference` from `registry` with its credentials (plain HTTP, the rig's
/// snapshotter).
fn ctr_pull(containerd: &Containerd, registry: &Registry, reference: &str) {
    let user = format!("{}:{}", registry.username(), registry.password());
    containerd.ctr_ok(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        &user,
        "--snapshotter",
        containerd.snapshotter(),
        reference,
    ]);
}

/// `ctr run --rm` of `reference` as container `id` with `args` (none: the image's command); its
/// stdout. Prints how long it took.
fn ctr_run(containerd: &Containerd, reference: &str, id: &str, args: &[&str]) -> String {
    let runc_root = containerd.runc_root().display().to_string();
    let mut all = vec![
        "run",
        "--rm",
        "--snapshotter",
        containerd.snapshotter(),
        "--runc-root",
        &runc_root,
        reference,
        id,
    ];
    all.extend_from_slice(args);
    let begun = Instant::now();
    let out = containerd.ctr_ok(&all);
    eprintln!("ctr run --rm {id} took {:?}", begun.elapsed());
    out
}
