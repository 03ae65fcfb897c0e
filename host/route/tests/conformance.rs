//! Runs every IoT Edge conformance vector for routes (`shared/conformance/iotedge`).
//!
//! The vectors are found at `$VERGE_CONFORMANCE_DIR`, else at
//! `<crate>/../../../shared/conformance/iotedge`; if they are missing the tests fail.
//! `all_vectors_pass` runs every case of every file, prints the counts per file and section and
//! every failure (with the upstream line number and the condition), then asserts there were none.
//! One `*_counts` test per file checks that the number of cases run equals the file's `counts`,
//! so no case can be skipped silently.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value as Json};
use verge_message::{Message, PropertyMap, system};
use verge_route::{
    BodyError, BodyPath, BodyValue, Bool3, CompilerFlags, Condition, Endpoint, Evaluation,
    MessageSource, ParsedRoute, Route, Sink, SourcePattern,
};

// ---------------------------------------------------------------------------------------------
// Harness

fn vectors_dir() -> PathBuf {
    verge_tests::conformance_dir()
}

fn load<T: for<'de> Deserialize<'de>>(file: &str) -> T {
    let path = vectors_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "conformance vectors missing: cannot read {} ({e}); set VERGE_CONFORMANCE_DIR",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Results of one vector file.
struct Report {
    file: &'static str,
    /// section → (run, passed)
    sections: BTreeMap<String, (usize, usize)>,
    /// What the file's `counts` call each number, as counted while running.
    tallies: BTreeMap<String, usize>,
    failures: Vec<String>,
    /// Facts worth printing that are not failures.
    notes: Vec<String>,
    counts: Map<String, Json>,
}

impl Report {
    fn new(file: &'static str, counts: Map<String, Json>) -> Self {
        Self {
            file,
            sections: BTreeMap::new(),
            tallies: BTreeMap::new(),
            failures: Vec::new(),
            notes: Vec::new(),
            counts,
        }
    }

    fn tally(&mut self, key: &str) {
        *self.tallies.entry(key.to_owned()).or_default() += 1;
    }

    fn check(&mut self, section: &str, result: Result<(), String>) {
        let entry = self.sections.entry(section.to_owned()).or_default();
        entry.0 += 1;
        match result {
            Ok(()) => entry.1 += 1,
            Err(why) => self
                .failures
                .push(format!("{} [{section}] {why}", self.file)),
        }
    }

    fn count_mismatches(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, expected) in &self.counts {
            let expected = expected.as_u64().unwrap_or(u64::MAX) as usize;
            let ran = self.tallies.get(key).copied().unwrap_or(0);
            if ran != expected {
                out.push(format!(
                    "{}: counts.{key} is {expected} but {ran} were run",
                    self.file
                ));
            }
        }
        out
    }

    fn assert_counts(&self) {
        let mismatches = self.count_mismatches();
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
        assert!(!self.sections.is_empty(), "{}: nothing ran", self.file);
    }
}

fn flags(list: &[String]) -> CompilerFlags {
    CompilerFlags {
        body_query: list.iter().any(|f| f == "body_query"),
        twin_change_includes: list.iter().any(|f| f == "twin_change_includes"),
    }
}

fn bool3_name(b: Bool3) -> &'static str {
    match b {
        Bool3::True => "true",
        Bool3::False => "false",
        Bool3::Undefined => "undefined",
    }
}

/// Compile and evaluate one condition against the expectation (`true`, `false`, `undefined` or
/// `compile_error`).
fn run_condition(
    condition: &str,
    flags: CompilerFlags,
    route_source: &str,
    message: &Message,
    expected: &str,
) -> Result<(), String> {
    let compiled = Condition::compile(condition, flags, &SourcePattern::new(route_source));
    match (compiled, expected) {
        (Err(_), "compile_error") => Ok(()),
        (Err(e), _) => Err(format!("expected {expected}, got a compile error: {e}")),
        (Ok(_), "compile_error") => Err("compiled, expected a compile error".to_owned()),
        (Ok(c), _) => {
            let got = bool3_name(c.evaluate(&mut Evaluation::new(message)));
            if got == expected {
                Ok(())
            } else {
                Err(format!("expected {expected}, got {got}"))
            }
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for b in text.bytes().filter(|&b| b != b'=') {
        let v = ALPHABET.iter().position(|&a| a == b).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A message as the vector files describe it.
#[derive(Deserialize)]
struct VectorMessage {
    #[serde(default)]
    body_text: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    body_bytes_encoding: Option<String>,
    #[serde(default)]
    properties: Map<String, Json>,
    #[serde(default)]
    system_properties: Map<String, Json>,
}

fn property_map(json: &Map<String, Json>) -> PropertyMap {
    let mut map = PropertyMap::new();
    for (name, value) in json {
        map.set(name, value.as_str());
    }
    map
}

impl VectorMessage {
    fn build(&self) -> Message {
        let body = match (&self.body_base64, &self.body_text) {
            (Some(b64), _) => base64_decode(b64),
            (None, Some(text)) => match self.body_bytes_encoding.as_deref() {
                Some("utf-16le") => text.encode_utf16().flat_map(u16::to_le_bytes).collect(),
                Some("utf-32le") => text
                    .chars()
                    .flat_map(|c| (c as u32).to_le_bytes())
                    .collect(),
                Some("utf-8") | None => text.as_bytes().to_vec(),
                Some(other) => panic!("unknown body encoding {other}"),
            },
            (None, None) => Vec::new(),
        };
        Message::from_parts(
            body.into(),
            property_map(&self.properties),
            property_map(&self.system_properties),
        )
    }
}

#[derive(Deserialize)]
struct ConditionCase {
    condition: String,
    expected: String,
    #[serde(default)]
    line: Option<u64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    route_source: Option<String>,
    #[serde(default)]
    compiler_flags: Option<Vec<String>>,
    #[serde(default)]
    test: Option<String>,
}

impl ConditionCase {
    fn describe(&self, why: &str) -> String {
        let line = self.line.map_or("?".to_owned(), |l| l.to_string());
        let test = self
            .test
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        format!("line {line}{test}: `{}`: {why}", self.condition)
    }
}

#[derive(Deserialize)]
struct PathCase {
    path: String,
    supported: bool,
    #[serde(default)]
    line: Option<u64>,
}

fn run_path_case(report: &mut Report, case: &PathCase, twin: bool) {
    report.tally("json_path_validation");
    let result = if twin {
        BodyPath::parse_twin(&case.path)
    } else {
        BodyPath::parse(&case.path)
    };
    let outcome = match (result, case.supported) {
        (Ok(_), true) => Ok(()),
        (Err(e), false) if !e.to_string().is_empty() => Ok(()),
        (Ok(_), false) => Err("accepted, expected it to be refused".to_owned()),
        (Err(e), _) => Err(format!("refused ({e}), expected it to be accepted")),
    };
    let line = case.line.map_or("?".to_owned(), |l| l.to_string());
    report.check(
        "json_path_validation",
        outcome.map_err(|why| format!("line {line}: path {:?}: {why}", case.path)),
    );
}

// ---------------------------------------------------------------------------------------------
// conditions.json

#[derive(Deserialize)]
struct ConditionsFile {
    message: VectorMessage,
    route_source: String,
    compiler_flags: Vec<String>,
    cases: Vec<ConditionCase>,
    must_compile_and_evaluate_without_error: MustCompile,
    counts: Map<String, Json>,
}

#[derive(Deserialize)]
struct MustCompile {
    conditions: Vec<String>,
}

fn run_conditions() -> Report {
    let file: ConditionsFile = load("conditions.json");
    let mut report = Report::new("conditions.json", file.counts);
    let message = file.message.build();
    let flags = flags(&file.compiler_flags);
    for case in &file.cases {
        report.tally("cases");
        report.tally(&case.expected);
        let result = run_condition(
            &case.condition,
            flags,
            &file.route_source,
            &message,
            &case.expected,
        );
        report.check("cases", result.map_err(|why| case.describe(&why)));
    }
    let source = SourcePattern::new(&file.route_source);
    for condition in &file.must_compile_and_evaluate_without_error.conditions {
        report.tally("must_compile_and_evaluate_without_error");
        let result = Condition::compile(condition, flags, &source)
            .map(|c| {
                c.evaluate(&mut Evaluation::new(&message));
            })
            .map_err(|e| format!("`{condition}`: {e}"));
        report.check("must_compile_and_evaluate_without_error", result);
    }
    report
}

// ---------------------------------------------------------------------------------------------
// body_queries.json and twin_change_includes.json

#[derive(Deserialize)]
struct QueryFile {
    messages: BTreeMap<String, VectorMessage>,
    cases: Vec<ConditionCase>,
    #[serde(default)]
    query_value_cases: Option<QueryValueCases>,
    json_path_validation: PathCases,
    counts: Map<String, Json>,
}

#[derive(Deserialize)]
struct QueryValueCases {
    cases: Vec<QueryValueCase>,
}

#[derive(Deserialize)]
struct QueryValueCase {
    message: String,
    query: String,
    expected: Json,
}

#[derive(Deserialize)]
struct PathCases {
    cases: Vec<PathCase>,
}

fn run_query_file(name: &'static str, twin: bool) -> Report {
    let file: QueryFile = load(name);
    let mut report = Report::new(name, file.counts);
    let messages: BTreeMap<&str, Message> = file
        .messages
        .iter()
        .map(|(id, m)| (id.as_str(), m.build()))
        .collect();
    for case in &file.cases {
        report.tally("cases");
        report.tally(&case.expected);
        let result = match case.message.as_deref().and_then(|id| messages.get(id)) {
            None => Err(format!("unknown message {:?}", case.message)),
            Some(message) => run_condition(
                &case.condition,
                flags(case.compiler_flags.as_deref().unwrap_or(&[])),
                case.route_source.as_deref().unwrap_or("/messages"),
                message,
                &case.expected,
            ),
        };
        report.check("cases", result.map_err(|why| case.describe(&why)));
    }
    for case in file.query_value_cases.iter().flat_map(|q| &q.cases) {
        report.tally("query_value_cases");
        let result = run_query_value(case, &messages);
        report.check(
            "query_value_cases",
            result.map_err(|why| format!("{} `{}`: {why}", case.message, case.query)),
        );
    }
    for case in &file.json_path_validation.cases {
        run_path_case(&mut report, case, twin);
    }
    report
}

fn run_query_value(
    case: &QueryValueCase,
    messages: &BTreeMap<&str, Message>,
) -> Result<(), String> {
    let message = messages
        .get(case.message.as_str())
        .ok_or_else(|| format!("unknown message {}", case.message))?;
    let path = BodyPath::parse(&case.query).map_err(|e| e.to_string())?;
    let evaluation = Evaluation::new(message);
    let got = evaluation.query_body(&path);
    match (case.expected.get("error").and_then(Json::as_str), got) {
        (Some("invalid_json"), Err(BodyError::InvalidJson(_)))
        | (Some("missing_content_encoding"), Err(BodyError::MissingContentEncoding))
        | (Some("missing_content_type"), Err(BodyError::MissingContentType)) => Ok(()),
        (Some(kind), got) => Err(format!("expected error {kind}, got {got:?}")),
        (None, Ok(value)) => {
            let ty = case.expected.get("type").and_then(Json::as_str);
            let expected = case.expected.get("value");
            let same = match (ty, value) {
                (Some("double"), BodyValue::Number(n)) => {
                    expected.and_then(Json::as_f64) == Some(n)
                }
                (Some("string"), BodyValue::String(s)) => {
                    expected.and_then(Json::as_str) == Some(s)
                }
                (Some("bool"), BodyValue::Bool(b)) => expected.and_then(Json::as_bool) == Some(b),
                (Some("null"), BodyValue::Null) => true,
                _ => false,
            };
            if same {
                Ok(())
            } else {
                Err(format!("expected {}, got {value:?}", case.expected))
            }
        }
        (None, Err(e)) => Err(format!("expected {}, got error {e}", case.expected)),
    }
}

// ---------------------------------------------------------------------------------------------
// routes.json

#[derive(Deserialize)]
struct RoutesFile {
    valid_routes: Vec<ValidRoute>,
    invalid_routes: InvalidRoutes,
    edge_hub_endpoints: EdgeHubEndpoints,
    counts: Map<String, Json>,
}

#[derive(Deserialize)]
struct ValidRoute {
    route: String,
    source: String,
    condition: String,
    sink: Json,
    line: u64,
}

#[derive(Deserialize)]
struct InvalidRoutes {
    cases: Vec<InvalidRoute>,
}

#[derive(Deserialize)]
struct InvalidRoute {
    route: String,
    line: u64,
}

#[derive(Deserialize)]
struct EdgeHubEndpoints {
    valid: Vec<EndpointCase>,
    identity: Identity,
    invalid: Vec<EndpointCase>,
}

#[derive(Deserialize)]
struct EndpointCase {
    call: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    function: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    expected: Option<Json>,
    line: u64,
}

#[derive(Deserialize)]
struct Identity {
    same: Vec<[String; 2]>,
    different: Vec<[String; 2]>,
}

const EDGE_DEVICE: &str = "Device1";

impl EndpointCase {
    /// Resolve as the C# test does; a `null` argument (not representable as `&str`) is passed
    /// as the empty string, which Edge Hub refuses the same way.
    fn resolve(&self) -> Result<Endpoint, verge_route::RouteError> {
        if self.call == "system" {
            Endpoint::system(self.endpoint.as_deref().unwrap_or(""))
        } else {
            Endpoint::function(
                self.function.as_deref().unwrap_or(""),
                self.address.as_deref().unwrap_or(""),
            )
        }
    }
}

fn identity_endpoint(text: &str) -> Result<Endpoint, verge_route::RouteError> {
    if text.starts_with('$') {
        Endpoint::system(text)
    } else {
        Endpoint::function("BrokeredEndpoint", text)
    }
}

/// RouteFactoryTest's expectations, on the parse stage (upstream's `RouteFactory` does not
/// type-check conditions; its router does, later).
fn check_valid_route(case: &ValidRoute) -> Result<(), String> {
    let route = ParsedRoute::parse(&case.route).map_err(|e| format!("refused: {e}"))?;
    let mut problems = Vec::new();
    if route.source().path() != case.source {
        problems.push(format!(
            "source {:?}, expected {:?}",
            route.source().path(),
            case.source
        ));
    }
    if route.condition_text() != case.condition {
        problems.push(format!(
            "condition {:?}, expected {:?}",
            route.condition_text(),
            case.condition
        ));
    }
    let field = |k: &str| case.sink.get(k).and_then(Json::as_str);
    let expected_sink = match field("kind") {
        Some("system") => Sink::System(field("endpoint").unwrap_or_default().to_owned()),
        _ => Sink::Function {
            name: field("function").unwrap_or_default().to_owned(),
            address: field("address").unwrap_or_default().to_owned(),
        },
    };
    if route.sink() != &expected_sink {
        problems.push(format!(
            "sink {:?}, expected {expected_sink:?}",
            route.sink()
        ));
    }
    let expected_endpoint = match (field("kind"), field("module"), field("input")) {
        (Some("system"), _, _) => Some(Endpoint::Upstream),
        (_, Some(module), Some(input)) => Some(Endpoint::ModuleInput {
            module: module.to_owned(),
            input: input.to_owned(),
        }),
        _ => None, // not asserted upstream (the '/a/b/c/d' address)
    };
    if let Some(expected) = expected_endpoint
        && route.endpoint() != &expected
    {
        problems.push(format!(
            "endpoint {:?}, expected {expected:?}",
            route.endpoint()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// `Route::parse` (parse + compile, as Edge Hub's router) accepts a valid route exactly when its
/// condition compiles on its own (conditions.json's type rules), and then agrees with the parse
/// stage. Returns whether the route compiled.
fn check_compiled_route(case: &ValidRoute) -> Result<bool, String> {
    let source = SourcePattern::new(&case.source);
    let alone = Condition::compile(&case.condition, CompilerFlags::ALL, &source);
    match (Route::parse(&case.route), alone) {
        (Ok(route), Ok(_)) => {
            let parsed = ParsedRoute::parse(&case.route).map_err(|e| e.to_string())?;
            let same = route.source() == parsed.source()
                && route.condition_text() == parsed.condition_text()
                && route.sink() == parsed.sink()
                && route.endpoint() == parsed.endpoint();
            if same {
                Ok(true)
            } else {
                Err("Route and ParsedRoute disagree".to_owned())
            }
        }
        (Err(_), Err(_)) => Ok(false),
        (Ok(_), Err(e)) => Err(format!("compiled, but the condition alone does not: {e}")),
        (Err(e), Ok(_)) => Err(format!("refused although the condition compiles: {e}")),
    }
}

fn check_valid_endpoint(case: &EndpointCase) -> Result<(), String> {
    let endpoint = case.resolve().map_err(|e| format!("refused: {e}"))?;
    let expected = case.expected.as_ref().ok_or("no expectation")?;
    let field = |k: &str| expected.get(k).and_then(Json::as_str);
    let ok = match (field("kind"), &endpoint) {
        (Some("cloud"), Endpoint::Upstream) => endpoint.id(EDGE_DEVICE) == "iothub",
        (Some("module"), Endpoint::ModuleInput { input, .. }) => {
            Some(endpoint.id(EDGE_DEVICE).as_str()) == field("id")
                && Some(input.as_str()) == field("input")
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "got {endpoint:?} (id {}), expected {expected}",
            endpoint.id(EDGE_DEVICE)
        ))
    }
}

fn run_routes() -> Report {
    let file: RoutesFile = load("routes.json");
    let mut report = Report::new("routes.json", file.counts);
    for case in &file.valid_routes {
        report.tally("valid_routes");
        let result = check_valid_route(case);
        report.check(
            "valid_routes (parse stage)",
            result.map_err(|why| format!("line {}: `{}`: {why}", case.line, case.route)),
        );
        let compiled = check_compiled_route(case);
        if compiled == Ok(false) {
            report.notes.push(format!(
                "line {}: refused by Route::parse (type error in `{}`), as Edge Hub's router refuses it",
                case.line, case.condition
            ));
        }
        report.check(
            "valid_routes (compile stage agrees)",
            compiled
                .map(|_| ())
                .map_err(|why| format!("line {}: `{}`: {why}", case.line, case.route)),
        );
    }
    for case in &file.invalid_routes.cases {
        report.tally("invalid_routes");
        let result = match ParsedRoute::parse(&case.route) {
            Ok(route) => Err(format!("accepted, condition {:?}", route.condition_text())),
            Err(_) if Route::parse(&case.route).is_ok() => {
                Err("Route::parse accepts what ParsedRoute::parse refuses".to_owned())
            }
            Err(_) => Ok(()),
        };
        report.check(
            "invalid_routes",
            result.map_err(|why| format!("line {}: `{}`: {why}", case.line, case.route)),
        );
    }
    for case in &file.edge_hub_endpoints.valid {
        report.tally("edge_hub_endpoints_valid");
        let result = check_valid_endpoint(case);
        report.check(
            "edge_hub_endpoints.valid",
            result.map_err(|why| format!("line {}: {why}", case.line)),
        );
    }
    for case in &file.edge_hub_endpoints.invalid {
        report.tally("edge_hub_endpoints_invalid");
        let result = match case.resolve() {
            Ok(endpoint) => Err(format!("line {}: accepted as {endpoint:?}", case.line)),
            Err(e) if e.to_string().is_empty() => Err(format!("line {}: empty error", case.line)),
            Err(_) => Ok(()),
        };
        report.check("edge_hub_endpoints.invalid", result);
    }
    let identity = &file.edge_hub_endpoints.identity;
    for (pairs, same) in [(&identity.same, true), (&identity.different, false)] {
        for [a, b] in pairs {
            let result = match (identity_endpoint(a), identity_endpoint(b)) {
                (Ok(x), Ok(y))
                    if (x == y) == same && (x.id(EDGE_DEVICE) == y.id(EDGE_DEVICE)) == same =>
                {
                    Ok(())
                }
                (x, y) => Err(format!("{a} vs {b}: {x:?} / {y:?}, expected same = {same}")),
            };
            report.check("edge_hub_endpoints.identity", result);
        }
    }
    report
}

// ---------------------------------------------------------------------------------------------
// message_sources.json

#[derive(Deserialize)]
struct SourcesFile {
    cases: Vec<SourceCase>,
    is_telemetry: TelemetryCases,
    derived_matrix: Matrix,
    counts: Map<String, Json>,
}

#[derive(Deserialize)]
struct SourceCase {
    from: String,
    message_source: String,
    #[serde(rename = "match")]
    matches: bool,
    line: u64,
}

#[derive(Deserialize)]
struct TelemetryCases {
    cases: Vec<TelemetryCase>,
}

#[derive(Deserialize)]
struct TelemetryCase {
    message_source: String,
    is_telemetry: bool,
    line: u64,
}

#[derive(Deserialize)]
struct Matrix {
    rows: Vec<Map<String, Json>>,
}

/// A message whose system properties give `source`.
fn message_from(source: &MessageSource) -> Message {
    let message = Message::new(Vec::new());
    match source {
        MessageSource::Telemetry => message,
        MessageSource::TwinChange => {
            message.with_system(system::MESSAGE_TYPE, system::TWIN_CHANGE_NOTIFICATION)
        }
        MessageSource::Module { module, output } => {
            let message = message.with_system(system::CONNECTION_MODULE_ID, module);
            match output {
                Some(o) => message.with_system(system::OUTPUT_NAME, o),
                None => message,
            }
        }
    }
}

/// The source of a message built from `path`, checking the round trip path → message → source.
fn source_of(path: &str) -> Result<MessageSource, String> {
    let parsed = MessageSource::parse(path).ok_or_else(|| format!("{path} is not a source"))?;
    let of = MessageSource::of(&message_from(&parsed));
    if of != parsed || of.path() != path {
        return Err(format!("{path}: MessageSource::of gives {of}"));
    }
    Ok(of)
}

fn run_message_sources() -> Report {
    let file: SourcesFile = load("message_sources.json");
    let mut report = Report::new("message_sources.json", file.counts);
    for case in &file.cases {
        report.tally("cases");
        report.tally(if case.matches {
            "match_true"
        } else {
            "match_false"
        });
        let result = source_of(&case.message_source).and_then(|source| {
            let got = SourcePattern::new(&case.from).matches(&source);
            if got == case.matches {
                Ok(())
            } else {
                Err(format!("expected {}, got {got}", case.matches))
            }
        });
        report.check(
            "cases",
            result.map_err(|why| {
                format!(
                    "line {}: FROM {} vs {}: {why}",
                    case.line, case.from, case.message_source
                )
            }),
        );
    }
    for case in &file.is_telemetry.cases {
        report.tally("is_telemetry");
        let result = source_of(&case.message_source).and_then(|source| {
            if source.is_telemetry() == case.is_telemetry {
                Ok(())
            } else {
                Err(format!(
                    "line {}: {} is_telemetry != {}",
                    case.line, case.message_source, case.is_telemetry
                ))
            }
        });
        report.check("is_telemetry", result);
    }
    let columns = [
        ("telemetry", "/messages"),
        ("module_no_output_ModId1", "/messages/modules/ModId1"),
        ("module_output", "/messages/modules/ModId1/outputs/Op1"),
        ("twin_change", "/twinChangeNotifications"),
    ];
    for row in &file.derived_matrix.rows {
        report.tally("derived_matrix_rows");
        let from = row.get("from").and_then(Json::as_str).unwrap_or_default();
        for (column, path) in columns {
            let expected = row.get(column).and_then(Json::as_bool);
            let result = source_of(path).and_then(|source| {
                let got = SourcePattern::new(from).matches(&source);
                if Some(got) == expected {
                    Ok(())
                } else {
                    Err(format!(
                        "FROM {from} vs {path}: expected {expected:?}, got {got}"
                    ))
                }
            });
            report.check("derived_matrix", result);
        }
    }
    report
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn all_vectors_pass() {
    let reports = [
        run_conditions(),
        run_query_file("body_queries.json", false),
        run_query_file("twin_change_includes.json", true),
        run_routes(),
        run_message_sources(),
    ];
    let mut failures = Vec::new();
    println!(
        "{:<28} {:<44} {:>6} {:>6}",
        "file", "section", "run", "passed"
    );
    for report in &reports {
        for (section, (run, passed)) in &report.sections {
            println!("{:<28} {section:<44} {run:>6} {passed:>6}", report.file);
        }
        failures.extend(report.count_mismatches());
        failures.extend(report.failures.iter().cloned());
    }
    for report in &reports {
        for note in &report.notes {
            println!("NOTE {} {note}", report.file);
        }
    }
    for failure in &failures {
        println!("FAIL {failure}");
    }
    assert!(
        failures.is_empty(),
        "{} conformance failures (listed above)",
        failures.len()
    );
}

#[test]
fn conditions_json_counts() {
    run_conditions().assert_counts();
}

#[test]
fn body_queries_json_counts() {
    run_query_file("body_queries.json", false).assert_counts();
}

#[test]
fn twin_change_includes_json_counts() {
    run_query_file("twin_change_includes.json", true).assert_counts();
}

#[test]
fn routes_json_counts() {
    run_routes().assert_counts();
}

#[test]
fn message_sources_json_counts() {
    run_message_sources().assert_counts();
}
