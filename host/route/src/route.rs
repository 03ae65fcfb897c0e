//! Parsing a whole route: `[SELECT *] FROM source [WHERE condition] INTO sink`.
//!
//! Keywords are case-insensitive and tokens are separated as in conditions (see `lexer`).
//! Decisions, where Verge is stricter or clearer than upstream's ANTLR grammar:
//! - The `FROM` path is read as one run of `/` and identifier characters (`/messages/*`,
//!   `/messages/modules/M/outputs/O`), so `/*` in a path is never mistaken for a comment. A lone
//!   `/` or a trailing `/` is accepted (upstream's grammar refuses them, although its source
//!   matching treats them as the same path); an empty segment (`//`) is refused.
//! - The condition is every token between `WHERE` and `INTO`; its text is kept exactly as
//!   written from its first to its last token ([`Route::condition_text`]). `WHERE` with nothing
//!   after it is an error; no `WHERE` means `true`.
//! - Anything after the sink is an error (upstream ignores it).
//! - The sink must resolve to an Edge Hub endpoint (see `sink`), so a route that could never
//!   deliver fails to parse, as it fails Edge Hub's configuration.
//!
//! Two stages, as upstream: [`ParsedRoute::parse`] checks the grammar (including the condition's
//! syntax) and the endpoint, like Edge Hub's `RouteFactory`; [`ParsedRoute::compile`] type-checks
//! the condition, like Edge Hub's router. [`Route::parse`] does both, so a route whose condition
//! has a type error (`WHERE temp > 100`: `temp` is a string property) is refused, as Edge Hub
//! refuses the configuration.

use std::fmt;

use crate::compile::{CompilerFlags, Condition};
use crate::error::{Position, RouteError};
use crate::eval::Evaluation;
use crate::lexer::{Kind, Lexer, Token, is_id_char};
use crate::parser::{self, describe};
use crate::sink::{Endpoint, Sink};
use crate::source::SourcePattern;
use crate::value::Bool3;

/// A route that follows the grammar and names a known endpoint, with its condition parsed but
/// not yet type-checked: what Edge Hub's `RouteFactory` produces. [`ParsedRoute::compile`] then
/// type-checks the condition, as Edge Hub's router does before it accepts a configuration.
///
/// Most code wants [`Route::parse`], which does both. The split exists because upstream's route
/// tests accept routes whose conditions do not compile (`WHERE temp > 100`, comparing a string
/// property with a number): its route parser does not type-check, its router refuses them later.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedRoute {
    text: Box<str>,
    source: SourcePattern,
    /// Byte range of the condition in `text`; `None` without `WHERE`.
    condition: Option<(usize, usize)>,
    sink: Sink,
    endpoint: Endpoint,
}

/// A parsed and compiled route.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    source: SourcePattern,
    condition: Condition,
    condition_text: String,
    sink: Sink,
    endpoint: Endpoint,
}

fn syntax(text: &str, token: Token, expected: &str) -> RouteError {
    RouteError::Syntax {
        at: Position::at(text, token.start),
        expected: expected.to_owned(),
        found: describe(text, token),
    }
}

const SINK_HELP: &str =
    "a sink: $upstream or BrokeredEndpoint(\"/modules/{module}/inputs/{input}\")";

impl ParsedRoute {
    /// Check the grammar (condition syntax included) and resolve the sink.
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        let mut lexer = Lexer::new(text, 0, text.len());
        let mut token = lexer.next_token();
        if token.kind == Kind::Select {
            let star = lexer.next_token();
            if star.kind != Kind::Star {
                return Err(syntax(text, star, "'*' after SELECT"));
            }
            token = lexer.next_token();
        }
        if token.kind != Kind::From {
            return Err(syntax(text, token, "FROM (or SELECT * FROM)"));
        }

        let source = Self::parse_path(text, &mut lexer)?;

        token = lexer.next_token();
        let condition = if token.kind == Kind::Where {
            let mut span: Option<(usize, usize)> = None;
            loop {
                token = lexer.next_token();
                if matches!(token.kind, Kind::Into | Kind::Eof) {
                    break;
                }
                span = Some((span.map_or(token.start, |(s, _)| s), token.end));
            }
            let Some((start, end)) = span else {
                return Err(syntax(text, token, "a condition after WHERE"));
            };
            parser::parse_condition(text, start, end)?;
            Some((start, end))
        } else {
            None
        };
        if token.kind != Kind::Into {
            return Err(syntax(text, token, "WHERE or INTO"));
        }

        let sink = Self::parse_sink(text, &mut lexer)?;
        let end = lexer.next_token();
        if end.kind != Kind::Eof {
            return Err(syntax(text, end, "the end of the route"));
        }
        let endpoint = Endpoint::resolve(&sink)?;
        Ok(Self {
            text: text.into(),
            source,
            condition,
            sink,
            endpoint,
        })
    }

    /// Type-check and compile the condition with every feature on, as Edge Hub does.
    pub fn compile(&self) -> Result<Route, RouteError> {
        let condition = match self.condition {
            Some((start, end)) => {
                Condition::compile_in(&self.text, start, end, CompilerFlags::ALL, &self.source)?
            }
            None => Condition::always_true(),
        };
        Ok(Route {
            source: self.source.clone(),
            condition,
            condition_text: self.condition_text().to_owned(),
            sink: self.sink.clone(),
            endpoint: self.endpoint.clone(),
        })
    }

    /// The `FROM` pattern.
    pub fn source(&self) -> &SourcePattern {
        &self.source
    }

    /// The `WHERE` text exactly as written, or `"true"`.
    pub fn condition_text(&self) -> &str {
        match self.condition {
            Some((start, end)) => self.text.get(start..end).unwrap_or(""),
            None => "true",
        }
    }

    /// The sink as written.
    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// The endpoint the sink resolves to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn parse_path(text: &str, lexer: &mut Lexer<'_>) -> Result<SourcePattern, RouteError> {
        lexer.skip_trivia();
        let start = lexer.pos();
        let rest = text.get(start..).unwrap_or("");
        if !rest.starts_with('/') {
            let token = lexer.next_token();
            return Err(syntax(text, token, "a source path such as /messages/*"));
        }
        let len = rest
            .char_indices()
            .find(|&(_, c)| c != '/' && !is_id_char(c))
            .map_or(rest.len(), |(i, _)| i);
        let path = rest.get(..len).unwrap_or("");
        if let Some(i) = path.find("//") {
            return Err(RouteError::Syntax {
                at: Position::at(text, start + i + 1),
                expected: "a path segment between '/'s".to_owned(),
                found: "'//'".to_owned(),
            });
        }
        lexer.set_pos(start + len);
        Ok(SourcePattern::new(path))
    }

    fn parse_sink(text: &str, lexer: &mut Lexer<'_>) -> Result<Sink, RouteError> {
        let token = lexer.next_token();
        match token.kind {
            Kind::SysProp => Ok(Sink::System(token.text(text).to_owned())),
            Kind::Id => {
                let open = lexer.next_token();
                if open.kind != Kind::LParen {
                    return Err(syntax(text, open, "'(' after the endpoint function name"));
                }
                let address = lexer.next_token();
                if address.kind != Kind::Str {
                    return Err(syntax(text, address, "a quoted endpoint address"));
                }
                let close = lexer.next_token();
                if close.kind != Kind::RParen {
                    return Err(syntax(text, close, "')'"));
                }
                let quoted = address.text(text);
                Ok(Sink::Function {
                    name: token.text(text).to_owned(),
                    address: quoted
                        .get(1..quoted.len().saturating_sub(1))
                        .unwrap_or("")
                        .to_owned(),
                })
            }
            _ => Err(syntax(text, token, SINK_HELP)),
        }
    }
}

impl Route {
    /// Parse and compile a route with every condition feature on, as Edge Hub does: the grammar,
    /// the endpoint, then the condition's types. Errors name the position and what was expected.
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        ParsedRoute::parse(text)?.compile()
    }

    /// The `FROM` pattern.
    pub fn source(&self) -> &SourcePattern {
        &self.source
    }

    /// The compiled condition (`true` without `WHERE`).
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// The `WHERE` text exactly as written, or `"true"`.
    pub fn condition_text(&self) -> &str {
        &self.condition_text
    }

    /// The sink as written.
    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// The endpoint the sink resolves to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether this route takes the message: its source matches and its condition is true.
    pub fn matches(&self, evaluation: &mut Evaluation<'_>) -> bool {
        self.source.matches_ref(evaluation.source_ref())
            && (self.condition.is_always_true()
                || self.condition.evaluate(evaluation) == Bool3::True)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FROM {}", self.source)?;
        if !self.condition.is_always_true() {
            write!(f, " WHERE {}", self.condition_text)?;
        }
        write!(f, " INTO {}", self.sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_route() {
        let route = Route::parse(
            " select * FROM /messages/modules/a/* WHERE /* c */ x = 'y' AND z INTO \
             BrokeredEndpoint('/modules/b/inputs/in') ",
        );
        let err = route.unwrap_err();
        assert!(err.to_string().contains("column 60"), "{err}");
        let route = Route::parse(
            "FROM /messages/modules/a/* WHERE x = 'y'  INTO BrokeredEndpoint('/modules/b/inputs/in')",
        )
        .unwrap();
        assert_eq!(route.source().path(), "/messages/modules/a");
        assert_eq!(route.condition_text(), "x = 'y'");
        assert_eq!(
            route.endpoint(),
            &Endpoint::ModuleInput {
                module: "b".into(),
                input: "in".into()
            }
        );
        assert_eq!(
            route.to_string(),
            "FROM /messages/modules/a WHERE x = 'y' INTO BrokeredEndpoint(\"/modules/b/inputs/in\")"
        );
    }

    #[test]
    fn errors_say_what_was_expected() {
        let cases = [
            ("FORM /x INTO $upstream", "expected FROM"),
            ("FROM INTO $upstream", "expected a source path"),
            (
                "FROM /a WHERE INTO $upstream",
                "expected a condition after WHERE",
            ),
            (
                "FROM /a INTO $upstream extra",
                "expected the end of the route",
            ),
            ("FROM /a INTO upstream", "expected '('"),
            ("FROM /a INTO $cloud", "only one is $upstream"),
            ("FROM /a INTO Foo(\"/modules/m/inputs/i\")", "not supported"),
            ("FROM /a//b INTO $upstream", "'//'"),
            ("FROM /a WHERE 3 + 'x' INTO $upstream", "column 17"),
        ];
        for (route, message) in cases {
            let err = Route::parse(route).unwrap_err().to_string();
            assert!(err.contains(message), "{route}: {err}");
        }
    }

    #[test]
    fn twin_change_includes_needs_the_twin_source() {
        assert!(
            Route::parse(
                "FROM /twinChangeNotifications WHERE twin_change_includes(tags.a) INTO $upstream"
            )
            .is_ok()
        );
        let err = Route::parse("FROM /messages WHERE twin_change_includes(tags.a) INTO $upstream")
            .unwrap_err();
        assert!(
            err.to_string().contains("/twinChangeNotifications"),
            "{err}"
        );
    }
}
