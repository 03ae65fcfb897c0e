//! A real OCI registry on loopback for the container tests: Debian's `docker-registry` (the
//! CNCF distribution registry 2.8.2, binary `/usr/bin/docker-registry`, run as
//! `docker-registry serve CONFIG`), with its own configuration and storage in a temporary
//! directory, on `127.0.0.1:<free port>`, over plain HTTP.
//!
//! ```ignore
//! let registry = Registry::start();                 // htpasswd auth, generated user/password
//! let image = images::busybox_image(&ImageConfig::cmd(&["echo", "hi"]), Compression::Gzip,
//!                                   &out.join("busybox"), "v1");
//! let digest = registry.push(&image, "busybox");    // "sha256:…" == image.manifest.digest
//! let reference = registry.reference("busybox", "v1"); // "127.0.0.1:PORT/busybox:v1"
//! let (user, password) = (registry.username(), registry.password());
//! let manifest = registry.manifest("busybox", "v1"); // GET /v2/busybox/manifests/v1
//! ```
//!
//! [`Registry::start`] protects every request with htpasswd (HTTP Basic: a bcrypt line made by
//! `htpasswd -Bbn`, from apache2-utils); [`Registry::start_without_auth`] serves anyone. Drop
//! stops it and removes its storage.
//!
//! # What was found on the test machine (Debian bookworm, 2 cores)
//!
//! - Packages: docker-registry 2.8.2+ds1-1, skopeo 1.9.3+ds1, apache2-utils (htpasswd). Their
//!   postinst does not start a system registry here (no systemd). The registry listens 0.02–0.04
//!   s after spawn.
//! - htpasswd auth works over plain HTTP on loopback (distribution only logs that htpasswd
//!   "should" be used with TLS). A request without credentials, or with a wrong password, gets
//!   `401` with `Www-Authenticate: Basic realm="verge-test-registry"`; `ctr images pull` with
//!   `--user U:WRONG` fails with "pulling from host 127.0.0.1:PORT failed with status code
//!   [manifests v1]: 401 Unauthorized".
//! - Clients: skopeo needs `--dest-tls-verify=false` (plain HTTP), and `--insecure-policy` where
//!   `/etc/containers/policy.json` may be missing; ctr needs `--plain-http` (and `--user U:P`).
//!   An OCI client crate must be told to use HTTP for `127.0.0.1:PORT` (oci-client:
//!   `ClientProtocol::Http` or `HttpsExcept(vec!["127.0.0.1:PORT"])`).
//! - **skopeo recompresses**: pushing an uncompressed layer (`…layer.v1.tar`) to a `docker://`
//!   destination gzips it and rewrites the manifest (new layer and manifest digests) unless given
//!   `--preserve-digests`, which [`Registry::push`] passes, so the pushed manifest digest is the
//!   layout's ([`crate::images::OciLayout::manifest`]).
//! - **Wasm OCI artifacts: skopeo 1.9.3 pushes them as they are** (config
//!   `application/vnd.wasm.config.v0+json`, layer `application/wasm`), with or without
//!   `--preserve-digests` (it does not try to compress an unknown layer type), and the registry
//!   stores and serves them unchanged: no hand-written upload is needed. (`ctr images pull` of
//!   such an artifact is not expected to work: containerd cannot unpack that config type; Verge
//!   fetches the blobs itself.)
//! - Times on the 2-core VM: building the busybox image (tar, gzip, sha256sum) 0.15–0.2 s;
//!   pushing it (1 MB) with skopeo 0.08–0.17 s; pushing a wasm artifact 0.1–0.24 s (skopeo's
//!   own start-up dominates both).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::images::{OciLayout, TempDir, media_type};

/// Where Debian's `docker-registry` package installs the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long [`Registry::start`] waits for the port to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running registry, stopped and its storage removed on drop.
#[derive(Debug)]
pub struct Registry {
    dir: TempDir,
    child: Option<Child>,
    addr: SocketAddr,
    credentials: Option<(String, String)>,
    startup: Duration,
}

/// An HTTP response from the registry (see [`Registry::get`]).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The response headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `Content-Type`.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// `Docker-Content-Digest`.
    pub fn digest(&self) -> Option<&str> {
        self.header("docker-content-digest")
    }

    /// The body as JSON. Panics if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "registry response ({}) is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Registry {
    /// Starts a registry with htpasswd authentication: a generated user (`verge-XXXXXX`) and
    /// password ([`Registry::username`], [`Registry::password`]). Panics, with the registry's
    /// log, if it cannot start (`tests/setup --containers` installs what it needs).
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// Starts a registry that needs no credentials.
    pub fn start_without_auth() -> Self {
        Self::start_with(false)
    }

    fn start_with(auth: bool) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} not found: install docker-registry (tests/setup --containers)"
        );
        let dir = TempDir::new("registry");
        let credentials = auth.then(|| {
            let user = format!("verge-{}", &random_hex(3));
            let password = random_hex(12);
            let out = Command::new("htpasswd")
                .args(["-Bbn", &user, &password])
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run htpasswd ({e}): install apache2-utils (tests/setup --containers)")
                });
            assert!(
                out.status.success(),
                "htpasswd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert!(
                line.starts_with(&format!("{user}:$2")),
                "unexpected htpasswd output: {line:?}"
            );
            std::fs::write(dir.join("htpasswd"), format!("{line}\n")).expect("htpasswd file");
            (user, password)
        });
        // A free port is found by binding port 0 and letting it go; another process may take it
        // before the registry binds it, so a start that fails retries on a new port.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            std::fs::write(dir.join("config.yml"), config_yml(dir.path(), addr, auth))
                .expect("registry config");
            let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
            let log_err = log.try_clone().expect("registry log");
            let begun = Instant::now();
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(dir.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {REGISTRY_BIN}: {e}"));
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    last_log =
                        std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                    break;
                }
                if TcpStream::connect(addr).is_ok() {
                    return Self {
                        dir,
                        child: Some(child),
                        addr,
                        credentials,
                        startup: begun.elapsed(),
                    };
                }
                if begun.elapsed() > START_TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the registry did not listen on {addr} within {START_TIMEOUT:?}:\n{}",
                        std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !last_log.contains("address already in use") {
                break;
            }
        }
        panic!("the registry exited at start:\n{last_log}");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT/{name}:{tag}`, a reference to give Verge (or `ctr`, `skopeo`).
    pub fn reference(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.addr)
    }

    /// The user and password, if it was started with authentication.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The user name. Panics if it was started without authentication.
    pub fn username(&self) -> &str {
        self.credentials()
            .expect("registry started without authentication")
            .0
    }

    /// The password. Panics if it was started without authentication.
    pub fn password(&self) -> &str {
        self.credentials()
            .expect("registry started without authentication")
            .1
    }

    /// How long the registry took to listen after it was spawned.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// The registry's log so far (one access-log line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Its storage directory (`docker/registry/v2/…`).
    pub fn storage(&self) -> std::path::PathBuf {
        self.dir.join("data")
    }

    /// Pushes `layout` as `{name}:{layout.tag}` with skopeo and the registry's credentials;
    /// returns the pushed manifest's digest (`sha256:…`, equal to `layout.manifest.digest`).
    /// Panics with skopeo's output if the push fails.
    pub fn push(&self, layout: &OciLayout, name: &str) -> String {
        self.push_as(layout, name, &layout.tag)
    }

    /// [`Registry::push`] under another tag.
    pub fn push_as(&self, layout: &OciLayout, name: &str, tag: &str) -> String {
        self.try_push(layout, name, tag, self.credentials())
            .unwrap_or_else(|e| panic!("{e}\n--- registry log ---\n{}", self.log()))
    }

    /// Pushes `layout` as `{name}:{tag}` with `credentials` (none: anonymously), with
    /// `skopeo --insecure-policy copy --preserve-digests --dest-tls-verify=false`. Returns the
    /// pushed manifest digest, or skopeo's error output.
    pub fn try_push(
        &self,
        layout: &OciLayout,
        name: &str,
        tag: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<String, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let digest_file = self.dir.join(format!(
            "pushed-{}.digest",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        match credentials {
            Some((user, password)) => cmd.arg("--dest-creds").arg(format!("{user}:{password}")),
            None => cmd.arg("--dest-no-creds"),
        };
        cmd.arg("--digestfile")
            .arg(&digest_file)
            .arg(layout.skopeo_ref())
            .arg(format!("docker://{}", self.reference(name, tag)))
            .stdin(Stdio::null());
        let out = cmd.output().map_err(|e| {
            format!("cannot run skopeo ({e}): install it with tests/setup --containers")
        })?;
        if !out.status.success() {
            return Err(format!(
                "skopeo copy {} to {} failed ({}): {}{}",
                layout.skopeo_ref(),
                self.reference(name, tag),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let digest = std::fs::read_to_string(&digest_file)
            .map_err(|e| format!("skopeo wrote no digest file: {e}"))?;
        let _ = std::fs::remove_file(&digest_file);
        let digest = digest.trim().to_owned();
        if !digest.starts_with("sha256:") {
            return Err(format!("unexpected digest from skopeo: {digest:?}"));
        }
        Ok(digest)
    }

    /// `GET http://HOST{path}` (path starting with `/v2/`) with curl, with `accept` types and the
    /// registry's credentials (if any).
    pub fn get(&self, path: &str, accept: &[&str]) -> HttpResponse {
        self.get_as(path, accept, self.credentials())
    }

    /// [`Registry::get`] with the given credentials (none: anonymously). Panics if curl cannot
    /// reach the registry; any HTTP status is returned.
    pub fn get_as(
        &self,
        path: &str,
        accept: &[&str],
        credentials: Option<(&str, &str)>,
    ) -> HttpResponse {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let headers_file = self.dir.join(format!("get-{n}.headers"));
        let body_file = self.dir.join(format!("get-{n}.body"));
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "--max-time", "30"])
            .arg("--dump-header")
            .arg(&headers_file)
            .arg("--output")
            .arg(&body_file);
        if let Some((user, password)) = credentials {
            cmd.arg("--user").arg(format!("{user}:{password}"));
        }
        if !accept.is_empty() {
            cmd.arg("--header")
                .arg(format!("Accept: {}", accept.join(", ")));
        }
        let url = format!("http://{}{path}", self.addr);
        let out = cmd
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
        assert!(
            out.status.success(),
            "curl {url} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let raw_headers = std::fs::read_to_string(&headers_file).unwrap_or_default();
        let body = std::fs::read(&body_file).unwrap_or_default();
        let _ = std::fs::remove_file(&headers_file);
        let _ = std::fs::remove_file(&body_file);
        let mut lines = raw_headers.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status line from {url}: {raw_headers:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        HttpResponse {
            status,
            headers,
            body,
        }
    }

    /// `GET /v2/{name}/manifests/{reference}` accepting OCI and Docker manifests and indexes.
    pub fn manifest(&self, name: &str, reference: &str) -> HttpResponse {
        self.get(&format!("/v2/{name}/manifests/{reference}"), MANIFEST_TYPES)
    }

    /// `GET /v2/{name}/blobs/{digest}`.
    pub fn blob(&self, name: &str, digest: &str) -> HttpResponse {
        self.get(&format!("/v2/{name}/blobs/{digest}"), &[])
    }
}

/// The manifest media types [`Registry::manifest`] accepts.
pub const MANIFEST_TYPES: &[&str] = &[
    media_type::MANIFEST,
    media_type::INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- registry log tail ---\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn config_yml(dir: &Path, addr: SocketAddr, auth: bool) -> String {
    let mut config = format!(
        "version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: {secret}
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
",
        data = dir.join("data").display(),
        secret = random_hex(16),
    );
    if auth {
        config.push_str(&format!(
            "auth:
  htpasswd:
    realm: verge-test-registry
    path: {}
",
            dir.join("htpasswd").display()
        ));
    }
    config
}

/// `n` random bytes from `/dev/urandom`, in hex.
fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
