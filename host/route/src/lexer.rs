//! The tokenizer shared by routes and conditions.
//!
//! It reproduces IoT Edge's ANTLR lexer (`GrammarLexer.g4`) exactly, because the token rules decide
//! what a condition means, not only whether it parses:
//!
//! - At each position the **longest** match of any rule wins; on a tie the rule listed first in
//!   the grammar wins (keywords and literals before identifiers).
//! - Identifiers are runs of anything except `( ) < > @ , ; : \ " / [ ] ? = { }` and blanks, so
//!   they include `-`, `+`, `*`, `%`, `!`, `|`, `'`, `.` and `$`. Hence `-undefined` is the
//!   *property* named `-undefined`, `3-4` is a property, and `a*b` is a property; write spaces
//!   around operators. `-1` is a number (the numeric rule ties with the identifier and comes
//!   first).
//! - `$name` (a system property or `$body` query) is `$` followed by the same characters plus
//!   `[` and `]`. A bare word that contains `[` or `]` is a separate token the parser rejects.
//! - Keywords `SELECT FROM WHERE INTO AND OR NOT` are case-insensitive; `true false null
//!   undefined` are lower-case only (`True` is a property).
//! - Strings use `"…"` or `'…'` with escapes `\" \' \\ \uXXXX`; any other escape ends the
//!   string there, which makes it unterminated.
//! - Numbers: `-?[0-9]+`, `0x…` hex, and reals `-?[0-9]*.[0-9]+(e…)?` or `-?[0-9]*e[+-]?[0-9]+`
//!   (so `e5` alone is a real literal that does not parse, and becomes `undefined`, as upstream).
//! - `/* … */` comments and blanks (` \t\r\n`) separate tokens.
//!
//! Offsets are byte offsets into the original text; the lexer can work on a sub-range so that a
//! condition inside a route reports positions in the route.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Select,
    From,
    Where,
    Into,
    Str,
    UnterminatedStr,
    Integer,
    Hex,
    Real,
    True,
    False,
    Null,
    Undefined,
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    And,
    Or,
    Not,
    Eq,
    NotEq,
    LtGt,
    Le,
    Ge,
    Gt,
    Lt,
    Concat,
    Coalesce,
    SysProp,
    Id,
    QueryPath,
    LBrace,
    RBrace,
    Unknown,
    Eof,
}

/// A token: its kind and byte range in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The token's text.
    pub fn text<'t>(&self, text: &'t str) -> &'t str {
        text.get(self.start..self.end).unwrap_or("")
    }
}

/// Blanks that separate tokens.
pub(crate) fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Characters of a `$name` token after the `$` (identifier characters plus `[` and `]`).
pub(crate) fn is_query_path_char(c: char) -> bool {
    !is_blank(c)
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
                | '?'
                | '='
                | '{'
                | '}'
        )
}

/// Identifier characters.
pub(crate) fn is_id_char(c: char) -> bool {
    is_query_path_char(c) && c != '[' && c != ']'
}

/// Tokenizer over `text[start..end]`.
pub(crate) struct Lexer<'t> {
    text: &'t str,
    pos: usize,
    end: usize,
}

/// Rule order in the grammar: the lower wins a tie in length.
#[derive(Clone, Copy)]
struct Candidate {
    len: usize,
    rank: u8,
    kind: Kind,
}

impl<'t> Lexer<'t> {
    /// A lexer over `text[start..end]` (clamped to the text and to character boundaries).
    pub fn new(text: &'t str, start: usize, end: usize) -> Self {
        let end = end.min(text.len());
        let start = start.min(end);
        Self {
            text,
            pos: start,
            end,
        }
    }

    /// All tokens up to and including `Eof`.
    pub fn tokenize(text: &'t str, start: usize, end: usize) -> Vec<Token> {
        let mut lexer = Self::new(text, start, end);
        let mut tokens = Vec::new();
        loop {
            let token = lexer.next_token();
            tokens.push(token);
            if token.kind == Kind::Eof {
                return tokens;
            }
        }
    }

    /// Byte offset of the next unread character.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Continue from byte offset `pos` (used by the route parser after it reads a path).
    pub fn set_pos(&mut self, pos: usize) {
        if self.text.is_char_boundary(pos) {
            self.pos = pos.min(self.end);
        }
    }

    fn rest(&self) -> &'t str {
        self.text.get(self.pos..self.end).unwrap_or("")
    }

    /// Skip blanks and closed comments.
    pub fn skip_trivia(&mut self) {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start_matches(is_blank);
            self.pos += rest.len() - trimmed.len();
            if let Some(body) = trimmed.strip_prefix("/*")
                && let Some(close) = body.find("*/")
            {
                self.pos += 2 + close + 2;
                continue;
            }
            return;
        }
    }

    /// The next token (never fails: unknown characters and unterminated strings are tokens).
    pub fn next_token(&mut self) -> Token {
        self.skip_trivia();
        let start = self.pos;
        let rest = self.rest();
        let Some(first) = rest.chars().next() else {
            return Token {
                kind: Kind::Eof,
                start,
                end: start,
            };
        };
        let best = longest_match(rest, first);
        self.pos += best.len;
        Token {
            kind: best.kind,
            start,
            end: self.pos,
        }
    }
}

fn run_len(s: &str, pred: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| !pred(c))
        .map_or(s.len(), |(i, _)| i)
}

fn digits(s: &[u8]) -> usize {
    s.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Length of `[eE][+-]?[0-9]+` at the start of `s`, or 0.
fn exponent(s: &[u8]) -> usize {
    match s.first() {
        Some(b'e' | b'E') => {
            let sign = usize::from(matches!(s.get(1), Some(b'+' | b'-')));
            let n = digits(s.get(1 + sign..).unwrap_or(&[]));
            if n > 0 { 1 + sign + n } else { 0 }
        }
        _ => 0,
    }
}

/// Longest of INTEGER, HEX and REAL at the start of `s`, as (len, kind).
fn number(s: &[u8]) -> Option<(usize, Kind)> {
    let sign = usize::from(s.first() == Some(&b'-'));
    let body = s.get(sign..).unwrap_or(&[]);
    let int = digits(body);
    let mut best: Option<(usize, Kind)> = None;
    let mut offer = |len: usize, kind: Kind| {
        if best.is_none_or(|(l, _)| len > l) {
            best = Some((len, kind));
        }
    };
    if int > 0 {
        offer(sign + int, Kind::Integer);
    }
    if sign == 0 && matches!(s, [b'0', b'x' | b'X', ..]) {
        let hex = s
            .get(2..)
            .unwrap_or(&[])
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if hex > 0 {
            offer(2 + hex, Kind::Hex);
        }
    }
    // -?[0-9]* '.' [0-9]+ EXP?
    if body.get(int) == Some(&b'.') {
        let frac = digits(body.get(int + 1..).unwrap_or(&[]));
        if frac > 0 {
            let after = int + 1 + frac;
            let exp = exponent(body.get(after..).unwrap_or(&[]));
            offer(sign + after + exp, Kind::Real);
        }
    }
    // -?[0-9]* EXP
    let exp = exponent(body.get(int..).unwrap_or(&[]));
    if exp > 0 {
        offer(sign + int + exp, Kind::Real);
    }
    best
}

/// (terminated length, unterminated length) of a string literal starting at `s[0]`.
fn string(s: &str, quote: char) -> (Option<usize>, usize) {
    let bytes = s.as_bytes();
    let mut i = quote.len_utf8();
    loop {
        let Some(c) = s.get(i..).and_then(|r| r.chars().next()) else {
            return (None, i);
        };
        if c == quote {
            return (Some(i + 1), i);
        }
        if c == '\\' {
            match bytes.get(i + 1) {
                Some(b'"' | b'\'' | b'\\') => i += 2,
                Some(b'u')
                    if bytes
                        .get(i + 2..i + 6)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                {
                    i += 6;
                }
                _ => return (None, i),
            }
        } else {
            i += c.len_utf8();
        }
    }
}

const KEYWORDS_ANY_CASE: [(&str, u8, Kind); 7] = [
    ("select", 1, Kind::Select),
    ("from", 2, Kind::From),
    ("where", 3, Kind::Where),
    ("into", 4, Kind::Into),
    ("and", 22, Kind::And),
    ("or", 23, Kind::Or),
    ("not", 24, Kind::Not),
];

const KEYWORDS_LOWER: [(&str, u8, Kind); 4] = [
    ("true", 10, Kind::True),
    ("false", 11, Kind::False),
    ("null", 12, Kind::Null),
    ("undefined", 13, Kind::Undefined),
];

const OPERATORS: [(&str, u8, Kind); 19] = [
    ("(", 14, Kind::LParen),
    (")", 15, Kind::RParen),
    (",", 16, Kind::Comma),
    ("+", 17, Kind::Plus),
    ("-", 18, Kind::Minus),
    ("*", 19, Kind::Star),
    ("/", 20, Kind::Slash),
    ("%", 21, Kind::Percent),
    ("=", 25, Kind::Eq),
    ("!=", 26, Kind::NotEq),
    ("<>", 27, Kind::LtGt),
    ("<=", 28, Kind::Le),
    (">=", 29, Kind::Ge),
    (">", 30, Kind::Gt),
    ("<", 31, Kind::Lt),
    ("||", 32, Kind::Concat),
    ("??", 33, Kind::Coalesce),
    ("{", 0, Kind::LBrace),
    ("}", 0, Kind::RBrace),
];

fn longest_match(rest: &str, first: char) -> Candidate {
    let mut best = Candidate {
        len: first.len_utf8(),
        rank: u8::MAX,
        kind: Kind::Unknown,
    };
    let mut offer = |len: usize, rank: u8, kind: Kind| {
        if len > best.len || (len == best.len && rank < best.rank) {
            best = Candidate { len, rank, kind };
        }
    };

    let id = run_len(rest, is_id_char);
    if id > 0 {
        let word = rest.get(..id).unwrap_or("");
        offer(id, 35, Kind::Id);
        for (kw, rank, kind) in KEYWORDS_ANY_CASE {
            if word.eq_ignore_ascii_case(kw) {
                offer(id, rank, kind);
            }
        }
        for (kw, rank, kind) in KEYWORDS_LOWER {
            if word == kw {
                offer(id, rank, kind);
            }
        }
    }
    let query_path = run_len(rest, is_query_path_char);
    if query_path > 0 {
        offer(query_path, 36, Kind::QueryPath);
    }
    if first == '$' {
        let after = run_len(rest.get(1..).unwrap_or(""), is_query_path_char);
        if after > 0 {
            offer(1 + after, 34, Kind::SysProp);
        }
    }
    if first == '"' || first == '\'' {
        let (terminated, unterminated) = string(rest, first);
        if let Some(len) = terminated {
            offer(len, 5, Kind::Str);
        }
        offer(unterminated, 6, Kind::UnterminatedStr);
    }
    if let Some((len, kind)) = number(rest.as_bytes()) {
        let rank = match kind {
            Kind::Integer => 7,
            Kind::Hex => 8,
            _ => 9,
        };
        offer(len, rank, kind);
    }
    for (op, rank, kind) in OPERATORS {
        if rest.starts_with(op) {
            offer(op.len(), rank, kind);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        Lexer::tokenize(text, 0, text.len())
            .into_iter()
            .map(|t| (t.kind, t.text(text)))
            .collect()
    }

    #[test]
    fn identifiers_swallow_operator_characters() {
        assert_eq!(
            kinds("-undefined 3-4 a*b -1 - ("),
            vec![
                (Kind::Id, "-undefined"),
                (Kind::Id, "3-4"),
                (Kind::Id, "a*b"),
                (Kind::Integer, "-1"),
                (Kind::Minus, "-"),
                (Kind::LParen, "("),
                (Kind::Eof, ""),
            ]
        );
    }

    #[test]
    fn keywords_tie_with_identifiers_and_win() {
        assert_eq!(kinds("AnD")[0].0, Kind::And);
        assert_eq!(kinds("andx")[0].0, Kind::Id);
        assert_eq!(kinds("true")[0].0, Kind::True);
        assert_eq!(kinds("True")[0].0, Kind::Id);
        assert_eq!(kinds("||")[0].0, Kind::Concat);
        assert_eq!(kinds("|||")[0].0, Kind::Id);
        assert_eq!(kinds("!=")[0].0, Kind::NotEq);
    }

    #[test]
    fn numbers() {
        assert_eq!(kinds("10e10")[0], (Kind::Real, "10e10"));
        assert_eq!(kinds("1e-6")[0], (Kind::Real, "1e-6"));
        assert_eq!(kinds(".5")[0], (Kind::Real, ".5"));
        assert_eq!(kinds("e5")[0], (Kind::Real, "e5"));
        assert_eq!(kinds("0x1F")[0], (Kind::Hex, "0x1F"));
        assert_eq!(kinds("123abc")[0], (Kind::Id, "123abc"));
        assert_eq!(kinds("1.")[0], (Kind::Id, "1."));
    }

    #[test]
    fn strings_and_properties() {
        assert_eq!(kinds("'a\\'b'")[0], (Kind::Str, "'a\\'b'"));
        assert_eq!(kinds("\"abc")[0], (Kind::UnterminatedStr, "\"abc"));
        assert_eq!(kinds("'a\\nb'")[0], (Kind::UnterminatedStr, "'a"));
        assert_eq!(kinds("'x'y")[0], (Kind::Id, "'x'y"));
        assert_eq!(kinds("$body.a[0].b=1")[0], (Kind::SysProp, "$body.a[0].b"));
        assert_eq!(kinds("$ x")[0], (Kind::Id, "$"));
        assert_eq!(kinds("a[0]")[0], (Kind::QueryPath, "a[0]"));
        assert_eq!(kinds("@")[0], (Kind::Unknown, "@"));
    }

    #[test]
    fn comments_and_unicode() {
        assert_eq!(
            kinds("/* c */ ä /* open"),
            vec![
                (Kind::Id, "ä"),
                (Kind::Slash, "/"),
                (Kind::Star, "*"),
                (Kind::Id, "open"),
                (Kind::Eof, "")
            ]
        );
    }
}
