//! The containerd calls of a container's life (peers.md §2.2), one method each: the rootfs
//! snapshot (`Snapshots.Prepare` on the image's chain ID, `Snapshots.Remove`), the container
//! record (`Containers.Create` / `Delete`), and its task (`Tasks.Create`, `Start`, `Wait`,
//! `Kill`, `Delete`). The order, the lease and the cleanup are `runtime`'s.

use std::collections::HashMap;
use std::path::Path;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetRequest, KillRequest, ListContainersRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use containerd_client::tonic::transport::Channel;
use containerd_client::types::Mount;
use containerd_client::types::v1::Status;
use prost_types::Any;

use crate::client::{Containerd, Lease};
use crate::error::Error;
use crate::spec::SPEC_TYPE_URL;

/// The runc v2 shim.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// The type URL of the runc shim's options (`containerd.runc.v1.Options`).
const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// What `Containers.Create` needs.
#[derive(Debug)]
pub(crate) struct NewContainer<'a> {
    pub id: &'a str,
    pub image: &'a str,
    pub spec: &'a serde_json::Value,
    pub labels: HashMap<String, String>,
    /// runc's state directory (runc options' `root`), instead of `/run/containerd/runc`.
    pub runc_root: Option<&'a Path>,
}

impl Containerd {
    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    /// `Snapshots.Prepare` of an active snapshot `key` on `parent` (a chain ID) under `lease`;
    /// its mounts.
    pub(crate) async fn prepare_rootfs(
        &self,
        lease: &Lease,
        key: &str,
        parent: &str,
    ) -> Result<Vec<Mount>, Error> {
        let response = SnapshotsClient::new(self.channel.clone())
            .prepare(self.leased(
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.to_owned(),
                    parent: parent.to_owned(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|s| Error::call("Snapshots.Prepare", s))?;
        Ok(response.into_inner().mounts)
    }

    /// `Containers.Create` under `lease`, with the rootfs snapshot `container.id`.
    pub(crate) async fn create_container(
        &self,
        lease: &Lease,
        container: NewContainer<'_>,
    ) -> Result<(), Error> {
        let spec = serde_json::to_vec(container.spec).map_err(|e| Error::Protocol {
            call: "Containers.Create",
            message: format!("spec: {e}"),
        })?;
        let options = container.runc_root.map(|root| Any {
            type_url: RUNC_OPTIONS_TYPE_URL.to_owned(),
            value: runc_options_root(&root.to_string_lossy()),
        });
        self.containers()
            .create(self.leased(
                CreateContainerRequest {
                    container: Some(Container {
                        id: container.id.to_owned(),
                        labels: container.labels,
                        image: container.image.to_owned(),
                        runtime: Some(Runtime {
                            name: RUNC_RUNTIME.to_owned(),
                            options,
                        }),
                        spec: Some(Any {
                            type_url: SPEC_TYPE_URL.to_owned(),
                            value: spec,
                        }),
                        snapshotter: self.snapshotter.clone(),
                        snapshot_key: container.id.to_owned(),
                        ..Container::default()
                    }),
                },
                lease,
            ))
            .await
            .map_err(|s| Error::call("Containers.Create", s))?;
        Ok(())
    }

    /// `Tasks.Create` with the rootfs mounts and stdio paths; the task's pid.
    pub(crate) async fn create_task(
        &self,
        lease: &Lease,
        id: &str,
        rootfs: Vec<Mount>,
        stdout: String,
        stderr: String,
    ) -> Result<u32, Error> {
        let response = self
            .tasks()
            .create(self.leased(
                CreateTaskRequest {
                    container_id: id.to_owned(),
                    rootfs,
                    stdout,
                    stderr,
                    ..CreateTaskRequest::default()
                },
                lease,
            ))
            .await
            .map_err(|s| Error::call("Tasks.Create", s))?;
        Ok(response.into_inner().pid)
    }

    /// `Tasks.Start`.
    pub(crate) async fn start_task(&self, id: &str) -> Result<u32, Error> {
        let response = self
            .tasks()
            .start(self.request(StartRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| Error::call("Tasks.Start", s))?;
        Ok(response.into_inner().pid)
    }

    /// `Tasks.Wait`: blocks until the task's process exits; its exit status (128 + signal for
    /// a process a signal ended).
    pub(crate) async fn wait_task(&self, id: &str) -> Result<u32, Error> {
        let response = self
            .tasks()
            .wait(self.request(WaitRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| Error::call("Tasks.Wait", s))?;
        Ok(response.into_inner().exit_status)
    }

    /// `Tasks.Kill` with `signal` to every process of the container. A task already gone is
    /// not an error.
    pub(crate) async fn kill_task(&self, id: &str, signal: u32) -> Result<(), Error> {
        match self
            .tasks()
            .kill(self.request(KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal,
                all: true,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(Error::call("Tasks.Kill", status)),
        }
    }

    /// `Tasks.Delete` (the process must have exited); a task already gone is not an error.
    pub(crate) async fn delete_task(&self, id: &str) -> Result<(), Error> {
        match self
            .tasks()
            .delete(self.request(DeleteTaskRequest {
                container_id: id.to_owned(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(Error::call("Tasks.Delete", status)),
        }
    }

    /// `Containers.List` of the containers whose label `label` is `value`: their ids and
    /// labels.
    pub(crate) async fn containers_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, Error> {
        // containerd's filter syntax: a quoted value may hold anything but `"` and `\`.
        let value = value.replace(['"', '\\'], "");
        let response = self
            .containers()
            .list(self.request(ListContainersRequest {
                filters: vec![format!("labels.\"{label}\"==\"{value}\"")],
            }))
            .await
            .map_err(|s| Error::call("Containers.List", s))?;
        Ok(response
            .into_inner()
            .containers
            .into_iter()
            .map(|c| (c.id, c.labels))
            .collect())
    }

    /// Whether the container's task is running (`Tasks.Get`); `false` when it has none.
    pub(crate) async fn task_running(&self, id: &str) -> Result<bool, Error> {
        match self
            .tasks()
            .get(self.request(GetRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(response) => Ok(response
                .into_inner()
                .process
                .is_some_and(|p| p.status == Status::Running as i32)),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(Error::call("Tasks.Get", status)),
        }
    }

    /// `Containers.Delete`; a container already gone is not an error. (It does not remove the
    /// rootfs snapshot.)
    pub(crate) async fn delete_container(&self, id: &str) -> Result<(), Error> {
        match self
            .containers()
            .delete(self.request(DeleteContainerRequest { id: id.to_owned() }))
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(Error::call("Containers.Delete", status)),
        }
    }
}

/// A `containerd.runc.v1.Options` message with only `root` (field 7, a string), encoded by
/// hand: containerd-client does not compile that proto.
fn runc_options_root(root: &str) -> Vec<u8> {
    let mut out = vec![(7 << 3) | 2];
    let mut len = root.len();
    loop {
        let byte = u8::try_from(len & 0x7f).unwrap_or(0);
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(root.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_options_encode_root_as_field_7() {
        assert_eq!(runc_options_root("/r"), [0x3a, 2, b'/', b'r']);
        let long = "x".repeat(200);
        let encoded = runc_options_root(&long);
        assert_eq!(encoded.get(..3), Some(&[0x3a, 0xc8, 0x01][..]));
        assert_eq!(encoded.len(), 203);
    }
}
