//! Identities and their keys.
//!
//! - [`keys`]: the [`KeyStore`] where keys live and are used without leaving it: a PKCS#11
//!   token ([`Pkcs11KeyStore`]; SoftHSM2 in tests), or files in the data directory
//!   ([`FileKeyStore`], the embedded default).
//! - [`sas`]: SAS tokens as IoT Hub and IoT Edge write and check them: parsing, signing through a
//!   key store, audiences, authentication.
//! - [`registry`]: the [`Registry`] of the identities this edge device serves (itself, its
//!   modules, external modules, leaf devices), persisted as JSON, with their credentials.
//! - [`auth`]: how a client authenticated ([`AuthMethod`]) or why not ([`AuthError`]).

pub mod auth;
mod fsutil;
pub mod keys;
pub mod registry;
pub mod sas;

pub use auth::{AuthError, AuthMethod, KeySlot};
pub use keys::{FileKeyStore, KeyError, KeyStore, Pkcs11KeyStore};
pub use registry::{
    Auth, ConnectionString, Credentials, IdentityKind, NewAuth, Record, Registry, RegistryError,
};
pub use sas::{SasError, SasToken};
