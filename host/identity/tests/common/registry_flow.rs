//! The registry round trip, run on every key store: add identities, reopen from disk,
//! authenticate with tokens built independently of the crate, reject the wrong ones, remove.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use verge_identity::registry::IdentityKind;
use verge_identity::{
    Auth, AuthError, AuthMethod, KeySlot, KeyStore, NewAuth, Registry, RegistryError,
};
use verge_message::Identity;

use super::software_hmac;

pub const HUB: &str = "hub.example.net";
pub const GATEWAY: &str = "gw.local";
pub const EDGE: &str = "edge1";
pub const NOW: u64 = 1_700_000_000;

/// A connection string's fields.
pub fn fields(connection_string: &str) -> HashMap<String, String> {
    connection_string
        .split(';')
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A SAS token made without the crate: HMAC-SHA256 over `sr` (already URL-encoded) and `se`,
/// base64, with `+`, `/` and `=` escaped.
pub fn token(key_base64: &str, sr: &str, se: u64) -> String {
    let key = BASE64.decode(key_base64).unwrap();
    let mac = software_hmac(&key, format!("{sr}\n{se}").as_bytes());
    let sig = BASE64
        .encode(mac)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}")
}

fn open(dir: &Path, store: &Arc<dyn KeyStore>) -> Registry {
    Registry::open(dir.join("registry.json"), Arc::clone(store), HUB, EDGE)
        .unwrap()
        .with_gateway_host_name(GATEWAY)
}

fn sas_labels(record: &verge_identity::Record) -> (String, String) {
    match &record.auth {
        Auth::Sas { primary, secondary } => (primary.clone(), secondary.clone()),
        other => panic!("{} is not SAS: {other:?}", record.identity),
    }
}

pub fn registry_round_trip(store: Arc<dyn KeyStore>, dir: &Path) {
    let registry = open(dir, &store);
    let leaf = Identity::device("leaf-1");
    let other_leaf = Identity::device("leaf-2");
    let external = Identity::module(EDGE, "ext");

    // Agent-managed identities: keys in the store, idempotent.
    let edge = registry.ensure_edge_device().unwrap();
    assert_eq!(edge.kind, IdentityKind::EdgeDevice);
    assert_eq!(
        registry.ensure_edge_device().unwrap(),
        edge,
        "ensure_edge_device not idempotent"
    );
    let filter = registry.ensure_module("filter").unwrap();
    assert_eq!(filter.identity, Identity::module(EDGE, "filter"));
    assert_eq!(filter.kind, IdentityKind::Module);
    assert_eq!(
        registry.ensure_module("filter").unwrap(),
        filter,
        "ensure_module not idempotent"
    );
    let hub_module = registry.ensure_module("$edgeHub").unwrap();
    let (p, s) = sas_labels(&filter);
    assert!(
        store.exists(&p).unwrap() && store.exists(&s).unwrap(),
        "module keys not in store"
    );

    // Shared-key identities: keys returned once, as connection strings.
    let (leaf_record, credentials) = registry.add_leaf_device("leaf-1", NewAuth::Sas).unwrap();
    assert_eq!(leaf_record.kind, IdentityKind::LeafDevice);
    let credentials = credentials.unwrap();
    let primary = fields(credentials.primary.expose());
    let secondary = fields(credentials.secondary.expose());
    assert_eq!(primary["HostName"], HUB);
    assert_eq!(primary["DeviceId"], "leaf-1");
    assert_eq!(primary["GatewayHostName"], GATEWAY);
    assert!(!primary.contains_key("ModuleId"));
    assert_eq!(
        BASE64.decode(&primary["SharedAccessKey"]).unwrap().len(),
        32
    );
    assert_ne!(primary["SharedAccessKey"], secondary["SharedAccessKey"]);
    assert!(
        !format!("{credentials:?}").contains(&primary["SharedAccessKey"]),
        "Debug shows the key"
    );
    let (_, other_credentials) = registry.add_leaf_device("leaf-2", NewAuth::Sas).unwrap();
    let other_key = fields(other_credentials.unwrap().primary.expose())["SharedAccessKey"].clone();
    let (ext_record, ext_credentials) = registry.add_external_module("ext", NewAuth::Sas).unwrap();
    assert_eq!(ext_record.identity, external);
    assert_eq!(ext_record.kind, IdentityKind::ExternalModule);
    let ext = fields(ext_credentials.unwrap().primary.expose());
    assert_eq!(ext["DeviceId"], EDGE);
    assert_eq!(ext["ModuleId"], "ext");

    // Certificate identities.
    let cert_a = b"certificate A (DER)".as_slice();
    let cert_b = b"certificate B (DER)".as_slice();
    let sha256_a = hex(ring::digest::digest(&ring::digest::SHA256, cert_a).as_ref()).to_uppercase();
    let sha1_b =
        hex(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_b).as_ref());
    let (thumb_record, none) = registry
        .add_leaf_device(
            "leaf-thumb",
            NewAuth::X509Thumbprint {
                primary: sha256_a.clone(),
                secondary: Some(sha1_b.clone()),
            },
        )
        .unwrap();
    assert!(none.is_none());
    assert_eq!(
        thumb_record.auth,
        Auth::X509Thumbprint {
            primary: sha256_a.to_lowercase(),
            secondary: Some(sha1_b.clone())
        }
    );
    registry
        .add_leaf_device("leaf-ca", NewAuth::X509Ca)
        .unwrap();

    // Refusals.
    assert!(matches!(
        registry.add_leaf_device("leaf-1", NewAuth::Sas),
        Err(RegistryError::Duplicate(_))
    ));
    assert!(matches!(
        registry.add_leaf_device(EDGE, NewAuth::Sas),
        Err(RegistryError::Duplicate(_))
    ));
    assert!(matches!(
        registry.add_external_module("filter", NewAuth::Sas),
        Err(RegistryError::Duplicate(_))
    ));
    assert!(matches!(
        registry.ensure_module("ext"),
        Err(RegistryError::KindConflict { .. })
    ));
    for bad in ["", "a/b", "é", "a b", &"x".repeat(129)] {
        assert!(
            matches!(
                registry.add_leaf_device(bad, NewAuth::Sas),
                Err(RegistryError::InvalidId { .. })
            ),
            "leaf id {bad:?} accepted"
        );
        assert!(
            matches!(
                registry.ensure_module(bad),
                Err(RegistryError::InvalidId { .. })
            ),
            "module id {bad:?} accepted"
        );
    }
    assert!(matches!(
        registry.add_external_module("$mine", NewAuth::Sas),
        Err(RegistryError::InvalidId { .. })
    ));
    assert!(matches!(
        registry.add_leaf_device("a;b", NewAuth::Sas),
        Err(RegistryError::InvalidId { .. })
    ));
    assert!(matches!(
        registry.add_leaf_device(
            "leaf-bad-thumb",
            NewAuth::X509Thumbprint {
                primary: "xyz".into(),
                secondary: None
            }
        ),
        Err(RegistryError::InvalidThumbprint(_))
    ));
    assert!(matches!(
        registry.add_external_module("ext-ca", NewAuth::X509Ca),
        Err(RegistryError::Unsupported(_))
    ));
    assert!(
        registry.get(&Identity::device("leaf-bad-thumb")).is_none(),
        "refused identity kept"
    );

    // The file: private, no secrets in it.
    let file = dir.join("registry.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().mode() & 0o777,
        0o600,
        "registry file mode"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    for key in [
        &primary["SharedAccessKey"],
        &secondary["SharedAccessKey"],
        &ext["SharedAccessKey"],
    ] {
        assert!(
            !text.contains(key.as_str()),
            "a key is in the registry file"
        );
    }

    // Reopen from disk: the same records, and the keys still work.
    let before = registry.list();
    assert_eq!(before.len(), 8);
    drop(registry);
    let registry = open(dir, &store);
    assert_eq!(registry.list(), before, "records changed across reopening");
    assert_eq!(registry.get(&leaf).unwrap(), leaf_record);
    assert_eq!(registry.ensure_module("filter").unwrap(), filter);

    // SAS: tokens computed independently from the connection string's keys.
    let leaf_sr = "hub.example.net%2Fdevices%2Fleaf-1";
    let auth = |identity: &Identity, token: &str, now: u64| {
        registry.authenticate_sas(identity, token, now)
    };
    let t = token(&primary["SharedAccessKey"], leaf_sr, NOW + 3600);
    assert_eq!(
        auth(&leaf, &t, NOW).unwrap(),
        AuthMethod::Sas {
            key: KeySlot::Primary,
            device_key: false,
            expiry: NOW + 3600
        }
    );
    let t = token(&secondary["SharedAccessKey"], leaf_sr, NOW + 3600);
    assert!(
        matches!(
            auth(&leaf, &t, NOW),
            Ok(AuthMethod::Sas {
                key: KeySlot::Secondary,
                ..
            })
        ),
        "secondary key"
    );
    // The gateway host name is an accepted audience too, in any case.
    let t = token(
        &primary["SharedAccessKey"],
        "GW.local%2Fdevices%2Fleaf-1",
        NOW + 60,
    );
    assert!(auth(&leaf, &t, NOW).is_ok(), "gateway audience");
    // Wrong key.
    let t = token(&other_key, leaf_sr, NOW + 3600);
    assert!(
        matches!(auth(&leaf, &t, NOW), Err(AuthError::BadSignature)),
        "wrong key"
    );
    let t = token(&BASE64.encode([7u8; 32]), leaf_sr, NOW + 3600);
    assert!(
        matches!(auth(&leaf, &t, NOW), Err(AuthError::BadSignature)),
        "random key"
    );
    // Expired: se + 300 s of skew before now.
    let t = token(&primary["SharedAccessKey"], leaf_sr, NOW - 301);
    assert!(
        matches!(auth(&leaf, &t, NOW), Err(AuthError::Expired { .. })),
        "expired"
    );
    let t = token(&primary["SharedAccessKey"], leaf_sr, NOW - 300);
    assert!(auth(&leaf, &t, NOW).is_ok(), "within the clock skew");
    // Wrong audience: another hub, another device, a module path.
    for sr in [
        "other.example.net%2Fdevices%2Fleaf-1",
        "hub.example.net%2Fdevices%2Fleaf-2",
        "hub.example.net%2Fdevices%2Fleaf-1%2Fmodules%2Fm",
        "hub.example.net%2Fleaf-1",
    ] {
        let t = token(&primary["SharedAccessKey"], sr, NOW + 60);
        assert!(
            matches!(auth(&leaf, &t, NOW), Err(AuthError::WrongAudience(_))),
            "audience {sr}"
        );
    }
    // A token for another identity: leaf-2's audience signed with leaf-1's key.
    let t = token(
        &primary["SharedAccessKey"],
        "hub.example.net%2Fdevices%2Fleaf-2",
        NOW + 60,
    );
    assert!(
        matches!(auth(&other_leaf, &t, NOW), Err(AuthError::BadSignature)),
        "leaf-1's key for leaf-2"
    );
    let t = token(&other_key, "hub.example.net%2Fdevices%2Fleaf-2", NOW + 60);
    assert!(auth(&other_leaf, &t, NOW).is_ok());
    assert!(
        matches!(auth(&leaf, &t, NOW), Err(AuthError::WrongAudience(_))),
        "leaf-2's token as leaf-1"
    );
    // Unknown identities, malformed tokens, identities without SAS.
    let t = token(
        &primary["SharedAccessKey"],
        "hub.example.net%2Fdevices%2Fnobody",
        NOW + 60,
    );
    assert!(matches!(
        auth(&Identity::device("nobody"), &t, NOW),
        Err(AuthError::UnknownIdentity(_))
    ));
    assert!(matches!(
        auth(&leaf, "Bearer x", NOW),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(auth(&leaf, "", NOW), Err(AuthError::Malformed(_))));
    let t = token(
        &primary["SharedAccessKey"],
        "hub.example.net%2Fdevices%2Fleaf-thumb",
        NOW + 60,
    );
    assert!(matches!(
        auth(&Identity::device("leaf-thumb"), &t, NOW),
        Err(AuthError::WrongAuthMethod { .. })
    ));
    // The external module.
    let ext_sr = "hub.example.net%2Fdevices%2Fedge1%2Fmodules%2Fext";
    let t = token(&ext["SharedAccessKey"], ext_sr, NOW + 60);
    assert!(auth(&external, &t, NOW).is_ok(), "external module");
    assert!(matches!(
        auth(&Identity::module(EDGE, "filter"), &t, NOW),
        Err(AuthError::WrongAudience(_))
    ));

    // Agent-managed keys sign inside the store: token_for and sign agree.
    let filter_id = Identity::module(EDGE, "filter");
    let t = registry
        .token_for(&filter_id, Duration::from_secs(3600), NOW)
        .unwrap();
    assert!(
        t.starts_with(
            "SharedAccessSignature sr=hub.example.net%2Fdevices%2Fedge1%2Fmodules%2Ffilter&sig="
        ),
        "{t}"
    );
    assert!(t.ends_with(&format!("&se={}", NOW + 3600)), "{t}");
    assert!(matches!(
        auth(&filter_id, &t, NOW),
        Ok(AuthMethod::Sas {
            key: KeySlot::Primary,
            device_key: false,
            ..
        })
    ));
    let sig = t.split("&sig=").nth(1).unwrap().split('&').next().unwrap();
    let sig = verge_identity::sas::url_decode(sig);
    let signed = registry
        .sign(
            &filter_id,
            format!(
                "hub.example.net%2Fdevices%2Fedge1%2Fmodules%2Ffilter\n{}",
                NOW + 3600
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(
        BASE64.encode(signed),
        sig,
        "sign() and token_for() disagree"
    );
    let hub_module_token = registry
        .token_for(&hub_module.identity, Duration::from_secs(60), NOW)
        .unwrap();
    assert!(
        hub_module_token.contains("sr=hub.example.net%2Fdevices%2Fedge1%2Fmodules%2F%2524edgeHub&"),
        "{hub_module_token}"
    );
    assert!(
        auth(&hub_module.identity, &hub_module_token, NOW).is_ok(),
        "$edgeHub token"
    );
    let edge_token = registry
        .token_for(&edge.identity, Duration::from_secs(60), NOW)
        .unwrap();
    assert!(
        auth(&edge.identity, &edge_token, NOW).is_ok(),
        "edge device token"
    );
    // The edge device's key does not sign for its modules unless allowed.
    let device_token_for_module = edge_token.clone();
    assert!(matches!(
        auth(&filter_id, &device_token_for_module, NOW),
        Err(AuthError::WrongAudience(_))
    ));
    assert!(matches!(
        registry.token_for(&Identity::device("leaf-ca"), Duration::from_secs(1), NOW),
        Err(RegistryError::NotSas(_))
    ));
    assert!(matches!(
        registry.sign(&Identity::device("nobody"), b"x"),
        Err(RegistryError::UnknownIdentity(_))
    ));

    // X.509.
    let thumb = Identity::device("leaf-thumb");
    assert_eq!(
        registry.authenticate_x509(&thumb, cert_a, None).unwrap(),
        AuthMethod::X509Thumbprint {
            key: KeySlot::Primary
        }
    );
    assert_eq!(
        registry.authenticate_x509(&thumb, cert_b, None).unwrap(),
        AuthMethod::X509Thumbprint {
            key: KeySlot::Secondary
        }
    );
    assert!(matches!(
        registry.authenticate_x509(&thumb, b"certificate C", None),
        Err(AuthError::ThumbprintMismatch)
    ));
    let ca = Identity::device("leaf-ca");
    assert_eq!(
        registry
            .authenticate_x509(&ca, b"any", Some("leaf-ca"))
            .unwrap(),
        AuthMethod::X509Ca
    );
    assert!(matches!(
        registry.authenticate_x509(&ca, b"any", Some("leaf-1")),
        Err(AuthError::CommonNameMismatch)
    ));
    assert!(matches!(
        registry.authenticate_x509(&ca, b"any", None),
        Err(AuthError::CommonNameMismatch)
    ));
    assert!(matches!(
        registry.authenticate_x509(&leaf, cert_a, None),
        Err(AuthError::WrongAuthMethod { .. })
    ));

    // Remove: the keys go, authentication fails, and it stays removed after reopening.
    let (leaf_primary, leaf_secondary) = sas_labels(&leaf_record);
    let removed = registry.remove(&leaf).unwrap().unwrap();
    assert_eq!(removed, leaf_record);
    assert!(
        !store.exists(&leaf_primary).unwrap() && !store.exists(&leaf_secondary).unwrap(),
        "keys survive removal"
    );
    let t = token(&primary["SharedAccessKey"], leaf_sr, NOW + 60);
    assert!(
        matches!(auth(&leaf, &t, NOW), Err(AuthError::UnknownIdentity(_))),
        "removed identity authenticates"
    );
    assert!(registry.remove(&leaf).unwrap().is_none());
    drop(registry);
    let registry = open(dir, &store);
    assert!(
        registry.get(&leaf).is_none(),
        "removed identity back after reopening"
    );
    // Re-added: a new generation and new keys; the old token no longer works.
    let (again, new_credentials) = registry.add_leaf_device("leaf-1", NewAuth::Sas).unwrap();
    assert_ne!(again.generation_id, leaf_record.generation_id);
    assert!(
        matches!(
            registry.authenticate_sas(&leaf, &t, NOW),
            Err(AuthError::BadSignature)
        ),
        "old key works after re-adding"
    );
    let new_key = fields(new_credentials.unwrap().primary.expose())["SharedAccessKey"].clone();
    assert!(
        registry
            .authenticate_sas(&leaf, &token(&new_key, leaf_sr, NOW + 60), NOW)
            .is_ok()
    );

    // A managed identity whose keys vanished from the store gets new ones.
    let (fp, fs) = sas_labels(&filter);
    store.delete(&fp).unwrap();
    let renewed = registry.ensure_module("filter").unwrap();
    assert_ne!(renewed.generation_id, filter.generation_id);
    assert!(
        !store.exists(&fs).unwrap(),
        "stale secondary key left behind"
    );
    let t = registry
        .token_for(&filter_id, Duration::from_secs(60), NOW)
        .unwrap();
    assert!(registry.authenticate_sas(&filter_id, &t, NOW).is_ok());

    // Device keys for modules, when the registry allows them.
    drop(registry);
    let registry = open(dir, &store).with_device_key_for_modules(true);
    assert!(matches!(
        registry.authenticate_sas(&filter_id, &device_token_for_module, NOW),
        Ok(AuthMethod::Sas {
            device_key: true,
            ..
        })
    ));

    // Clean up the store for the next run.
    for record in registry.list() {
        registry.remove(&record.identity).unwrap();
    }
    assert!(registry.list().is_empty());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
