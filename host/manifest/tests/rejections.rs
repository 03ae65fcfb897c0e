//! Table of rejected deployments: each case breaks one thing in a valid manifest and states the
//! status code, the twin that reports it, and text the description must contain.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use verge_manifest::{Deployment, DeploymentError, ErrorOrigin, StatusCode};

fn valid() -> Value {
    json!({"modulesContent": {
        "$edgeAgent": {"properties.desired": {
            "schemaVersion": "1.1",
            "runtime": {"type": "docker", "settings": {
                "minDockerVersion": "v1.25", "loggingOptions": "",
                "registryCredentials": {"acr": {"username": "u", "password": "p", "address": "acr.io"}}
            }},
            "systemModules": {
                "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5", "createOptions": "{}"}},
                "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                            "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5", "createOptions": "{}"}}
            },
            "modules": {
                "filter": {"version": "1.0", "type": "wasm", "status": "running", "restartPolicy": "always",
                           "settings": {"image": "filter.wasm"}}
            }
        }},
        "$edgeHub": {"properties.desired": {
            "schemaVersion": "1.1",
            "routes": {"r1": "FROM /messages/* INTO $upstream"},
            "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}
        }},
        "filter": {"properties.desired": {"threshold": 5}}
    }})
}

/// Pointer into the valid manifest: `agent`, `hub`, `filter` (the module definition) or `content`.
fn at<'a>(root: &'a mut Value, place: &str) -> &'a mut Value {
    let pointer = match place {
        "agent" => "/modulesContent/$edgeAgent/properties.desired",
        "hub" => "/modulesContent/$edgeHub/properties.desired",
        "filter" => "/modulesContent/$edgeAgent/properties.desired/modules/filter",
        "content" => "/modulesContent",
        other => panic!("unknown place {other}"),
    };
    root.pointer_mut(pointer)
        .expect("place exists in the valid manifest")
}

fn set(place: &'static str, key: &'static str, value: Value) -> impl Fn(&mut Value) {
    move |root| {
        at(root, place)[key] = value.clone();
    }
}

fn remove(place: &'static str, key: &'static str) -> impl Fn(&mut Value) {
    move |root| {
        at(root, place)
            .as_object_mut()
            .expect("an object")
            .remove(key);
    }
}

struct Case {
    name: &'static str,
    edit: Box<dyn Fn(&mut Value)>,
    code: StatusCode,
    origin: ErrorOrigin,
    contains: &'static str,
}

fn case(
    name: &'static str,
    edit: impl Fn(&mut Value) + 'static,
    code: StatusCode,
    origin: ErrorOrigin,
    contains: &'static str,
) -> Case {
    Case {
        name,
        edit: Box::new(edit),
        code,
        origin,
        contains,
    }
}

fn cases() -> Vec<Case> {
    use ErrorOrigin::{EdgeAgent as A, EdgeHub as H, Manifest as M};
    use StatusCode::{
        ConfigEmptyError as E417, ConfigFormatError as E400, InvalidSchemaVersion as E412,
    };
    let settings = |extra: Value| {
        move |root: &mut Value| {
            let s = &mut at(root, "filter")["settings"];
            for (k, v) in extra.as_object().expect("an object") {
                s[k] = v.clone();
            }
        }
    };
    vec![
        // Envelope.
        case(
            "missing modulesContent",
            |r| *r = json!({"content": {}}),
            E400,
            M,
            "modulesContent: required field is missing",
        ),
        case(
            "missing $edgeAgent",
            remove("content", "$edgeAgent"),
            E400,
            M,
            "modulesContent.$edgeAgent: required field is missing",
        ),
        case(
            "missing $edgeHub",
            remove("content", "$edgeHub"),
            E400,
            M,
            "modulesContent.$edgeHub: required field is missing",
        ),
        case(
            "$edgeAgent without properties.desired",
            set("content", "$edgeAgent", json!({})),
            E400,
            M,
            "properties.desired: required field is missing",
        ),
        case(
            "module twin id invalid",
            set("content", "bad.id", json!({"properties.desired": {}})),
            E400,
            ErrorOrigin::ModuleTwin("bad.id".into()),
            "invalid module id",
        ),
        case(
            "module twin desired not an object",
            set("content", "filter", json!({"properties.desired": []})),
            E400,
            ErrorOrigin::ModuleTwin("filter".into()),
            "filter.properties.desired: expected an object, found an array",
        ),
        // 417: empty desired properties, checked first.
        case(
            "empty agent desired",
            |r| *at(r, "agent") = json!({}),
            E417,
            A,
            "This device has an empty configuration for the edge agent. Please set a deployment manifest.",
        ),
        case(
            "agent desired with only twin metadata",
            |r| *at(r, "agent") = json!({"$version": 3, "$metadata": {}}),
            E417,
            A,
            "empty configuration",
        ),
        // 400: deserialization.
        case(
            "agent desired not an object",
            |r| *at(r, "agent") = json!("x"),
            E400,
            A,
            "$edgeAgent: expected an object, found a string",
        ),
        case(
            "missing schemaVersion",
            remove("agent", "schemaVersion"),
            E400,
            A,
            "Agent configuration format is invalid. $edgeAgent.schemaVersion: required field is missing",
        ),
        case(
            "schemaVersion is a number",
            set("agent", "schemaVersion", json!(1.1)),
            E400,
            A,
            "$edgeAgent.schemaVersion: expected a string, found a number",
        ),
        case(
            "missing runtime",
            remove("agent", "runtime"),
            E400,
            A,
            "$edgeAgent.runtime: required field is missing",
        ),
        case(
            "runtime type",
            set("agent", "runtime", json!({"type": "kubernetes"})),
            E400,
            A,
            "$edgeAgent.runtime.type: unknown runtime type \"kubernetes\"",
        ),
        case(
            "registry credential without password",
            set(
                "agent",
                "runtime",
                json!({"type": "docker", "settings": {"registryCredentials": {"acr": {"username": "u", "address": "a"}}}}),
            ),
            E400,
            A,
            "registryCredentials.acr.password: required field is missing",
        ),
        case(
            "missing systemModules",
            remove("agent", "systemModules"),
            E400,
            A,
            "$edgeAgent.systemModules: required field is missing",
        ),
        case(
            "edgeHub without status",
            |r| {
                at(r, "agent")["systemModules"]["edgeHub"]
                    .as_object_mut()
                    .expect("an object")
                    .remove("status");
            },
            E400,
            A,
            "$edgeAgent.systemModules.edgeHub.status: required field is missing",
        ),
        case(
            "modules is an array",
            set("agent", "modules", json!([])),
            E400,
            A,
            "$edgeAgent.modules: expected an object, found an array",
        ),
        case(
            "module id pattern",
            set("agent", "modules", json!({"my module": {}})),
            E400,
            A,
            "$edgeAgent.modules.my module: invalid module id",
        ),
        case(
            "unknown module type foo",
            set("filter", "type", json!("foo")),
            E400,
            A,
            "$edgeAgent.modules.filter.type: unknown module type \"foo\" (expected docker, wasm)",
        ),
        case(
            "missing module type",
            remove("filter", "type"),
            E400,
            A,
            "$edgeAgent.modules.filter.type: required field is missing",
        ),
        case(
            "unknown restart policy",
            set("filter", "restartPolicy", json!("sometimes")),
            E400,
            A,
            "$edgeAgent.modules.filter.restartPolicy: unknown value \"sometimes\" (expected never, on-failure, on-unhealthy, always)",
        ),
        case(
            "null restart policy",
            set("filter", "restartPolicy", json!(null)),
            E400,
            A,
            "$edgeAgent.modules.filter.restartPolicy: must not be null",
        ),
        case(
            "unknown status",
            set("filter", "status", json!("paused")),
            E400,
            A,
            "$edgeAgent.modules.filter.status: unknown value \"paused\" (expected running, stopped)",
        ),
        case(
            "missing status",
            remove("filter", "status"),
            E400,
            A,
            "$edgeAgent.modules.filter.status: required field is missing",
        ),
        case(
            "unknown imagePullPolicy",
            set("filter", "imagePullPolicy", json!("always")),
            E400,
            A,
            "imagePullPolicy: unknown value \"always\" (expected on-create, never)",
        ),
        case(
            "startupOrder as string",
            set("filter", "startupOrder", json!("1")),
            E400,
            A,
            "$edgeAgent.modules.filter.startupOrder: expected an integer, found a string",
        ),
        case(
            "startupOrder negative",
            set("filter", "startupOrder", json!(-1)),
            E400,
            A,
            "startupOrder: -1 is out of range 0..=4294967295",
        ),
        case(
            "startupOrder too large",
            set("filter", "startupOrder", json!(4_294_967_296_u64)),
            E400,
            A,
            "startupOrder: 4294967296 is out of range",
        ),
        case(
            "env key pattern",
            set("filter", "env", json!({"A B": {"value": "x"}})),
            E400,
            A,
            "$edgeAgent.modules.filter.env.A B: invalid environment variable name",
        ),
        case(
            "env value object",
            set("filter", "env", json!({"A": {"value": {}}})),
            E400,
            A,
            "$edgeAgent.modules.filter.env.A.value: expected a string, number or boolean, found an object",
        ),
        case(
            "env entry not an object",
            set("filter", "env", json!({"A": "x"})),
            E400,
            A,
            "$edgeAgent.modules.filter.env.A: expected an object, found a string",
        ),
        case(
            "missing settings",
            remove("filter", "settings"),
            E400,
            A,
            "$edgeAgent.modules.filter.settings: required field is missing",
        ),
        case(
            "missing image",
            set("filter", "settings", json!({})),
            E400,
            A,
            "$edgeAgent.modules.filter.settings.image: required field is missing",
        ),
        case(
            "blank image",
            set("filter", "settings", json!({"image": "  "})),
            E400,
            A,
            "settings.image: must not be blank",
        ),
        case(
            "bad docker image",
            |r| {
                at(r, "filter")["type"] = json!("docker");
                at(r, "filter")["settings"]["image"] = json!("repo/");
            },
            E400,
            A,
            "settings.image: image \"repo/\" is not in the right format",
        ),
        case(
            "createOptions gap",
            settings(json!({"createOptions": "{\"a\":", "createOptions02": "1}"})),
            E400,
            A,
            "$edgeAgent.modules.filter.settings.createOptions02: createOptions chunks out of sequence: expected createOptions01 here",
        ),
        case(
            "createOptions without first chunk",
            settings(json!({"createOptions01": "{}"})),
            E400,
            A,
            "settings.createOptions01: createOptions chunks out of sequence: expected createOptions here",
        ),
        case(
            "createOptions invalid JSON",
            settings(json!({"createOptions": "{\"HostConfig\":"})),
            E400,
            A,
            "$edgeAgent.modules.filter.settings.createOptions: create options are not valid JSON",
        ),
        case(
            "createOptions not an object",
            settings(json!({"createOptions": "[1,2]"})),
            E400,
            A,
            "create options must be a JSON object, found an array",
        ),
        case(
            "createOptions chunk is a number",
            settings(json!({"createOptions": 5})),
            E400,
            A,
            "settings.createOptions: expected a string, found a number",
        ),
        case(
            "format error wins over schema error",
            |r| {
                at(r, "agent")["schemaVersion"] = json!("2.0");
                at(r, "filter")["type"] = json!("foo");
            },
            E400,
            A,
            "unknown module type",
        ),
        // 412: schema version, checked after deserialization.
        case(
            "schemaVersion 2.0",
            set("agent", "schemaVersion", json!("2.0")),
            E412,
            A,
            "The desired properties schema version 2.0 is not compatible with the expected version 1.1.0",
        ),
        case(
            "schemaVersion 1.2",
            set("agent", "schemaVersion", json!("1.2")),
            E412,
            A,
            "schema version 1.2 is not compatible",
        ),
        case(
            "schemaVersion 0.9",
            set("agent", "schemaVersion", json!("0.9")),
            E412,
            A,
            "not compatible",
        ),
        case(
            "schemaVersion empty",
            set("agent", "schemaVersion", json!("")),
            E412,
            A,
            "Invalid desired properties schema version \"\"",
        ),
        case(
            "schemaVersion garbage",
            set("agent", "schemaVersion", json!("latest")),
            E412,
            A,
            "Invalid desired properties schema version \"latest\"",
        ),
        case(
            "schemaVersion 1.0 with startupOrder",
            |r| {
                at(r, "agent")["schemaVersion"] = json!("1.0");
                at(r, "filter")["startupOrder"] = json!(1);
            },
            E412,
            A,
            "Module startup order is not supported in schema 1.0, module: filter, startupOrder: 1",
        ),
        // $edgeHub: always 400, "Error while parsing desired properties - …".
        case(
            "hub desired empty",
            |r| *at(r, "hub") = json!({}),
            E400,
            H,
            "Error while parsing desired properties - $edgeHub.schemaVersion: required field is missing",
        ),
        case(
            "hub schema 1.4",
            set("hub", "schemaVersion", json!("1.4")),
            E400,
            H,
            "$edgeHub.schemaVersion: unsupported schema version 1.4",
        ),
        case(
            "hub schema 2.0",
            set("hub", "schemaVersion", json!("2.0")),
            E400,
            H,
            "unsupported schema version 2.0",
        ),
        case(
            "hub schema garbage",
            set("hub", "schemaVersion", json!("one")),
            E400,
            H,
            "$edgeHub.schemaVersion: error parsing schema version string",
        ),
        case(
            "bad route name",
            set(
                "hub",
                "routes",
                json!({"to.cloud": "FROM /* INTO $upstream"}),
            ),
            E400,
            H,
            "$edgeHub.routes.to.cloud: invalid route name",
        ),
        case(
            "route name with $",
            set("hub", "routes", json!({"$r": "FROM /* INTO $upstream"})),
            E400,
            H,
            "invalid route name \"$r\"",
        ),
        case(
            "priority 10",
            set(
                "hub",
                "routes",
                json!({"r": {"route": "FROM /* INTO $upstream", "priority": 10}}),
            ),
            E400,
            H,
            "$edgeHub.routes.r.priority: 10 is out of range 0..=9",
        ),
        case(
            "route TTL negative",
            set(
                "hub",
                "routes",
                json!({"r": {"route": "FROM /* INTO $upstream", "timeToLiveSecs": -5}}),
            ),
            E400,
            H,
            "$edgeHub.routes.r.timeToLiveSecs: -5 is out of range",
        ),
        case(
            "route object without route",
            set("hub", "routes", json!({"r": {"priority": 1}})),
            E400,
            H,
            "$edgeHub.routes.r.route: required field is missing",
        ),
        case(
            "route is a number",
            set("hub", "routes", json!({"r": 1})),
            E400,
            H,
            "$edgeHub.routes.r: malformed route",
        ),
        case(
            "route object in schema 1.0",
            |r| {
                at(r, "hub")["schemaVersion"] = json!("1.0");
                at(r, "hub")["routes"] = json!({"r": {"route": "FROM /* INTO $upstream"}});
            },
            E400,
            H,
            "route objects need schemaVersion 1.1 or later",
        ),
        case(
            "routes missing in 1.1",
            remove("hub", "routes"),
            E400,
            H,
            "$edgeHub.routes: required field is missing",
        ),
        case(
            "store and forward missing",
            remove("hub", "storeAndForwardConfiguration"),
            E400,
            H,
            "$edgeHub.storeAndForwardConfiguration: required field is missing",
        ),
        case(
            "store TTL not an integer",
            set(
                "hub",
                "storeAndForwardConfiguration",
                json!({"timeToLiveSecs": "7200"}),
            ),
            E400,
            H,
            "storeAndForwardConfiguration.timeToLiveSecs: expected an integer, found a string",
        ),
        case(
            "store limit negative",
            set(
                "hub",
                "storeAndForwardConfiguration",
                json!({"timeToLiveSecs": 1, "storeLimits": {"maxSizeBytes": -1}}),
            ),
            E400,
            H,
            "storeLimits.maxSizeBytes: -1 is out of range",
        ),
    ]
}

#[test]
fn the_valid_base_manifest_parses() {
    let d = Deployment::from_value(&valid()).unwrap();
    assert_eq!(d.agent.modules.len(), 1);
    assert_eq!(d.module_twins["filter"]["threshold"], json!(5));
}

#[test]
fn every_rejection_has_the_right_code_origin_and_description() {
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let mut manifest = valid();
        (case.edit)(&mut manifest);
        match Deployment::from_value(&manifest) {
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
            Err(DeploymentError {
                code,
                description,
                origin,
            }) => {
                if code != case.code
                    || origin != case.origin
                    || !description.contains(case.contains)
                {
                    failures.push(format!(
                        "{}: got {code} from {origin:?}: {description:?}; wanted {} from {:?} containing {:?}",
                        case.name, case.code, case.origin, case.contains
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn malformed_json_text() {
    for text in ["", "{", "{\"modulesContent\": }", "[1, 2"] {
        let err = Deployment::parse(text).unwrap_err();
        assert_eq!(
            (err.code, &err.origin),
            (StatusCode::ConfigFormatError, &ErrorOrigin::Manifest)
        );
        assert!(
            err.description
                .starts_with("Agent configuration format is invalid. manifest: not valid JSON"),
            "{}",
            err.description
        );
    }
    let err = Deployment::parse("[]").unwrap_err();
    assert!(
        err.description
            .contains("manifest: expected an object, found an array"),
        "{}",
        err.description
    );
}
