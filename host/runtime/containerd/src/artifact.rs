//! Wasm components published as CNCF wasm OCI artifacts: fetched from a registry into a local
//! cache for the wasm runtime ([`fetch_wasm`], and [`cached_wasm`] for `imagePullPolicy: never`),
//! and published from a file ([`push_wasm`], what `verge push` runs). Only the registry client
//! (`registry.rs`) is used: no containerd, which wasm-only devices do not have.
//!
//! # The artifact
//!
//! As the CNCF TAG Runtime's wasm OCI artifact layout has it (and `wkg oci push` writes it): an
//! image manifest (`application/vnd.oci.image.manifest.v1+json`) whose config is
//! `application/vnd.wasm.config.v0+json` and which has exactly one layer, `application/wasm`,
//! the component's bytes unchanged. [`push_wasm`] writes the config as `{"architecture":
//! "wasm", "os": "wasip2", "layerDigests": [<layer>]}` (no `created`, no `component`: the same
//! file always gives the same manifest digest). [`fetch_wasm`] reads only the manifest: it
//! requires that shape and refuses anything else naming what it found (a container image's
//! config says `"type": "docker"` is wanted). An index is followed to its entry whose platform
//! architecture is `wasm`.
//!
//! # The cache
//!
//! Under `cache_dir` (created 0700):
//! - `<layer digest hex>.wasm`: a component, by content. It is streamed from the registry into
//!   a temporary file beside it while its sha256 and size are computed, checked against the
//!   layer descriptor, and renamed into place: a file under that name has had its content
//!   checked, and is checked again (hashed) whenever it is reused; a damaged one is removed and
//!   fetched again.
//! - `manifests/<digest hex>.json`: manifests and indexes as the registry sent them, written
//!   once the artifact's shape was accepted; checked against their digest when read.
//! - `tags/<sha256 of the reference>`: `{"reference", "digest"}`, the digest a tag-only
//!   reference last resolved to (for `imagePullPolicy: never`).
//!
//! What [`fetch_wasm`] fetches:
//! - a **digest-pinned** reference whose manifest (and, for an index, the chosen manifest) and
//!   component are in the cache: nothing, no request at all (content-addressed, so it cannot
//!   have changed; an offline device restarts its modules);
//! - any other reference: the manifest is resolved at the registry (a tag may have moved), and
//!   the layer is downloaded only when the cache does not hold it with the right digest.
//!
//! [`cached_wasm`] never talks to a registry: a pinned reference, or a tag this cache resolved
//! before, whose component is here.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::TryStreamExt as _;
use oci_client::Reference;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::error::PullError;
use crate::image::{self, AnyManifest, Descriptor, Manifest};
use crate::registry::{Credentials, Registry, parse_reference};

/// Media types of the CNCF wasm OCI artifact.
pub mod media_type {
    /// The config of a wasm artifact.
    pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
    /// Its one layer: the component.
    pub const WASM_LAYER: &str = "application/wasm";
    /// The config of a container image (OCI).
    pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// The config of a container image (Docker).
    pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
}

/// The largest component [`fetch_wasm`] downloads, in bytes.
pub const MAX_COMPONENT_BYTES: i64 = 1 << 30;

/// A component in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedComponent {
    /// The component file: `<cache_dir>/<layer digest hex>.wasm`.
    pub path: PathBuf,
    /// The digest of the artifact's manifest (`sha256:…`): what `verge push` printed, and what
    /// the wasm runtime reports as `imageHash`.
    pub manifest_digest: String,
    /// The digest of the component's bytes (the layer).
    pub layer_digest: String,
    /// The index the manifest was chosen from, when the reference named an index.
    pub index_digest: Option<String>,
    /// Whether the layer was downloaded now (false: the cache had it).
    pub downloaded: bool,
}

/// Why `verge push` failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The file is not a WebAssembly component.
    #[error("{path} is not a WebAssembly component: {message}")]
    NotComponent {
        /// The file.
        path: String,
        /// What it is instead.
        message: String,
    },
    /// The reference does not parse or cannot be pushed to ([`PullError::Reference`]), or the
    /// registry refused the push or could not be reached ([`PullError::Registry`], its own
    /// words): the errors a pull has too.
    #[error(transparent)]
    Registry(#[from] PullError),
}

/// Checks that `bytes` start like a WebAssembly component: the `\0asm` magic, then version 0x0d
/// and layer 1 (`0d 00 01 00`). The error says what the file is instead.
pub fn check_component_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || bytes[..4] != *b"\0asm" {
        return Err("it is not a WebAssembly file (it does not start with \"\\0asm\")".into());
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err("it is a core WebAssembly module, not a component: \
                                         build it for wasm32-wasip2, or wrap it with \
                                         `wasm-tools component new`"
            .into()),
        [a, b, c, d] => Err(format!(
            "unknown WebAssembly version and layer {a:02x} {b:02x} {c:02x} {d:02x} (a component \
             has 0d 00 01 00)"
        )),
        _ => Err("it is truncated".into()),
    }
}

/// Checks that `manifest` is a wasm component artifact (config `application/vnd.wasm.config.v0+json`,
/// exactly one layer `application/wasm`); returns its layer. The error names what was found.
pub fn check_wasm_artifact<'a>(
    reference: &str,
    manifest: &'a Manifest,
) -> Result<&'a Descriptor, PullError> {
    let unusable = |message: String| PullError::Image {
        reference: reference.to_owned(),
        message,
    };
    let config = manifest.config.media_type.as_str();
    match config {
        media_type::WASM_CONFIG => {}
        media_type::OCI_IMAGE_CONFIG | media_type::DOCKER_IMAGE_CONFIG => {
            return Err(unusable(format!(
                "it is a container image (config {config}), not a wasm component: use \
                 \"type\": \"docker\" for it, or publish the component with `verge push`"
            )));
        }
        other => {
            return Err(unusable(format!(
                "it is not a wasm component artifact: its config is {}, expected {}",
                if other.is_empty() { "untyped" } else { other },
                media_type::WASM_CONFIG
            )));
        }
    }
    let layer = match manifest.layers.as_slice() {
        [layer] if layer.media_type == media_type::WASM_LAYER => layer,
        [layer] => {
            return Err(unusable(format!(
                "its layer is {}, expected {} (a wasm component)",
                layer.media_type,
                media_type::WASM_LAYER
            )));
        }
        layers => {
            let types: Vec<&str> = layers.iter().map(|l| l.media_type.as_str()).collect();
            return Err(unusable(format!(
                "a wasm component artifact has exactly one layer ({}), this one has {}{}",
                media_type::WASM_LAYER,
                layers.len(),
                if types.is_empty() {
                    String::new()
                } else {
                    format!(": {}", types.join(", "))
                }
            )));
        }
    };
    if !image::is_sha256(&layer.digest) || layer.size < 0 {
        return Err(unusable(format!(
            "unsupported layer descriptor {} ({} bytes)",
            layer.digest, layer.size
        )));
    }
    if layer.size > MAX_COMPONENT_BYTES {
        return Err(unusable(format!(
            "the component is {} bytes, more than the {MAX_COMPONENT_BYTES} accepted",
            layer.size
        )));
    }
    Ok(layer)
}

/// The entry of an index that is a wasm component (platform architecture `wasm`).
fn select_wasm<'a>(
    reference: &str,
    entries: &'a [Descriptor],
) -> Result<&'a Descriptor, PullError> {
    if let Some(entry) = entries.iter().find(|e| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.architecture == "wasm")
    }) {
        return Ok(entry);
    }
    let platforms: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect();
    let message = if platforms.iter().any(|p| p.starts_with("linux/")) {
        format!(
            "it is an index of container images ({}), not a wasm component: use \"type\": \
             \"docker\" for it",
            platforms.join(", ")
        )
    } else {
        format!(
            "an index with no wasm entry (platforms: {})",
            if platforms.is_empty() {
                "none".to_owned()
            } else {
                platforms.join(", ")
            }
        )
    };
    Err(PullError::Image {
        reference: reference.to_owned(),
        message,
    })
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn cache_error(path: &Path, e: impl std::fmt::Display) -> PullError {
    PullError::Cache {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A unique suffix for temporary files.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The cache directory (see the module's docs).
struct Cache {
    dir: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TagEntry {
    reference: String,
    digest: String,
}

impl Cache {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Creates the directories (the top one 0700).
    async fn create(&self) -> Result<(), PullError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(dir.join("manifests"))?;
            std::fs::create_dir_all(dir.join("tags"))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| cache_error(&self.dir, e))?
        .map_err(|e| cache_error(&self.dir, e))
    }

    fn component_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{}.wasm", hex_of(digest)))
    }

    fn manifest_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("manifests")
            .join(format!("{}.json", hex_of(digest)))
    }

    fn tag_path(&self, reference: &Reference) -> PathBuf {
        let key = image::sha256_digest(reference.whole().as_bytes());
        self.dir.join("tags").join(hex_of(&key))
    }

    /// Writes `bytes` to `path` through a temporary file and a rename.
    async fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), PullError> {
        let tmp = path.with_extension(format!("tmp-{}", unique()));
        let result = async {
            tokio::fs::write(&tmp, bytes).await?;
            tokio::fs::rename(&tmp, path).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.map_err(|e| cache_error(path, e))
    }

    async fn put_manifest(&self, digest: &str, bytes: &[u8]) -> Result<(), PullError> {
        self.write_atomically(&self.manifest_path(digest), bytes)
            .await
    }

    async fn put_tag(&self, reference: &Reference, digest: &str) -> Result<(), PullError> {
        let entry = TagEntry {
            reference: reference.whole(),
            digest: digest.to_owned(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| cache_error(&self.dir, e))?;
        self.write_atomically(&self.tag_path(reference), &bytes)
            .await
    }

    /// The digest `reference` (tag only) last resolved to, if this cache knows it.
    async fn tag(&self, reference: &Reference) -> Result<Option<String>, PullError> {
        let path = self.tag_path(reference);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cache_error(&path, e)),
        };
        Ok(serde_json::from_slice::<TagEntry>(&bytes)
            .ok()
            .filter(|t| t.reference == reference.whole() && image::is_sha256(&t.digest))
            .map(|t| t.digest))
    }

    /// The cached manifest `digest`, if it is here with that digest (a damaged one is removed).
    async fn manifest(&self, digest: &str) -> Result<Option<Vec<u8>>, PullError> {
        if !image::is_sha256(digest) {
            return Ok(None);
        }
        let path = self.manifest_path(digest);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cache_error(&path, e)),
        };
        if image::sha256_digest(&bytes) != digest {
            tracing::warn!(file = %path.display(), "cached manifest damaged; removing it");
            let _ = tokio::fs::remove_file(&path).await;
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Whether the component of `layer` is in the cache with the right size and digest (a
    /// damaged file is removed).
    async fn has_component(&self, layer: &Descriptor) -> Result<bool, PullError> {
        let path = self.component_path(&layer.digest);
        let expected = layer.clone();
        let checked = path.clone();
        let found = tokio::task::spawn_blocking(move || -> std::io::Result<Option<bool>> {
            let mut file = match std::fs::File::open(&checked) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let size = file.metadata()?.len();
            if i64::try_from(size).ok() != Some(expected.size) {
                return Ok(Some(false));
            }
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = file.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
            }
            let actual = format!("sha256:{:x}", hasher.finalize());
            Ok(Some(actual == expected.digest))
        })
        .await
        .map_err(|e| cache_error(&path, e))?
        .map_err(|e| cache_error(&path, e))?;
        match found {
            None => Ok(false),
            Some(true) => Ok(true),
            Some(false) => {
                tracing::warn!(file = %path.display(), "cached component damaged; removing it");
                let _ = tokio::fs::remove_file(&path).await;
                Ok(false)
            }
        }
    }

    /// Resolves `digest` (of a manifest or an index `reference` names) from the cache alone:
    /// the component, if everything down to it is here.
    async fn resolve(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<Option<FetchedComponent>, PullError> {
        let name = reference.whole();
        let Some(bytes) = self.manifest(digest).await? else {
            return Ok(None);
        };
        let (manifest, manifest_digest, index_digest) =
            match AnyManifest::parse(&bytes).map_err(|message| PullError::Image {
                reference: name.clone(),
                message,
            })? {
                AnyManifest::Image(manifest) => (manifest, digest.to_owned(), None),
                AnyManifest::Index(entries) => {
                    let entry = select_wasm(&name, &entries)?;
                    let Some(bytes) = self.manifest(&entry.digest).await? else {
                        return Ok(None);
                    };
                    match AnyManifest::parse(&bytes).map_err(|message| PullError::Image {
                        reference: name.clone(),
                        message,
                    })? {
                        AnyManifest::Image(manifest) => {
                            (manifest, entry.digest.clone(), Some(digest.to_owned()))
                        }
                        AnyManifest::Index(_) => return Ok(None),
                    }
                }
            };
        let layer = check_wasm_artifact(&name, &manifest)?;
        if !self.has_component(layer).await? {
            return Ok(None);
        }
        Ok(Some(FetchedComponent {
            path: self.component_path(&layer.digest),
            manifest_digest,
            layer_digest: layer.digest.clone(),
            index_digest,
            downloaded: false,
        }))
    }

    /// Streams the component of `layer` from `registry` into the cache, checking its size and
    /// digest before it takes its name.
    async fn download(
        &self,
        registry: &Registry,
        reference: &Reference,
        layer: &Descriptor,
    ) -> Result<(), PullError> {
        let path = self.component_path(&layer.digest);
        let tmp = self
            .dir
            .join(format!("{}.wasm.tmp-{}", hex_of(&layer.digest), unique()));
        let result = async {
            let mut stream = registry.blob(reference, layer).await?;
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| cache_error(&tmp, e))?;
            let mut hasher = Sha256::new();
            let mut size: i64 = 0;
            while let Some(chunk) = stream.try_next().await? {
                size = size.saturating_add(i64::try_from(chunk.len()).unwrap_or(i64::MAX));
                if size > layer.size {
                    return Err(PullError::Digest {
                        what: format!("size of layer {}", layer.digest),
                        expected: format!("{} bytes", layer.size),
                        actual: format!("more than {} bytes", layer.size),
                    });
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| cache_error(&tmp, e))?;
            }
            if size != layer.size {
                return Err(PullError::Digest {
                    what: format!("size of layer {}", layer.digest),
                    expected: format!("{} bytes", layer.size),
                    actual: format!("{size} bytes"),
                });
            }
            let actual = format!("sha256:{:x}", hasher.finalize());
            if actual != layer.digest {
                return Err(PullError::Digest {
                    what: format!("layer of {}", reference.whole()),
                    expected: layer.digest.clone(),
                    actual,
                });
            }
            file.sync_all().await.map_err(|e| cache_error(&tmp, e))?;
            drop(file);
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| cache_error(&path, e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

/// Fetches the wasm component `reference` names (`registry/repository:tag`, `…@sha256:…`, or
/// both) into `cache_dir`, with `credentials` (or anonymously); loopback registries and those in
/// `plain_http` are reached over plain HTTP. A digest-pinned reference is checked against the
/// manifest's digest; the layer against its descriptor. See the module's docs for what the cache
/// spares.
pub async fn fetch_wasm(
    reference: &str,
    credentials: Option<&Credentials>,
    plain_http: &[String],
    cache_dir: &Path,
) -> Result<FetchedComponent, PullError> {
    let parsed = parse_reference(reference)?;
    let cache = Cache::new(cache_dir);
    if let Some(digest) = parsed.digest()
        && let Some(found) = cache.resolve(&parsed, digest).await?
    {
        tracing::debug!(reference, "component found in the cache, digest-pinned");
        return Ok(found);
    }
    cache.create().await?;
    let name = parsed.whole();
    let unusable = |message: String| PullError::Image {
        reference: name.clone(),
        message,
    };
    let registry = Registry::new(&parsed, credentials, plain_http);
    let (top_bytes, top_digest) = registry.raw_manifest(&parsed).await?;
    let mut manifests = vec![(top_digest.clone(), top_bytes.clone())];
    let (manifest, manifest_digest, index_digest) =
        match AnyManifest::parse(&top_bytes).map_err(unusable)? {
            AnyManifest::Image(manifest) => (manifest, top_digest.clone(), None),
            AnyManifest::Index(entries) => {
                let entry = select_wasm(&name, &entries)?;
                let pinned = parsed.clone_with_digest(entry.digest.clone());
                let (bytes, digest) = registry.raw_manifest(&pinned).await?;
                let manifest = match AnyManifest::parse(&bytes).map_err(unusable)? {
                    AnyManifest::Image(manifest) => manifest,
                    AnyManifest::Index(_) => {
                        return Err(unusable("an index inside an index".into()));
                    }
                };
                manifests.push((digest.clone(), bytes));
                (manifest, digest, Some(top_digest.clone()))
            }
        };
    let layer = check_wasm_artifact(&name, &manifest)?;
    let downloaded = if cache.has_component(layer).await? {
        false
    } else {
        cache.download(&registry, &parsed, layer).await?;
        true
    };
    for (digest, bytes) in &manifests {
        cache.put_manifest(digest, bytes).await?;
    }
    if parsed.digest().is_none() {
        cache.put_tag(&parsed, &top_digest).await?;
    }
    Ok(FetchedComponent {
        path: cache.component_path(&layer.digest),
        manifest_digest,
        layer_digest: layer.digest.clone(),
        index_digest,
        downloaded,
    })
}

/// The component `reference` names if `cache_dir` already holds it, without asking any
/// registry: a digest-pinned reference, or a tag [`fetch_wasm`] resolved before (to what it
/// resolved to then). `None` when it is not (all) there.
pub async fn cached_wasm(
    reference: &str,
    cache_dir: &Path,
) -> Result<Option<FetchedComponent>, PullError> {
    let parsed = parse_reference(reference)?;
    let cache = Cache::new(cache_dir);
    let digest = match parsed.digest() {
        Some(digest) => digest.to_owned(),
        None => match cache.tag(&parsed).await? {
            Some(digest) => digest,
            None => return Ok(None),
        },
    };
    cache.resolve(&parsed, &digest).await
}

/// The config and manifest [`push_wasm`] publishes for a component whose bytes have digest
/// `layer_digest` and length `size`: `(config bytes, manifest bytes)`.
pub fn wasm_artifact(layer_digest: &str, size: u64) -> (Vec<u8>, Vec<u8>) {
    let config = json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": image::media_type::OCI_MANIFEST,
        "config": {
            "mediaType": media_type::WASM_CONFIG,
            "digest": image::sha256_digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": media_type::WASM_LAYER,
            "digest": layer_digest,
            "size": size,
        }],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    (config, manifest)
}

/// Publishes the component in `component` as a CNCF wasm OCI artifact under `reference`
/// (`registry/repository[:tag]`; `latest` without a tag), with `credentials` (or anonymously);
/// loopback registries and those in `plain_http` are reached over plain HTTP. Returns the
/// manifest's digest (`sha256:…`): `reference@digest` pins what was pushed. A file that is not
/// a component is refused before anything is sent.
pub async fn push_wasm(
    component: &Path,
    reference: &str,
    credentials: Option<&Credentials>,
    plain_http: &[String],
) -> Result<String, PushError> {
    let bytes = tokio::fs::read(component)
        .await
        .map_err(|e| PushError::Read {
            path: component.display().to_string(),
            message: e.to_string(),
        })?;
    check_component_header(&bytes).map_err(|message| PushError::NotComponent {
        path: component.display().to_string(),
        message,
    })?;
    let parsed = parse_reference(reference)?;
    if parsed.digest().is_some() {
        return Err(PushError::Registry(PullError::Reference {
            reference: reference.to_owned(),
            message: "push to a tag (registry/repository:tag), not a digest: the digest is what \
                      the push prints"
                .into(),
        }));
    }
    let layer_digest = image::sha256_digest(&bytes);
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let (config, manifest) = wasm_artifact(&layer_digest, size);
    let config_digest = image::sha256_digest(&config);
    let manifest_digest = image::sha256_digest(&manifest);
    let registry = Registry::new(&parsed, credentials, plain_http);
    registry
        .push_blob(&parsed, bytes::Bytes::from(bytes), &layer_digest)
        .await?;
    registry
        .push_blob(&parsed, bytes::Bytes::from(config), &config_digest)
        .await?;
    registry
        .push_manifest(&parsed, manifest, image::media_type::OCI_MANIFEST)
        .await?;
    Ok(manifest_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str, layers: &[&str]) -> Manifest {
        let descriptor = |media_type: &str| Descriptor {
            media_type: media_type.to_owned(),
            digest: image::sha256_digest(media_type.as_bytes()),
            size: 10,
            platform: None,
        };
        Manifest {
            config: descriptor(config),
            layers: layers.iter().map(|l| descriptor(l)).collect(),
        }
    }

    fn message(e: PullError) -> String {
        e.to_string()
    }

    #[test]
    fn the_wasm_artifact_shape_is_required() {
        let ok = manifest(media_type::WASM_CONFIG, &[media_type::WASM_LAYER]);
        assert_eq!(
            check_wasm_artifact("r", &ok)
                .map(|l| l.media_type.as_str())
                .ok(),
            Some(media_type::WASM_LAYER)
        );
        let container = manifest(
            media_type::OCI_IMAGE_CONFIG,
            &["application/vnd.oci.image.layer.v1.tar+gzip"],
        );
        let err = message(check_wasm_artifact("reg/busybox:v1", &container).unwrap_err());
        assert!(
            err.contains("reg/busybox:v1")
                && err.contains("container image")
                && err.contains("\"type\": \"docker\""),
            "{err}"
        );
        let docker = manifest(media_type::DOCKER_IMAGE_CONFIG, &[]);
        assert!(message(check_wasm_artifact("r", &docker).unwrap_err()).contains("container"));
        let other = manifest("application/vnd.example+json", &[media_type::WASM_LAYER]);
        let err = message(check_wasm_artifact("r", &other).unwrap_err());
        assert!(err.contains("application/vnd.example+json"), "{err}");
        let two = manifest(
            media_type::WASM_CONFIG,
            &[media_type::WASM_LAYER, media_type::WASM_LAYER],
        );
        let err = message(check_wasm_artifact("r", &two).unwrap_err());
        assert!(
            err.contains("exactly one layer") && err.contains("has 2"),
            "{err}"
        );
        let none = manifest(media_type::WASM_CONFIG, &[]);
        assert!(message(check_wasm_artifact("r", &none).unwrap_err()).contains("has 0"));
        let tar = manifest(media_type::WASM_CONFIG, &["application/x-tar"]);
        let err = message(check_wasm_artifact("r", &tar).unwrap_err());
        assert!(err.contains("application/x-tar"), "{err}");
        let mut huge = ok.clone();
        huge.layers[0].size = MAX_COMPONENT_BYTES + 1;
        assert!(message(check_wasm_artifact("r", &huge).unwrap_err()).contains("accepted"));
    }

    #[test]
    fn component_headers_are_checked() {
        assert!(check_component_header(b"\0asm\x0d\0\x01\0rest").is_ok());
        let core = check_component_header(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(core.contains("core WebAssembly module"), "{core}");
        let text = check_component_header(b"hello world").unwrap_err();
        assert!(text.contains("not a WebAssembly file"), "{text}");
        assert!(check_component_header(b"\0asm").is_err());
        let odd = check_component_header(b"\0asm\x0e\0\x01\0").unwrap_err();
        assert!(odd.contains("0e 00 01 00"), "{odd}");
    }

    #[test]
    fn the_pushed_artifact_has_the_cncf_shape_and_is_reproducible() {
        let layer = image::sha256_digest(b"component");
        let (config, bytes) = wasm_artifact(&layer, 9);
        assert_eq!(wasm_artifact(&layer, 9), (config.clone(), bytes.clone()));
        let Ok(AnyManifest::Image(parsed)) = AnyManifest::parse(&bytes) else {
            panic!("not an image manifest")
        };
        assert_eq!(check_wasm_artifact("r", &parsed).unwrap().digest, layer);
        assert_eq!(parsed.config.digest, image::sha256_digest(&config));
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(
            config,
            json!({"architecture": "wasm", "os": "wasip2", "layerDigests": [layer]})
        );
    }

    #[test]
    fn an_index_is_followed_to_its_wasm_entry_only() {
        let entry = |os: &str, arch: &str, digest: &str| Descriptor {
            media_type: image::media_type::OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(image::Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: None,
            }),
        };
        let entries = [
            entry("linux", "amd64", "sha256:1"),
            entry("wasip2", "wasm", "sha256:2"),
        ];
        assert_eq!(select_wasm("r", &entries).unwrap().digest, "sha256:2");
        let err = message(select_wasm("r", &entries[..1]).unwrap_err());
        assert!(
            err.contains("container images") && err.contains("linux/amd64"),
            "{err}"
        );
    }

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn temp_dir(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("verge-artifact-{tag}-{}", unique()));
        let _ = std::fs::remove_dir_all(&dir);
        Dir(dir)
    }

    /// A cache holding one pushed-shape artifact; its reference (on a port nothing listens on)
    /// and manifest digest.
    async fn seeded(dir: &Path) -> (String, String, String) {
        let component = b"\0asm\x0d\0\x01\0component".to_vec();
        let layer = image::sha256_digest(&component);
        let (_, manifest) = wasm_artifact(&layer, component.len() as u64);
        let digest = image::sha256_digest(&manifest);
        let cache = Cache::new(dir);
        cache.create().await.unwrap();
        cache.put_manifest(&digest, &manifest).await.unwrap();
        std::fs::write(cache.component_path(&layer), &component).unwrap();
        let tagged: Reference = "127.0.0.1:1/filter:1.0".parse().unwrap();
        cache.put_tag(&tagged, &digest).await.unwrap();
        ("127.0.0.1:1/filter".into(), digest, layer)
    }

    #[tokio::test]
    async fn a_pinned_cached_component_needs_no_registry() {
        let dir = temp_dir("pinned");
        let (repo, digest, layer) = seeded(&dir.0).await;
        // Nothing listens on port 1: any request would fail.
        let pinned = format!("{repo}@{digest}");
        let found = fetch_wasm(&pinned, None, &[], &dir.0).await.unwrap();
        assert_eq!(
            (
                &found.manifest_digest,
                &found.layer_digest,
                found.downloaded
            ),
            (&digest, &layer, false)
        );
        assert_eq!(found.path, dir.0.join(format!("{}.wasm", hex_of(&layer))));
        // A tag is resolved at the registry under on-create...
        let err = fetch_wasm(&format!("{repo}:1.0"), None, &[], &dir.0)
            .await
            .unwrap_err();
        assert!(matches!(err, PullError::Registry { .. }), "{err}");
        // ...but found in the cache for `never`.
        let cached = cached_wasm(&format!("{repo}:1.0"), &dir.0).await.unwrap();
        assert_eq!(cached.map(|c| c.manifest_digest), Some(digest.clone()));
        assert!(
            cached_wasm(&format!("{repo}:2.0"), &dir.0)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            cached_wasm("127.0.0.1:1/other:1.0", Path::new("/nonexistent"))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_damaged_cache_entry_is_not_used() {
        let dir = temp_dir("damaged");
        let (repo, digest, layer) = seeded(&dir.0).await;
        let pinned = format!("{repo}@{digest}");
        let component = dir.0.join(format!("{}.wasm", hex_of(&layer)));
        std::fs::write(&component, b"\0asm\x0d\0\x01\0c0mponent").unwrap();
        assert!(cached_wasm(&pinned, &dir.0).await.unwrap().is_none());
        assert!(!component.exists(), "the damaged component was kept");
        let (_, digest2, _) = seeded(&dir.0).await;
        assert_eq!(digest2, digest);
        let manifest = dir
            .0
            .join("manifests")
            .join(format!("{}.json", hex_of(&digest)));
        std::fs::write(&manifest, b"{}").unwrap();
        assert!(cached_wasm(&pinned, &dir.0).await.unwrap().is_none());
        assert!(!manifest.exists(), "the damaged manifest was kept");
    }

    #[tokio::test]
    async fn pushing_a_file_that_is_no_component_sends_nothing() {
        let dir = temp_dir("push");
        std::fs::create_dir_all(&dir.0).unwrap();
        let core = dir.0.join("core.wasm");
        std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
        let err = push_wasm(&core, "127.0.0.1:1/x:1", None, &[])
            .await
            .unwrap_err();
        assert!(
            matches!(err, PushError::NotComponent { .. }) && err.to_string().contains("core"),
            "{err}"
        );
        let err = push_wasm(&dir.0.join("missing.wasm"), "127.0.0.1:1/x:1", None, &[])
            .await
            .unwrap_err();
        assert!(matches!(err, PushError::Read { .. }), "{err}");
        let component = dir.0.join("c.wasm");
        std::fs::write(&component, b"\0asm\x0d\0\x01\0").unwrap();
        let pinned = format!("127.0.0.1:1/x@{}", image::sha256_digest(b""));
        let err = push_wasm(&component, &pinned, None, &[]).await.unwrap_err();
        assert!(
            matches!(err, PushError::Registry(PullError::Reference { .. })),
            "{err}"
        );
    }
}
