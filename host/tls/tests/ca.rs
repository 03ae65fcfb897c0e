//! The edge CA: creation, persistence, renewal, and signing through the store.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use common::{FlakyStore, key_store};
use verge_identity::keys::KeyStore;
use verge_tls::{CaConfig, CertOrigin, EdgeCa, TlsError};
use x509_parser::prelude::{FromDer, X509Certificate};

const DAY: Duration = Duration::from_secs(86_400);

fn config() -> CaConfig {
    CaConfig::new("Verge edge CA test")
}

#[test]
fn creates_a_self_signed_p256_ca_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = key_store(dir.path());
    let ca = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "Verge edge CA test").unwrap();
    assert_eq!(ca.origin(), CertOrigin::Created);
    assert!(store.exists("edge-ca").unwrap());
    assert!(dir.path().join("edge-ca.cert.pem").exists());

    let der = common::der(&ca.trust_bundle_pem());
    assert_eq!(der.as_ref(), ca.certificate_der().as_ref());
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert!(cert.is_ca());
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
    assert_eq!(cert.subject(), cert.issuer());
    cert.verify_signature(None).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        store.ec_p256_public_key("edge-ca").unwrap().as_slice()
    );
    assert_eq!(ca.common_name(), Some("Verge edge CA test"));
    // About a year.
    let life = ca.not_after().duration_since(ca.not_before()).unwrap();
    assert!(life >= 365 * DAY && life <= 366 * DAY, "{life:?}");
    assert!(!ca.needs_renewal(SystemTime::now()));
}

#[test]
fn is_reused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = EdgeCa::load_or_create(key_store(dir.path()), dir.path(), "ca").unwrap();
    // A new process: a new store object over the same keys.
    let second = EdgeCa::load_or_create(key_store(dir.path()), dir.path(), "ca").unwrap();
    assert_eq!(second.origin(), CertOrigin::Loaded);
    assert_eq!(first.trust_bundle_pem(), second.trust_bundle_pem());
    assert_eq!(
        first.signing_key().public_point(),
        second.signing_key().public_point()
    );
}

#[test]
fn is_recreated_when_the_key_or_file_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = key_store(dir.path());
    let first = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "ca").unwrap();

    // File gone, key kept: same key, new certificate.
    std::fs::remove_file(dir.path().join("edge-ca.cert.pem")).unwrap();
    let second = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "ca").unwrap();
    assert_eq!(second.origin(), CertOrigin::Created);
    assert_ne!(first.trust_bundle_pem(), second.trust_bundle_pem());
    assert_eq!(
        first.signing_key().public_point(),
        second.signing_key().public_point()
    );

    // Key gone: a new key and certificate.
    store.delete("edge-ca").unwrap();
    let third = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "ca").unwrap();
    assert_eq!(third.origin(), CertOrigin::Created);
    assert_ne!(
        second.signing_key().public_point(),
        third.signing_key().public_point()
    );
    assert_eq!(
        third.signing_key().public_point(),
        store.ec_p256_public_key("edge-ca").unwrap().as_slice()
    );
}

#[test]
fn a_certificate_for_another_key_or_name_or_garbage_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = key_store(dir.path());
    EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "ca").unwrap();

    // Another key under the label (e.g. the token was re-initialised).
    store.delete("edge-ca").unwrap();
    store.generate_ec_p256_key("edge-ca").unwrap();
    let ca = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "ca").unwrap();
    assert_eq!(ca.origin(), CertOrigin::Renewed);
    let der = ca.certificate_der().clone();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        store.ec_p256_public_key("edge-ca").unwrap().as_slice()
    );

    // Another configured name.
    let ca = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "renamed").unwrap();
    assert_eq!(ca.origin(), CertOrigin::Renewed);
    assert_eq!(ca.common_name(), Some("renamed"));

    // A damaged file.
    std::fs::write(dir.path().join("edge-ca.cert.pem"), "garbage").unwrap();
    let ca = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "renamed").unwrap();
    assert_eq!(ca.origin(), CertOrigin::Renewed);
    let again = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "renamed").unwrap();
    assert_eq!(again.origin(), CertOrigin::Loaded);
}

#[test]
fn renews_in_the_last_tenth_of_its_life_keeping_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = key_store(dir.path());
    let now = SystemTime::now();
    let created_at = now - 330 * DAY;
    let old =
        EdgeCa::load_or_create_with(Arc::clone(&store), dir.path(), &config(), created_at).unwrap();
    assert_eq!(old.origin(), CertOrigin::Created);

    // 100 days in: kept.
    let mid = EdgeCa::load_or_create_with(
        Arc::clone(&store),
        dir.path(),
        &config(),
        created_at + 100 * DAY,
    )
    .unwrap();
    assert_eq!(mid.origin(), CertOrigin::Loaded);
    assert!(!mid.needs_renewal(created_at + 100 * DAY));

    // 330 days in (35 left of 365): renewed.
    assert!(old.needs_renewal(now));
    let renewed =
        EdgeCa::load_or_create_with(Arc::clone(&store), dir.path(), &config(), now).unwrap();
    assert_eq!(renewed.origin(), CertOrigin::Renewed);
    assert!(renewed.not_after() > old.not_after() + 300 * DAY);
    assert_eq!(
        renewed.signing_key().public_point(),
        old.signing_key().public_point()
    );
    assert_ne!(renewed.trust_bundle_pem(), old.trust_bundle_pem());

    // And the renewed one is what the next start loads.
    let next = EdgeCa::load_or_create_with(store, dir.path(), &config(), now + DAY).unwrap();
    assert_eq!(next.origin(), CertOrigin::Loaded);
    assert_eq!(next.trust_bundle_pem(), renewed.trust_bundle_pem());
}

#[test]
fn renewal_can_rotate_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = key_store(dir.path());
    let mut config = config();
    config.rotate_key_on_renewal = true;
    config.validity = 10 * DAY;
    let now = SystemTime::now();
    let old = EdgeCa::load_or_create_with(Arc::clone(&store), dir.path(), &config, now - 20 * DAY)
        .unwrap();
    // Expired outright.
    let renewed = EdgeCa::load_or_create_with(store, dir.path(), &config, now).unwrap();
    assert_eq!(renewed.origin(), CertOrigin::Renewed);
    assert_ne!(
        renewed.signing_key().public_point(),
        old.signing_key().public_point()
    );
}

#[test]
fn custom_label_and_validity() {
    let dir = tempfile::tempdir().unwrap();
    let store = key_store(dir.path());
    let mut config = config();
    config.key_label = "my-ca".into();
    config.validity = 30 * DAY;
    let ca =
        EdgeCa::load_or_create_with(Arc::clone(&store), dir.path(), &config, SystemTime::now())
            .unwrap();
    assert!(store.exists("my-ca").unwrap());
    assert!(!store.exists("edge-ca").unwrap());
    assert!(dir.path().join("my-ca.cert.pem").exists());
    let life = ca.not_after().duration_since(ca.not_before()).unwrap();
    assert!(life >= 30 * DAY && life <= 31 * DAY);
}

#[test]
fn bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = key_store(dir.path());
    let now = SystemTime::now();
    let mut c = config();
    c.key_label = "../escape".into();
    assert!(matches!(
        EdgeCa::load_or_create_with(Arc::clone(&store), dir.path(), &c, now),
        Err(TlsError::Label(_))
    ));
    let mut c = config();
    c.common_name = String::new();
    assert!(matches!(
        EdgeCa::load_or_create_with(Arc::clone(&store), dir.path(), &c, now),
        Err(TlsError::Config(_))
    ));
    let mut c = config();
    c.validity = Duration::from_secs(60);
    assert!(matches!(
        EdgeCa::load_or_create_with(store, dir.path(), &c, now),
        Err(TlsError::Config(_))
    ));
}

#[test]
fn a_store_that_cannot_sign_gives_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = FlakyStore::new(key_store(dir.path()));
    flaky.fail_signing.store(true, Ordering::SeqCst);
    let store: Arc<dyn KeyStore> = flaky.clone();
    let err = EdgeCa::load_or_create(store, dir.path(), "ca").unwrap_err();
    assert!(
        matches!(&err, TlsError::Key(e) if e.to_string().contains("token removed")),
        "{err}"
    );
    assert!(!dir.path().join("edge-ca.cert.pem").exists());
}

#[test]
fn the_bundle_verifies_with_openssl() {
    if !common::have("openssl") {
        eprintln!("SKIP: no openssl CLI");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = EdgeCa::load_or_create(key_store(dir.path()), dir.path(), "ca").unwrap();
    let bundle = common::write(dir.path(), "bundle.pem", &ca.trust_bundle_pem());
    let out = std::process::Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(&bundle)
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
