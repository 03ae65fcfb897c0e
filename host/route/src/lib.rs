//! IoT Edge's route language, complete: parse, type-check, compile and evaluate Edge Hub routes.
//!
//! ```text
//! [SELECT *] FROM /messages/modules/sensor/outputs/* WHERE $body.temp > 30 AND NOT is_defined(test)
//!     INTO BrokeredEndpoint("/modules/alerts/inputs/in")
//! ```
//!
//! ```
//! use verge_message::{Message, system};
//! use verge_route::{Endpoint, Evaluation, Route};
//!
//! let route = Route::parse(
//!     "FROM /messages/* WHERE $body.temp > 30 INTO BrokeredEndpoint(\"/modules/alerts/inputs/in\")",
//! )?;
//! assert_eq!(route.endpoint(), &Endpoint::ModuleInput { module: "alerts".into(), input: "in".into() });
//!
//! let message = Message::new(r#"{"temp": 31.5}"#)
//!     .with_system(system::CONTENT_TYPE, "application/json")
//!     .with_system(system::CONTENT_ENCODING, "utf-8")
//!     .with_system(system::CONNECTION_MODULE_ID, "sensor");
//! let mut evaluation = Evaluation::new(&message); // shared by every route for this message
//! assert!(route.matches(&mut evaluation));
//! # Ok::<(), verge_route::RouteError>(())
//! ```
//!
//! The behaviour is IoT Edge's, checked against every vector of its own unit tests
//! (`tests/conformance.rs`). The modules document the rules; in short:
//!
//! - [`Route`]: the route grammar and Edge Hub's endpoint rule (`route`, `sink`).
//! - [`SourcePattern`] / [`MessageSource`]: which messages a `FROM` path selects (`source`).
//! - [`Condition`]: conditions are typed and checked at compile time (`compile`), evaluated in
//!   three-valued logic ([`Bool3`]; only `True` routes) against an [`Evaluation`] (`eval`).
//!
//! # Decisions on upstream's traps
//!
//! Where IoT Edge's behaviour is surprising, Verge decides on purpose; each module says why.
//!
//! | trap | decision |
//! |---|---|
//! | Newtonsoft reads ISO-8601-looking body strings as dates | reproduced: such values are not comparable, so `$body.time = '…'` is undefined (`body`) |
//! | `$name` resolution | application property `$name`, else `$body` query, else system property `name`; `{$name}` skips the application property (`compile`) |
//! | null vs absent | absent is undefined; a null-valued property is a "null string": defined, `is_null`, `""` in `concat`, undefined in comparisons (`value`) |
//! | body path that does not exist | reads as `null`, not undefined (upstream) |
//! | body encodings | `contentEncoding` utf-8/utf-16/utf-32 (little-endian) and `contentType` application/json, both case-insensitive; otherwise body queries are undefined (`body`) |
//! | NaN / infinity | `3/0` is +∞ and defined, `is_number(3/0)` false; NaN is undefined everywhere (`value`) |
//! | type mismatches | compile errors, as upstream (`3 + true`, `3 = none`, `length(12)`) (`compile`) |
//! | `substring` bounds | C#'s: undefined out of range; indexes count UTF-16 units (`dotnet`) |
//! | tokens | ANTLR's longest match: `-undefined`, `3-4`, `a*b` are property names (`lexer`) |
//! | trailing text after a condition or route | an error (upstream silently ignores it) (`parser`) |
//! | `is_null` of a body value | true for null/missing, false otherwise (upstream compares references) (`builtins`) |
//! | `BrokeredEndpoint` address | four `/`-separated items after trimming one `/` each end; empty module/input refused (`sink`) |

mod ast;
mod body;
mod builtins;
mod compile;
mod dotnet;
mod error;
mod eval;
mod jsonpath;
mod lexer;
mod parser;
mod route;
mod sink;
mod source;
mod value;

pub use body::{BodyError, BodyValue, is_newtonsoft_date};
pub use compile::{CompilerFlags, Condition};
pub use error::{Position, RouteError};
pub use eval::Evaluation;
pub use jsonpath::{BodyPath, MAX_STEPS};
pub use route::{ParsedRoute, Route};
pub use sink::{Endpoint, Sink};
pub use source::{MessageSource, SourcePattern};
pub use value::Bool3;
