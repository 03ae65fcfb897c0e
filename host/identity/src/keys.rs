//! Where keys live. A key is named by a label and used through the store; the bytes of a key
//! generated in the store never leave it.
//!
//! - [`file`]: [`FileKeyStore`], keys in files under a directory (the embedded default).
//! - [`pkcs11`]: [`Pkcs11KeyStore`], keys as objects on a PKCS#11 token (a TPM, a secure
//!   element, an HSM; SoftHSM2 in tests).
//! - [`der`]: the DER encoding of an ECDSA signature, for tokens that return raw `r || s`.

pub mod der;
pub mod file;
pub mod pkcs11;

use std::fmt;

pub use file::FileKeyStore;
pub use pkcs11::{Pkcs11KeyStore, Pkcs11Uri};

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
    /// The key exists but is of another kind than the operation needs (an HMAC operation on an
    /// EC key, or the reverse).
    #[error("key {label:?} is not {expected}")]
    WrongKind {
        /// The key's label.
        label: String,
        /// What the operation needs: "an HMAC key" or "an EC P-256 key".
        expected: &'static str,
    },
    /// The request itself is unusable (an empty label, an empty secret).
    #[error("invalid key request: {0}")]
    Invalid(String),
}

/// A store of HMAC and ECDSA P-256 keys.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Generate a 256-bit HMAC-SHA256 key inside the store; it never leaves it.
    fn generate_hmac_key(&self, label: &str) -> Result<(), KeyError>;
    /// Store a shared secret someone else must also hold (a leaf device's key, shown once to its
    /// owner); from then on it is used only inside the store. Tokens may refuse secrets shorter
    /// than 32 bytes (SoftHSM does); 32 random bytes are accepted everywhere.
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

/// Labels must not be empty; anything else is the store's to encode.
pub(crate) fn check_label(label: &str) -> Result<(), KeyError> {
    if label.is_empty() {
        return Err(KeyError::Invalid("empty key label".into()));
    }
    Ok(())
}

/// Secrets to import must not be empty.
pub(crate) fn check_secret(secret: &[u8]) -> Result<(), KeyError> {
    if secret.is_empty() {
        return Err(KeyError::Invalid("empty HMAC secret".into()));
    }
    Ok(())
}
