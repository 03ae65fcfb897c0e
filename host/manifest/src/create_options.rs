//! `settings.createOptions` chunking (iotedge.md §1.3).
//!
//! IoT Hub limits one twin value to 512 bytes, so long create options are split over
//! `createOptions`, `createOptions01`, … `createOptions99`. Reading, as IoT Edge does
//! (`DockerConfig.cs`, `JsonEx.ChunkedValue`):
//! - take the keys that are `createOptions` followed by digits, case-insensitively;
//! - sort them ordinally (ignoring case); the first must have no number, the *n*-th must carry the
//!   number *n* (`createOptions01` or `createOptions1`); anything else is a format error (400);
//! - only the first 100 chunks are read;
//! - concatenate them and parse the text as JSON; blank text and `"null"` mean no options.
//!
//! A chunk is normally a string. `null` counts as empty, and an object is taken as its JSON text,
//! as IoT Edge's `JToken.ToString()` does.

use serde_json::{Map, Value};

use crate::error::FormatError;
use crate::json::{Obj, kind};

/// The base key.
pub const CREATE_OPTIONS_KEY: &str = "createOptions";
/// IoT Hub's limit on one twin value, and so the chunk size (`Constants.TwinValueMaxSize`).
pub const TWIN_VALUE_MAX_SIZE: usize = 512;
/// The most chunks read or written (`Constants.TwinValueMaxChunks`).
pub const TWIN_VALUE_MAX_CHUNKS: usize = 100;

/// The number suffix of a chunk key (`""` for the first), or `None` if `key` is not a chunk key.
fn chunk_suffix(key: &str) -> Option<&str> {
    let prefix = key.get(..CREATE_OPTIONS_KEY.len())?;
    if !prefix.eq_ignore_ascii_case(CREATE_OPTIONS_KEY) {
        return None;
    }
    let suffix = &key[CREATE_OPTIONS_KEY.len()..];
    suffix.bytes().all(|b| b.is_ascii_digit()).then_some(suffix)
}

/// Joins the `createOptions*` chunks of a `settings` object into one text.
pub(crate) fn join_chunks(settings: &Obj<'_>) -> Result<String, FormatError> {
    let mut keys: Vec<(&str, &Value)> = settings
        .entries()
        .filter(|(key, _)| chunk_suffix(key).is_some())
        .collect();
    keys.sort_by_cached_key(|(key, _)| key.to_ascii_uppercase());

    let mut joined = String::new();
    for (index, (key, value)) in keys.into_iter().take(TWIN_VALUE_MAX_CHUNKS).enumerate() {
        let suffix = chunk_suffix(key).unwrap_or_default();
        let in_place = if index == 0 {
            suffix.is_empty()
        } else {
            suffix.parse::<i32>().ok() == i32::try_from(index).ok()
        };
        if !in_place {
            let wanted = if index == 0 {
                CREATE_OPTIONS_KEY.to_owned()
            } else {
                format!("{CREATE_OPTIONS_KEY}{index:02}")
            };
            return Err(settings.error(
                key,
                format!(
                    "createOptions chunks out of sequence: expected {wanted} here, found {key}"
                ),
            ));
        }
        match value {
            Value::String(text) => joined.push_str(text),
            Value::Null => {}
            Value::Object(_) | Value::Array(_) => joined.push_str(&value.to_string()),
            other => {
                return Err(
                    settings.error(key, format!("expected a string, found {}", kind(other)))
                );
            }
        }
    }
    Ok(joined)
}

/// Parses joined create options: `None` for blank text or `null`, else a JSON object.
pub(crate) fn parse(path: &str, text: &str) -> Result<Option<Map<String, Value>>, FormatError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("null") {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(Value::Null) => Ok(None),
        Ok(other) => Err(FormatError::new(
            path,
            format!(
                "create options must be a JSON object, found {}",
                kind(&other)
            ),
        )),
        Err(error) => Err(FormatError::new(
            path,
            format!("create options are not valid JSON: {error}"),
        )),
    }
}

/// Splits serialized create options into `(key, chunk)` pairs the way IoT Edge writes them:
/// 512-character chunks under `createOptions`, `createOptions01`, … (at most 100).
/// Characters are counted as Unicode scalar values, so a chunk never splits a character.
pub fn chunk(serialized: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = serialized.chars().collect();
    if chars.is_empty() {
        return vec![(CREATE_OPTIONS_KEY.to_owned(), String::new())];
    }
    chars
        .chunks(TWIN_VALUE_MAX_SIZE)
        .take(TWIN_VALUE_MAX_CHUNKS)
        .enumerate()
        .map(|(index, piece)| {
            let key = if index == 0 {
                CREATE_OPTIONS_KEY.to_owned()
            } else {
                format!("{CREATE_OPTIONS_KEY}{index:02}")
            };
            (key, piece.iter().collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn joined(settings: Value) -> Result<String, FormatError> {
        join_chunks(&Obj::new("s", &settings).unwrap())
    }

    #[test]
    fn joins_in_ordinal_order_ignoring_case() {
        let text = joined(json!({
            "image": "x",
            "createOptions02": "c",
            "CREATEOPTIONS": "a",
            "createoptions01": "b",
        }))
        .unwrap();
        assert_eq!(text, "abc");
    }

    #[test]
    fn accepts_unpadded_numbers() {
        assert_eq!(
            joined(json!({"createOptions": "a", "createOptions1": "b"})).unwrap(),
            "ab"
        );
    }

    #[test]
    fn gaps_and_missing_first_chunk_are_errors() {
        let gap = joined(json!({"createOptions": "a", "createOptions02": "b"})).unwrap_err();
        assert_eq!(gap.path, "s.createOptions02");
        assert!(gap.message.contains("expected createOptions01"), "{gap}");
        let no_first = joined(json!({"createOptions01": "a"})).unwrap_err();
        assert!(
            no_first.message.contains("expected createOptions here"),
            "{no_first}"
        );
        let duplicate = joined(json!({"createOptions": "a", "createoptions": "b"})).unwrap_err();
        assert!(
            duplicate.message.contains("expected createOptions01"),
            "{duplicate}"
        );
    }

    #[test]
    fn other_keys_are_not_chunks() {
        assert_eq!(
            joined(json!({"createOptionsX": "a", "xcreateOptions": "b"})).unwrap(),
            ""
        );
        assert_eq!(chunk_suffix("createOptions"), Some(""));
        assert_eq!(chunk_suffix("createOpt"), None);
        assert_eq!(chunk_suffix("créateOptions"), None);
    }

    #[test]
    fn chunk_values_must_be_strings() {
        assert!(joined(json!({"createOptions": 5})).is_err());
        assert_eq!(joined(json!({"createOptions": null})).unwrap(), "");
        assert_eq!(
            joined(json!({"createOptions": {"a": 1}})).unwrap(),
            r#"{"a":1}"#
        );
    }

    #[test]
    fn blank_and_null_mean_none() {
        assert_eq!(parse("p", "").unwrap(), None);
        assert_eq!(parse("p", "  ").unwrap(), None);
        assert_eq!(parse("p", "null").unwrap(), None);
        assert_eq!(parse("p", "NULL").unwrap(), None);
        assert_eq!(parse("p", "{}").unwrap(), Some(Map::new()));
        assert!(parse("p", "[1]").is_err());
        assert!(
            parse("p", "{\"a\":")
                .unwrap_err()
                .message
                .contains("not valid JSON")
        );
    }

    #[test]
    fn chunking_round_trips() {
        let long = format!("{{\"Env\":[\"{}\"]}}", "x".repeat(1200));
        let chunks = chunk(&long);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].0, "createOptions01");
        assert_eq!(chunks[2].0, "createOptions02");
        let settings: Map<String, Value> = chunks
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        assert_eq!(joined(Value::Object(settings)).unwrap(), long);
        assert_eq!(chunk(""), vec![("createOptions".to_owned(), String::new())]);
    }
}
