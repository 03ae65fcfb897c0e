//! [`Pkcs11KeyStore`]: keys as objects on a PKCS#11 token (a TPM through tpm2-pkcs11, a secure
//! element, an HSM; SoftHSM2 in tests), used through `cryptoki`.
//!
//! - The token is named by a PKCS#11 URI ([`uri`]): `pkcs11:token=verge?pin-value=1234`, or
//!   `slot-id=N` (which wins; if `token` is given too, the slot's token must carry that label),
//!   with `pin-value` or `pin-source=file:/path`.
//! - Every key is a token object labelled (`CKA_LABEL`) with the key's label: `CKA_TOKEN`,
//!   `CKA_PRIVATE`, `CKA_SENSITIVE` true, `CKA_EXTRACTABLE` false.
//!   - HMAC keys are `CKK_GENERIC_SECRET` (generated with `CKM_GENERIC_SECRET_KEY_GEN`, 32 bytes,
//!     or imported with `C_CreateObject`), used with `CKM_SHA256_HMAC`. Tokens may refuse HMAC
//!     keys shorter than the digest (SoftHSM 2.6 does, when the key is used), so an imported key
//!     is tried at once and removed again ([`KeyError::Invalid`]) if the token refuses it.
//!   - EC keys are P-256 pairs (`CKM_EC_KEY_PAIR_GEN`); the public point comes from the public
//!     object's `CKA_EC_POINT`. Signing hashes with SHA-256 here and signs the digest with
//!     `CKM_ECDSA` (SoftHSM 2.6 lacks `CKM_ECDSA_SHA256`), then DER-encodes `r || s` ([`der`]).
//! - One logged-in read-write session, behind a mutex (PKCS#11 sessions are not thread-safe).
//!   The library is loaded and `C_Initialize`d once per process and path, and never finalised:
//!   several stores on one library share it.
//!
//! [`der`]: super::der

pub mod uri;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use ring::digest;

use super::der::ecdsa_signature_to_der;
use super::{KeyError, KeyStore, check_label, check_secret};
pub use uri::{PinSpec, Pkcs11Uri, UriError};

/// DER of the P-256 curve OID 1.2.840.10045.3.1.7, for `CKA_EC_PARAMS`.
pub const P256_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

const HMAC_KEY: &str = "an HMAC key";
const EC_KEY: &str = "an EC P-256 key";

/// Keys on a PKCS#11 token.
pub struct Pkcs11KeyStore {
    session: Mutex<Session>,
    slot: Slot,
    token: String,
    library: PathBuf,
}

impl fmt::Debug for Pkcs11KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11KeyStore")
            .field("library", &self.library)
            .field("slot", &self.slot.id())
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Pkcs11KeyStore {
    /// Opens the token `uri` names (a PKCS#11 URI) through the PKCS#11 module `library`, and logs
    /// in with the URI's PIN.
    pub fn open(library: &Path, uri: &str) -> Result<Self, KeyError> {
        let uri =
            Pkcs11Uri::parse(uri).map_err(|e| KeyError::Invalid(format!("PKCS#11 URI: {e}")))?;
        Self::open_uri(library, &uri)
    }

    /// Like [`open`](Self::open), with the URI already parsed.
    pub fn open_uri(library: &Path, uri: &Pkcs11Uri) -> Result<Self, KeyError> {
        let context = context(library)?;
        let slots = context
            .get_slots_with_token()
            .map_err(p11("listing the slots with a token"))?;
        let slot = match (uri.slot_id, &uri.token) {
            (Some(id), token) => {
                let slot = slots
                    .iter()
                    .copied()
                    .find(|s| s.id() == id)
                    .ok_or_else(|| KeyError::Store(format!("no token in slot {id}")))?;
                if let Some(token) = token {
                    let label = token_label(&context, slot)?;
                    if &label != token {
                        return Err(KeyError::Store(format!(
                            "slot {id} holds token {label:?}, not {token:?}"
                        )));
                    }
                }
                slot
            }
            (None, Some(token)) => {
                let mut found = Vec::new();
                for &slot in &slots {
                    if &token_label(&context, slot)? == token {
                        found.push(slot);
                    }
                }
                match found.as_slice() {
                    [slot] => *slot,
                    [] => return Err(KeyError::Store(format!("no token labelled {token:?}"))),
                    _ => {
                        return Err(KeyError::Store(format!(
                            "{} tokens are labelled {token:?}: name the slot-id",
                            found.len()
                        )));
                    }
                }
            }
            (None, None) => {
                return Err(KeyError::Invalid(
                    "PKCS#11 URI has neither slot-id nor token".into(),
                ));
            }
        };
        let token = token_label(&context, slot)?;
        let info = context
            .get_token_info(slot)
            .map_err(p11("reading the token information"))?;
        let session = context
            .open_rw_session(slot)
            .map_err(p11("opening a session"))?;
        let pin = uri
            .read_pin()
            .map_err(|e| KeyError::Invalid(format!("PKCS#11 URI: {e}")))?;
        match pin {
            Some(pin) => {
                match session.login(UserType::User, Some(&AuthPin::new(pin.into_boxed_str()))) {
                    Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                    Err(e) => return Err(p11(&format!("logging in to token {token:?}"))(e)),
                }
            }
            None if info.login_required() => {
                return Err(KeyError::Invalid(format!(
                    "token {token:?} needs a PIN: add pin-value or pin-source to the URI"
                )));
            }
            None => {}
        }
        tracing::debug!(token = %token, slot = slot.id(), "PKCS#11 key store open");
        Ok(Self {
            session: Mutex::new(session),
            slot,
            token,
            library: library.to_path_buf(),
        })
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token
    }

    /// The token's slot id.
    pub fn slot_id(&self) -> u64 {
        self.slot.id()
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn generate_hmac_key(&self, label: &str) -> Result<(), KeyError> {
        check_label(label)?;
        let session = self.session();
        refuse_existing(&session, label)?;
        let mut template = secret_key_template(label);
        template.push(Attribute::ValueLen(32.into()));
        session
            .generate_key(&Mechanism::GenericSecretKeyGen, &template)
            .map_err(p11(&format!("generating HMAC key {label:?}")))?;
        Ok(())
    }

    fn import_hmac_key(&self, label: &str, secret: &[u8]) -> Result<(), KeyError> {
        check_label(label)?;
        check_secret(secret)?;
        let session = self.session();
        refuse_existing(&session, label)?;
        let mut template = secret_key_template(label);
        template.push(Attribute::Value(secret.to_vec()));
        let key = session
            .create_object(&template)
            .map_err(p11(&format!("importing HMAC key {label:?}")))?;
        // Tokens may refuse some key sizes only when the key is used (SoftHSM refuses HMAC-SHA256
        // keys shorter than 32 bytes): try it now, so that a key that is kept is usable.
        if let Err(e) = session.sign(&Mechanism::Sha256Hmac, key, b"") {
            let _ = session.destroy_object(key);
            return Err(match e {
                P11Error::Pkcs11(RvError::KeySizeRange, _) => KeyError::Invalid(format!(
                    "the token refuses HMAC keys of {} bytes (SoftHSM needs at least 32)",
                    secret.len()
                )),
                e => p11(&format!("trying imported HMAC key {label:?}"))(e),
            });
        }
        Ok(())
    }

    fn hmac_sha256(&self, label: &str, data: &[u8]) -> Result<[u8; 32], KeyError> {
        check_label(label)?;
        let session = self.session();
        let key = find_one(&session, label, ObjectClass::SECRET_KEY, HMAC_KEY)?;
        let tag = session
            .sign(&Mechanism::Sha256Hmac, key, data)
            .map_err(p11(&format!("HMAC with key {label:?}")))?;
        tag.as_slice().try_into().map_err(|_| {
            KeyError::Store(format!(
                "HMAC with key {label:?}: {} bytes, not 32",
                tag.len()
            ))
        })
    }

    fn generate_ec_p256_key(&self, label: &str) -> Result<(), KeyError> {
        check_label(label)?;
        let session = self.session();
        refuse_existing(&session, label)?;
        let public = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(P256_EC_PARAMS.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(label.as_bytes().to_vec()),
        ];
        let private = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(label.as_bytes().to_vec()),
        ];
        session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(p11(&format!("generating EC key {label:?}")))?;
        Ok(())
    }

    fn ec_p256_public_key(&self, label: &str) -> Result<Vec<u8>, KeyError> {
        check_label(label)?;
        let session = self.session();
        let key = find_one(&session, label, ObjectClass::PUBLIC_KEY, EC_KEY)?;
        let attributes = session
            .get_attributes(key, &[AttributeType::EcPoint])
            .map_err(p11(&format!("reading the public key of {label:?}")))?;
        let point = attributes.into_iter().find_map(|a| match a {
            Attribute::EcPoint(point) => Some(point),
            _ => None,
        });
        point
            .as_deref()
            .and_then(ec_point)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                KeyError::Store(format!(
                    "key {label:?}: CKA_EC_POINT is not an uncompressed P-256 point"
                ))
            })
    }

    fn ecdsa_p256_sha256_sign(&self, label: &str, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        check_label(label)?;
        let digest = digest::digest(&digest::SHA256, message);
        let session = self.session();
        let key = find_one(&session, label, ObjectClass::PRIVATE_KEY, EC_KEY)?;
        let raw = session
            .sign(&Mechanism::Ecdsa, key, digest.as_ref())
            .map_err(p11(&format!("ECDSA with key {label:?}")))?;
        if raw.len() != 64 {
            return Err(KeyError::Store(format!(
                "ECDSA with key {label:?}: {} bytes, not r || s of P-256",
                raw.len()
            )));
        }
        ecdsa_signature_to_der(&raw).map_err(|e| KeyError::Store(format!("key {label:?}: {e}")))
    }

    fn exists(&self, label: &str) -> Result<bool, KeyError> {
        check_label(label)?;
        let session = self.session();
        Ok(!find(&session, label, None)?.is_empty())
    }

    fn delete(&self, label: &str) -> Result<(), KeyError> {
        check_label(label)?;
        let session = self.session();
        for object in find(&session, label, None)? {
            session
                .destroy_object(object)
                .map_err(p11(&format!("deleting key {label:?}")))?;
        }
        Ok(())
    }
}

/// The attributes of every secret (HMAC) key this store makes.
fn secret_key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// The objects labelled `label`, of `class` if given.
fn find(
    session: &Session,
    label: &str,
    class: Option<ObjectClass>,
) -> Result<Vec<ObjectHandle>, KeyError> {
    let mut template = vec![Attribute::Label(label.as_bytes().to_vec())];
    template.extend(class.map(Attribute::Class));
    session
        .find_objects(&template)
        .map_err(p11(&format!("finding key {label:?}")))
}

/// The one object of `class` labelled `label`.
fn find_one(
    session: &Session,
    label: &str,
    class: ObjectClass,
    expected: &'static str,
) -> Result<ObjectHandle, KeyError> {
    match find(session, label, Some(class))?.as_slice() {
        [object] => Ok(*object),
        [] if !find(session, label, None)?.is_empty() => Err(KeyError::WrongKind {
            label: label.to_owned(),
            expected,
        }),
        [] => Err(KeyError::NotFound(label.to_owned())),
        several => Err(KeyError::Store(format!(
            "{} objects of one class are labelled {label:?}",
            several.len()
        ))),
    }
}

fn refuse_existing(session: &Session, label: &str) -> Result<(), KeyError> {
    if find(session, label, None)?.is_empty() {
        Ok(())
    } else {
        Err(KeyError::Exists(label.to_owned()))
    }
}

/// The uncompressed point in a `CKA_EC_POINT` value: a DER OCTET STRING around it (what the
/// standard says and SoftHSM does), or the bare point (what some tokens return).
pub fn ec_point(value: &[u8]) -> Option<&[u8]> {
    let point = match value {
        [0x04, 0x41, point @ ..] if point.len() == 65 => point,
        [0x04, 0x81, 0x41, point @ ..] if point.len() == 65 => point,
        point if point.len() == 65 => point,
        _ => return None,
    };
    (point.first() == Some(&0x04)).then_some(point)
}

/// The label of the token in `slot`.
fn token_label(context: &Pkcs11, slot: Slot) -> Result<String, KeyError> {
    Ok(context
        .get_token_info(slot)
        .map_err(p11(&format!("reading the token in slot {}", slot.id())))?
        .label()
        .to_owned())
}

/// The PKCS#11 library at `path`, loaded and initialised once per process.
fn context(path: &Path) -> Result<Pkcs11, KeyError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(context) = contexts.get(path) {
        return Ok(context.clone());
    }
    let context =
        Pkcs11::new(path).map_err(p11(&format!("loading PKCS#11 module {}", path.display())))?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(p11(&format!("initialising {}", path.display()))(e)),
    }
    contexts.insert(path.to_path_buf(), context.clone());
    Ok(context)
}

/// Maps a cryptoki error to [`KeyError::Store`], saying what was being done.
fn p11(doing: &str) -> impl FnOnce(P11Error) -> KeyError + '_ {
    move |e| KeyError::Store(format!("PKCS#11: {doing}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_unwraps_the_octet_string() {
        let mut point = vec![0x04];
        point.extend_from_slice(&[7u8; 64]);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(&point);
        assert_eq!(ec_point(&wrapped), Some(point.as_slice()));
        let mut long_form = vec![0x04, 0x81, 0x41];
        long_form.extend_from_slice(&point);
        assert_eq!(ec_point(&long_form), Some(point.as_slice()));
        // A bare point is taken as is.
        assert_eq!(ec_point(&point), Some(point.as_slice()));
    }

    #[test]
    fn ec_point_refuses_other_shapes() {
        assert_eq!(ec_point(&[]), None);
        assert_eq!(ec_point(&[0x04, 0x41, 0x04]), None);
        // Compressed points are not what the trait promises.
        let mut compressed = vec![0x04, 0x21, 0x02];
        compressed.extend_from_slice(&[1u8; 32]);
        assert_eq!(ec_point(&compressed), None);
        // 65 bytes that are not an uncompressed point.
        assert_eq!(ec_point(&[0x02; 65]), None);
        let mut wrapped_wrong = vec![0x04, 0x41, 0x03];
        wrapped_wrong.extend_from_slice(&[1u8; 64]);
        assert_eq!(ec_point(&wrapped_wrong), None);
    }

    #[test]
    fn p256_params_are_the_curve_oid() {
        // 1.2.840.10045.3.1.7: 1*40+2 = 42 (0x2A), 840 = 0x86 0x48, 10045 = 0xCE 0x3D, 3, 1, 7.
        assert_eq!(P256_EC_PARAMS[..2], [0x06, 0x08]);
        assert_eq!(
            P256_EC_PARAMS[2..],
            [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]
        );
    }

    #[test]
    fn open_refuses_bad_uris_before_loading_anything() {
        let lib = Path::new("/nonexistent/libpkcs11.so");
        match Pkcs11KeyStore::open(lib, "token=verge") {
            Err(KeyError::Invalid(msg)) => assert!(msg.contains("pkcs11:"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
        match Pkcs11KeyStore::open(lib, "pkcs11:token=verge") {
            Err(KeyError::Store(msg)) => assert!(msg.contains("loading PKCS#11 module"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
