//! The hub's server certificate and real TLS handshakes on loopback: a rustls client and
//! Python's `ssl` (OpenSSL) trusting only the trust bundle.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{Served, client_config_builder, key_store, python_client, rustls_client, serve_once};
use verge_identity::keys::KeyStore;
use verge_tls::{
    CaConfig, CertOrigin, EdgeCa, ServerCert, ServerCertConfig, ServerCertResolver, TlsError,
    server_config,
};
use x509_parser::prelude::{FromDer, X509Certificate};

const DAY: Duration = Duration::from_secs(86_400);

struct Setup {
    dir: tempfile::TempDir,
    store: Arc<dyn KeyStore>,
    ca: EdgeCa,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = key_store(dir.path());
    let ca = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "Test edge CA").unwrap();
    Setup { dir, store, ca }
}

fn hostnames() -> Vec<String> {
    vec!["edge.example".into(), "192.0.2.7".into()]
}

#[test]
fn issues_a_server_certificate_from_the_ca() {
    let s = setup();
    let cert = ServerCert::load_or_issue(&s.ca, s.dir.path(), &hostnames()).unwrap();
    assert_eq!(cert.origin(), CertOrigin::Created);
    assert!(s.store.exists("hub-server").unwrap());
    assert_eq!(cert.common_name(), Some("edge.example"));
    assert_eq!(
        cert.subject_alt_names(),
        ["edge.example", "192.0.2.7", "localhost", "127.0.0.1"]
    );
    assert_eq!(cert.chain().len(), 2);
    assert_eq!(cert.chain()[1].as_ref(), s.ca.certificate_der().as_ref());

    let (_, x509) = X509Certificate::from_der(cert.chain()[0].as_ref()).unwrap();
    assert!(!x509.is_ca());
    let eku = x509.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && !eku.value.client_auth);
    let (_, ca) = X509Certificate::from_der(s.ca.certificate_der().as_ref()).unwrap();
    assert_eq!(x509.issuer(), ca.subject());
    x509.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(
        x509.public_key().subject_public_key.data.as_ref(),
        s.store.ec_p256_public_key("hub-server").unwrap().as_slice()
    );
    assert!(cert.not_after() <= s.ca.not_after());
    let life = cert.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(life > 89 * DAY && life <= 90 * DAY, "{life:?}");
}

#[test]
fn is_reused_then_reissued_when_names_ca_or_time_change() {
    let s = setup();
    let first = ServerCert::load_or_issue(&s.ca, s.dir.path(), &hostnames()).unwrap();
    let again = ServerCert::load_or_issue(&s.ca, s.dir.path(), &hostnames()).unwrap();
    assert_eq!(again.origin(), CertOrigin::Loaded);
    assert_eq!(again.certificate_pem(), first.certificate_pem());

    // Other host names.
    let renamed =
        ServerCert::load_or_issue(&s.ca, s.dir.path(), &["other.example".to_owned()]).unwrap();
    assert_eq!(renamed.origin(), CertOrigin::Renewed);
    assert_eq!(renamed.common_name(), Some("other.example"));
    assert_eq!(
        renamed.signing_key().public_point(),
        first.signing_key().public_point()
    );

    // A new CA (key rotated): the server certificate no longer chains to it.
    s.store.delete("edge-ca").unwrap();
    let new_ca =
        EdgeCa::load_or_create(Arc::clone(&s.store), s.dir.path(), "Test edge CA").unwrap();
    let reissued =
        ServerCert::load_or_issue(&new_ca, s.dir.path(), &["other.example".to_owned()]).unwrap();
    assert_eq!(reissued.origin(), CertOrigin::Renewed);
    assert_eq!(
        reissued.chain()[1].as_ref(),
        new_ca.certificate_der().as_ref()
    );

    // The server key gone: a new key.
    s.store.delete("hub-server").unwrap();
    let rekeyed =
        ServerCert::load_or_issue(&new_ca, s.dir.path(), &["other.example".to_owned()]).unwrap();
    assert_eq!(rekeyed.origin(), CertOrigin::Created);
    assert_ne!(
        rekeyed.signing_key().public_point(),
        first.signing_key().public_point()
    );
}

#[test]
fn renews_near_expiry_with_an_injected_clock() {
    let s = setup();
    let config = ServerCertConfig::new(hostnames());
    let now = SystemTime::now();
    let old = ServerCert::load_or_issue_with(&s.ca, s.dir.path(), &config, now - 85 * DAY).unwrap();
    // Issued "85 days ago" for 90 days: 5 days left, under a tenth.
    assert!(old.needs_renewal(now));
    assert!(!old.needs_renewal(now - 30 * DAY));
    let kept =
        ServerCert::load_or_issue_with(&s.ca, s.dir.path(), &config, now - 30 * DAY).unwrap();
    assert_eq!(kept.origin(), CertOrigin::Loaded);
    let renewed = ServerCert::load_or_issue_with(&s.ca, s.dir.path(), &config, now).unwrap();
    assert_eq!(renewed.origin(), CertOrigin::Renewed);
    assert!(renewed.not_after() > now + 80 * DAY);
}

#[test]
fn is_capped_at_the_ca_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = key_store(dir.path());
    let now = SystemTime::now();
    // A CA with 65 days left (not yet due for renewal).
    let ca = EdgeCa::load_or_create_with(
        Arc::clone(&store),
        dir.path(),
        &CaConfig::new("ca"),
        now - 300 * DAY,
    )
    .unwrap();
    let cert = ServerCert::load_or_issue(&ca, dir.path(), &hostnames()).unwrap();
    assert_eq!(cert.not_after(), ca.not_after());
}

#[test]
fn bad_server_settings_are_refused() {
    let s = setup();
    let now = SystemTime::now();
    let mut c = ServerCertConfig::new(vec!["bad name".into()]);
    assert!(matches!(
        ServerCert::load_or_issue_with(&s.ca, s.dir.path(), &c, now),
        Err(TlsError::Config(_))
    ));
    c = ServerCertConfig::new(hostnames());
    c.key_label = "a/b".into();
    assert!(matches!(
        ServerCert::load_or_issue_with(&s.ca, s.dir.path(), &c, now),
        Err(TlsError::Label(_))
    ));
}

fn hub_config(s: &Setup) -> (rustls::ServerConfig, ServerCert) {
    let cert = ServerCert::load_or_issue(&s.ca, s.dir.path(), &hostnames()).unwrap();
    let resolver = Arc::new(ServerCertResolver::new(&cert));
    (server_config(resolver, None).unwrap(), cert)
}

#[tokio::test]
async fn rustls_client_trusting_only_the_bundle_connects() {
    let s = setup();
    let bundle = s.ca.trust_bundle_pem();
    for name in ["localhost", "edge.example", "127.0.0.1", "192.0.2.7"] {
        let (config, _) = hub_config(&s);
        let (addr, server) = serve_once(config, None).await;
        let client = client_config_builder(&bundle).with_no_client_auth();
        let greeting = rustls_client(addr, name, client).await;
        assert_eq!(greeting.as_deref(), Ok("hello\n"), "as {name}");
        assert!(matches!(server.await.unwrap(), Served::Ok(None)));
    }
}

#[tokio::test]
async fn tls12_works_too() {
    let s = setup();
    let (config, _) = hub_config(&s);
    let (addr, server) = serve_once(config, None).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(s.ca.certificate_der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(verge_tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert_eq!(
        rustls_client(addr, "localhost", client).await.as_deref(),
        Ok("hello\n")
    );
    assert!(matches!(server.await.unwrap(), Served::Ok(None)));
}

#[tokio::test]
async fn a_client_refuses_a_wrong_name_or_another_ca() {
    let s = setup();
    let (config, _) = hub_config(&s);
    let (addr, _server) = serve_once(config, None).await;
    let client = client_config_builder(&s.ca.trust_bundle_pem()).with_no_client_auth();
    let err = rustls_client(addr, "not-the-hub.example", client)
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");

    let other_dir = tempfile::tempdir().unwrap();
    let other = EdgeCa::load_or_create(
        key_store(other_dir.path()),
        other_dir.path(),
        "Test edge CA",
    )
    .unwrap();
    let (config, _) = hub_config(&s);
    let (addr, _server) = serve_once(config, None).await;
    let client = client_config_builder(&other.trust_bundle_pem()).with_no_client_auth();
    let err = rustls_client(addr, "localhost", client).await.unwrap_err();
    // Same subject name, another key: the signature does not verify.
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[tokio::test]
async fn the_resolver_serves_a_renewed_certificate() {
    let s = setup();
    let first = ServerCert::load_or_issue(&s.ca, s.dir.path(), &hostnames()).unwrap();
    let resolver = Arc::new(ServerCertResolver::new(&first));
    let config = server_config(resolver.clone(), None).unwrap();
    let renewed =
        ServerCert::load_or_issue(&s.ca, s.dir.path(), &["renamed.example".to_owned()]).unwrap();
    resolver.set(&renewed);
    assert!(Arc::ptr_eq(&resolver.current(), &renewed.certified_key()));

    let (addr, _server) = serve_once(config, None).await;
    let client = client_config_builder(&s.ca.trust_bundle_pem()).with_no_client_auth();
    assert_eq!(
        rustls_client(addr, "renamed.example", client)
            .await
            .as_deref(),
        Ok("hello\n")
    );
}

#[tokio::test]
async fn a_store_failure_fails_the_handshake() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let flaky = common::FlakyStore::new(key_store(dir.path()));
    let store: Arc<dyn KeyStore> = flaky.clone();
    let ca = EdgeCa::load_or_create(store, dir.path(), "ca").unwrap();
    let cert = ServerCert::load_or_issue(&ca, dir.path(), &hostnames()).unwrap();
    let config = server_config(Arc::new(ServerCertResolver::new(&cert)), None).unwrap();
    flaky.fail_signing.store(true, Ordering::SeqCst);
    let (addr, server) = serve_once(config, None).await;
    let client = client_config_builder(&ca.trust_bundle_pem()).with_no_client_auth();
    assert!(rustls_client(addr, "localhost", client).await.is_err());
    match server.await.unwrap() {
        Served::HandshakeFailed(e) => assert!(e.contains("token removed"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn python_ssl_trusting_only_the_bundle_connects() {
    let s = setup();
    let cafile = common::write(s.dir.path(), "bundle.pem", &s.ca.trust_bundle_pem());
    let (config, _) = hub_config(&s);
    let (addr, server) = serve_once(config, None).await;
    let Some(result) = python_client(addr.port(), &cafile, "localhost", None).await else {
        eprintln!("SKIP: no python3");
        return;
    };
    let out = result.unwrap();
    assert!(out.starts_with("TLSv1.3 hello"), "{out}");
    assert!(matches!(server.await.unwrap(), Served::Ok(None)));
}

#[tokio::test]
async fn python_ssl_refuses_another_ca() {
    let s = setup();
    let other_dir = tempfile::tempdir().unwrap();
    let other = EdgeCa::load_or_create(
        key_store(other_dir.path()),
        other_dir.path(),
        "Test edge CA",
    )
    .unwrap();
    let cafile = common::write(s.dir.path(), "other.pem", &other.trust_bundle_pem());
    let (config, _) = hub_config(&s);
    let (addr, _server) = serve_once(config, None).await;
    let Some(result) = python_client(addr.port(), &cafile, "localhost", None).await else {
        eprintln!("SKIP: no python3");
        return;
    };
    let err = result.unwrap_err();
    assert!(err.contains("CERTIFICATE_VERIFY_FAILED"), "{err}");
}

#[test]
fn a_module_server_certificate_has_its_own_key_and_the_requested_names() {
    let s = setup();
    let expiration = SystemTime::now() + 7 * DAY;
    let issued = verge_tls::issue_server_cert_with_software_key(
        &s.ca,
        &["myserver".into(), "filter".into()],
        expiration,
    )
    .unwrap();
    let chain = verge_tls::certs_from_pem(&issued.cert_pem).unwrap();
    assert_eq!(chain.len(), 2, "the certificate, then the edge CA");
    assert_eq!(chain[1].as_ref(), s.ca.certificate_der().as_ref());
    let (_, x509) = X509Certificate::from_der(chain[0].as_ref()).unwrap();
    let eku = x509.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth);
    let (_, ca) = X509Certificate::from_der(s.ca.certificate_der().as_ref()).unwrap();
    x509.verify_signature(Some(ca.public_key())).unwrap();
    let cn = x509.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "myserver");
    let sans = x509.subject_alternative_name().unwrap().unwrap().value;
    let text = format!("{:?}", sans.general_names);
    assert!(
        text.contains("myserver") && text.contains("filter"),
        "{text}"
    );
    let not_after = x509.validity().not_after.timestamp();
    let wanted = expiration
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((not_after - wanted).abs() <= 1, "{not_after} vs {wanted}");
    // The private key is the certificate's, and not in the store.
    verge_tls::private_key_from_pem(&issued.key_pem).unwrap();
    assert!(!s.store.exists("myserver").unwrap());
    // An expiration in the past is refused.
    assert!(
        verge_tls::issue_server_cert_with_software_key(
            &s.ca,
            &["x".into()],
            SystemTime::now() - DAY
        )
        .is_err()
    );
}
