//! The edge CA: a self-signed ECDSA P-256 CA whose key lives in the key store.
//!
//! Its certificate is kept as `{dir}/{label}.cert.pem` and reused on restart. It is made anew
//! when the file is missing or unreadable, when the store has no key (or another key) under the
//! label, when the configured common name changed, or when less than a tenth of its lifetime is
//! left. The CA certificate is the trust bundle that modules and leaf devices trust.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::CertificateDer;
use verge_identity::keys::KeyStore;

use crate::TlsError;
use crate::files::{cert_path, check_label, first_cert_from_pem, read_optional, write_atomic};
use crate::parse::{self, CertInfo};
use crate::signer::StoreSigningKey;

/// The default label of the edge CA's key.
pub const DEFAULT_CA_LABEL: &str = "edge-ca";

/// How far certificates are back-dated, for clocks that are a little behind.
pub(crate) const BACKDATE: Duration = Duration::from_secs(5 * 60);

const DAY: Duration = Duration::from_secs(86_400);

/// How the edge CA is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaConfig {
    /// Subject CN of the CA certificate.
    pub common_name: String,
    /// Label of the CA key in the store (also names the certificate file).
    pub key_label: String,
    /// Lifetime of a new CA certificate.
    pub validity: Duration,
    /// Whether renewing an expiring certificate also replaces the key. When false (the default)
    /// the renewed certificate keeps the key and subject, so certificates issued by the old one
    /// still chain to the new one.
    pub rotate_key_on_renewal: bool,
}

impl CaConfig {
    /// Defaults: key "edge-ca", one year, keep the key on renewal.
    pub fn new(common_name: impl Into<String>) -> Self {
        Self {
            common_name: common_name.into(),
            key_label: DEFAULT_CA_LABEL.to_owned(),
            validity: 365 * DAY,
            rotate_key_on_renewal: false,
        }
    }
}

/// Where a certificate came from when it was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertOrigin {
    /// The stored certificate was still good and is reused.
    Loaded,
    /// There was none (or it had no key in the store); a new one was made.
    Created,
    /// The stored one was expiring, or no longer matched its key or configuration; it was
    /// replaced.
    Renewed,
}

/// The edge CA: its certificate and its key in the store.
#[derive(Debug, Clone)]
pub struct EdgeCa {
    key: StoreSigningKey,
    store: Arc<dyn KeyStore>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    info: CertInfo,
    origin: CertOrigin,
}

impl EdgeCa {
    /// Loads the CA from `dir` and the store, or creates it, with [`CaConfig::new`] defaults.
    pub fn load_or_create(
        store: Arc<dyn KeyStore>,
        dir: &Path,
        common_name: &str,
    ) -> Result<Self, TlsError> {
        Self::load_or_create_with(store, dir, &CaConfig::new(common_name), SystemTime::now())
    }

    /// Loads the CA from `dir` and the store, or creates or renews it, as of `now`.
    pub fn load_or_create_with(
        store: Arc<dyn KeyStore>,
        dir: &Path,
        config: &CaConfig,
        now: SystemTime,
    ) -> Result<Self, TlsError> {
        check_label(&config.key_label)?;
        if config.common_name.is_empty() {
            return Err(TlsError::Config("the CA common name is empty".to_owned()));
        }
        if config.validity < DAY {
            return Err(TlsError::Config(
                "the CA validity is under a day".to_owned(),
            ));
        }
        let label = config.key_label.as_str();
        let path = cert_path(dir, label);
        let stored = read_optional(&path)?;

        if !store.exists(label)? {
            // A new key: any stored certificate is for a key that is gone.
            let key = StoreSigningKey::generate(Arc::clone(&store), label)?;
            return Self::create(store, key, &path, config, now, CertOrigin::Created);
        }
        let key = StoreSigningKey::open(Arc::clone(&store), label)?;
        let Some(pem) = stored else {
            return Self::create(store, key, &path, config, now, CertOrigin::Created);
        };
        let parsed =
            first_cert_from_pem(&pem).and_then(|der| parse::info(&der).map(|info| (der, info)));
        let Ok((cert_der, info)) = parsed else {
            return Self::create(store, key, &path, config, now, CertOrigin::Renewed);
        };
        let matches = info.public_key == key.public_point()
            && info.is_ca
            && info.common_name.as_deref() == Some(config.common_name.as_str());
        if !matches {
            return Self::create(store, key, &path, config, now, CertOrigin::Renewed);
        }
        if parse::needs_renewal(info.not_before, info.not_after, now) {
            let key = if config.rotate_key_on_renewal {
                drop(key);
                store.delete(label)?;
                StoreSigningKey::generate(Arc::clone(&store), label)?
            } else {
                key
            };
            return Self::create(store, key, &path, config, now, CertOrigin::Renewed);
        }
        Ok(Self {
            key,
            store,
            cert_der,
            cert_pem: pem,
            info,
            origin: CertOrigin::Loaded,
        })
    }

    fn create(
        store: Arc<dyn KeyStore>,
        key: StoreSigningKey,
        path: &Path,
        config: &CaConfig,
        now: SystemTime,
        origin: CertOrigin,
    ) -> Result<Self, TlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, config.common_name.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + config.validity).into();
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(|e| key.rcgen_error(e))?;
        let cert_pem = cert.pem();
        let cert_der = cert.der().clone();
        let info = parse::info(&cert_der)?;
        write_atomic(path, &cert_pem)?;
        Ok(Self {
            key,
            store,
            cert_der,
            cert_pem,
            info,
            origin,
        })
    }

    /// Signs `params` for the subject key `subject`, as of `now`: the serial number is random,
    /// the authority key identifier is set, and `not_after` is capped at the CA's own.
    pub(crate) fn issue(
        &self,
        mut params: CertificateParams,
        subject: &impl rcgen::PublicKeyData,
    ) -> Result<rcgen::Certificate, TlsError> {
        let ca_not_after: time::OffsetDateTime = self.info.not_after.into();
        if params.not_after > ca_not_after {
            params.not_after = ca_not_after;
        }
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)
            .map_err(|e| TlsError::Parse(format!("the CA certificate: {e}")))?;
        params
            .signed_by(subject, &issuer)
            .map_err(|e| self.key.rcgen_error(e))
    }

    /// The PEM text `verge trust-bundle` prints: the edge CA certificate.
    pub fn trust_bundle_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate's subject CN.
    pub fn common_name(&self) -> Option<&str> {
        self.info.common_name.as_deref()
    }

    /// Start of the CA certificate's validity.
    pub fn not_before(&self) -> SystemTime {
        self.info.not_before
    }

    /// End of the CA certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        self.info.not_after
    }

    /// Whether the CA certificate should be renewed at `now` (expired, or under a tenth of its
    /// lifetime left); [`EdgeCa::load_or_create_with`] renews it.
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        parse::needs_renewal(self.info.not_before, self.info.not_after, now)
    }

    /// Whether this certificate was loaded, created or renewed.
    pub fn origin(&self) -> CertOrigin {
        self.origin
    }

    /// The CA key in the store.
    pub fn signing_key(&self) -> &StoreSigningKey {
        &self.key
    }

    /// The store holding the CA key.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }
}

/// A random positive 128-bit serial number.
pub(crate) fn random_serial() -> Result<SerialNumber, TlsError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TlsError::Generate("no random numbers for a serial number".to_owned()))?;
    // Positive, and no leading zero byte for DER to strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_and_distinct() -> Result<(), TlsError> {
        let a = random_serial()?;
        let b = random_serial()?;
        assert_ne!(a, b);
        for s in [a, b] {
            let bytes = s.to_bytes();
            assert_eq!(bytes.len(), 16);
            assert_eq!(bytes[0] & 0xc0, 0x40);
        }
        Ok(())
    }

    #[test]
    fn config_defaults() {
        let c = CaConfig::new("edge");
        assert_eq!(c.key_label, "edge-ca");
        assert_eq!(c.validity, 365 * DAY);
        assert!(!c.rotate_key_on_renewal);
    }
}
