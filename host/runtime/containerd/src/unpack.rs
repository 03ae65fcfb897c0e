//! Unpacking an image's layers into committed snapshots, as the Go client's
//! `rootfs.ApplyLayers`: for each layer, bottom first, `Snapshots.Prepare` an active snapshot on
//! the parent's chain ID, `Diff.Apply` the layer (from the content store) onto its mounts,
//! check that what was applied is the config's diff_id, and `Snapshots.Commit` it under the
//! layer's chain ID. A layer whose chain ID is already committed is skipped.

use std::collections::HashMap;

use containerd_client::services::v1::ApplyRequest;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::tonic::Code;
use containerd_client::tonic::transport::Channel;
use containerd_client::types;

use crate::client::{Containerd, Lease};
use crate::error::{Error, PullError};
use crate::image::Descriptor;

impl Containerd {
    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    /// Whether snapshot `key` exists in this namespace's snapshotter.
    pub(crate) async fn snapshot_exists(&self, key: &str) -> Result<bool, Error> {
        match self
            .snapshots()
            .stat(self.request(StatSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_owned(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(Error::call("Snapshots.Stat", status)),
        }
    }

    /// Unpacks `layers` (with their `diff_ids` and `chain_ids`, bottom first) under `lease`;
    /// calls `unpacked(i, skipped)` after each. The layer blobs must be in the content store.
    pub(crate) async fn unpack(
        &self,
        lease: &Lease,
        layers: &[Descriptor],
        diff_ids: &[String],
        chain_ids: &[String],
        mut unpacked: impl FnMut(usize, bool),
    ) -> Result<(), PullError> {
        let mut parent = String::new();
        for (i, ((layer, diff_id), chain_id)) in
            layers.iter().zip(diff_ids).zip(chain_ids).enumerate()
        {
            if self.snapshot_exists(chain_id).await? {
                let kind = format!("snapshots/{}", self.snapshotter);
                self.lease_resource(lease, chain_id, &kind).await?;
                unpacked(i, true);
                chain_id.clone_into(&mut parent);
                continue;
            }
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let key = format!("extract-{nanos} {chain_id}");
            let mounts = self
                .snapshots()
                .prepare(self.leased(
                    PrepareSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: key.clone(),
                        parent: parent.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await
                .map_err(|s| Error::call("Snapshots.Prepare", s))?
                .into_inner()
                .mounts;
            let applied = self.apply(lease, layer, mounts).await;
            let applied = match applied {
                Ok(applied) => applied,
                Err(e) => {
                    self.remove_snapshot(&key).await;
                    return Err(e);
                }
            };
            if &applied != diff_id {
                self.remove_snapshot(&key).await;
                return Err(PullError::Digest {
                    what: format!("uncompressed layer {}", layer.digest),
                    expected: diff_id.clone(),
                    actual: applied,
                });
            }
            let committed = self
                .snapshots()
                .commit(self.leased(
                    CommitSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        name: chain_id.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await;
            match committed {
                Ok(_) => {}
                // Another pull committed the same layer meanwhile.
                Err(status) if status.code() == Code::AlreadyExists => {
                    self.remove_snapshot(&key).await;
                }
                Err(status) => {
                    self.remove_snapshot(&key).await;
                    return Err(Error::call("Snapshots.Commit", status).into());
                }
            }
            unpacked(i, false);
            chain_id.clone_into(&mut parent);
        }
        Ok(())
    }

    /// `Diff.Apply` of `layer` onto `mounts`; the digest of what was applied (the diff_id).
    async fn apply(
        &self,
        lease: &Lease,
        layer: &Descriptor,
        mounts: Vec<types::Mount>,
    ) -> Result<String, PullError> {
        let applied = DiffClient::new(self.channel.clone())
            .apply(self.leased(
                ApplyRequest {
                    diff: Some(types::Descriptor {
                        media_type: layer.media_type.clone(),
                        digest: layer.digest.clone(),
                        size: layer.size,
                        annotations: HashMap::new(),
                    }),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                lease,
            ))
            .await
            .map_err(|s| Error::call("Diff.Apply", s))?
            .into_inner()
            .applied
            .ok_or(Error::Protocol {
                call: "Diff.Apply",
                message: "no applied descriptor".into(),
            })?;
        Ok(applied.digest)
    }

    /// Removes snapshot `key`, logging a failure (best effort, on an error path).
    pub(crate) async fn remove_snapshot(&self, key: &str) {
        if let Err(status) = self
            .snapshots()
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_owned(),
            }))
            .await
            && status.code() != Code::NotFound
        {
            tracing::warn!(key, "cannot remove snapshot: {}", status.message());
        }
    }
}
