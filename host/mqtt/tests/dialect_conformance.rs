//! Runs IoT Edge's MQTT conformance vectors (`mqtt_usernames.json`, `mqtt_topics.json`) against
//! `verge_mqtt::dialect`.
//!
//! The vectors are found through `verge_tests::conformance_dir()` (the tests fail if they are
//! missing). Every case of every group runs; each `*_counts` check compares the number run with
//! the file's `counts`, so no case can be skipped silently. Every failure names the upstream test
//! and line.
//!
//! How the groups map onto Verge (nothing is skipped):
//! - `mqtt_usernames.json` `valid`/`invalid`: `parse_username` directly.
//! - `address_converter` (synthetic templates `a/{b}/c`): IoT Edge's template engine, which
//!   `dialect::template` implements (`TemplateConverter`).
//! - `message_converter.to_message`: the fixed topics (`parse_publish` + `decode_properties`, then
//!   the hub's sender stamp `connectionDeviceId`/`connectionModuleId` from the topic's identity)
//!   and, in addition, the vector's own templates through `TemplateConverter`.
//! - `message_converter.from_message`: the fixed builder `module_input_topic` (exact topic string)
//!   and, in addition, the vector's template through `TemplateConverter` with
//!   `propbag::outbound_pairs`.
//!   IoT Edge-internal system properties of these messages map as follows: `outBoundURI` selects
//!   the builder/endpoint; `lockToken` is random upstream and never on the wire (ignored);
//!   `deviceId`/`moduleId`/`inputName` are the builder's arguments (`inputName` is also
//!   `system::INPUT_NAME`); `rpSenderDeviceId`/`rpSenderModuleId` (nested edge) override the
//!   sender, which Verge records directly as `connectionDeviceId`/`connectionModuleId`.
//!   IoT Edge's `cid` is Verge's `system::CORRELATION_ID`.
//! - `reference`: the wire-name tables are compared with `dialect::wire` in both directions, the
//!   production inbound templates are run against the fixed parser on generated topics, and the
//!   production outbound templates against the fixed builders.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use serde_json::{Map, Value as Json};
use verge_message::{Identity, Message, PropertyMap, Text, system};
use verge_mqtt::dialect::propbag::{self, decode_raw, outbound_pairs};
use verge_mqtt::dialect::wire::{self, WIRE_NAMES};
use verge_mqtt::dialect::{
    PublishTopic, TemplateConverter, TemplateError, TopicError, module_input_topic, parse_publish,
    parse_username,
};

// ---------------------------------------------------------------------------------------------
// Harness

fn load(file: &str) -> Json {
    let path: PathBuf = verge_tests::conformance_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {} ({e})", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn arr<'a>(json: &'a Json, path: &[&str]) -> &'a [Json] {
    let mut v = json;
    for key in path {
        v = &v[*key];
    }
    v.as_array()
        .unwrap_or_else(|| panic!("{path:?} is not an array"))
}

fn obj<'a>(json: &'a Json, key: &str) -> &'a Map<String, Json> {
    static EMPTY: std::sync::OnceLock<Map<String, Json>> = std::sync::OnceLock::new();
    json[key]
        .as_object()
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

fn string<'a>(json: &'a Json, key: &str) -> &'a str {
    json[key].as_str().unwrap_or_default()
}

/// `test (line n)` of a case.
fn case_name(case: &Json) -> String {
    let test = case["test"].as_str().unwrap_or("?");
    match case["line"].as_u64() {
        Some(line) => format!("{test} (line {line})"),
        None => test.to_owned(),
    }
}

/// Failures and the number of cases run per `counts` key.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    ran: Vec<(&'static str, usize)>,
}

impl Report {
    fn ran(&mut self, key: &'static str) {
        match self.ran.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => self.ran.push((key, 1)),
        }
    }

    fn check(&mut self, key: &'static str, name: &str, result: Result<(), String>) {
        self.ran(key);
        if let Err(why) = result {
            self.failures.push(format!("[{key}] {name}: {why}"));
        }
    }

    fn finish(self, file: &Json) {
        let mut problems = self.failures;
        let counts = obj(file, "counts");
        for (key, expected) in counts {
            let ran = self
                .ran
                .iter()
                .find(|(k, _)| k == key)
                .map_or(0, |(_, n)| *n);
            if Some(ran as u64) != expected.as_u64() {
                problems.push(format!("counts.{key} is {expected} but {ran} cases ran"));
            }
        }
        for (key, n) in &self.ran {
            if !counts.contains_key(*key) {
                problems.push(format!(
                    "ran {n} cases of {key}, which the file does not count"
                ));
            }
        }
        assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    }
}

/// Verge's name of an IoT Edge system property, for the names the vectors use.
fn verge_system_name(edge: &str) -> Option<&'static str> {
    Some(match edge {
        "cid" => system::CORRELATION_ID,
        "messageId" => system::MESSAGE_ID,
        "to" => system::TO,
        "userId" => system::USER_ID,
        "ack" => system::ACK,
        "outputName" => system::OUTPUT_NAME,
        "inputName" => system::INPUT_NAME,
        "contentType" => system::CONTENT_TYPE,
        "contentEncoding" => system::CONTENT_ENCODING,
        "messageSchema" => system::MESSAGE_SCHEMA,
        "creationTime" => system::CREATION_TIME,
        "connectionDeviceId" => system::CONNECTION_DEVICE_ID,
        "connectionModuleId" => system::CONNECTION_MODULE_ID,
        "dt-subject" => system::COMPONENT_NAME,
        "absolute-expiry-time" => system::ABSOLUTE_EXPIRY_TIME,
        "operation" => system::OPERATION,
        "iothub-interface-id" => system::INTERFACE_ID,
        // Nested edge: the original sender, which Verge stamps as the sender itself.
        "rpSenderDeviceId" => system::CONNECTION_DEVICE_ID,
        "rpSenderModuleId" => system::CONNECTION_MODULE_ID,
        _ => return None,
    })
}

/// A JSON object of string (or null) values as a property map, in order.
fn property_map(json: &Map<String, Json>) -> PropertyMap {
    let mut map = PropertyMap::new();
    for (name, value) in json {
        map.set(name, value.as_str());
    }
    map
}

/// Compare `got` with the expected properties: same values, and no others when `exact`.
fn compare_properties(
    what: &str,
    got: &PropertyMap,
    expected: &Map<String, Json>,
    exact: bool,
) -> Result<(), String> {
    for (name, value) in expected {
        let got_value = got.lookup(name);
        if got_value != Some(value.as_str()) {
            return Err(format!(
                "{what} {name:?}: expected {value}, got {got_value:?} (all: {got:?})"
            ));
        }
    }
    if exact && got.len() != expected.len() {
        return Err(format!(
            "{what}: expected exactly {} properties, got {got:?}",
            expected.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// mqtt_usernames.json

#[test]
fn usernames() {
    let file = load("mqtt_usernames.json");
    let mut report = Report::default();
    for case in arr(&file, &["valid"]) {
        let username = string(case, "username");
        let name = format!("valid {username:?} (line {})", case["line"]);
        let result = parse_username(username)
            .map_err(|e| format!("refused: {e}"))
            .and_then(|info| {
                let module = string(case, "module_id");
                let expected = if module.is_empty() {
                    Identity::device(string(case, "device_id"))
                } else {
                    Identity::module(string(case, "device_id"), module)
                };
                let checks = [
                    (info.identity == expected, "identity"),
                    (
                        info.api_version == string(case, "api_version"),
                        "api_version",
                    ),
                    (
                        info.device_client_type.as_deref().unwrap_or("")
                            == string(case, "device_client_type"),
                        "device_client_type",
                    ),
                    (
                        info.model_id.as_deref() == case["model_id"].as_str(),
                        "model_id",
                    ),
                    (info.hub_host == "iotHub1", "hub_host"),
                ];
                match checks.iter().find(|(ok, _)| !ok) {
                    Some((_, field)) => Err(format!("wrong {field}: {info:?}")),
                    None => Ok(()),
                }
            });
        report.check("valid", &name, result);
    }
    for case in arr(&file, &["invalid"]) {
        let username = string(case, "username");
        let name = format!("invalid {username:?}, {}", case_name(case));
        let result = match parse_username(username) {
            Ok(info) => Err(format!("accepted: {info:?}")),
            Err(_) => Ok(()),
        };
        report.check("invalid", &name, result);
    }
    report.finish(&file);
}

// ---------------------------------------------------------------------------------------------
// mqtt_topics.json: address_converter (template mechanics)

fn address_outbound(case: &Json) -> Result<(), String> {
    let templates = obj(case, "outbound_templates");
    // Upstream's tests give one blank inbound template they never use.
    let converter = TemplateConverter::new(
        [""],
        templates
            .iter()
            .map(|(name, template)| (name.as_str(), template.as_str().unwrap_or_default())),
    )
    .map_err(|e| format!("configuration refused: {e}"))?;
    let vars = property_map(obj(case, "system_properties"));
    let to_send = obj(case, "properties_to_send")
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()));
    let mut address = String::new();
    let built = converter.build_address(string(case, "endpoint"), &vars, to_send, &mut address);
    let expected = &case["expected"];
    match (built, expected["address"].as_str()) {
        (Ok(()), Some(want)) if address == want => Ok(()),
        (Ok(()), Some(want)) => Err(format!("built {address:?}, expected {want:?}")),
        (Ok(()), None) => Err(format!("built {address:?}, expected a failure")),
        (Err(e), Some(want)) => Err(format!("failed ({e}), expected {want:?}")),
        (Err(_), None) if expected["fail"] == Json::Bool(true) => Ok(()),
        (Err(e), None) => Err(format!("failed ({e}); the case expects neither")),
    }
}

fn address_inbound(case: &Json) -> Result<(), String> {
    let templates: Vec<&str> = arr(case, &["inbound_templates"])
        .iter()
        .map(|t| t.as_str().unwrap_or_default())
        .collect();
    let converter = TemplateConverter::new(templates, [("unused", "unused")])
        .map_err(|e| format!("configuration refused: {e}"))?;
    let address = string(case, "address");
    let expected = &case["expected"];
    let parsed = converter
        .parse_address(address)
        .map_err(|e| format!("bag refused: {e}"))?;
    match (parsed, expected["match"].as_bool()) {
        (Some(props), Some(true)) => compare_properties(
            "property",
            &props,
            obj(expected, "properties"),
            expected["exact"] == Json::Bool(true),
        ),
        (None, Some(false)) => Ok(()),
        (Some(props), _) => Err(format!("matched with {props:?}, expected no match")),
        (None, _) => Err(format!("{address:?} matched no template")),
    }
}

fn config_error(case: &Json) -> Result<(), String> {
    let inbound: Vec<&str> = arr(case, &["inbound_templates"])
        .iter()
        .map(|t| t.as_str().unwrap_or_default())
        .collect();
    let outbound = obj(case, "outbound_templates")
        .iter()
        .map(|(name, template)| (name.as_str(), template.as_str().unwrap_or_default()));
    match (
        TemplateConverter::new(inbound, outbound),
        string(case, "expected"),
    ) {
        (Err(TemplateError::InvalidConfiguration(_)), "invalid_configuration") => Ok(()),
        (result, expected) => Err(format!("expected {expected}, got {result:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// mqtt_topics.json: message_converter (the real topics)

/// What Verge makes of a client's telemetry PUBLISH: the dialect's parse and decode, then the
/// hub's sender stamp from the identity the topic names.
fn telemetry_message(topic: &str) -> Result<Message, String> {
    let parsed = parse_publish(topic).map_err(|e| format!("topic refused: {e}"))?;
    let (Some(sender), Some(bag)) = (parsed.identity(), parsed.bag()) else {
        return Err(format!("not a telemetry topic: {parsed:?}"));
    };
    let mut message = Message::new("payload");
    propbag::decode_properties(bag, &mut message).map_err(|e| format!("bag refused: {e}"))?;
    let sender = sender.to_identity();
    let sys = message.system_mut();
    sys.insert_text(
        Text::from_static(system::CONNECTION_DEVICE_ID),
        sender.device_text(),
    );
    if let Some(module) = sender.module_text() {
        sys.insert_text(Text::from_static(system::CONNECTION_MODULE_ID), module);
    }
    Ok(message)
}

fn to_message(case: &Json) -> Result<(), String> {
    let topic = string(case, "topic");
    let expected = &case["expected"];
    // The vector's own templates, through the template engine.
    let templates: Vec<&str> = arr(case, &["inbound_templates"])
        .iter()
        .map(|t| t.as_str().unwrap_or_default())
        .collect();
    let converter = TemplateConverter::new(templates, [("unused", "unused")])
        .map_err(|e| format!("configuration refused: {e}"))?;
    let by_template = converter
        .parse_address(topic)
        .map_err(|e| format!("template bag refused: {e}"))?;

    if let Some(error) = expected["error"].as_str() {
        if error != "topic_matches_no_template" {
            return Err(format!("unknown expected error {error}"));
        }
        return match (parse_publish(topic), by_template) {
            (Err(TopicError::NotAccepted), None) => Ok(()),
            (fixed, template) => Err(format!(
                "expected no match; fixed topics gave {fixed:?}, templates {template:?}"
            )),
        };
    }

    let message = telemetry_message(topic)?;
    let exact = expected["exact"] == Json::Bool(true);
    compare_properties(
        "application property",
        message.properties(),
        obj(expected, "properties"),
        exact,
    )?;
    let mut expected_system = PropertyMap::new();
    for (name, value) in obj(expected, "system_properties") {
        let verge = verge_system_name(name)
            .ok_or_else(|| format!("no Verge name for system property {name:?}"))?;
        expected_system.set(verge, value.as_str());
    }
    let expected_system: Map<String, Json> = expected_system
        .iter()
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.map_or(Json::Null, |v| Json::String(v.into())),
            )
        })
        .collect();
    compare_properties("system property", message.system(), &expected_system, exact)?;

    // The templates agree: same sender, same properties once the wire names are mapped.
    let props = by_template.ok_or("the vector's templates do not match the topic")?;
    let mut from_template = Message::new("payload");
    for (name, value) in props.iter() {
        match (name, value) {
            ("deviceId", Some(d)) => from_template
                .system_mut()
                .insert(system::CONNECTION_DEVICE_ID, d),
            ("moduleId", Some(m)) => from_template
                .system_mut()
                .insert(system::CONNECTION_MODULE_ID, m),
            _ => match wire::inbound_system_name(name) {
                Some(sys) => from_template.system_mut().set(sys, value),
                None => from_template.properties_mut().set(name, value),
            },
        }
    }
    let same = |a: &PropertyMap, b: &PropertyMap| {
        a.len() == b.len() && a.iter().all(|(k, v)| b.lookup(k) == Some(v))
    };
    if !same(from_template.properties(), message.properties())
        || !same(from_template.system(), message.system())
    {
        return Err(format!(
            "templates and fixed topics disagree: {from_template:?} vs {message:?}"
        ));
    }
    Ok(())
}

fn from_message(case: &Json) -> Result<(), String> {
    let vector = &case["message"];
    let mut message = Message::new("payload");
    for (name, value) in obj(vector, "properties") {
        message.properties_mut().set(name, value.as_str());
    }
    let raw_system = obj(vector, "system_properties");
    let arg = |key: &str| raw_system.get(key).and_then(Json::as_str);
    for (name, value) in raw_system {
        match name.as_str() {
            // Which endpoint (here: the builder), the feedback token, the builder's arguments.
            "outBoundURI" | "lockToken" | "deviceId" | "moduleId" => {}
            _ => {
                let verge = verge_system_name(name)
                    .ok_or_else(|| format!("no Verge name for system property {name:?}"))?;
                message.system_mut().set(verge, value.as_str());
            }
        }
    }
    let (Some(endpoint), Some(device), Some(module), Some(input)) = (
        arg("outBoundURI"),
        arg("deviceId"),
        arg("moduleId"),
        arg("inputName"),
    ) else {
        return Err("the message lacks outBoundURI/deviceId/moduleId/inputName".into());
    };
    if endpoint != "ModuleEndpoint" {
        return Err(format!("unexpected endpoint {endpoint}"));
    }
    let expected = &case["expected"];
    let want = string(expected, "topic");

    let mut topic = String::new();
    module_input_topic(&mut topic, device, module, input, &message);
    if topic != want {
        return Err(format!("built {topic:?}\n   expected {want:?}"));
    }
    let prefix = format!("devices/{device}/modules/{module}/inputs/{input}/");
    let bag = topic
        .strip_prefix(&prefix)
        .ok_or_else(|| format!("{topic:?} does not start with {prefix:?}"))?;
    let mut on_wire = PropertyMap::new();
    decode_raw(bag, &mut on_wire).map_err(|e| format!("own bag does not decode: {e}"))?;
    compare_properties(
        "wire property",
        &on_wire,
        obj(expected, "properties"),
        expected["exact"] == Json::Bool(true),
    )?;
    for absent in arr(expected, &["absent_properties"]) {
        let absent = absent.as_str().unwrap_or_default();
        if on_wire.contains(absent) {
            return Err(format!("{absent} is on the wire: {topic}"));
        }
    }

    // The vector's template, through the template engine, gives the same topic.
    let templates = obj(case, "outbound_templates");
    let converter = TemplateConverter::new(
        ["unused"],
        templates
            .iter()
            .map(|(name, template)| (name.as_str(), template.as_str().unwrap_or_default())),
    )
    .map_err(|e| format!("configuration refused: {e}"))?;
    let vars = property_map(raw_system);
    let mut address = String::new();
    converter
        .build_address(endpoint, &vars, outbound_pairs(&message), &mut address)
        .map_err(|e| format!("template failed: {e}"))?;
    if address != want {
        return Err(format!("template built {address:?}\n   expected {want:?}"));
    }
    Ok(())
}

/// A group of cases: JSON path, `counts` key, runner.
type Group = (
    &'static [&'static str],
    &'static str,
    fn(&Json) -> Result<(), String>,
);

#[test]
fn topics() {
    let file = load("mqtt_topics.json");
    let mut report = Report::default();
    let groups: [Group; 5] = [
        (
            &["address_converter", "outbound"],
            "address_outbound",
            address_outbound,
        ),
        (
            &["address_converter", "inbound"],
            "address_inbound",
            address_inbound,
        ),
        (
            &["address_converter", "config_errors"],
            "address_config_errors",
            config_error,
        ),
        (
            &["message_converter", "to_message"],
            "to_message",
            to_message,
        ),
        (
            &["message_converter", "from_message"],
            "from_message",
            from_message,
        ),
    ];
    for (path, key, run) in groups {
        for case in arr(&file, path) {
            let name = match case["address"].as_str() {
                Some(address) => format!("{} {address:?}", case_name(case)),
                None => case_name(case),
            };
            report.check(key, &name, run(case));
        }
    }
    report.finish(&file);
}

// ---------------------------------------------------------------------------------------------
// mqtt_topics.json: reference tables

#[test]
fn wire_tables_match_reference() {
    let file = load("mqtt_topics.json");
    let reference = &file["reference"];
    let mut failures = Vec::new();

    let incoming = arr(reference, &["incoming_wire_to_system_property"]);
    for pair in incoming {
        let (wire_name, edge) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let expected = verge_system_name(edge);
        let got = wire::inbound_system_name(wire_name);
        if expected.is_none() || got != expected {
            failures.push(format!(
                "incoming {wire_name} → {edge}: Verge maps to {got:?}"
            ));
        }
    }
    for w in WIRE_NAMES.iter().filter(|w| w.inbound) {
        if !incoming.iter().any(|p| p[0] == w.wire) {
            failures.push(format!("{w:?} is read inbound but not in the reference"));
        }
    }

    let outgoing = arr(reference, &["outgoing_system_property_to_wire"]);
    for pair in outgoing {
        let (edge, wire_name) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let got = verge_system_name(edge).and_then(wire::outbound_wire_name);
        if got != Some(wire_name) {
            failures.push(format!(
                "outgoing {edge} → {wire_name}: Verge sends {got:?}"
            ));
        }
    }
    for w in WIRE_NAMES.iter().filter(|w| w.outbound) {
        if !outgoing.iter().any(|p| p[1] == w.wire) {
            failures.push(format!("{w:?} is sent but not in the reference"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// IoT Edge's production inbound templates and Verge's fixed telemetry topics accept the same
/// topics and read the same sender and properties from them. The one deliberate difference: an
/// empty device or module id, which a template binds and Verge refuses.
#[test]
fn production_inbound_templates_agree_with_fixed_topics() {
    let file = load("mqtt_topics.json");
    let templates = &file["reference"]["edge_hub_topic_templates"];
    let inbound: Vec<&str> = arr(templates, &["InboundTemplates"])
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let outbound = obj(templates, "OutboundTemplates");
    let converter = TemplateConverter::new(
        inbound,
        outbound
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str().unwrap())),
    )
    .unwrap();

    let devices = ["d1", "", "$edge", "a.b-c%41"];
    let modules = ["m1", "", "$edgeHub"];
    let middles = [
        "messages/events",
        "messages/event",
        "messages/devicebound",
        "Messages/events",
    ];
    let tails = [
        "",
        "/",
        "//",
        "///",
        "/a=1",
        "/a=1/",
        "/a=1//",
        "/a/b",
        "/%24.mid=x&k&e=",
        "x",
        "/%24.on=o",
    ];
    let mut topics = Vec::new();
    for d in devices {
        for middle in middles {
            for tail in tails {
                topics.push(format!("devices/{d}/{middle}{tail}"));
                for m in modules {
                    topics.push(format!("devices/{d}/modules/{m}/{middle}{tail}"));
                }
            }
        }
    }
    topics.extend(
        [
            "devices",
            "devices/",
            "devices/d",
            "devices/d/modules/m",
            "/devices/d/messages/events",
        ]
        .map(String::from),
    );

    let mut failures = Vec::new();
    let mut accepted = 0;
    for topic in &topics {
        let template = converter.parse_address(topic);
        let fixed = parse_publish(topic);
        match (template, fixed) {
            (Ok(None), Err(TopicError::NotAccepted)) => {}
            (Ok(Some(props)), Err(TopicError::EmptySegment(_)))
                if props.get("deviceId") == Some("") || props.get("moduleId") == Some("") => {}
            (Ok(Some(props)), Ok(parsed)) => {
                accepted += 1;
                let sender = parsed.identity().unwrap();
                let mut expected = PropertyMap::new();
                expected.insert("deviceId", sender.device_id);
                if let Some(m) = sender.module_id {
                    expected.insert("moduleId", m);
                }
                decode_raw(parsed.bag().unwrap(), &mut expected).unwrap();
                if props != expected {
                    failures.push(format!("{topic}: templates {props:?}, fixed {expected:?}"));
                }
            }
            (template, fixed) => {
                failures.push(format!("{topic}: templates {template:?}, fixed {fixed:?}"));
            }
        }
    }
    assert!(accepted > 20, "only {accepted} topics accepted");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // Method responses: the production template and the fixed parser agree on a plain one.
    let topic = "$iothub/methods/res/200/?$rid=abc";
    let props = converter.parse_address(topic).unwrap().unwrap();
    assert_eq!(
        parse_publish(topic),
        Ok(PublishTopic::MethodResponse {
            status: 200,
            request_id: "abc"
        })
    );
    assert_eq!(props.get("statusCode"), Some("200"));
    assert_eq!(props.get("correlationId"), Some("abc"));
}

/// IoT Edge's production outbound templates and Verge's fixed builders write the same topics.
#[test]
fn production_outbound_templates_agree_with_builders() {
    use verge_mqtt::dialect::{cloud_to_device_topic, desired_patch_topic, twin_response_topic};
    let file = load("mqtt_topics.json");
    let templates = &file["reference"]["edge_hub_topic_templates"];
    let converter = TemplateConverter::new(
        ["unused"],
        obj(templates, "OutboundTemplates")
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str().unwrap())),
    )
    .unwrap();
    let message = Message::new("")
        .with_property("k", "v w")
        .with_system(system::MESSAGE_ID, "m1")
        .with_system(system::CONNECTION_DEVICE_ID, "dev");
    let vars: PropertyMap = [
        ("deviceId", "dev"),
        ("moduleId", "mod"),
        ("inputName", "in1"),
        ("statusCode", "200"),
        ("correlationId", "r1"),
        ("version", "7"),
    ]
    .into_iter()
    .collect();
    let build = |endpoint: &str, with_bag: bool| {
        let mut out = String::new();
        let pairs: Vec<_> = if with_bag {
            outbound_pairs(&message).collect()
        } else {
            Vec::new()
        };
        converter
            .build_address(endpoint, &vars, pairs, &mut out)
            .unwrap();
        out
    };
    let mut out = String::new();
    module_input_topic(&mut out, "dev", "mod", "in1", &message);
    assert_eq!(out, build("ModuleEndpoint", true));
    cloud_to_device_topic(&mut out, "dev", &message);
    assert_eq!(out, build("C2D", true));
    cloud_to_device_topic(&mut out, "dev", &Message::new(""));
    assert_eq!(out, build("C2D", false));
    twin_response_topic(&mut out, 200, "r1", None);
    assert_eq!(out, build("TwinEndpoint", false));
    desired_patch_topic(&mut out, 7);
    assert_eq!(out, build("TwinDesiredPropertyUpdate", false));
}
