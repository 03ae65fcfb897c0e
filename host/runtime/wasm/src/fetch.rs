//! Components named by an OCI reference rather than a local path.
//!
//! A wasm module's `settings.image` is a local file or an OCI reference, as
//! [`verge_manifest::is_local_path`] decides (the CLI uses the same rule when it makes relative
//! paths absolute, so the two never disagree). A local path is loaded as it is. A reference is
//! handed to the runtime's [`ComponentFetcher`] (`WasmOptions::fetcher`), which brings the
//! component into a local file and says which manifest it came from; without one, a reference
//! is refused. The daemon's fetcher (`host/verge/src/oci.rs`) pulls CNCF wasm OCI artifacts
//! into `<data_dir>/cache/oci`.
//!
//! The runtime asks the fetcher on `prepare` (a deployment) and, once the component loaded,
//! remembers the answer per reference: `start` (and every restart) runs the component that was
//! prepared, without asking a registry again, so a module restarts on a device that went
//! offline, and the `imageHash` reported at deployment is what runs. A `start` with nothing
//! prepared for its reference asks the fetcher.

use std::fmt::Debug;
use std::path::PathBuf;

use verge_runtime::{BoxFuture, ModuleSpec, RuntimeError};

/// A component the fetcher brought into a local file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The component file.
    pub path: PathBuf,
    /// The digest (`sha256:…`) of the manifest it came from, reported as `imageHash`.
    pub digest: String,
}

/// Brings components named by OCI references into local files.
pub trait ComponentFetcher: Send + Sync + Debug {
    /// The component `spec.image` names (an OCI reference). Must honour `spec.pull_policy`:
    /// with [`verge_runtime::PullPolicy::Never`] nothing is fetched, and a component that is
    /// not already local is [`RuntimeError::NotFound`], naming the reference. Credentials are
    /// the entry of `spec.registry_credentials` for the reference's registry.
    fn fetch<'a>(&'a self, spec: &'a ModuleSpec) -> BoxFuture<'a, Result<Fetched, RuntimeError>>;
}

/// Whether the wasm runtime takes `image` for a local file (else an OCI reference).
pub fn is_local(image: &str) -> bool {
    verge_manifest::is_local_path(image)
}

/// Why a reference cannot be used by a runtime without a fetcher.
pub(crate) fn no_fetcher(image: &str) -> RuntimeError {
    RuntimeError::Invalid(format!(
        "{image:?} is an OCI reference, and this runtime has no way to fetch components from a \
         registry; name a local component file instead (an absolute path, ./…, ../…, or a path \
         ending in .wasm)"
    ))
}
