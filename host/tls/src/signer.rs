//! A P-256 key in the [`KeyStore`], usable as a signer by rcgen (to sign certificates) and by
//! rustls (to sign handshakes). The store hashes and signs; the private key never leaves it.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::{SignatureAlgorithm, SignatureScheme};
use verge_identity::keys::{KeyError, KeyStore};

use crate::TlsError;
use crate::files::check_label;

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1), followed by the
/// 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// An ECDSA P-256 key held by a [`KeyStore`] under a label.
///
/// Implements [`rustls::sign::SigningKey`] (scheme `ECDSA_NISTP256_SHA256`) and rcgen's
/// [`rcgen::SigningKey`]; both send the message to the store, which hashes and signs it.
#[derive(Clone)]
pub struct StoreSigningKey {
    store: Arc<dyn KeyStore>,
    label: Arc<str>,
    public_key: Arc<[u8]>,
    spki: Arc<[u8]>,
    /// The store's error from the last failed rcgen signature (rcgen can only say "remote key
    /// error").
    last_error: Arc<Mutex<Option<KeyError>>>,
}

impl fmt::Debug for StoreSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSigningKey")
            .field("label", &self.label)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl StoreSigningKey {
    /// The existing key `label` in `store`.
    pub fn open(store: Arc<dyn KeyStore>, label: &str) -> Result<Self, TlsError> {
        check_label(label)?;
        let public_key = store.ec_p256_public_key(label)?;
        if public_key.len() != 65 || public_key.first() != Some(&0x04) {
            return Err(TlsError::BadKey {
                label: label.to_owned(),
                reason: format!(
                    "public key is not an uncompressed P-256 point ({} bytes)",
                    public_key.len()
                ),
            });
        }
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&public_key);
        Ok(Self {
            store,
            label: label.into(),
            public_key: public_key.into(),
            spki: spki.into(),
            last_error: Arc::default(),
        })
    }

    /// Generates the key `label` in `store` (which must not have it) and opens it.
    pub fn generate(store: Arc<dyn KeyStore>, label: &str) -> Result<Self, TlsError> {
        check_label(label)?;
        store.generate_ec_p256_key(label)?;
        Self::open(store, label)
    }

    /// Opens the key `label`, generating it first if the store has none.
    pub fn open_or_generate(store: Arc<dyn KeyStore>, label: &str) -> Result<Self, TlsError> {
        check_label(label)?;
        if store.exists(label)? {
            Self::open(store, label)
        } else {
            Self::generate(store, label)
        }
    }

    /// The key's label in the store.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The public key: an uncompressed SEC1 point (65 bytes).
    pub fn public_point(&self) -> &[u8] {
        &self.public_key
    }

    /// The public key as a DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The store's error behind rcgen's last "remote key error", if any (taken).
    pub(crate) fn take_error(&self) -> Option<KeyError> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Turns an rcgen error from signing with this key into a [`TlsError`], keeping the store's
    /// error when there is one.
    pub(crate) fn rcgen_error(&self, e: rcgen::Error) -> TlsError {
        match self.take_error() {
            Some(key_error) => TlsError::Key(key_error),
            None => TlsError::Generate(e.to_string()),
        }
    }
}

impl rcgen::PublicKeyData for StoreSigningKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for StoreSigningKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.store
            .ecdsa_p256_sha256_sign(&self.label, msg)
            .map_err(|e| {
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e);
                rcgen::Error::RemoteKeyError
            })
    }
}

impl rustls::sign::SigningKey for StoreSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| {
                Box::new(StoreSigner {
                    store: Arc::clone(&self.store),
                    label: Arc::clone(&self.label),
                }) as Box<dyn rustls::sign::Signer>
            })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(&self.spki[..]))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

/// One handshake signature through the store.
struct StoreSigner {
    store: Arc<dyn KeyStore>,
    label: Arc<str>,
}

impl fmt::Debug for StoreSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSigner")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl rustls::sign::Signer for StoreSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.store
            .ecdsa_p256_sha256_sign(&self.label, message)
            .map_err(|e| rustls::Error::General(format!("signing with key {:?}: {e}", self.label)))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn spki_prefix_matches_rcgen() -> Result<(), rcgen::Error> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ours = P256_SPKI_PREFIX.to_vec();
        ours.extend_from_slice(kp.der_bytes());
        assert_eq!(ours, kp.subject_public_key_info());
        Ok(())
    }
}
