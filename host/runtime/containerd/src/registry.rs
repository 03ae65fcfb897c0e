//! The registry side of a pull, over `oci-client`: credentials in the manifest's
//! `registryCredentials` shape, plain HTTP for loopback and configured registries, manifests
//! fetched raw (their digest checked against a digest-pinned reference) and blobs as streams.
//! Errors keep the registry's own words.

use futures_util::Stream;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::error::PullError;
use crate::image::{self, Descriptor, media_type};

/// Credentials for one registry (the deployment's `registryCredentials`).
pub use verge_runtime::RegistryCredentials as Credentials;

/// The entry of `all` whose `address` is the registry of `reference` (the host part, before
/// the first `/`, compared case-insensitively), if any.
pub fn credentials_for<'a>(all: &'a [Credentials], reference: &str) -> Option<&'a Credentials> {
    let registry = reference.parse::<Reference>().ok()?;
    Credentials::for_registry(all, registry.registry())
}

/// `reference` parsed (`registry/repository[:tag][@digest]`, Docker Hub's defaults applied).
pub(crate) fn parse_reference(reference: &str) -> Result<Reference, PullError> {
    reference
        .parse::<Reference>()
        .map_err(|e| PullError::Reference {
            reference: reference.to_owned(),
            message: e.to_string(),
        })
}

/// Installs ring as rustls's process-wide crypto provider, if none is (oci-client is built
/// without a provider of its own).
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race; either way a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Whether `host[:port]` is a loopback registry (plain HTTP, as Docker allows by default).
pub fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(registry, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One pull's connection to a registry.
pub(crate) struct Registry {
    client: Client,
    /// For one thing oci-client does not do: reading the body of a 401.
    http: reqwest::Client,
    auth: RegistryAuth,
    host: String,
}

/// How long [`Registry::unauthorized`] waits for the registry's 401 body.
const DETAIL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A blob as a stream of chunks.
pub(crate) type BlobStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<bytes::Bytes, PullError>> + Send>>;

impl Registry {
    /// A client for `reference`'s registry: plain HTTP when that registry is loopback or in
    /// `plain_http`, else HTTPS with the system's roots.
    pub(crate) fn new(
        reference: &Reference,
        credentials: Option<&Credentials>,
        plain_http: &[String],
    ) -> Self {
        install_crypto_provider();
        let host = reference.resolve_registry().to_owned();
        let mut insecure: Vec<String> = plain_http.to_vec();
        if is_loopback(&host) {
            insecure.push(host.clone());
        }
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            ..ClientConfig::default()
        };
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Self {
            client: Client::new(config),
            http: reqwest::Client::new(),
            auth,
            host,
        }
    }

    /// The registry's own words for a 401 on `url`: oci-client drops the body, so the request
    /// is made again (same credentials) to read it.
    async fn unauthorized(&self, url: &str) -> String {
        let mut request = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, media_type::ACCEPTED.join(", "));
        if let RegistryAuth::Basic(user, password) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let detail = match tokio::time::timeout(DETAIL_TIMEOUT, async {
            let response = request.send().await.ok()?;
            let status = response.status();
            let body = response.bytes().await.ok()?;
            Some((status, body))
        })
        .await
        {
            Ok(Some((status, body))) if status == reqwest::StatusCode::UNAUTHORIZED => {
                match serde_json::from_slice::<oci_client::errors::OciEnvelope>(&body) {
                    Ok(envelope) => envelope_text(&envelope),
                    Err(_) => String::from_utf8_lossy(&body[..body.len().min(512)])
                        .trim()
                        .to_owned(),
                }
            }
            _ => String::new(),
        };
        if detail.is_empty() {
            format!("401 Unauthorized from {url}")
        } else {
            format!("401 Unauthorized from {url}: {detail}")
        }
    }

    async fn error(&self, error: OciDistributionError) -> PullError {
        let message = match error {
            OciDistributionError::UnauthorizedError { url } => self.unauthorized(&url).await,
            OciDistributionError::AuthenticationFailure(text) => {
                format!("authentication failed: {text}")
            }
            OciDistributionError::RegistryError { envelope, url } => {
                format!("{url}: {}", envelope_text(&envelope))
            }
            OciDistributionError::ServerError { code, url, message } => {
                // A push's errors come this way, with the registry's envelope as the body.
                match serde_json::from_str::<oci_client::errors::OciEnvelope>(&message) {
                    Ok(envelope) if !envelope.errors.is_empty() => {
                        format!("{code} from {url}: {}", envelope_text(&envelope))
                    }
                    _ => format!("{code} from {url}: {}", message.trim()),
                }
            }
            OciDistributionError::DigestError(e) => format!("digest: {e}"),
            other => other.to_string(),
        };
        PullError::Registry {
            registry: self.host.clone(),
            message,
        }
    }

    /// The manifest `reference` names (raw bytes and their digest), with its digest checked
    /// when the reference is digest-pinned. An index is followed to the linux entry for this
    /// machine's architecture; the index digest is returned too.
    pub(crate) async fn manifest(
        &self,
        reference: &Reference,
    ) -> Result<ResolvedManifest, PullError> {
        let (bytes, digest) = self.raw_manifest(reference).await?;
        match image::AnyManifest::parse(&bytes) {
            Ok(image::AnyManifest::Image(manifest)) => Ok(ResolvedManifest {
                descriptor: descriptor_of(&bytes, &digest),
                bytes,
                manifest,
                index_digest: None,
            }),
            Ok(image::AnyManifest::Index(entries)) => {
                let entry = image::select_platform(&entries).ok_or_else(|| PullError::Image {
                    reference: reference.whole(),
                    message: format!(
                        "the index has no manifest for linux/{}",
                        image::host_architecture()
                    ),
                })?;
                let pinned = reference.clone_with_digest(entry.digest.clone());
                let (bytes, platform_digest) = self.raw_manifest(&pinned).await?;
                let manifest = match image::AnyManifest::parse(&bytes) {
                    Ok(image::AnyManifest::Image(manifest)) => manifest,
                    Ok(image::AnyManifest::Index(_)) => {
                        return Err(PullError::Image {
                            reference: reference.whole(),
                            message: "an index inside an index".into(),
                        });
                    }
                    Err(message) => {
                        return Err(PullError::Image {
                            reference: reference.whole(),
                            message,
                        });
                    }
                };
                Ok(ResolvedManifest {
                    descriptor: descriptor_of(&bytes, &platform_digest),
                    bytes,
                    manifest,
                    index_digest: Some(digest),
                })
            }
            Err(message) => Err(PullError::Image {
                reference: reference.whole(),
                message,
            }),
        }
    }

    /// The manifest (or index) `reference` names, as raw bytes with their digest, checked
    /// against the reference's digest when it is pinned. Nothing is followed or parsed.
    pub(crate) async fn raw_manifest(
        &self,
        reference: &Reference,
    ) -> Result<(Vec<u8>, String), PullError> {
        let (bytes, _) = match self
            .client
            .pull_manifest_raw(reference, &self.auth, media_type::ACCEPTED)
            .await
        {
            Ok(ok) => ok,
            Err(e) => return Err(self.error(e).await),
        };
        // Our own check, whatever the registry's header says: the digest is of the bytes.
        let actual = image::sha256_digest(&bytes);
        if let Some(expected) = reference.digest()
            && expected != actual
        {
            return Err(PullError::Digest {
                what: format!("manifest of {}", reference.whole()),
                expected: expected.to_owned(),
                actual,
            });
        }
        Ok((bytes.to_vec(), actual))
    }

    /// The blob `descriptor` names, as a stream (containerd checks its digest and size when
    /// it is committed).
    pub(crate) async fn blob(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<BlobStream, PullError> {
        let oci = OciDescriptor {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest.clone(),
            size: descriptor.size,
            ..OciDescriptor::default()
        };
        let sized = match self.client.pull_blob_stream(reference, &oci).await {
            Ok(ok) => ok,
            Err(e) => return Err(self.error(e).await),
        };
        use futures_util::StreamExt as _;
        let registry = self.host.clone();
        let digest = descriptor.digest.clone();
        Ok(Box::pin(sized.stream.map(move |chunk| {
            chunk.map_err(|e| PullError::Registry {
                registry: registry.clone(),
                message: format!("reading {digest}: {e}"),
            })
        })))
    }
}

/// The push side, for `verge push` (see `artifact.rs`).
impl Registry {
    /// Uploads blob `data`, whose digest is `digest`, to `reference`'s repository.
    pub(crate) async fn push_blob(
        &self,
        reference: &Reference,
        data: bytes::Bytes,
        digest: &str,
    ) -> Result<(), PullError> {
        self.client
            .store_auth_if_needed(&self.host, &self.auth)
            .await;
        match self.client.push_blob(reference, data, digest).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(e).await),
        }
    }

    /// Puts manifest `bytes` of `media_type` under `reference` (its tag, or its digest).
    pub(crate) async fn push_manifest(
        &self,
        reference: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(), PullError> {
        let content_type =
            reqwest::header::HeaderValue::from_str(media_type).map_err(|e| PullError::Image {
                reference: reference.whole(),
                message: format!("media type {media_type:?}: {e}"),
            })?;
        self.client
            .store_auth_if_needed(&self.host, &self.auth)
            .await;
        match self
            .client
            .push_manifest_raw(reference, bytes, content_type)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(e).await),
        }
    }
}

/// The platform manifest of a pull, as fetched.
pub(crate) struct ResolvedManifest {
    /// Its descriptor (media type from the document, digest and size of the bytes).
    pub descriptor: Descriptor,
    /// The bytes, as the registry sent them (the digest is of these).
    pub bytes: Vec<u8>,
    /// Parsed.
    pub manifest: image::Manifest,
    /// The index it was chosen from, if the reference named an index.
    pub index_digest: Option<String>,
}

/// `CODE: message; …` of a registry's error envelope.
fn envelope_text(envelope: &oci_client::errors::OciEnvelope) -> String {
    let errors: Vec<String> = envelope
        .errors
        .iter()
        .map(|e| {
            let code = serde_json::to_value(&e.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", e.code));
            format!("{code}: {}", e.message)
        })
        .collect();
    errors.join("; ")
}

fn descriptor_of(bytes: &[u8], digest: &str) -> Descriptor {
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
    }
    let media_type = serde_json::from_slice::<Kind>(bytes)
        .ok()
        .and_then(|k| k.media_type)
        .unwrap_or_else(|| media_type::OCI_MANIFEST.to_owned());
    Descriptor {
        media_type,
        digest: digest.to_owned(),
        size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        platform: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn credentials_are_chosen_by_registry_host() {
        let all = [
            Credentials {
                address: "other.example".into(),
                username: "a".into(),
                password: "x".into(),
            },
            Credentials {
                address: "https://127.0.0.1:5000/".into(),
                username: "b".into(),
                password: "s3cret".into(),
            },
        ];
        let found = credentials_for(&all, "127.0.0.1:5000/busybox:v1");
        assert_eq!(found.map(|c| c.username.as_str()), Some("b"));
        assert!(credentials_for(&all, "docker.io/library/busybox").is_none());
        assert!(!format!("{:?}", all[1]).contains("s3cret"));
    }
}
