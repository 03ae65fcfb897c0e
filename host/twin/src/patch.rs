//! JSON merge patches (RFC 7386) and the diff that produces them.

use serde_json::{Map, Value};

/// Merge `patch` into `target`: objects merge key by key, `null` removes a key, anything else
/// replaces.
pub fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(sub) => match target.get_mut(key) {
                Some(Value::Object(existing)) => merge(existing, sub),
                _ => {
                    let mut fresh = Map::new();
                    merge(&mut fresh, sub);
                    target.insert(key.clone(), Value::Object(fresh));
                }
            },
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// The merge patch that turns `old` into `new`.
pub fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for key in old.keys() {
        if !new.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    for (key, value) in new {
        match (old.get(key), value) {
            (Some(a), b) if a == b => {}
            (Some(Value::Object(a)), Value::Object(b)) => {
                patch.insert(key.clone(), Value::Object(diff(a, b)));
            }
            _ => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obj;
    use serde_json::json;

    #[test]
    fn diff_then_merge_gives_the_new_document() {
        let cases = [
            (json!({}), json!({"a": 1})),
            (json!({"a": 1}), json!({})),
            (
                json!({"a": {"b": 1, "c": [1, 2]}}),
                json!({"a": {"c": [2]}, "d": null}),
            ),
            (json!({"a": {"b": 1}}), json!({"a": 5})),
            (json!({"a": 5}), json!({"a": {"b": {"c": 1}}})),
        ];
        for (old, new) in cases {
            let (old, new) = (obj(old), obj(new));
            let mut merged = old.clone();
            merge(&mut merged, &diff(&old, &new));
            // A null value in `new` cannot survive a merge patch: compare without it.
            let mut expected = new.clone();
            expected.retain(|_, v| !v.is_null());
            assert_eq!(merged, expected, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn nulls_inside_a_new_object_are_dropped() {
        let mut target = obj(json!({}));
        merge(&mut target, &obj(json!({"a": {"b": null, "c": 1}})));
        assert_eq!(Value::Object(target), json!({"a": {"c": 1}}));
    }
}
