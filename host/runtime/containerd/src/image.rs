//! What an image is made of, parsed from its JSON: the manifest (config and layer
//! descriptors), the index (one manifest per platform), the image config (`Entrypoint`, `Cmd`,
//! `Env`, `WorkingDir`, `User`, `rootfs.diff_ids`), and the chain ID of its layers. Pure
//! functions: nothing here talks to a registry or to containerd.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// Media types of manifests this crate follows.
pub mod media_type {
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// A Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// A Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Every manifest type a pull accepts, in the `Accept` header.
    pub const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
}

/// A content descriptor: media type, digest (`sha256:<hex>`), size.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    /// Media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Platform, in an index.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A platform, in an index entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`…
    #[serde(default)]
    pub architecture: String,
    /// `linux`…
    #[serde(default)]
    pub os: String,
    /// `v8`…
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image manifest: its config and layers.
#[derive(Clone, Debug, Deserialize)]
pub struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// A manifest as the registry serves it: an image manifest or an index.
#[derive(Debug)]
pub enum AnyManifest {
    /// An image manifest.
    Image(Manifest),
    /// An index (a manifest list), one entry per platform.
    Index(Vec<Descriptor>),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

impl AnyManifest {
    /// Parses a manifest or an index; `content_type` is the one the registry gave, used when
    /// the document has no `mediaType`.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let is_index = match probe.media_type.as_deref() {
            Some(media_type::OCI_INDEX | media_type::DOCKER_LIST) => true,
            Some(media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST) => false,
            Some(other) => return Err(format!("unsupported manifest media type {other}")),
            None => probe.manifests.is_some(),
        };
        if is_index {
            Ok(Self::Index(probe.manifests.unwrap_or_default()))
        } else {
            serde_json::from_slice(bytes)
                .map(Self::Image)
                .map_err(|e| format!("manifest: {e}"))
        }
    }
}

/// The architecture in OCI's spelling for this build (`amd64`, `arm64`…).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        other => other,
    }
}

/// The entry of an index for `linux` on this machine's architecture.
pub fn select_platform(entries: &[Descriptor]) -> Option<&Descriptor> {
    let arch = host_architecture();
    entries.iter().find(|entry| {
        entry
            .platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
    })
}

/// The run-time part of an image config, as `docker inspect` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RunConfig {
    /// `Entrypoint`.
    #[serde(rename = "Entrypoint", default, deserialize_with = "null_as_default")]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(rename = "Cmd", default, deserialize_with = "null_as_default")]
    pub cmd: Vec<String>,
    /// `Env`, `NAME=value`.
    #[serde(rename = "Env", default, deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    /// `WorkingDir` (empty: `/`).
    #[serde(rename = "WorkingDir", default, deserialize_with = "null_as_default")]
    pub working_dir: String,
    /// `User` (empty: root).
    #[serde(rename = "User", default, deserialize_with = "null_as_default")]
    pub user: String,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An image config blob: what runs, and the layers' diff_ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `config`.
    pub run: RunConfig,
    /// `rootfs.diff_ids`, bottom first.
    pub diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    config: RunConfig,
    rootfs: RawRootfs,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl ImageConfig {
    /// Parses an image config blob.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| format!("image config: {e}"))?;
        Ok(Self {
            run: raw.config,
            diff_ids: raw.rootfs.diff_ids,
        })
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The chain IDs of layers with these diff_ids, bottom first: `chain[0] = diff_id[0]`,
/// `chain[i] = sha256(chain[i-1] + " " + diff_id[i])`. The last one names the image's
/// unpacked snapshot.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// Whether `digest` is `sha256:` and 64 lower-case hex digits (the only algorithm pulled).
pub fn is_sha256(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], sha256_digest(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn an_index_picks_linux_on_this_architecture() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
              {{"mediaType":"{m}","digest":"sha256:1","size":1,"platform":{{"os":"linux","architecture":"s390x"}}}},
              {{"mediaType":"{m}","digest":"sha256:2","size":2,"platform":{{"os":"linux","architecture":"{}"}}}}]}}"#,
            media_type::OCI_INDEX,
            host_architecture(),
            m = media_type::OCI_MANIFEST
        );
        let Ok(AnyManifest::Index(entries)) = AnyManifest::parse(index.as_bytes()) else {
            panic!("not an index")
        };
        assert_eq!(
            select_platform(&entries).map(|d| d.digest.as_str()),
            Some("sha256:2")
        );
    }

    #[test]
    fn a_config_with_nulls_parses() {
        let config = ImageConfig::parse(
            br#"{"config":{"Cmd":null,"Entrypoint":["sh"],"Env":["A=1"]},"rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#,
        )
        .expect("parses");
        assert_eq!(config.run.entrypoint, ["sh"]);
        assert!(config.run.cmd.is_empty());
        assert_eq!(config.diff_ids, ["sha256:x"]);
        assert!(ImageConfig::parse(b"[]").is_err());
        assert!(AnyManifest::parse(b"{").is_err());
    }

    #[test]
    fn sha256_digests_are_checked() {
        assert!(is_sha256(&sha256_digest(b"")));
        assert!(!is_sha256("sha256:abc"));
        assert!(!is_sha256(&format!("sha512:{}", "a".repeat(64))));
    }
}
