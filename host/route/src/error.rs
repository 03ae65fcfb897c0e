//! Errors from parsing and compiling routes: where, what was found, what was expected.
//!
//! Every error that comes from the text names a [`Position`] (1-based line and column, counted in
//! characters, in the text given to [`Route::parse`](crate::Route::parse) or
//! [`Condition::compile`](crate::Condition::compile)). A condition inside a route reports
//! positions in the whole route string, so the user can find the spot in what they wrote.

use std::fmt;

/// A place in a route or condition: 1-based line and column, counted in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text` (clamped to the text).
    pub(crate) fn at(text: &str, offset: usize) -> Self {
        let mut line = 1;
        let mut column = 1;
        for (i, c) in text.char_indices() {
            if i >= offset {
                break;
            }
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        Self { line, column }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 1 {
            write!(f, "column {}", self.column)
        } else {
            write!(f, "line {}, column {}", self.line, self.column)
        }
    }
}

/// Why a route, condition, body path or sink was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The text does not follow the grammar.
    #[error("syntax error at {at}: expected {expected}, found {found}")]
    Syntax {
        /// Where.
        at: Position,
        /// What the grammar allows here.
        expected: String,
        /// What the text has instead.
        found: String,
    },
    /// An operator or function got operands of the wrong types (IoT Edge checks types when it
    /// compiles a route, so `3 + true` or `length(12)` is refused rather than undefined).
    #[error("type error at {at}: {message}")]
    Type {
        /// Where (the operator or function name).
        at: Position,
        /// What is wrong, with the types found and expected.
        message: String,
    },
    /// A function name that is not one of the built-in functions.
    #[error("unknown function '{name}' at {at}")]
    UnknownFunction {
        /// Where.
        at: Position,
        /// The name as written.
        name: String,
    },
    /// A built-in function that exists but may not be used here.
    #[error("function '{name}' at {at} {reason}")]
    Unavailable {
        /// Where.
        at: Position,
        /// The name as written.
        name: String,
        /// Why it is not available.
        reason: String,
    },
    /// A `$body.…` or `twin_change_includes(…)` path outside the supported JSON-path subset.
    #[error("invalid path '{path}' at {at}: {reason}")]
    InvalidPath {
        /// Where.
        at: Position,
        /// The path as written.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The sink (`INTO …`) names no endpoint Edge Hub knows.
    #[error("invalid sink: {0}")]
    Sink(String),
}

impl RouteError {
    /// Where in the text the error is, when it comes from the text.
    pub fn position(&self) -> Option<Position> {
        match self {
            Self::Syntax { at, .. }
            | Self::Type { at, .. }
            | Self::UnknownFunction { at, .. }
            | Self::Unavailable { at, .. }
            | Self::InvalidPath { at, .. } => Some(*at),
            Self::Sink(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_and_lines() {
        assert_eq!(Position::at("abc", 0), Position { line: 1, column: 1 });
        assert_eq!(Position::at("äbc", 2), Position { line: 1, column: 2 });
        assert_eq!(Position::at("a\nbc", 3), Position { line: 2, column: 2 });
        assert_eq!(Position::at("ab", 99), Position { line: 1, column: 3 });
        assert_eq!(Position::at("a\nb", 2).to_string(), "line 2, column 1");
    }
}
