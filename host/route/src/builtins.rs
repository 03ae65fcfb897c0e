//! Built-in functions: their signatures (checked at compile time) and what they compute.
//!
//! Names are case-insensitive. Argument types follow upstream's overload tables; a body value
//! (`$body.…`) is accepted wherever a number, string or bool is, and its run-time kind decides.
//! Some overloads are constant and are folded away at compile time (`is_number('x')` is false,
//! `is_defined(null)` is true).
//!
//! | function | arguments | result |
//! |---|---|---|
//! | `abs exp square ceiling floor sign sqrt` | number | number (NaN → undefined) |
//! | `power` | number, number | number |
//! | `as_number` | number or string | number; strings parse like .NET (see `dotnet`) |
//! | `is_bool is_number is_string` | any | bool (`is_number(3/0)` is false) |
//! | `is_defined is_null` | any | bool |
//! | `concat` | string, string, … (≥ 2) | string; a null string counts as `""` |
//! | `length lower upper` | string | number / string |
//! | `substring` | string, number[, number] | string; undefined out of bounds |
//! | `index_of` | string, string | number (-1 when absent) |
//! | `starts_with ends_with contains` | string, string | bool |
//! | `twin_change_includes` | a twin path (not an expression) | bool |
//!
//! Decision: upstream's `is_null` on a body value compares object references, so it is true for
//! every body string and false for a missing path. Verge answers the question asked: true for
//! JSON `null`, a missing path (which reads as null) and a null-valued property; false otherwise;
//! undefined for undefined.

use std::borrow::Cow;

use crate::compile::{Node, Ty, Typed};
use crate::dotnet;
use crate::value::Value;

/// A function callable in a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    Abs,
    Exp,
    Power,
    Square,
    Ceiling,
    Floor,
    Sign,
    Sqrt,
    AsNumber,
    IsBool,
    IsDefined,
    IsNull,
    IsNumber,
    IsString,
    Concat,
    Length,
    Lower,
    Upper,
    Substring,
    IndexOf,
    StartsWith,
    EndsWith,
    Contains,
    TwinChangeIncludes,
}

const TABLE: [(&str, Builtin, &str); 24] = [
    ("abs", Builtin::Abs, "abs(number)"),
    ("exp", Builtin::Exp, "exp(number)"),
    ("power", Builtin::Power, "power(number, number)"),
    ("square", Builtin::Square, "square(number)"),
    ("ceiling", Builtin::Ceiling, "ceiling(number)"),
    ("floor", Builtin::Floor, "floor(number)"),
    ("sign", Builtin::Sign, "sign(number)"),
    ("sqrt", Builtin::Sqrt, "sqrt(number)"),
    (
        "as_number",
        Builtin::AsNumber,
        "as_number(number or string)",
    ),
    ("is_bool", Builtin::IsBool, "is_bool(any)"),
    ("is_defined", Builtin::IsDefined, "is_defined(any)"),
    ("is_null", Builtin::IsNull, "is_null(any)"),
    ("is_number", Builtin::IsNumber, "is_number(any)"),
    ("is_string", Builtin::IsString, "is_string(any)"),
    ("concat", Builtin::Concat, "concat(string, string, ...)"),
    ("length", Builtin::Length, "length(string)"),
    ("lower", Builtin::Lower, "lower(string)"),
    ("upper", Builtin::Upper, "upper(string)"),
    (
        "substring",
        Builtin::Substring,
        "substring(string, number) or substring(string, number, number)",
    ),
    ("index_of", Builtin::IndexOf, "index_of(string, string)"),
    (
        "starts_with",
        Builtin::StartsWith,
        "starts_with(string, string)",
    ),
    ("ends_with", Builtin::EndsWith, "ends_with(string, string)"),
    ("contains", Builtin::Contains, "contains(string, string)"),
    (
        "twin_change_includes",
        Builtin::TwinChangeIncludes,
        "twin_change_includes(path)",
    ),
];

/// Functions of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fn1 {
    Abs,
    Exp,
    Square,
    Ceiling,
    Floor,
    Sign,
    Sqrt,
    AsNumber,
    IsBool,
    IsDefined,
    /// `is_null` of a property: true for a null string.
    IsNullString,
    /// `is_null` of a body value.
    IsNullValue,
    IsNumber,
    IsString,
    Length,
    Lower,
    Upper,
}

/// Functions of two arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fn2 {
    Power,
    Substring,
    IndexOf,
    StartsWith,
    EndsWith,
    Contains,
}

impl Builtin {
    /// The function called `name` (case-insensitive).
    pub fn lookup(name: &str) -> Option<Self> {
        TABLE
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, b, _)| b)
    }

    /// The accepted signatures, for error messages.
    pub fn signature(self) -> &'static str {
        TABLE
            .iter()
            .find(|(_, b, _)| *b == self)
            .map_or("", |&(_, _, s)| s)
    }

    /// Type-check a call and build its node; `None` when no overload accepts these arguments.
    /// (`TwinChangeIncludes` is compiled by the caller: its argument is a path, not a value.)
    pub fn resolve(self, args: Vec<Typed>) -> Option<Typed> {
        let num = |t: Ty| matches!(t, Ty::Number | Ty::Query);
        let text = |t: Ty| matches!(t, Ty::String | Ty::Query);
        let types: Vec<Ty> = args.iter().map(|a| a.ty).collect();
        let mut nodes = args.into_iter().map(|a| a.node);
        let constant = |b: bool| Typed {
            node: Node::Const(Value::Bool(b)),
            ty: Ty::Bool,
        };
        let call1 = |f: Fn1, nodes: &mut dyn Iterator<Item = Node>, ty: Ty| {
            nodes.next().map(|a| Typed {
                node: Node::Call1(f, Box::new(a)),
                ty,
            })
        };
        let call2 = |f: Fn2, nodes: &mut dyn Iterator<Item = Node>, ty: Ty| {
            let a = nodes.next()?;
            let b = nodes.next()?;
            Some(Typed {
                node: Node::Call2(f, Box::new(a), Box::new(b)),
                ty,
            })
        };
        let math = |f: Fn1, nodes: &mut dyn Iterator<Item = Node>| match types[..] {
            [a] if num(a) => call1(f, nodes, Ty::Number),
            _ => None,
        };
        let strings2 = |f: Fn2, nodes: &mut dyn Iterator<Item = Node>, ty: Ty| match types[..] {
            [a, b] if text(a) && text(b) => call2(f, nodes, ty),
            _ => None,
        };
        match self {
            Self::Abs => math(Fn1::Abs, &mut nodes),
            Self::Exp => math(Fn1::Exp, &mut nodes),
            Self::Square => math(Fn1::Square, &mut nodes),
            Self::Ceiling => math(Fn1::Ceiling, &mut nodes),
            Self::Floor => math(Fn1::Floor, &mut nodes),
            Self::Sign => math(Fn1::Sign, &mut nodes),
            Self::Sqrt => math(Fn1::Sqrt, &mut nodes),
            Self::Power => match types[..] {
                [a, b] if num(a) && num(b) => call2(Fn2::Power, &mut nodes, Ty::Number),
                _ => None,
            },
            Self::AsNumber => match types[..] {
                [Ty::Number] => nodes.next().map(|node| Typed {
                    node,
                    ty: Ty::Number,
                }),
                [a] if text(a) => call1(Fn1::AsNumber, &mut nodes, Ty::Number),
                _ => None,
            },
            Self::IsBool => match types[..] {
                [Ty::Bool | Ty::Query] => call1(Fn1::IsBool, &mut nodes, Ty::Bool),
                [_] => Some(constant(false)),
                _ => None,
            },
            Self::IsDefined => match types[..] {
                [Ty::Undefined] => Some(constant(false)),
                [Ty::Null] => Some(constant(true)),
                [_] => call1(Fn1::IsDefined, &mut nodes, Ty::Bool),
                _ => None,
            },
            Self::IsNull => match types[..] {
                [Ty::String] => call1(Fn1::IsNullString, &mut nodes, Ty::Bool),
                [Ty::Query] => call1(Fn1::IsNullValue, &mut nodes, Ty::Bool),
                [Ty::Null] => Some(constant(true)),
                [_] => Some(constant(false)),
                _ => None,
            },
            Self::IsNumber => match types[..] {
                [a] if num(a) => call1(Fn1::IsNumber, &mut nodes, Ty::Bool),
                [_] => Some(constant(false)),
                _ => None,
            },
            Self::IsString => match types[..] {
                [a] if text(a) => call1(Fn1::IsString, &mut nodes, Ty::Bool),
                [_] => Some(constant(false)),
                _ => None,
            },
            Self::Concat => (types.len() >= 2 && types.iter().all(|&t| text(t))).then(|| Typed {
                node: Node::Concat(nodes.collect()),
                ty: Ty::String,
            }),
            Self::Length => match types[..] {
                [a] if text(a) => call1(Fn1::Length, &mut nodes, Ty::Number),
                _ => None,
            },
            Self::Lower | Self::Upper => match types[..] {
                [a] if text(a) => {
                    let f = if self == Self::Lower {
                        Fn1::Lower
                    } else {
                        Fn1::Upper
                    };
                    call1(f, &mut nodes, Ty::String)
                }
                _ => None,
            },
            Self::Substring => match types[..] {
                [a, b] if text(a) && num(b) => call2(Fn2::Substring, &mut nodes, Ty::String),
                [a, b, c] if text(a) && num(b) && num(c) => {
                    let (s, start, len) = (nodes.next()?, nodes.next()?, nodes.next()?);
                    Some(Typed {
                        node: Node::Substring3(Box::new([s, start, len])),
                        ty: Ty::String,
                    })
                }
                _ => None,
            },
            Self::IndexOf => strings2(Fn2::IndexOf, &mut nodes, Ty::Number),
            Self::StartsWith => strings2(Fn2::StartsWith, &mut nodes, Ty::Bool),
            Self::EndsWith => strings2(Fn2::EndsWith, &mut nodes, Ty::Bool),
            Self::Contains => strings2(Fn2::Contains, &mut nodes, Ty::Bool),
            Self::TwinChangeIncludes => None,
        }
    }
}

fn math(v: Value<'_>, f: impl FnOnce(f64) -> f64) -> Value<'static> {
    match v {
        Value::Number(n) => Value::number(f(n)),
        _ => Value::Undefined,
    }
}

fn text_map<'a>(v: Value<'a>, f: impl FnOnce(&str) -> String) -> Value<'a> {
    match v {
        Value::Str(s) => Value::Str(Cow::Owned(f(&s))),
        _ => Value::Undefined,
    }
}

/// Apply a one-argument function.
pub(crate) fn call1(f: Fn1, v: Value<'_>) -> Value<'_> {
    match f {
        Fn1::Abs => math(v, f64::abs),
        Fn1::Exp => math(v, f64::exp),
        Fn1::Square => math(v, |x| x * x),
        Fn1::Ceiling => math(v, f64::ceil),
        Fn1::Floor => math(v, f64::floor),
        Fn1::Sign => math(v, |x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }),
        Fn1::Sqrt => math(v, f64::sqrt),
        Fn1::AsNumber => match v {
            Value::Number(n) => Value::Number(n),
            Value::Str(s) => dotnet::parse_double(&s).map_or(Value::Undefined, Value::number),
            _ => Value::Undefined,
        },
        Fn1::IsBool => match v {
            Value::Undefined => Value::Undefined,
            other => Value::Bool(matches!(other, Value::Bool(_))),
        },
        Fn1::IsDefined => Value::Bool(!matches!(v, Value::Undefined)),
        Fn1::IsNullString => Value::Bool(matches!(v, Value::NullStr)),
        Fn1::IsNullValue => match v {
            Value::Undefined => Value::Undefined,
            other => Value::Bool(matches!(other, Value::Null | Value::NullStr)),
        },
        Fn1::IsNumber => Value::Bool(matches!(v, Value::Number(n) if n.is_finite())),
        Fn1::IsString => Value::Bool(matches!(v, Value::Str(_))),
        Fn1::Length => match v {
            Value::Str(s) => Value::Number(dotnet::utf16_len(&s) as f64),
            _ => Value::Undefined,
        },
        Fn1::Lower => text_map(v, dotnet::to_lower),
        Fn1::Upper => text_map(v, dotnet::to_upper),
    }
}

/// Apply a two-argument function.
pub(crate) fn call2<'a>(f: Fn2, a: Value<'a>, b: Value<'_>) -> Value<'a> {
    match (f, a, b) {
        (Fn2::Power, Value::Number(x), Value::Number(y)) => Value::number(x.powf(y)),
        (Fn2::Substring, Value::Str(s), Value::Number(start)) => substring(s, start, None),
        (Fn2::IndexOf, Value::Str(s), Value::Str(frag)) => {
            Value::Number(dotnet::index_of(&s, &frag))
        }
        (Fn2::StartsWith, Value::Str(s), Value::Str(frag)) => Value::Bool(s.starts_with(&*frag)),
        (Fn2::EndsWith, Value::Str(s), Value::Str(frag)) => Value::Bool(s.ends_with(&*frag)),
        (Fn2::Contains, Value::Str(s), Value::Str(frag)) => Value::Bool(s.contains(&*frag)),
        _ => Value::Undefined,
    }
}

/// `substring` with its bounds (see `dotnet::substring`); borrowed input stays borrowed.
pub(crate) fn substring(s: Cow<'_, str>, start: f64, length: Option<f64>) -> Value<'_> {
    match s {
        Cow::Borrowed(b) => dotnet::substring(b, start, length)
            .map_or(Value::Undefined, |r| Value::Str(Cow::Borrowed(r))),
        Cow::Owned(o) => dotnet::substring(&o, start, length)
            .map_or(Value::Undefined, |r| Value::Str(Cow::Owned(r.to_owned()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(text))
    }

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(Builtin::lookup("AS_NUMBER"), Some(Builtin::AsNumber));
        assert_eq!(
            Builtin::lookup("Twin_Change_Includes"),
            Some(Builtin::TwinChangeIncludes)
        );
        assert_eq!(Builtin::lookup("nope"), None);
    }

    #[test]
    fn null_strings_and_undefined() {
        assert_eq!(call1(Fn1::IsNullString, Value::NullStr), Value::Bool(true));
        assert_eq!(
            call1(Fn1::IsNullString, Value::Undefined),
            Value::Bool(false)
        );
        assert_eq!(call1(Fn1::IsNullValue, Value::Null), Value::Bool(true));
        assert_eq!(call1(Fn1::IsNullValue, s("x")), Value::Bool(false));
        assert_eq!(call1(Fn1::IsString, Value::NullStr), Value::Bool(false));
        assert_eq!(call1(Fn1::Length, Value::NullStr), Value::Undefined);
        assert_eq!(call1(Fn1::AsNumber, Value::NullStr), Value::Undefined);
        assert_eq!(call1(Fn1::IsBool, Value::Undefined), Value::Undefined);
    }

    #[test]
    fn numbers() {
        assert_eq!(
            call1(Fn1::Sign, Value::Number(f64::NEG_INFINITY)),
            Value::Number(-1.0)
        );
        assert_eq!(call1(Fn1::Sqrt, Value::Number(-4.0)), Value::Undefined);
        assert_eq!(
            call1(Fn1::IsNumber, Value::Number(f64::INFINITY)),
            Value::Bool(false)
        );
        assert_eq!(call1(Fn1::AsNumber, s(" 1,000 ")), Value::Number(1000.0));
        assert_eq!(
            call2(Fn2::Power, Value::Number(10.0), Value::Number(4000.0)),
            Value::Number(f64::INFINITY)
        );
    }

    #[test]
    fn strings() {
        assert_eq!(call2(Fn2::Substring, s("abc"), Value::Number(1.0)), s("bc"));
        assert_eq!(
            call2(Fn2::Substring, s("abc"), Value::Number(4.0)),
            Value::Undefined
        );
        assert_eq!(
            call2(Fn2::IndexOf, s("abcdef"), s("cd")),
            Value::Number(2.0)
        );
        assert_eq!(
            call2(Fn2::Contains, s("abc"), Value::NullStr),
            Value::Undefined
        );
        assert_eq!(call1(Fn1::Upper, s("hello")), s("HELLO"));
    }
}
