//! The IoT Edge workload API for container modules: one Unix socket per module, through which
//! the module's SDK gets the trust bundle, has its SAS tokens signed by its key (which never
//! leaves the key store), and gets server certificates (see [`routes`] for the API).
//!
//! ```ignore
//! let workload = Workload::new(dir, Arc::new(EdgeAuthority::new(registry, ca)), callers)?;
//! let mount = workload.listen("filter")?;   // <dir>/filter/workload.sock, idempotent
//! // the container runtime bind-mounts `mount` at /var/run/iotedge and sets
//! // IOTEDGE_WORKLOADURI=unix:///var/run/iotedge/workload.sock
//! workload.retain(|module| deployed.contains(module)); // closes the others' sockets
//! ```
//!
//! # Who may call
//!
//! The socket is mounted into the module's container only, but its file is on the host, so the
//! caller is checked as aziot-edged checks it: the peer's PID (`SO_PEERCRED`) must belong to
//! that module's container. [`Callers`] answers which module a PID is a process of (the
//! container runtime knows its containers' cgroups); anyone else gets 403 on every request.
//!
//! The sockets are `0666` in directories `0755`: the caller check, not file modes, is the
//! access control, so a module running as any user can connect.

pub mod routes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use verge_identity::Registry;
use verge_tls::EdgeCa;

pub use routes::{API_VERSION, Answer, Authority, IssuedServerCert};

/// The socket's file name in a module's directory.
pub const SOCKET: &str = "workload.sock";
/// Where a module's directory is mounted in its container.
pub const MOUNT_POINT: &str = "/var/run/iotedge";
/// `IOTEDGE_WORKLOADURI` for a container whose directory is at [`MOUNT_POINT`].
pub const WORKLOAD_URI: &str = "unix:///var/run/iotedge/workload.sock";
/// `IOTEDGE_AUTHSCHEME`.
pub const AUTH_SCHEME: &str = "sasToken";

/// Largest request body read.
const MAX_BODY: usize = 64 * 1024;
/// The longest path a Unix socket can have (`sun_path`, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Which module a process belongs to.
pub trait Callers: Send + Sync + 'static {
    /// The module whose container process `pid` (in this host's PID namespace) is, if any.
    fn module_of(&self, pid: u32) -> Option<String>;
}

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A file-system or socket operation failed.
    #[error("workload socket {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The socket's path is longer than a Unix socket address allows.
    #[error(
        "workload socket {0} is longer than {MAX_SOCKET_PATH} bytes: configure a shorter run directory"
    )]
    PathTooLong(PathBuf),
}

/// The modules' keys and the edge CA, for the workload API.
#[derive(Debug)]
pub struct EdgeAuthority {
    registry: Arc<Registry>,
    ca: EdgeCa,
}

impl EdgeAuthority {
    /// Signs with `registry`'s module keys; certificates from `ca`.
    pub fn new(registry: Arc<Registry>, ca: EdgeCa) -> Self {
        Self { registry, ca }
    }
}

impl Authority for EdgeAuthority {
    fn sign(&self, module: &str, data: &[u8]) -> Result<[u8; 32], String> {
        // The identity normally exists (it follows the deployment); it is made here if the
        // module asks first.
        let record = self
            .registry
            .ensure_module(module)
            .map_err(|e| e.to_string())?;
        self.registry
            .sign(&record.identity, data)
            .map_err(|e| e.to_string())
    }

    fn trust_bundle(&self) -> String {
        self.ca.trust_bundle_pem()
    }

    fn server_certificate(
        &self,
        names: &[String],
        not_after: SystemTime,
    ) -> Result<IssuedServerCert, String> {
        let not_after = not_after.min(self.ca.not_after());
        let issued = verge_tls::issue_server_cert_with_software_key(&self.ca, names, not_after)
            .map_err(|e| e.to_string())?;
        Ok(IssuedServerCert {
            certificate: issued.cert_pem,
            private_key: issued.key_pem,
            not_after,
        })
    }
}

/// The workload API's sockets. Cheap to clone.
#[derive(Clone)]
pub struct Workload {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    authority: Arc<dyn Authority>,
    callers: Arc<dyn Callers>,
    listeners: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let listeners = self
            .listeners
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, task) in listeners.drain() {
            task.abort();
        }
    }
}

impl Workload {
    /// Sockets under `dir` (created `0755`), answering with `authority`'s keys, for the callers
    /// `callers` places.
    pub fn new(
        dir: impl Into<PathBuf>,
        authority: Arc<dyn Authority>,
        callers: Arc<dyn Callers>,
    ) -> Result<Self, WorkloadError> {
        let dir = dir.into();
        create_dir(&dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                authority,
                callers,
                listeners: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The directory of module `module`'s socket (what the container mounts).
    pub fn module_dir(&self, module: &str) -> PathBuf {
        self.inner.dir.join(dir_name(module))
    }

    /// Opens module `module`'s socket if it is not open; returns its directory. Must be called
    /// within a tokio runtime.
    pub fn listen(&self, module: &str) -> Result<PathBuf, WorkloadError> {
        let dir = self.module_dir(module);
        let path = dir.join(SOCKET);
        let mut listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = listeners.get(module)
            && !task.is_finished()
            && path.exists()
        {
            return Ok(dir);
        }
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(WorkloadError::PathTooLong(path));
        }
        create_dir(&dir)?;
        let io = |source| WorkloadError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let listener = UnixListener::bind(&path).map_err(io)?;
        set_mode(&path, 0o666).map_err(io)?;
        let task = tokio::spawn(serve(
            listener,
            module.to_owned(),
            Arc::clone(&self.inner.authority),
            Arc::clone(&self.inner.callers),
        ));
        if let Some(old) = listeners.insert(module.to_owned(), task) {
            old.abort();
        }
        tracing::debug!(module, socket = %path.display(), "workload socket open");
        Ok(dir)
    }

    /// Closes and removes the sockets of the modules `keep` refuses.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<String> = listeners.keys().filter(|m| !keep(m)).cloned().collect();
        for module in gone {
            if let Some(task) = listeners.remove(&module) {
                task.abort();
            }
            let dir = self.module_dir(&module);
            let _ = std::fs::remove_file(dir.join(SOCKET));
            let _ = std::fs::remove_dir(&dir);
            tracing::debug!(module, "workload socket closed");
        }
    }
}

/// A module name as a directory name: `[A-Za-z0-9_-]` kept, anything else `%XX` (so `.` and
/// `..` cannot be produced, and two names never share a directory).
fn dir_name(module: &str) -> String {
    let mut out = String::with_capacity(module.len());
    for b in module.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn create_dir(dir: &Path) -> Result<(), WorkloadError> {
    let io = |source| WorkloadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    set_mode(dir, 0o755).map_err(io)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

async fn serve(
    listener: UnixListener,
    module: String,
    authority: Arc<dyn Authority>,
    callers: Arc<dyn Callers>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(module, "workload socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let caller = check_caller(&stream, &module, callers.as_ref());
        tokio::spawn(connection(
            stream,
            module.clone(),
            caller,
            Arc::clone(&authority),
        ));
    }
}

/// `Ok` if the peer is a process of `module`'s container, else the reason.
fn check_caller(stream: &UnixStream, module: &str, callers: &dyn Callers) -> Result<(), String> {
    let pid = stream
        .peer_cred()
        .ok()
        .and_then(|cred| cred.pid())
        .and_then(|pid| u32::try_from(pid).ok())
        .ok_or_else(|| "the caller's process id is unknown".to_owned())?;
    let bare = |m: &str| m.strip_prefix('$').unwrap_or(m).to_owned();
    match callers.module_of(pid) {
        Some(found) if bare(&found) == bare(module) => Ok(()),
        Some(found) => Err(format!(
            "process {pid} belongs to module {found:?}, not {module:?}"
        )),
        None => Err(format!(
            "process {pid} is not a process of module {module:?}'s container"
        )),
    }
}

async fn connection(
    stream: UnixStream,
    module: String,
    caller: Result<(), String>,
    authority: Arc<dyn Authority>,
) {
    if let Err(why) = &caller {
        tracing::warn!(module, "workload API caller refused: {why}");
    }
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let module = module.clone();
        let caller = caller.clone();
        let authority = Arc::clone(&authority);
        async move {
            let answer = match caller {
                Err(why) => Answer::error(403, format!("Forbidden: {why}")),
                Ok(()) => answer(request, &module, authority.as_ref()).await,
            };
            Ok::<_, Infallible>(response(&answer))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn answer(request: Request<Incoming>, module: &str, authority: &dyn Authority) -> Answer {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Answer::error(400, format!("Cannot read the request body: {e}")),
    };
    routes::handle(
        authority,
        module,
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query(),
        &body,
    )
}

fn response(answer: &Answer) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&answer.body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(answer.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_are_safe_and_distinct() {
        assert_eq!(dir_name("filter"), "filter");
        assert_eq!(dir_name("my_module-2"), "my_module-2");
        assert_eq!(dir_name(".."), "%2E%2E");
        assert_eq!(dir_name("$edgeHub"), "%24edgeHub");
        assert_ne!(dir_name("a.b"), dir_name("a%2Eb"));
    }
}
