//! The outcome of authenticating a client: how it proved who it is ([`AuthMethod`]), or why it
//! did not ([`AuthError`]). Errors name identities and reasons, never keys or tokens.

use verge_message::Identity;

use crate::keys::KeyError;
use crate::sas::SasError;

/// Which of an identity's two credentials matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySlot {
    /// The primary key or thumbprint.
    Primary,
    /// The secondary key or thumbprint.
    Secondary,
}

/// How a client proved its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// A SAS token signed with one of the identity's keys.
    Sas {
        /// Which key signed it.
        key: KeySlot,
        /// The key is the module's device's, not the module's own (only when the registry
        /// allows device keys for modules).
        device_key: bool,
        /// When the token expires (Unix seconds); the connection should not outlive it by more
        /// than the allowed clock skew.
        expiry: u64,
    },
    /// A client certificate whose thumbprint is registered.
    X509Thumbprint {
        /// Which thumbprint matched.
        key: KeySlot,
    },
    /// A client certificate issued by a trusted CA, with the device id as its common name.
    X509Ca,
}

/// Why a client was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The registry has no such identity.
    #[error("unknown identity {0}")]
    UnknownIdentity(Identity),
    /// The identity authenticates another way.
    #[error("identity {identity} does not use {method} authentication")]
    WrongAuthMethod {
        /// The identity.
        identity: Identity,
        /// The method that was tried: "SAS", "X.509 thumbprint" or "X.509 CA".
        method: &'static str,
    },
    /// The token cannot be parsed.
    #[error("malformed SAS token: {0}")]
    Malformed(#[from] SasError),
    /// The token expired (more than the allowed clock skew ago).
    #[error("SAS token expired at {expiry} (now {now})")]
    Expired {
        /// The token's expiry (Unix seconds).
        expiry: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// The token is for another resource: another hub host, another identity, or a shape that
    /// is neither `{host}/devices/{d}` nor `{host}/devices/{d}/modules/{m}`.
    #[error("SAS token audience {0:?} does not match the identity")]
    WrongAudience(String),
    /// The signature matches neither key.
    #[error("SAS token signature matches no key of the identity")]
    BadSignature,
    /// The certificate's thumbprint matches neither registered thumbprint.
    #[error("client certificate thumbprint matches neither registered thumbprint")]
    ThumbprintMismatch,
    /// The certificate's common name is not the device id.
    #[error("client certificate common name is not the device id")]
    CommonNameMismatch,
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] KeyError),
}
