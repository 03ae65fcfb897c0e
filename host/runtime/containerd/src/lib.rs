//! Verge's containerd client: pulls OCI images from a registry into a containerd 1.6 and
//! unpacks them to committed snapshots, and runs container modules ([`ContainerRuntime`], the
//! `docker` module runtime: see `runtime.rs` for its lifecycle and traps).
//!
//! ```ignore
//! let containerd = Containerd::connect("/run/containerd/containerd.sock", "verge").await?;
//! let image = containerd.pull("127.0.0.1:5000/busybox:v1", Some(&credentials), |p| eprintln!("{p:?}")).await?;
//! // image.chain_id names the unpacked snapshot; image.config.run has Entrypoint, Cmd, Env…
//! assert!(containerd.image("127.0.0.1:5000/busybox:v1").await?.is_some());
//! containerd.remove_image("127.0.0.1:5000/busybox:v1").await?;
//!
//! let runtime = ContainerRuntime::new(containerd, ContainerOptions::default());
//! // spec.pull_policy and spec.registry_credentials come from the deployment
//! runtime.prepare(&spec).await?;                           // pulls if absent
//! let mut handle = runtime.start(&spec, context).await?;   // runs; stdout/stderr → context.log
//! let exit = handle.stop(Duration::from_secs(10)).await;   // SIGTERM, SIGKILL after 10 s
//! ```
//!
//! containerd 1.6 (Debian bookworm) has no Transfer service, so the pull is done here, as the Go
//! client's does it: the registry client (`oci-client`) fetches the manifest (an index is
//! followed to linux on this machine's architecture), the config and the layers; each blob not
//! already in containerd's content store (`Content.Info`) is streamed into it (`Content.Write`,
//! committed with its expected digest and size, so containerd verifies it); each layer is
//! unpacked on its parent (`Snapshots.Prepare`, `Diff.Apply`, `Snapshots.Commit` under the
//! layer's chain ID, skipped when that snapshot exists); the image record points at the
//! manifest (`Images.Create`, or `Images.Update` when it exists).
//!
//! # Garbage collection
//!
//! Everything a pull writes is made under a **lease** (`containerd-lease` header), created at
//! its start with a 1-hour `containerd.io/gc.expire` (so a crashed pull's lease expires) and
//! deleted at its end. A blob or snapshot that was already there is added to the lease
//! (`Leases.AddResource`), so another image's removal cannot collect it mid-pull. After that the content is held by the **GC labels**, as `ctr` leaves
//! them: the image record → the manifest, which carries `containerd.io/gc.ref.content.config`
//! and `…content.l.<i>` → the config, which carries
//! `containerd.io/gc.ref.snapshot.<snapshotter>` → the top snapshot → its parents. So
//! [`Containerd::remove_image`] only deletes the image record, synchronously collected
//! (`sync: true`): the content and snapshots no other image uses go with it. One lease per
//! image was not kept: it would hold blobs an image no longer needs after an update.
//!
//! Two pulls of the same blob at once (two modules, one image): the ingest ref is the digest,
//! so containerd lets one write it (the other gets `Unavailable`, "ref locked") and the other
//! waits, polling `Content.Info`, then uses it.
//!
//! # Namespaces
//!
//! Every call carries the `containerd-namespace` header; the namespace is the caller's choice
//! (`verge` by default, [`DEFAULT_NAMESPACE`]). Tests use one per test: runc's state and
//! cgroup paths are global per namespace and container id.
//!
//! Modules: [`error`] (errors), [`image`] (manifest, index and config parsing, chain IDs),
//! [`registry`] (the registry client, credentials), `client` (the connection and the
//! requests' headers), `content` (the content store), `unpack` (snapshots), `pull` (the pull,
//! [`Containerd::image`], [`Containerd::remove_image`]), and for running containers:
//! `runtime` ([`ContainerRuntime`], the `docker` [`verge_runtime::ModuleRuntime`]: pull policy,
//! start, stop, cleanup), [`spec`] (the OCI runtime spec from the image config),
//! [`create_options`] (a module's Docker `createOptions` into that spec: what is honoured, what
//! is refused by name), `container`
//! (the Containers / Tasks / Snapshots calls), `stdio` (the FIFOs into the module's log).

pub mod artifact;
mod client;
mod container;
mod content;
pub mod create_options;
pub mod error;
pub mod image;
mod pull;
pub mod registry;
mod runtime;
pub mod spec;
mod stdio;
mod unpack;
pub mod workload;

pub use artifact::{FetchedComponent, PushError, cached_wasm, fetch_wasm, push_wasm};
pub use client::{Containerd, DEFAULT_NAMESPACE, DEFAULT_SNAPSHOTTER};
pub use create_options::{CreateOptions, CreateOptionsError};
pub use error::{Error, PullError};
pub use image::{ImageConfig, RunConfig};
pub use pull::{Progress, PulledImage};
pub use registry::{Credentials, credentials_for};
pub use runtime::{
    ContainerOptions, ContainerRuntime, LABEL_GENERATION, LABEL_IMAGE, LABEL_MODULE,
};
pub use verge_runtime::PullPolicy;
pub use workload::{WorkloadMount, WorkloadSockets};
