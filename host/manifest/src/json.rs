//! Path-aware readers over `serde_json` values.
//!
//! The manifest is read by hand rather than with `#[derive(Deserialize)]` so that every error
//! names the JSON path of the offending value (`$edgeAgent.modules.filter.restartPolicy`) and says
//! what was expected. Conventions, following IoT Edge's (Newtonsoft) reader:
//! - unknown keys are ignored;
//! - an optional *string* or *object* that is `null` counts as absent;
//! - a number or an enum value that is `null` is an error (IoT Edge's `DisallowNull` fields);
//! - the twin bookkeeping keys `$version` and `$metadata` are never content.

use serde_json::{Map, Value};

use crate::error::FormatError;

/// Keys IoT Hub adds to every twin collection; they are not part of the configuration.
pub(crate) const TWIN_METADATA_KEYS: [&str; 2] = ["$version", "$metadata"];

/// Whether `key` is twin bookkeeping rather than content.
pub(crate) fn is_twin_metadata(key: &str) -> bool {
    TWIN_METADATA_KEYS.contains(&key)
}

/// "a string", "an object", … for error messages.
pub(crate) use verge_message::json::json_type as kind;

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn expected(path: &str, what: &str, value: &Value) -> FormatError {
    FormatError::new(path, format!("expected {what}, found {}", kind(value)))
}

/// The value as a string.
pub(crate) fn as_str<'a>(path: &str, value: &'a Value) -> Result<&'a str, FormatError> {
    value
        .as_str()
        .ok_or_else(|| expected(path, "a string", value))
}

/// The value as an integer in `min..=max`.
pub(crate) fn as_int(path: &str, value: &Value, min: i64, max: i64) -> Result<i64, FormatError> {
    let Value::Number(number) = value else {
        return Err(expected(path, "an integer", value));
    };
    let out_of_range = || FormatError::new(path, format!("{number} is out of range {min}..={max}"));
    if let Some(n) = number.as_i64() {
        if (min..=max).contains(&n) {
            return Ok(n);
        }
        return Err(out_of_range());
    }
    if number.as_u64().is_some() {
        // Larger than i64::MAX: out of every range this crate uses.
        return Err(out_of_range());
    }
    Err(FormatError::new(
        path,
        format!("expected an integer, found {number}"),
    ))
}

/// A string value matched case-insensitively against `table`; the error lists the names.
pub(crate) fn as_enum<T: Copy>(
    path: &str,
    value: &Value,
    table: &[(&str, T)],
) -> Result<T, FormatError> {
    let text = as_str(path, value)?;
    table
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(name, _)| *name).collect();
            FormatError::new(
                path,
                format!("unknown value {:?} (expected {})", text, names.join(", ")),
            )
        })
}

/// A JSON object together with its path, for reading fields with precise errors.
#[derive(Clone, Debug)]
pub(crate) struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    /// `value` as an object at `path`.
    pub(crate) fn new(path: impl Into<String>, value: &'a Value) -> Result<Self, FormatError> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Self { path, map }),
            other => Err(expected(&path, "an object", other)),
        }
    }

    /// This object's path.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The path of a field of this object.
    pub(crate) fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// An error about a field of this object.
    pub(crate) fn error(&self, key: &str, message: impl Into<String>) -> FormatError {
        FormatError::new(self.path_of(key), message)
    }

    /// The underlying map, bookkeeping keys included.
    pub(crate) fn map(&self) -> &'a Map<String, Value> {
        self.map
    }

    /// The entries, without `$version` / `$metadata`.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.map
            .iter()
            .filter(|(key, _)| !is_twin_metadata(key))
            .map(|(key, value)| (key.as_str(), value))
    }

    /// Whether the object has no entries besides `$version` / `$metadata`.
    pub(crate) fn is_empty_content(&self) -> bool {
        self.entries().next().is_none()
    }

    /// The field, `None` when absent or `null`.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The field; absent or `null` is an error.
    pub(crate) fn required(&self, key: &str) -> Result<&'a Value, FormatError> {
        match self.map.get(key) {
            None => Err(self.error(key, "required field is missing")),
            Some(Value::Null) => Err(self.error(key, "required field is null")),
            Some(value) => Ok(value),
        }
    }

    /// The field when present; `null` is an error (for numbers and enums).
    pub(crate) fn non_null(&self, key: &str) -> Result<Option<&'a Value>, FormatError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Null) => Err(self.error(key, "must not be null")),
            Some(value) => Ok(Some(value)),
        }
    }

    /// A required string field.
    pub(crate) fn str_req(&self, key: &str) -> Result<&'a str, FormatError> {
        as_str(&self.path_of(key), self.required(key)?)
    }

    /// An optional string field (`null` is absent).
    pub(crate) fn str_opt(&self, key: &str) -> Result<Option<&'a str>, FormatError> {
        self.get(key)
            .map(|v| as_str(&self.path_of(key), v))
            .transpose()
    }

    /// A required object field.
    pub(crate) fn obj_req(&self, key: &str) -> Result<Obj<'a>, FormatError> {
        Obj::new(self.path_of(key), self.required(key)?)
    }

    /// An optional object field (`null` is absent).
    pub(crate) fn obj_opt(&self, key: &str) -> Result<Option<Obj<'a>>, FormatError> {
        self.get(key)
            .map(|v| Obj::new(self.path_of(key), v))
            .transpose()
    }

    /// An optional integer field in `min..=max` (`null` is an error).
    pub(crate) fn int_opt(
        &self,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<Option<i64>, FormatError> {
        self.non_null(key)?
            .map(|v| as_int(&self.path_of(key), v, min, max))
            .transpose()
    }

    /// An optional enum field (`null` is an error).
    pub(crate) fn enum_opt<T: Copy>(
        &self,
        key: &str,
        table: &[(&str, T)],
    ) -> Result<Option<T>, FormatError> {
        self.non_null(key)?
            .map(|v| as_enum(&self.path_of(key), v, table))
            .transpose()
    }

    /// A required enum field.
    pub(crate) fn enum_req<T: Copy>(
        &self,
        key: &str,
        table: &[(&str, T)],
    ) -> Result<T, FormatError> {
        as_enum(&self.path_of(key), self.required(key)?, table)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn errors_name_the_path() {
        let value = json!({"a": {"b": 3, "n": null, "s": "x"}});
        let root = Obj::new("$edgeAgent", &value).unwrap();
        let a = root.obj_req("a").unwrap();
        assert_eq!(a.path(), "$edgeAgent.a");
        assert_eq!(
            a.str_req("b").unwrap_err().to_string(),
            "$edgeAgent.a.b: expected a string, found a number"
        );
        assert_eq!(
            a.str_req("missing").unwrap_err().to_string(),
            "$edgeAgent.a.missing: required field is missing"
        );
        assert_eq!(a.str_opt("n").unwrap(), None);
        assert!(a.int_opt("n", 0, 1).is_err());
        assert_eq!(a.int_opt("b", 0, 5).unwrap(), Some(3));
        assert_eq!(
            a.int_opt("b", 0, 2).unwrap_err().message,
            "3 is out of range 0..=2"
        );
    }

    #[test]
    fn integers_reject_fractions_and_huge_values() {
        assert!(as_int("p", &json!(1.5), 0, 10).is_err());
        assert!(as_int("p", &json!(u64::MAX), 0, i64::MAX).is_err());
        assert_eq!(as_int("p", &json!(-1), -5, 5).unwrap(), -1);
    }

    #[test]
    fn enums_match_case_insensitively_and_list_choices() {
        let table = [("never", 0), ("always", 1)];
        assert_eq!(as_enum("p", &json!("Always"), &table).unwrap(), 1);
        assert_eq!(
            as_enum("p", &json!("sometimes"), &table)
                .unwrap_err()
                .to_string(),
            "p: unknown value \"sometimes\" (expected never, always)"
        );
    }

    #[test]
    fn metadata_keys_are_not_content() {
        let value = json!({"$version": 4, "$metadata": {}});
        let obj = Obj::new("", &value).unwrap();
        assert!(obj.is_empty_content());
        assert_eq!(obj.map().len(), 2);
    }
}
