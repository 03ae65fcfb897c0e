//! IoT Edge's SAS conformance vectors (`sas_tokens.json`), every group, case by case.
//!
//! How the C# tests map onto Verge:
//! - `signature_vectors`, `wrong_string_to_sign`: signing through a key store ([`sas::sign`],
//!   [`sas::sign_audience`]) and verifying ([`SasToken::verify_signature`]).
//! - `parse`: edge-util's `SharedAccessSignature.Parse(hubName, token)` does three things that
//!   Verge keeps apart: the hub name check is [`AudienceRules::new`], the parse is
//!   [`SasToken::parse`], and the expiry check at parse time is [`SasToken::is_expired`]. A
//!   `null` token is the empty string (Rust has no null string).
//! - `expiry`: [`SasToken::is_expired`] at `parsed_at` (must pass, as the C# constructor
//!   checks), then at `checked_at`.
//! - `authenticate_with_rule`: `Authenticate(rule)` is expiry, then
//!   [`SasToken::verify_signature`] with the HMACs of the rule's keys. A `null` rule and a rule
//!   with `null` keys both leave no key to match: Verge answers [`AuthError::BadSignature`]
//!   (the C# throws `ArgumentNullException` for the null rule).
//! - `token_helper`: [`sas::audience`], [`sas::expires_on`], [`sas::format_token`].
//! - `edge_hub_audience`: [`AudienceRules::scope`].
//! - `edge_hub_authentication`: [`sas::authenticate`] (expiry, audience, keys, device keys for
//!   modules, which all cases allow), with the keys of `device_scope`. Edge Hub's device-scope
//!   *cache* is upstream machinery Verge does not have (its registry is local and always
//!   current), so the harness plays it: `authenticate` retries once with
//!   `device_scope_after_refresh` after a signature mismatch, `reauthenticate` does not. An
//!   identity that is not `enabled` with `symmetric_key` has no SAS keys in Verge: the harness
//!   answers `UnknownIdentity` for it. The nested-edge cases authenticate the actor (the parent's
//!   `$edgeHub`) with its own token; checking that the actor is in the target's `auth_chain` is
//!   nested-edge authorisation, which Verge does not implement, so the harness only asserts the
//!   chain data is consistent.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use verge_identity::sas::{self, AudienceRules, SasError, SasToken, url_decode, url_encode};
use verge_identity::{AuthError, AuthMethod, FileKeyStore, KeySlot, KeyStore};
use verge_message::Identity;

use common::{TempDir, software_hmac};

fn vectors() -> Value {
    let path = verge_tests::conformance_dir().join("sas_tokens.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn str_of<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {case}"))
}

fn u64_of(case: &Value, key: &str) -> u64 {
    match &case[key] {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("{key} is not a number: {other}"),
    }
}

fn cases(group: &Value) -> &Vec<Value> {
    group
        .as_array()
        .or_else(|| group["cases"].as_array())
        .unwrap_or_else(|| panic!("no cases in {group}"))
}

fn name(case: &Value) -> String {
    let test = case["test"]
        .as_str()
        .or(case["name"].as_str())
        .unwrap_or("case");
    format!("{test} (line {})", case["line"])
}

fn identity_of(value: &Value) -> Identity {
    let device = str_of(value, "device_id");
    match value["module_id"].as_str() {
        Some(module) => Identity::module(device, module),
        None => Identity::device(device),
    }
}

/// How many cases each group has, from the file's own `counts`.
fn expected_count(v: &Value, group: &str) -> usize {
    usize::try_from(v["counts"][group].as_u64().unwrap()).unwrap()
}

#[test]
fn every_group_is_exercised() {
    let v = vectors();
    let known = [
        "signature_vectors",
        "parse",
        "expiry",
        "authenticate_with_rule",
        "token_helper",
        "edge_hub_audience",
        "edge_hub_authentication",
    ];
    let counts = v["counts"].as_object().unwrap();
    for group in counts.keys() {
        assert!(
            known.contains(&group.as_str()),
            "group {group} has no test here"
        );
    }
    let sections = v.as_object().unwrap();
    for section in sections.keys() {
        assert!(
            known.contains(&section.as_str())
                || [
                    "description",
                    "sources",
                    "conventions",
                    "counts",
                    "wrong_string_to_sign"
                ]
                .contains(&section.as_str()),
            "section {section} has no test here"
        );
    }
    for group in known {
        let n = if group == "token_helper" {
            ["build_audience", "build_expires_on", "build_sas_token"]
                .iter()
                .map(|k| v[group][k].as_array().unwrap().len())
                .sum()
        } else {
            cases(&v[group]).len()
        };
        assert_eq!(n, expected_count(&v, group), "{group}: case count");
    }
}

#[test]
fn signature_vectors() {
    let v = vectors();
    let dir = TempDir::new("sas-vectors");
    let store = FileKeyStore::open(dir.path()).unwrap();
    for (i, case) in cases(&v["signature_vectors"]).iter().enumerate() {
        let name = name(case);
        let key = BASE64.decode(str_of(case, "key_base64")).unwrap();
        let label = format!("vector/{i}");
        store.import_hmac_key(&label, &key).unwrap();
        let resource = str_of(case, "resource_uri");
        let encoded = str_of(case, "encoded_resource_uri");
        let expiry = u64_of(case, "expiry");
        assert_eq!(url_decode(encoded), resource, "{name}: decoded resource");
        assert_eq!(
            sas::string_to_sign(encoded, expiry),
            str_of(case, "string_to_sign"),
            "{name}: string to sign"
        );
        let expected_sig = str_of(case, "expected_signature");
        let mac = store
            .hmac_sha256(&label, str_of(case, "string_to_sign").as_bytes())
            .unwrap();
        assert_eq!(BASE64.encode(mac), expected_sig, "{name}: signature");
        // The whole token, signed through the store, for the sr exactly as written.
        assert_eq!(
            sas::sign_audience(&store, &label, encoded, expiry).unwrap(),
            str_of(case, "token"),
            "{name}: token"
        );
        if url_encode(resource) == encoded {
            assert_eq!(
                sas::sign(&store, &label, resource, expiry).unwrap(),
                str_of(case, "token"),
                "{name}: token from the raw resource"
            );
        } else {
            // Lower-case escapes: WebUtility writes upper case, so signing the raw resource
            // gives another (equally valid) token; the verifier signs sr as written.
            assert_ne!(
                sas::sign(&store, &label, resource, expiry).unwrap(),
                str_of(case, "token"),
                "{name}: escape case must matter"
            );
        }
        // It verifies with the key, and not with another.
        let token = SasToken::parse(str_of(case, "token")).unwrap();
        assert_eq!(token.resource_raw(), encoded, "{name}: sr kept raw");
        assert_eq!(token.audience(), resource, "{name}: audience");
        assert_eq!(token.expiry(), expiry, "{name}: se");
        let data = token.string_to_sign();
        assert_eq!(
            token
                .verify_signature(&[software_hmac(&key, data.as_bytes())])
                .unwrap(),
            KeySlot::Primary,
            "{name}: verify"
        );
        assert!(
            token
                .verify_signature(&[software_hmac(b"other key", data.as_bytes())])
                .is_err(),
            "{name}: verifies with another key"
        );
    }

    // Signing the raw resource by mistake gives another signature, which does not verify.
    let wrong = &v["wrong_string_to_sign"];
    let reference = &cases(&v["signature_vectors"])[0];
    let key = BASE64.decode(str_of(reference, "key_base64")).unwrap();
    let mac = software_hmac(&key, str_of(wrong, "string_to_sign").as_bytes());
    assert_eq!(
        BASE64.encode(mac),
        str_of(wrong, "signature"),
        "wrong_string_to_sign"
    );
    assert_ne!(
        str_of(wrong, "signature"),
        str_of(reference, "expected_signature")
    );
    let forged = sas::format_token(
        str_of(reference, "encoded_resource_uri"),
        str_of(wrong, "signature"),
        u64_of(reference, "expiry"),
        None,
    );
    let forged = SasToken::parse(&forged).unwrap();
    let good = software_hmac(&key, forged.string_to_sign().as_bytes());
    assert!(
        matches!(
            forged.verify_signature(&[good]),
            Err(AuthError::BadSignature)
        ),
        "wrong_string_to_sign: a signature over the raw resource verifies"
    );
}

/// A Verge error as the vectors' reason label.
fn reason_of_sas_error(e: &SasError) -> String {
    match e {
        SasError::Empty => "missing_token".into(),
        SasError::MissingHubName => "missing_hub_name".into(),
        SasError::Malformed(_) => "malformed".into(),
        SasError::MissingField(field) => format!("missing_field:{field}"),
        other => format!("other: {other}"),
    }
}

#[test]
fn parse() {
    let v = vectors();
    for case in cases(&v["parse"]) {
        let name = name(case);
        let now = u64_of(case, "now");
        let outcome = AudienceRules::new(case["iothub_name"].as_str().unwrap_or(""))
            .and_then(|_| SasToken::parse(case["token"].as_str().unwrap_or("")))
            .map_err(|e| reason_of_sas_error(&e))
            .and_then(|t| {
                if t.is_expired(now) {
                    Err("expired".to_owned())
                } else {
                    Ok(t)
                }
            });
        match (str_of(case, "expected"), outcome) {
            ("accept", Ok(_)) => {}
            ("reject", Err(reason)) => {
                assert_eq!(reason, str_of(case, "reason"), "{name}: reason");
            }
            (expected, outcome) => panic!("{name}: expected {expected}, got {outcome:?}"),
        }
    }
}

#[test]
fn expiry() {
    let v = vectors();
    for case in cases(&v["expiry"]) {
        let name = name(case);
        let token = SasToken::parse(str_of(case, "token")).unwrap();
        assert!(
            !token.is_expired(u64_of(case, "parsed_at")),
            "{name}: expired when parsed"
        );
        assert_eq!(
            token.is_expired(u64_of(case, "checked_at")),
            case["expired"].as_bool().unwrap(),
            "{name}: expired"
        );
    }
}

#[test]
fn authenticate_with_rule() {
    let v = vectors();
    for case in cases(&v["authenticate_with_rule"]) {
        let name = name(case);
        let token = SasToken::parse(str_of(case, "token")).unwrap();
        if case.get("parsed_at").is_some() {
            assert!(
                !token.is_expired(u64_of(case, "parsed_at")),
                "{name}: expired when parsed"
            );
        }
        let data = token.string_to_sign();
        let key = |k: &str| case["rule"].get(k).and_then(Value::as_str);
        let mac = |key: &str| software_hmac(&BASE64.decode(key).unwrap(), data.as_bytes());
        let macs = match (key("primaryKey"), key("secondaryKey")) {
            (Some(primary), Some(secondary)) => vec![mac(primary), mac(secondary)],
            (None, None) => Vec::new(),
            _ => panic!("{name}: a rule with only one key is not mapped"),
        };
        let outcome = if token.is_expired(u64_of(case, "now")) {
            Err("expired")
        } else {
            match token.verify_signature(&macs) {
                Ok(slot) => Ok(slot),
                Err(AuthError::BadSignature) => Err("signature_mismatch"),
                Err(e) => panic!("{name}: unexpected {e}"),
            }
        };
        let expected_slot = if name.contains("SecondaryKey") {
            KeySlot::Secondary
        } else {
            KeySlot::Primary
        };
        match (str_of(case, "expected"), outcome) {
            ("accept", Ok(slot)) => assert_eq!(slot, expected_slot, "{name}: key"),
            ("reject", Err(reason)) => {
                let expected = match str_of(case, "reason") {
                    // No rule: no key to match (see the module doc).
                    "missing_rule" => "signature_mismatch",
                    other => other,
                };
                assert_eq!(reason, expected, "{name}: reason");
            }
            (expected, outcome) => panic!("{name}: expected {expected}, got {outcome:?}"),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` as Unix seconds.
fn parse_utc(text: &str) -> u64 {
    let num = |range: std::ops::Range<usize>| -> i64 { text[range].parse().unwrap() };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss) = (num(11..13), num(14..16), num(17..19));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).unwrap()
}

#[test]
fn token_helper() {
    let v = vectors();
    let helper = &v["token_helper"];
    for case in helper["build_audience"].as_array().unwrap() {
        let name = format!("build_audience line {}", case["line"]);
        assert_eq!(
            sas::audience(
                str_of(case, "hostname"),
                str_of(case, "device_id"),
                case["module_id"].as_str()
            ),
            str_of(case, "expected"),
            "{name}"
        );
    }
    for case in helper["build_expires_on"].as_array().unwrap() {
        let name = format!("build_expires_on line {}", case["line"]);
        let start = UNIX_EPOCH + Duration::from_secs(parse_utc(str_of(case, "start_utc")));
        let ttl = Duration::from_secs(u64_of(case, "ttl_secs"));
        assert_eq!(
            sas::expires_on(start, ttl).to_string(),
            str_of(case, "expected"),
            "{name}"
        );
    }
    for case in helper["build_sas_token"].as_array().unwrap() {
        let name = format!("build_sas_token line {}", case["line"]);
        assert_eq!(
            sas::format_token(
                str_of(case, "audience"),
                str_of(case, "signature"),
                str_of(case, "expiry"),
                None
            ),
            str_of(case, "expected"),
            "{name}"
        );
    }
}

#[test]
fn edge_hub_audience() {
    let v = vectors();
    for case in cases(&v["edge_hub_audience"]) {
        let name = name(case);
        let rules = AudienceRules::new(str_of(case, "iothub_hostname"))
            .unwrap()
            .with_gateway_host(str_of(case, "edgehub_hostname"));
        let identity = identity_of(&case["identity"]);
        assert_eq!(
            rules.scope(str_of(case, "audience"), &identity).is_some(),
            case["valid"].as_bool().unwrap(),
            "{name}"
        );
    }
}

/// The HMACs of `data` with an identity's keys in a device-scope snapshot.
fn scope_macs(scope: &Value, identity: &Identity, data: &[u8]) -> Result<Vec<[u8; 32]>, AuthError> {
    let entry = &scope["service_identities"][identity.to_string()];
    if entry.is_null() || entry["status"] != "enabled" || entry["auth_type"] != "symmetric_key" {
        return Err(AuthError::UnknownIdentity(identity.clone()));
    }
    Ok(["primary_key", "secondary_key"]
        .iter()
        .map(|k| software_hmac(&BASE64.decode(str_of(entry, k)).unwrap(), data))
        .collect())
}

fn reason_of_auth_error(e: &AuthError) -> &'static str {
    match e {
        AuthError::BadSignature => "signature_mismatch",
        AuthError::Expired { .. } => "expired",
        AuthError::UnknownIdentity(_) => "identity_disabled",
        AuthError::WrongAudience(_) => "wrong_audience",
        _ => "other",
    }
}

#[test]
fn edge_hub_authentication() {
    let v = vectors();
    for case in cases(&v["edge_hub_authentication"]) {
        let name = name(case);
        let rules = AudienceRules::new(str_of(case, "iothub_hostname"))
            .unwrap()
            .with_gateway_host(str_of(case, "edgehub_hostname"));
        let credentials = &case["credentials"];
        let identity = identity_of(&credentials["identity"]);
        let token = SasToken::parse(str_of(credentials, "token")).unwrap();
        let now = u64_of(case, "now");
        let attempt = |scope: &Value| {
            sas::authenticate(&token, &identity, &rules, now, true, |who, data| {
                scope_macs(scope, who, data)
            })
        };
        let mut outcome = attempt(&case["device_scope"]);
        if matches!(outcome, Err(AuthError::BadSignature))
            && str_of(case, "operation") == "authenticate"
            && case.get("device_scope_after_refresh").is_some()
        {
            outcome = attempt(&case["device_scope_after_refresh"]);
        }
        // Nested edge: the actor authenticates as itself; the target's cached chain names it.
        if let Some(chain) = credentials["auth_chain"].as_str() {
            let actor_device = identity.device_id();
            assert!(
                chain.split(';').any(|hop| hop == actor_device),
                "{name}: the auth chain does not contain the actor"
            );
            let target = chain.split(';').next().unwrap();
            assert_eq!(
                case["device_scope"]["auth_chains"][target].as_str(),
                Some(chain),
                "{name}: cached chain of the target"
            );
        }
        match (str_of(case, "expected"), &outcome) {
            ("accept", Ok(AuthMethod::Sas { expiry, .. })) => {
                assert_eq!(*expiry, token.expiry(), "{name}: expiry");
            }
            ("reject", Err(e)) => {
                assert_eq!(
                    reason_of_auth_error(e),
                    str_of(case, "reason"),
                    "{name}: reason ({e})"
                );
            }
            (expected, outcome) => panic!("{name}: expected {expected}, got {outcome:?}"),
        }
    }
}

#[test]
fn edge_hub_authentication_module_cases_use_the_expected_key() {
    // The two module cases that allow the device's key: which key actually signed.
    let v = vectors();
    for case in cases(&v["edge_hub_authentication"]) {
        let name = name(case);
        let credentials = &case["credentials"];
        let identity = identity_of(&credentials["identity"]);
        if identity.module_id().is_none() || credentials["auth_chain"].is_string() {
            continue;
        }
        let rules = AudienceRules::new(str_of(case, "iothub_hostname")).unwrap();
        let token = SasToken::parse(str_of(credentials, "token")).unwrap();
        let scope = &case["device_scope"];
        let with_device_keys = sas::authenticate(
            &token,
            &identity,
            &rules,
            u64_of(case, "now"),
            true,
            |who, data| scope_macs(scope, who, data),
        );
        let without = sas::authenticate(
            &token,
            &identity,
            &rules,
            u64_of(case, "now"),
            false,
            |who, data| scope_macs(scope, who, data),
        );
        match str_of(case, "test") {
            "AuthenticateTest_Module" => {
                assert!(
                    matches!(
                        with_device_keys,
                        Ok(AuthMethod::Sas {
                            device_key: false,
                            ..
                        })
                    ),
                    "{name}"
                );
                assert!(without.is_ok(), "{name}: own key needs no device keys");
            }
            "AuthenticateTest_ModuleWithDeviceToken" => {
                assert!(
                    matches!(
                        with_device_keys,
                        Ok(AuthMethod::Sas {
                            device_key: true,
                            ..
                        })
                    ),
                    "{name}"
                );
                assert!(
                    matches!(without, Err(AuthError::WrongAudience(_))),
                    "{name}: without device keys"
                );
            }
            "AuthenticateTest_ModuleWithDeviceKey" => {
                assert!(
                    matches!(
                        with_device_keys,
                        Ok(AuthMethod::Sas {
                            device_key: true,
                            ..
                        })
                    ),
                    "{name}"
                );
                assert!(
                    matches!(without, Err(AuthError::BadSignature)),
                    "{name}: without device keys"
                );
            }
            other => panic!("{name}: unexpected module case {other}"),
        }
    }
}

#[test]
fn reference_vector_through_the_registry_key_path() {
    // iotedge.md §4.5's vector, signed by a store-held key the way the workload API will.
    let dir = TempDir::new("sas-reference");
    let store: Arc<dyn KeyStore> = Arc::new(FileKeyStore::open(dir.path()).unwrap());
    let key: Vec<u8> = (0u8..32).collect();
    store.import_hmac_key("mod1/primary", &key).unwrap();
    let token = sas::sign(
        store.as_ref(),
        "mod1/primary",
        "myhub.azure-devices.net/devices/dev1/modules/mod1",
        1_700_000_000,
    )
    .unwrap();
    assert_eq!(
        token,
        "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fmod1&sig=kA6xjFLkZvk4Cdh0nD8uWAzassq6PB47f7BepMMtmlY%3D&se=1700000000"
    );
}
