//! URL encoding as .NET's `System.Net.WebUtility` does it, which is what IoT Hub and IoT Edge
//! sign: ASCII letters, digits and `-_.!*()` are kept, a space becomes `+`, every other byte of
//! the UTF-8 text becomes `%XX` with upper-case hex.

/// `WebUtility.UrlEncode(text)`.
pub fn url_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for &b in text.as_bytes() {
        match b {
            b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'*'
            | b'('
            | b')' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
    out
}

/// `WebUtility.UrlDecode(text)`: `+` is a space, `%XX` (either case) a byte, and anything else,
/// a `%` not followed by two hex digits included, is kept as it is. Bytes that are not UTF-8
/// become U+FFFD. Never fails.
pub fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&c| hex_value(c));
                let lo = bytes.get(i + 2).and_then(|&c| hex_value(c));
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_webutility() {
        assert_eq!(
            url_encode("myhub.azure-devices.net/devices/dev1/modules/mod1"),
            "myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fmod1"
        );
        assert_eq!(url_encode("a b"), "a+b");
        assert_eq!(url_encode("-_.!*()"), "-_.!*()");
        assert_eq!(
            url_encode("~'$@#%&=+/:;,?"),
            "%7E%27%24%40%23%25%26%3D%2B%2F%3A%3B%2C%3F"
        );
        assert_eq!(url_encode("é"), "%C3%A9");
        assert_eq!(url_encode("abc+/="), "abc%2B%2F%3D");
        assert_eq!(url_encode(""), "");
    }

    #[test]
    fn decodes_like_webutility() {
        assert_eq!(url_decode("a%2Fb%2fc"), "a/b/c");
        assert_eq!(url_decode("a+b"), "a b");
        assert_eq!(url_decode("%C3%A9"), "é");
        // Invalid escapes are kept.
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz%4"), "%zz%4");
        assert_eq!(url_decode("%%41"), "%A");
        // Bytes that are not UTF-8 do not fail.
        assert_eq!(url_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn round_trip() {
        for text in ["n@m.et#st", "$edgeAgent", "a b+c", "été/%", ""] {
            assert_eq!(url_decode(&url_encode(text)), text);
        }
    }
}
