//! Compiling a condition: type checking, name resolution and constant folding.
//!
//! Every expression has a static type, as in upstream's C# expression trees: `number`, `string`
//! (every property is a string), `bool`, `null`, `undefined` (the literal), or *body value*
//! (`$body.…`, whose kind is known only at run time). Operators check their operand types when
//! the route is compiled, so a mistake fails the deployment instead of silently never routing:
//!
//! - `+ - * / %` and unary `-` take numbers (or body values): `3 + none`, `'a' + 'b'`,
//!   `3 + undefined` are errors. `||` takes strings (or body values) and means `concat`.
//! - `= != <> < <= > >=` and `??` take two operands of the **same** type, or a body value and a
//!   number, string, bool or null: `3 = none` (number vs property) is an error; compare
//!   `as_number(none) = 3`.
//! - `AND`/`OR` take bool, null, undefined or body values; `NOT` takes bool, null or body values.
//! - Functions check their arguments (see `builtins`).
//!
//! Names:
//! - `name` is the application property `name` (case-insensitive).
//! - `$name`: the application property literally named `$name` if the message has one;
//!   otherwise, for `$body.path` (when body queries are on), the body value at `path`; otherwise
//!   the system property `name`. With `[`/`]` in it, `$name` is only ever a body query (and is
//!   `undefined` when it is not one), because property names cannot contain brackets.
//! - `{$name}` skips the application property: the body query or the system property.
//! - `$body` without a path is the system property `body` (usually undefined).
//!
//! Logic with `null` (upstream's operator table): `null AND x` is `null`, `null OR x` is `x`,
//! `NOT null` is true, and a condition that is `null` does not route (false).
//! Decisions: upstream refuses a few combinations only by accident (its expression builder
//! throws): `%` and unary `-` on body values, and `AND`/`OR` mixing a body value with `null`.
//! Verge accepts them with the obvious meaning. It refuses `AND`/`OR` with a string or number
//! operand on either side (upstream checks only the left side when it is a body value). `AND`/`OR`
//! on body values use the same three-valued logic as on bools, a body value that is not a bool
//! counting as undefined (upstream answers undefined as soon as either body value is not a bool,
//! even for `false AND x`).
//!
//! Folding: any operator or function whose operands are all constants is evaluated at compile
//! time, so `true`, `1 = 1` or `is_defined(null)` compile to a constant and
//! [`Condition::is_always_true`] lets the hub skip evaluation.

use std::borrow::Cow;
use std::fmt;

use verge_message::Message;

use crate::ast::{Ast, AstKind, BinaryOp, UnaryOp};
use crate::builtins::{Builtin, Fn1, Fn2};
use crate::error::{Position, RouteError};
use crate::eval::{Evaluation, Name};
use crate::jsonpath::BodyPath;
use crate::parser;
use crate::source::SourcePattern;
use crate::value::{Bool3, CmpOp, Value};

/// Optional condition features. Edge Hub turns all of them on ([`CompilerFlags::ALL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CompilerFlags {
    /// `$body.…` queries. When off, `$body.x` is the system property `body.x`.
    pub body_query: bool,
    /// The `twin_change_includes(…)` function (also needs a `/twinChangeNotifications` route).
    pub twin_change_includes: bool,
}

impl CompilerFlags {
    /// Every feature, as Edge Hub compiles routes.
    pub const ALL: Self = Self {
        body_query: true,
        twin_change_includes: true,
    };
    /// No optional feature.
    pub const NONE: Self = Self {
        body_query: false,
        twin_change_includes: false,
    };
}

impl Default for CompilerFlags {
    fn default() -> Self {
        Self::ALL
    }
}

/// Static types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Number,
    String,
    Bool,
    Null,
    Undefined,
    /// A body value: its kind is known at run time.
    Query,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::String => "string",
            Self::Bool => "bool",
            Self::Null => "null",
            Self::Undefined => "undefined",
            Self::Query => "body value",
        }
    }

    /// Types a body value can stand in for.
    fn is_value(self) -> bool {
        matches!(self, Self::Number | Self::String | Self::Bool | Self::Null)
    }

    /// Same type, or a body value against a value type.
    fn compatible(self, other: Self) -> bool {
        self == other
            || (self == Self::Query && other.is_value())
            || (other == Self::Query && self.is_value())
    }
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl ArithOp {
    pub fn apply(self, x: f64, y: f64) -> f64 {
        match self {
            Self::Add => x + y,
            Self::Sub => x - y,
            Self::Mul => x * y,
            Self::Div => x / y,
            Self::Mod => x % y,
        }
    }
}

/// A compiled expression.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Const(Value<'static>),
    /// Application property.
    AppProp(Name),
    /// System property.
    SysProp(Name),
    /// `$name`: application property `app` (with the `$`), else system property `sys`.
    AppOrSys {
        app: Name,
        sys: Name,
    },
    /// `{$body.path}` or `$body.path[…]`.
    Body(BodyPath),
    /// `$body.path`: application property `app`, else the body value.
    AppOrBody {
        app: Name,
        path: BodyPath,
    },
    TwinChangeIncludes(BodyPath),
    Neg(Box<Node>),
    /// Three-valued NOT of a bool or body value.
    Not(Box<Node>),
    /// A bool, or undefined for any other value.
    AsBool(Box<Node>),
    Arith(ArithOp, Box<Node>, Box<Node>),
    Concat(Vec<Node>),
    Compare {
        op: CmpOp,
        query: bool,
        left: Box<Node>,
        right: Box<Node>,
    },
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Coalesce(Box<Node>, Box<Node>),
    Call1(Fn1, Box<Node>),
    Call2(Fn2, Box<Node>, Box<Node>),
    Substring3(Box<[Node; 3]>),
}

impl Node {
    /// Whether the node reads the message (and so cannot be folded).
    fn reads_message(&self) -> bool {
        matches!(
            self,
            Self::AppProp(_)
                | Self::SysProp(_)
                | Self::AppOrSys { .. }
                | Self::Body(_)
                | Self::AppOrBody { .. }
                | Self::TwinChangeIncludes(_)
        )
    }

    fn children(&self) -> Vec<&Node> {
        match self {
            Self::Neg(a) | Self::Not(a) | Self::AsBool(a) | Self::Call1(_, a) => vec![a],
            Self::Arith(_, a, b)
            | Self::And(a, b)
            | Self::Or(a, b)
            | Self::Coalesce(a, b)
            | Self::Call2(_, a, b)
            | Self::Compare {
                left: a, right: b, ..
            } => vec![a, b],
            Self::Concat(parts) => parts.iter().collect(),
            Self::Substring3(args) => args.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the node reads the body.
    fn reads_body(&self) -> bool {
        matches!(
            self,
            Self::Body(_) | Self::AppOrBody { .. } | Self::TwinChangeIncludes(_)
        ) || self.children().iter().any(|c| c.reads_body())
    }

    /// Evaluate now if every operand is a constant.
    fn fold(self) -> Self {
        if matches!(self, Self::Const(_)) || self.reads_message() {
            return self;
        }
        if !self.children().iter().all(|c| matches!(c, Self::Const(_))) {
            return self;
        }
        let empty = Message::default();
        let evaluation = Evaluation::new(&empty);
        let value = self.eval(&evaluation).into_owned();
        Self::Const(value)
    }
}

/// A compiled node and its static type.
#[derive(Debug)]
pub(crate) struct Typed {
    pub node: Node,
    pub ty: Ty,
}

impl Typed {
    fn new(node: Node, ty: Ty) -> Self {
        Self {
            node: node.fold(),
            ty,
        }
    }

    fn constant(value: Value<'static>, ty: Ty) -> Self {
        Self {
            node: Node::Const(value),
            ty,
        }
    }
}

/// A compiled route condition.
///
/// Compile once, evaluate per message with [`Condition::evaluate`]; only [`Bool3::True`] routes.
#[derive(Clone, PartialEq)]
pub struct Condition {
    text: Box<str>,
    root: Node,
    /// The top-level expression has type `null`, which reads as false.
    null_is_false: bool,
    reads_body: bool,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("text", &self.text)
            .field("constant", &self.constant())
            .finish_non_exhaustive()
    }
}

impl Condition {
    /// Parse, type-check and compile `text` for a route whose `FROM` is `route_source`.
    /// An empty condition is valid and is always `undefined`.
    pub fn compile(
        text: &str,
        flags: CompilerFlags,
        route_source: &SourcePattern,
    ) -> Result<Self, RouteError> {
        Self::compile_in(text, 0, text.len(), flags, route_source)
    }

    /// The condition `text[start..end]` (errors point into the whole `text`).
    pub(crate) fn compile_in(
        text: &str,
        start: usize,
        end: usize,
        flags: CompilerFlags,
        route_source: &SourcePattern,
    ) -> Result<Self, RouteError> {
        let compiler = Compiler {
            text,
            flags,
            twin_source: route_source.is_twin_change_notifications(),
        };
        let (root, null_is_false) = match parser::parse_condition(text, start, end)? {
            None => (Node::Const(Value::Undefined), false),
            Some(ast) => {
                let typed = compiler.compile(&ast)?;
                (typed.node, typed.ty == Ty::Null)
            }
        };
        let reads_body = root.reads_body();
        Ok(Self {
            text: text.get(start..end).unwrap_or("").trim().into(),
            root,
            null_is_false,
            reads_body,
        })
    }

    /// The condition that is always true (a route without `WHERE`).
    pub fn always_true() -> Self {
        Self {
            text: "true".into(),
            root: Node::Const(Value::Bool(true)),
            null_is_false: false,
            reads_body: false,
        }
    }

    /// The condition's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Evaluate against one message. The body is parsed at most once per [`Evaluation`], and
    /// only if this condition reaches a body query.
    pub fn evaluate(&self, message: &mut Evaluation<'_>) -> Bool3 {
        if self.null_is_false {
            return Bool3::False;
        }
        let evaluation: &Evaluation<'_> = message;
        self.root.eval(evaluation).as_bool3()
    }

    /// The result for every message, when the condition does not depend on the message.
    pub fn constant(&self) -> Option<Bool3> {
        if self.null_is_false {
            return Some(Bool3::False);
        }
        match &self.root {
            Node::Const(value) => Some(value.as_bool3()),
            _ => None,
        }
    }

    /// Whether every message satisfies the condition (the hub can skip evaluation).
    pub fn is_always_true(&self) -> bool {
        self.constant() == Some(Bool3::True)
    }

    /// Whether evaluating may read the message body.
    pub fn reads_body(&self) -> bool {
        self.reads_body
    }
}

struct Compiler<'a> {
    text: &'a str,
    flags: CompilerFlags,
    twin_source: bool,
}

fn starts_with_body(name: &str) -> bool {
    name.get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("$body."))
}

impl Compiler<'_> {
    fn at(&self, offset: usize) -> Position {
        Position::at(self.text, offset)
    }

    fn operand_error(&self, at: usize, op: &str, given: &[Ty], expected: &str) -> RouteError {
        let have: Vec<String> = given.iter().map(|t| format!("'{}'", t.name())).collect();
        let arity = if given.len() == 1 { "unary" } else { "binary" };
        RouteError::Type {
            at: self.at(at),
            message: format!(
                "invalid operands to {arity} operator '{op}': have {}, expected {expected}",
                have.join(" and ")
            ),
        }
    }

    /// The body query for `$body.path` written at `at`, if body queries are on.
    fn body_path(&self, name: &str, at: usize) -> Result<Option<BodyPath>, RouteError> {
        if !(self.flags.body_query && starts_with_body(name)) {
            return Ok(None);
        }
        let path = name.get(6..).unwrap_or("");
        BodyPath::parse_at(path, self.text, at + 6).map(Some)
    }

    fn compile(&self, ast: &Ast) -> Result<Typed, RouteError> {
        Ok(match &ast.kind {
            AstKind::Bool(b) => Typed::constant(Value::Bool(*b), Ty::Bool),
            AstKind::Str(s) => Typed::constant(Value::Str(Cow::Owned(s.clone())), Ty::String),
            AstKind::Number(Some(n)) => Typed::constant(Value::number(*n), Ty::Number),
            AstKind::Number(None) | AstKind::Undefined => {
                Typed::constant(Value::Undefined, Ty::Undefined)
            }
            AstKind::Null => Typed::constant(Value::Null, Ty::Null),
            AstKind::Property(name) => Typed::new(Node::AppProp(Name::new(name)), Ty::String),
            AstKind::SysProperty(name) => {
                let body = self.body_path(name, ast.at)?;
                let bracketed = name.contains(['[', ']']);
                match (body, bracketed) {
                    (Some(path), true) => Typed::new(Node::Body(path), Ty::Query),
                    (None, true) => Typed::constant(Value::Undefined, Ty::Undefined),
                    (Some(path), false) => Typed::new(
                        Node::AppOrBody {
                            app: Name::new(name),
                            path,
                        },
                        Ty::Query,
                    ),
                    (None, false) => Typed::new(
                        Node::AppOrSys {
                            app: Name::new(name),
                            sys: Name::new(name.get(1..).unwrap_or("")),
                        },
                        Ty::String,
                    ),
                }
            }
            AstKind::EscapedSysProperty(name) => {
                // `{` then optional blanks then `$name`: find the name's own offset.
                let offset = self
                    .text
                    .get(ast.at..)
                    .and_then(|r| r.find('$'))
                    .map_or(ast.at, |i| ast.at + i);
                match self.body_path(name, offset)? {
                    Some(path) => Typed::new(Node::Body(path), Ty::Query),
                    None if name.contains(['[', ']']) => {
                        Typed::constant(Value::Undefined, Ty::Undefined)
                    }
                    None => Typed::new(
                        Node::SysProp(Name::new(name.get(1..).unwrap_or(""))),
                        Ty::String,
                    ),
                }
            }
            AstKind::Call {
                name,
                args,
                raw_args,
            } => self.call(ast.at, name, args, raw_args)?,
            AstKind::Unary { op, operand } => {
                let operand = self.compile(operand)?;
                self.unary(ast.at, *op, operand)?
            }
            AstKind::Binary {
                op,
                op_text,
                left,
                right,
            } => {
                let left = self.compile(left)?;
                let right = self.compile(right)?;
                self.binary(ast.at, *op, op_text, left, right)?
            }
        })
    }

    fn call(
        &self,
        at: usize,
        name: &str,
        args: &[Ast],
        raw_args: &str,
    ) -> Result<Typed, RouteError> {
        let builtin = Builtin::lookup(name).ok_or_else(|| RouteError::UnknownFunction {
            at: self.at(at),
            name: name.to_owned(),
        })?;
        if builtin == Builtin::TwinChangeIncludes {
            let unavailable = |reason: &str| RouteError::Unavailable {
                at: self.at(at),
                name: name.to_owned(),
                reason: reason.to_owned(),
            };
            if !self.flags.twin_change_includes {
                return Err(unavailable(
                    "is not enabled (compiler flag twin_change_includes)",
                ));
            }
            if !self.twin_source {
                return Err(unavailable(
                    "is only available on routes FROM /twinChangeNotifications",
                ));
            }
            let path_at = args.first().map_or(at, |a| a.at);
            if raw_args.is_empty() {
                return Err(RouteError::InvalidPath {
                    at: self.at(path_at),
                    path: String::new(),
                    reason: "twin_change_includes needs a path such as properties.reported.x"
                        .to_owned(),
                });
            }
            let path = BodyPath::parse_twin_at(raw_args, self.text, path_at).map_err(|e| {
                // The raw text has its blanks removed, so point at the argument itself.
                match e {
                    RouteError::InvalidPath { path, reason, .. } => RouteError::InvalidPath {
                        at: self.at(path_at),
                        path,
                        reason,
                    },
                    other => other,
                }
            })?;
            return Ok(Typed::new(Node::TwinChangeIncludes(path), Ty::Bool));
        }
        let compiled = args
            .iter()
            .map(|a| self.compile(a))
            .collect::<Result<Vec<_>, _>>()?;
        let given: Vec<&str> = compiled.iter().map(|a| a.ty.name()).collect();
        let given = given.join(", ");
        match builtin.resolve(compiled) {
            Some(typed) => Ok(Typed::new(typed.node, typed.ty)),
            None => Err(RouteError::Type {
                at: self.at(at),
                message: format!(
                    "invalid arguments to built-in function '{name}': have {name}({given}), \
                     expected {}",
                    builtin.signature()
                ),
            }),
        }
    }

    fn unary(&self, at: usize, op: UnaryOp, operand: Typed) -> Result<Typed, RouteError> {
        match (op, operand.ty) {
            (UnaryOp::Neg, Ty::Number | Ty::Query) => {
                Ok(Typed::new(Node::Neg(Box::new(operand.node)), operand.ty))
            }
            (UnaryOp::Not, Ty::Null) => Ok(Typed::constant(Value::Bool(true), Ty::Bool)),
            (UnaryOp::Not, Ty::Bool | Ty::Query) => {
                Ok(Typed::new(Node::Not(Box::new(operand.node)), Ty::Bool))
            }
            (UnaryOp::Neg, ty) => Err(self.operand_error(at, "-", &[ty], "'number'")),
            (UnaryOp::Not, ty) => Err(self.operand_error(at, "NOT", &[ty], "'bool'")),
        }
    }

    fn binary(
        &self,
        at: usize,
        op: BinaryOp,
        op_text: &str,
        left: Typed,
        right: Typed,
    ) -> Result<Typed, RouteError> {
        let (lt, rt) = (left.ty, right.ty);
        let query = lt == Ty::Query || rt == Ty::Query;
        let (l, r) = (Box::new(left.node), Box::new(right.node));
        let refuse = |expected: &str| Err(self.operand_error(at, op_text, &[lt, rt], expected));
        let same_type = format!("'{}' and '{}'", lt.name(), lt.name());
        let cmp = |op: CmpOp, l: Box<Node>, r: Box<Node>| Node::Compare {
            op,
            query,
            left: l,
            right: r,
        };
        let numeric = |t: Ty| matches!(t, Ty::Number | Ty::Query);
        let textual = |t: Ty| matches!(t, Ty::String | Ty::Query);
        let logical = |t: Ty| matches!(t, Ty::Null | Ty::Bool | Ty::Undefined | Ty::Query);
        let as_bool = |node: Box<Node>, ty: Ty| match ty {
            Ty::Bool => Typed::new(*node, Ty::Bool),
            _ => Typed::new(Node::AsBool(node), Ty::Bool),
        };
        let arith = match op {
            BinaryOp::Add => Some(ArithOp::Add),
            BinaryOp::Sub => Some(ArithOp::Sub),
            BinaryOp::Mul => Some(ArithOp::Mul),
            BinaryOp::Div => Some(ArithOp::Div),
            BinaryOp::Mod => Some(ArithOp::Mod),
            _ => None,
        };
        let comparison = match op {
            BinaryOp::Eq => Some(CmpOp::Eq),
            BinaryOp::Ne => Some(CmpOp::Ne),
            BinaryOp::Lt => Some(CmpOp::Lt),
            BinaryOp::Le => Some(CmpOp::Le),
            BinaryOp::Gt => Some(CmpOp::Gt),
            BinaryOp::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(aop) = arith {
            if !(numeric(lt) && numeric(rt)) {
                return refuse("'number' and 'number'");
            }
            let ty = if query { Ty::Query } else { Ty::Number };
            return Ok(Typed::new(Node::Arith(aop, l, r), ty));
        }
        if let Some(cop) = comparison {
            if !lt.compatible(rt) {
                return refuse(&same_type);
            }
            return Ok(Typed::new(cmp(cop, l, r), Ty::Bool));
        }
        match op {
            BinaryOp::Concat => {
                if !(textual(lt) && textual(rt)) {
                    return refuse("'string' and 'string'");
                }
                let mut parts = Vec::new();
                for part in [*l, *r] {
                    match part {
                        Node::Concat(inner) => parts.extend(inner),
                        other => parts.push(other),
                    }
                }
                Ok(Typed::new(Node::Concat(parts), Ty::String))
            }
            BinaryOp::Coalesce => {
                if !lt.compatible(rt) {
                    return refuse(&same_type);
                }
                if lt == Ty::Undefined {
                    return Ok(Typed::new(*r, rt));
                }
                let ty = if query { Ty::Query } else { lt };
                Ok(Typed::new(Node::Coalesce(l, r), ty))
            }
            _ => {
                if !(logical(lt) && logical(rt)) {
                    return refuse("'bool' and 'bool'");
                }
                let and = op == BinaryOp::And;
                Ok(match (lt == Ty::Null, rt == Ty::Null) {
                    (true, true) => Typed::constant(Value::Null, Ty::Null),
                    (true, false) | (false, true) if and => Typed::constant(Value::Null, Ty::Null),
                    (true, false) => as_bool(r, rt),
                    (false, true) => as_bool(l, lt),
                    (false, false) if and => Typed::new(Node::And(l, r), Ty::Bool),
                    (false, false) => Typed::new(Node::Or(l, r), Ty::Bool),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<Condition, RouteError> {
        Condition::compile(text, CompilerFlags::ALL, &SourcePattern::new("/messages"))
    }

    #[test]
    fn constants_fold() {
        for (text, value) in [
            ("true", Bool3::True),
            ("1 = 1 AND is_defined(null)", Bool3::True),
            ("'a' || 'b' = 'ab'", Bool3::True),
            ("3 % 0 = 3 % 0", Bool3::Undefined),
            ("null", Bool3::False),
        ] {
            assert_eq!(compile(text).unwrap().constant(), Some(value), "{text}");
        }
        assert!(compile("true").unwrap().is_always_true());
        assert!(!compile("key = 'a' OR true").unwrap().is_always_true());
        assert_eq!(compile("").unwrap().constant(), Some(Bool3::Undefined));
    }

    #[test]
    fn null_logic_and_types() {
        assert_eq!(
            compile("key = 'a' AND null").unwrap().constant(),
            Some(Bool3::False)
        );
        assert_eq!(
            compile("(null OR null) = null").unwrap().constant(),
            Some(Bool3::True)
        );
        assert!(compile("NOT undefined").is_err());
        assert!(compile("$body.a AND 'x'").is_err());
        assert!(compile("'x' AND $body.a").is_err());
        assert!(compile("$body.a % 2 = 1 AND - $body.a < 0").is_ok());
        // `-$body.a` is one identifier token (a string property), not a negation.
        assert!(compile("-$body.a < 0").is_err());
        assert!(compile("$body.a = undefined").is_err());
    }

    #[test]
    fn brackets_make_undefined_unless_body() {
        // `$x[0]` is not a property name: the literal undefined, so comparing it is a type error.
        assert!(compile("$x[0] = 'a'").is_err());
        assert_eq!(
            compile("is_defined($x[0])").unwrap().constant(),
            Some(Bool3::False)
        );
        let flags_off = Condition::compile(
            "is_defined($body.a[0])",
            CompilerFlags::NONE,
            &SourcePattern::new("/messages"),
        );
        assert_eq!(flags_off.unwrap().constant(), Some(Bool3::False));
        assert!(compile("is_defined($body.a[0])").unwrap().reads_body());
        assert!(!compile("is_defined($a)").unwrap().reads_body());
    }

    #[test]
    fn errors_name_position_found_and_expected() {
        let err = compile("key1 = 'a' AND\n length(3) = 1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "type error at line 2, column 2: invalid arguments to built-in function 'length': \
             have length(number), expected length(string)"
        );
        assert!(matches!(
            compile("nope(1)"),
            Err(RouteError::UnknownFunction { .. })
        ));
    }
}
