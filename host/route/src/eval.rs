//! Evaluating compiled conditions against one message.
//!
//! An [`Evaluation`] wraps one message while the hub routes it. It caches what routes share: the
//! message's [`MessageSource`] and the parsed JSON body, so a message that many routes query is
//! decoded and parsed once, and a message no route queries is never parsed. Evaluation itself
//! allocates only where the result is a new string (`concat`, `lower`, …); reading properties and
//! comparing them with literals borrows.

use std::cell::OnceCell;

use serde_json::Value as Json;
use verge_message::{Message, PropertyMap, names_equal};

use crate::body::{self, BodyError, BodyValue};
use crate::builtins;
use crate::compile::Node;
use crate::jsonpath::{BodyPath, Selection};
use crate::source::{MessageSource, SourceRef};
use crate::value::{Bool3, Value, compare};

/// One message being routed: caches the message source and the parsed JSON body, so that many
/// routes work from one parse.
#[derive(Debug)]
pub struct Evaluation<'m> {
    message: &'m Message,
    source_ref: OnceCell<SourceRef<'m>>,
    source: OnceCell<MessageSource>,
    body: OnceCell<Result<Json, BodyError>>,
}

impl<'m> Evaluation<'m> {
    /// Start routing `message`. Cheap: nothing is computed until a route needs it.
    pub fn new(message: &'m Message) -> Self {
        Self {
            message,
            source_ref: OnceCell::new(),
            source: OnceCell::new(),
            body: OnceCell::new(),
        }
    }

    /// The message.
    pub fn message(&self) -> &'m Message {
        self.message
    }

    /// The message's source (computed once).
    pub fn source(&self) -> &MessageSource {
        self.source.get_or_init(|| self.source_ref().into_owned())
    }

    /// The message's source, borrowed from the message (no allocation).
    pub(crate) fn source_ref(&self) -> SourceRef<'m> {
        *self.source_ref.get_or_init(|| SourceRef::of(self.message))
    }

    /// The body as a JSON object, parsed on first use, or why it cannot be queried.
    pub fn body(&self) -> Result<&Json, &BodyError> {
        self.body
            .get_or_init(|| body::parse_body(self.message))
            .as_ref()
    }

    /// The body value at `path`, as `$body.path` reads it (before an application property of
    /// the same name is considered).
    pub fn query_body(&self, path: &BodyPath) -> Result<BodyValue<'_>, &BodyError> {
        self.body().map(|json| body::query(json, path))
    }
}

/// A property name in a compiled condition, ready for fast case-insensitive lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Name {
    text: Box<str>,
    ascii: bool,
}

impl Name {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.into(),
            ascii: text.is_ascii(),
        }
    }

    /// Whether `key` is this name, as [`names_equal`] (IoT Hub's case-insensitive names) decides.
    fn is(&self, key: &str) -> bool {
        if key.len() == self.text.len() && key.as_bytes().eq_ignore_ascii_case(self.text.as_bytes())
        {
            return true;
        }
        // Only a name with non-ASCII characters can still be equal (case folding can change its
        // length).
        !(self.ascii && key.is_ascii()) && names_equal(key, &self.text)
    }

    /// `map.lookup(name)`: `None` if absent, `Some(None)` if present without a value.
    pub fn lookup<'m>(&self, map: &'m PropertyMap) -> Option<Option<&'m str>> {
        map.iter().find(|(k, _)| self.is(k)).map(|(_, v)| v)
    }
}

fn body_value<'e>(evaluation: &'e Evaluation<'_>, path: &BodyPath) -> Value<'e> {
    match evaluation.query_body(path) {
        Ok(BodyValue::Null) => Value::Null,
        Ok(BodyValue::Bool(b)) => Value::Bool(b),
        Ok(BodyValue::Number(n)) => Value::number(n),
        Ok(BodyValue::String(s)) => Value::Str(s.into()),
        Ok(BodyValue::Date(_) | BodyValue::Object) | Err(_) => Value::Undefined,
    }
}

impl Node {
    /// The value of this expression for the message of `evaluation`.
    pub(crate) fn eval<'e>(&'e self, evaluation: &'e Evaluation<'_>) -> Value<'e> {
        let message = evaluation.message();
        match self {
            Self::Const(value) => value.borrowed(),
            Self::AppProp(name) => Value::property(name.lookup(message.properties())),
            Self::SysProp(name) => Value::property(name.lookup(message.system())),
            Self::AppOrSys { app, sys } => match app.lookup(message.properties()) {
                Some(value) => Value::property(Some(value)),
                None => Value::property(sys.lookup(message.system())),
            },
            Self::Body(path) => body_value(evaluation, path),
            Self::AppOrBody { app, path } => match app.lookup(message.properties()) {
                Some(value) => Value::property(Some(value)),
                None => body_value(evaluation, path),
            },
            Self::TwinChangeIncludes(path) => match evaluation.body() {
                Ok(json) => Value::Bool(path.select(json) != Selection::Missing),
                Err(_) => Value::Undefined,
            },
            Self::Neg(operand) => match operand.eval(evaluation) {
                Value::Number(n) => Value::Number(-n),
                _ => Value::Undefined,
            },
            Self::Not(operand) => Value::from(!operand.eval(evaluation).as_bool3()),
            Self::AsBool(operand) => Value::from(operand.eval(evaluation).as_bool3()),
            Self::Arith(op, left, right) => match (left.eval(evaluation), right.eval(evaluation)) {
                (Value::Number(x), Value::Number(y)) => Value::number(op.apply(x, y)),
                _ => Value::Undefined,
            },
            Self::Concat(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part.eval(evaluation) {
                        Value::Str(s) => out.push_str(&s),
                        Value::NullStr => {}
                        _ => return Value::Undefined,
                    }
                }
                Value::Str(out.into())
            }
            Self::Compare {
                op,
                query,
                left,
                right,
            } => {
                let (a, b) = (left.eval(evaluation), right.eval(evaluation));
                Value::from(compare(*op, *query, &a, &b))
            }
            Self::And(left, right) => {
                let a = left.eval(evaluation).as_bool3();
                if a == Bool3::False {
                    return Value::Bool(false);
                }
                Value::from(a.and(right.eval(evaluation).as_bool3()))
            }
            Self::Or(left, right) => {
                let a = left.eval(evaluation).as_bool3();
                if a == Bool3::True {
                    return Value::Bool(true);
                }
                Value::from(a.or(right.eval(evaluation).as_bool3()))
            }
            Self::Coalesce(left, right) => match left.eval(evaluation) {
                Value::Undefined => right.eval(evaluation),
                value => value,
            },
            Self::Call1(f, a) => builtins::call1(*f, a.eval(evaluation)),
            Self::Call2(f, a, b) => builtins::call2(*f, a.eval(evaluation), b.eval(evaluation)),
            Self::Substring3(args) => {
                let [s, start, length] = &**args;
                match (
                    s.eval(evaluation),
                    start.eval(evaluation),
                    length.eval(evaluation),
                ) {
                    (Value::Str(s), Value::Number(start), Value::Number(length)) => {
                        builtins::substring(s, start, Some(length))
                    }
                    _ => Value::Undefined,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use verge_message::system;

    use super::*;
    use crate::compile::{CompilerFlags, Condition};
    use crate::source::SourcePattern;

    fn message() -> Message {
        Message::new(r#"{"a": {"n": 5, "s": "x", "z": null}}"#)
            .with_property("p", "1")
            .with_system(system::CONTENT_TYPE, "application/json")
            .with_system(system::CONTENT_ENCODING, "utf-8")
    }

    fn eval(text: &str, evaluation: &mut Evaluation<'_>) -> Bool3 {
        Condition::compile(text, CompilerFlags::ALL, &SourcePattern::new("/"))
            .unwrap()
            .evaluate(evaluation)
    }

    #[test]
    fn the_body_is_parsed_only_when_reached() {
        let message = message();
        let mut evaluation = Evaluation::new(&message);
        assert_eq!(
            eval("p = '2' AND $body.a.n = 5", &mut evaluation),
            Bool3::False
        );
        assert!(evaluation.body.get().is_none());
        assert_eq!(
            eval("p = '1' AND $body.a.n = 5", &mut evaluation),
            Bool3::True
        );
        assert!(evaluation.body.get().is_some());
    }

    #[test]
    fn body_values() {
        let message = message();
        let mut evaluation = Evaluation::new(&message);
        for (text, expected) in [
            ("$body.a.n % 2 = 1", Bool3::True),
            ("- $body.a.n = -5", Bool3::True),
            (
                "is_null($body.a.z) AND is_null($body.a.missing)",
                Bool3::True,
            ),
            ("is_null($body.a.s)", Bool3::False),
            ("$body.a.s || 'y' = 'xy'", Bool3::True),
            ("$body.a AND true", Bool3::Undefined),
            ("$body.a.s = 'x' AND false", Bool3::False),
        ] {
            assert_eq!(eval(text, &mut evaluation), expected, "{text}");
        }
    }
}
