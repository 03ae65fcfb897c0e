//! OCI images and wasm OCI artifacts built locally, as plain files, for the container tests:
//! nothing is pulled from the internet.
//!
//! - [`busybox_rootfs`] fills a directory with Debian's static busybox (`/usr/bin/busybox`, from
//!   `busybox-static`) as `/bin/busybox` plus one symlink per applet ([`BUSYBOX_APPLETS`]).
//! - [`build_image`] turns one or more rootfs directories (one layer each, bottom first) and an
//!   [`ImageConfig`] into an OCI image layout directory (`oci-layout`, `index.json`,
//!   `blobs/sha256/…`) whose one manifest is tagged `tag`. Layers are `tar`red reproducibly
//!   (sorted names, mtime 0, owner 0:0, GNU format), so the same input gives the same digests;
//!   [`Compression::Gzip`] gzips them (`gzip -n`) as `application/vnd.oci.image.layer.v1.tar+gzip`,
//!   [`Compression::None`] keeps `application/vnd.oci.image.layer.v1.tar` (then the layer digest
//!   is its diff_id).
//! - [`build_wasm_artifact`] makes the same kind of layout for a wasm component published as a
//!   CNCF wasm OCI artifact: manifest `application/vnd.oci.image.manifest.v1+json`, config
//!   `application/vnd.wasm.config.v0+json` (`architecture: "wasm"`, `os: "wasip2"`,
//!   `layerDigests`, `component: {exports, imports, target}`), one layer `application/wasm`.
//! - [`busybox_image`] is the usual test image in one call.
//! - [`python_image`] is an image with Python and the Azure IoT device SDK, for containers that
//!   run unmodified IoT Edge Python modules: [`busybox_rootfs`] below [`python_rootfs`], a copy
//!   of the Python that runs the virtualenv `target/py-clients` (`tests/setup --clients`) with
//!   the venv's packages. Its layers are cached under `target/verge-images/` (see below).
//!
//! Push a layout with [`crate::registry::Registry::push`] (skopeo). Digests come from the
//! `sha256sum` command (coreutils) and tarballs from the `tar` and `gzip` commands, so the kit
//! needs no crate for either.
//!
//! [`TempDir`] is the scratch directory the container kit uses (removed on drop).
//!
//! # The Python image
//!
//! [`python_host`] asks the venv's `bin/python` (`-I`) for the real interpreter behind it
//! (`sys._base_executable`, symlinks resolved), `sys.version`, `sys.base_prefix`, the stdlib
//! (`sysconfig.get_paths()["stdlib"]`), `lib-dynload` (from `sys.path`) and the venv's
//! site-packages; then asks the real interpreter, outside the venv, which site directories it
//! would use under `/usr/local` (`site.getsitepackages(["/usr/local"])`). Whatever `python3`
//! made the venv works: pyenv's 3.11.7 here (libpython shared, found through its RUNPATH under
//! `/root/.pyenv/…`, copied there), or Debian's `/usr/bin/python3.11` (static libpython; its
//! patched `site` wants `dist-packages`, so the packages go to
//! `/usr/local/lib/python3/dist-packages`). `$VERGE_PYTHON_VENV` names another venv.
//!
//! The interpreter goes to `/usr/local/bin/python3`: CPython finds its prefix from its own
//! place (landmark `lib/python3.X/os.py`), so no `PYTHONHOME` is needed. [`python_image`]
//! adds `PATH=/usr/local/bin:/bin` to the config when it has no `PATH`.
//!
//! Caching: the two layer tarballs (and their gzipped forms, made on first demand) live in
//! `target/verge-images/python-<key>/`, `key` a hash of the kit's revision, the interpreter
//! (path, size, mtime, version, paths) and the listing (names, sizes, mtimes) of lib-dynload
//! and the venv's site-packages, and busybox. A lock file (`python.lock`, `flock`) serialises
//! builders across threads and processes; a build happens in `.tmp-python-…` and is renamed
//! into place, so a build that died leaves nothing that looks finished (its leftovers are
//! removed by the next build). [`python_image`] copies (never hard-links) the cached blobs into
//! its `out`, so a test that damages its layout cannot damage the cache. Delete the directory
//! to force a rebuild.
//!
//! Found on the test machine (2 cores, loaded by other builds; pyenv 3.11.7, azure-iot-device
//! 2.14.0):
//! - The Python layer is 52.7 MB uncompressed (17.6 MB gzipped): stdlib and packages 22 MB of
//!   sources, 14 MB of `.pyc`, 11 MB of system libraries (libcrypto 4.7 MB), libpython 6.2 MB
//!   once stripped of debug information (23 MB before). The busybox layer is 2 MB (1 MB
//!   gzipped). With Debian's python3.11 instead: 18.2 MB gzipped.
//! - Cold build: 3.1 s for the layers (2.9 s of it the rootfs: copies, ldd, strip,
//!   compileall), plus 2.2 s to gzip them the first time gzipped layers are asked for. From the
//!   cache: 0.02–0.08 s gzipped, 0.17 s uncompressed (the copy of 54 MB). Push (skopeo):
//!   0.4 s gzipped, 0.6 s uncompressed; `ctr images pull` 1.8–1.9 s either way (up to 3.4 s
//!   under load); `ctr run --rm` of the SDK imports 0.6–0.7 s.
//! - **`.pyc` matter**: importing `azure.iot.device`, `requests_unixsocket` and `ssl` takes
//!   0.23 s with them, 0.73 s without. They are compiled `checked-hash`, because the layer's
//!   mtimes are 0 and timestamp-based `.pyc` would be stale.
//! - **libgcc_s.so.1** is not in any `ldd` output but glibc `dlopen`s it for `pthread_exit`,
//!   which Python calls when a daemon thread (the SDK has several) meets interpreter shutdown:
//!   without it about half the runs of a script leaving daemon threads end in "libgcc_s.so.1
//!   must be installed for pthread_exit to work" and SIGABRT (status 134).
//! - azure-iot-device 2.14 has no `__version__`: its version is
//!   `azure.iot.device.constant.VERSION` (or `importlib.metadata.version("azure-iot-device")`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Where Debian's `busybox-static` installs its static binary.
pub const BUSYBOX: &str = "/usr/bin/busybox";

/// The applets [`busybox_rootfs`] links into `/bin`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ash", "echo", "printf", "sleep", "cat", "ls", "env", "true", "false", "kill", "ps",
    "id", "wc", "grep", "head", "tail", "date", "mkdir", "rm", "touch", "test", "[", "hostname",
    "uname", "nc", "wget", "seq", "yes", "dd", "mount", "pwd", "whoami",
];

/// `media_type` values of OCI image manifests, configs and layers, and of wasm artifacts.
pub mod media_type {
    /// An OCI image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An OCI image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// A gzipped layer.
    pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// The config of a CNCF wasm OCI artifact.
    pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
    /// The one layer of a CNCF wasm OCI artifact.
    pub const WASM_LAYER: &str = "application/wasm";
}

/// A scratch directory under the system's temporary directory, removed (with its content) on
/// drop. Its name carries the process id, a counter and the time, so tests never share one.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory `{tmp}/verge-{prefix}-{pid}-{n}-{nanos}`. Panics if it cannot be
    /// made.
    pub fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "verge-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What goes into an image config's `config` object, as `docker inspect` shows it.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    /// `Entrypoint` (omitted when empty).
    pub entrypoint: Vec<String>,
    /// `Cmd` (omitted when empty).
    pub cmd: Vec<String>,
    /// `Env`, `NAME=value` (`PATH=/bin` is added when no `PATH` is given).
    pub env: Vec<String>,
    /// `WorkingDir` (omitted when empty).
    pub working_dir: String,
    /// `User` (omitted when empty).
    pub user: String,
    /// `Labels`.
    pub labels: Vec<(String, String)>,
}

impl ImageConfig {
    /// A config that runs `cmd` (no entrypoint), with `PATH=/bin`.
    pub fn cmd(cmd: &[&str]) -> Self {
        Self {
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            ..Self::default()
        }
    }

    fn to_json(&self) -> Value {
        let mut config = serde_json::Map::new();
        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, "PATH=/bin".to_owned());
        }
        config.insert("Env".into(), json!(env));
        if !self.entrypoint.is_empty() {
            config.insert("Entrypoint".into(), json!(self.entrypoint));
        }
        if !self.cmd.is_empty() {
            config.insert("Cmd".into(), json!(self.cmd));
        }
        if !self.working_dir.is_empty() {
            config.insert("WorkingDir".into(), json!(self.working_dir));
        }
        if !self.user.is_empty() {
            config.insert("User".into(), json!(self.user));
        }
        if !self.labels.is_empty() {
            let labels: serde_json::Map<String, Value> = self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            config.insert("Labels".into(), Value::Object(labels));
        }
        Value::Object(config)
    }
}

/// How [`build_image`] stores its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar`: the layer digest is its diff_id.
    None,
    /// `application/vnd.oci.image.layer.v1.tar+gzip` (`gzip -n`, reproducible).
    Gzip,
}

/// A content descriptor: what a manifest or index says about a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Its media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Descriptor {
    fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// An OCI image layout directory with one tagged manifest, as [`build_image`] and
/// [`build_wasm_artifact`] write it.
#[derive(Debug, Clone)]
pub struct OciLayout {
    /// The layout directory (`oci-layout`, `index.json`, `blobs/sha256/`).
    pub dir: PathBuf,
    /// The tag of its manifest (`org.opencontainers.image.ref.name` in `index.json`).
    pub tag: String,
    /// The manifest.
    pub manifest: Descriptor,
    /// The config.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// The diff_ids (digests of the uncompressed layers), bottom first; empty for a wasm
    /// artifact.
    pub diff_ids: Vec<String>,
}

impl OciLayout {
    /// `oci:{dir}:{tag}`, the reference skopeo takes.
    pub fn skopeo_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// The file holding blob `digest`.
    pub fn blob(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Writes the layout as a tar archive at `archive` (what `ctr images import` and
    /// `skopeo copy oci-archive:` take) and returns its path.
    pub fn tar(&self, archive: &Path) -> PathBuf {
        run(
            Command::new("tar")
                .arg("-C")
                .arg(&self.dir)
                .arg("-cf")
                .arg(archive)
                .args(["oci-layout", "index.json", "blobs"]),
            "tar of an OCI layout",
        );
        archive.to_path_buf()
    }

    /// The chain ID of the top layer, the name containerd gives the unpacked snapshot:
    /// `chain[0] = diff_id[0]`, `chain[i] = sha256(chain[i-1] + " " + diff_id[i])`.
    pub fn chain_id(&self) -> String {
        chain_id(&self.diff_ids)
    }
}

/// The chain ID of layers with these diff_ids (bottom first); see [`OciLayout::chain_id`].
/// Panics on an empty list.
pub fn chain_id(diff_ids: &[String]) -> String {
    let (first, rest) = diff_ids.split_first().expect("chain_id of no layers");
    rest.iter().fold(first.clone(), |chain, diff_id| {
        format!(
            "sha256:{}",
            sha256_bytes(format!("{chain} {diff_id}").as_bytes())
        )
    })
}

/// The hex SHA-256 of a file (`sha256sum`). Panics if it cannot be computed.
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sha256sum: {e}"));
    assert!(
        out.status.success(),
        "sha256sum {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_sha256sum(&out.stdout)
}

/// The hex SHA-256 of bytes (`sha256sum` on stdin). Panics if it cannot be computed.
pub fn sha256_bytes(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sha256sum: {e}"));
    child
        .stdin
        .take()
        .expect("sha256sum stdin")
        .write_all(data)
        .expect("writing to sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    assert!(
        out.status.success(),
        "sha256sum failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_sha256sum(&out.stdout)
}

fn parse_sha256sum(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "unexpected sha256sum output: {text:?}"
    );
    hex.to_ascii_lowercase()
}

/// Runs `cmd`, panicking with its output if it fails.
fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A layout under construction: blobs written by content.
struct LayoutWriter {
    dir: PathBuf,
    blobs: PathBuf,
}

impl LayoutWriter {
    fn new(dir: &Path) -> Self {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", blobs.display()));
        Self {
            dir: dir.to_path_buf(),
            blobs,
        }
    }

    /// Moves (or copies, with `copy`) `file` into the blobs under its digest.
    fn add_file(&self, file: &Path, media_type: &str, copy: bool) -> Descriptor {
        let hex = sha256_file(file);
        let size = std::fs::metadata(file)
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", file.display()))
            .len();
        let dest = self.blobs.join(&hex);
        if copy {
            std::fs::copy(file, &dest)
        } else {
            std::fs::rename(file, &dest).map(|()| 0)
        }
        .unwrap_or_else(|e| panic!("cannot store {} as a blob: {e}", file.display()));
        Descriptor {
            media_type: media_type.to_owned(),
            digest: format!("sha256:{hex}"),
            size,
        }
    }

    /// Copies `file`, whose digest and size `descriptor` already gives, into the blobs. A copy,
    /// not a hard link: a test that damages a blob of its layout must not damage a cache.
    fn add_known(&self, file: &Path, descriptor: &Descriptor) {
        let dest = self
            .blobs
            .join(descriptor.digest.trim_start_matches("sha256:"));
        std::fs::copy(file, &dest)
            .unwrap_or_else(|e| panic!("cannot store {} as a blob: {e}", file.display()));
    }

    fn add_json(&self, value: &Value, media_type: &str) -> Descriptor {
        let bytes = serde_json::to_vec(value).expect("JSON of a blob");
        let tmp = self.dir.join("blob.tmp");
        std::fs::write(&tmp, &bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
        self.add_file(&tmp, media_type, false)
    }

    /// Writes the manifest, `index.json` and `oci-layout`.
    fn finish(
        self,
        tag: &str,
        config: Descriptor,
        layers: Vec<Descriptor>,
        diff_ids: Vec<String>,
    ) -> OciLayout {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type::MANIFEST,
            "config": config.to_json(),
            "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
        });
        let manifest = self.add_json(&manifest, media_type::MANIFEST);
        let mut entry = manifest.to_json();
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        let index = json!({"schemaVersion": 2, "manifests": [entry]});
        let write = |name: &str, value: &Value| {
            let path = self.dir.join(name);
            std::fs::write(&path, serde_json::to_vec(value).expect("JSON"))
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        };
        write("index.json", &index);
        write("oci-layout", &json!({"imageLayoutVersion": "1.0.0"}));
        OciLayout {
            dir: self.dir,
            tag: tag.to_owned(),
            manifest,
            config,
            layers,
            diff_ids,
        }
    }
}

/// The OCI name of this machine's architecture (`amd64`, `arm64`, …).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// Fills `dir` with a busybox root filesystem: `bin/busybox` (Debian's static busybox) and a
/// symlink `bin/{applet}` → `busybox` for each of [`BUSYBOX_APPLETS`], plus empty `etc`,
/// `tmp`, `proc`, `sys`, `dev` and `root`. Panics if busybox-static is not installed
/// (`tests/setup --containers`).
pub fn busybox_rootfs(dir: &Path) {
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} not found: install busybox-static (tests/setup --containers)"
    );
    let bin = dir.join("bin");
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    }
    std::fs::copy(BUSYBOX, bin.join("busybox"))
        .unwrap_or_else(|e| panic!("cannot copy {BUSYBOX}: {e}"));
    for applet in BUSYBOX_APPLETS {
        let link = bin.join(applet);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("busybox", &link)
            .unwrap_or_else(|e| panic!("cannot link {}: {e}", link.display()));
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .unwrap_or_else(|e| panic!("cannot write etc/passwd: {e}"));
    std::fs::write(dir.join("etc/group"), "root:x:0:\n")
        .unwrap_or_else(|e| panic!("cannot write etc/group: {e}"));
}

/// Builds an OCI image layout at `out` (created; must not hold another layout) from `rootfs`
/// directories, one layer each, bottom first, with `config`, tagged `tag`. Later layers may
/// delete files of earlier ones with OCI whiteouts (`.wh.NAME` files) as usual.
pub fn build_image(
    rootfs: &[&Path],
    config: &ImageConfig,
    compression: Compression,
    out: &Path,
    tag: &str,
) -> OciLayout {
    assert!(!rootfs.is_empty(), "an image needs at least one layer");
    let writer = LayoutWriter::new(out);
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, dir) in rootfs.iter().enumerate() {
        let tar = out.join(format!("layer{i}.tar"));
        diff_ids.push(tar_layer(dir, &tar));
        let layer = match compression {
            Compression::None => writer.add_file(&tar, media_type::LAYER_TAR, false),
            Compression::Gzip => {
                run(Command::new("gzip").args(["-n", "-6"]).arg(&tar), "gzip");
                let gz = out.join(format!("layer{i}.tar.gz"));
                writer.add_file(&gz, media_type::LAYER_TAR_GZIP, false)
            }
        };
        layers.push(layer);
    }
    let config = writer.add_json(&image_config_json(config, &diff_ids), media_type::CONFIG);
    writer.finish(tag, config, layers, diff_ids)
}

/// Writes directory `dir` as a reproducible layer tarball `tar` (sorted names, mtime 0, owner
/// 0:0, GNU format) and returns its diff_id (`sha256:…`).
fn tar_layer(dir: &Path, tar: &Path) -> String {
    run(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--format=gnu",
                "-C",
            ])
            .arg(dir)
            .arg("-cf")
            .arg(tar)
            .arg("."),
        &format!("tar of {}", dir.display()),
    );
    format!("sha256:{}", sha256_file(tar))
}

/// The OCI image config of an image with `config` and layers `diff_ids`.
fn image_config_json(config: &ImageConfig, diff_ids: &[String]) -> Value {
    json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": oci_arch(),
        "os": "linux",
        "config": config.to_json(),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().map(|_| json!({"created": "1970-01-01T00:00:00Z", "created_by": "verge-tests"})).collect::<Vec<_>>(),
    })
}

/// A busybox image (see [`busybox_rootfs`]) with `config`, one layer, at `out`, tagged `tag`.
pub fn busybox_image(
    config: &ImageConfig,
    compression: Compression,
    out: &Path,
    tag: &str,
) -> OciLayout {
    let rootfs = TempDir::new("rootfs");
    busybox_rootfs(rootfs.path());
    build_image(&[rootfs.path()], config, compression, out, tag)
}

/// The prefix of the Python in [`python_rootfs`]: the interpreter is `/usr/local/bin/python3`
/// (and `python`), the standard library `/usr/local/lib/python3.X`.
pub const PYTHON_PREFIX: &str = "/usr/local";

/// Changed whenever [`python_rootfs`] changes what it puts in the image, so that layers cached
/// by an older kit are not reused.
const PYTHON_IMAGE_REVISION: &str = "python-image-1";

/// Top-level names of the standard library that [`python_rootfs`] leaves out (plus
/// `config-3.X-…`, the static libpython and Makefile for building extensions).
const PYTHON_STDLIB_PRUNE: &[&str] = &[
    "idlelib",
    "tkinter",
    "turtledemo",
    "turtle.py",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "lib-dynload",
    "__phello__",
];

/// Directories left out at any depth of the standard library.
const PYTHON_STDLIB_PRUNE_DIRS: &[&str] = &["__pycache__", "test", "tests", "idle_test"];

/// Prefixes of the lib-dynload extension modules left out: CPython's own test modules, Tk
/// (needs X11 libraries), NIS (Kerberos, tirpc) and OSS audio.
const PYTHON_DYNLOAD_PRUNE: &[&str] = &[
    "_test",
    "_xxtestfuzz",
    "_ctypes_test",
    "xxlimited",
    "xxsubtype",
    "_tkinter",
    "nis.",
    "ossaudiodev.",
];

/// Top-level names of the virtualenv's site-packages left out: the packaging tools.
const PYTHON_SITE_PRUNE: &[&str] = &[
    "pip",
    "setuptools",
    "pkg_resources",
    "_distutils_hack",
    "distutils-precedence.pth",
    "wheel",
    "__pycache__",
];

/// Asks the virtualenv's interpreter (`-I`) where its pieces are.
const PYTHON_HOST_SCRIPT: &str = r#"
import json, os, site, sys, sysconfig
paths = sysconfig.get_paths()
dynload = [p for p in sys.path if os.path.basename(p.rstrip("/")) == "lib-dynload" and os.path.isdir(p)]
sites = []
for p in site.getsitepackages() + [paths["purelib"], paths["platlib"]]:
    if os.path.isdir(p) and all(os.path.realpath(p) != os.path.realpath(q) for q in sites):
        sites.append(p)
print(json.dumps({
    "interpreter": os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable),
    "version": sys.version,
    "short": "%d.%d" % sys.version_info[:2],
    "base_prefix": sys.base_prefix,
    "stdlib": paths["stdlib"],
    "lib_dynload": dynload[0] if dynload else sysconfig.get_config_var("DESTSHARED"),
    "platlibdir": getattr(sys, "platlibdir", "lib"),
    "site_packages": sites,
}))
"#;

/// The Python that [`python_rootfs`] copies, as the virtualenv `target/py-clients` (made by
/// `tests/setup --clients` from whatever `python3` was on `PATH`) reports it.
#[derive(Debug, Clone)]
pub struct PythonHost {
    /// The virtualenv: `$VERGE_PYTHON_VENV`, else `target/py-clients` in the repository.
    pub venv: PathBuf,
    /// The real interpreter binary behind the venv's `bin/python` (symlinks resolved), e.g.
    /// `/root/.pyenv/versions/3.11.7/bin/python3.11` or `/usr/bin/python3.11`.
    pub interpreter: PathBuf,
    /// `sys.version`.
    pub version: String,
    /// `major.minor`, e.g. `3.11`.
    pub version_short: String,
    /// `sys.base_prefix`: the installation the venv was made from.
    pub base_prefix: PathBuf,
    /// The standard library (`sysconfig.get_paths()["stdlib"]`).
    pub stdlib: PathBuf,
    /// The extension modules of the standard library (`lib-dynload`).
    pub lib_dynload: PathBuf,
    /// The venv's site-packages directories.
    pub site_packages: Vec<PathBuf>,
    /// The image's standard library: `/usr/local/{sys.platlibdir}/python3.X`, where the
    /// interpreter's own search for its prefix (landmark `os.py`) finds it from
    /// `/usr/local/bin`.
    pub image_stdlib: String,
    /// Where the venv's packages go in the image: a directory this interpreter's `site` puts on
    /// `sys.path` for prefix `/usr/local` (`site.getsitepackages(["/usr/local"])`):
    /// `/usr/local/lib/python3.X/site-packages` for a python.org build (pyenv),
    /// `/usr/local/lib/python3/dist-packages` for Debian's (whose `site` is patched).
    pub image_site_packages: String,
}

impl PythonHost {
    /// `/usr/local/…/lib-dynload` in the image.
    pub fn image_lib_dynload(&self) -> String {
        format!("{}/lib-dynload", self.image_stdlib)
    }
}

/// The virtualenv the Python image is made from: `$VERGE_PYTHON_VENV`, else
/// `target/py-clients`.
fn python_venv() -> PathBuf {
    std::env::var_os("VERGE_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join("target/py-clients"))
}

/// What the virtualenv's Python says about itself (asked once per process). Panics when the
/// venv is missing (`tests/setup --clients`) or its interpreter cannot be run.
pub fn python_host() -> &'static PythonHost {
    static HOST: std::sync::OnceLock<PythonHost> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let venv = python_venv();
        let python = venv.join("bin/python");
        assert!(
            python.exists(),
            "{} is missing: run tests/setup --clients",
            python.display()
        );
        let info = python_json(&python, &["-I", "-c", PYTHON_HOST_SCRIPT]);
        let text = |key: &str| {
            info[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} missing from {info}"))
                .to_owned()
        };
        let interpreter = PathBuf::from(text("interpreter"));
        let stdlib = PathBuf::from(text("stdlib"));
        let stdlib_name = stdlib
            .file_name()
            .unwrap_or_else(|| panic!("odd stdlib path {}", stdlib.display()))
            .to_string_lossy()
            .into_owned();
        let image_stdlib = format!("{PYTHON_PREFIX}/{}/{stdlib_name}", text("platlibdir"));
        // The real interpreter, outside the venv and without running `site`: its own site
        // directories for the image's prefix.
        let script = format!(
            "import json, site; print(json.dumps(site.getsitepackages([{PYTHON_PREFIX:?}])))"
        );
        let sites = python_json(&interpreter, &["-I", "-S", "-c", &script]);
        let sites: Vec<String> = sites
            .as_array()
            .unwrap_or_else(|| panic!("site.getsitepackages: {sites}"))
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        let lib = format!("{PYTHON_PREFIX}/{}/", text("platlibdir"));
        let image_site_packages = sites
            .iter()
            .find(|s| s.starts_with(&format!("{image_stdlib}/")) && s.ends_with("site-packages"))
            .or_else(|| sites.iter().find(|s| s.starts_with(&lib)))
            .or_else(|| sites.first())
            .unwrap_or_else(|| panic!("{} has no site directory", interpreter.display()))
            .clone();
        PythonHost {
            venv,
            interpreter,
            version: text("version"),
            version_short: text("short"),
            base_prefix: PathBuf::from(text("base_prefix")),
            stdlib,
            lib_dynload: PathBuf::from(text("lib_dynload")),
            site_packages: info["site_packages"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
            image_stdlib,
            image_site_packages,
        }
    })
}

/// Runs `python args` and parses its stdout as JSON.
fn python_json(python: &Path, args: &[&str]) -> Value {
    let out = Command::new(python)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}): {}",
            python.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `dir` + absolute image path `path`.
fn in_rootfs(dir: &Path, path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    dir.join(path.strip_prefix("/").unwrap_or(path))
}

fn create_dirs(path: &Path) {
    std::fs::create_dir_all(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

/// Copies the tree `src` into `dst` (created), following symlinks (a dangling one is skipped),
/// keeping permissions. `keep(rel, is_dir)` says which entries (paths relative to `src`) to
/// copy; a directory left out is not entered.
fn copy_tree(src: &Path, dst: &Path, keep: &dyn Fn(&Path, bool) -> bool) {
    fn walk(src: &Path, dst: &Path, rel: &Path, keep: &dyn Fn(&Path, bool) -> bool) {
        create_dirs(&dst.join(rel));
        let from = src.join(rel);
        let entries = std::fs::read_dir(&from)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
            let rel = rel.join(entry.file_name());
            // Follows symlinks; a dangling one (Debian's sitecustomize.py → /etc/…) is skipped.
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if !keep(&rel, meta.is_dir()) {
                continue;
            }
            if meta.is_dir() {
                walk(src, dst, &rel, keep);
            } else if meta.is_file() {
                let to = dst.join(&rel);
                std::fs::copy(entry.path(), &to).unwrap_or_else(|e| {
                    panic!(
                        "cannot copy {} to {}: {e}",
                        entry.path().display(),
                        to.display()
                    )
                });
            }
        }
    }
    walk(src, dst, Path::new(""), keep);
}

/// Every file under `dir` whose name ends with `.so` (or has `.so.` in it), sorted.
fn shared_objects(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && (name.ends_with(".so") || name.contains(".so.")) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// What `ldd` says about a set of ELF files.
#[derive(Debug, Default)]
struct LddReport {
    /// (DT_NEEDED name, resolved path) of every library, deduplicated.
    libraries: Vec<(String, PathBuf)>,
    /// The dynamic loaders (`PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`).
    loaders: Vec<PathBuf>,
    /// (file, library name) for each library ldd could not find.
    missing: Vec<(PathBuf, String)>,
}

/// Runs `ldd` on `files` (at once) and parses its output. Files that are not dynamic (static,
/// not ELF) contribute nothing.
fn ldd(files: &[PathBuf]) -> LddReport {
    let mut report = LddReport::default();
    if files.is_empty() {
        return report;
    }
    let out = Command::new("ldd")
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ldd: {e}"));
    // ldd fails when one of the files is not dynamic; what it printed still holds.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut current = files[0].clone();
    for line in stdout.lines() {
        if !line.starts_with(char::is_whitespace) {
            if let Some(file) = line.strip_suffix(':') {
                current = PathBuf::from(file);
            }
            continue;
        }
        let line = line.trim();
        if let Some((name, rest)) = line.split_once(" => ") {
            let target = rest.split(" (").next().unwrap_or_default().trim();
            if target == "not found" {
                report.missing.push((current.clone(), name.to_owned()));
            } else if target.starts_with('/') {
                let entry = (name.to_owned(), PathBuf::from(target));
                if !report.libraries.contains(&entry) {
                    report.libraries.push(entry);
                }
            }
        } else if line.starts_with('/') {
            let loader = PathBuf::from(line.split(" (").next().unwrap_or_default());
            if !report.loaders.contains(&loader) {
                report.loaders.push(loader);
            }
        }
    }
    report
}

/// The dynamic loader's default library directories (`ld.so --help`: "system search path"),
/// where it looks without an `/etc/ld.so.cache` (the image has none).
fn loader_system_dirs(loader: &Path) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = Command::new(loader)
        .arg("--help")
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.trim_end().ends_with("(system search path)"))
                .filter_map(|l| l.split_whitespace().next().map(PathBuf::from))
                .collect()
        })
        .unwrap_or_default();
    if dirs.is_empty() {
        ["/lib64", "/usr/lib64", "/lib", "/usr/lib"]
            .iter()
            .map(PathBuf::from)
            .collect()
    } else {
        dirs
    }
}

/// Fills `dir` with a Python runtime copied from this machine: the interpreter that runs the
/// virtualenv `target/py-clients` ([`python_host`]) as `/usr/local/bin/python3` (and `python`,
/// `python3.X`), its standard library at [`PythonHost::image_stdlib`] without tests, IDLE,
/// tkinter, ensurepip, lib2to3, pydoc data and the static libpython, its `lib-dynload`
/// (without the test, Tk, NIS and OSS modules), the venv's site-packages (azure-iot-device,
/// paho-mqtt, requests, requests-unixsocket…; without pip, setuptools and wheel) at
/// [`PythonHost::image_site_packages`], every `.py` precompiled (`compileall
/// --invalidation-mode checked-hash`: the layer's mtimes are 0, so timestamp-checked `.pyc`
/// would be stale), and the shared libraries `ldd` finds for the interpreter and every
/// extension module, at their paths on this machine, plus the dynamic loader and
/// `libgcc_s.so.1` (which glibc `dlopen`s for `pthread_exit`: Python calls it when a daemon
/// thread meets interpreter shutdown, and aborts without it). A library outside the loader's
/// default directories is also linked into the first of them (the image has no
/// `ld.so.cache`). ELF files of the Python installation are stripped of debug information
/// (`strip --strip-debug`, when `strip` exists). Also `/etc/passwd`, `/etc/group` (root),
/// `/etc/nsswitch.conf` (`hosts: files dns`) and `/tmp` (1777); no CA certificates.
///
/// It has no shell: it is meant as the layer above [`busybox_rootfs`] ([`python_image`]).
/// Panics when the venv is missing (`tests/setup --clients`) or a library cannot be found.
pub fn python_rootfs(dir: &Path) {
    let host = python_host();
    let bin = in_rootfs(dir, format!("{PYTHON_PREFIX}/bin"));
    create_dirs(&bin);
    let python3 = bin.join("python3");
    std::fs::copy(&host.interpreter, &python3)
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", host.interpreter.display()));
    for link in ["python".to_owned(), format!("python{}", host.version_short)] {
        let _ = std::fs::remove_file(bin.join(&link));
        std::os::unix::fs::symlink("python3", bin.join(&link))
            .unwrap_or_else(|e| panic!("cannot link {link}: {e}"));
    }

    let stdlib = in_rootfs(dir, &host.image_stdlib);
    copy_tree(&host.stdlib, &stdlib, &|rel, is_dir| {
        let name = rel.file_name().unwrap_or_default().to_string_lossy();
        let top = rel.components().count() == 1;
        !(top && (PYTHON_STDLIB_PRUNE.contains(&&*name) || name.starts_with("config-"))
            || is_dir && PYTHON_STDLIB_PRUNE_DIRS.contains(&&*name))
    });
    let dynload = in_rootfs(dir, host.image_lib_dynload());
    copy_tree(&host.lib_dynload, &dynload, &|rel, _| {
        let name = rel.file_name().unwrap_or_default().to_string_lossy();
        !PYTHON_DYNLOAD_PRUNE.iter().any(|p| name.starts_with(p)) && name != "__pycache__"
    });
    let site = in_rootfs(dir, &host.image_site_packages);
    for src in &host.site_packages {
        copy_tree(src, &site, &|rel, is_dir| {
            let name = rel.file_name().unwrap_or_default().to_string_lossy();
            let top = rel.components().count() == 1;
            let tool = ["pip-", "setuptools-", "wheel-"]
                .iter()
                .any(|p| name.starts_with(p) && name.ends_with(".dist-info"));
            !(top && (PYTHON_SITE_PRUNE.contains(&&*name) || tool)
                || is_dir && name == "__pycache__")
        });
    }

    // Shared libraries: those of the interpreter and of every extension module. An extension
    // of the standard library whose library this machine lacks does not work here either: it
    // is left out.
    let mut elves = vec![python3.clone()];
    elves.extend(shared_objects(&dynload));
    let site_objects = shared_objects(&site);
    elves.extend(site_objects.iter().cloned());
    let mut report = ldd(&elves);
    for (file, library) in std::mem::take(&mut report.missing) {
        if file.starts_with(&dynload) {
            eprintln!(
                "python image: leaving out {} ({library} not found)",
                file.display()
            );
            let _ = std::fs::remove_file(&file);
        } else {
            panic!(
                "python image: {} needs {library}, not found",
                file.display()
            );
        }
    }
    let loader = report.loaders.first().cloned().unwrap_or_else(|| {
        panic!(
            "ldd found no dynamic loader for {}",
            host.interpreter.display()
        )
    });
    let system_dirs = loader_system_dirs(&loader);
    // dlopen()ed by glibc, so no ldd shows it.
    match system_dirs
        .iter()
        .map(|d| d.join("libgcc_s.so.1"))
        .find(|p| p.is_file())
    {
        Some(libgcc) => {
            let more = ldd(std::slice::from_ref(&libgcc));
            report.libraries.push(("libgcc_s.so.1".to_owned(), libgcc));
            for entry in more.libraries {
                if !report.libraries.contains(&entry) {
                    report.libraries.push(entry);
                }
            }
        }
        None => eprintln!("python image: libgcc_s.so.1 not found in {system_dirs:?}"),
    }
    let mut to_strip = elves;
    for loader in &report.loaders {
        let dest = in_rootfs(dir, loader);
        create_dirs(dest.parent().expect("loader directory"));
        std::fs::copy(loader, &dest)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", loader.display()));
    }
    for (name, path) in &report.libraries {
        let dest = in_rootfs(dir, path);
        if !dest.exists() {
            create_dirs(dest.parent().expect("library directory"));
            std::fs::copy(path, &dest)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", path.display()));
            if path.starts_with(&host.base_prefix) {
                to_strip.push(dest.clone());
            }
        }
        let parent = path.parent().unwrap_or(Path::new("/"));
        if !system_dirs.iter().any(|d| d == parent) {
            let link = in_rootfs(dir, system_dirs[0].join(name));
            if std::fs::symlink_metadata(&link).is_err() {
                create_dirs(link.parent().expect("library directory"));
                std::os::unix::fs::symlink(path, &link)
                    .unwrap_or_else(|e| panic!("cannot link {}: {e}", link.display()));
            }
        }
    }
    // Best effort: an unstripped image is only bigger.
    let _ = Command::new("strip")
        .arg("--strip-debug")
        .args(&to_strip)
        .output();

    // Precompiled with the same interpreter (same magic number), recording the image's paths.
    let mut compile = Command::new(&host.interpreter);
    compile
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PYTHONHASHSEED", "0")
        .args([
            "-s",
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "checked-hash",
            "-s",
        ])
        .arg(dir)
        .args(["-p", "/"])
        .arg(&stdlib);
    if !site.starts_with(&stdlib) {
        compile.arg(&site);
    }
    run(&mut compile, "compileall of the Python image");

    let etc = dir.join("etc");
    create_dirs(&etc);
    for (name, text) in [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("group", "root:x:0:\n"),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n",
        ),
    ] {
        std::fs::write(etc.join(name), text)
            .unwrap_or_else(|e| panic!("cannot write etc/{name}: {e}"));
    }
    let tmp = dir.join("tmp");
    create_dirs(&tmp);
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", tmp.display()));
}

/// (size, mtime) of `path`, zeros when it cannot be read.
fn stamp(path: &Path) -> (u64, i64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| (m.len(), m.mtime()))
        .unwrap_or_default()
}

/// The key of the cached Python layers: a hash of what goes into them (the kit's revision, the
/// interpreter, its version and paths, the listing of lib-dynload and site-packages with sizes
/// and mtimes, busybox).
fn python_cache_key(host: &PythonHost) -> String {
    let mut text = format!(
        "{PYTHON_IMAGE_REVISION}\n{}\n{:?}\n{host:?}\n{:?}\n{:?}\n",
        oci_arch(),
        stamp(&host.interpreter),
        stamp(Path::new(BUSYBOX)),
        BUSYBOX_APPLETS,
    );
    for root in std::iter::once(&host.lib_dynload).chain(&host.site_packages) {
        let mut files = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if entry.file_name() == "__pycache__" {
                    continue;
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files.sort();
        for file in files {
            let (size, mtime) = stamp(&file);
            text.push_str(&format!("{} {size} {mtime}\n", file.display()));
        }
    }
    sha256_bytes(text.as_bytes())
}

/// The Python image's two layers (busybox, then Python) as cached under
/// `target/verge-images/python-<key>/`, built when missing: (blob file, descriptor, diff_id),
/// bottom first. A lock file (`python.lock`) makes concurrent test threads and processes build
/// once; the layers are built in a temporary directory renamed into place, so a build that
/// dies midway leaves nothing that looks finished.
fn python_layers(compression: Compression) -> Vec<(PathBuf, Descriptor, String)> {
    let host = python_host();
    let key = python_cache_key(host);
    let root = crate::target_dir().join("verge-images");
    create_dirs(&root);
    let lock_path = root.join("python.lock");
    let lock = std::fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    let dir = root.join(format!("python-{}", &key[..16]));
    let diff_ids_file = dir.join("diff_ids");
    if !diff_ids_file.is_file() {
        // Leftovers of builds that died: nobody else builds while the lock is held.
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-python-")
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        let tmp = root.join(format!(".tmp-python-{}-{}", &key[..16], std::process::id()));
        create_dirs(&tmp);
        let begun = std::time::Instant::now();
        let busybox = TempDir::new("busybox-rootfs");
        busybox_rootfs(busybox.path());
        let python = TempDir::new("python-rootfs");
        python_rootfs(python.path());
        let filled = begun.elapsed();
        let diff_ids = [
            tar_layer(busybox.path(), &tmp.join("layer0.tar")),
            tar_layer(python.path(), &tmp.join("layer1.tar")),
        ];
        eprintln!(
            "python image: built its layers in {:?} (rootfs {filled:?}) into {}",
            begun.elapsed(),
            dir.display()
        );
        std::fs::write(tmp.join("diff_ids"), diff_ids.join("\n"))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, &dir).unwrap_or_else(|e| {
            panic!("cannot rename {} to {}: {e}", tmp.display(), dir.display())
        });
    }
    let diff_ids = std::fs::read_to_string(&diff_ids_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", diff_ids_file.display()));
    let layers = diff_ids
        .lines()
        .enumerate()
        .map(|(i, diff_id)| {
            let tar = dir.join(format!("layer{i}.tar"));
            let (file, media_type, digest) = match compression {
                Compression::None => (tar, media_type::LAYER_TAR, diff_id.to_owned()),
                Compression::Gzip => {
                    let gz = dir.join(format!("layer{i}.tar.gz"));
                    let digest_file = dir.join(format!("layer{i}.tar.gz.digest"));
                    if !digest_file.is_file() {
                        let tmp = dir.join(format!("layer{i}.tar.gz.tmp"));
                        let out = std::fs::File::create(&tmp)
                            .unwrap_or_else(|e| panic!("cannot create {}: {e}", tmp.display()));
                        run(
                            Command::new("gzip")
                                .args(["-n", "-6", "-c"])
                                .arg(&tar)
                                .stdout(out),
                            "gzip",
                        );
                        let digest = format!("sha256:{}", sha256_file(&tmp));
                        std::fs::rename(&tmp, &gz).expect("rename a gzipped layer");
                        // Written last: it says the gzipped layer is complete.
                        std::fs::write(&digest_file, &digest).expect("write a layer digest");
                    }
                    let digest = std::fs::read_to_string(&digest_file)
                        .expect("read a layer digest")
                        .trim()
                        .to_owned();
                    (gz, media_type::LAYER_TAR_GZIP, digest)
                }
            };
            let descriptor = Descriptor {
                media_type: media_type.to_owned(),
                digest,
                size: stamp(&file).0,
            };
            (file, descriptor, diff_id.to_owned())
        })
        .collect();
    drop(lock);
    layers
}

/// An image with Python and the Azure IoT device SDK, built from this machine's Python (see
/// [`python_rootfs`]) with no download: two layers, [`busybox_rootfs`] (so `sh` and the usual
/// applets work) below [`python_rootfs`], with `config` (`PATH=/usr/local/bin:/bin` when it
/// gives no `PATH`), at `out`, tagged `tag`. Its configuration is the caller's, but its layers
/// are built once and cached under `target/verge-images/` (see the module documentation),
/// keyed by the interpreter, its version and the venv's packages: later calls, in this run or
/// later ones, only copy them into `out`. Panics when the venv is missing (`tests/setup
/// --clients`).
pub fn python_image(
    config: &ImageConfig,
    compression: Compression,
    out: &Path,
    tag: &str,
) -> OciLayout {
    let layers = python_layers(compression);
    let mut config = config.clone();
    if !config.env.iter().any(|e| e.starts_with("PATH=")) {
        config
            .env
            .insert(0, format!("PATH={PYTHON_PREFIX}/bin:/bin"));
    }
    let writer = LayoutWriter::new(out);
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for (file, descriptor, diff_id) in layers {
        writer.add_known(&file, &descriptor);
        descriptors.push(descriptor);
        diff_ids.push(diff_id);
    }
    let config = writer.add_json(&image_config_json(&config, &diff_ids), media_type::CONFIG);
    writer.finish(tag, config, descriptors, diff_ids)
}

/// What a wasm artifact's config says about the component (`component` in the CNCF config):
/// its world's imports and exports (interface names such as `wasi:logging/logging`, or plain
/// names), and optionally a target world.
#[derive(Debug, Clone, Default)]
pub struct WasmComponentInfo {
    /// `component.exports`.
    pub exports: Vec<String>,
    /// `component.imports`.
    pub imports: Vec<String>,
    /// `component.target` (null when `None`).
    pub target: Option<String>,
}

/// Builds a CNCF wasm OCI artifact layout at `out` from the component `wasm`, tagged `tag`:
/// config `application/vnd.wasm.config.v0+json` = `{created, architecture: "wasm", os:
/// "wasip2", layerDigests: [layer], component: {exports, imports, target}}`, one layer
/// `application/wasm` holding the file's bytes unchanged.
pub fn build_wasm_artifact(
    wasm: &Path,
    info: &WasmComponentInfo,
    out: &Path,
    tag: &str,
) -> OciLayout {
    let writer = LayoutWriter::new(out);
    let layer = writer.add_file(wasm, media_type::WASM_LAYER, true);
    let config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.digest],
        "component": {
            "exports": info.exports,
            "imports": info.imports,
            "target": info.target,
        },
    });
    let config = writer.add_json(&config, media_type::WASM_CONFIG);
    writer.finish(tag, config, vec![layer], Vec::new())
}
