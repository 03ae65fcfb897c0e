//! [`FileKeyStore`]: keys in files under one directory, the embedded default when there is no
//! PKCS#11 token.
//!
//! - The directory is 0700 and every key file 0600, written atomically (temporary file, then
//!   rename), so a crash never leaves half a key.
//! - One file per label. The label is encoded into the file name: ASCII letters, digits, `-`
//!   and `_` are kept and every other byte is written `%XX`, so labels with `/`, `:` or `..`
//!   cannot leave the directory. Names start with `k-`; a label whose encoding would be too long
//!   for a file name is stored as `h-` and the SHA-256 of the label.
//! - The extension says what the key is: `.hmac` holds the raw HMAC-SHA256 secret (32 random
//!   bytes when generated here), `.p256` an ECDSA P-256 key pair as PKCS#8 (DER).
//! - Crypto is `ring`'s, the library rustls uses.
//!
//! The keys are only as safe as the file system: this store keeps them out of logs and APIs,
//! not away from root. One process owns the directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use ring::{digest, hmac};

use super::{KeyError, KeyStore, check_label, check_secret};
use crate::fsutil;

/// Longest encoded label kept as a file name (file names are at most 255 bytes).
const MAX_ENCODED: usize = 200;

/// What a key file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hmac,
    EcP256,
}

impl Kind {
    fn extension(self) -> &'static str {
        match self {
            Kind::Hmac => "hmac",
            Kind::EcP256 => "p256",
        }
    }

    fn described(self) -> &'static str {
        match self {
            Kind::Hmac => "an HMAC key",
            Kind::EcP256 => "an EC P-256 key",
        }
    }

    fn other(self) -> Self {
        match self {
            Kind::Hmac => Kind::EcP256,
            Kind::EcP256 => Kind::Hmac,
        }
    }
}

/// Keys in files under a directory.
pub struct FileKeyStore {
    dir: PathBuf,
    rng: SystemRandom,
    /// Held while a key is created or deleted, so that two threads cannot both create a label.
    writing: Mutex<()>,
}

impl fmt::Debug for FileKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKeyStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FileKeyStore {
    /// The store in `dir`, created (0700) if missing; an existing directory is set to 0700.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, KeyError> {
        let dir = dir.as_ref().to_path_buf();
        fsutil::private_dir(&dir)
            .map_err(|e| KeyError::Store(format!("key directory {}: {e}", dir.display())))?;
        Ok(Self {
            dir,
            rng: SystemRandom::new(),
            writing: Mutex::new(()),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of key `label` of kind `kind`.
    fn path(&self, label: &str, kind: Kind) -> PathBuf {
        self.dir
            .join(format!("{}.{}", file_stem(label), kind.extension()))
    }

    fn read(&self, label: &str, kind: Kind) -> Result<Vec<u8>, KeyError> {
        check_label(label)?;
        let path = self.path(label, kind);
        match fsutil::read_optional(&path).map_err(|e| io_error("reading", &path, e))? {
            Some(bytes) => Ok(bytes),
            None if self.path(label, kind.other()).exists() => Err(KeyError::WrongKind {
                label: label.to_owned(),
                expected: kind.described(),
            }),
            None => Err(KeyError::NotFound(label.to_owned())),
        }
    }

    /// Writes a new key; refuses a label that has a key of either kind.
    fn create(&self, label: &str, kind: Kind, bytes: &[u8]) -> Result<(), KeyError> {
        check_label(label)?;
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        if self.exists_unlocked(label) {
            return Err(KeyError::Exists(label.to_owned()));
        }
        let path = self.path(label, kind);
        fsutil::write_private(&path, bytes).map_err(|e| io_error("writing", &path, e))
    }

    fn exists_unlocked(&self, label: &str) -> bool {
        self.path(label, Kind::Hmac).exists() || self.path(label, Kind::EcP256).exists()
    }

    fn ec_key_pair(&self, label: &str) -> Result<EcdsaKeyPair, KeyError> {
        let pkcs8 = self.read(label, Kind::EcP256)?;
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &self.rng)
            .map_err(|e| KeyError::Store(format!("key {label:?}: unusable PKCS#8 file: {e}")))
    }
}

impl KeyStore for FileKeyStore {
    fn generate_hmac_key(&self, label: &str) -> Result<(), KeyError> {
        let mut secret = [0u8; 32];
        self.rng
            .fill(&mut secret)
            .map_err(|_| KeyError::Store("no randomness for a key".into()))?;
        let created = self.create(label, Kind::Hmac, &secret);
        secret.fill(0);
        created
    }

    fn import_hmac_key(&self, label: &str, secret: &[u8]) -> Result<(), KeyError> {
        check_secret(secret)?;
        self.create(label, Kind::Hmac, secret)
    }

    fn hmac_sha256(&self, label: &str, data: &[u8]) -> Result<[u8; 32], KeyError> {
        let mut secret = self.read(label, Kind::Hmac)?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        secret.fill(0);
        let tag = hmac::sign(&key, data);
        tag.as_ref()
            .try_into()
            .map_err(|_| KeyError::Store("HMAC-SHA256 tag is not 32 bytes".into()))
    }

    fn generate_ec_p256_key(&self, label: &str) -> Result<(), KeyError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.rng)
            .map_err(|_| KeyError::Store("cannot generate a P-256 key".into()))?;
        self.create(label, Kind::EcP256, pkcs8.as_ref())
    }

    fn ec_p256_public_key(&self, label: &str) -> Result<Vec<u8>, KeyError> {
        Ok(self.ec_key_pair(label)?.public_key().as_ref().to_vec())
    }

    fn ecdsa_p256_sha256_sign(&self, label: &str, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let signature = self
            .ec_key_pair(label)?
            .sign(&self.rng, message)
            .map_err(|_| KeyError::Store(format!("key {label:?}: ECDSA signing failed")))?;
        Ok(signature.as_ref().to_vec())
    }

    fn exists(&self, label: &str) -> Result<bool, KeyError> {
        check_label(label)?;
        Ok(self.exists_unlocked(label))
    }

    fn delete(&self, label: &str) -> Result<(), KeyError> {
        check_label(label)?;
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        for kind in [Kind::Hmac, Kind::EcP256] {
            let path = self.path(label, kind);
            fsutil::remove(&path).map_err(|e| io_error("deleting", &path, e))?;
        }
        Ok(())
    }
}

/// The file name (without extension) for `label`.
fn file_stem(label: &str) -> String {
    let mut out = String::with_capacity(label.len() + 2);
    out.push_str("k-");
    for &b in label.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    if out.len() > MAX_ENCODED {
        let hash = digest::digest(&digest::SHA256, label.as_bytes());
        return format!("h-{}", fsutil::hex(hash.as_ref()));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn io_error(what: &str, path: &Path, e: std::io::Error) -> KeyError {
    KeyError::Store(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_encoded_into_safe_names() {
        assert_eq!(file_stem("plain-label_1"), "k-plain-label_1");
        assert_eq!(file_stem("sas/dev:1/m"), "k-sas%2Fdev%3A1%2Fm");
        assert_eq!(file_stem(".."), "k-%2E%2E");
        assert_eq!(file_stem("é"), "k-%C3%A9");
        assert_eq!(file_stem("%"), "k-%25");
    }

    #[test]
    fn distinct_labels_give_distinct_names() {
        let labels = ["a/b", "a%2Fb", "a:b", "a_b", "A/b", "a.b", "a b"];
        let mut names: Vec<_> = labels.iter().map(|l| file_stem(l)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), labels.len());
    }

    #[test]
    fn long_labels_are_hashed() {
        let long = "/".repeat(100);
        let name = file_stem(&long);
        assert!(name.starts_with("h-"), "{name}");
        assert_eq!(name.len(), 2 + 64);
        assert_ne!(file_stem(&"/".repeat(101)), name);
        // Just below the limit the label is still readable.
        assert!(file_stem(&"a".repeat(MAX_ENCODED - 2)).starts_with("k-"));
    }

    #[test]
    fn names_never_start_with_a_dot() {
        // Temporary files start with '.', so they can never be taken for a key.
        for label in [".", ".hidden", "..", "./x"] {
            assert!(!file_stem(label).starts_with('.'), "{label}");
        }
    }
}
