//! A pull from end to end (registry → content store → snapshots → image record), and the
//! two questions around it: is an image already here ([`Containerd::image`], for
//! `imagePullPolicy` `never` / `on-create`), and removing one ([`Containerd::remove_image`]).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types;
use futures_util::TryStreamExt as _;
use oci_client::Reference;

use crate::client::{Containerd, Lease};
use crate::content::Written;
use crate::error::{Error, PullError};
use crate::image::{self, AnyManifest, Descriptor, ImageConfig};
use crate::registry::parse_reference;
use crate::registry::{BlobStream, Credentials, Registry};

/// How long a pull waits for a blob another pull is writing.
const LOCKED_WAIT: Duration = Duration::from_secs(3600);
/// How often it looks again.
const LOCKED_POLL: Duration = Duration::from_millis(100);

/// What a pull reports as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The manifest was fetched: what the pull will bring.
    Resolved {
        /// The platform manifest's digest.
        manifest_digest: String,
        /// Number of layers.
        layers: usize,
        /// Config and layers, compressed, in bytes.
        size: i64,
    },
    /// A blob (config or layer) is in the content store; `present`: it was already there.
    Blob {
        /// Its digest.
        digest: String,
        /// Its size.
        size: i64,
        /// Whether it was there before (not downloaded).
        present: bool,
    },
    /// Layer `index` is unpacked (committed as `chain_id`); `present`: it already was.
    Unpacked {
        /// Bottom first, from 0.
        index: usize,
        /// The committed snapshot.
        chain_id: String,
        /// Whether it was there before.
        present: bool,
    },
}

/// An image that is pulled and unpacked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledImage {
    /// The image record's name: the reference, normalised (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The platform manifest's digest (what the image record points at).
    pub manifest_digest: String,
    /// The index's digest, when the reference named an index.
    pub index_digest: Option<String>,
    /// The image config.
    pub config: ImageConfig,
    /// The chain ID of the top layer: the committed snapshot a container's rootfs is prepared
    /// on.
    pub chain_id: String,
    /// Manifest, config and layers, compressed, in bytes.
    pub size: i64,
    /// How long the pull took (zero for [`Containerd::image`]).
    pub elapsed: Duration,
    /// Blobs that were downloaded (0 when everything was there).
    pub downloaded: usize,
}

impl Containerd {
    fn images(&self) -> ImagesClient<containerd_client::tonic::transport::Channel> {
        ImagesClient::new(self.channel.clone())
    }

    /// Pulls `reference` (`registry/repository:tag`, `…@sha256:…`, or both) with `credentials`
    /// (or anonymously) and unpacks it. Blobs and snapshots already present are not fetched
    /// again. A digest-pinned reference is refused if the manifest's digest differs.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
        progress: impl Fn(Progress),
    ) -> Result<PulledImage, PullError> {
        let begun = Instant::now();
        let parsed = parse_reference(reference)?;
        let lease = self.create_lease("pull").await?;
        let result = self
            .pull_leased(&parsed, credentials, &lease, &progress)
            .await;
        // The image record and the GC labels hold what the pull wrote from now on; after a
        // failure, what it wrote becomes collectable.
        if let Err(e) = self.delete_lease(&lease).await {
            tracing::warn!(lease = lease.id, "cannot delete the pull's lease: {e}");
        }
        let mut image = result?;
        image.elapsed = begun.elapsed();
        Ok(image)
    }

    async fn pull_leased(
        &self,
        reference: &Reference,
        credentials: Option<&Credentials>,
        lease: &Lease,
        progress: &impl Fn(Progress),
    ) -> Result<PulledImage, PullError> {
        let name = reference.whole();
        let registry = Registry::new(reference, credentials, &self.plain_http);
        let resolved = registry.manifest(reference).await?;
        let manifest = &resolved.manifest;
        let unusable = |message: String| PullError::Image {
            reference: name.clone(),
            message,
        };
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !image::is_sha256(&blob.digest) || blob.size < 0 {
                return Err(unusable(format!(
                    "unsupported descriptor {} ({} bytes)",
                    blob.digest, blob.size
                )));
            }
        }
        let blobs_size = manifest
            .layers
            .iter()
            .fold(manifest.config.size, |sum, l| sum.saturating_add(l.size));
        progress(Progress::Resolved {
            manifest_digest: resolved.descriptor.digest.clone(),
            layers: manifest.layers.len(),
            size: blobs_size,
        });
        let mut downloaded = 0;

        // The config first: its diff_ids name the snapshots, and it carries their GC label.
        let config_bytes = match self.blob_info(&manifest.config.digest).await? {
            Some(_) => self.read_blob(&manifest.config.digest).await?,
            None => {
                let bytes: Vec<u8> = registry
                    .blob(reference, &manifest.config)
                    .await?
                    .try_fold(Vec::new(), |mut all, chunk| async move {
                        all.extend_from_slice(&chunk);
                        Ok(all)
                    })
                    .await?;
                let actual = image::sha256_digest(&bytes);
                if actual != manifest.config.digest {
                    return Err(PullError::Digest {
                        what: "config".into(),
                        expected: manifest.config.digest.clone(),
                        actual,
                    });
                }
                bytes
            }
        };
        let config = ImageConfig::parse(&config_bytes).map_err(unusable)?;
        if config.diff_ids.len() != manifest.layers.len() || config.diff_ids.is_empty() {
            return Err(unusable(format!(
                "{} layers but {} diff_ids",
                manifest.layers.len(),
                config.diff_ids.len()
            )));
        }
        let chain_ids = image::chain_ids(&config.diff_ids);
        let chain_id = chain_ids.last().cloned().unwrap_or_default();
        let snapshot_label = HashMap::from([(
            format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter),
            chain_id.clone(),
        )]);
        let config_bytes = bytes::Bytes::from(config_bytes);
        let fetched = self
            .ensure_blob(lease, &manifest.config, snapshot_label, || {
                in_memory(config_bytes.clone())
            })
            .await?;
        downloaded += usize::from(fetched);
        progress(blob_progress(&manifest.config, !fetched));

        for layer in &manifest.layers {
            let fetched = self
                .ensure_blob(lease, layer, HashMap::new(), || {
                    registry.blob(reference, layer)
                })
                .await?;
            downloaded += usize::from(fetched);
            progress(blob_progress(layer, !fetched));
        }

        // The manifest, with the labels that keep its config and layers once the lease is gone.
        let mut labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_owned(),
            manifest.config.digest.clone(),
        )]);
        for (i, layer) in manifest.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        let manifest_bytes = bytes::Bytes::from(resolved.bytes.clone());
        let fetched = self
            .ensure_blob(lease, &resolved.descriptor, labels, || {
                in_memory(manifest_bytes.clone())
            })
            .await?;
        downloaded += usize::from(fetched);

        self.unpack(
            lease,
            &manifest.layers,
            &config.diff_ids,
            &chain_ids,
            |index, present| {
                progress(Progress::Unpacked {
                    index,
                    chain_id: chain_ids.get(index).cloned().unwrap_or_default(),
                    present,
                });
            },
        )
        .await?;

        self.put_image(lease, &name, &resolved.descriptor).await?;
        let size = blobs_size.saturating_add(resolved.descriptor.size);
        Ok(PulledImage {
            name,
            manifest_digest: resolved.descriptor.digest.clone(),
            index_digest: resolved.index_digest.clone(),
            config,
            chain_id,
            size,
            elapsed: Duration::ZERO,
            downloaded,
        })
    }

    /// Makes sure blob `descriptor` is in the content store, with `labels`, and held by
    /// `lease`: written from `source` if it is not there, waiting while another pull writes it.
    /// True if it was written here.
    async fn ensure_blob<F, Fut>(
        &self,
        lease: &Lease,
        descriptor: &Descriptor,
        labels: HashMap<String, String>,
        source: F,
    ) -> Result<bool, PullError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<BlobStream, PullError>>,
    {
        let begun = Instant::now();
        loop {
            if self.blob_info(&descriptor.digest).await?.is_some() {
                self.lease_resource(lease, &descriptor.digest, "content")
                    .await?;
                if !labels.is_empty() {
                    self.label_blob(&descriptor.digest, labels).await?;
                }
                return Ok(false);
            }
            match self
                .write_blob(lease, descriptor, source().await?, labels.clone())
                .await?
            {
                Written::Committed => return Ok(true),
                Written::Exists => {}
                Written::Locked if begun.elapsed() < LOCKED_WAIT => {
                    tokio::time::sleep(LOCKED_POLL).await;
                }
                Written::Locked => {
                    return Err(Error::Protocol {
                        call: "Content.Write",
                        message: format!(
                            "{} has been locked by another writer for {LOCKED_WAIT:?}",
                            descriptor.digest
                        ),
                    }
                    .into());
                }
            }
        }
    }

    /// Creates the image record `name` → `target`, or points the existing one at it.
    async fn put_image(&self, lease: &Lease, name: &str, target: &Descriptor) -> Result<(), Error> {
        let image = Image {
            name: name.to_owned(),
            labels: HashMap::new(),
            target: Some(types::Descriptor {
                media_type: target.media_type.clone(),
                digest: target.digest.clone(),
                size: target.size,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let created = self
            .images()
            .create(self.leased(
                CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                },
                lease,
            ))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                self.images()
                    .update(self.leased(
                        UpdateImageRequest {
                            image: Some(image),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["target".into()],
                            }),
                            source_date_epoch: None,
                        },
                        lease,
                    ))
                    .await
                    .map_err(|s| Error::call("Images.Update", s))?;
                Ok(())
            }
            Err(status) => Err(Error::call("Images.Create", status)),
        }
    }

    /// The image `reference` names, if it is here and unpacked (its record, manifest and config
    /// in the content store, its top snapshot committed). Nothing is fetched.
    pub async fn image(&self, reference: &str) -> Result<Option<PulledImage>, PullError> {
        let name = parse_reference(reference)?.whole();
        let record = match self
            .images()
            .get(self.request(GetImageRequest { name: name.clone() }))
            .await
        {
            Ok(response) => response.into_inner().image,
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) => return Err(Error::call("Images.Get", status).into()),
        };
        let Some(target) = record.and_then(|image| image.target) else {
            return Ok(None);
        };
        let unusable = |message: String| PullError::Image {
            reference: name.clone(),
            message,
        };
        let mut manifest_digest = target.digest.clone();
        let mut index_digest = None;
        let mut bytes = match self.read_blob(&manifest_digest).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut size = target.size;
        let manifest = match AnyManifest::parse(&bytes).map_err(unusable)? {
            AnyManifest::Image(manifest) => manifest,
            AnyManifest::Index(entries) => {
                let entry = image::select_platform(&entries)
                    .ok_or_else(|| unusable("no manifest for this platform".into()))?;
                index_digest = Some(manifest_digest);
                manifest_digest = entry.digest.clone();
                size = entry.size;
                bytes = self.read_blob(&manifest_digest).await?;
                match AnyManifest::parse(&bytes).map_err(unusable)? {
                    AnyManifest::Image(manifest) => manifest,
                    AnyManifest::Index(_) => return Err(unusable("nested index".into())),
                }
            }
        };
        let config = match self.read_blob(&manifest.config.digest).await {
            Ok(bytes) => ImageConfig::parse(&bytes).map_err(unusable)?,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(chain_id) = image::chain_ids(&config.diff_ids).pop() else {
            return Err(unusable("no layers".into()));
        };
        if !self.snapshot_exists(&chain_id).await? {
            return Ok(None);
        }
        let size = manifest
            .layers
            .iter()
            .fold(size.saturating_add(manifest.config.size), |s, l| {
                s.saturating_add(l.size)
            });
        Ok(Some(PulledImage {
            name,
            manifest_digest,
            index_digest,
            config,
            chain_id,
            size,
            elapsed: Duration::ZERO,
            downloaded: 0,
        }))
    }

    /// Removes the image record `reference` names and, by a synchronous garbage collection, the
    /// content and snapshots no other image or lease holds. False if there was no such image.
    pub async fn remove_image(&self, reference: &str) -> Result<bool, PullError> {
        let name = parse_reference(reference)?.whole();
        match self
            .images()
            .delete(self.request(DeleteImageRequest {
                name,
                sync: true,
                target: None,
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(Error::call("Images.Delete", status).into()),
        }
    }
}

/// A blob already in memory, as a stream.
async fn in_memory(bytes: bytes::Bytes) -> Result<BlobStream, PullError> {
    Ok(Box::pin(futures_util::stream::iter([Ok(bytes)])))
}

fn blob_progress(blob: &Descriptor, present: bool) -> Progress {
    Progress::Blob {
        digest: blob.digest.clone(),
        size: blob.size,
        present,
    }
}
