//! IoT Hub's rules for twin property documents, so that what a module reports here is accepted
//! upstream later: keys up to 1 KB without control characters, `.`, `$` or spaces; objects at
//! most 10 levels deep; string values up to 4 KB; a whole document up to 32 KB.

use serde_json::{Map, Value};

/// The largest property document IoT Hub accepts, in bytes of JSON.
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024;
/// The deepest nesting of objects IoT Hub accepts.
pub const MAX_DEPTH: usize = 10;
const MAX_KEY_BYTES: usize = 1024;
const MAX_STRING_BYTES: usize = 4 * 1024;

/// Why a property document or patch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    /// Not a JSON object.
    #[error("twin properties must be a JSON object")]
    NotAnObject,
    /// A key IoT Hub would refuse.
    #[error(
        "property name {0:?} is not allowed (at most 1 KB, no control characters, '.', '$' or spaces)"
    )]
    BadKey(String),
    /// Objects nested too deep.
    #[error("properties are nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A string value too long.
    #[error("the value of {0:?} is longer than 4 KB")]
    ValueTooLong(String),
    /// The document is too big.
    #[error("twin properties would be {0} bytes; IoT Hub accepts at most {MAX_DOCUMENT_BYTES}")]
    TooLarge(usize),
}

fn key_ok(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && !key
            .chars()
            .any(|c| c.is_control() || c == '.' || c == '$' || c == ' ')
}

/// Check every key and value of `props` (a document or a patch).
pub fn keys(props: &Map<String, Value>) -> Result<(), TwinError> {
    fn walk(map: &Map<String, Value>, depth: usize) -> Result<(), TwinError> {
        if depth > MAX_DEPTH {
            return Err(TwinError::TooDeep);
        }
        for (key, value) in map {
            if !key_ok(key) {
                return Err(TwinError::BadKey(key.clone()));
            }
            match value {
                Value::Object(sub) => walk(sub, depth + 1)?,
                Value::String(s) if s.len() > MAX_STRING_BYTES => {
                    return Err(TwinError::ValueTooLong(key.clone()));
                }
                _ => {}
            }
        }
        Ok(())
    }
    walk(props, 1)
}

/// Check a whole document: its keys and values, and its size.
pub fn document(props: &Map<String, Value>) -> Result<(), TwinError> {
    keys(props)?;
    let size = serde_json::to_vec(props).map_or(usize::MAX, |v| v.len());
    if size > MAX_DOCUMENT_BYTES {
        return Err(TwinError::TooLarge(size));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obj;
    use serde_json::json;

    #[test]
    fn iot_hub_rules() {
        assert!(document(&obj(json!({"SendData": true, "a": {"b": [1, "x"]}}))).is_ok());
        for bad in ["a.b", "$x", "with space", "ctl\u{1}", ""] {
            let mut m = Map::new();
            m.insert(bad.into(), json!(1));
            assert_eq!(keys(&m), Err(TwinError::BadKey(bad.into())));
        }
        let mut deep = json!(1);
        for _ in 0..11 {
            deep = json!({ "k": deep });
        }
        assert_eq!(keys(&obj(deep)), Err(TwinError::TooDeep));
        let long = "x".repeat(5000);
        assert!(matches!(
            keys(&obj(json!({"k": long}))),
            Err(TwinError::ValueTooLong(_))
        ));
        let big: Map<String, Value> = (0..20)
            .map(|i| (format!("k{i}"), json!("y".repeat(2000))))
            .collect();
        assert!(matches!(document(&big), Err(TwinError::TooLarge(_))));
    }
}
