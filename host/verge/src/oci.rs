//! Wasm components in OCI registries, from both ends: `verge push` ([`push`]) publishes a
//! component as a CNCF wasm OCI artifact, and the daemon's [`ComponentFetcher`] ([`OciFetcher`])
//! brings those of wasm modules whose `settings.image` is an OCI reference into
//! `<data_dir>/cache/oci` (`verge_runtime_containerd::artifact` does the registry work). No
//! containerd is involved, so this works on a wasm-only device.
//!
//! The fetcher:
//! - Credentials: the deployment's `registryCredentials` entry whose `address` is the
//!   reference's registry ([`verge_runtime_containerd::credentials_for`]); none: anonymous.
//! - Plain HTTP: loopback registries, and those in `[containerd] plain_http`.
//! - `imagePullPolicy`: `on-create` fetches ([`fetch_wasm`]: the manifest is resolved, the
//!   component downloaded unless cached; a digest-pinned reference already cached needs no
//!   registry); `never` takes only what the cache holds ([`cached_wasm`]), and a component that
//!   is not there is `NotFound`, naming the reference.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use verge_runtime::{BoxFuture, ModuleSpec, PullPolicy, RegistryCredentials, RuntimeError};
use verge_runtime_containerd::{
    PullError, PushError, cached_wasm, credentials_for, fetch_wasm, push_wasm,
};
use verge_runtime_wasm::{ComponentFetcher, Fetched};

/// Fetches wasm components from OCI registries into a cache directory.
#[derive(Debug)]
pub struct OciFetcher {
    cache_dir: PathBuf,
    plain_http: Vec<String>,
}

impl OciFetcher {
    /// A fetcher caching in `cache_dir`, reaching `plain_http` registries (besides loopback
    /// ones) over plain HTTP.
    pub fn new(cache_dir: PathBuf, plain_http: Vec<String>) -> Self {
        Self {
            cache_dir,
            plain_http,
        }
    }
}

fn runtime_error(e: PullError) -> RuntimeError {
    match e {
        PullError::Reference { .. } | PullError::Image { .. } => {
            RuntimeError::Invalid(e.to_string())
        }
        other => RuntimeError::Failed(other.to_string()),
    }
}

impl ComponentFetcher for OciFetcher {
    fn fetch<'a>(&'a self, spec: &'a ModuleSpec) -> BoxFuture<'a, Result<Fetched, RuntimeError>> {
        Box::pin(async move {
            let reference = spec.image.as_str();
            let found = match spec.pull_policy {
                PullPolicy::Never => cached_wasm(reference, &self.cache_dir)
                    .await
                    .map_err(runtime_error)?
                    .ok_or_else(|| {
                        RuntimeError::NotFound(format!(
                            "{reference}: imagePullPolicy is never and this component is not in \
                             the cache ({}); deploy it once with on-create",
                            self.cache_dir.display()
                        ))
                    })?,
                PullPolicy::OnCreate => {
                    let credentials = credentials_for(&spec.registry_credentials, reference);
                    fetch_wasm(reference, credentials, &self.plain_http, &self.cache_dir)
                        .await
                        .map_err(runtime_error)?
                }
            };
            tracing::debug!(
                reference,
                manifest = %found.manifest_digest,
                layer = %found.layer_digest,
                downloaded = found.downloaded,
                "wasm component from a registry"
            );
            Ok(Fetched {
                path: found.path,
                digest: found.manifest_digest,
            })
        })
    }
}

/// How `verge push` authenticates.
#[derive(Debug, Default)]
pub struct PushAuth {
    /// `--username`.
    pub username: Option<String>,
    /// `--password`.
    pub password: Option<String>,
    /// `--password-stdin`: the first line of standard input.
    pub password_stdin: bool,
}

impl PushAuth {
    fn credentials(self, registry: &str) -> anyhow::Result<Option<RegistryCredentials>> {
        let password = if self.password_stdin {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            Some(line.trim_end_matches(['\r', '\n']).to_owned())
        } else {
            self.password
        };
        match (self.username, password) {
            (None, None) => Ok(None),
            (Some(username), Some(password)) => Ok(Some(RegistryCredentials {
                address: registry.to_owned(),
                username,
                password,
            })),
            (Some(_), None) => bail!("--username needs --password-stdin or --password"),
            (None, Some(_)) => bail!("a password needs --username"),
        }
    }
}

/// The registry part (`host[:port]`) of `reference`, as Docker reads it.
fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// `verge push FILE REFERENCE`: publish the component in FILE as a CNCF wasm OCI artifact and
/// print `REFERENCE@DIGEST`. Plain HTTP for loopback registries, `plain_http` ones (the
/// configuration's `[containerd] plain_http`) and, with `--plain-http`, this one. Exit 2 when
/// FILE is not a component or the reference is not valid, 1 when the registry refuses.
pub async fn push(
    file: &Path,
    reference: &str,
    auth: PushAuth,
    plain_http_flag: bool,
    plain_http: &[String],
) -> anyhow::Result<ExitCode> {
    let registry = registry_of(reference);
    let credentials = match auth.credentials(registry) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut plain_http = plain_http.to_vec();
    if plain_http_flag {
        plain_http.push(registry.to_owned());
    }
    match push_wasm(file, reference, credentials.as_ref(), &plain_http).await {
        Ok(digest) => {
            println!("{reference}@{digest}");
            Ok(ExitCode::SUCCESS)
        }
        Err(
            e @ (PushError::Read { .. }
            | PushError::NotComponent { .. }
            | PushError::Registry(PullError::Reference { .. })),
        ) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("error: push to {reference} failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_of_a_reference() {
        assert_eq!(registry_of("127.0.0.1:5000/filter:1.0"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/filter"), "localhost");
        assert_eq!(registry_of("r.azurecr.io/a/b@sha256:00"), "r.azurecr.io");
        assert_eq!(registry_of("user/filter:1"), "docker.io");
        assert_eq!(registry_of("filter"), "docker.io");
    }
}
