//! Reading certificates with `x509-parser`: validity, subject CN, public key, names, signatures.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::TlsError;

/// What this crate needs to know about a certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub common_name: Option<String>,
    /// The subjectPublicKey bits (for P-256: the 65-byte SEC1 point).
    pub public_key: Vec<u8>,
    /// DNS names and IP addresses (as text) from subjectAltName.
    pub san: Vec<String>,
    /// basicConstraints cA.
    pub is_ca: bool,
}

/// Parses DER `der` as one X.509 certificate with nothing after it.
pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, TlsError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(TlsError::Parse(
            "trailing bytes after the certificate".to_owned(),
        )),
        Err(e) => Err(TlsError::Parse(e.to_string())),
    }
}

/// Reads what [`CertInfo`] holds from DER `der`.
pub(crate) fn info(der: &[u8]) -> Result<CertInfo, TlsError> {
    let cert = parse(der)?;
    Ok(CertInfo {
        not_before: system_time(cert.validity().not_before),
        not_after: system_time(cert.validity().not_after),
        common_name: common_name(&cert),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        san: san(&cert),
        is_ca: cert.is_ca(),
    })
}

/// The first subject CN, if it is a string.
pub(crate) fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

fn san(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect()
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(v4))
    } else {
        <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
    }
}

/// Whether `cert` names itself as issuer and its signature verifies with its own key.
pub(crate) fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok()
}

/// Whether `der` was issued by `issuer_der`: the names match and the signature verifies.
pub(crate) fn is_issued_by(der: &[u8], issuer_der: &[u8]) -> bool {
    let (Ok(cert), Ok(issuer)) = (parse(der), parse(issuer_der)) else {
        return false;
    };
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

/// Whether an extended-key-usage extension, if present, allows TLS client authentication.
pub(crate) fn allows_client_auth(cert: &X509Certificate<'_>) -> bool {
    match cert.extended_key_usage() {
        Ok(None) => true,
        Ok(Some(eku)) => eku.value.client_auth || eku.value.any,
        Err(_) => false,
    }
}

/// Whether `now` lies within the certificate's validity period.
pub(crate) fn valid_at(cert: &X509Certificate<'_>, now: SystemTime) -> bool {
    let v = cert.validity();
    system_time(v.not_before) <= now && now <= system_time(v.not_after)
}

/// An ASN.1 time as a `SystemTime` (times before 1970 are kept).
pub(crate) fn system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    }
}

/// Whether a certificate valid from `not_before` to `not_after` should be replaced at `now`:
/// it has expired, or less than a tenth of its lifetime is left. A certificate that is not yet
/// valid (the clock went back) is kept: replacing it would not help.
pub(crate) fn needs_renewal(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
) -> bool {
    let Ok(remaining) = not_after.duration_since(now) else {
        return true; // expired
    };
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    remaining.saturating_mul(10) < lifetime
}

/// Upper-case hex.
pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn renewal_window_is_the_last_tenth() {
        let start = UNIX_EPOCH + 1000 * DAY;
        let end = start + 100 * DAY;
        assert!(!needs_renewal(start, end, start));
        assert!(!needs_renewal(start, end, start + 89 * DAY));
        assert!(!needs_renewal(start, end, start + 90 * DAY));
        assert!(needs_renewal(start, end, start + 91 * DAY));
        assert!(needs_renewal(start, end, end));
        assert!(needs_renewal(start, end, end + DAY));
        // Not yet valid: kept.
        assert!(!needs_renewal(start, end, start - DAY));
    }

    #[test]
    fn hex_is_upper_case() {
        assert_eq!(hex_upper(&[0x00, 0xab, 0x7f]), "00AB7F");
        assert_eq!(hex_upper(&[]), "");
    }

    #[test]
    fn ip_bytes() {
        assert_eq!(
            ip_from_bytes(&[127, 0, 0, 1]).map(|i| i.to_string()),
            Some("127.0.0.1".to_owned())
        );
        assert!(ip_from_bytes(&[1, 2, 3]).is_none());
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(
            ip_from_bytes(&v6).map(|i| i.to_string()),
            Some("::1".to_owned())
        );
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(matches!(
            parse(b"not a certificate"),
            Err(TlsError::Parse(_))
        ));
        assert!(info(&[]).is_err());
        assert!(!is_issued_by(b"x", b"y"));
    }
}
