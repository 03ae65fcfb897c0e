//! `$edgeHub` desired properties by schema version (iotedge.md §1.4, §3.4, §3.5).
//!
//! Following `EdgeHubConfigParser.cs`, the schema version is checked first (missing, unparsable,
//! major ≠ 1 or minor > 3 are errors), then the body for that version is read:
//! - 1.0: `routes` maps names to route strings (blank strings are skipped, as IoT Edge does);
//! - 1.1+: a route is a string or `{route, priority: 0..=9, timeToLiveSecs: u32}`, and `routes`
//!   is required;
//! - 1.2+: `mqttBroker` and 1.3: `integrity` are kept as raw JSON;
//! - every version: `storeAndForwardConfiguration` is required, with `timeToLiveSecs` (a 32-bit
//!   signed integer; below 0 means forever) and optional `storeLimits.maxSizeBytes`.
//!
//! Route names must match `^[^\.\$# ]+$`. Route text is carried, not compiled. Every error is a
//! 400 described as `"Error while parsing desired properties - …"`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{DeploymentError, FormatError};
use crate::json::{Obj, kind};
use crate::version::SchemaVersion;

/// The newest `$edgeHub` schema (`EdgeHubConfigParser`'s `LatestSchemaVersion`).
pub const HUB_LATEST_SCHEMA_VERSION: SchemaVersion = SchemaVersion::new(1, 3);

/// The priority of a route that sets none (`RouteFactory.DefaultPriority`); 0 is the highest.
pub const DEFAULT_ROUTE_PRIORITY: u32 = 2_000_000_000;

/// The highest (numerically largest) explicit route priority.
pub const MAX_ROUTE_PRIORITY: u8 = 9;

/// `$edgeHub` → `properties.desired`.
#[derive(Clone, Debug, PartialEq)]
pub struct HubConfig {
    /// `schemaVersion` (1.0 – 1.3).
    pub schema_version: SchemaVersion,
    /// `routes`, in manifest order.
    pub routes: Vec<RouteConfig>,
    /// `storeAndForwardConfiguration`.
    pub store_and_forward: StoreAndForward,
    /// `mqttBroker` (schema 1.2+), raw.
    pub mqtt_broker: Option<Value>,
    /// `integrity` (schema 1.3), raw.
    pub integrity: Option<Value>,
}

/// One route. The text is compiled elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// The key in `routes`.
    pub name: String,
    /// `FROM … [WHERE …] INTO …`, as written.
    pub route: String,
    /// `priority` 0..=9 (0 is highest); `None` means [`DEFAULT_ROUTE_PRIORITY`].
    pub priority: Option<u8>,
    /// `timeToLiveSecs`; `None` or `Some(0)` means the global store-and-forward TTL.
    pub time_to_live_secs: Option<u32>,
}

/// `storeAndForwardConfiguration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreAndForward {
    /// `timeToLiveSecs`; below 0 means messages never expire.
    pub time_to_live_secs: i64,
    /// `storeLimits.maxSizeBytes` (IoT Edge honours it only for the in-memory store).
    pub max_size_bytes: Option<u64>,
}

impl StoreAndForward {
    /// The global message time to live; `None` means forever.
    pub fn time_to_live(&self) -> Option<Duration> {
        u64::try_from(self.time_to_live_secs)
            .ok()
            .map(Duration::from_secs)
    }
}

impl RouteConfig {
    /// The priority used to pick a queue: the explicit one, else [`DEFAULT_ROUTE_PRIORITY`].
    pub fn effective_priority(&self) -> u32 {
        self.priority.map_or(DEFAULT_ROUTE_PRIORITY, u32::from)
    }

    /// The time to live of messages on this route: its own when set and non-zero, else the global
    /// one. `None` means forever.
    pub fn time_to_live(&self, global: &StoreAndForward) -> Option<Duration> {
        match self.time_to_live_secs {
            Some(secs) if secs > 0 => Some(Duration::from_secs(u64::from(secs))),
            _ => global.time_to_live(),
        }
    }
}

/// Whether a route name is valid: `^[^\.\$# ]+$`.
pub fn is_valid_route_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['.', '$', '#', ' '])
}

impl HubConfig {
    /// Reads `$edgeHub` desired properties; every error is a 400.
    pub fn from_desired(desired: &Value) -> Result<Self, DeploymentError> {
        parse(desired).map_err(DeploymentError::hub)
    }

    /// The desired properties in manifest form (routes as objects from schema 1.1 on).
    pub fn to_value(&self) -> Value {
        let objects = self.schema_version.minor >= 1;
        let routes: Map<String, Value> = self
            .routes
            .iter()
            .map(|r| {
                let value = if !objects || (r.priority.is_none() && r.time_to_live_secs.is_none()) {
                    Value::String(r.route.clone())
                } else {
                    let mut obj = Map::new();
                    obj.insert("route".into(), r.route.clone().into());
                    if let Some(p) = r.priority {
                        obj.insert("priority".into(), p.into());
                    }
                    if let Some(ttl) = r.time_to_live_secs {
                        obj.insert("timeToLiveSecs".into(), ttl.into());
                    }
                    Value::Object(obj)
                };
                (r.name.clone(), value)
            })
            .collect();
        let mut store = serde_json::json!({
            "timeToLiveSecs": self.store_and_forward.time_to_live_secs
        });
        if let (Some(max), Value::Object(map)) = (self.store_and_forward.max_size_bytes, &mut store)
        {
            map.insert(
                "storeLimits".into(),
                serde_json::json!({ "maxSizeBytes": max }),
            );
        }
        let mut out = Map::new();
        out.insert(
            "schemaVersion".into(),
            self.schema_version.to_string().into(),
        );
        out.insert("routes".into(), Value::Object(routes));
        out.insert("storeAndForwardConfiguration".into(), store);
        if let Some(v) = &self.mqtt_broker {
            out.insert("mqttBroker".into(), v.clone());
        }
        if let Some(v) = &self.integrity {
            out.insert("integrity".into(), v.clone());
        }
        Value::Object(out)
    }
}

fn parse(desired: &Value) -> Result<HubConfig, FormatError> {
    let root = Obj::new("$edgeHub", desired)?;
    let schema_version = parse_schema_version(&root)?;
    let routes = parse_routes(&root, schema_version)?;
    let store_and_forward =
        parse_store_and_forward(&root.obj_req("storeAndForwardConfiguration")?)?;
    let mqtt_broker = if schema_version.minor >= 2 {
        root.get("mqttBroker").cloned()
    } else {
        None
    };
    let integrity = if schema_version.minor >= 3 {
        root.get("integrity").cloned()
    } else {
        None
    };
    Ok(HubConfig {
        schema_version,
        routes,
        store_and_forward,
        mqtt_broker,
        integrity,
    })
}

fn parse_schema_version(root: &Obj<'_>) -> Result<SchemaVersion, FormatError> {
    let text = root.str_req("schemaVersion")?;
    let version: SchemaVersion = text.parse().map_err(|error| {
        root.error(
            "schemaVersion",
            format!("error parsing schema version string: {error}"),
        )
    })?;
    if version.major != HUB_LATEST_SCHEMA_VERSION.major
        || version.minor > HUB_LATEST_SCHEMA_VERSION.minor
    {
        return Err(root.error(
            "schemaVersion",
            format!("unsupported schema version {text} (expected 1.0, 1.1, 1.2 or 1.3)"),
        ));
    }
    Ok(version)
}

fn parse_routes(root: &Obj<'_>, version: SchemaVersion) -> Result<Vec<RouteConfig>, FormatError> {
    let Some(routes) = (if version.minor == 0 {
        root.obj_opt("routes")?
    } else {
        Some(root.obj_req("routes")?)
    }) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, value) in routes.entries() {
        if !is_valid_route_name(name) {
            return Err(routes.error(
                name,
                format!(
                    "invalid route name {name:?} (must be non-empty without '.', '$', '#' or ' ')"
                ),
            ));
        }
        let path = routes.path_of(name);
        let route = match value {
            Value::String(text) if version.minor == 0 => {
                if text.trim().is_empty() {
                    continue; // IoT Edge skips blank 1.0 routes.
                }
                plain_route(name, text)
            }
            Value::String(text) => {
                if text.trim().is_empty() {
                    return Err(FormatError::new(path, "route must not be blank"));
                }
                plain_route(name, text)
            }
            Value::Object(_) if version.minor >= 1 => {
                parse_route_object(name, &Obj::new(path, value)?)?
            }
            other => {
                let wanted = if version.minor == 0 {
                    "a route string (route objects need schemaVersion 1.1 or later)"
                } else {
                    "a route string or object"
                };
                return Err(FormatError::new(
                    path,
                    format!("malformed route: expected {wanted}, found {}", kind(other)),
                ));
            }
        };
        out.push(route);
    }
    Ok(out)
}

fn plain_route(name: &str, text: &str) -> RouteConfig {
    RouteConfig {
        name: name.to_owned(),
        route: text.to_owned(),
        priority: None,
        time_to_live_secs: None,
    }
}

fn parse_route_object(name: &str, obj: &Obj<'_>) -> Result<RouteConfig, FormatError> {
    let route = obj.str_req("route")?;
    if route.trim().is_empty() {
        return Err(obj.error("route", "route must not be blank"));
    }
    let priority = obj
        .int_opt("priority", 0, i64::from(MAX_ROUTE_PRIORITY))?
        .and_then(|p| u8::try_from(p).ok());
    let time_to_live_secs = obj
        .int_opt("timeToLiveSecs", 0, i64::from(u32::MAX))?
        .and_then(|t| u32::try_from(t).ok());
    Ok(RouteConfig {
        name: name.to_owned(),
        route: route.to_owned(),
        priority,
        time_to_live_secs,
    })
}

fn parse_store_and_forward(obj: &Obj<'_>) -> Result<StoreAndForward, FormatError> {
    let time_to_live_secs = obj
        .int_opt("timeToLiveSecs", i64::from(i32::MIN), i64::from(i32::MAX))?
        .ok_or_else(|| obj.error("timeToLiveSecs", "required field is missing"))?;
    let max_size_bytes = match obj.obj_opt("storeLimits")? {
        Some(limits) => {
            let max = limits.int_opt("maxSizeBytes", 0, i64::MAX)?;
            let max =
                max.ok_or_else(|| limits.error("maxSizeBytes", "required field is missing"))?;
            u64::try_from(max).ok()
        }
        None => None,
    };
    Ok(StoreAndForward {
        time_to_live_secs,
        max_size_bytes,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::StatusCode;

    fn hub(schema: &str, routes: Value) -> Value {
        json!({
            "schemaVersion": schema,
            "routes": routes,
            "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}
        })
    }

    fn error(desired: Value) -> String {
        let err = HubConfig::from_desired(&desired).unwrap_err();
        assert_eq!(err.code, StatusCode::ConfigFormatError);
        err.description
    }

    #[test]
    fn mixes_strings_and_objects_from_1_1() {
        let config = HubConfig::from_desired(&hub(
            "1.1",
            json!({
                "b": "FROM /* INTO $upstream",
                "a": {"route": "FROM /messages INTO $upstream", "priority": 0, "timeToLiveSecs": 86400}
            }),
        ))
        .unwrap();
        let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b", "a"], "manifest order is kept");
        assert_eq!(
            config.routes[0].effective_priority(),
            DEFAULT_ROUTE_PRIORITY
        );
        assert_eq!(config.routes[1].priority, Some(0));
        let global = config.store_and_forward;
        assert_eq!(
            config.routes[1].time_to_live(&global),
            Some(Duration::from_secs(86400))
        );
        assert_eq!(
            config.routes[0].time_to_live(&global),
            Some(Duration::from_secs(7200))
        );
    }

    #[test]
    fn schema_1_0_takes_strings_only_and_skips_blank_ones() {
        let config = HubConfig::from_desired(&hub(
            "1.0",
            json!({"a": "FROM /* INTO $upstream", "b": " "}),
        ))
        .unwrap();
        assert_eq!(config.routes.len(), 1);
        let message = error(hub(
            "1.0",
            json!({"a": {"route": "FROM /* INTO $upstream"}}),
        ));
        assert!(
            message.contains("$edgeHub.routes.a: malformed route"),
            "{message}"
        );
        let mut no_routes = hub("1.0", json!(null));
        assert!(
            HubConfig::from_desired(&no_routes)
                .unwrap()
                .routes
                .is_empty()
        );
        no_routes["schemaVersion"] = json!("1.1");
        assert!(error(no_routes).contains("$edgeHub.routes: required field"));
    }

    #[test]
    fn schema_versions() {
        for ok in ["1.0", "1.1", "1.2", "1.3"] {
            assert!(HubConfig::from_desired(&hub(ok, json!({}))).is_ok(), "{ok}");
        }
        for bad in ["1.4", "2.0", "0.1", "1", "x"] {
            let message = error(hub(bad, json!({})));
            assert!(
                message
                    .starts_with("Error while parsing desired properties - $edgeHub.schemaVersion"),
                "{message}"
            );
        }
        assert!(error(json!({})).contains("schemaVersion: required field is missing"));
    }

    #[test]
    fn route_rules() {
        assert!(
            error(hub("1.1", json!({"a.b": "FROM /* INTO $upstream"})))
                .contains("invalid route name")
        );
        assert!(error(hub("1.1", json!({"a b": "x"}))).contains("invalid route name"));
        assert!(error(hub("1.1", json!({"$a": "x"}))).contains("invalid route name"));
        assert!(
            error(hub("1.1", json!({"a": {"route": "x", "priority": 10}})))
                .contains("routes.a.priority: 10 is out of range 0..=9")
        );
        assert!(
            error(hub("1.1", json!({"a": {"route": "x", "priority": -1}}))).contains("priority")
        );
        assert!(
            error(hub(
                "1.1",
                json!({"a": {"route": "x", "timeToLiveSecs": -1}})
            ))
            .contains("timeToLiveSecs")
        );
        assert!(error(hub("1.1", json!({"a": {"route": " "}}))).contains("must not be blank"));
        assert!(
            error(hub("1.1", json!({"a": {"priority": 1}}))).contains("routes.a.route: required")
        );
        assert!(error(hub("1.1", json!({"a": 5}))).contains("malformed route"));
        assert!(error(hub("1.1", json!({"a": ""}))).contains("must not be blank"));
    }

    #[test]
    fn store_and_forward_rules() {
        let mut desired = hub("1.1", json!({}));
        desired["storeAndForwardConfiguration"] =
            json!({"timeToLiveSecs": -1, "storeLimits": {"maxSizeBytes": 1000}});
        let config = HubConfig::from_desired(&desired).unwrap();
        assert_eq!(config.store_and_forward.time_to_live(), None);
        assert_eq!(config.store_and_forward.max_size_bytes, Some(1000));
        desired["storeAndForwardConfiguration"] = json!({"timeToLiveSecs": 2_147_483_648_i64});
        assert!(error(desired.clone()).contains("timeToLiveSecs"));
        desired["storeAndForwardConfiguration"] = json!({});
        assert!(error(desired.clone()).contains("timeToLiveSecs: required"));
        desired["storeAndForwardConfiguration"] = json!(null);
        assert!(error(desired.clone()).contains("storeAndForwardConfiguration: required"));
        desired
            .as_object_mut()
            .unwrap()
            .remove("storeAndForwardConfiguration");
        assert!(error(desired).contains("storeAndForwardConfiguration: required"));
    }

    #[test]
    fn raw_sections_by_version() {
        let mut desired = hub("1.1", json!({}));
        desired["mqttBroker"] = json!({"bridges": []});
        desired["integrity"] = json!({"header": {}});
        let v11 = HubConfig::from_desired(&desired).unwrap();
        assert_eq!(
            (v11.mqtt_broker.is_some(), v11.integrity.is_some()),
            (false, false)
        );
        desired["schemaVersion"] = json!("1.2");
        let v12 = HubConfig::from_desired(&desired).unwrap();
        assert_eq!(
            (v12.mqtt_broker.is_some(), v12.integrity.is_some()),
            (true, false)
        );
        desired["schemaVersion"] = json!("1.3");
        let v13 = HubConfig::from_desired(&desired).unwrap();
        assert_eq!(
            (v13.mqtt_broker.is_some(), v13.integrity.is_some()),
            (true, true)
        );
        assert_eq!(HubConfig::from_desired(&v13.to_value()).unwrap(), v13);
    }
}
