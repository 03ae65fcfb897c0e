//! Where keys live. A key is named by a label and used through the store; the bytes of a key
//! generated in the store never leave it.

use std::fmt;

/// What went wrong with a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key has that label.
    #[error("no key {0:?}")]
    NotFound(String),
    /// A key with that label already exists.
    #[error("key {0:?} already exists")]
    Exists(String),
    /// The store failed (the token, the file system).
    #[error("key store: {0}")]
    Store(String),
}

/// A store of HMAC and ECDSA P-256 keys.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Generate a 256-bit HMAC-SHA256 key inside the store; it never leaves it.
    fn generate_hmac_key(&self, label: &str) -> Result<(), KeyError>;
    /// Store a shared secret someone else must also hold (a leaf device's key, shown once to its
    /// owner); from then on it is used only inside the store.
    fn import_hmac_key(&self, label: &str, secret: &[u8]) -> Result<(), KeyError>;
    /// HMAC-SHA256 of `data` with key `label`, computed by the store.
    fn hmac_sha256(&self, label: &str, data: &[u8]) -> Result<[u8; 32], KeyError>;
    /// Generate an ECDSA P-256 key pair inside the store; the private key never leaves it.
    fn generate_ec_p256_key(&self, label: &str) -> Result<(), KeyError>;
    /// The public key of `label`: an uncompressed SEC1 point (65 bytes, `04 || x || y`).
    fn ec_p256_public_key(&self, label: &str) -> Result<Vec<u8>, KeyError>;
    /// ECDSA P-256 signature over SHA-256 of `message`, DER-encoded (`SEQUENCE { r, s }`).
    fn ecdsa_p256_sha256_sign(&self, label: &str, message: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// Whether a key has that label.
    fn exists(&self, label: &str) -> Result<bool, KeyError>;
    /// Delete the key `label` (no error if there is none).
    fn delete(&self, label: &str) -> Result<(), KeyError>;
}
