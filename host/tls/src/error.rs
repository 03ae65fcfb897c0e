//! The crate's error type.

use std::path::PathBuf;

use verge_identity::keys::KeyError;

/// What went wrong with a certificate, a key or a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The key store failed or lacks a key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A certificate file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A certificate could not be built or signed.
    #[error("certificate generation: {0}")]
    Generate(String),
    /// A certificate (or PEM text) could not be parsed.
    #[error("invalid certificate: {0}")]
    Parse(String),
    /// A key in the store is not what it should be (not a P-256 point, not the certificate's key).
    #[error("key {label:?}: {reason}")]
    BadKey {
        /// The key's label.
        label: String,
        /// What is wrong.
        reason: String,
    },
    /// A label cannot name a key and its certificate file.
    #[error("invalid label {0:?}: use letters, digits, '-', '_' and '.'")]
    Label(String),
    /// A setting is unusable (no host name, a zero validity, a bad host name).
    #[error("configuration: {0}")]
    Config(String),
    /// A client certificate is not acceptable.
    #[error("client certificate rejected: {0}")]
    Rejected(String),
    /// rustls refused a configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}
