//! A small ordered map of message properties with IoT Hub's case-insensitive names.
//!
//! Messages carry a handful of properties, so a vector with a linear scan beats a hash map and
//! keeps insertion order (property bags on the wire keep it too).
//!
//! Copying is what a hub does most with properties: a module forwards a message (a copy with new
//! system properties), the hub stamps the sender on every message. So the map is shared
//! copy-on-write (cloning it is a reference count) and its names and values are [`Text`], which
//! is either a `&'static str` (system property names) or a shared `Arc<str>` (a sender's device
//! and module id): copying an entry never copies text.
//!
//! A value may be null: IoT Edge distinguishes a property that is present with a null value (an
//! MQTT property bag key without `=`) from one that is absent, and route conditions see the
//! difference.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A property name or value. Cloning it never copies the text.
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Text {
    /// A static text (no allocation, ever).
    pub const fn from_static(text: &'static str) -> Self {
        Self(Repr::Static(text))
    }

    /// A shared text.
    pub fn shared(text: Arc<str>) -> Self {
        Self(Repr::Shared(text))
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Self::shared(Arc::from(text))
    }
}

impl From<Arc<str>> for Text {
    fn from(text: Arc<str>) -> Self {
        Self::shared(text)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Text {}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

type Entry = (Text, Option<Text>);

/// Ordered name → value map; names compare case-insensitively. Cloning shares the entries.
#[derive(Clone, Debug, Default)]
pub struct PropertyMap {
    // `None` while empty, so that empty maps (most system maps of new messages) allocate nothing.
    entries: Option<Arc<Vec<Entry>>>,
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
        Self { entries: None }
    }

    fn slice(&self) -> &[Entry] {
        self.entries.as_deref().map_or(&[], Vec::as_slice)
    }

    fn entries_mut(&mut self) -> &mut Vec<Entry> {
        Arc::make_mut(self.entries.get_or_insert_with(Arc::default))
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.slice().iter().position(|(k, _)| names_equal(k, name))
    }

    /// The value of `name`; `None` if absent or null.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.lookup(name).flatten()
    }

    /// `None` if `name` is absent, `Some(None)` if present with a null value.
    pub fn lookup(&self, name: &str) -> Option<Option<&str>> {
        self.position(name).map(|i| self.slice()[i].1.as_deref())
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
        match self.position(name) {
            Some(i) => self.entries_mut()[i].1 = value.map(Text::from),
            None => self
                .entries_mut()
                .push((name.into(), value.map(Text::from))),
        }
    }

    /// [`insert`](Self::insert) with texts already shared: copies no text. For the hub's stamps
    /// (static names, the sender's shared ids).
    pub fn insert_text(&mut self, name: Text, value: Text) {
        match self.position(&name) {
            Some(i) => self.entries_mut()[i].1 = Some(value),
            None => self.entries_mut().push((name, Some(value))),
        }
    }

    /// Remove `name`; returns whether it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.position(name) {
            Some(i) => {
                self.entries_mut().remove(i);
                true
            }
            None => false,
        }
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, Option<&str>)> {
        self.slice().iter().map(|(k, v)| (&**k, v.as_deref()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.slice().len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.slice().is_empty()
    }

    /// Bytes of names and values.
    pub fn byte_size(&self) -> usize {
        self.slice()
            .iter()
            .map(|(k, v)| k.len() + v.as_deref().map_or(0, str::len))
            .sum()
    }
}

impl PartialEq for PropertyMap {
    fn eq(&self, other: &Self) -> bool {
        self.slice() == other.slice()
    }
}

impl Eq for PropertyMap {}

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

    #[test]
    fn clones_share_until_changed() {
        let mut a: PropertyMap = [("k", "v")].into_iter().collect();
        let b = a.clone();
        let shared = |x: &PropertyMap, y: &PropertyMap| match (&x.entries, &y.entries) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        };
        assert!(shared(&a, &b));
        a.insert_text(Text::from_static("s"), Text::shared(Arc::from("x")));
        assert!(!shared(&a, &b), "a change must not show through a clone");
        assert_eq!((a.len(), b.len()), (2, 1));
        assert_eq!(PropertyMap::new(), PropertyMap::default());
        assert!(
            PropertyMap::new().entries.is_none(),
            "an empty map allocated"
        );
    }
}
