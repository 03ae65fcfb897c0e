//! Evaluating compiled conditions against one message.
//!
//! An [`Evaluation`] wraps one message while the hub routes it. It caches what routes share: the
//! message's [`MessageSource`] and the parsed JSON body, so a message that many routes query is
//! decoded and parsed once, and a message no route queries is never parsed. Evaluation itself
//! allocates only where the result is a new string (`concat`, `lower`, …); reading properties and
//! comparing them with literals borrows.

use std::cell::OnceCell;

use serde_json::Value as Json;
use verge_message::Message;

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
    source: OnceCell<MessageSource>,
    body: OnceCell<Result<Json, BodyError>>,
}

impl<'m> Evaluation<'m> {
    /// Start routing `message`. Cheap: nothing is computed until a route needs it.
    pub fn new(message: &'m Message) -> Self {
        Self {
            message,
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
        self.source.get_or_init(|| self.source_ref().to_owned())
    }

    /// The message's source, borrowed from the message (no allocation).
    pub(crate) fn source_ref(&self) -> SourceRef<'m> {
        SourceRef::of(self.message)
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
            Self::AppProp(name) => Value::property(message.properties().lookup(name)),
            Self::SysProp(name) => Value::property(message.system().lookup(name)),
            Self::AppOrSys { app, sys } => match message.properties().lookup(app) {
                Some(value) => Value::property(Some(value)),
                None => Value::property(message.system().lookup(sys)),
            },
            Self::Body(path) => body_value(evaluation, path),
            Self::AppOrBody { app, path } => match message.properties().lookup(app) {
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
