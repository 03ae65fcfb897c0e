//! X.509 client authentication in real handshakes: CA-signed, self-signed (thumbprint),
//! unknown CA, none; and the certificates issued for clients.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{
    Served, client_config_builder, client_config_with_cert, key_store, python_client,
    rustls_client, serve_once,
};
use rustls::pki_types::UnixTime;
use verge_identity::keys::KeyStore;
use verge_tls::{
    ClientAuth, ClientCert, EdgeCa, ServerCert, ServerCertResolver, StoreSigningKey, TlsError,
    issue_client_cert, issue_client_cert_with_software_key, self_signed_client_cert, server_config,
    thumbprint_sha256,
};
use x509_parser::prelude::{FromDer, X509Certificate};

struct Setup {
    dir: tempfile::TempDir,
    store: Arc<dyn KeyStore>,
    ca: EdgeCa,
    auth: Arc<ClientAuth>,
    config: rustls::ServerConfig,
}

/// A hub whose listener trusts its own edge CA for client certificates.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = key_store(dir.path());
    let ca = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "Test edge CA").unwrap();
    let cert = ServerCert::load_or_issue(&ca, dir.path(), &["edge.example".to_owned()]).unwrap();
    let auth = Arc::new(ClientAuth::from_pem(&ca.trust_bundle_pem()).unwrap());
    let config = server_config(
        Arc::new(ServerCertResolver::new(&cert)),
        Some(Arc::clone(&auth)),
    )
    .unwrap();
    Setup {
        dir,
        store,
        ca,
        auth,
        config,
    }
}

async fn connect(s: Setup, client: rustls::ClientConfig) -> (Result<String, String>, Served) {
    let (addr, server) = serve_once(s.config, Some(s.auth)).await;
    let result = rustls_client(addr, "localhost", client).await;
    (result, server.await.unwrap())
}

/// SHA-256 fingerprint by an independent tool: openssl, else Python's hashlib.
fn external_sha256(dir: &std::path::Path, cert_pem: &str) -> Option<String> {
    let path = common::write(dir, "fp.pem", cert_pem);
    if common::have("openssl") {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let hex = text.trim().split_once('=').unwrap().1.replace(':', "");
        return Some(hex.to_uppercase());
    }
    if common::have("python3") {
        let out = Command::new("python3")
            .args([
                "-c",
                "import ssl,hashlib,sys;print(hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read())).hexdigest().upper())",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        return Some(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    }
    None
}

#[tokio::test]
async fn no_certificate_is_accepted() {
    let s = setup();
    let client = client_config_builder(&s.ca.trust_bundle_pem()).with_no_client_auth();
    let (result, served) = connect(s, client).await;
    assert_eq!(result.as_deref(), Ok("hello\n"));
    assert!(matches!(served, Served::Ok(None)), "{served:?}");
}

#[tokio::test]
async fn a_ca_signed_certificate_with_a_software_key_is_a_ca_identity() {
    let s = setup();
    let issued = issue_client_cert_with_software_key(&s.ca, "device-1").unwrap();
    assert!(issued.key_pem.contains("BEGIN PRIVATE KEY"));
    assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    let client =
        client_config_with_cert(&s.ca.trust_bundle_pem(), &issued.cert_pem, &issued.key_pem);
    let expected_thumb = thumbprint_sha256(common::der(&issued.cert_pem).as_ref());
    let (result, served) = connect(s, client).await;
    assert_eq!(result.as_deref(), Ok("hello\n"));
    let Served::Ok(Some(cert)) = served else {
        panic!("{served:?}")
    };
    assert!(cert.chained_to_trusted_ca);
    assert_eq!(cert.common_name.as_deref(), Some("device-1"));
    assert!(cert.is_ca_identity_for("device-1"));
    assert!(!cert.is_ca_identity_for("device-2"));
    assert_eq!(cert.thumbprint_sha256, expected_thumb);
    assert!(cert.not_after > SystemTime::now());
}

#[tokio::test]
async fn a_ca_signed_certificate_with_a_store_key_signs_through_the_store() {
    let s = setup();
    let pem = issue_client_cert(&s.ca, &s.store, "device-2-key", "device-2").unwrap();
    assert!(s.store.exists("device-2-key").unwrap());
    // The client signs its CertificateVerify through the store too.
    let key = StoreSigningKey::open(Arc::clone(&s.store), "device-2-key").unwrap();
    let certified =
        rustls::sign::CertifiedKey::new(verge_tls::certs_from_pem(&pem).unwrap(), Arc::new(key));
    let client = client_config_builder(&s.ca.trust_bundle_pem())
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    let (result, served) = connect(s, client).await;
    assert_eq!(result.as_deref(), Ok("hello\n"));
    let Served::Ok(Some(cert)) = served else {
        panic!("{served:?}")
    };
    assert!(cert.is_ca_identity_for("device-2"));
}

#[tokio::test]
async fn a_self_signed_certificate_is_a_thumbprint_identity() {
    let s = setup();
    let issued = self_signed_client_cert("leaf-3").unwrap();
    let external = external_sha256(s.dir.path(), &issued.cert_pem);
    let der = common::der(&issued.cert_pem);
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der.as_ref());
    let sha1: String = sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let client =
        client_config_with_cert(&s.ca.trust_bundle_pem(), &issued.cert_pem, &issued.key_pem);
    let (result, served) = connect(s, client).await;
    assert_eq!(result.as_deref(), Ok("hello\n"));
    let Served::Ok(Some(cert)) = served else {
        panic!("{served:?}")
    };
    assert!(!cert.chained_to_trusted_ca);
    assert!(!cert.is_ca_identity_for("leaf-3"));
    assert_eq!(cert.common_name.as_deref(), Some("leaf-3"));
    assert_eq!(cert.thumbprint_sha256.len(), 64);
    assert_eq!(cert.thumbprint_sha1, sha1);
    if let Some(external) = external {
        assert_eq!(cert.thumbprint_sha256, external);
    } else {
        eprintln!("SKIP: no openssl or python3 to check the thumbprint");
    }
    assert!(cert.matches_thumbprint(&cert.thumbprint_sha256.to_lowercase()));
    assert!(cert.matches_thumbprint(&sha1));
    let colons: Vec<String> = sha1
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert!(cert.matches_thumbprint(&colons.join(":")));
    assert!(!cert.matches_thumbprint(""));
    assert!(!cert.matches_thumbprint(&"0".repeat(64)));
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused_at_handshake() {
    let s = setup();
    let other_dir = tempfile::tempdir().unwrap();
    let other =
        EdgeCa::load_or_create(key_store(other_dir.path()), other_dir.path(), "Rogue CA").unwrap();
    let issued = issue_client_cert_with_software_key(&other, "device-1").unwrap();
    let client =
        client_config_with_cert(&s.ca.trust_bundle_pem(), &issued.cert_pem, &issued.key_pem);
    let (result, served) = connect(s, client).await;
    assert!(result.is_err(), "{result:?}");
    let Served::HandshakeFailed(e) = served else {
        panic!("{served:?}")
    };
    assert!(e.contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn a_same_named_ca_with_another_key_is_refused() {
    let s = setup();
    let other_dir = tempfile::tempdir().unwrap();
    let other = EdgeCa::load_or_create(
        key_store(other_dir.path()),
        other_dir.path(),
        "Test edge CA",
    )
    .unwrap();
    let issued = issue_client_cert_with_software_key(&other, "device-1").unwrap();
    let client =
        client_config_with_cert(&s.ca.trust_bundle_pem(), &issued.cert_pem, &issued.key_pem);
    let (result, served) = connect(s, client).await;
    assert!(result.is_err(), "{result:?}");
    assert!(matches!(served, Served::HandshakeFailed(_)), "{served:?}");
}

/// A self-signed certificate with chosen dates, made with rcgen directly.
fn self_signed_with_dates(not_before: SystemTime, not_after: SystemTime) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "old-leaf");
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn an_expired_self_signed_certificate_is_refused() {
    let s = setup();
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let (cert_pem, key_pem) = self_signed_with_dates(now - 30 * day, now - day);
    let client = client_config_with_cert(&s.ca.trust_bundle_pem(), &cert_pem, &key_pem);
    let (result, served) = connect(s, client).await;
    assert!(result.is_err());
    let Served::HandshakeFailed(e) = served else {
        panic!("{served:?}")
    };
    assert!(e.to_lowercase().contains("expired"), "{e}");
}

#[test]
fn identify_checks_self_signature_validity_and_purpose() {
    let s = setup();
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();

    // Not yet valid.
    let (pem, _) = self_signed_with_dates(now + day, now + 30 * day);
    let err = s.auth.identify(&common::der(&pem), &[]).unwrap_err();
    assert!(
        matches!(&err, TlsError::Rejected(m) if m.contains("not valid yet") || m.contains("NotValidYet")),
        "{err}"
    );

    // Valid at an injected time.
    let at = UnixTime::since_unix_epoch(
        (now + 2 * day)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
    );
    let cert = s.auth.identify_at(&common::der(&pem), &[], at).unwrap();
    assert!(!cert.chained_to_trusted_ca);

    // A self-signed certificate for servers only.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["x.example".to_owned()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_only = params.self_signed(&key).unwrap();
    assert!(s.auth.identify(server_only.der(), &[]).is_err());

    // Issuer name = subject but signed by another key: not self-signed.
    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "spoof");
    let issuer = rcgen::Issuer::new(params.clone(), &other_key);
    let forged = params.signed_by(&key, &issuer).unwrap();
    let err = s.auth.identify(forged.der(), &[]).unwrap_err();
    assert!(
        err.to_string().contains("UnknownIssuer") || err.to_string().contains("unknown"),
        "{err}"
    );

    // Garbage.
    assert!(
        s.auth
            .identify(&rustls::pki_types::CertificateDer::from(vec![1, 2, 3]), &[])
            .is_err()
    );

    // No certificates: no identity.
    assert_eq!(ClientCert::from_peer_certs(&[], &s.auth).unwrap(), None);
}

#[test]
fn issued_client_certificates_have_client_auth_and_the_cn() {
    let s = setup();
    let pem = issue_client_cert(&s.ca, &s.store, "dev-key", "my-device").unwrap();
    let der = common::der(&pem);
    let (_, x509) = X509Certificate::from_der(der.as_ref()).unwrap();
    let eku = x509.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.client_auth && !eku.value.server_auth);
    assert!(!x509.is_ca());
    assert_eq!(
        x509.public_key().subject_public_key.data.as_ref(),
        s.store.ec_p256_public_key("dev-key").unwrap().as_slice()
    );
    let cert = s.auth.identify(&der, &[]).unwrap();
    assert!(cert.is_ca_identity_for("my-device"));

    // Issuing again for the same label reuses the key.
    let again = issue_client_cert(&s.ca, &s.store, "dev-key", "my-device").unwrap();
    let der2 = common::der(&again);
    let (_, x2) = X509Certificate::from_der(der2.as_ref()).unwrap();
    assert_eq!(x2.public_key().raw, x509.public_key().raw);
    assert_ne!(x2.serial, x509.serial);

    assert!(matches!(
        issue_client_cert(&s.ca, &s.store, "bad/label", "d"),
        Err(TlsError::Label(_))
    ));
    assert!(matches!(
        issue_client_cert_with_software_key(&s.ca, ""),
        Err(TlsError::Config(_))
    ));
}

#[test]
fn without_trusted_cas_only_self_signed_is_accepted() {
    let s = setup();
    let auth = ClientAuth::new(Vec::new()).unwrap();
    assert_eq!(auth.trusted_ca_count(), 0);
    let issued = issue_client_cert_with_software_key(&s.ca, "device-1").unwrap();
    assert!(auth.identify(&common::der(&issued.cert_pem), &[]).is_err());
    let selfsigned = self_signed_client_cert("leaf").unwrap();
    let cert = auth
        .identify(&common::der(&selfsigned.cert_pem), &[])
        .unwrap();
    assert!(!cert.chained_to_trusted_ca);
    assert!(
        ClientAuth::from_pem("-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n")
            .is_err()
    );
}

#[tokio::test]
async fn python_ssl_client_certificates() {
    if !common::have("python3") {
        eprintln!("SKIP: no python3");
        return;
    }
    // CA-signed, then self-signed, each presented by OpenSSL through Python.
    for self_signed in [false, true] {
        let s = setup();
        let issued = if self_signed {
            self_signed_client_cert("py-leaf").unwrap()
        } else {
            issue_client_cert_with_software_key(&s.ca, "py-device").unwrap()
        };
        let cafile = common::write(s.dir.path(), "bundle.pem", &s.ca.trust_bundle_pem());
        let cert = common::write(s.dir.path(), "client.pem", &issued.cert_pem);
        let key = common::write(s.dir.path(), "client.key", &issued.key_pem);
        let (addr, server) = serve_once(s.config, Some(s.auth)).await;
        let out = python_client(addr.port(), &cafile, "localhost", Some((&cert, &key)))
            .await
            .unwrap();
        assert!(out.as_ref().is_ok_and(|o| o.contains("hello")), "{out:?}");
        let Served::Ok(Some(seen)) = server.await.unwrap() else {
            panic!("no client certificate")
        };
        assert_eq!(seen.chained_to_trusted_ca, !self_signed);
        let cn = if self_signed { "py-leaf" } else { "py-device" };
        assert_eq!(seen.common_name.as_deref(), Some(cn));
    }
}
