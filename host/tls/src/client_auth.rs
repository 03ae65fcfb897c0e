//! X.509 client authentication for the MQTT listener, and issuing client certificates.
//!
//! [`ClientAuth`] is a rustls [`ClientCertVerifier`] that
//! - lets clients connect without a certificate (they authenticate with a SAS token later);
//! - accepts a chain that verifies (webpki) against the configured trusted CA certificates;
//! - otherwise accepts a self-signed certificate whose signature verifies with its own key and
//!   that is within its validity period ("thumbprint" identities).
//!
//! After the handshake, [`ClientCert::from_connection`] says which case applied and gives the
//! thumbprints and subject CN, so that the listener can check a thumbprint identity (the
//! thumbprint is the registered one) or a CA identity (chained to a trusted CA and CN = device
//! id), as in IoT Edge.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
};
use rustls::SignatureScheme;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName as DnDer, RootCertStore};
use verge_identity::keys::KeyStore;

use crate::ca::{BACKDATE, random_serial};
use crate::files::{certs_from_pem, check_label};
use crate::parse::{self, hex_upper};
use crate::signer::StoreSigningKey;
use crate::{EdgeCa, TlsError, crypto_provider};

/// Lifetime of the client certificates issued here (capped at the CA's expiry).
const CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// Verifies client certificates: none, CA-signed, or self-signed. See the module docs.
pub struct ClientAuth {
    /// webpki over the trusted CAs; `None` when no CA is trusted.
    chain_verifier: Option<Arc<dyn ClientCertVerifier>>,
    trusted_count: usize,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("trusted_cas", &self.trusted_count)
            .finish_non_exhaustive()
    }
}

impl ClientAuth {
    /// A verifier trusting the CA certificates `trusted_cas` (may be empty: then only
    /// self-signed certificates, or none, are accepted).
    pub fn new(
        trusted_cas: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, TlsError> {
        let provider = crypto_provider();
        let mut roots = RootCertStore::empty();
        for ca in trusted_cas {
            roots
                .add(ca)
                .map_err(|e| TlsError::Parse(format!("trusted CA certificate: {e}")))?;
        }
        let trusted_count = roots.len();
        let chain_verifier = if roots.is_empty() {
            None
        } else {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
            Some(verifier)
        };
        Ok(Self {
            chain_verifier,
            trusted_count,
            algorithms: provider.signature_verification_algorithms,
        })
    }

    /// A verifier trusting the certificates in PEM `trusted_cas_pem` (e.g. a trust bundle).
    pub fn from_pem(trusted_cas_pem: &str) -> Result<Self, TlsError> {
        Self::new(certs_from_pem(trusted_cas_pem)?)
    }

    /// How many CA certificates are trusted.
    pub fn trusted_ca_count(&self) -> usize {
        self.trusted_count
    }

    /// Identifies a client certificate chain as of now (see [`ClientAuth::identify_at`]).
    pub fn identify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<ClientCert, TlsError> {
        self.identify_at(end_entity, intermediates, UnixTime::now())
    }

    /// Checks the chain as the handshake does and describes the end-entity certificate.
    pub fn identify_at(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCert, TlsError> {
        let chained = self
            .classify(end_entity, intermediates, now)
            .map_err(|e| TlsError::Rejected(e.to_string()))?;
        ClientCert::describe(end_entity, chained)
    }

    /// `Ok(true)`: chains to a trusted CA; `Ok(false)`: acceptable self-signed certificate.
    fn classify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<bool, rustls::Error> {
        let mut chain_error = None;
        if let Some(verifier) = &self.chain_verifier {
            match verifier.verify_client_cert(end_entity, intermediates, now) {
                Ok(_) => return Ok(true),
                Err(e) => chain_error = Some(e),
            }
        }
        let cert = parse::parse(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !parse::is_self_signed(&cert) {
            return Err(chain_error.unwrap_or(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )));
        }
        let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        if !parse::valid_at(&cert, now) {
            let error = if now < parse::system_time(cert.validity().not_before) {
                CertificateError::NotValidYet
            } else {
                CertificateError::Expired
            };
            return Err(rustls::Error::InvalidCertificate(error));
        }
        if !parse::allows_client_auth(&cert) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose,
            ));
        }
        Ok(false)
    }
}

impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: a client with a self-signed certificate must still send it.
    fn root_hint_subjects(&self) -> &[DnDer] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.classify(end_entity, intermediates, now)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What the listener needs to know about an accepted client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// SHA-256 of the DER certificate, upper-case hex without separators.
    pub thumbprint_sha256: String,
    /// SHA-1 of the DER certificate, upper-case hex without separators.
    pub thumbprint_sha1: String,
    /// The subject's first CN.
    pub common_name: Option<String>,
    /// True when the chain verified against a trusted CA; false for an accepted self-signed
    /// certificate (usable only as a thumbprint identity).
    pub chained_to_trusted_ca: bool,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl ClientCert {
    /// The client certificate of a finished handshake, or `None` when the client sent none.
    /// `auth` must be the verifier the connection's `ServerConfig` used: the chain is checked
    /// again to tell a CA-signed certificate from a self-signed one.
    pub fn from_connection(
        conn: &ServerConnection,
        auth: &ClientAuth,
    ) -> Result<Option<Self>, TlsError> {
        Self::from_peer_certs(conn.peer_certificates().unwrap_or_default(), auth)
    }

    /// Like [`ClientCert::from_connection`], from the peer's certificates (end entity first).
    pub fn from_peer_certs(
        certs: &[CertificateDer<'_>],
        auth: &ClientAuth,
    ) -> Result<Option<Self>, TlsError> {
        match certs.split_first() {
            None => Ok(None),
            Some((end_entity, intermediates)) => auth.identify(end_entity, intermediates).map(Some),
        }
    }

    fn describe(der: &CertificateDer<'_>, chained: bool) -> Result<Self, TlsError> {
        let info = parse::info(der)?;
        Ok(Self {
            thumbprint_sha256: thumbprint_sha256(der),
            thumbprint_sha1: hex_upper(
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref(),
            ),
            common_name: info.common_name,
            chained_to_trusted_ca: chained,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    /// Whether `expected` is this certificate's SHA-256 or SHA-1 thumbprint (hex, any case,
    /// ':' separators allowed), as IoT Edge compares thumbprint identities.
    pub fn matches_thumbprint(&self, expected: &str) -> bool {
        let expected: String = expected
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_uppercase();
        !expected.is_empty()
            && (expected == self.thumbprint_sha256 || expected == self.thumbprint_sha1)
    }

    /// Whether this certificate proves the CA identity `device_id`: it chained to a trusted CA
    /// and its CN is the device id.
    pub fn is_ca_identity_for(&self, device_id: &str) -> bool {
        self.chained_to_trusted_ca && self.common_name.as_deref() == Some(device_id)
    }
}

/// SHA-256 of a DER certificate, upper-case hex: the thumbprint registered for a device.
pub fn thumbprint_sha256(der: &[u8]) -> String {
    hex_upper(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// A certificate with a private key generated in software, both PEM (the key as PKCS#8).
/// For a leaf device, which is another machine and must hold its own key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

fn client_params(common_name: &str, now: SystemTime) -> Result<CertificateParams, TlsError> {
    if common_name.is_empty() {
        return Err(TlsError::Config(
            "the client common name is empty".to_owned(),
        ));
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CLIENT_CERT_VALIDITY).into();
    Ok(params)
}

/// Issues a client certificate (CN = `common_name`, EKU clientAuth, one year at most) from the
/// edge CA for the P-256 key `label` in `store`, generating the key if the store has none.
/// Returns the certificate PEM; the key stays in the store.
pub fn issue_client_cert(
    ca: &EdgeCa,
    store: &Arc<dyn KeyStore>,
    label: &str,
    common_name: &str,
) -> Result<String, TlsError> {
    check_label(label)?;
    let params = client_params(common_name, SystemTime::now())?;
    let key = StoreSigningKey::open_or_generate(Arc::clone(store), label)?;
    Ok(ca.issue(params, &key)?.pem())
}

/// Issues a client certificate from the edge CA for a new P-256 key generated in software, for
/// a leaf device that must hold its key. Returns both as PEM.
pub fn issue_client_cert_with_software_key(
    ca: &EdgeCa,
    common_name: &str,
) -> Result<IssuedCert, TlsError> {
    let params = client_params(common_name, SystemTime::now())?;
    let key = software_key()?;
    let cert = ca.issue(params, &key)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A self-signed client certificate (CN = `common_name`, EKU clientAuth, one year) with a new
/// P-256 key generated in software: a "thumbprint" identity for a leaf device.
pub fn self_signed_client_cert(common_name: &str) -> Result<IssuedCert, TlsError> {
    let mut params = client_params(common_name, SystemTime::now())?;
    params.serial_number = Some(random_serial()?);
    let key = software_key()?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

pub(crate) fn software_key() -> Result<rcgen::KeyPair, TlsError> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Generate(e.to_string()))
}
