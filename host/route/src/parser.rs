//! Recursive-descent (precedence-climbing) parser for conditions.
//!
//! The grammar is IoT Edge's `Condition.g4`:
//!
//! ```text
//! condition := expr | <empty>
//! expr      := '(' expr ')' | literal | $name | id | '{' $name '}' | id '(' [expr {',' expr}] ')'
//!            | '-' expr | NOT expr | expr op expr
//! ```
//!
//! Unary `-` and `NOT` bind tighter than every binary operator (`NOT a = b` is `(NOT a) = b`,
//! as in ANTLR's left-recursive rule). Binary operators, tightest first, all left-associative:
//! `* / %`, `+ - ||`, `< <= > >=`, `= != <>`, `AND`, `OR`, `??`.
//!
//! Decisions:
//! - An empty condition (only blanks or comments) is valid and evaluates to `undefined`, as
//!   upstream.
//! - **Trailing tokens are an error.** Upstream's ANTLR rule has no end-of-input anchor, so it
//!   silently ignores what follows a complete expression (`3 $ 4` compiles as `3`); Verge refuses
//!   it instead of routing on half a condition.
//! - Nesting is limited ([`MAX_DEPTH`]) so that no input can exhaust the stack.

use crate::ast::{Ast, AstKind, BinaryOp, UnaryOp};
use crate::error::{Position, RouteError};
use crate::lexer::{Kind, Lexer, Token};

/// Deepest expression tree accepted.
pub(crate) const MAX_DEPTH: usize = 256;

/// Parse `text[start..end]` as a condition; `None` when it is empty.
pub(crate) fn parse_condition(
    text: &str,
    start: usize,
    end: usize,
) -> Result<Option<Ast>, RouteError> {
    let tokens = Lexer::tokenize(text, start, end);
    let mut parser = Parser {
        text,
        tokens: &tokens,
        next: 0,
        nesting: 0,
    };
    if parser.peek().kind == Kind::Eof {
        return Ok(None);
    }
    let ast = parser.expr(0)?;
    let token = parser.peek();
    if token.kind != Kind::Eof {
        return Err(parser.unexpected(token, "an operator or the end of the condition"));
    }
    Ok(Some(ast))
}

struct Parser<'a> {
    text: &'a str,
    tokens: &'a [Token],
    next: usize,
    nesting: usize,
}

/// How a token reads in an error message.
pub(crate) fn describe(text: &str, token: Token) -> String {
    let s = token.text(text);
    match token.kind {
        Kind::Eof => "the end of the text".to_owned(),
        Kind::UnterminatedStr => format!("an unterminated string {s}"),
        Kind::Unknown => format!("the character '{s}'"),
        Kind::QueryPath => {
            format!("'{s}' (brackets are only allowed in $body paths such as $body.a[0])")
        }
        _ => format!("'{s}'"),
    }
}

fn binary_op(kind: Kind) -> Option<BinaryOp> {
    Some(match kind {
        Kind::Star => BinaryOp::Mul,
        Kind::Slash => BinaryOp::Div,
        Kind::Percent => BinaryOp::Mod,
        Kind::Plus => BinaryOp::Add,
        Kind::Minus => BinaryOp::Sub,
        Kind::Concat => BinaryOp::Concat,
        Kind::Lt => BinaryOp::Lt,
        Kind::Le => BinaryOp::Le,
        Kind::Gt => BinaryOp::Gt,
        Kind::Ge => BinaryOp::Ge,
        Kind::Eq => BinaryOp::Eq,
        Kind::NotEq | Kind::LtGt => BinaryOp::Ne,
        Kind::And => BinaryOp::And,
        Kind::Or => BinaryOp::Or,
        Kind::Coalesce => BinaryOp::Coalesce,
        _ => return None,
    })
}

/// Unescape a string literal's content (`\" \' \\ \uXXXX`; the lexer admits no other escape).
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut units: Vec<u16> = Vec::new();
    let mut chars = raw.chars();
    let flush = |units: &mut Vec<u16>, out: &mut String| {
        out.extend(char::decode_utf16(units.drain(..)).map(|r| r.unwrap_or('\u{FFFD}')));
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush(&mut units, &mut out);
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u16::from_str_radix(&hex, 16) {
                    Ok(unit) => units.push(unit),
                    Err(_) => {
                        flush(&mut units, &mut out);
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => {
                flush(&mut units, &mut out);
                out.push(other);
            }
            None => {
                flush(&mut units, &mut out);
                out.push('\\');
            }
        }
    }
    flush(&mut units, &mut out);
    out
}

/// Upstream parses hex literals as a 64-bit two's-complement integer (`0xFFFFFFFFFFFFFFFF` is
/// -1); wider literals do not parse and become `undefined`.
fn parse_hex(digits: &str) -> Option<f64> {
    let significant = digits.trim_start_matches('0');
    if significant.len() > 16 {
        return None;
    }
    if significant.is_empty() {
        return Some(0.0);
    }
    u64::from_str_radix(significant, 16)
        .ok()
        .map(|v| v.cast_signed() as f64)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Token {
        self.tokens
            .get(self.next)
            .or_else(|| self.tokens.last())
            .copied()
            .unwrap_or(Token {
                kind: Kind::Eof,
                start: self.text.len(),
                end: self.text.len(),
            })
    }

    fn bump(&mut self) -> Token {
        let token = self.peek();
        if self.next < self.tokens.len() {
            self.next += 1;
        }
        token
    }

    fn unexpected(&self, token: Token, expected: &str) -> RouteError {
        RouteError::Syntax {
            at: Position::at(self.text, token.start),
            expected: expected.to_owned(),
            found: describe(self.text, token),
        }
    }

    fn expect(&mut self, kind: Kind, expected: &str) -> Result<Token, RouteError> {
        let token = self.peek();
        if token.kind == kind {
            Ok(self.bump())
        } else {
            Err(self.unexpected(token, expected))
        }
    }

    fn checked(&self, ast: Ast) -> Result<Ast, RouteError> {
        if ast.depth > MAX_DEPTH {
            return Err(RouteError::Syntax {
                at: Position::at(self.text, ast.at),
                expected: format!("an expression at most {MAX_DEPTH} levels deep"),
                found: "a deeper expression".to_owned(),
            });
        }
        Ok(ast)
    }

    fn enter(&mut self) -> Result<(), RouteError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            let token = self.peek();
            return Err(RouteError::Syntax {
                at: Position::at(self.text, token.start),
                expected: format!("an expression nested at most {MAX_DEPTH} levels deep"),
                found: "deeper nesting".to_owned(),
            });
        }
        Ok(())
    }

    /// Binary expressions whose operators bind at least as tightly as `min`.
    fn expr(&mut self, min: u8) -> Result<Ast, RouteError> {
        self.enter()?;
        let mut left = self.unary()?;
        loop {
            let token = self.peek();
            let Some(op) = binary_op(token.kind) else {
                break;
            };
            if op.precedence() < min {
                break;
            }
            self.bump();
            let right = self.expr(op.precedence() + 1)?;
            let depth = left.depth.max(right.depth) + 1;
            left = self.checked(Ast {
                kind: AstKind::Binary {
                    op,
                    op_text: token.text(self.text).to_owned(),
                    left: Box::new(left),
                    right: Box::new(right),
                },
                at: token.start,
                depth,
            })?;
        }
        self.nesting -= 1;
        Ok(left)
    }

    fn unary(&mut self) -> Result<Ast, RouteError> {
        let token = self.peek();
        let op = match token.kind {
            Kind::Minus => UnaryOp::Neg,
            Kind::Not => UnaryOp::Not,
            _ => return self.primary(),
        };
        self.bump();
        self.enter()?;
        let operand = self.unary()?;
        self.nesting -= 1;
        let depth = operand.depth + 1;
        self.checked(Ast {
            kind: AstKind::Unary {
                op,
                operand: Box::new(operand),
            },
            at: token.start,
            depth,
        })
    }

    fn leaf(kind: AstKind, token: Token) -> Ast {
        Ast {
            kind,
            at: token.start,
            depth: 1,
        }
    }

    fn primary(&mut self) -> Result<Ast, RouteError> {
        let token = self.bump();
        let text = token.text(self.text);
        let kind = match token.kind {
            Kind::True => AstKind::Bool(true),
            Kind::False => AstKind::Bool(false),
            Kind::Null => AstKind::Null,
            Kind::Undefined => AstKind::Undefined,
            Kind::Str => {
                let inner = text.get(1..text.len().saturating_sub(1)).unwrap_or("");
                AstKind::Str(unescape(inner))
            }
            Kind::Integer | Kind::Real => AstKind::Number(crate::dotnet::parse_double(text)),
            Kind::Hex => AstKind::Number(text.get(2..).and_then(parse_hex)),
            Kind::SysProp => AstKind::SysProperty(text.to_owned()),
            Kind::LParen => {
                let inner = self.expr(0)?;
                self.expect(Kind::RParen, "')'")?;
                return Ok(inner);
            }
            Kind::LBrace => {
                let name = self.expect(Kind::SysProp, "a '$name' system property after '{'")?;
                self.expect(Kind::RBrace, "'}'")?;
                AstKind::EscapedSysProperty(name.text(self.text).to_owned())
            }
            Kind::Id if self.peek().kind == Kind::LParen => return self.call(token),
            Kind::Id => AstKind::Property(text.to_owned()),
            _ => return Err(self.unexpected(token, "an expression")),
        };
        Ok(Self::leaf(kind, token))
    }

    fn call(&mut self, name: Token) -> Result<Ast, RouteError> {
        self.bump(); // '('
        let first_arg = self.next;
        let mut args = Vec::new();
        if self.peek().kind != Kind::RParen {
            loop {
                args.push(self.expr(0)?);
                if self.peek().kind == Kind::Comma {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        let raw_args: String = self
            .tokens
            .get(first_arg..self.next)
            .unwrap_or(&[])
            .iter()
            .map(|t| t.text(self.text))
            .collect();
        self.expect(Kind::RParen, "',' or ')'")?;
        let depth = args.iter().map(|a| a.depth).max().unwrap_or(0) + 1;
        self.checked(Ast {
            kind: AstKind::Call {
                name: name.text(self.text).to_owned(),
                args,
                raw_args,
            },
            at: name.start,
            depth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<Ast>, RouteError> {
        parse_condition(text, 0, text.len())
    }

    fn shape(ast: &Ast) -> String {
        match &ast.kind {
            AstKind::Binary {
                op_text,
                left,
                right,
                ..
            } => format!("({} {op_text} {})", shape(left), shape(right)),
            AstKind::Unary { op, operand } => format!("({op:?} {})", shape(operand)),
            AstKind::Property(p) => p.clone(),
            AstKind::Number(n) => format!("{n:?}"),
            AstKind::Call { name, args, .. } => {
                let args: Vec<String> = args.iter().map(shape).collect();
                format!("{name}({})", args.join(","))
            }
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn precedence_and_associativity() {
        let ast = parse("a OR b AND NOT c = d ?? e").unwrap().unwrap();
        assert_eq!(shape(&ast), "((a OR (b AND ((Not c) = d))) ?? e)");
        let ast = parse("1 - 2 - 3 * - x").unwrap().unwrap();
        assert_eq!(
            shape(&ast),
            "((Some(1.0) - Some(2.0)) - (Some(3.0) * (Neg x)))"
        );
    }

    #[test]
    fn empty_conditions_are_none() {
        assert_eq!(parse("  /* nothing */ ").unwrap(), None);
    }

    #[test]
    fn trailing_tokens_and_bad_tokens_are_errors() {
        let err = parse("3 $ 4").unwrap_err();
        assert_eq!(
            err.to_string(),
            "syntax error at column 3: expected an operator or the end of the condition, found '$'"
        );
        assert!(parse("test == true").is_err());
        assert!(
            parse("a[0] = 1")
                .unwrap_err()
                .to_string()
                .contains("brackets")
        );
        assert!(parse("f(a,,b)").is_err());
        assert!(
            parse("none = \"")
                .unwrap_err()
                .to_string()
                .contains("unterminated")
        );
    }

    #[test]
    fn call_arguments_keep_their_raw_text() {
        let ast = parse("twin_change_includes( properties.reported.x /* c */ )")
            .unwrap()
            .unwrap();
        let AstKind::Call { raw_args, .. } = ast.kind else {
            panic!("not a call")
        };
        assert_eq!(raw_args, "properties.reported.x");
    }

    #[test]
    fn strings_unescape() {
        assert_eq!(unescape(r#"a\"b\\c\u00e9\ud83d\ude00"#), "a\"b\\cé😀");
    }

    #[test]
    fn hex_is_64_bit_twos_complement() {
        assert_eq!(parse_hex("1F"), Some(31.0));
        assert_eq!(parse_hex("FFFFFFFFFFFFFFFF"), Some(-1.0));
        assert_eq!(parse_hex("00000000000000000001"), Some(1.0));
        assert_eq!(parse_hex("10000000000000000"), None);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = "(".repeat(10_000) + "1" + &")".repeat(10_000);
        assert!(parse(&deep).is_err());
        let long = vec!["1"; 10_000].join(" + ");
        assert!(parse(&long).is_err());
        let negs = "- ".repeat(10_000) + "1";
        assert!(parse(&negs).is_err());
    }
}
