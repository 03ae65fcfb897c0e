//! A small ordered map of message properties with IoT Hub's case-insensitive names.
//!
//! Messages carry a handful of properties, so a vector with a linear scan beats a hash map, keeps
//! insertion order (property bags on the wire keep it too) and costs one allocation.
//! A value may be null: IoT Edge distinguishes a property that is present with a null value (an
//! MQTT property bag key without `=`) from one that is absent, and route conditions see the
//! difference.

/// Ordered name → value map; names compare case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertyMap {
    entries: Vec<(Box<str>, Option<Box<str>>)>,
}

/// Whether two property names are the same name: ordinal and case-insensitive, like .NET's
/// `StringComparer.OrdinalIgnoreCase` that IoT Edge uses.
pub fn names_equal(a: &str, b: &str) -> bool {
    if a.len() == b.len() && a.as_bytes().eq_ignore_ascii_case(b.as_bytes()) {
        return true;
    }
    // Only names with non-ASCII characters can still be equal: case folding may change lengths.
    !(a.is_ascii() && b.is_ascii())
        && a.chars()
            .flat_map(char::to_uppercase)
            .eq(b.chars().flat_map(char::to_uppercase))
}

impl PropertyMap {
    /// An empty map.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| names_equal(k, name))
    }

    /// The value of `name`; `None` if absent or null.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.lookup(name).flatten()
    }

    /// `None` if `name` is absent, `Some(None)` if present with a null value.
    pub fn lookup(&self, name: &str) -> Option<Option<&str>> {
        self.position(name).map(|i| self.entries[i].1.as_deref())
    }

    /// Whether `name` is present (null or not).
    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Set `name` to `value`, replacing an existing entry of the same name (keeping its place).
    pub fn insert(&mut self, name: &str, value: &str) {
        self.set(name, Some(value));
    }

    /// Set `name` to `value` or to null, replacing an existing entry of the same name.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(Box::from);
        match self.position(name) {
            Some(i) => self.entries[i].1 = value,
            None => self.entries.push((name.into(), value)),
        }
    }

    /// Remove `name`; returns whether it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.position(name) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, Option<&str>)> {
        self.entries.iter().map(|(k, v)| (&**k, v.as_deref()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of names and values.
    pub fn byte_size(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, v)| k.len() + v.as_deref().map_or(0, str::len))
            .sum()
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for PropertyMap {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        let mut map = Self::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_replace_in_place() {
        let mut m = PropertyMap::new();
        m.insert("Temp", "1");
        m.insert("other", "x");
        m.insert("TEMP", "2");
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("temp"), Some("2"));
        assert_eq!(m.iter().next(), Some(("Temp", Some("2"))));
    }

    #[test]
    fn null_differs_from_absent() {
        let mut m = PropertyMap::new();
        m.set("n", None);
        assert_eq!(m.lookup("n"), Some(None));
        assert_eq!(m.lookup("missing"), None);
        assert_eq!(m.get("n"), None);
        assert!(m.contains("N"));
    }

    #[test]
    fn non_ascii_names_fold_case() {
        assert!(names_equal("äbc", "ÄBC"));
        assert!(!names_equal("abc", "abd"));
    }

    #[test]
    fn remove_reports_presence() {
        let mut m: PropertyMap = [("a", "1"), ("b", "2")].into_iter().collect();
        assert!(m.remove("A"));
        assert!(!m.remove("a"));
        assert_eq!(m.len(), 1);
        assert_eq!(m.byte_size(), 2);
    }
}
