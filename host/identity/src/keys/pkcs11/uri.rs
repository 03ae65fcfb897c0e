//! PKCS#11 URIs (RFC 7512), the part a key store needs: which token, and its PIN.
//!
//! `pkcs11:token=verge;object=edge%20ca?pin-value=1234`, `pkcs11:slot-id=3?pin-source=file:/etc/pin`.
//!
//! - Path attributes (`;`-separated): `token` (the token label), `slot-id` (decimal), `object`
//!   (an object label, kept but not used by the store). Other path attributes (`manufacturer`,
//!   `serial`, `model`, `type`, `id`, ...) are accepted and ignored, as aziot-keyd does.
//! - Query attributes (`&`-separated): `pin-value`, or `pin-source` (`file:/path` or an absolute
//!   path; the file's first line is the PIN). `module-name` and `module-path` are ignored: the
//!   library is given separately. Commands (`pin-source=|cmd`) are refused.
//! - Values are percent-decoded and must be UTF-8. An attribute may appear once.
//! - The scheme is matched case-insensitively; attribute names exactly (they are lower case).

use std::fmt;
use std::path::PathBuf;

/// A PKCS#11 URI could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UriError {
    /// It does not start with `pkcs11:`.
    #[error("not a PKCS#11 URI (must start with \"pkcs11:\")")]
    NotPkcs11,
    /// An attribute has no `=`.
    #[error("attribute {0:?} has no value")]
    MissingValue(String),
    /// An attribute appears twice.
    #[error("attribute {0:?} appears more than once")]
    Duplicate(String),
    /// A `%` is not followed by two hex digits.
    #[error("bad percent-escape in {0:?}")]
    BadEscape(String),
    /// A decoded value is not UTF-8.
    #[error("value of {0:?} is not UTF-8")]
    NotUtf8(String),
    /// `slot-id` is not a decimal number.
    #[error("slot-id {0:?} is not a decimal number")]
    BadSlotId(String),
    /// Both `pin-value` and `pin-source`.
    #[error("both pin-value and pin-source are given")]
    TwoPins,
    /// A `pin-source` this parser does not follow.
    #[error("unsupported pin-source {0:?} (use file:/path or an absolute path)")]
    UnsupportedPinSource(String),
    /// The PIN file could not be read.
    #[error("reading the PIN file {path}: {source}")]
    PinFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the PIN comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSpec {
    /// `pin-value`: the PIN itself.
    Value(String),
    /// `pin-source`: a file whose first line is the PIN.
    File(PathBuf),
}

impl fmt::Debug for PinSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSpec::Value(_) => f.write_str("Value(<redacted>)"),
            PinSpec::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// A parsed PKCS#11 URI. `Debug` never shows a PIN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`: the token label.
    pub token: Option<String>,
    /// `slot-id`.
    pub slot_id: Option<u64>,
    /// `object`: an object label.
    pub object: Option<String>,
    /// `pin-value` or `pin-source`.
    pub pin: Option<PinSpec>,
}

impl Pkcs11Uri {
    /// Parses `uri`.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let rest = uri
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
            .and_then(|_| uri.get(7..))
            .ok_or(UriError::NotPkcs11)?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut out = Self::default();
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in attributes(path, ';')?.chain_checked(&mut seen)? {
            match name.as_str() {
                "token" => out.token = Some(value),
                "object" => out.object = Some(value),
                "slot-id" => {
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(UriError::BadSlotId(value));
                    }
                    out.slot_id = Some(value.parse().map_err(|_| UriError::BadSlotId(value))?);
                }
                _ => {}
            }
        }
        for (name, value) in attributes(query, '&')?.chain_checked(&mut seen)? {
            let pin = match name.as_str() {
                "pin-value" => PinSpec::Value(value),
                "pin-source" => PinSpec::File(pin_file(&value)?),
                _ => continue,
            };
            if out.pin.is_some() {
                return Err(UriError::TwoPins);
            }
            out.pin = Some(pin);
        }
        Ok(out)
    }

    /// The PIN: the `pin-value`, or the first line of the `pin-source` file.
    pub fn read_pin(&self) -> Result<Option<String>, UriError> {
        match &self.pin {
            None => Ok(None),
            Some(PinSpec::Value(pin)) => Ok(Some(pin.clone())),
            Some(PinSpec::File(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| UriError::PinFile {
                    path: path.clone(),
                    source,
                })?;
                Ok(Some(text.lines().next().unwrap_or("").to_owned()))
            }
        }
    }
}

/// The attributes of one component, decoded.
struct Attributes(Vec<(String, String)>);

impl Attributes {
    /// The attributes, refusing one already in `seen`.
    fn chain_checked(self, seen: &mut Vec<String>) -> Result<Vec<(String, String)>, UriError> {
        for (name, _) in &self.0 {
            if seen.contains(name) {
                return Err(UriError::Duplicate(name.clone()));
            }
            seen.push(name.clone());
        }
        Ok(self.0)
    }
}

fn attributes(component: &str, separator: char) -> Result<Attributes, UriError> {
    let mut out = Vec::new();
    for attribute in component.split(separator).filter(|a| !a.is_empty()) {
        let (name, value) = attribute
            .split_once('=')
            .ok_or_else(|| UriError::MissingValue(attribute.to_owned()))?;
        let name = percent_decode(name, name)?;
        let value = percent_decode(value, &name)?;
        out.push((name, value));
    }
    Ok(Attributes(out))
}

/// Decodes `%XX` escapes; `what` names the attribute in errors.
pub(crate) fn percent_decode(text: &str, what: &str) -> Result<String, UriError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|&c| hex_value(c));
            let lo = bytes.get(i + 2).and_then(|&c| hex_value(c));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(UriError::BadEscape(what.to_owned())),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::NotUtf8(what.to_owned()))
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The file a `pin-source` names.
fn pin_file(source: &str) -> Result<PathBuf, UriError> {
    let path = source
        .strip_prefix("file://")
        .or_else(|| source.strip_prefix("file:"))
        .unwrap_or(source);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(UriError::UnsupportedPinSource(source.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_object_and_pin_value() {
        let uri =
            Pkcs11Uri::parse("pkcs11:token=verge;object=edge%20ca?pin-value=1234").expect("valid");
        assert_eq!(uri.token.as_deref(), Some("verge"));
        assert_eq!(uri.object.as_deref(), Some("edge ca"));
        assert_eq!(uri.slot_id, None);
        assert_eq!(uri.pin, Some(PinSpec::Value("1234".into())));
        assert_eq!(uri.read_pin().expect("pin").as_deref(), Some("1234"));
    }

    #[test]
    fn slot_id_and_aziot_example() {
        let uri =
            Pkcs11Uri::parse("pkcs11:slot-id=0;object=device%20id?pin-value=1234").expect("valid");
        assert_eq!(uri.slot_id, Some(0));
        assert_eq!(uri.object.as_deref(), Some("device id"));
        let uri = Pkcs11Uri::parse("pkcs11:slot-id=1439297923").expect("valid");
        assert_eq!(uri.slot_id, Some(1_439_297_923));
        assert_eq!(uri.pin, None);
    }

    #[test]
    fn token_label_with_escapes_and_spaces() {
        let uri = Pkcs11Uri::parse("PKCS11:token=Key%20pairs%3b%2F?pin-value=1%26").expect("ok");
        assert_eq!(uri.token.as_deref(), Some("Key pairs;/"));
        assert_eq!(uri.pin, Some(PinSpec::Value("1&".into())));
    }

    #[test]
    fn utf8_values_decode() {
        let uri = Pkcs11Uri::parse("pkcs11:token=%C3%A9t%C3%A9").expect("ok");
        assert_eq!(uri.token.as_deref(), Some("été"));
    }

    #[test]
    fn pin_source_file() {
        let dir = std::env::temp_dir().join(format!("verge-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("pin");
        std::fs::write(&file, "s3cret\nignored\n").expect("write");
        for form in [
            format!("file:{}", file.display()),
            file.display().to_string(),
        ] {
            let uri = Pkcs11Uri::parse(&format!("pkcs11:token=t?pin-source={form}")).expect("ok");
            assert_eq!(uri.pin, Some(PinSpec::File(file.clone())));
            assert_eq!(uri.read_pin().expect("pin").as_deref(), Some("s3cret"));
        }
        let uri = Pkcs11Uri::parse(&format!(
            "pkcs11:token=t?pin-source=file://{}",
            file.display()
        ))
        .expect("ok");
        assert_eq!(uri.pin, Some(PinSpec::File(file.clone())));
        let _ = std::fs::remove_dir_all(&dir);
        let uri = Pkcs11Uri::parse("pkcs11:token=t?pin-source=file:/nonexistent/verge-pin")
            .expect("parses");
        assert!(matches!(uri.read_pin(), Err(UriError::PinFile { .. })));
    }

    #[test]
    fn other_attributes_are_ignored() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:manufacturer=SoftHSM%20project;model=SoftHSM%20v2;token=t;type=private;id=%01%02?module-path=/x.so&pin-value=1",
        )
        .expect("ok");
        assert_eq!(uri.token.as_deref(), Some("t"));
        assert_eq!(uri.pin, Some(PinSpec::Value("1".into())));
    }

    #[test]
    fn empty_and_trailing_segments() {
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:").expect("ok"),
            Pkcs11Uri::default()
        );
        let uri = Pkcs11Uri::parse("pkcs11:token=t;?").expect("ok");
        assert_eq!(uri.token.as_deref(), Some("t"));
    }

    #[test]
    fn errors() {
        type Check = fn(&UriError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("token=t", |e| matches!(e, UriError::NotPkcs11)),
            ("pkcs1", |e| matches!(e, UriError::NotPkcs11)),
            ("", |e| matches!(e, UriError::NotPkcs11)),
            ("pkcs11:token", |e| matches!(e, UriError::MissingValue(_))),
            ("pkcs11:token=a;token=b", |e| {
                matches!(e, UriError::Duplicate(_))
            }),
            ("pkcs11:token=a%2", |e| matches!(e, UriError::BadEscape(_))),
            ("pkcs11:token=a%zz", |e| matches!(e, UriError::BadEscape(_))),
            ("pkcs11:token=%ff", |e| matches!(e, UriError::NotUtf8(_))),
            ("pkcs11:slot-id=abc", |e| {
                matches!(e, UriError::BadSlotId(_))
            }),
            ("pkcs11:slot-id=-1", |e| matches!(e, UriError::BadSlotId(_))),
            ("pkcs11:slot-id=", |e| matches!(e, UriError::BadSlotId(_))),
            ("pkcs11:slot-id=99999999999999999999999", |e| {
                matches!(e, UriError::BadSlotId(_))
            }),
            ("pkcs11:token=t?pin-value=1&pin-source=/p", |e| {
                matches!(e, UriError::TwoPins)
            }),
            ("pkcs11:token=t?pin-value=1&pin-value=2", |e| {
                matches!(e, UriError::Duplicate(_))
            }),
            ("pkcs11:token=t?pin-source=|/bin/pinentry", |e| {
                matches!(e, UriError::UnsupportedPinSource(_))
            }),
            ("pkcs11:token=t?pin-source=relative", |e| {
                matches!(e, UriError::UnsupportedPinSource(_))
            }),
        ];
        for (uri, check) in cases {
            match Pkcs11Uri::parse(uri) {
                Ok(parsed) => panic!("{uri:?} parsed as {parsed:?}"),
                Err(e) => assert!(check(&e), "{uri:?}: unexpected error {e:?}"),
            }
        }
    }

    #[test]
    fn debug_hides_the_pin() {
        let uri = Pkcs11Uri::parse("pkcs11:token=t?pin-value=topsecret").expect("ok");
        assert!(!format!("{uri:?}").contains("topsecret"));
    }

    #[test]
    fn multibyte_input_does_not_panic() {
        // Slicing the scheme must respect char boundaries.
        assert!(Pkcs11Uri::parse("pkcs1é:token=t").is_err());
        assert!(Pkcs11Uri::parse("ééééééé").is_err());
        assert!(Pkcs11Uri::parse("pkcs11:token=%").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2f%2F", "x").expect("ok"), "a b//");
        assert_eq!(percent_decode("", "x").expect("ok"), "");
        assert!(percent_decode("%", "x").is_err());
        assert!(percent_decode("%4", "x").is_err());
    }
}
