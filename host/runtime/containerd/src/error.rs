//! Errors: [`Error`] for a call to containerd, [`PullError`] for a pull (a registry, containerd,
//! or the image itself). Every variant carries the other side's own message: a registry's error
//! text, containerd's gRPC status message.

use containerd_client::tonic;

/// A containerd call failed, or the socket could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be connected to.
    #[error("cannot connect to containerd at {socket}: {message}")]
    Connect {
        /// The socket path.
        socket: String,
        /// Why.
        message: String,
    },
    /// A gRPC call answered with an error status.
    #[error("containerd {call}: {code:?}: {message}")]
    Call {
        /// The service and method (`Content.Write`).
        call: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// containerd's message.
        message: String,
    },
    /// A call's answer did not make sense (a missing field, a wrong digest).
    #[error("containerd {call}: {message}")]
    Protocol {
        /// The service and method.
        call: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The namespace is not a valid gRPC header value.
    #[error("invalid containerd namespace {0:?}")]
    Namespace(String),
}

impl Error {
    pub(crate) fn call(call: &'static str, status: tonic::Status) -> Self {
        Self::Call {
            call,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// The gRPC status code, for a call that answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Call { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// What containerd (or the connection) said, without the call's name.
    pub fn message(&self) -> &str {
        match self {
            Self::Connect { message, .. }
            | Self::Call { message, .. }
            | Self::Protocol { message, .. } => message,
            Self::Namespace(namespace) => namespace,
        }
    }

    /// Whether containerd said the thing does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }
}

/// A pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference does not parse (`registry/repository[:tag][@digest]`).
    #[error("invalid image reference {reference:?}: {message}")]
    Reference {
        /// The reference as given.
        reference: String,
        /// Why.
        message: String,
    },
    /// The registry refused a request or could not be reached; `message` is the registry's own
    /// answer (status and error text).
    #[error("registry {registry}: {message}")]
    Registry {
        /// `host[:port]`.
        registry: String,
        /// The registry's error.
        message: String,
    },
    /// What the registry sent does not match what was asked for (a digest-pinned reference
    /// whose content has another digest, a blob of the wrong size).
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    Digest {
        /// What was checked (`manifest`, `layer sha256:…`).
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what came.
        actual: String,
    },
    /// The image cannot be used: not an image manifest, no linux/amd64 entry, a config that
    /// does not parse, layers and diff_ids that do not match.
    #[error("unusable image {reference}: {message}")]
    Image {
        /// The reference.
        reference: String,
        /// Why.
        message: String,
    },
    /// The local cache of fetched wasm components (`artifact.rs`) could not be read or
    /// written.
    #[error("component cache {path}: {message}")]
    Cache {
        /// The file or directory.
        path: String,
        /// Why.
        message: String,
    },
    /// containerd failed.
    #[error(transparent)]
    Containerd(#[from] Error),
}
