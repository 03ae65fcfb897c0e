//! TLS for Verge's listeners.
//!
//! - [`ca`]: the edge CA, a self-signed P-256 CA whose key lives in the [`KeyStore`]; its
//!   certificate is the trust bundle.
//! - [`server`]: the hub's server certificate, issued by the edge CA, and a
//!   [`rustls::ServerConfig`] whose signing key is used through the store.
//! - [`client_auth`]: X.509 client authentication (CA-signed and self-signed "thumbprint"
//!   certificates, or none) and issuing client certificates.
//!
//! Keys are only ever used through [`KeyStore`]: a private key generated in a token stays there.
//!
//! [`KeyStore`]: verge_identity::keys::KeyStore

pub mod ca;
pub mod client_auth;
mod error;
mod files;
mod parse;
pub mod server;
mod signer;

pub use ca::{CaConfig, CertOrigin, EdgeCa};
pub use client_auth::{
    ClientAuth, ClientCert, IssuedCert, issue_client_cert, issue_client_cert_with_software_key,
    self_signed_client_cert, thumbprint_sha256,
};
pub use error::TlsError;
pub use files::{certs_from_pem, private_key_from_pem};
pub use server::{
    ServerCert, ServerCertConfig, ServerCertResolver, issue_server_cert_with_software_key,
    server_config,
};
pub use signer::StoreSigningKey;

/// The crypto provider every config in this crate uses: rustls' `ring` provider.
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
