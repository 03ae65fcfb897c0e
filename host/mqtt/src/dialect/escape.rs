//! Percent-encoding as IoT Edge's hub does it on MQTT topics.
//!
//! - [`escape_into`] is .NET's `Uri.EscapeDataString` (RFC 3986): every byte of the UTF-8 text
//!   except the unreserved characters `A-Z a-z 0-9 - . _ ~` becomes `%XX` with upper-case hex.
//!   So `$.ct` goes out as `%24.ct` and `application/json` as `application%2Fjson`; a space is
//!   `%20`, never `+`.
//! - [`unescape_into`] / [`unescape`] are .NET's `Uri.UnescapeDataString`: lenient. Escapes are
//!   decoded case-insensitively (`%2f` and `%2F`); an escape cut short (`%4`, `%`, `%zz`) stays as
//!   it is, and so do escapes whose bytes are not UTF-8 (`%FF`); `+` stays `+`. Unescaping never
//!   fails and never allocates when there is no `%`.

use std::borrow::Cow;

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Whether `b` is an RFC 3986 unreserved character (left as is by `EscapeDataString`).
#[inline]
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Append `text` to `out`, percent-encoded like `Uri.EscapeDataString`.
pub fn escape_into(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let mut run = 0; // start of the current run of unreserved bytes
    for (i, &b) in bytes.iter().enumerate() {
        if is_unreserved(b) {
            continue;
        }
        // `i` is an ASCII byte or the start/middle of a multi-byte char; `run..i` holds only ASCII
        // unreserved bytes, so both ends are char boundaries.
        if let Some(plain) = text.get(run..i) {
            out.push_str(plain);
        }
        out.push('%');
        out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
        out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
        run = i + 1;
    }
    if let Some(plain) = text.get(run..) {
        out.push_str(plain);
    }
}

#[inline]
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte of the escape `%XX` at `at`, if there is a complete one.
#[inline]
fn escaped_byte(bytes: &[u8], at: usize) -> Option<u8> {
    match bytes.get(at..at.checked_add(3)?)? {
        [b'%', hi, lo] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
        _ => None,
    }
}

/// Length of the UTF-8 sequence led by `b`: 1 to 4, or 0 if `b` cannot lead one.
#[inline]
fn utf8_len(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

/// Append `raw` to `out`, percent-decoded like `Uri.UnescapeDataString`.
pub fn unescape_into(raw: &str, out: &mut String) {
    let bytes = raw.as_bytes();
    let mut plain = 0; // start of text not yet copied
    let mut i = 0;
    while i < bytes.len() {
        let Some(lead) = escaped_byte(bytes, i) else {
            i += 1;
            continue;
        };
        // `i` is at an ASCII '%': a char boundary.
        if let Some(text) = raw.get(plain..i) {
            out.push_str(text);
        }
        let len = utf8_len(lead);
        let mut buf = [lead, 0, 0, 0];
        let mut complete = len > 0;
        for (k, slot) in buf.iter_mut().enumerate().take(len).skip(1) {
            match escaped_byte(bytes, i + 3 * k) {
                Some(b) => *slot = b,
                None => {
                    complete = false;
                    break;
                }
            }
        }
        let decoded = if complete {
            buf.get(..len).and_then(|b| std::str::from_utf8(b).ok())
        } else {
            None
        };
        match decoded {
            Some(text) => {
                out.push_str(text);
                i += 3 * len;
            }
            None => {
                // Not UTF-8: keep this escape as written and go on with the next byte.
                if let Some(text) = raw.get(i..i + 3) {
                    out.push_str(text);
                }
                i += 3;
            }
        }
        plain = i;
    }
    if let Some(text) = raw.get(plain..) {
        out.push_str(text);
    }
}

/// `raw` percent-decoded like `Uri.UnescapeDataString`; borrowed when it holds no `%`.
pub fn unescape(raw: &str) -> Cow<'_, str> {
    if raw.as_bytes().contains(&b'%') {
        let mut out = String::with_capacity(raw.len());
        unescape_into(raw, &mut out);
        Cow::Owned(out)
    } else {
        Cow::Borrowed(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(text: &str) -> String {
        let mut out = String::new();
        escape_into(text, &mut out);
        out
    }

    #[test]
    fn escapes_like_escape_data_string() {
        assert_eq!(esc("$.ct"), "%24.ct");
        assert_eq!(esc("application/json"), "application%2Fjson");
        assert_eq!(esc("a b+c=d&e?f#g%"), "a%20b%2Bc%3Dd%26e%3Ff%23g%25");
        assert_eq!(esc("Az09-._~"), "Az09-._~");
        assert_eq!(esc("é"), "%C3%A9");
        assert_eq!(esc("错误"), "%E9%94%99%E8%AF%AF");
        assert_eq!(esc(""), "");
    }

    #[test]
    fn unescapes_case_insensitively() {
        assert_eq!(unescape("application%2fjson"), "application/json");
        assert_eq!(unescape("application%2Fjson"), "application/json");
        assert_eq!(unescape("%24.mid"), "$.mid");
        assert_eq!(unescape("%C3%A9t%c3%a9"), "été");
        assert!(matches!(unescape("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn keeps_what_it_cannot_decode() {
        // Escapes cut short.
        assert_eq!(unescape("%"), "%");
        assert_eq!(unescape("a%4"), "a%4");
        assert_eq!(unescape("%zz%41"), "%zzA");
        // Bytes that are not UTF-8 stay escaped as written.
        assert_eq!(unescape("%FF"), "%FF");
        assert_eq!(unescape("%ff%41"), "%ffA");
        assert_eq!(unescape("%C3"), "%C3");
        assert_eq!(unescape("%C3%28"), "%C3(");
        assert_eq!(unescape("%E9%94"), "%E9%94");
        assert_eq!(unescape("%ED%A0%80"), "%ED%A0%80"); // a surrogate
        // '+' is not a space.
        assert_eq!(unescape("a+b%20c"), "a+b c");
        // Raw non-ASCII text passes through.
        assert_eq!(unescape("错%20误"), "错 误");
    }

    #[test]
    fn round_trips() {
        for text in ["", "a", "$.mid", "a b/c?d=e&f", "错误 é ~", "%41", "100%"] {
            assert_eq!(unescape(&esc(text)), text, "{text:?}");
        }
    }
}
