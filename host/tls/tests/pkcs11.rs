//! The edge CA, the hub server certificate and a client certificate with their keys on a
//! SoftHSM2 token (PKCS#11): certificates are signed and handshakes are made by the token.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once per process, so this binary has a single test that sets
//! it before the library is loaded and runs every step in order.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{Served, client_config_builder, python_client, rustls_client, serve_once};
use verge_identity::Pkcs11KeyStore;
use verge_identity::keys::KeyStore;
use verge_tests::softhsm::SoftHsm;
use verge_tls::{
    CertOrigin, ClientAuth, EdgeCa, ServerCert, ServerCertResolver, StoreSigningKey,
    issue_client_cert, server_config,
};

#[tokio::test]
async fn tls_with_keys_on_a_softhsm_token() {
    let hsm = SoftHsm::new();
    let (name, value) = hsm.env();
    // SAFETY: the only test of this binary sets it before anything loads the PKCS#11 library;
    // no other thread reads the environment meanwhile.
    unsafe { std::env::set_var(name, value) };
    let store: Arc<dyn KeyStore> =
        Arc::new(Pkcs11KeyStore::open(SoftHsm::library(), &hsm.uri()).unwrap());
    let dir = tempfile::tempdir().unwrap();

    // The CA: key generated on the token, certificate self-signed by the token.
    let ca = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "Token edge CA").unwrap();
    assert_eq!(ca.origin(), CertOrigin::Created);
    assert!(store.exists("edge-ca").unwrap());

    // A second store over the same token (a restart) reuses it.
    let reopened: Arc<dyn KeyStore> =
        Arc::new(Pkcs11KeyStore::open(SoftHsm::library(), &hsm.uri()).unwrap());
    let again = EdgeCa::load_or_create(Arc::clone(&reopened), dir.path(), "Token edge CA").unwrap();
    assert_eq!(again.origin(), CertOrigin::Loaded);

    // The hub server certificate, its key on the token too.
    let cert = ServerCert::load_or_issue(&ca, dir.path(), &["edge.example".to_owned()]).unwrap();
    let auth = Arc::new(ClientAuth::from_pem(&ca.trust_bundle_pem()).unwrap());
    let resolver = Arc::new(ServerCertResolver::new(&cert));
    let bundle = ca.trust_bundle_pem();

    // rustls client, no client certificate.
    let config = server_config(resolver.clone(), Some(Arc::clone(&auth))).unwrap();
    let (addr, server) = serve_once(config, Some(Arc::clone(&auth))).await;
    let client = client_config_builder(&bundle).with_no_client_auth();
    assert_eq!(
        rustls_client(addr, "edge.example", client).await.as_deref(),
        Ok("hello\n")
    );
    assert!(matches!(server.await.unwrap(), Served::Ok(None)));

    // Mutual TLS with both keys on the token: a CA-signed device certificate.
    let pem = issue_client_cert(&ca, &store, "device-key", "device-1").unwrap();
    let key = StoreSigningKey::open(Arc::clone(&store), "device-key").unwrap();
    let certified =
        rustls::sign::CertifiedKey::new(verge_tls::certs_from_pem(&pem).unwrap(), Arc::new(key));
    let client = client_config_builder(&bundle)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    let config = server_config(resolver.clone(), Some(Arc::clone(&auth))).unwrap();
    let (addr, server) = serve_once(config, Some(Arc::clone(&auth))).await;
    assert_eq!(
        rustls_client(addr, "localhost", client).await.as_deref(),
        Ok("hello\n")
    );
    let Served::Ok(Some(seen)) = server.await.unwrap() else {
        panic!("no client certificate seen")
    };
    assert!(seen.is_ca_identity_for("device-1"));

    // OpenSSL (Python's ssl) accepts the chain signed on the token.
    let cafile = common::write(dir.path(), "bundle.pem", &bundle);
    let config = server_config(resolver, Some(Arc::clone(&auth))).unwrap();
    let (addr, server) = serve_once(config, Some(auth)).await;
    if let Some(out) = python_client(addr.port(), &cafile, "localhost", None).await {
        let out = out.unwrap();
        assert!(out.contains("hello"), "{out}");
        assert!(matches!(server.await.unwrap(), Served::Ok(None)));
    } else {
        eprintln!("SKIP: no python3");
    }

    for label in ["edge-ca", "hub-server", "device-key"] {
        store.delete(label).unwrap();
    }
}
