//! [`ContainerRuntime`]: Verge's [`ModuleRuntime`] for modules of `"type": "docker"`, run as OCI
//! containers by containerd (runc v2 shim).
//!
//! - **prepare**: the image (`settings.image`) is looked up ([`Containerd::image`]) and, when
//!   absent, pulled with the registry's credentials (the deployment's `registryCredentials` in
//!   [`ModuleSpec::registry_credentials`], else those of [`ContainerRuntime::set_credentials`]),
//!   as the module's [`PullPolicy`] says (`on-create`: pull if absent; `never`: absent is an
//!   error). `createOptions` are parsed ([`crate::create_options`]): what Verge cannot honour
//!   is refused, by key, before anything runs.
//! - **start**: a lease (so nothing is collected mid-way), `Snapshots.Prepare` of the rootfs
//!   (key = the container id) on the image's chain ID, the runtime spec ([`crate::spec`]),
//!   `Containers.Create` (labels `verge.module`, `verge.image`, `verge.generation`), the stdio
//!   FIFOs ([`crate::stdio`]), `Tasks.Create`, `Tasks.Start`; then the lease is deleted (the
//!   container record holds its snapshot). A failure at any step undoes the ones before.
//! - **running**: a supervisor task waits on `Tasks.Wait`, and on a stop request sends SIGTERM
//!   to every process of the container, waits the grace period, then SIGKILL.
//! - **after the exit**: `Tasks.Delete`, `Containers.Delete`, `Snapshots.Remove`, the FIFOs
//!   drained and removed; only then is the exit reported with the container's exit status
//!   (128 + signal for a process a signal ended: 137 after SIGKILL, 143 after an unhandled
//!   SIGTERM).
//!
//! Namespaces: pid, ipc, uts, mount; **host networking** (no network namespace), see
//! [`crate::spec`]. Times on the 2-core test VM: `start` (image present: lease, prepare,
//! create, FIFOs, task create and start) 0.1–0.15 s; a stop of a process that handles SIGTERM
//! about 0.05 s, cleanup included.
//!
//! # Traps
//!
//! - **pid 1 ignores SIGTERM unless it handles it**: the kernel drops signals the init of a pid
//!   namespace has no handler for, so a plain `sleep` (or a shell without a `trap` on TERM) as
//!   the image's command does not die on SIGTERM and is SIGKILLed after the grace period
//!   (exit 137), as under Docker without `--init`. A shell that `trap`s TERM ends at once.
//! - **The FIFOs' read ends belong to this process.** If Verge exits while a container runs,
//!   nothing reads them; from the shim's code (not tested here) its writes then fail with EPIPE,
//!   its copy loop ends, and a container writing more than a
//!   pipe buffer then blocks. Adopting running containers after a restart needs another stdio
//!   design (a logging binary, or files), not just reopening the FIFOs.
//! - `Tasks.Wait` is retried (60 times, 1 s apart) when containerd does not answer, so a
//!   containerd restart does not read as a module exit (the shim keeps the container).
//! - The runc options' `root` ([`ContainerOptions::runc_root`]) moves runc's state out of the
//!   global `/run/containerd/runc/<namespace>`; the cgroup `/<namespace>/<id>` stays global, so
//!   two Verge instances on one host need distinct namespaces.
//!
//! Container ids are `<module>-<hex nanoseconds>`, new for each start (the module name reduced
//! to `[A-Za-z0-9-]`): a container a failed cleanup left behind never blocks the next start, and
//! runc's state and cgroup (`/<namespace>/<id>`) are never shared. The `verge.module` label
//! names the module, for a later adoption of running containers after a daemon restart (not
//! done here: a restarted daemon starts new containers).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use containerd_client::tonic;
use containerd_client::types::Mount;
use verge_runtime::{
    BoxFuture, Exit, ModuleContext, ModuleControl, ModuleHandle, ModuleLog, ModuleRuntime,
    ModuleSpec, Prepared, PullPolicy, RuntimeError, Stream,
};

use crate::client::{Containerd, Lease};
use crate::container::NewContainer;
use crate::create_options::{self, CreateOptions};
use crate::error::{Error, PullError};
use crate::pull::{Progress, PulledImage};
use crate::registry::{Credentials, credentials_for};
use crate::spec::{self, SpecInput};
use crate::stdio::Stdio;
use crate::workload::{WorkloadSockets, module_of_cgroup};

/// Module label: the module's name.
pub const LABEL_MODULE: &str = "verge.module";
/// Module label: the image reference.
pub const LABEL_IMAGE: &str = "verge.image";
/// Module label: the module's generation id.
pub const LABEL_GENERATION: &str = "verge.generation";
/// Module label: a digest of the definition the container was made from (image, createOptions,
/// env, version), so that a restarted daemon adopts a running container only for the same
/// definition.
pub const LABEL_DEFINITION: &str = "verge.definition";

const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

/// How often, and how many times, a failed `Tasks.Wait` (containerd restarting) is retried.
const WAIT_RETRY: Duration = Duration::from_secs(1);
const WAIT_RETRIES: u32 = 60;

/// How the container runtime is set up.
#[derive(Clone, Debug)]
pub struct ContainerOptions {
    /// Where the stdio FIFOs go (`<dir>/<container id>/{stdout,stderr}`); the shim, running
    /// on this host as root, opens them. Default `/run/verge/fifo`.
    pub fifo_dir: PathBuf,
    /// runc's state directory (the runc options' `root`); `None`: the shim's default,
    /// `/run/containerd/runc` (shared by every containerd on the host, per namespace and id).
    pub runc_root: Option<PathBuf>,
    /// Host files bind-mounted read-only into every container (host networking needs the
    /// host's resolver configuration): `/etc/resolv.conf` and `/etc/hosts` by default, each
    /// only if it exists.
    pub host_files: Vec<PathBuf>,
    /// The workload API: each container gets its module's socket directory mounted and the
    /// variables that point its SDK there. `None`: no workload API (the module must bring its
    /// own credentials).
    pub workload: Option<Arc<dyn WorkloadSockets>>,
}

impl Default for ContainerOptions {
    fn default() -> Self {
        Self {
            fifo_dir: PathBuf::from("/run/verge/fifo"),
            runc_root: None,
            host_files: vec!["/etc/resolv.conf".into(), "/etc/hosts".into()],
            workload: None,
        }
    }
}

/// Runs `docker` modules as containers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ContainerRuntime {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    containerd: Containerd,
    options: ContainerOptions,
    credentials: RwLock<Vec<Credentials>>,
    last_id: AtomicU64,
    /// The containers this runtime runs: container id → module.
    running: Mutex<HashMap<String, String>>,
}

impl ContainerRuntime {
    /// A runtime using `containerd` (its namespace and snapshotter).
    pub fn new(containerd: Containerd, options: ContainerOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                containerd,
                options,
                credentials: RwLock::new(Vec::new()),
                last_id: AtomicU64::new(0),
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The containerd connection.
    pub fn containerd(&self) -> &Containerd {
        &self.shared.containerd
    }

    /// The module whose running container process `pid` (in this host's PID namespace) is:
    /// the container whose cgroup (`/proc/<pid>/cgroup`) this runtime made. The workload API
    /// checks its callers with it.
    pub fn module_of_pid(&self, pid: u32) -> Option<String> {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let running = self
            .shared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        module_of_cgroup(&cgroup, self.shared.containerd.namespace(), |id| {
            running.get(id).cloned()
        })
    }

    /// Credentials used for a registry the module's [`ModuleSpec::registry_credentials`] do not
    /// name (the daemon's own; replaces the previous ones).
    pub fn set_credentials(&self, credentials: Vec<Credentials>) {
        *self
            .shared
            .credentials
            .write()
            .unwrap_or_else(PoisonError::into_inner) = credentials;
    }

    /// The module's image, pulled first if absent and the policy allows; a pull's progress goes
    /// to `log` when given.
    pub async fn ensure_image(
        &self,
        spec: &ModuleSpec,
        log: Option<&ModuleLog>,
    ) -> Result<PulledImage, RuntimeError> {
        if spec.image.is_empty() {
            return Err(RuntimeError::Invalid(format!(
                "module {}: settings.image is empty",
                spec.name
            )));
        }
        let containerd = &self.shared.containerd;
        match containerd.image(&spec.image).await {
            Ok(Some(image)) => return Ok(image),
            Ok(None) => {}
            Err(PullError::Containerd(e)) if e.code() == Some(tonic::Code::Unavailable) => {
                return Err(RuntimeError::Failed(format!(
                    "cannot reach containerd at {} ({}): container modules need a running \
                     containerd",
                    containerd.socket().display(),
                    e.message()
                )));
            }
            Err(e) => return Err(pull_error(e)),
        }
        if spec.pull_policy == PullPolicy::Never {
            return Err(RuntimeError::NotFound(format!(
                "{} is not present in containerd (namespace {}) and the module's imagePullPolicy is never",
                spec.image,
                containerd.namespace()
            )));
        }
        let fallback = self
            .shared
            .credentials
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let credentials = credentials_for(&spec.registry_credentials, &spec.image)
            .or_else(|| credentials_for(&fallback, &spec.image));
        let module = spec.name.as_str();
        let shown = Mutex::new(PullShown::default());
        let say = |line: String| {
            if let Some(log) = log {
                log.push(Stream::Runtime, line);
            }
        };
        let image = containerd
            .pull(&spec.image, credentials, |progress| {
                match &progress {
                    Progress::Resolved {
                        manifest_digest,
                        layers,
                        size,
                    } => tracing::info!(module, %manifest_digest, layers, size, "pulling"),
                    Progress::Blob {
                        digest,
                        size,
                        present,
                    } => tracing::debug!(module, %digest, size, present, "blob"),
                    Progress::Unpacked { index, present, .. } => {
                        tracing::debug!(module, index, present, "layer unpacked")
                    }
                }
                let line = shown
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .line(&spec.image, &progress);
                if let Some(line) = line {
                    say(line);
                }
            })
            .await
            .map_err(|e| {
                say(format!("pull of {} failed: {e}", spec.image));
                pull_error(e)
            })?;
        tracing::info!(module, image = %image.name, elapsed = ?image.elapsed, "pulled");
        say(format!(
            "pulled {} ({}) in {:.1} s",
            image.name,
            image.manifest_digest,
            image.elapsed.as_secs_f64()
        ));
        Ok(image)
    }

    async fn start_container(
        &self,
        spec: &ModuleSpec,
        context: ModuleContext,
    ) -> Result<ModuleHandle, RuntimeError> {
        let begun = Instant::now();
        check_kind(spec)?;
        let options = check_create_options(spec)?;
        if let Some(handle) = self.adopt(spec, &context).await {
            return Ok(handle);
        }
        let image = self.ensure_image(spec, Some(&context.log)).await?;
        let containerd = &self.shared.containerd;
        let id = self.container_id(&spec.name);
        let lease = containerd.create_lease("container").await.map_err(failed)?;
        let mut undo = Undo {
            containerd,
            id: &id,
            snapshot: false,
            container: false,
            task: false,
            stdio: None,
        };
        let result = self
            .create_and_start(spec, &options, &context, &image, &lease, &mut undo)
            .await;
        if let Err(e) = containerd.delete_lease(&lease).await {
            tracing::warn!(lease = lease.id, "cannot delete the container's lease: {e}");
        }
        let pid = match result {
            Ok(pid) => pid,
            Err(e) => {
                undo.run().await;
                return Err(e);
            }
        };
        let stdio = undo.stdio.take();
        let message = format!(
            "started container {id} (pid {pid}, image {}) in {:?}",
            image.name,
            begun.elapsed()
        );
        tracing::info!(module = spec.name, "{message}");
        context.log.push(Stream::Runtime, message);
        Ok(self.supervise(spec, id, stdio, &context))
    }

    /// Containers of `spec`'s module left by an earlier run of the daemon (it was killed, or
    /// crashed): the one still running the same definition is adopted (its handle returned,
    /// its stdio read again); any other is removed.
    async fn adopt(&self, spec: &ModuleSpec, context: &ModuleContext) -> Option<ModuleHandle> {
        let containerd = &self.shared.containerd;
        let found = match containerd
            .containers_labelled(LABEL_MODULE, &spec.name)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(
                    module = spec.name,
                    "cannot list the module's containers: {e}"
                );
                return None;
            }
        };
        let definition = definition_digest(spec);
        let mut adopted = None;
        for (id, labels) in found {
            if self.is_ours(&id) {
                continue;
            }
            let same = labels.get(LABEL_DEFINITION) == Some(&definition);
            let running = containerd.task_running(&id).await.unwrap_or(false);
            if adopted.is_none() && same && running {
                adopted = Some(id);
            } else {
                tracing::info!(
                    module = spec.name,
                    id,
                    same,
                    running,
                    "removing a container an earlier run left"
                );
                self.remove_leftover(&id).await;
            }
        }
        let id = adopted?;
        if let Some(sockets) = &self.shared.options.workload
            && let Err(e) = sockets.open(&spec.name)
        {
            tracing::warn!(module = spec.name, "the workload API socket: {e}");
        }
        let stdio = match Stdio::reopen(&self.shared.options.fifo_dir, &id, &context.log) {
            Ok(stdio) => Some(stdio),
            Err(e) => {
                context.log.push(
                    Stream::Runtime,
                    format!("container {id}: its output cannot be read again ({e})"),
                );
                None
            }
        };
        let message =
            format!("adopted container {id}, still running from an earlier run of the daemon");
        tracing::info!(module = spec.name, "{message}");
        context.log.push(Stream::Runtime, message);
        Some(self.supervise(spec, id, stdio, context))
    }

    fn is_ours(&self, id: &str) -> bool {
        self.shared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
    }

    /// Kills and removes a container this run did not start, with its snapshot and FIFOs.
    async fn remove_leftover(&self, id: &str) {
        let containerd = &self.shared.containerd;
        if let Err(e) = containerd.kill_task(id, SIGKILL).await {
            tracing::warn!(id, "removing a leftover container: {e}");
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), containerd.wait_task(id)).await;
        if let Err(e) = containerd.delete_task(id).await {
            tracing::warn!(id, "removing a leftover container: {e}");
        }
        if let Err(e) = containerd.delete_container(id).await {
            tracing::warn!(id, "removing a leftover container: {e}");
        }
        containerd.remove_snapshot(id).await;
        let _ = std::fs::remove_dir_all(self.shared.options.fifo_dir.join(id));
    }

    /// Supervises the running container `id` of `spec`'s module: its handle.
    fn supervise(
        &self,
        spec: &ModuleSpec,
        id: String,
        stdio: Option<Stdio>,
        context: &ModuleContext,
    ) -> ModuleHandle {
        let containerd = &self.shared.containerd;
        let (handle, control) = ModuleHandle::new();
        self.shared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), spec.name.clone());
        let shared = Arc::clone(&self.shared);
        let supervisor = supervise(
            containerd.clone(),
            id.clone(),
            stdio,
            control,
            context.log.clone(),
        );
        tokio::spawn(async move {
            supervisor.await;
            shared
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        });
        handle
    }

    async fn create_and_start(
        &self,
        spec: &ModuleSpec,
        options: &CreateOptions,
        context: &ModuleContext,
        image: &PulledImage,
        lease: &Lease,
        undo: &mut Undo<'_>,
    ) -> Result<u32, RuntimeError> {
        // The container's id: what `undo` removes if a step fails.
        let id = undo.id;
        let containerd = &self.shared.containerd;
        let mounts = containerd
            .prepare_rootfs(lease, id, &image.chain_id)
            .await
            .map_err(failed)?;
        undo.snapshot = true;
        for note in &options.notes {
            tracing::info!(module = spec.name, "{note}");
            context.log.push(Stream::Runtime, note.clone());
        }
        let run = &options.run_config(&image.config.run);
        let user = resolve_user(&run.user, &mounts).map_err(invalid)?;
        let workload = match &self.shared.options.workload {
            Some(sockets) => Some(sockets.open(&spec.name).map_err(|e| {
                RuntimeError::Failed(format!(
                    "module {}: the workload API socket: {e}",
                    spec.name
                ))
            })?),
            None => None,
        };
        let env = context.environment_with(
            spec,
            workload.as_ref().map_or(&[][..], |w| w.env.as_slice()),
        );
        let host_files = self
            .shared
            .options
            .host_files
            .iter()
            .filter(|p| p.is_file())
            .map(|p| (p.display().to_string(), p.display().to_string()))
            .collect();
        let oci_spec = spec::build(&SpecInput {
            run,
            env: &env,
            user,
            hostname: &hostname(&spec.name),
            cgroups_path: format!("/{}/{id}", containerd.namespace()),
            host_files,
            workload: workload
                .as_ref()
                .map(|w| (w.host_dir.display().to_string(), w.container_dir.clone())),
            create_options: Some(options),
        })
        .map_err(|e| match e {
            spec::SpecError::CreateOptions(e) => {
                RuntimeError::Invalid(format!("module {}: {e}", spec.name))
            }
            other => invalid(other),
        })?;
        // createOptions' Labels, which cannot name verge.* (refused when parsed).
        let mut labels: HashMap<String, String> = options.labels.clone().into_iter().collect();
        labels.extend([
            (LABEL_MODULE.to_owned(), spec.name.clone()),
            (LABEL_IMAGE.to_owned(), image.name.clone()),
            (LABEL_GENERATION.to_owned(), context.generation_id.clone()),
            (LABEL_DEFINITION.to_owned(), definition_digest(spec)),
        ]);
        containerd
            .create_container(
                lease,
                NewContainer {
                    id,
                    image: &image.name,
                    spec: &oci_spec,
                    labels,
                    runc_root: self.shared.options.runc_root.as_deref(),
                },
            )
            .await
            .map_err(failed)?;
        undo.container = true;
        let stdio =
            Stdio::create(&self.shared.options.fifo_dir, id, &context.log).map_err(|e| {
                RuntimeError::Failed(format!(
                    "cannot create the stdio FIFOs in {}: {e}",
                    self.shared.options.fifo_dir.display()
                ))
            })?;
        let (stdout, stderr) = (stdio.stdout(), stdio.stderr());
        undo.stdio = Some(stdio);
        containerd
            .create_task(lease, id, mounts, stdout, stderr)
            .await
            .map_err(failed)?;
        undo.task = true;
        containerd.start_task(id).await.map_err(failed)
    }

    /// `<module>-<hex nanoseconds>`, strictly increasing within this process.
    fn container_id(&self, module: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let previous = self.shared.last_id.fetch_max(now, Ordering::Relaxed);
        let unique = if previous >= now {
            self.shared.last_id.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            now
        };
        format!("{}-{unique:x}", id_safe(module))
    }
}

impl ModuleRuntime for ContainerRuntime {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn prepare<'a>(
        &'a self,
        spec: &'a ModuleSpec,
    ) -> BoxFuture<'a, Result<Prepared, RuntimeError>> {
        Box::pin(self.prepare_image(spec, None))
    }

    fn prepare_logged<'a>(
        &'a self,
        spec: &'a ModuleSpec,
        log: &'a ModuleLog,
    ) -> BoxFuture<'a, Result<Prepared, RuntimeError>> {
        Box::pin(self.prepare_image(spec, Some(log)))
    }

    fn start<'a>(
        &'a self,
        spec: &'a ModuleSpec,
        context: ModuleContext,
    ) -> BoxFuture<'a, Result<ModuleHandle, RuntimeError>> {
        Box::pin(self.start_container(spec, context))
    }
}

impl ContainerRuntime {
    async fn prepare_image(
        &self,
        spec: &ModuleSpec,
        log: Option<&ModuleLog>,
    ) -> Result<Prepared, RuntimeError> {
        check_kind(spec)?;
        check_create_options(spec)?;
        let image = self.ensure_image(spec, log).await?;
        Ok(Prepared {
            image_hash: Some(image.manifest_digest),
        })
    }
}

/// A pull's progress as module log lines: what it brings, each blob fetched (with the running
/// total), each layer unpacked.
#[derive(Debug, Default)]
struct PullShown {
    total: i64,
    done: i64,
    layers: usize,
}

impl PullShown {
    fn line(&mut self, image: &str, progress: &Progress) -> Option<String> {
        let mb = |bytes: i64| bytes as f64 / 1_048_576.0;
        match progress {
            Progress::Resolved { layers, size, .. } => {
                (self.total, self.layers) = (*size, *layers);
                Some(format!(
                    "pulling {image}: {layers} layer(s), {:.1} MB",
                    mb(*size)
                ))
            }
            Progress::Blob { size, present, .. } => {
                self.done += size;
                let percent = if self.total > 0 {
                    self.done.saturating_mul(100) / self.total
                } else {
                    100
                };
                let how = if *present { "already there" } else { "fetched" };
                Some(format!(
                    "{how}: {:.1} MB, {:.1} of {:.1} MB ({percent} %)",
                    mb(*size),
                    mb(self.done),
                    mb(self.total)
                ))
            }
            Progress::Unpacked { index, present, .. } => {
                (!present).then(|| format!("unpacked layer {} of {}", index + 1, self.layers))
            }
        }
    }
}

/// What a start created, undone if a later step fails.
struct Undo<'a> {
    containerd: &'a Containerd,
    id: &'a str,
    snapshot: bool,
    container: bool,
    task: bool,
    stdio: Option<Stdio>,
}

impl Undo<'_> {
    async fn run(mut self) {
        let (containerd, id) = (self.containerd, self.id);
        if self.task {
            if let Err(e) = containerd.kill_task(id, SIGKILL).await {
                tracing::warn!(id, "undoing a start: {e}");
            }
            // The kill is asynchronous; Tasks.Delete refuses a running task.
            let _ = tokio::time::timeout(Duration::from_secs(5), containerd.wait_task(id)).await;
            if let Err(e) = containerd.delete_task(id).await {
                tracing::warn!(id, "undoing a start: {e}");
            }
        }
        if self.container
            && let Err(e) = containerd.delete_container(id).await
        {
            tracing::warn!(id, "undoing a start: {e}");
        }
        if self.snapshot {
            containerd.remove_snapshot(id).await;
        }
        if let Some(stdio) = self.stdio.take() {
            stdio.abort();
        }
    }
}

/// A digest of what makes a module's container: its image, createOptions, env and version.
fn definition_digest(spec: &ModuleSpec) -> String {
    use sha2::Digest as _;
    let definition = serde_json::json!({
        "image": spec.image,
        "createOptions": spec.create_options,
        "env": spec.env,
        "version": spec.version,
    });
    let digest = sha2::Sha256::digest(definition.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits for the container to exit (stopping it when asked), cleans up, reports the exit.
async fn supervise(
    containerd: Containerd,
    id: String,
    mut stdio: Option<Stdio>,
    mut control: ModuleControl,
    log: ModuleLog,
) {
    let mut wait = tokio::spawn(wait_exit(containerd.clone(), id.clone()));
    let mut stop: Option<(Instant, bool)> = None;
    let status = tokio::select! {
        status = &mut wait => status,
        grace = control.stop_requested() => {
            let asked = Instant::now();
            tracing::info!(id, ?grace, "stopping: SIGTERM");
            if let Err(e) = containerd.kill_task(&id, SIGTERM).await {
                tracing::warn!(id, "SIGTERM: {e}");
            }
            match tokio::time::timeout(grace, &mut wait).await {
                Ok(status) => {
                    stop = Some((asked, false));
                    status
                }
                Err(_) => {
                    tracing::info!(id, "grace period over: SIGKILL");
                    if let Err(e) = containerd.kill_task(&id, SIGKILL).await {
                        tracing::warn!(id, "SIGKILL: {e}");
                    }
                    stop = Some((asked, true));
                    (&mut wait).await
                }
            }
        }
    };
    let status = status.unwrap_or_else(|e| Err(format!("the wait task failed: {e}")));
    if let Some(stdio) = stdio.as_mut() {
        stdio.release();
    }
    if let Err(e) = containerd.delete_task(&id).await {
        tracing::warn!(id, "cleanup: {e}");
    }
    if let Err(e) = containerd.delete_container(&id).await {
        tracing::warn!(id, "cleanup: {e}");
    }
    containerd.remove_snapshot(&id).await;
    if let Some(stdio) = stdio {
        stdio.finish().await;
    }
    let exit = match status {
        Ok(code) => Exit::new(i64::from(code), describe(code, stop)),
        Err(message) => Exit::new(-1, message),
    };
    tracing::info!(id, code = exit.code, "{}", exit.description);
    log.push(
        Stream::Runtime,
        format!("container {id}: {}", exit.description),
    );
    control.exited(exit);
}

/// `Tasks.Wait`, retried while containerd does not answer (a restart); the exit status.
async fn wait_exit(containerd: Containerd, id: String) -> Result<u32, String> {
    let mut failures = 0;
    loop {
        match containerd.wait_task(&id).await {
            Ok(status) => return Ok(status),
            Err(e) if e.is_not_found() => {
                return Err(format!("container {id}: the task is gone ({e})"));
            }
            Err(e) => {
                failures += 1;
                if failures > WAIT_RETRIES {
                    return Err(format!("container {id}: lost track of the task: {e}"));
                }
                tracing::warn!(id, "Tasks.Wait failed, retrying: {e}");
                tokio::time::sleep(WAIT_RETRY).await;
            }
        }
    }
}

/// An exit's description, for `statusDescription`.
fn describe(code: u32, stop: Option<(Instant, bool)>) -> String {
    let what = match code {
        0 => "exited with code 0".to_owned(),
        129..=192 => {
            let signal = code - 128;
            let name = match signal {
                SIGKILL => "SIGKILL",
                SIGTERM => "SIGTERM",
                2 => "SIGINT",
                6 => "SIGABRT",
                11 => "SIGSEGV",
                _ => "a signal",
            };
            format!("exited with code {code} (killed by {name}, signal {signal})")
        }
        _ => format!("exited with code {code}"),
    };
    match stop {
        None => what,
        Some((asked, false)) => format!("stopped ({what}, {:?} after SIGTERM)", asked.elapsed()),
        Some((asked, true)) => format!(
            "stopped ({what}, SIGKILL after the grace period, {:?} after SIGTERM)",
            asked.elapsed()
        ),
    }
}

/// Resolves the image's `User`; names are looked up in the rootfs's `/etc/passwd` and
/// `/etc/group`, read from the snapshot's directories on this host.
fn resolve_user(user: &str, mounts: &[Mount]) -> Result<spec::User, spec::SpecError> {
    let numeric = user
        .split(':')
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    if user.is_empty() || (numeric && user.contains(':')) {
        return spec::resolve_user(user, None, None);
    }
    let dirs = rootfs_dirs(mounts);
    let passwd = read_first(&dirs, "etc/passwd");
    let group = read_first(&dirs, "etc/group");
    spec::resolve_user(user, passwd.as_deref(), group.as_deref())
}

/// The host directories of a snapshot's mounts, top first: an overlay's `upperdir` then its
/// `lowerdir`s; a bind mount's source (the native snapshotter).
fn rootfs_dirs(mounts: &[Mount]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for mount in mounts {
        match mount.r#type.as_str() {
            "overlay" => {
                let option = |name: &str| {
                    mount
                        .options
                        .iter()
                        .find_map(|o| o.strip_prefix(name).map(str::to_owned))
                };
                if let Some(upper) = option("upperdir=") {
                    dirs.push(PathBuf::from(upper));
                }
                if let Some(lower) = option("lowerdir=") {
                    dirs.extend(lower.split(':').map(PathBuf::from));
                }
            }
            _ => dirs.push(PathBuf::from(&mount.source)),
        }
    }
    dirs
}

fn read_first(dirs: &[PathBuf], rel: &str) -> Option<String> {
    dirs.iter()
        .find_map(|dir| std::fs::read_to_string(Path::new(dir).join(rel)).ok())
}

fn check_kind(spec: &ModuleSpec) -> Result<(), RuntimeError> {
    if spec.kind == "docker" {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "module {} is of type {:?}, not docker",
            spec.name, spec.kind
        )))
    }
}

/// The module's `createOptions`, parsed ([`crate::create_options::parse`]): what Verge cannot
/// honour is refused, by key.
fn check_create_options(spec: &ModuleSpec) -> Result<CreateOptions, RuntimeError> {
    match &spec.create_options {
        None => Ok(CreateOptions::default()),
        Some(value) => create_options::parse(value)
            .map_err(|e| RuntimeError::Invalid(format!("module {}: {e}", spec.name))),
    }
}

/// A module name as a containerd id part: `[A-Za-z0-9]` runs joined by single `-`, at most
/// 48 characters (`module` if nothing is left).
fn id_safe(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 48 {
            break;
        }
    }
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "module".to_owned()
    } else {
        out.to_owned()
    }
}

/// A module name as a hostname label (lower-case, `[a-z0-9-]`, at most 63 characters).
fn hostname(name: &str) -> String {
    let mut label = id_safe(name).to_ascii_lowercase();
    label.truncate(63);
    label
}

fn pull_error(e: PullError) -> RuntimeError {
    match e {
        PullError::Reference { .. } => RuntimeError::Invalid(e.to_string()),
        other => RuntimeError::Failed(other.to_string()),
    }
}

fn failed(e: Error) -> RuntimeError {
    RuntimeError::Failed(e.to_string())
}

fn invalid(e: spec::SpecError) -> RuntimeError {
    RuntimeError::Invalid(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_for_containerd() {
        assert_eq!(id_safe("tempSensor"), "tempSensor");
        assert_eq!(id_safe("my_module.v2"), "my-module-v2");
        assert_eq!(id_safe("__x__"), "x");
        assert_eq!(id_safe("$$"), "module");
        assert_eq!(id_safe(&"a".repeat(100)).len(), 48);
        assert_eq!(hostname("Temp_Sensor"), "temp-sensor");
    }

    #[test]
    fn unsupported_create_options_are_refused_by_name() {
        let mut spec = ModuleSpec {
            name: "m".into(),
            kind: "docker".into(),
            ..ModuleSpec::default()
        };
        assert!(check_create_options(&spec).is_ok());
        spec.create_options = Some(serde_json::json!({}));
        assert!(check_create_options(&spec).is_ok());
        spec.create_options = Some(serde_json::json!({"HostConfig": {"Memory": 8388608}}));
        assert_eq!(
            check_create_options(&spec).expect("supported").memory,
            Some(8_388_608)
        );
        spec.create_options = Some(serde_json::json!({"HostConfig": {"IpcMode": "host"}}));
        let Err(RuntimeError::Invalid(message)) = check_create_options(&spec) else {
            panic!("refused");
        };
        assert_eq!(
            message,
            "module m: createOptions.HostConfig.IpcMode is not supported by Verge"
        );
    }

    #[test]
    fn a_pull_is_shown_blob_by_blob() {
        let mut shown = PullShown::default();
        let resolved = Progress::Resolved {
            manifest_digest: "sha256:m".into(),
            layers: 2,
            size: 4 << 20,
        };
        assert_eq!(
            shown.line("r/i:1", &resolved).as_deref(),
            Some("pulling r/i:1: 2 layer(s), 4.0 MB")
        );
        let blob = |size, present| Progress::Blob {
            digest: "sha256:b".into(),
            size,
            present,
        };
        assert_eq!(
            shown.line("r/i:1", &blob(1 << 20, true)).as_deref(),
            Some("already there: 1.0 MB, 1.0 of 4.0 MB (25 %)")
        );
        assert_eq!(
            shown.line("r/i:1", &blob(3 << 20, false)).as_deref(),
            Some("fetched: 3.0 MB, 4.0 of 4.0 MB (100 %)")
        );
        let unpacked = |present| Progress::Unpacked {
            index: 1,
            chain_id: "sha256:c".into(),
            present,
        };
        assert_eq!(
            shown.line("r/i:1", &unpacked(false)).as_deref(),
            Some("unpacked layer 2 of 2")
        );
        assert_eq!(shown.line("r/i:1", &unpacked(true)), None);
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(describe(3, None), "exited with code 3");
        assert!(describe(137, None).contains("SIGKILL"));
        assert!(describe(143, Some((Instant::now(), false))).starts_with("stopped"));
    }

    #[test]
    fn overlay_mounts_give_upper_then_lower_dirs() {
        let mounts = [Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                "workdir=/w".into(),
                "upperdir=/u".into(),
                "lowerdir=/l1:/l2".into(),
            ],
            ..Mount::default()
        }];
        assert_eq!(
            rootfs_dirs(&mounts),
            [
                PathBuf::from("/u"),
                PathBuf::from("/l1"),
                PathBuf::from("/l2")
            ]
        );
    }
}
