//! Shared access signature (SAS) tokens, as IoT Hub and IoT Edge write and check them.
//!
//! `SharedAccessSignature sr={URL-encoded resource}&sig={URL-encoded base64 HMAC}&se={Unix
//! seconds}[&skn={policy}]`
//!
//! - The signature is `base64(HMAC-SHA256(key, sr + "\n" + se))`, over `sr` exactly as it is
//!   written in the token (still URL-encoded, escape case kept) and `se` as written.
//! - Parsing ([`SasToken::parse`]) follows edge-util's `SharedAccessSignature`: the word
//!   `SharedAccessSignature`, exactly one whitespace character, then `&`-separated `name=value`
//!   fields in any order, names ignoring case, each at most once; `sr`, `sig` and `se` are
//!   required, `skn` optional, others ignored. Values other than `sr` are URL-decoded. `se` must
//!   be a whole number of seconds (edge-util would also take a decimal).
//! - A token is expired when `se` + [`MAX_CLOCK_SKEW_SECS`] is before now.
//! - Authentication ([`authenticate`]) checks expiry, then the audience ([`audience`]), then
//!   compares the signature in constant time with the HMACs of the primary and secondary keys.
//!
//! Nothing here logs, and `Debug` of a token hides its signature: a token is a bearer credential.
//! URL encoding is `WebUtility`'s ([`url`]).

pub mod audience;
pub mod url;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use subtle::ConstantTimeEq;
use verge_message::Identity;

use crate::auth::{AuthError, AuthMethod, KeySlot};
use crate::keys::{KeyError, KeyStore};
pub use audience::{AudienceRules, TokenScope, audience, audience_for};
pub use url::{url_decode, url_encode};

/// The word before a token's fields.
pub const PREFIX: &str = "SharedAccessSignature";

/// How long after `se` a token is still accepted: IoT Edge's `MaxClockSkew`, 5 minutes.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Longest piece of a rejected token quoted in an error.
const QUOTE_MAX: usize = 64;

/// Why a SAS token (or the configuration to check one) is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    /// Empty or only whitespace.
    #[error("no SAS token")]
    Empty,
    /// Not `SharedAccessSignature`, one whitespace character, then fields.
    #[error("malformed SAS token: {0}")]
    Malformed(&'static str),
    /// A required field is missing.
    #[error("SAS token has no {0} field")]
    MissingField(&'static str),
    /// A field appears twice.
    #[error("SAS token has the field {0:?} twice")]
    DuplicateField(String),
    /// `se` is not a whole number of seconds.
    #[error("SAS token expiry {0:?} is not a whole number of seconds")]
    InvalidExpiry(String),
    /// No IoT Hub host name to check audiences against.
    #[error("no IoT Hub host name")]
    MissingHubName,
}

/// A parsed SAS token.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    resource: String,
    signature: String,
    expiry_text: String,
    expiry: u64,
    key_name: Option<String>,
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken")
            .field("resource", &self.resource)
            .field("expiry", &self.expiry)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl SasToken {
    /// Parses a token. Any input gives a token or a [`SasError`]; nothing panics.
    pub fn parse(token: &str) -> Result<Self, SasError> {
        if token.trim().is_empty() {
            return Err(SasError::Empty);
        }
        let mut parts = token.split(char::is_whitespace);
        let (Some(PREFIX), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SasError::Malformed(
                "expected \"SharedAccessSignature\", one whitespace character, then the fields",
            ));
        };
        let mut resource = None;
        let mut signature = None;
        let mut expiry = None;
        let mut key_name = None;
        for field in fields.split('&').filter(|f| !f.is_empty()) {
            let (name, value) = field
                .split_once('=')
                .ok_or(SasError::Malformed("a field has no '='"))?;
            let slot = if name.eq_ignore_ascii_case("sr") {
                // Kept as written: it is what was signed.
                set_once(&mut resource, name, value.to_owned())?;
                continue;
            } else if name.eq_ignore_ascii_case("sig") {
                &mut signature
            } else if name.eq_ignore_ascii_case("se") {
                &mut expiry
            } else if name.eq_ignore_ascii_case("skn") {
                &mut key_name
            } else {
                continue;
            };
            set_once(slot, name, url_decode(value))?;
        }
        let signature = signature.ok_or(SasError::MissingField("sig"))?;
        let expiry_text = expiry.ok_or(SasError::MissingField("se"))?;
        let resource = resource.ok_or(SasError::MissingField("sr"))?;
        let expiry = parse_seconds(&expiry_text)
            .ok_or_else(|| SasError::InvalidExpiry(quote(&expiry_text)))?;
        Ok(Self {
            resource,
            signature,
            expiry_text,
            expiry,
            key_name,
        })
    }

    /// `sr` as written in the token (URL-encoded).
    pub fn resource_raw(&self) -> &str {
        &self.resource
    }

    /// `sr` URL-decoded: the audience, `{host}/devices/{d}[/modules/{m}]`.
    pub fn audience(&self) -> String {
        url_decode(&self.resource)
    }

    /// `se`: when the token expires, in Unix seconds.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    /// `skn`: the policy (key) name, for hub-level policies.
    pub fn key_name(&self) -> Option<&str> {
        self.key_name.as_deref()
    }

    /// What the signature covers: `sr` and `se` as written, joined by a newline.
    pub fn string_to_sign(&self) -> String {
        string_to_sign(&self.resource, &self.expiry_text)
    }

    /// Whether the token is expired at `now` (Unix seconds), allowing for clock skew.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expiry.saturating_add(MAX_CLOCK_SKEW_SECS) < now
    }

    /// Compares the signature, in constant time, with the HMACs of an identity's keys over
    /// [`string_to_sign`](Self::string_to_sign): `macs[0]` the primary key's, `macs[1]` the
    /// secondary key's. A signature that is not the base64 of 32 bytes matches nothing.
    pub fn verify_signature(&self, macs: &[[u8; 32]]) -> Result<KeySlot, AuthError> {
        let Ok(signature) = BASE64.decode(self.signature.as_bytes()) else {
            return Err(AuthError::BadSignature);
        };
        let Ok(signature) = <[u8; 32]>::try_from(signature.as_slice()) else {
            return Err(AuthError::BadSignature);
        };
        for (mac, slot) in macs.iter().zip([KeySlot::Primary, KeySlot::Secondary]) {
            if bool::from(mac.ct_eq(&signature)) {
                return Ok(slot);
            }
        }
        Err(AuthError::BadSignature)
    }
}

fn set_once(slot: &mut Option<String>, name: &str, value: String) -> Result<(), SasError> {
    if slot.is_some() {
        return Err(SasError::DuplicateField(quote(name)));
    }
    *slot = Some(value);
    Ok(())
}

/// A whole, non-negative number of seconds.
fn parse_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// At most [`QUOTE_MAX`] characters of untrusted text, for an error message.
fn quote(text: &str) -> String {
    text.chars().take(QUOTE_MAX).collect()
}

/// What a token's signature covers: `sr` as written in the token (URL-encoded), a newline, and
/// `se`.
pub fn string_to_sign(sr_raw: &str, se: impl fmt::Display) -> String {
    format!("{sr_raw}\n{se}")
}

/// A token: `sr` (already URL-encoded) as given, the base64 signature URL-encoded, then `se` and
/// the optional `skn`. This is `SasTokenHelper.BuildSasToken`.
pub fn format_token(
    sr_raw: &str,
    signature_base64: &str,
    se: impl fmt::Display,
    key_name: Option<&str>,
) -> String {
    let mut token = format!(
        "{PREFIX} sr={sr_raw}&sig={}&se={se}",
        url_encode(signature_base64)
    );
    if let Some(key_name) = key_name {
        token.push_str("&skn=");
        token.push_str(&url_encode(key_name));
    }
    token
}

/// The expiry of a token made at `start` that lives `ttl`: Unix seconds (0 before 1970).
pub fn expires_on(start: SystemTime, ttl: Duration) -> u64 {
    start
        .checked_add(ttl)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// A token for `resource_uri` (not yet URL-encoded, e.g.
/// `myhub.azure-devices.net/devices/dev1/modules/mod1`) expiring at `expiry`, signed by the store
/// with HMAC key `label`.
pub fn sign(
    store: &dyn KeyStore,
    label: &str,
    resource_uri: &str,
    expiry: u64,
) -> Result<String, KeyError> {
    sign_audience(store, label, &url_encode(resource_uri), expiry)
}

/// A token for the already URL-encoded `sr` (from [`audience`]), signed by the store with HMAC
/// key `label`.
pub fn sign_audience(
    store: &dyn KeyStore,
    label: &str,
    sr_raw: &str,
    expiry: u64,
) -> Result<String, KeyError> {
    let mac = store.hmac_sha256(label, string_to_sign(sr_raw, expiry).as_bytes())?;
    Ok(format_token(sr_raw, &BASE64.encode(mac), expiry, None))
}

/// Authenticates `identity` with `token` at `now` (Unix seconds), as IoT Edge's
/// `DeviceScopeTokenAuthenticator` does:
///
/// 1. the token must not be expired (see [`SasToken::is_expired`]);
/// 2. its audience must be for `identity` under `rules` ([`AudienceRules::scope`]);
/// 3. its signature must match the HMAC of a key of the identity: `macs(identity, data)` gives
///    the HMACs of `data` with the identity's primary and secondary keys (computed by the key
///    store), or an error ([`AuthError::UnknownIdentity`], [`AuthError::WrongAuthMethod`],
///    [`AuthError::Store`]).
///
/// With `device_key_for_module`, a module may also present a token signed with its device's key,
/// for its own audience or for the device's (IoT Edge's `allowDeviceAuthForModule`); a
/// device-scoped token for a module is otherwise a wrong audience.
pub fn authenticate(
    token: &SasToken,
    identity: &Identity,
    rules: &AudienceRules,
    now: u64,
    device_key_for_module: bool,
    mut macs: impl FnMut(&Identity, &[u8]) -> Result<Vec<[u8; 32]>, AuthError>,
) -> Result<AuthMethod, AuthError> {
    if token.is_expired(now) {
        return Err(AuthError::Expired {
            expiry: token.expiry(),
            now,
        });
    }
    let audience = token.audience();
    let scope = rules
        .scope(&audience, identity)
        .ok_or_else(|| AuthError::WrongAudience(quote(&audience)))?;
    let device = identity
        .module_id()
        .is_some()
        .then(|| Identity::device(identity.device_id()));
    let data = token.string_to_sign();
    let sas = |key, device_key| AuthMethod::Sas {
        key,
        device_key,
        expiry: token.expiry(),
    };
    match (scope, device) {
        (TokenScope::Module, Some(device)) => {
            // A module without keys of its own (a child edge device's) may still prove itself
            // with its device's key.
            let own = match macs(identity, data.as_bytes()) {
                Ok(own) => token.verify_signature(&own),
                Err(e @ (AuthError::UnknownIdentity(_) | AuthError::WrongAuthMethod { .. })) => {
                    Err(e)
                }
                Err(e) => return Err(e),
            };
            match own {
                Ok(key) => return Ok(sas(key, false)),
                Err(e) if !device_key_for_module => return Err(e),
                Err(_) => {}
            }
            match macs(&device, data.as_bytes()) {
                Ok(device_macs) => token.verify_signature(&device_macs).map(|k| sas(k, true)),
                // The device is not a SAS identity here: the module's own keys were the only
                // candidates.
                Err(AuthError::UnknownIdentity(_) | AuthError::WrongAuthMethod { .. }) => {
                    Err(AuthError::BadSignature)
                }
                Err(e) => Err(e),
            }
        }
        (TokenScope::Device, Some(device)) => {
            if !device_key_for_module {
                return Err(AuthError::WrongAudience(quote(&audience)));
            }
            token
                .verify_signature(&macs(&device, data.as_bytes())?)
                .map(|key| sas(key, true))
        }
        (_, None) => token
            .verify_signature(&macs(identity, data.as_bytes())?)
            .map(|key| sas(key, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::hmac;

    fn mac(key: &[u8], data: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
        tag.as_ref().try_into().expect("32 bytes")
    }

    fn token(sr: &str, se: u64, key: &[u8]) -> String {
        let sig = BASE64.encode(mac(key, string_to_sign(sr, se).as_bytes()));
        format_token(sr, &sig, se, None)
    }

    #[test]
    fn parses_fields_in_any_order_and_case() {
        let t = SasToken::parse(
            "SharedAccessSignature SE=10&Sig=a%2Bb%3D&skn=pol%20x&sr=h%2Fdevices%2Fd",
        )
        .expect("valid");
        assert_eq!(t.expiry(), 10);
        assert_eq!(t.resource_raw(), "h%2Fdevices%2Fd");
        assert_eq!(t.audience(), "h/devices/d");
        assert_eq!(t.key_name(), Some("pol x"));
        assert_eq!(t.signature, "a+b=");
        assert_eq!(t.string_to_sign(), "h%2Fdevices%2Fd\n10");
    }

    #[test]
    fn any_single_whitespace_separates_the_prefix() {
        for sep in [" ", "\n", "\t", "\r"] {
            let t = format!("SharedAccessSignature{sep}sr=a&sig=b&se=1");
            assert!(SasToken::parse(&t).is_ok(), "{sep:?}");
        }
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, SasError)] = &[
            ("", SasError::Empty),
            (" \n ", SasError::Empty),
            ("test", SasError::Malformed("")),
            ("SharedAccessSignature", SasError::Malformed("")),
            (
                "SharedAccessSignature  sr=a&sig=b&se=1",
                SasError::Malformed(""),
            ),
            (
                "SharedAccessSignature sr=a&sig=b&se=1 ",
                SasError::Malformed(""),
            ),
            (
                " SharedAccessSignature sr=a&sig=b&se=1",
                SasError::Malformed(""),
            ),
            (
                "sharedaccesssignature sr=a&sig=b&se=1",
                SasError::Malformed(""),
            ),
            (
                "SharedAccessSignature sr=a&sig&se=1",
                SasError::Malformed(""),
            ),
            (
                "SharedAccessSignature sr=a&se=1",
                SasError::MissingField("sig"),
            ),
            (
                "SharedAccessSignature sr=a&sig=b",
                SasError::MissingField("se"),
            ),
            (
                "SharedAccessSignature sig=b&se=1",
                SasError::MissingField("sr"),
            ),
            (
                "SharedAccessSignature sr=a&sig=b&se=1&SE=2",
                SasError::DuplicateField("SE".into()),
            ),
            (
                "SharedAccessSignature sr=a&sr=a&sig=b&se=1",
                SasError::DuplicateField("sr".into()),
            ),
            (
                "SharedAccessSignature sr=a&sig=b&se=1.5",
                SasError::InvalidExpiry("1.5".into()),
            ),
            (
                "SharedAccessSignature sr=a&sig=b&se=-1",
                SasError::InvalidExpiry("-1".into()),
            ),
            (
                "SharedAccessSignature sr=a&sig=b&se=",
                SasError::InvalidExpiry(String::new()),
            ),
            (
                "SharedAccessSignature sr=a&sig=b&se=99999999999999999999999",
                SasError::InvalidExpiry("99999999999999999999999".into()),
            ),
        ];
        for (input, expected) in cases {
            match (SasToken::parse(input), expected) {
                (Err(SasError::Malformed(_)), SasError::Malformed(_)) => {}
                (Err(e), expected) => assert_eq!(&e, expected, "{input:?}"),
                (Ok(t), _) => panic!("{input:?} parsed as {t:?}"),
            }
        }
    }

    #[test]
    fn empty_fields_and_unknown_names_are_ignored() {
        let t = SasToken::parse("SharedAccessSignature &sr=a&&sig=b&x=y&se=1&").expect("valid");
        assert_eq!(t.expiry(), 1);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let pieces = [
            "SharedAccessSignature",
            " ",
            "\n",
            "sr",
            "sig",
            "se",
            "=",
            "&",
            "%",
            "%2",
            "é",
            "9",
            "+",
            "skn",
        ];
        // Every combination of three pieces, and some longer ones.
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let _ = SasToken::parse(&format!("{a}{b}{c}"));
                    let _ = SasToken::parse(&format!("SharedAccessSignature {a}{b}{c}=%&se=1"));
                }
            }
        }
    }

    #[test]
    fn debug_hides_the_signature() {
        let t = SasToken::parse("SharedAccessSignature sr=a&sig=SECRETSIG&se=1").expect("valid");
        assert!(!format!("{t:?}").contains("SECRETSIG"));
    }

    #[test]
    fn expiry_allows_five_minutes_of_skew() {
        let t = SasToken::parse("SharedAccessSignature sr=a&sig=b&se=1000").expect("valid");
        assert!(!t.is_expired(1000 + 300));
        assert!(t.is_expired(1000 + 301));
        let t = SasToken::parse(&format!("SharedAccessSignature sr=a&sig=b&se={}", u64::MAX))
            .expect("valid");
        assert!(!t.is_expired(u64::MAX));
    }

    #[test]
    fn signature_must_be_32_bytes_of_canonical_base64() {
        let key = [1u8; 32];
        let t = SasToken::parse(&token("a", 5, &key)).expect("valid");
        let good = mac(&key, b"a\n5");
        assert_eq!(t.verify_signature(&[good]).ok(), Some(KeySlot::Primary));
        assert_eq!(
            t.verify_signature(&[[0; 32], good]).ok(),
            Some(KeySlot::Secondary)
        );
        assert!(t.verify_signature(&[]).is_err());
        let short =
            SasToken::parse("SharedAccessSignature sr=a&sig=dGVzdA%3D%3D&se=5").expect("ok");
        assert!(short.verify_signature(&[good]).is_err());
        let not_base64 = SasToken::parse("SharedAccessSignature sr=a&sig=!!&se=5").expect("ok");
        assert!(not_base64.verify_signature(&[good]).is_err());
    }

    #[test]
    fn format_and_expiry_helpers() {
        assert_eq!(
            format_token("h%2Fdevices%2Fd", "a+b/c=", 7, Some("p x")),
            "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=a%2Bb%2Fc%3D&se=7&skn=p+x"
        );
        assert_eq!(
            expires_on(
                UNIX_EPOCH + Duration::from_secs(1_546_300_800),
                Duration::from_secs(3600)
            ),
            1_546_304_400
        );
        assert_eq!(
            expires_on(UNIX_EPOCH - Duration::from_secs(10), Duration::ZERO),
            0
        );
    }

    fn keys_of<'a>(
        table: &'a [(Identity, [u8; 32])],
    ) -> impl FnMut(&Identity, &[u8]) -> Result<Vec<[u8; 32]>, AuthError> + 'a {
        move |identity, data| {
            table
                .iter()
                .find(|(i, _)| i == identity)
                .map(|(_, key)| vec![mac(key, data)])
                .ok_or_else(|| AuthError::UnknownIdentity(identity.clone()))
        }
    }

    #[test]
    fn authenticate_devices_and_modules() {
        let rules = AudienceRules::new("hub").expect("host");
        let device = Identity::device("d");
        let module = Identity::module("d", "m");
        let table = [(device.clone(), [1u8; 32]), (module.clone(), [2u8; 32])];
        let device_token = SasToken::parse(&token("hub%2Fdevices%2Fd", 100, &[1; 32])).expect("ok");
        let module_token =
            SasToken::parse(&token("hub%2Fdevices%2Fd%2Fmodules%2Fm", 100, &[2; 32])).expect("ok");
        let module_token_device_key =
            SasToken::parse(&token("hub%2Fdevices%2Fd%2Fmodules%2Fm", 100, &[1; 32])).expect("ok");

        let ok = authenticate(&device_token, &device, &rules, 50, false, keys_of(&table));
        assert!(matches!(
            ok,
            Ok(AuthMethod::Sas {
                key: KeySlot::Primary,
                device_key: false,
                expiry: 100
            })
        ));
        let ok = authenticate(&module_token, &module, &rules, 50, false, keys_of(&table));
        assert!(matches!(
            ok,
            Ok(AuthMethod::Sas {
                device_key: false,
                ..
            })
        ));

        // The device's key for a module only when allowed.
        let denied = authenticate(
            &module_token_device_key,
            &module,
            &rules,
            50,
            false,
            keys_of(&table),
        );
        assert!(matches!(denied, Err(AuthError::BadSignature)));
        let allowed = authenticate(
            &module_token_device_key,
            &module,
            &rules,
            50,
            true,
            keys_of(&table),
        );
        assert!(matches!(
            allowed,
            Ok(AuthMethod::Sas {
                device_key: true,
                ..
            })
        ));
        let denied = authenticate(&device_token, &module, &rules, 50, false, keys_of(&table));
        assert!(matches!(denied, Err(AuthError::WrongAudience(_))));
        let allowed = authenticate(&device_token, &module, &rules, 50, true, keys_of(&table));
        assert!(matches!(
            allowed,
            Ok(AuthMethod::Sas {
                device_key: true,
                ..
            })
        ));

        // A module token is not a device token.
        let wrong = authenticate(&module_token, &device, &rules, 50, true, keys_of(&table));
        assert!(matches!(wrong, Err(AuthError::WrongAudience(_))));
        // Expiry comes first.
        let expired = authenticate(&device_token, &device, &rules, 401, false, keys_of(&table));
        assert!(matches!(
            expired,
            Err(AuthError::Expired {
                expiry: 100,
                now: 401
            })
        ));
        // Unknown identities are reported as such.
        let stranger = Identity::device("x");
        let t = SasToken::parse(&token("hub%2Fdevices%2Fx", 100, &[1; 32])).expect("ok");
        let unknown = authenticate(&t, &stranger, &rules, 50, false, keys_of(&table));
        assert!(matches!(unknown, Err(AuthError::UnknownIdentity(_))));
    }

    #[test]
    fn module_with_device_key_when_device_is_not_sas() {
        let rules = AudienceRules::new("hub").expect("host");
        let module = Identity::module("d", "m");
        let table = [(module.clone(), [2u8; 32])];
        let t =
            SasToken::parse(&token("hub%2Fdevices%2Fd%2Fmodules%2Fm", 100, &[9; 32])).expect("ok");
        let result = authenticate(&t, &module, &rules, 50, true, keys_of(&table));
        assert!(matches!(result, Err(AuthError::BadSignature)));
    }

    #[test]
    fn signs_through_a_store() {
        #[derive(Debug)]
        struct Fixed;
        impl KeyStore for Fixed {
            fn generate_hmac_key(&self, _: &str) -> Result<(), KeyError> {
                Err(KeyError::Store("fixed".into()))
            }
            fn import_hmac_key(&self, _: &str, _: &[u8]) -> Result<(), KeyError> {
                Err(KeyError::Store("fixed".into()))
            }
            fn hmac_sha256(&self, label: &str, data: &[u8]) -> Result<[u8; 32], KeyError> {
                match label {
                    "k" => Ok(mac(&(0u8..32).collect::<Vec<_>>(), data)),
                    _ => Err(KeyError::NotFound(label.into())),
                }
            }
            fn generate_ec_p256_key(&self, _: &str) -> Result<(), KeyError> {
                Err(KeyError::Store("fixed".into()))
            }
            fn ec_p256_public_key(&self, label: &str) -> Result<Vec<u8>, KeyError> {
                Err(KeyError::NotFound(label.into()))
            }
            fn ecdsa_p256_sha256_sign(&self, label: &str, _: &[u8]) -> Result<Vec<u8>, KeyError> {
                Err(KeyError::NotFound(label.into()))
            }
            fn exists(&self, label: &str) -> Result<bool, KeyError> {
                Ok(label == "k")
            }
            fn delete(&self, _: &str) -> Result<(), KeyError> {
                Ok(())
            }
        }
        assert_eq!(
            sign(
                &Fixed,
                "k",
                "myhub.azure-devices.net/devices/dev1/modules/mod1",
                1_700_000_000
            )
            .expect("signed"),
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fmod1&sig=kA6xjFLkZvk4Cdh0nD8uWAzassq6PB47f7BepMMtmlY%3D&se=1700000000"
        );
        assert!(matches!(
            sign(&Fixed, "nope", "r", 1),
            Err(KeyError::NotFound(_))
        ));
    }
}
