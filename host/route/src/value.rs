//! Run-time values and IoT Edge's three-valued logic.
//!
//! A [`Value`] borrows from the message and the parsed body (`Cow`), so reading a property or a
//! body string and comparing it with a literal never allocates.
//!
//! Decisions (all pinned by `conditions.json` unless noted):
//! - Numbers are IEEE doubles. `3/0` is +∞ and is defined; **NaN is `undefined`** everywhere
//!   (`3 % 0`, `sqrt(-4)`), so it never reaches a comparison. Upstream keeps a NaN that comes out
//!   of body arithmetic (`$body.zero / 0`) and compares it as smaller than every number; Verge
//!   treats it as undefined like every other NaN.
//! - **null vs absent.** An absent property is `undefined`; a property present with no value is
//!   a *null string* ([`Value::NullStr`]): `is_defined` is true, `is_null` is true, `is_string` is
//!   false, comparing it is `undefined`, and `||`/`concat` treat it as `""`. The literal `null`,
//!   JSON `null` and a body path that does not exist are [`Value::Null`].
//! - **Comparisons** of two values of the same static type: any `undefined` (or null string)
//!   operand gives `undefined`; strings compare ordinally on UTF-16 code units; `false < true`;
//!   `null = null` is true. When either side is a body value, both are compared as upstream's
//!   `QueryValue`s: values of different kinds are ordered by kind (bool < number < string <
//!   null), so `$body.temp = '50'` is false and `$body.missing <> 'x'` is true, and a null string
//!   sorts before every string.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::Not;

use crate::dotnet;

/// A three-valued boolean: a condition routes a message only when it is [`Bool3::True`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bool3 {
    /// True.
    True,
    /// False.
    False,
    /// Unknown: an operand was undefined.
    Undefined,
}

impl Bool3 {
    /// Whether this is `True`.
    pub fn is_true(self) -> bool {
        self == Self::True
    }

    /// Kleene conjunction: `False` wins over `Undefined`.
    #[must_use]
    pub fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::False, _) | (_, Self::False) => Self::False,
            (Self::True, Self::True) => Self::True,
            _ => Self::Undefined,
        }
    }

    /// Kleene disjunction: `True` wins over `Undefined`.
    #[must_use]
    pub fn or(self, other: Self) -> Self {
        match (self, other) {
            (Self::True, _) | (_, Self::True) => Self::True,
            (Self::False, Self::False) => Self::False,
            _ => Self::Undefined,
        }
    }
}

impl Not for Bool3 {
    type Output = Self;

    fn not(self) -> Self {
        match self {
            Self::True => Self::False,
            Self::False => Self::True,
            Self::Undefined => Self::Undefined,
        }
    }
}

impl From<bool> for Bool3 {
    fn from(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }
}

/// A value during evaluation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value<'a> {
    Undefined,
    Null,
    /// A property present with no value (a C# `null` string).
    NullStr,
    Bool(bool),
    /// Never NaN (see [`Value::number`]).
    Number(f64),
    Str(Cow<'a, str>),
}

impl<'a> Value<'a> {
    /// A number; NaN is undefined.
    pub fn number(n: f64) -> Self {
        if n.is_nan() {
            Self::Undefined
        } else {
            Self::Number(n)
        }
    }

    /// A property value: absent is undefined, present without a value is a null string.
    pub fn property(value: Option<Option<&'a str>>) -> Self {
        match value {
            None => Self::Undefined,
            Some(None) => Self::NullStr,
            Some(Some(s)) => Self::Str(Cow::Borrowed(s)),
        }
    }

    /// As a condition result: a boolean, else undefined.
    pub fn as_bool3(&self) -> Bool3 {
        match self {
            Self::Bool(b) => Bool3::from(*b),
            _ => Bool3::Undefined,
        }
    }

    /// A copy borrowing from `self` (no allocation).
    pub fn borrowed(&self) -> Value<'_> {
        match self {
            Self::Undefined => Value::Undefined,
            Self::Null => Value::Null,
            Self::NullStr => Value::NullStr,
            Self::Bool(b) => Value::Bool(*b),
            Self::Number(n) => Value::Number(*n),
            Self::Str(s) => Value::Str(Cow::Borrowed(s)),
        }
    }

    /// Detached from what it borrowed.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Self::Undefined => Value::Undefined,
            Self::Null => Value::Null,
            Self::NullStr => Value::NullStr,
            Self::Bool(b) => Value::Bool(b),
            Self::Number(n) => Value::Number(n),
            Self::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
        }
    }
}

impl From<Bool3> for Value<'_> {
    fn from(b: Bool3) -> Self {
        match b {
            Bool3::True => Self::Bool(true),
            Bool3::False => Self::Bool(false),
            Bool3::Undefined => Self::Undefined,
        }
    }
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn test(self, ord: Ordering) -> bool {
        match self {
            Self::Eq => ord == Ordering::Equal,
            Self::Ne => ord != Ordering::Equal,
            Self::Lt => ord == Ordering::Less,
            Self::Le => ord != Ordering::Greater,
            Self::Gt => ord == Ordering::Greater,
            Self::Ge => ord != Ordering::Less,
        }
    }
}

/// Compare two values; `query` when either side is a body value (upstream's `QueryValue`
/// comparison), otherwise both sides have the same static type.
pub(crate) fn compare(op: CmpOp, query: bool, a: &Value<'_>, b: &Value<'_>) -> Bool3 {
    let order = if query {
        query_order(a, b)
    } else {
        plain_order(a, b)
    };
    order.map_or(Bool3::Undefined, |o| Bool3::from(op.test(o)))
}

fn plain_order(a: &Value<'_>, b: &Value<'_>) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Number(x), Value::Number(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(dotnet::ordinal_cmp(x, y)),
        _ => None,
    }
}

/// Upstream's `QueryValueType` order: None < Bool < Double < String < Null.
fn rank(v: &Value<'_>) -> Option<u8> {
    match v {
        Value::Undefined => None,
        Value::Bool(_) => Some(1),
        Value::Number(_) => Some(2),
        Value::Str(_) | Value::NullStr => Some(3),
        Value::Null => Some(4),
    }
}

fn query_order(a: &Value<'_>, b: &Value<'_>) -> Option<Ordering> {
    let (ra, rb) = (rank(a)?, rank(b)?);
    if ra != rb {
        return Some(ra.cmp(&rb));
    }
    match (a, b) {
        (Value::NullStr, Value::NullStr) => Some(Ordering::Equal),
        (Value::NullStr, _) => Some(Ordering::Less),
        (_, Value::NullStr) => Some(Ordering::Greater),
        _ => plain_order(a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(text))
    }

    #[test]
    fn kleene_logic() {
        use Bool3::*;
        assert_eq!(False.and(Undefined), False);
        assert_eq!(True.and(Undefined), Undefined);
        assert_eq!(True.or(Undefined), True);
        assert_eq!(False.or(Undefined), Undefined);
        assert_eq!(!Undefined, Undefined);
    }

    #[test]
    fn plain_comparisons() {
        assert_eq!(compare(CmpOp::Lt, false, &s("a"), &s("b")), Bool3::True);
        assert_eq!(
            compare(CmpOp::Eq, false, &Value::NullStr, &s("b")),
            Bool3::Undefined
        );
        assert_eq!(
            compare(CmpOp::Ne, false, &Value::Undefined, &s("b")),
            Bool3::Undefined
        );
        assert_eq!(
            compare(CmpOp::Ge, false, &Value::Null, &Value::Null),
            Bool3::True
        );
        assert_eq!(
            compare(
                CmpOp::Eq,
                false,
                &Value::Number(f64::INFINITY),
                &Value::Number(f64::INFINITY)
            ),
            Bool3::True
        );
        assert_eq!(
            compare(CmpOp::Gt, false, &Value::Bool(true), &Value::Bool(false)),
            Bool3::True
        );
    }

    #[test]
    fn query_comparisons_order_by_kind() {
        assert_eq!(
            compare(CmpOp::Eq, true, &Value::Number(50.0), &s("50")),
            Bool3::False
        );
        assert_eq!(
            compare(CmpOp::Lt, true, &Value::Number(50.0), &s("50")),
            Bool3::True
        );
        assert_eq!(compare(CmpOp::Ne, true, &Value::Null, &s("x")), Bool3::True);
        assert_eq!(
            compare(CmpOp::Eq, true, &Value::Null, &Value::Null),
            Bool3::True
        );
        assert_eq!(
            compare(CmpOp::Lt, true, &Value::NullStr, &s("")),
            Bool3::True
        );
        assert_eq!(
            compare(CmpOp::Eq, true, &Value::Undefined, &Value::Null),
            Bool3::Undefined
        );
    }
}
