//! Certificate files: labels as file names, atomic writes, reading PEM.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::TlsError;

/// Checks that `label` can name a key and a file: `[A-Za-z0-9._-]`, not starting with '.'.
pub(crate) fn check_label(label: &str) -> Result<(), TlsError> {
    let ok = !label.is_empty()
        && label.len() <= 128
        && !label.starts_with('.')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(TlsError::Label(label.to_owned()))
    }
}

/// Where the certificate for key `label` is kept in `dir`.
pub(crate) fn cert_path(dir: &Path, label: &str) -> PathBuf {
    dir.join(format!("{label}.cert.pem"))
}

/// The file's text, or `None` when there is no such file.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so that a crash leaves either
/// the old file or the new one.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}

/// The certificates in PEM `text`, in order; other PEM sections are skipped.
pub fn certs_from_pem(text: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Parse(format!("PEM: {e}")))
}

/// The private key in PEM `text` (PKCS#8, SEC1 or PKCS#1), for a client certificate.
pub fn private_key_from_pem(
    text: &str,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, TlsError> {
    rustls::pki_types::PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| TlsError::Parse(format!("private key PEM: {e}")))
}

/// The first certificate in PEM `text`.
pub(crate) fn first_cert_from_pem(text: &str) -> Result<CertificateDer<'static>, TlsError> {
    certs_from_pem(text)?
        .into_iter()
        .next()
        .ok_or_else(|| TlsError::Parse("no CERTIFICATE in PEM text".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for good in ["edge-ca", "hub-server", "dev_1.key", "A9"] {
            assert!(check_label(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "a b", "é", &"x".repeat(129)] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pem_round_trip() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n\
                    -----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----\n\
                    -----BEGIN CERTIFICATE-----\nAwQF\n-----END CERTIFICATE-----\n";
        let certs: Vec<Vec<u8>> = certs_from_pem(text)
            .map(|v| v.iter().map(|c| c.to_vec()).collect())
            .unwrap_or_default();
        assert_eq!(certs, [vec![0, 1, 2], vec![3, 4, 5]]);
        assert_eq!(
            first_cert_from_pem(text).map(|c| c.to_vec()).ok(),
            Some(vec![0, 1, 2])
        );
    }

    #[test]
    fn pem_without_cert_is_an_error() {
        assert!(first_cert_from_pem("hello").is_err());
        assert!(certs_from_pem("").is_ok_and(|v| v.is_empty()));
    }

    #[test]
    fn atomic_write_then_read() -> Result<(), TlsError> {
        let tmp = tempfile::tempdir().map_err(|source| TlsError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        let dir = tmp.path().join("sub");
        let path = cert_path(&dir, "x");
        assert!(read_optional(&path)?.is_none());
        write_atomic(&path, "one")?;
        write_atomic(&path, "two")?;
        assert_eq!(read_optional(&path)?.as_deref(), Some("two"));
        Ok(())
    }
}
