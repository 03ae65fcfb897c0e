//! Body paths: the JSON-path subset of `$body.…` queries and `twin_change_includes(…)`.
//!
//! Grammar (IoT Edge's `JsonPath.g4`): `name [ '[' digits ']' ]…` segments separated by `.`,
//! where a name is one or more characters other than `( ) < > @ , ; : \ " / [ ] ? = { } .` and
//! blanks, and is not all digits (upstream's lexer reads `123` as a number, which the grammar
//! refuses; `123abc` is a name). Names are case-sensitive; `root.level1[0].level2[3]` is typical.
//!
//! Decisions:
//! - The whole text must match. Upstream's validator stops at the first token it cannot use and
//!   accepts the rest unchecked (`a.b,c` passes); Verge refuses it.
//! - A segment may carry several indexes (`a[0][1]`): upstream's grammar allows one, but its
//!   validator ignores the rest and Newtonsoft evaluates them, so this is what upstream does.
//! - As in Newtonsoft's `SelectTokens`, a name that is exactly `*` selects every property value of
//!   an object, and a leading `$` segment is the root. A path that selects several values is an
//!   object-like result.
//! - At most [`MAX_STEPS`] steps, indexes below 2³².
//! - `twin_change_includes` paths must also start with `properties.reported.`,
//!   `properties.desired.` or `tags.` (case-insensitive).

use std::fmt;

use serde_json::Value as Json;

use crate::error::{Position, RouteError};

/// Most steps (names plus indexes) in one path.
pub const MAX_STEPS: usize = 256;

const TWIN_PREFIXES: [&str; 3] = ["properties.reported.", "properties.desired.", "tags."];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Field(Box<str>),
    Wildcard,
    Index(usize),
}

/// A validated body path.
#[derive(Clone, PartialEq, Eq)]
pub struct BodyPath {
    text: Box<str>,
    steps: Box<[Step]>,
}

impl fmt::Debug for BodyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BodyPath({:?})", self.text)
    }
}

impl fmt::Display for BodyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What a path selects in a JSON document.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Selection<'j> {
    /// Nothing: the path does not exist.
    Missing,
    /// Exactly one value.
    One(&'j Json),
    /// Several values (a `*` step matched more than one).
    Many,
}

fn is_name_char(c: char) -> bool {
    !c.is_whitespace()
        && !matches!(
            c,
            '(' | ')'
                | '<'
                | '>'
                | '@'
                | ','
                | ';'
                | ':'
                | '\\'
                | '"'
                | '/'
                | '['
                | ']'
                | '?'
                | '='
                | '{'
                | '}'
                | '.'
        )
}

/// The steps of `text`, or (byte offset, reason).
fn parse_steps(text: &str) -> Result<Vec<Step>, (usize, String)> {
    if text.is_empty() {
        return Err((0, "a path cannot be empty".to_owned()));
    }
    let mut steps = Vec::new();
    let mut pos = 0;
    loop {
        let rest = text.get(pos..).unwrap_or("");
        let name_len = rest
            .char_indices()
            .find(|&(_, c)| !is_name_char(c))
            .map_or(rest.len(), |(i, _)| i);
        let name = rest.get(..name_len).unwrap_or("");
        if name.is_empty() {
            let found = rest
                .chars()
                .next()
                .map_or("the end".to_owned(), |c| format!("'{c}'"));
            return Err((pos, format!("expected a property name, found {found}")));
        }
        if name.bytes().all(|b| b.is_ascii_digit()) {
            return Err((
                pos,
                format!("'{name}' is a number; property names cannot be only digits"),
            ));
        }
        match name {
            "$" if pos == 0 => {} // the root
            "*" => steps.push(Step::Wildcard),
            _ => steps.push(Step::Field(name.into())),
        }
        pos += name_len;
        while text.get(pos..).is_some_and(|r| r.starts_with('[')) {
            let digits = text
                .get(pos + 1..)
                .unwrap_or("")
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits == 0 {
                return Err((
                    pos + 1,
                    "expected an array index (digits) after '['".to_owned(),
                ));
            }
            let number = text.get(pos + 1..pos + 1 + digits).unwrap_or("");
            let index = number
                .parse::<u32>()
                .map_err(|_| (pos + 1, format!("array index {number} is too large")))?;
            pos += 1 + digits;
            if !text.get(pos..).is_some_and(|r| r.starts_with(']')) {
                return Err((pos, "expected ']' after the array index".to_owned()));
            }
            pos += 1;
            steps.push(Step::Index(index as usize));
        }
        if steps.len() > MAX_STEPS {
            return Err((pos, format!("a path has at most {MAX_STEPS} steps")));
        }
        match text.get(pos..).and_then(|r| r.chars().next()) {
            None => return Ok(steps),
            Some('.') => pos += 1,
            Some(c) => return Err((pos, format!("expected '.' or '[', found '{c}'"))),
        }
    }
}

impl BodyPath {
    /// Validate a `$body.` path (the text after `$body.`).
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        Self::parse_at(text, text, 0)
    }

    /// Validate a `twin_change_includes` path: a body path under `properties.reported.`,
    /// `properties.desired.` or `tags.`.
    pub fn parse_twin(text: &str) -> Result<Self, RouteError> {
        Self::parse_twin_at(text, text, 0)
    }

    /// Validate `path`, which starts at byte `offset` of `source` (for error positions).
    pub(crate) fn parse_at(path: &str, source: &str, offset: usize) -> Result<Self, RouteError> {
        match parse_steps(path) {
            Ok(steps) => Ok(Self {
                text: path.into(),
                steps: steps.into_boxed_slice(),
            }),
            Err((at, reason)) => Err(RouteError::InvalidPath {
                at: Position::at(source, offset + at),
                path: path.to_owned(),
                reason,
            }),
        }
    }

    pub(crate) fn parse_twin_at(
        path: &str,
        source: &str,
        offset: usize,
    ) -> Result<Self, RouteError> {
        let parsed = Self::parse_at(path, source, offset)?;
        let supported = TWIN_PREFIXES.iter().any(|p| {
            path.get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        });
        if !supported {
            return Err(RouteError::InvalidPath {
                at: Position::at(source, offset),
                path: path.to_owned(),
                reason: "twin_change_includes paths start with 'properties.reported.', \
                         'properties.desired.' or 'tags.'"
                    .to_owned(),
            });
        }
        Ok(parsed)
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What the path selects in `root`.
    pub(crate) fn select<'j>(&self, root: &'j Json) -> Selection<'j> {
        let mut found = Selection::Missing;
        select_into(root, &self.steps, &mut found);
        found
    }
}

fn select_into<'j>(root: &'j Json, steps: &[Step], found: &mut Selection<'j>) {
    let mut current = root;
    for (i, step) in steps.iter().enumerate() {
        let next = match step {
            Step::Field(name) => current.as_object().and_then(|o| o.get(&**name)),
            Step::Index(index) => current.as_array().and_then(|a| a.get(*index)),
            Step::Wildcard => {
                let rest = steps.get(i + 1..).unwrap_or(&[]);
                if let Some(object) = current.as_object() {
                    for child in object.values() {
                        select_into(child, rest, found);
                        if *found == Selection::Many {
                            return;
                        }
                    }
                }
                return;
            }
        };
        match next {
            Some(value) => current = value,
            None => return,
        }
    }
    *found = match found {
        Selection::Missing => Selection::One(current),
        _ => Selection::Many,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in [
            "root",
            "123abc",
            "a.b[0].c[12][3]",
            "Welcome!.I'm%1",
            "$.a",
            "a.*",
        ] {
            assert!(BodyPath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a.", "a..b", "a[", "a[]", "a['x']", "a.123", "a b", "a.b,c", "[0]",
        ] {
            assert!(BodyPath::parse(bad).is_err(), "{bad}");
        }
        let err = BodyPath::parse("a[99999999999]").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn twin_prefixes() {
        assert!(BodyPath::parse_twin("Properties.Reported.x").is_ok());
        assert!(BodyPath::parse_twin("tags.x").is_ok());
        assert!(BodyPath::parse_twin("properties.reported").is_err());
        assert!(BodyPath::parse_twin("properties").is_err());
    }

    #[test]
    fn selection() {
        let doc: Json =
            serde_json::from_str(r#"{"a":{"b":[1,{"c":null}],"x":1,"y":2},"k":{"only":3}}"#)
                .unwrap();
        let select = |p: &str| BodyPath::parse(p).unwrap().select(&doc);
        assert_eq!(select("a.b[1].c"), Selection::One(&Json::Null));
        assert_eq!(select("a.b[2]"), Selection::Missing);
        assert_eq!(select("a.x.y"), Selection::Missing);
        assert_eq!(select("a.*"), Selection::Many);
        assert_eq!(select("k.*"), Selection::One(&doc["k"]["only"]));
        assert_eq!(select("$.a.x"), Selection::One(&doc["a"]["x"]));
    }
}
