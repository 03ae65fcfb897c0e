//! [`FileKeyStore`] passes the key store suite, keeps its files private, and finds its keys
//! again when reopened.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use common::{TempDir, key_store_suite, odd_labels, random_secret, software_hmac};
use verge_identity::{FileKeyStore, KeyStore};

#[test]
fn passes_the_key_store_suite() {
    let dir = TempDir::new("file-suite");
    let store = Arc::new(FileKeyStore::open(dir.path().join("keys")).unwrap());
    key_store_suite(store.clone(), "");
    // Run twice on one store: the suite cleans up after itself.
    key_store_suite(store, "again/");
}

#[test]
fn directory_is_0700_and_key_files_0600() {
    let dir = TempDir::new("file-modes");
    let keys = dir.path().join("nested/keys");
    let store = FileKeyStore::open(&keys).unwrap();
    assert_eq!(
        std::fs::metadata(&keys).unwrap().mode() & 0o777,
        0o700,
        "key directory mode"
    );
    store.generate_hmac_key("sas/d/m:primary").unwrap();
    store.import_hmac_key("imported", &random_secret()).unwrap();
    store.generate_ec_p256_key("ca/edge").unwrap();
    for label in odd_labels("odd/") {
        store.generate_hmac_key(&label).unwrap();
    }
    let entries: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(
        entries.len(),
        3 + odd_labels("").len(),
        "one file per key, nothing else"
    );
    for entry in entries {
        let meta = entry.metadata().unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(meta.is_file(), "{name} is not a plain file");
        assert_eq!(meta.mode() & 0o777, 0o600, "{name} mode");
        assert!(!name.starts_with('.'), "{name} looks like a temporary file");
        assert!(name.len() <= 255, "{name} too long");
    }
}

#[test]
fn an_existing_directory_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("file-chmod");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    FileKeyStore::open(&keys).unwrap();
    assert_eq!(std::fs::metadata(&keys).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn keys_survive_reopening() {
    let dir = TempDir::new("file-reopen");
    let secret = random_secret();
    let public = {
        let store = FileKeyStore::open(dir.path()).unwrap();
        store.import_hmac_key("leaf/primary", &secret).unwrap();
        store.generate_ec_p256_key("edge-ca").unwrap();
        store.ec_p256_public_key("edge-ca").unwrap()
    };
    let store = FileKeyStore::open(dir.path()).unwrap();
    assert_eq!(
        store.hmac_sha256("leaf/primary", b"d").unwrap(),
        software_hmac(&secret, b"d")
    );
    assert_eq!(store.ec_p256_public_key("edge-ca").unwrap(), public);
}

#[test]
fn labels_cannot_escape_the_directory() {
    let dir = TempDir::new("file-escape");
    let keys = dir.path().join("keys");
    let store = FileKeyStore::open(&keys).unwrap();
    store.generate_hmac_key("../outside").unwrap();
    store.generate_hmac_key("/etc/verge-test").unwrap();
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside,
        vec![std::ffi::OsString::from("keys")],
        "a file was written outside"
    );
    assert!(!std::path::Path::new("/etc/verge-test.hmac").exists());
}
