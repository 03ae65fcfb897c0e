//! Identities and their keys.
//!
//! - [`keys`]: the [`KeyStore`] where keys live and are used without leaving it: a PKCS#11
//!   token (SoftHSM2 in tests), or files in the data directory (the embedded default).

pub mod keys;

pub use keys::{KeyError, KeyStore};
