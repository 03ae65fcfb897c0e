//! Container modules (`"type": "docker"`): the containerd runtime and the workload API, wired
//! together. The runtime mounts each module's workload socket into its container and tells the
//! workload API which module a process belongs to (by its container's cgroup); the workload API
//! signs with the module's key and issues certificates from the edge CA. A module's socket
//! closes when the module leaves the deployment.
//!
//! containerd is connected to when first needed, so the daemon starts without it; a container
//! module deployed while it is absent is reported with the connection error (500).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use verge_manifest::EDGE_AGENT_TWIN;
use verge_runtime_containerd::{
    ContainerOptions, ContainerRuntime, Containerd, WorkloadMount, WorkloadSockets,
};
use verge_twin::TwinStore;
use verge_workload::{Callers, EdgeAuthority, Workload};

use crate::config::Config;
use crate::security::Security;

/// The container runtime, ready for the agent.
pub fn start(
    config: &Config,
    data_dir: &Path,
    security: &Security,
    twins: &Arc<TwinStore>,
) -> anyhow::Result<ContainerRuntime> {
    let c = &config.containerd;
    let containerd = Containerd::lazy(&c.socket, &c.namespace)
        .context("[containerd] namespace")?
        .with_snapshotter(&c.snapshotter)
        .with_plain_http(&c.plain_http);
    let run_dir = config.run_dir(data_dir);
    let runtime_slot = Arc::new(OnceLock::new());
    let workload = Workload::new(
        run_dir.join("workload"),
        Arc::new(EdgeAuthority::new(
            Arc::clone(&security.registry),
            security.ca.clone(),
        )),
        Arc::new(RuntimeCallers(Arc::clone(&runtime_slot))),
    )
    .with_context(|| {
        format!(
            "the workload API's directory in [containerd] run_dir {}",
            run_dir.display()
        )
    })?;
    let runtime = ContainerRuntime::new(
        containerd,
        ContainerOptions {
            fifo_dir: run_dir.join("fifo"),
            runc_root: c.runc_root.clone(),
            workload: Some(Arc::new(Sockets(workload.clone()))),
            ..ContainerOptions::default()
        },
    );
    // Only this function sets it.
    let _ = runtime_slot.set(runtime.clone());
    tokio::spawn(close_sockets(workload, Arc::clone(twins)));
    let probe = runtime.containerd().clone();
    if !probe.socket().exists() {
        // The embedded set-up: no containerd, and no gRPC code run for nothing.
        tracing::info!(
            socket = %probe.socket().display(),
            "no containerd socket: container modules cannot run until there is one"
        );
        return Ok(runtime);
    }
    tokio::spawn(async move {
        let socket = probe.socket().display().to_string();
        match tokio::time::timeout(std::time::Duration::from_secs(3), probe.version()).await {
            Ok(Ok(version)) => tracing::info!(%socket, %version, "containerd is there"),
            Ok(Err(e)) => tracing::info!(
                %socket,
                "containerd is not reachable ({e}): container modules cannot run until it is"
            ),
            Err(_) => tracing::warn!(%socket, "containerd does not answer"),
        }
    });
    Ok(runtime)
}

/// The workload API's sockets, as the container runtime sees them.
#[derive(Debug)]
struct Sockets(Workload);

impl WorkloadSockets for Sockets {
    fn open(&self, module: &str) -> Result<WorkloadMount, String> {
        let host_dir = self.0.listen(module).map_err(|e| e.to_string())?;
        Ok(WorkloadMount {
            host_dir,
            container_dir: verge_workload::MOUNT_POINT.into(),
            env: [
                ("IOTEDGE_WORKLOADURI", verge_workload::WORKLOAD_URI),
                ("IOTEDGE_APIVERSION", verge_workload::API_VERSION),
                ("IOTEDGE_AUTHSCHEME", verge_workload::AUTH_SCHEME),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        })
    }
}

/// Which module a process is of, as the container runtime knows its containers.
struct RuntimeCallers(Arc<OnceLock<ContainerRuntime>>);

impl Callers for RuntimeCallers {
    fn module_of(&self, pid: u32) -> Option<String> {
        self.0.get()?.module_of_pid(pid)
    }
}

/// Closes the sockets of modules no longer deployed.
async fn close_sockets(workload: Workload, twins: Arc<TwinStore>) {
    let mut watch = twins.watch_desired(EDGE_AGENT_TWIN);
    loop {
        let wanted: BTreeSet<String> =
            crate::identities::deployed_modules(&twins.desired(EDGE_AGENT_TWIN));
        workload.retain(|module| wanted.contains(module));
        if watch.changed(&twins).await.is_none() {
            return;
        }
    }
}
