//! The few .NET behaviours that route conditions expose, reproduced on Rust strings.
//!
//! - **Numbers** ([`parse_double`]): `as_number('…')` and number literals use
//!   `double.TryParse(s, NumberStyles.Any, CultureInfo.InvariantCulture)`: surrounding white space,
//!   a leading or trailing sign, parentheses for a negative number, `,` thousands separators in
//!   the integer part, a decimal point, an exponent, and the words `Infinity`/`NaN`
//!   (case-insensitive). Overflow gives ±∞ (as .NET Core 3+), so `as_number('10e1000') = 1/0`.
//!   Not supported: the invariant currency sign `¤`.
//! - **Strings are UTF-16** in .NET: `length`, `substring` and `index_of` count UTF-16 code units,
//!   and string ordering (`<`, `>`, …) is ordinal on UTF-16 code units ([`ordinal_cmp`]), which
//!   differs from Rust's byte order only between supplementary characters and U+E000–U+FFFF.
//!   A `substring` whose cut would split a surrogate pair is `undefined` (a Rust string cannot
//!   hold half a character; .NET would return a broken string).
//! - **Case mapping** (`lower`/`upper`) is per character and one-to-one like .NET's invariant
//!   culture: a character whose Unicode mapping is several characters (`ß` → `SS`) is kept.
//!
//! ASCII strings take fast paths everywhere.

use std::cmp::Ordering;

fn is_dotnet_white(b: u8) -> bool {
    b == b' ' || (0x09..=0x0D).contains(&b)
}

/// `double.TryParse(s, NumberStyles.Any, InvariantCulture)`, or `None` when it would fail.
/// `NaN` parses (callers treat it as undefined).
pub(crate) fn parse_double(s: &str) -> Option<f64> {
    let bytes = s.as_bytes();
    let start = bytes.iter().position(|&b| !is_dotnet_white(b))?;
    let end = bytes.iter().rposition(|&b| !is_dotnet_white(b))? + 1;
    let t = s.get(start..end)?;
    // Fast path: Rust's grammar on these characters is a subset of .NET's, with the same value.
    if t.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && let Ok(v) = t.parse::<f64>()
    {
        return Some(v);
    }
    parse_special(t).or_else(|| parse_general(t.as_bytes()))
}

fn parse_special(t: &str) -> Option<f64> {
    let (negative, word) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..)?),
        Some(b'+') => (false, t.get(1..)?),
        _ => (false, t),
    };
    if word.eq_ignore_ascii_case("infinity") {
        Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        })
    } else if word.eq_ignore_ascii_case("nan") {
        Some(f64::NAN)
    } else {
        None
    }
}

/// The general .NET grammar: `[sign|'('] digits[,digits…][.digits][e[sign]digits] [sign] [')']`.
fn parse_general(t: &[u8]) -> Option<f64> {
    let mut i = 0;
    let mut negative = false;
    let mut signed = false;
    let mut parens = false;
    match t.first() {
        Some(b'-') => {
            negative = true;
            signed = true;
            i += 1;
        }
        Some(b'+') => {
            signed = true;
            i += 1;
        }
        Some(b'(') => {
            parens = true;
            negative = true;
            i += 1;
        }
        _ => {}
    }
    let mut mantissa = String::new();
    let mut any_digit = false;
    while let Some(&b) = t.get(i) {
        if b.is_ascii_digit() {
            mantissa.push(char::from(b));
            any_digit = true;
        } else if b == b',' && any_digit {
            // thousands separator: ignored
        } else {
            break;
        }
        i += 1;
    }
    if t.get(i) == Some(&b'.') {
        mantissa.push('.');
        i += 1;
        while let Some(&b) = t.get(i).filter(|b| b.is_ascii_digit()) {
            mantissa.push(char::from(b));
            any_digit = true;
            i += 1;
        }
    }
    if !any_digit {
        return None;
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        let mut exp = String::from("e");
        if let Some(&s @ (b'+' | b'-')) = t.get(j) {
            exp.push(char::from(s));
            j += 1;
        }
        let digits_at = j;
        while t.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j > digits_at {
            exp.push_str(std::str::from_utf8(t.get(digits_at..j)?).ok()?);
            mantissa.push_str(&exp);
            i = j;
        }
    }
    if !signed && !parens {
        match t.get(i) {
            Some(b'-') => {
                negative = true;
                i += 1;
            }
            Some(b'+') => i += 1,
            _ => {}
        }
    }
    if parens {
        if t.get(i) != Some(&b')') {
            return None;
        }
        i += 1;
    }
    if i != t.len() {
        return None;
    }
    let value: f64 = mantissa.parse().ok()?;
    Some(if negative { -value } else { value })
}

/// Length in UTF-16 code units.
pub(crate) fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().map(char::len_utf16).sum()
    }
}

/// Byte offset of UTF-16 index `index`, or `None` if it is past the end or inside a character.
fn byte_offset(s: &str, index: usize) -> Option<usize> {
    if s.is_ascii() {
        return (index <= s.len()).then_some(index);
    }
    let mut units = 0;
    for (i, c) in s.char_indices() {
        if units == index {
            return Some(i);
        }
        if units > index {
            return None;
        }
        units += c.len_utf16();
    }
    (units == index).then_some(s.len())
}

/// `s.Substring(start)` / `s.Substring(start, length)` with IoT Edge's bounds: `undefined` (None)
/// unless `0 <= start <= len` (`start < len` with a length) and `0 <= length <= len - start`.
/// Fractional arguments are truncated, as the C# `(int)` cast does.
pub(crate) fn substring(s: &str, start: f64, length: Option<f64>) -> Option<&str> {
    let len = utf16_len(s) as f64;
    let valid = match length {
        None => start >= 0.0 && start <= len,
        Some(l) => start >= 0.0 && start < len && l >= 0.0 && l <= len - start,
    };
    if !valid {
        return None;
    }
    // In range and non-negative, so the casts cannot saturate.
    let from = byte_offset(s, start as usize)?;
    let to = match length {
        None => s.len(),
        Some(l) => byte_offset(s, start as usize + l as usize)?,
    };
    s.get(from..to)
}

/// `s.IndexOf(fragment, StringComparison.Ordinal)` as a UTF-16 index, -1 when absent.
pub(crate) fn index_of(s: &str, fragment: &str) -> f64 {
    match s.find(fragment) {
        Some(i) => utf16_len(s.get(..i).unwrap_or("")) as f64,
        None => -1.0,
    }
}

fn utf16_key(c: char) -> (u16, u16) {
    let mut buf = [0u16; 2];
    let units = c.encode_utf16(&mut buf);
    (
        units.first().copied().unwrap_or(0),
        units.get(1).copied().unwrap_or(0),
    )
}

/// `string.Compare(a, b, StringComparison.Ordinal)`: UTF-16 code unit order.
pub(crate) fn ordinal_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() || b.is_ascii() {
        // With one side ASCII, the first difference involves an ASCII character, where UTF-8
        // byte order and UTF-16 order agree.
        return a.cmp(b);
    }
    let mut x = a.chars();
    let mut y = b.chars();
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) if p == q => {}
            (Some(p), Some(q)) => return utf16_key(p).cmp(&utf16_key(q)),
        }
    }
}

fn map_chars(s: &str, f: impl Fn(char) -> Option<char>) -> String {
    s.chars().map(|c| f(c).unwrap_or(c)).collect()
}

fn single<I: Iterator<Item = char>>(mut it: I) -> Option<char> {
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

/// `ToLowerInvariant`.
pub(crate) fn to_lower(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        map_chars(s, |c| single(c.to_lowercase()))
    }
}

/// `ToUpperInvariant`.
pub(crate) fn to_upper(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_uppercase()
    } else {
        map_chars(s, |c| single(c.to_uppercase()))
    }
}

/// `StringComparison.OrdinalIgnoreCase` equality of two characters.
pub(crate) fn chars_eq_ignore_case(a: char, b: char) -> bool {
    a == b
        || if a.is_ascii() && b.is_ascii() {
            a.eq_ignore_ascii_case(&b)
        } else {
            single(a.to_uppercase()).unwrap_or(a) == single(b.to_uppercase()).unwrap_or(b)
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_like_dotnet() {
        for (text, value) in [
            ("3", 3.0),
            ("  -3.5 ", -3.5),
            ("10e10", 1e11),
            ("1,000", 1000.0),
            ("(12)", -12.0),
            ("12-", -12.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("-Infinity", f64::NEG_INFINITY),
            ("10e1000", f64::INFINITY),
            ("10000000000000000000000000", 1e25),
        ] {
            assert_eq!(parse_double(text), Some(value), "{text}");
        }
        for text in [
            "", "apple", "e5", "1e", "--1", ",1", "(1", "1 2", "0x10", "inf",
        ] {
            assert_eq!(parse_double(text), None, "{text}");
        }
        assert!(parse_double("NaN").is_some_and(f64::is_nan));
    }

    #[test]
    fn strings_count_utf16_units() {
        assert_eq!(utf16_len("a😀"), 3);
        assert_eq!(substring("a😀b", 1.0, Some(2.0)), Some("😀"));
        assert_eq!(substring("a😀b", 2.0, None), None);
        assert_eq!(substring("hello", 4.0, Some(1.0)), Some("o"));
        assert_eq!(substring("abc", 3.0, None), Some(""));
        assert_eq!(substring("abc", 3.0, Some(0.0)), None);
        assert_eq!(substring("abc", 1.5, Some(1.5)), Some("b"));
        assert_eq!(substring("abc", f64::NAN, None), None);
        assert_eq!(index_of("é😀x", "x"), 3.0);
        assert_eq!(index_of("abc", ""), 0.0);
    }

    #[test]
    fn ordinal_order_is_utf16() {
        // U+FF5E sorts before a supplementary character in UTF-8 but after it in UTF-16.
        assert_eq!(ordinal_cmp("\u{FF5E}", "😀"), Ordering::Greater);
        assert_eq!(ordinal_cmp("a", "b"), Ordering::Less);
        assert_eq!(ordinal_cmp("é", "é"), Ordering::Equal);
    }

    #[test]
    fn case_mapping_is_one_to_one() {
        assert_eq!(to_upper("straße"), "STRAßE");
        assert_eq!(to_lower("ÄB"), "äb");
        assert!(chars_eq_ignore_case('ä', 'Ä'));
    }
}
