//! The registry on the file key store: the full round trip, and registry files it must refuse.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::TempDir;
use common::registry_flow::{EDGE, HUB, registry_round_trip};
use verge_identity::{FileKeyStore, KeyStore, NewAuth, Registry, RegistryError};

fn file_store(dir: &TempDir) -> Arc<dyn KeyStore> {
    Arc::new(FileKeyStore::open(dir.path().join("keys")).unwrap())
}

#[test]
fn round_trip_on_the_file_store() {
    let dir = TempDir::new("registry");
    let store = file_store(&dir);
    registry_round_trip(Arc::clone(&store), dir.path());
    // Everything was removed: no key is left in the store.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "keys left: {left:?}");
}

#[test]
fn a_missing_file_is_an_empty_registry_in_a_new_directory() {
    let dir = TempDir::new("registry-new");
    let path = dir.path().join("state/identities.json");
    let registry = Registry::open(&path, file_store(&dir), HUB, EDGE).unwrap();
    assert!(registry.list().is_empty());
    assert!(!path.exists(), "opening wrote a file");
    registry.ensure_edge_device().unwrap();
    assert!(path.exists());
}

#[test]
fn unusable_files_are_refused() {
    let dir = TempDir::new("registry-corrupt");
    let path = dir.path().join("registry.json");
    let record = r#"{"device_id":"leaf","kind":"leaf_device","generation_id":"g","auth":{"type":"x509_ca"},"created":1}"#;
    for (text, what) in [
        ("not json".to_owned(), "not JSON"),
        ("{}".to_owned(), "no fields"),
        (
            r#"{"version":2,"identities":[]}"#.to_owned(),
            "a newer version",
        ),
        (
            format!(r#"{{"version":1,"identities":[{record},{record}]}}"#),
            "a duplicate",
        ),
        (record_with_id("a/b"), "an invalid id"),
        (record_with_id(""), "an empty id"),
        (
            r#"{"version":1,"identities":[],"extra":true}"#.to_owned(),
            "an unknown field",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        match Registry::open(&path, file_store(&dir), HUB, EDGE) {
            Err(RegistryError::Corrupt { .. }) => {}
            other => panic!("a file with {what} gave {other:?}"),
        }
    }
    std::fs::write(&path, format!(r#"{{"version":1,"identities":[{record}]}}"#)).unwrap();
    let registry = Registry::open(&path, file_store(&dir), HUB, EDGE).unwrap();
    assert_eq!(registry.list().len(), 1);
}

fn record_with_id(id: &str) -> String {
    format!(
        r#"{{"version":1,"identities":[{{"device_id":"{id}","kind":"leaf_device","generation_id":"g","auth":{{"type":"x509_ca"}},"created":1}}]}}"#
    )
}

#[test]
fn bad_configuration_is_refused() {
    let dir = TempDir::new("registry-config");
    let path = dir.path().join("registry.json");
    assert!(matches!(
        Registry::open(&path, file_store(&dir), " ", EDGE),
        Err(RegistryError::MissingHubHostName)
    ));
    assert!(matches!(
        Registry::open(&path, file_store(&dir), HUB, "edge/1"),
        Err(RegistryError::InvalidId { .. })
    ));
}

#[test]
fn without_a_gateway_the_connection_string_has_none() {
    let dir = TempDir::new("registry-nogw");
    let registry = Registry::open(dir.path().join("r.json"), file_store(&dir), HUB, EDGE).unwrap();
    let (_, credentials) = registry.add_leaf_device("leaf", NewAuth::Sas).unwrap();
    let cs = credentials.unwrap().primary.expose().to_owned();
    assert!(
        cs.starts_with("HostName=hub.example.net;DeviceId=leaf;SharedAccessKey="),
        "{cs}"
    );
    assert!(!cs.contains("GatewayHostName"), "{cs}");
}

#[test]
fn concurrent_additions_are_all_kept() {
    let dir = TempDir::new("registry-concurrent");
    let path = dir.path().join("registry.json");
    let registry = Arc::new(Registry::open(&path, file_store(&dir), HUB, EDGE).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let registry = Arc::clone(&registry);
            std::thread::spawn(move || {
                for i in 0..5 {
                    registry
                        .add_leaf_device(&format!("leaf-{t}-{i}"), NewAuth::Sas)
                        .unwrap();
                    registry.ensure_module(&format!("m{i}")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(registry.list().len(), 20 + 5);
    let reopened = Registry::open(&path, file_store(&dir), HUB, EDGE).unwrap();
    assert_eq!(reopened.list(), registry.list());
}
