//! The hub's TLS server certificate and its `rustls::ServerConfig`.
//!
//! The key is generated in the store (label "hub-server" by default); the certificate is issued
//! by the edge CA with EKU serverAuth and SANs = the configured host names + `localhost` +
//! `127.0.0.1` (CN = the first host name). It is kept as `{dir}/{label}.cert.pem` and reissued
//! when missing, when its key changed, when the CA changed, when the names changed or when less
//! than a tenth of its lifetime is left. Handshakes are signed by the store through
//! [`StoreSigningKey`].

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::ca::BACKDATE;
use crate::client_auth::ClientAuth;
use crate::files::{cert_path, check_label, first_cert_from_pem, read_optional, write_atomic};
use crate::parse::{self, CertInfo};
use crate::signer::StoreSigningKey;
use crate::{EdgeCa, TlsError, crypto_provider};

/// The default label of the hub server key.
pub const DEFAULT_SERVER_LABEL: &str = "hub-server";

/// How the hub's server certificate is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertConfig {
    /// Label of the key in the store (also names the certificate file).
    pub key_label: String,
    /// Host names (DNS names or IP addresses) clients connect to; the first is the CN.
    /// `localhost` and `127.0.0.1` are always added.
    pub hostnames: Vec<String>,
    /// Lifetime of a new certificate (capped at the CA's expiry).
    pub validity: Duration,
}

impl ServerCertConfig {
    /// Defaults: key "hub-server", 90 days.
    pub fn new(hostnames: Vec<String>) -> Self {
        Self {
            key_label: DEFAULT_SERVER_LABEL.to_owned(),
            hostnames,
            validity: Duration::from_secs(90 * 86_400),
        }
    }

    /// The CN and the SAN entries (DNS names lower-cased, IP addresses in canonical form).
    fn names(&self) -> Result<(String, Vec<String>), TlsError> {
        let mut names: Vec<String> = Vec::new();
        for name in self
            .hostnames
            .iter()
            .map(String::as_str)
            .chain(["localhost", "127.0.0.1"])
        {
            let name = match name.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => {
                    let valid = !name.is_empty()
                        && name.len() <= 253
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'*'));
                    if !valid {
                        return Err(TlsError::Config(format!("invalid host name {name:?}")));
                    }
                    name.to_ascii_lowercase()
                }
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        // The list is never empty: localhost was added.
        let cn = names
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".to_owned());
        Ok((cn, names))
    }
}

/// The parameters of a server certificate (EKU serverAuth) for `cn` and the SANs `names`
/// (IP addresses or DNS names), valid from `now` (backdated) to `not_after`.
fn server_params(
    cn: &str,
    names: &[String],
    now: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => name
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| TlsError::Config(format!("host name {name:?}: {e}"))),
        })
        .collect::<Result<_, _>>()?;
    params.not_before = (now - BACKDATE).into();
    params.not_after = not_after.into();
    Ok(params)
}

/// Issues a server certificate from the edge CA for a new P-256 key generated in software, for
/// a module that serves TLS itself (the workload API's `certificate/server`): CN `hostnames[0]`,
/// the SANs `hostnames` (plus `localhost` and `127.0.0.1`), valid until `not_after` (at most
/// the CA's expiry). Returns both as PEM; the certificate PEM is followed by the edge CA's.
pub fn issue_server_cert_with_software_key(
    ca: &EdgeCa,
    hostnames: &[String],
    not_after: SystemTime,
) -> Result<crate::IssuedCert, TlsError> {
    let now = SystemTime::now();
    if not_after <= now {
        return Err(TlsError::Config(
            "the requested expiration is in the past".to_owned(),
        ));
    }
    let config = ServerCertConfig::new(hostnames.to_vec());
    let (cn, names) = config.names()?;
    let params = server_params(&cn, &names, now, not_after.min(ca.not_after()))?;
    let key = crate::client_auth::software_key()?;
    let cert = ca.issue(params, &key)?;
    Ok(crate::IssuedCert {
        cert_pem: format!("{}{}", cert.pem(), ca.certificate_pem()),
        key_pem: key.serialize_pem(),
    })
}

/// The hub's server certificate, its chain and its key in the store.
#[derive(Debug, Clone)]
pub struct ServerCert {
    key: StoreSigningKey,
    cert_pem: String,
    chain: Vec<CertificateDer<'static>>,
    info: CertInfo,
    origin: crate::CertOrigin,
    certified_key: Arc<CertifiedKey>,
}

impl ServerCert {
    /// Loads or issues the certificate for `hostnames` with [`ServerCertConfig::new`] defaults.
    pub fn load_or_issue(ca: &EdgeCa, dir: &Path, hostnames: &[String]) -> Result<Self, TlsError> {
        Self::load_or_issue_with(
            ca,
            dir,
            &ServerCertConfig::new(hostnames.to_vec()),
            SystemTime::now(),
        )
    }

    /// Loads the stored certificate if it is still right at `now`, or issues a new one. The key
    /// is in the CA's store.
    pub fn load_or_issue_with(
        ca: &EdgeCa,
        dir: &Path,
        config: &ServerCertConfig,
        now: SystemTime,
    ) -> Result<Self, TlsError> {
        use crate::CertOrigin::{Created, Loaded, Renewed};
        let label = config.key_label.as_str();
        check_label(label)?;
        if config.validity < Duration::from_secs(3600) {
            return Err(TlsError::Config(
                "the server certificate validity is under an hour".to_owned(),
            ));
        }
        let (cn, names) = config.names()?;
        let store = ca.store();
        let path = cert_path(dir, label);
        let stored = read_optional(&path)?;

        if !store.exists(label)? {
            let key = StoreSigningKey::generate(Arc::clone(store), label)?;
            return Self::issue(ca, key, &path, &cn, &names, config.validity, now, Created);
        }
        let key = StoreSigningKey::open(Arc::clone(store), label)?;
        let Some(pem) = stored else {
            return Self::issue(ca, key, &path, &cn, &names, config.validity, now, Created);
        };
        let parsed =
            first_cert_from_pem(&pem).and_then(|der| parse::info(&der).map(|info| (der, info)));
        let Ok((der, info)) = parsed else {
            return Self::issue(ca, key, &path, &cn, &names, config.validity, now, Renewed);
        };
        let mut have = info.san.clone();
        let mut want = names.clone();
        have.sort();
        want.sort();
        let good = info.public_key == key.public_point()
            && info.common_name.as_deref() == Some(cn.as_str())
            && have == want
            && parse::is_issued_by(&der, ca.certificate_der())
            && !parse::needs_renewal(info.not_before, info.not_after, now);
        if !good {
            return Self::issue(ca, key, &path, &cn, &names, config.validity, now, Renewed);
        }
        Self::assemble(ca, key, der, pem, info, Loaded)
    }

    #[allow(clippy::too_many_arguments)]
    fn issue(
        ca: &EdgeCa,
        key: StoreSigningKey,
        path: &Path,
        cn: &str,
        names: &[String],
        validity: Duration,
        now: SystemTime,
        origin: crate::CertOrigin,
    ) -> Result<Self, TlsError> {
        let params = server_params(cn, names, now, now + validity)?;
        let cert = ca.issue(params, &key)?;
        let pem = cert.pem();
        let der = cert.der().clone();
        let info = parse::info(&der)?;
        write_atomic(path, &pem)?;
        Self::assemble(ca, key, der, pem, info, origin)
    }

    fn assemble(
        ca: &EdgeCa,
        key: StoreSigningKey,
        der: CertificateDer<'static>,
        cert_pem: String,
        info: CertInfo,
        origin: crate::CertOrigin,
    ) -> Result<Self, TlsError> {
        let chain = vec![der, ca.certificate_der().clone()];
        let certified_key = CertifiedKey::new(chain.clone(), Arc::new(key.clone()));
        certified_key.keys_match()?;
        Ok(Self {
            key,
            cert_pem,
            chain,
            info,
            origin,
            certified_key: Arc::new(certified_key),
        })
    }

    /// The certificate chain (server certificate, then the edge CA) with its store-backed key,
    /// for rustls.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified_key)
    }

    /// The server certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The chain sent to clients: the server certificate, then the edge CA certificate.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The subjectAltName entries (DNS names and IP addresses).
    pub fn subject_alt_names(&self) -> &[String] {
        &self.info.san
    }

    /// The subject CN.
    pub fn common_name(&self) -> Option<&str> {
        self.info.common_name.as_deref()
    }

    /// End of the certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        self.info.not_after
    }

    /// Whether the certificate should be reissued at `now`.
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        parse::needs_renewal(self.info.not_before, self.info.not_after, now)
    }

    /// Whether this certificate was loaded, created or reissued.
    pub fn origin(&self) -> crate::CertOrigin {
        self.origin
    }

    /// The key in the store.
    pub fn signing_key(&self) -> &StoreSigningKey {
        &self.key
    }
}

/// Serves the current server certificate; [`ServerCertResolver::set`] swaps in a renewed one
/// without rebuilding the `ServerConfig`.
#[derive(Debug)]
pub struct ServerCertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCertResolver {
    /// A resolver serving `cert`.
    pub fn new(cert: &ServerCert) -> Self {
        Self {
            current: RwLock::new(cert.certified_key()),
        }
    }

    /// Serves `cert` from the next handshake on.
    pub fn set(&self, cert: &ServerCert) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = cert.certified_key();
    }

    /// The certified key being served.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A `ServerConfig` (ring provider, TLS 1.2 and 1.3) serving certificates from `resolver`.
/// With `client_auth`, clients are asked for a certificate (optional, see [`ClientAuth`]);
/// without it they are not asked.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_auth: Option<Arc<ClientAuth>>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(resolver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_add_localhost_and_loopback_once() -> Result<(), TlsError> {
        let c = ServerCertConfig::new(vec!["Edge.Example".into(), "10.0.0.5".into()]);
        let (cn, names) = c.names()?;
        assert_eq!(cn, "edge.example");
        assert_eq!(
            names,
            ["edge.example", "10.0.0.5", "localhost", "127.0.0.1"]
        );

        let c = ServerCertConfig::new(vec!["localhost".into(), "127.0.0.1".into()]);
        let (cn, names) = c.names()?;
        assert_eq!(cn, "localhost");
        assert_eq!(names, ["localhost", "127.0.0.1"]);

        let (cn, _) = ServerCertConfig::new(vec![]).names()?;
        assert_eq!(cn, "localhost");
        Ok(())
    }

    #[test]
    fn bad_host_names_are_refused() {
        for bad in ["", "a b", "é.example", "x/y"] {
            let c = ServerCertConfig::new(vec![bad.into()]);
            assert!(matches!(c.names(), Err(TlsError::Config(_))), "{bad}");
        }
    }
}
