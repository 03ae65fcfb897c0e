//! The connection to containerd: a tonic channel over its Unix socket, the namespace, the
//! snapshotter, and requests with their headers (`containerd-namespace` always,
//! `containerd-lease` when a lease holds what the call creates).

use std::path::{Path, PathBuf};

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{AddResourceRequest, CreateRequest, DeleteRequest, Resource};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{self, Request};

use crate::error::Error;

/// Verge's containerd namespace unless configured otherwise.
pub const DEFAULT_NAMESPACE: &str = "verge";
/// The snapshotter unless configured otherwise.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// How long a pull's lease lives if the pull never deletes it (a crash).
const LEASE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The `containerd-namespace` header for `namespace` (not empty, a valid header value).
fn namespace_header(namespace: &str) -> Result<MetadataValue<tonic::metadata::Ascii>, Error> {
    namespace
        .parse()
        .ok()
        .filter(|_| !namespace.is_empty())
        .ok_or_else(|| Error::Namespace(namespace.to_owned()))
}

/// A connection to containerd, in one namespace. Cheap to clone (one HTTP/2 channel).
#[derive(Clone, Debug)]
pub struct Containerd {
    pub(crate) channel: Channel,
    socket: PathBuf,
    namespace: MetadataValue<tonic::metadata::Ascii>,
    namespace_name: String,
    pub(crate) snapshotter: String,
    pub(crate) plain_http: Vec<String>,
}

impl Containerd {
    /// Connects to containerd's gRPC socket; every call will carry `namespace`.
    pub async fn connect(socket: impl AsRef<Path>, namespace: &str) -> Result<Self, Error> {
        let socket = socket.as_ref().to_path_buf();
        let header = namespace_header(namespace)?;
        let channel = containerd_client::connect(&socket)
            .await
            .map_err(|e| Error::Connect {
                socket: socket.display().to_string(),
                message: error_chain(&e),
            })?;
        Ok(Self::on(channel, socket, header, namespace))
    }

    fn on(
        channel: Channel,
        socket: PathBuf,
        namespace: MetadataValue<tonic::metadata::Ascii>,
        name: &str,
    ) -> Self {
        Self {
            channel,
            socket,
            namespace,
            namespace_name: name.to_owned(),
            snapshotter: DEFAULT_SNAPSHOTTER.to_owned(),
            plain_http: Vec::new(),
        }
    }

    /// A connection to containerd's gRPC socket made when first used (and made again after
    /// containerd restarts), so a daemon can start before containerd, or without it: calls fail
    /// with [`Error::Connect`]-like `Unavailable` errors until it is there.
    pub fn lazy(socket: impl AsRef<Path>, namespace: &str) -> Result<Self, Error> {
        let socket = socket.as_ref().to_path_buf();
        let header = namespace_header(namespace)?;
        let path = socket.clone();
        let channel = tonic::transport::Endpoint::from_static("http://[::]")
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Ok(Self::on(channel, socket, header, namespace))
    }

    /// Whether containerd answers (its `Version` service), and its version.
    pub async fn version(&self) -> Result<String, Error> {
        let response = containerd_client::services::v1::version_client::VersionClient::new(
            self.channel.clone(),
        )
        .version(())
        .await
        .map_err(|status| Error::Connect {
            socket: self.socket.display().to_string(),
            message: status.message().to_owned(),
        })?;
        Ok(response.into_inner().version)
    }

    /// Uses `snapshotter` (`overlayfs` by default; `native` where overlay cannot mount).
    pub fn with_snapshotter(mut self, snapshotter: &str) -> Self {
        snapshotter.clone_into(&mut self.snapshotter);
        self
    }

    /// Registries (`host[:port]`) reached over plain HTTP besides loopback ones, which always
    /// are.
    pub fn with_plain_http(mut self, registries: &[String]) -> Self {
        self.plain_http = registries.to_vec();
        self
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace_name
    }

    /// The snapshotter.
    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    /// A request in this namespace.
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        request
    }

    /// A request in this namespace under `lease`.
    pub(crate) fn leased<T>(&self, message: T, lease: &Lease) -> Request<T> {
        let mut request = self.request(message);
        request
            .metadata_mut()
            .insert("containerd-lease", lease.header.clone());
        request
    }

    /// Creates a lease that expires after an hour if not deleted.
    pub(crate) async fn create_lease(&self, purpose: &str) -> Result<Lease, Error> {
        let expire = std::time::SystemTime::now() + LEASE_EXPIRY;
        let mut labels = std::collections::HashMap::new();
        labels.insert(
            "containerd.io/gc.expire".to_owned(),
            verge_message::time::rfc3339(expire),
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!("verge-{purpose}-{nanos}");
        let response = LeasesClient::new(self.channel.clone())
            .create(self.request(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| Error::call("Leases.Create", s))?
            .into_inner();
        let id = response.lease.map_or(id, |lease| lease.id);
        let header = id.parse().map_err(|_| Error::Protocol {
            call: "Leases.Create",
            message: format!("lease id {id:?} is not a header value"),
        })?;
        Ok(Lease { id, header })
    }

    /// Adds a resource that exists already to `lease` (`kind`: `content`, or
    /// `snapshots/<snapshotter>`), so that it cannot be collected while the lease lives even if
    /// what held it goes away (another image sharing a layer, removed meanwhile).
    pub(crate) async fn lease_resource(
        &self,
        lease: &Lease,
        id: &str,
        kind: &str,
    ) -> Result<(), Error> {
        LeasesClient::new(self.channel.clone())
            .add_resource(self.request(AddResourceRequest {
                id: lease.id.clone(),
                resource: Some(Resource {
                    id: id.to_owned(),
                    r#type: kind.to_owned(),
                }),
            }))
            .await
            .map_err(|s| Error::call("Leases.AddResource", s))?;
        Ok(())
    }

    /// Deletes a lease (what it held becomes collectable unless something else refers to it).
    pub(crate) async fn delete_lease(&self, lease: &Lease) -> Result<(), Error> {
        LeasesClient::new(self.channel.clone())
            .delete(self.request(DeleteRequest {
                id: lease.id.clone(),
                sync: false,
            }))
            .await
            .map_err(|s| Error::call("Leases.Delete", s))?;
        Ok(())
    }
}

/// A containerd lease.
#[derive(Debug)]
pub(crate) struct Lease {
    pub id: String,
    header: MetadataValue<tonic::metadata::Ascii>,
}

/// An error and its sources, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
