//! What the identity integration tests share: temporary directories, a software HMAC to check
//! stores against, and the behavioural suite every [`KeyStore`] must pass.

#![allow(dead_code, clippy::unwrap_used)]

pub mod registry_flow;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::signature::{self, UnparsedPublicKey};
use ring::{hmac, rand::SecureRandom, rand::SystemRandom};
use verge_identity::{KeyError, KeyStore};

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "verge-identity-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// HMAC-SHA256 in software, for checking stores and tokens independently.
pub fn software_hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .try_into()
        .unwrap()
}

pub fn random_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    SystemRandom::new().fill(&mut secret).unwrap();
    secret
}

fn verify_ecdsa(public: &[u8], message: &[u8], der: &[u8]) -> bool {
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, public)
        .verify(message, der)
        .is_ok()
}

/// Labels that stress a store's naming: separators, dots, escapes, non-ASCII, length.
pub fn odd_labels(prefix: &str) -> Vec<String> {
    [
        "verge/sas/dev:1/$edgeHub/0123abcd/primary",
        "a b",
        "..",
        "../../etc/passwd",
        "é/ü:ß",
        "a/b",
        "a%2Fb",
        "A/B",
        "semi;colon=equals&amp?",
        "tab\there",
    ]
    .iter()
    .map(|l| format!("{prefix}{l}"))
    .chain([format!("{prefix}{}", "x/".repeat(150))])
    .collect()
}

/// The behaviour every key store must have. Labels start with `prefix`, so one store can run the
/// suite more than once.
pub fn key_store_suite(store: Arc<dyn KeyStore>, prefix: &str) {
    let label = |name: &str| format!("{prefix}{name}");

    // Generated HMAC keys: usable, deterministic, unique labels.
    let generated = label("hmac/generated");
    assert!(!store.exists(&generated).unwrap(), "fresh label exists");
    store.generate_hmac_key(&generated).unwrap();
    assert!(store.exists(&generated).unwrap(), "generated key missing");
    let mac1 = store.hmac_sha256(&generated, b"data").unwrap();
    assert_eq!(
        mac1,
        store.hmac_sha256(&generated, b"data").unwrap(),
        "HMAC not deterministic"
    );
    assert_ne!(
        mac1,
        store.hmac_sha256(&generated, b"other").unwrap(),
        "HMAC ignores data"
    );
    assert!(
        matches!(
            store.generate_hmac_key(&generated),
            Err(KeyError::Exists(_))
        ),
        "generating over an existing key"
    );
    let second = label("hmac/generated-2");
    store.generate_hmac_key(&second).unwrap();
    assert_ne!(
        mac1,
        store.hmac_sha256(&second, b"data").unwrap(),
        "two generated keys equal"
    );

    // Imported HMAC keys give exactly the software HMAC.
    let imported = label("hmac/imported");
    let secret = random_secret();
    store.import_hmac_key(&imported, &secret).unwrap();
    for data in [
        &b""[..],
        b"x",
        b"hub.example.net%2Fdevices%2Fd\n1700000000",
        &[0u8; 1000],
    ] {
        assert_eq!(
            store.hmac_sha256(&imported, data).unwrap(),
            software_hmac(&secret, data),
            "imported key HMAC differs from software HMAC for {} bytes",
            data.len()
        );
    }
    assert!(
        matches!(
            store.import_hmac_key(&imported, &secret),
            Err(KeyError::Exists(_))
        ),
        "importing over an existing key"
    );
    assert!(
        matches!(
            store.import_hmac_key(&generated, &secret),
            Err(KeyError::Exists(_))
        ),
        "importing over a generated key"
    );
    assert!(
        matches!(
            store.import_hmac_key(&label("hmac/empty"), &[]),
            Err(KeyError::Invalid(_))
        ),
        "empty secret"
    );

    // EC P-256: the signature verifies against the public key, with ring's verifier.
    let ec = label("ec/p256");
    store.generate_ec_p256_key(&ec).unwrap();
    assert!(store.exists(&ec).unwrap());
    let public = store.ec_p256_public_key(&ec).unwrap();
    assert_eq!(public.len(), 65, "public key length");
    assert_eq!(public[0], 0x04, "public key is not uncompressed");
    for i in 0..8u8 {
        let message = vec![i; usize::from(i) * 100];
        let der = store.ecdsa_p256_sha256_sign(&ec, &message).unwrap();
        assert_eq!(der[0], 0x30, "signature is not a DER SEQUENCE");
        assert!((8..=72).contains(&der.len()), "DER length {}", der.len());
        assert!(
            verify_ecdsa(&public, &message, &der),
            "signature {i} does not verify"
        );
        assert!(
            !verify_ecdsa(&public, b"tampered", &der),
            "signature verifies other data"
        );
    }
    assert!(
        matches!(store.generate_ec_p256_key(&ec), Err(KeyError::Exists(_))),
        "generating over an existing EC key"
    );
    assert!(
        matches!(
            store.generate_ec_p256_key(&generated),
            Err(KeyError::Exists(_))
        ),
        "EC key over an HMAC key"
    );
    let ec2 = label("ec/p256-2");
    store.generate_ec_p256_key(&ec2).unwrap();
    assert_ne!(
        public,
        store.ec_p256_public_key(&ec2).unwrap(),
        "two EC keys equal"
    );

    // Kinds are not mixed up.
    assert!(
        matches!(
            store.hmac_sha256(&ec, b"x"),
            Err(KeyError::WrongKind { .. })
        ),
        "HMAC with an EC key"
    );
    assert!(
        matches!(
            store.ecdsa_p256_sha256_sign(&generated, b"x"),
            Err(KeyError::WrongKind { .. })
        ),
        "ECDSA with an HMAC key"
    );
    assert!(
        matches!(
            store.ec_p256_public_key(&imported),
            Err(KeyError::WrongKind { .. })
        ),
        "public key of an HMAC key"
    );

    // Missing keys.
    let missing = label("missing");
    assert!(!store.exists(&missing).unwrap());
    assert!(matches!(
        store.hmac_sha256(&missing, b"x"),
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        store.ec_p256_public_key(&missing),
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        store.ecdsa_p256_sha256_sign(&missing, b"x"),
        Err(KeyError::NotFound(_))
    ));
    store.delete(&missing).unwrap();

    // Empty labels are refused everywhere.
    assert!(matches!(
        store.generate_hmac_key(""),
        Err(KeyError::Invalid(_))
    ));
    assert!(matches!(store.exists(""), Err(KeyError::Invalid(_))));
    assert!(matches!(
        store.hmac_sha256("", b"x"),
        Err(KeyError::Invalid(_))
    ));

    // Delete: the HMAC key, then both halves of the EC pair.
    store.delete(&generated).unwrap();
    assert!(
        !store.exists(&generated).unwrap(),
        "deleted HMAC key exists"
    );
    assert!(matches!(
        store.hmac_sha256(&generated, b"x"),
        Err(KeyError::NotFound(_))
    ));
    store.delete(&ec).unwrap();
    assert!(!store.exists(&ec).unwrap(), "deleted EC key exists");
    assert!(matches!(
        store.ec_p256_public_key(&ec),
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        store.ecdsa_p256_sha256_sign(&ec, b"x"),
        Err(KeyError::NotFound(_))
    ));
    store.delete(&ec).unwrap();
    // The label is free again.
    store.generate_ec_p256_key(&ec).unwrap();
    store.delete(&ec).unwrap();
    // Other keys were untouched.
    assert!(
        store.exists(&second).unwrap()
            && store.exists(&imported).unwrap()
            && store.exists(&ec2).unwrap()
    );

    // Odd labels: each its own key, with exactly its own secret.
    let labels = odd_labels(&label("odd/"));
    let secrets: Vec<[u8; 32]> = labels.iter().map(|_| random_secret()).collect();
    for (l, s) in labels.iter().zip(&secrets) {
        store
            .import_hmac_key(l, s)
            .unwrap_or_else(|e| panic!("importing {l:?}: {e}"));
    }
    for (l, s) in labels.iter().zip(&secrets) {
        assert_eq!(
            store.hmac_sha256(l, b"odd").unwrap(),
            software_hmac(s, b"odd"),
            "label {l:?} uses another key"
        );
    }
    let odd_ec = label("odd/ec/../:é");
    store.generate_ec_p256_key(&odd_ec).unwrap();
    let odd_public = store.ec_p256_public_key(&odd_ec).unwrap();
    let der = store.ecdsa_p256_sha256_sign(&odd_ec, b"m").unwrap();
    assert!(
        verify_ecdsa(&odd_public, b"m", &der),
        "odd-label EC signature"
    );
    for l in labels.iter().chain([&odd_ec]) {
        store.delete(l).unwrap();
        assert!(!store.exists(l).unwrap(), "{l:?} survives delete");
    }

    // Concurrent use from several threads.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            let imported = imported.clone();
            let ec2 = ec2.clone();
            std::thread::spawn(move || {
                for i in 0..10u8 {
                    let data = [t, i];
                    assert_eq!(
                        store.hmac_sha256(&imported, &data).unwrap(),
                        software_hmac(&secret, &data)
                    );
                    store.ecdsa_p256_sha256_sign(&ec2, &data).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    for l in [second, imported, ec2] {
        store.delete(&l).unwrap();
    }
}
