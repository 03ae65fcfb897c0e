//! What a container gets of the workload API: the daemon's workload service opens a Unix socket
//! per module ([`WorkloadSockets::open`]); the runtime bind-mounts its directory into the
//! module's container and adds the variables that point the module's SDK at it
//! (`IOTEDGE_WORKLOADURI`, `IOTEDGE_APIVERSION`, `IOTEDGE_AUTHSCHEME`). In return the runtime
//! tells the service which module a process belongs to ([`crate::ContainerRuntime::module_of_pid`]).

use std::path::PathBuf;

/// A module's workload socket, as its container sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadMount {
    /// The host directory holding the socket.
    pub host_dir: PathBuf,
    /// Where it is mounted in the container (`/var/run/iotedge`).
    pub container_dir: String,
    /// Variables for the module (they come before the manifest's `env`, which may override
    /// them).
    pub env: Vec<(String, String)>,
}

/// The daemon's workload API service.
pub trait WorkloadSockets: Send + Sync + std::fmt::Debug + 'static {
    /// Opens module `module`'s socket if it is not open.
    fn open(&self, module: &str) -> Result<WorkloadMount, String>;
}

/// The module whose container process `pid` is, given the `/proc/<pid>/cgroup` text: the
/// container whose cgroup path ends in `/<namespace>/<id>` (runc's `cgroupsPath` as Verge sets
/// it), looked up by `module_of_container`.
pub fn module_of_cgroup(
    cgroup: &str,
    namespace: &str,
    module_of_container: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    cgroup.lines().find_map(|line| {
        // `hierarchy:controllers:path` (cgroup v1), `0::path` (v2).
        let path = line.splitn(3, ':').nth(2)?;
        let mut parts = path.trim_end_matches('/').rsplit('/');
        let id = parts.next()?;
        let ns = parts.next()?;
        (ns == namespace).then(|| module_of_container(id)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_name_the_container() {
        let lookup = |id: &str| (id == "filter-18a").then(|| "filter".to_owned());
        let v1 = "12:pids:/verge/filter-18a\n11:memory:/verge/filter-18a\n1:name=systemd:/x\n";
        assert_eq!(module_of_cgroup(v1, "verge", lookup), Some("filter".into()));
        let v2 = "0::/verge/filter-18a\n";
        assert_eq!(module_of_cgroup(v2, "verge", lookup), Some("filter".into()));
        // Another namespace, another container, the host.
        assert_eq!(module_of_cgroup(v2, "other", lookup), None);
        assert_eq!(
            module_of_cgroup("0::/verge/sensor-1\n", "verge", lookup),
            None
        );
        assert_eq!(
            module_of_cgroup("0::/user.slice/session-1.scope\n", "verge", lookup),
            None
        );
        assert_eq!(module_of_cgroup("0::/\n", "verge", lookup), None);
    }
}
