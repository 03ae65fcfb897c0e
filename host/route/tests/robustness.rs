//! No input makes parsing, compiling or evaluating panic: every condition and route from the
//! vectors, every prefix of them, and deterministic random mutations.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use serde_json::Value as Json;
use verge_message::{Message, system};
use verge_route::{BodyPath, CompilerFlags, Condition, Evaluation, Route, SourcePattern};
use verge_tests::Rng;

fn vectors_dir() -> PathBuf {
    verge_tests::conformance_dir()
}

/// Every string value named `condition` or `route` in the vector files.
fn corpus() -> Vec<String> {
    fn walk(v: &Json, out: &mut Vec<String>) {
        match v {
            Json::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("condition" | "route", Json::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Json::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for file in [
        "conditions.json",
        "body_queries.json",
        "twin_change_includes.json",
        "routes.json",
    ] {
        let text = std::fs::read_to_string(vectors_dir().join(file))
            .unwrap_or_else(|e| panic!("conformance vectors missing ({file}: {e})"));
        walk(&serde_json::from_str(&text).expect("vector JSON"), &mut out);
    }
    assert!(out.len() > 700, "corpus too small: {}", out.len());
    out
}

const PIECES: &[&str] = &[
    "(",
    ")",
    "'",
    "\"",
    "\\",
    "\\u12",
    "$",
    "$body.",
    "{",
    "}",
    "[",
    "]",
    "[0]",
    ".",
    ",",
    " ",
    "-",
    "+",
    "*",
    "/",
    "/*",
    "*/",
    "%",
    "=",
    "<>",
    "!=",
    "<=",
    "||",
    "??",
    "AND",
    "or",
    "NOT",
    "null",
    "undefined",
    "true",
    "0x",
    "1e",
    "9e999",
    "é",
    "😀",
    "\u{0}",
    "WHERE",
    "INTO",
    "FROM",
    "twin_change_includes(",
    "substring(",
    "as_number(",
    "$body.a[99999999999]",
    "\n",
];

fn exercise(text: &str, message: &Message) {
    for source in ["/messages", "/twinChangeNotifications"] {
        if let Ok(c) = Condition::compile(text, CompilerFlags::ALL, &SourcePattern::new(source)) {
            let _ = c.evaluate(&mut Evaluation::new(message));
        }
    }
    if let Ok(route) = Route::parse(text) {
        let _ = route.matches(&mut Evaluation::new(message));
        let _ = route.to_string();
    }
    let _ = BodyPath::parse(text);
    let _ = BodyPath::parse_twin(text);
    let _ = SourcePattern::new(text);
}

#[test]
fn mutated_vectors_never_panic() {
    let message = Message::new(
        r#"{"a":[1,{"b":"2017-03-09T00:00:00Z"}],"properties":{"reported":{"x":null}}}"#,
    )
    .with_property("key1", "value1")
    .with_system(system::CONTENT_TYPE, "application/json")
    .with_system(system::CONTENT_ENCODING, "utf-8");
    let corpus = corpus();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for text in &corpus {
        exercise(text, &message);
        for (i, _) in text.char_indices() {
            exercise(&text[..i], &message);
        }
    }
    for _ in 0..20_000 {
        let mut text = corpus[rng.below(corpus.len())].clone();
        for _ in 0..=rng.below(4) {
            let boundaries: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            let at = boundaries[rng.below(boundaries.len())];
            match rng.below(3) {
                0 => text.insert_str(at, PIECES[rng.below(PIECES.len())]),
                1 => {
                    let end = boundaries[rng.below(boundaries.len())].max(at);
                    text.replace_range(at..end, "");
                }
                _ => {
                    let other = &corpus[rng.below(corpus.len())];
                    let cut = other
                        .char_indices()
                        .map(|(i, _)| i)
                        .nth(rng.below(other.len()))
                        .unwrap_or(0);
                    text.insert_str(at, &other[cut..]);
                }
            }
        }
        exercise(&text, &message);
    }
}
