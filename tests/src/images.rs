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
//!
//! Push a layout with [`crate::registry::Registry::push`] (skopeo). Digests come from the
//! `sha256sum` command (coreutils) and tarballs from the `tar` and `gzip` commands, so the kit
//! needs no crate for either.
//!
//! [`TempDir`] is the scratch directory the container kit uses (removed on drop).

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
                .arg(&tar)
                .arg("."),
            &format!("tar of {}", dir.display()),
        );
        diff_ids.push(format!("sha256:{}", sha256_file(&tar)));
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
    let config_json = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": oci_arch(),
        "os": "linux",
        "config": config.to_json(),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": rootfs.iter().map(|_| json!({"created": "1970-01-01T00:00:00Z", "created_by": "verge-tests"})).collect::<Vec<_>>(),
    });
    let config = writer.add_json(&config_json, media_type::CONFIG);
    writer.finish(tag, config, layers, diff_ids)
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
