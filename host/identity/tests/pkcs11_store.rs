//! [`Pkcs11KeyStore`] on a private SoftHSM2 token: the key store suite, keys that cannot be
//! extracted, URI variants, and the registry round trip.
//!
//! SoftHSM reads `SOFTHSM2_CONF` and its token list once per process, so this binary has a single
//! test that makes one token, sets the variable before the library is loaded, and runs every
//! step in order (each step names itself in its failure messages).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use verge_identity::{KeyError, KeyStore, Pkcs11KeyStore};
use verge_tests::softhsm::SoftHsm;

use common::{TempDir, key_store_suite, random_secret, registry_flow, software_hmac};

#[test]
fn pkcs11_key_store_on_softhsm() {
    let hsm = SoftHsm::new();
    let (name, value) = hsm.env();
    // SAFETY: the only test of this binary sets it before anything loads the PKCS#11 library;
    // no other thread reads the environment meanwhile.
    unsafe { std::env::set_var(name, value) };

    // Before any session is logged in (login state is per process, shared by sessions).
    opening_needs_a_good_pin(&hsm);

    let store = Arc::new(Pkcs11KeyStore::open(SoftHsm::library(), &hsm.uri()).unwrap());
    assert_eq!(store.token_label(), SoftHsm::TOKEN);

    key_store_suite(store.clone(), "suite/");
    keys_are_not_extractable(&store);
    uri_variants(&hsm, &store);
    a_second_store_sees_the_same_keys(&hsm, &store);

    short_secrets_are_refused_at_import(&store);

    let dir = TempDir::new("pkcs11-registry");
    registry_flow::registry_round_trip(store.clone(), dir.path());
    // Every step cleaned up after itself: the registry's removals deleted its keys.
    assert_eq!(
        all_labels(),
        Vec::<String>::new(),
        "objects left on the token"
    );
}

/// SoftHSM refuses HMAC-SHA256 keys shorter than 32 bytes when they are used; the store finds
/// out at import and keeps nothing.
fn short_secrets_are_refused_at_import(store: &Pkcs11KeyStore) {
    match store.import_hmac_key("short", &[1u8; 16]) {
        Err(KeyError::Invalid(msg)) => assert!(msg.contains("16 bytes"), "{msg}"),
        other => panic!("a 16-byte secret: {other:?}"),
    }
    assert!(!store.exists("short").unwrap(), "the refused key was kept");
    store.import_hmac_key("long", &[1u8; 64]).unwrap();
    assert_eq!(
        store.hmac_sha256("long", b"x").unwrap(),
        software_hmac(&[1u8; 64], b"x")
    );
    store.delete("long").unwrap();
}

fn opening_needs_a_good_pin(hsm: &SoftHsm) {
    let lib = SoftHsm::library();
    match Pkcs11KeyStore::open(lib, &format!("pkcs11:token={}", SoftHsm::TOKEN)) {
        Err(KeyError::Invalid(msg)) => assert!(msg.contains("PIN"), "no-PIN message: {msg}"),
        other => panic!("opening without a PIN: {other:?}"),
    }
    match Pkcs11KeyStore::open(
        lib,
        &format!("pkcs11:token={}?pin-value=0000", SoftHsm::TOKEN),
    ) {
        Err(KeyError::Store(msg)) => {
            assert!(msg.contains("logging in"), "wrong-PIN message: {msg}")
        }
        other => panic!("opening with a wrong PIN: {other:?}"),
    }
    let _ = hsm;
}

/// A session of the test's own on the token, through cryptoki directly.
fn independent_session() -> Session {
    let context = Pkcs11::new(SoftHsm::library()).unwrap();
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("initialise: {e}"),
    }
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|&s| context.get_token_info(s).unwrap().label() == SoftHsm::TOKEN)
        .unwrap();
    let session = context.open_ro_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::new(SoftHsm::PIN.into()))) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
    session
}

/// The labels of every object on the token.
fn all_labels() -> Vec<String> {
    let session = independent_session();
    session
        .find_objects(&[])
        .unwrap()
        .into_iter()
        .filter_map(|o| {
            session
                .get_attributes(o, &[AttributeType::Label])
                .unwrap()
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Label(l) => Some(String::from_utf8_lossy(&l).into_owned()),
                    _ => None,
                })
        })
        .collect()
}

fn keys_are_not_extractable(store: &Pkcs11KeyStore) {
    store.generate_hmac_key("x/generated").unwrap();
    store
        .import_hmac_key("x/imported", &random_secret())
        .unwrap();
    store.generate_ec_p256_key("x/ec").unwrap();
    let session = independent_session();
    let mut checked = 0;
    for (label, class) in [
        ("x/generated", ObjectClass::SECRET_KEY),
        ("x/imported", ObjectClass::SECRET_KEY),
        ("x/ec", ObjectClass::PRIVATE_KEY),
    ] {
        let objects = session
            .find_objects(&[
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Class(class),
            ])
            .unwrap();
        assert_eq!(objects.len(), 1, "{label}: one {class} object");
        let object = objects[0];
        let attributes = session
            .get_attributes(
                object,
                &[
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::Token,
                    AttributeType::Private,
                ],
            )
            .unwrap();
        for expected in [
            Attribute::Extractable(false),
            Attribute::Sensitive(true),
            Attribute::Token(true),
            Attribute::Private(true),
        ] {
            let found = attributes
                .iter()
                .find(|a| a.attribute_type() == expected.attribute_type());
            assert_eq!(
                found,
                Some(&expected),
                "{label}: {:?}",
                expected.attribute_type()
            );
        }
        // The key's value cannot be read: an error, or (SoftHSM) no value at all.
        match session.get_attributes(object, &[AttributeType::Value]) {
            Err(_) => {}
            Ok(values) => assert!(
                values
                    .iter()
                    .all(|a| !matches!(a, Attribute::Value(v) if !v.is_empty())),
                "{label}: CKA_VALUE was readable"
            ),
        }
        // And it cannot be made extractable again.
        let rw = rw_session();
        assert!(
            matches!(
                rw.update_attributes(object, &[Attribute::Extractable(true)]),
                Err(P11Error::Pkcs11(RvError::AttributeReadOnly, _))
            ),
            "{label}: CKA_EXTRACTABLE could be set to true"
        );
        checked += 1;
    }
    assert_eq!(checked, 3);
    // Generated keys never were extractable.
    for label in ["x/generated", "x/ec"] {
        let objects = session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .unwrap();
        let secret_or_private = objects.into_iter().find(|&o| {
            session
                .get_attributes(o, &[AttributeType::Class])
                .unwrap()
                .iter()
                .any(|a| matches!(a, Attribute::Class(c) if *c != ObjectClass::PUBLIC_KEY))
        });
        let attributes = session
            .get_attributes(
                secret_or_private.unwrap(),
                &[AttributeType::NeverExtractable],
            )
            .unwrap();
        assert_eq!(
            attributes,
            vec![Attribute::NeverExtractable(true)],
            "{label}"
        );
    }
    for label in ["x/generated", "x/imported", "x/ec"] {
        store.delete(label).unwrap();
    }
    // Deleting the EC key removed the public object too.
    assert!(
        session
            .find_objects(&[Attribute::Label(b"x/ec".to_vec())])
            .unwrap()
            .is_empty(),
        "an object labelled x/ec survived delete"
    );
}

fn rw_session() -> Session {
    let context = Pkcs11::new(SoftHsm::library()).unwrap();
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|&s| context.get_token_info(s).unwrap().label() == SoftHsm::TOKEN)
        .unwrap();
    context.open_rw_session(slot).unwrap()
}

fn uri_variants(hsm: &SoftHsm, store: &Pkcs11KeyStore) {
    let lib = SoftHsm::library();
    let slot = store.slot_id();
    let secret = random_secret();
    store.import_hmac_key("uri/shared", &secret).unwrap();
    let expected = software_hmac(&secret, b"u");

    // slot-id, with and without the matching token label.
    for uri in [
        format!("pkcs11:slot-id={slot}?pin-value={}", SoftHsm::PIN),
        format!(
            "pkcs11:slot-id={slot};token={}?pin-value={}",
            SoftHsm::TOKEN,
            SoftHsm::PIN
        ),
        format!(
            "pkcs11:token={};object=ignored%20label?pin-value={}",
            SoftHsm::TOKEN,
            SoftHsm::PIN
        ),
    ] {
        let other = Pkcs11KeyStore::open(lib, &uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(
            other.hmac_sha256("uri/shared", b"u").unwrap(),
            expected,
            "{uri}"
        );
    }
    // pin-source.
    let pin_file = hsm.dir().join("pin");
    std::fs::write(&pin_file, format!("{}\n", SoftHsm::PIN)).unwrap();
    let uri = format!(
        "pkcs11:token={}?pin-source=file:{}",
        SoftHsm::TOKEN,
        pin_file.display()
    );
    let other = Pkcs11KeyStore::open(lib, &uri).unwrap();
    assert_eq!(
        other.hmac_sha256("uri/shared", b"u").unwrap(),
        expected,
        "pin-source"
    );

    // Refusals.
    for (uri, what) in [
        (
            format!("pkcs11:token=nonexistent?pin-value={}", SoftHsm::PIN),
            "no token labelled",
        ),
        (
            format!("pkcs11:slot-id=4242?pin-value={}", SoftHsm::PIN),
            "no token in slot",
        ),
        (
            format!(
                "pkcs11:slot-id={slot};token=other?pin-value={}",
                SoftHsm::PIN
            ),
            "not \"other\"",
        ),
    ] {
        match Pkcs11KeyStore::open(lib, &uri) {
            Err(KeyError::Store(msg)) => assert!(msg.contains(what), "{uri}: {msg}"),
            other => panic!("{uri}: {other:?}"),
        }
    }
    for uri in [
        format!("pkcs11:object=x?pin-value={}", SoftHsm::PIN),
        "pkcs11:token=verge?pin-source=file:/nonexistent/verge-pin".to_owned(),
        "token=verge".to_owned(),
    ] {
        assert!(
            matches!(Pkcs11KeyStore::open(lib, &uri), Err(KeyError::Invalid(_))),
            "{uri} accepted"
        );
    }
    match Pkcs11KeyStore::open(Path::new("/nonexistent/lib.so"), &hsm.uri()) {
        Err(KeyError::Store(msg)) => assert!(msg.contains("/nonexistent/lib.so"), "{msg}"),
        other => panic!("a missing library: {other:?}"),
    }
    store.delete("uri/shared").unwrap();
}

fn a_second_store_sees_the_same_keys(hsm: &SoftHsm, store: &Pkcs11KeyStore) {
    let second = Pkcs11KeyStore::open(SoftHsm::library(), &hsm.uri()).unwrap();
    store.generate_ec_p256_key("shared/ec").unwrap();
    assert_eq!(
        second.ec_p256_public_key("shared/ec").unwrap(),
        store.ec_p256_public_key("shared/ec").unwrap()
    );
    assert!(matches!(
        second.generate_hmac_key("shared/ec"),
        Err(KeyError::Exists(_))
    ));
    second.delete("shared/ec").unwrap();
    assert!(!store.exists("shared/ec").unwrap());
    // Dropping one store (closing its session) leaves the other logged in.
    drop(second);
    store.generate_hmac_key("shared/after-drop").unwrap();
    store.hmac_sha256("shared/after-drop", b"x").unwrap();
    store.delete("shared/after-drop").unwrap();
}
