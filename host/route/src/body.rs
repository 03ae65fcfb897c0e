//! The message body as route conditions see it: decoded text, parsed once into JSON.
//!
//! A body can be queried only when the system properties say how to read it, checked in
//! upstream's order: `contentEncoding` must be `utf-8`, `utf-16` or `utf-32` (case-insensitive;
//! UTF-16/32 are little-endian, as .NET's `Encoding.Unicode`/`UTF32`), then `contentType` must
//! be `application/json` (case-insensitive, no parameters). Invalid byte sequences decode to
//! U+FFFD, as .NET does, so a UTF-16 body declared UTF-8 simply fails to parse as JSON. The
//! document must be a JSON **object** (upstream calls `JObject.Parse`).
//!
//! Decisions:
//! - JSON is parsed strictly (RFC 8259, `serde_json`). Newtonsoft also accepts comments, single
//!   quotes, unquoted names and `NaN`; such bodies are not queryable in Verge. A leading byte
//!   order mark is skipped.
//! - **Dates.** Newtonsoft turns string values that look like ISO-8601 date-times
//!   (`"2017-03-09T00:00:00.000Z"`) or `"/Date(…)/"` into date tokens, which IoT Edge cannot
//!   compare: such a value is object-like, so `$body.time = '…'` is `undefined` (upstream test
//!   `BodyQuery_NotSupportedJTokenTime`). Verge reproduces this on purpose, with Newtonsoft's exact
//!   recogniser ([`is_newtonsoft_date`]), so a route behaves the same on both hubs. Compare such
//!   a value with `starts_with`/`contains`… is not possible either; send epoch numbers instead.
//! - A path that does not exist reads as `null` (upstream); a JSON object, array, date, or a
//!   `*` matching several values reads as [`BodyValue::Object`], which conditions see as
//!   `undefined`.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value as Json;
use verge_message::{Message, system};

use crate::jsonpath::{BodyPath, Selection};

/// Why the body cannot be queried.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// No `contentEncoding` system property.
    #[error("the message has no contentEncoding system property")]
    MissingContentEncoding,
    /// `contentEncoding` is not utf-8, utf-16 or utf-32.
    #[error("content encoding '{0}' is not supported (utf-8, utf-16 or utf-32)")]
    UnsupportedContentEncoding(String),
    /// No `contentType` system property.
    #[error("the message has no contentType system property")]
    MissingContentType,
    /// `contentType` is not application/json.
    #[error("content type '{0}' is not supported (application/json)")]
    UnsupportedContentType(String),
    /// The decoded text is not a JSON object.
    #[error("the body is not a JSON object: {0}")]
    InvalidJson(String),
}

/// A value read from the body by a [`BodyPath`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BodyValue<'a> {
    /// JSON `null`, or a path that does not exist.
    Null,
    /// A JSON boolean.
    Bool(bool),
    /// A JSON number (always read as a double).
    Number(f64),
    /// A JSON string.
    String(&'a str),
    /// A string Newtonsoft reads as a date: not comparable (conditions see `undefined`).
    Date(&'a str),
    /// A JSON object or array, or several values: not comparable (conditions see `undefined`).
    Object,
}

impl fmt::Display for BodyValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Number(n) => write!(f, "{n}"),
            Self::String(s) => write!(f, "{s:?}"),
            Self::Date(s) => write!(f, "date {s:?}"),
            Self::Object => f.write_str("object"),
        }
    }
}

impl<'a> BodyValue<'a> {
    pub(crate) fn of(selection: Selection<'a>) -> Self {
        match selection {
            Selection::Missing => Self::Null,
            Selection::Many => Self::Object,
            Selection::One(value) => match value {
                Json::Null => Self::Null,
                Json::Bool(b) => Self::Bool(*b),
                Json::Number(n) => n.as_f64().map_or(Self::Object, Self::Number),
                Json::String(s) if is_newtonsoft_date(s) => Self::Date(s),
                Json::String(s) => Self::String(s),
                Json::Array(_) | Json::Object(_) => Self::Object,
            },
        }
    }
}

fn decode_utf16le(bytes: &[u8]) -> String {
    let units = bytes.chunks(2).map(|pair| match *pair {
        [lo, hi] => u16::from_le_bytes([lo, hi]),
        _ => 0xFFFD,
    });
    char::decode_utf16(units)
        .map(|r| r.unwrap_or('\u{FFFD}'))
        .collect()
}

fn decode_utf32le(bytes: &[u8]) -> String {
    bytes
        .chunks(4)
        .map(|quad| match *quad {
            [a, b, c, d] => char::from_u32(u32::from_le_bytes([a, b, c, d])).unwrap_or('\u{FFFD}'),
            _ => '\u{FFFD}',
        })
        .collect()
}

/// Decode and parse the body of `message` as upstream does.
pub(crate) fn parse_body(message: &Message) -> Result<Json, BodyError> {
    let props = message.system();
    let encoding = props
        .get(system::CONTENT_ENCODING)
        .ok_or(BodyError::MissingContentEncoding)?;
    let bytes = message.body();
    let text: Cow<'_, str> = if encoding.eq_ignore_ascii_case("utf-8") {
        String::from_utf8_lossy(bytes)
    } else if encoding.eq_ignore_ascii_case("utf-16") {
        Cow::Owned(decode_utf16le(bytes))
    } else if encoding.eq_ignore_ascii_case("utf-32") {
        Cow::Owned(decode_utf32le(bytes))
    } else {
        return Err(BodyError::UnsupportedContentEncoding(encoding.to_owned()));
    };
    let content_type = props
        .get(system::CONTENT_TYPE)
        .ok_or(BodyError::MissingContentType)?;
    if !content_type.eq_ignore_ascii_case("application/json") {
        return Err(BodyError::UnsupportedContentType(content_type.to_owned()));
    }
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    match serde_json::from_str::<Json>(text) {
        Ok(json @ Json::Object(_)) => Ok(json),
        Ok(_) => Err(BodyError::InvalidJson(
            "the top level is not an object".to_owned(),
        )),
        Err(e) => Err(BodyError::InvalidJson(e.to_string())),
    }
}

/// Whether Newtonsoft.Json (`DateParseHandling.DateTime`) reads this JSON string as a date:
/// `/Date(ticks[±hhmm])/`, or ISO-8601 `yyyy-MM-ddTHH:mm:ss[.fffffff][Z|±hh[:]mm]` of 19 to 40
/// characters with a valid calendar date.
pub fn is_newtonsoft_date(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        Some(b'/') => is_microsoft_date(s),
        Some(c)
            if c.is_ascii_digit() && (19..=40).contains(&b.len()) && b.get(10) == Some(&b'T') =>
        {
            is_iso_date(b)
        }
        _ => false,
    }
}

fn is_microsoft_date(s: &str) -> bool {
    let Some(inner) = s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) else {
        return false;
    };
    // ticks: optional '-' then digits; then an optional offset '+hhmm' / '-hhmm' / '+hh'.
    let b = inner.as_bytes();
    let sign = usize::from(b.first() == Some(&b'-'));
    let ticks = b
        .get(sign..)
        .unwrap_or(&[])
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if ticks == 0 || ticks > 19 {
        return false;
    }
    let offset = b.get(sign + ticks..).unwrap_or(&[]);
    match offset {
        [] => true,
        [b'+' | b'-', rest @ ..] => {
            (rest.len() == 2 || rest.len() == 4) && rest.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

fn two(b: &[u8], at: usize) -> Option<u32> {
    match b.get(at..at + 2)? {
        [x @ b'0'..=b'9', y @ b'0'..=b'9'] => Some(u32::from(x - b'0') * 10 + u32::from(y - b'0')),
        _ => None,
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

fn is_iso_date(b: &[u8]) -> bool {
    let date_ok = (|| {
        let year = two(b, 0)? * 100 + two(b, 2)?;
        let month = two(b, 5)?;
        let day = two(b, 8)?;
        Some(
            year >= 1
                && b.get(4) == Some(&b'-')
                && b.get(7) == Some(&b'-')
                && (1..=12).contains(&month)
                && day >= 1
                && day <= days_in_month(year, month),
        )
    })();
    if date_ok != Some(true) {
        return false;
    }
    let time_ok = (|| {
        let (h, m, s) = (two(b, 11)?, two(b, 14)?, two(b, 17)?);
        Some(
            b.get(13) == Some(&b':')
                && b.get(16) == Some(&b':')
                && h <= 24
                && m < 60
                && s < 60
                && (h != 24 || (m == 0 && s == 0)),
        )
    })();
    if time_ok != Some(true) {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let digits = b
            .get(i + 1..)
            .unwrap_or(&[])
            .iter()
            .take(7)
            .take_while(|c| c.is_ascii_digit())
            .count();
        let fraction = b.get(i + 1..i + 1 + digits).unwrap_or(&[]);
        let midnight = b.get(11..13) == Some(b"24");
        if fraction.is_empty() || (midnight && fraction.iter().any(|&d| d != b'0')) {
            return false;
        }
        i += 1 + fraction.len();
    }
    is_iso_zone(b, i)
}

/// Newtonsoft's `ParseZone`: `Z`, or `±hh` with optional `[:]mm`, then the end.
fn is_iso_zone(b: &[u8], mut i: usize) -> bool {
    let end = b.len();
    if i < end {
        match b.get(i) {
            Some(b'z' | b'Z') => i += 1,
            Some(&c) => {
                if i + 2 < end && two(b, i + 1).is_some() && (c == b'+' || c == b'-') {
                    i += 3;
                }
                if i < end {
                    if b.get(i) == Some(&b':') {
                        i += 1;
                    }
                    if i + 1 < end && two(b, i).is_some() {
                        i += 2;
                    }
                }
            }
            None => {}
        }
    }
    i == end
}

/// The value `path` selects in a parsed body.
pub(crate) fn query<'j>(body: &'j Json, path: &BodyPath) -> BodyValue<'j> {
    BodyValue::of(path.select(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_like_newtonsoft() {
        for date in [
            "2017-03-09T00:00:00.000Z",
            "2017-02-15T00:42:19.8563501Z",
            "2017-03-09T00:00:00",
            "2017-03-09T24:00:00",
            "2016-02-29T10:00:00+05:30",
            "2016-02-29T10:00:00-0530",
            "2016-02-29T10:00:00+05",
            "/Date(1234567890)/",
            "/Date(-1234+0500)/",
        ] {
            assert!(is_newtonsoft_date(date), "{date}");
        }
        for text in [
            "2017-03-09",
            "2017-02-30T00:00:00Z",
            "2017-03-09T24:00:01Z",
            "2017-03-09T24:00:00.1Z",
            "2017-03-09 00:00:00Z",
            "2017-03-09T00:00:00.Z",
            "2017-03-09T00:00:00Zx",
            "One Microsoft Way",
            "/Date()/",
            "0000-01-01T00:00:00",
        ] {
            assert!(!is_newtonsoft_date(text), "{text}");
        }
    }

    fn message(body: &[u8], encoding: Option<&str>, content_type: Option<&str>) -> Message {
        let mut m = Message::new(body.to_vec());
        if let Some(e) = encoding {
            m = m.with_system(system::CONTENT_ENCODING, e);
        }
        if let Some(t) = content_type {
            m = m.with_system(system::CONTENT_TYPE, t);
        }
        m
    }

    #[test]
    fn encodings_and_errors() {
        let utf16: Vec<u8> = "{\"a\":1}"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let json = parse_body(&message(&utf16, Some("UTf-16"), Some("application/json")));
        assert_eq!(json.unwrap()["a"], 1);
        let utf32: Vec<u8> = "{\"a\":1}"
            .chars()
            .flat_map(|c| (c as u32).to_le_bytes())
            .collect();
        assert!(parse_body(&message(&utf32, Some("utf-32"), Some("Application/JSON"))).is_ok());
        assert_eq!(
            parse_body(&message(b"{}", None, None)),
            Err(BodyError::MissingContentEncoding)
        );
        assert_eq!(
            parse_body(&message(b"{}", Some("utf-8"), None)),
            Err(BodyError::MissingContentType)
        );
        assert!(matches!(
            parse_body(&message(&utf16, Some("utf-8"), Some("application/json"))),
            Err(BodyError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_body(&message(b"[1]", Some("utf-8"), Some("application/json"))),
            Err(BodyError::InvalidJson(_))
        ));
        assert!(
            parse_body(&message(
                "\u{FEFF}{}".as_bytes(),
                Some("utf-8"),
                Some("application/json")
            ))
            .is_ok()
        );
    }
}
