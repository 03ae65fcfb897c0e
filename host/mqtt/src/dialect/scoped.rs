//! Topics a child edge device uses on its one connection to its parent to act for the clients
//! behind it (its modules, its leaf devices, its own child edge devices and theirs).
//!
//! IoT Hub's topics name no client: a connection is one identity. A child that carries many
//! identities over one connection names the client in the topic, with the `$edgehub/{client}/…`
//! forms IoT Edge's own broker uses internally (`mqtt-edgehub` `topic/translation.rs`), where
//! `{client}` is `{device}` or `{device}/{module}`:
//!
//! | Direction | Topic | IoT Hub form it stands for |
//! |---|---|---|
//! | child → parent | `$edgehub/{c}/twin/get/?$rid={r}` | `$iothub/twin/GET/?$rid={r}` |
//! | child → parent | `$edgehub/{c}/twin/reported/?$rid={r}` | `$iothub/twin/PATCH/properties/reported/?$rid={r}` |
//! | child → parent | `$edgehub/{c}/methods/res/{status}/?$rid={r}` | `$iothub/methods/res/{status}/?$rid={r}` |
//! | subscribe | `$edgehub/{c}/twin/res/#`, `$edgehub/{c}/twin/desired/#`, `$edgehub/{c}/methods/post/#`, `$edgehub/{d}/messages/c2d/post/#` | the `$iothub` and devicebound filters |
//! | parent → child | `$edgehub/{c}/twin/res/{status}/?$rid={r}[&$version={v}]` | `$iothub/twin/res/…` |
//! | parent → child | `$edgehub/{c}/twin/desired/?$version={v}` | `$iothub/twin/PATCH/properties/desired/…` |
//! | parent → child | `$edgehub/{c}/methods/post/{method}/?$rid={r}` | `$iothub/methods/POST/…` |
//! | parent → child | `$edgehub/{d}/messages/c2d/post[/{bag}]` | `devices/{d}/messages/devicebound[/{bag}]` |
//!
//! Telemetry needs no such form: it travels on the child's own telemetry topic and names its
//! origin in `$.cdid` / `$.cmid`. Parsing borrows and never allocates; a client segment is tried
//! as a device first, then as `{device}/{module}`, so that a module may be called `twin`.

use std::fmt::Write as _;

use verge_message::{Identity, Message};

use super::topic::{TopicError, TopicIdentity};

const PREFIX: &str = "$edgehub/";

/// A request a child sends for one of its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopedRequest<'a> {
    /// Get the client's twin.
    TwinGet {
        /// The client.
        client: TopicIdentity<'a>,
        /// `$rid`, never empty.
        request_id: &'a str,
    },
    /// Patch the client's reported properties.
    TwinReported {
        /// The client.
        client: TopicIdentity<'a>,
        /// `$rid`, possibly empty.
        request_id: &'a str,
    },
    /// The client's answer to a direct method.
    MethodResponse {
        /// The client.
        client: TopicIdentity<'a>,
        /// The method's status.
        status: i32,
        /// `$rid`, never empty.
        request_id: &'a str,
    },
}

/// A subscription a child makes for one of its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopedSubscription<'a> {
    /// Twin responses.
    TwinResponses(TopicIdentity<'a>),
    /// Desired-property patches.
    DesiredPatches(TopicIdentity<'a>),
    /// Direct-method requests.
    MethodRequests(TopicIdentity<'a>),
    /// Cloud-to-device messages (devices only).
    CloudToDevice(TopicIdentity<'a>),
}

impl<'a> ScopedSubscription<'a> {
    /// The client the filter is for.
    pub fn client(&self) -> TopicIdentity<'a> {
        match *self {
            Self::TwinResponses(c)
            | Self::DesiredPatches(c)
            | Self::MethodRequests(c)
            | Self::CloudToDevice(c) => c,
        }
    }
}

/// What a parent sends a child for one of its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopedDelivery<'a> {
    /// The answer to a twin request.
    TwinResponse {
        /// The client.
        client: TopicIdentity<'a>,
        /// 200, 204, 4xx.
        status: u16,
        /// `$rid`.
        request_id: &'a str,
    },
    /// The client's desired properties changed.
    DesiredPatch {
        /// The client.
        client: TopicIdentity<'a>,
    },
    /// A direct-method request for the client.
    MethodRequest {
        /// The client.
        client: TopicIdentity<'a>,
        /// The method name.
        method: &'a str,
        /// `$rid`, never empty.
        request_id: &'a str,
    },
    /// A cloud-to-device message for the device.
    CloudToDevice {
        /// The device.
        client: TopicIdentity<'a>,
        /// The property bag, undecoded; empty when there is none.
        bag: &'a str,
    },
}

/// Split `$edgehub/{client}/{op}` with `op` accepted by `parse`: the device reading first, then
/// the module reading.
fn split<'a, T>(
    topic: &'a str,
    parse: impl Fn(TopicIdentity<'a>, &'a str) -> Result<T, TopicError>,
) -> Result<T, TopicError> {
    let rest = topic.strip_prefix(PREFIX).ok_or(TopicError::NotAccepted)?;
    let (device_id, rest) = rest.split_once('/').ok_or(TopicError::NotAccepted)?;
    if device_id.is_empty() || device_id.contains(['+', '#']) {
        return Err(TopicError::EmptySegment("device id"));
    }
    let device = TopicIdentity {
        device_id,
        module_id: None,
    };
    let as_device = parse(device, rest);
    if as_device.is_ok() {
        return as_device;
    }
    let Some((module_id, op)) = rest.split_once('/') else {
        return as_device;
    };
    if module_id.is_empty() || module_id.contains(['+', '#']) {
        return as_device;
    }
    let module = TopicIdentity {
        device_id,
        module_id: Some(module_id),
    };
    parse(module, op).or(as_device)
}

/// `$rid` and `$version` from `?{params}` (or nothing).
fn params(rest: &str) -> Result<(Option<&str>, Option<i64>), TopicError> {
    if rest.is_empty() {
        return Ok((None, None));
    }
    let params = rest.strip_prefix('?').ok_or(TopicError::NotAccepted)?;
    let mut rid = None;
    let mut version = None;
    for item in params.split('&').filter(|i| !i.is_empty()) {
        let (name, value) = item.split_once('=').unwrap_or((item, ""));
        match name {
            "$rid" if rid.replace(value).is_some() => return Err(TopicError::DuplicateParameter),
            "$version" => {
                let v = value.parse().map_err(|_| TopicError::InvalidVersion)?;
                if version.replace(v).is_some() {
                    return Err(TopicError::DuplicateParameter);
                }
            }
            _ => {}
        }
    }
    Ok((rid, version))
}

fn required(rid: Option<&str>) -> Result<&str, TopicError> {
    rid.filter(|r| !r.is_empty())
        .ok_or(TopicError::MissingRequestId)
}

/// `{status}/?{params}`.
fn status_and_params(rest: &str) -> Result<(&str, &str), TopicError> {
    let (status, tail) = rest.split_once('/').ok_or(TopicError::NotAccepted)?;
    Ok((status, tail))
}

/// Parse a topic a child publishes to its parent.
pub fn parse_request(topic: &str) -> Result<ScopedRequest<'_>, TopicError> {
    split(topic, |client, op| {
        if let Some(rest) = op.strip_prefix("twin/get/") {
            let (rid, _) = params(rest)?;
            return Ok(ScopedRequest::TwinGet {
                client,
                request_id: required(rid)?,
            });
        }
        if let Some(rest) = op.strip_prefix("twin/reported/") {
            let (rid, _) = params(rest)?;
            return Ok(ScopedRequest::TwinReported {
                client,
                request_id: rid.unwrap_or_default(),
            });
        }
        if let Some(rest) = op.strip_prefix("methods/res/") {
            let (status, tail) = status_and_params(rest)?;
            let status = status.parse().map_err(|_| TopicError::InvalidStatus)?;
            let (rid, _) = params(tail)?;
            return Ok(ScopedRequest::MethodResponse {
                client,
                status,
                request_id: required(rid)?,
            });
        }
        Err(TopicError::NotAccepted)
    })
}

/// Parse a filter a child subscribes to.
pub fn parse_subscription(filter: &str) -> Result<ScopedSubscription<'_>, TopicError> {
    split(filter, |client, op| match op {
        "twin/res/#" => Ok(ScopedSubscription::TwinResponses(client)),
        "twin/desired/#" => Ok(ScopedSubscription::DesiredPatches(client)),
        "methods/post/#" => Ok(ScopedSubscription::MethodRequests(client)),
        "messages/c2d/post/#" if client.module_id.is_none() => {
            Ok(ScopedSubscription::CloudToDevice(client))
        }
        _ => Err(TopicError::NotAccepted),
    })
}

/// Parse a topic a parent publishes to its child.
pub fn parse_delivery(topic: &str) -> Result<ScopedDelivery<'_>, TopicError> {
    split(topic, |client, op| {
        if let Some(rest) = op.strip_prefix("twin/res/") {
            let (status, tail) = status_and_params(rest)?;
            let status = status.parse().map_err(|_| TopicError::InvalidStatus)?;
            let (rid, _) = params(tail)?;
            return Ok(ScopedDelivery::TwinResponse {
                client,
                status,
                request_id: rid.unwrap_or_default(),
            });
        }
        if let Some(rest) = op.strip_prefix("twin/desired/") {
            params(rest)?;
            return Ok(ScopedDelivery::DesiredPatch { client });
        }
        if let Some(rest) = op.strip_prefix("methods/post/") {
            let (method, tail) = status_and_params(rest)?;
            let (rid, _) = params(tail)?;
            if method.is_empty() {
                return Err(TopicError::NotAccepted);
            }
            return Ok(ScopedDelivery::MethodRequest {
                client,
                method,
                request_id: required(rid)?,
            });
        }
        if let Some(tail) = op.strip_prefix("messages/c2d/post")
            && client.module_id.is_none()
        {
            let bag = match tail {
                "" | "/" => "",
                _ => tail.strip_prefix('/').ok_or(TopicError::NotAccepted)?,
            };
            return Ok(ScopedDelivery::CloudToDevice { client, bag });
        }
        Err(TopicError::NotAccepted)
    })
}

/// `$edgehub/{client}/` into a cleared `out`.
fn start(out: &mut String, client: &Identity) {
    out.clear();
    out.push_str(PREFIX);
    out.push_str(client.device_id());
    if let Some(module) = client.module_id() {
        out.push('/');
        out.push_str(module);
    }
    out.push('/');
}

/// `$edgehub/{client}/twin/get/?$rid={rid}`.
pub fn twin_get_topic(out: &mut String, client: &Identity, request_id: &str) {
    start(out, client);
    let _ = write!(out, "twin/get/?$rid={request_id}");
}

/// `$edgehub/{client}/twin/reported/?$rid={rid}`.
pub fn twin_reported_topic(out: &mut String, client: &Identity, request_id: &str) {
    start(out, client);
    let _ = write!(out, "twin/reported/?$rid={request_id}");
}

/// `$edgehub/{client}/methods/res/{status}/?$rid={rid}`.
pub fn method_response_topic(out: &mut String, client: &Identity, status: i32, request_id: &str) {
    start(out, client);
    let _ = write!(out, "methods/res/{status}/?$rid={request_id}");
}

/// The filters a child subscribes to for `client`: twin responses, desired patches, methods,
/// and cloud-to-device messages for a device.
pub fn client_filters(client: &Identity) -> Vec<String> {
    let mut ops = vec!["twin/res/#", "twin/desired/#", "methods/post/#"];
    if client.module_id().is_none() {
        ops.push("messages/c2d/post/#");
    }
    ops.into_iter()
        .map(|op| {
            let mut out = String::new();
            start(&mut out, client);
            out.push_str(op);
            out
        })
        .collect()
}

/// `$edgehub/{client}/twin/res/{status}/?$rid={rid}[&$version={v}]`.
pub fn twin_response_topic(
    out: &mut String,
    client: &Identity,
    status: u16,
    request_id: &str,
    version: Option<i64>,
) {
    start(out, client);
    let _ = write!(out, "twin/res/{status}/?$rid={request_id}");
    if let Some(v) = version {
        let _ = write!(out, "&$version={v}");
    }
}

/// `$edgehub/{client}/twin/desired/?$version={v}`.
pub fn desired_patch_topic(out: &mut String, client: &Identity, version: i64) {
    start(out, client);
    let _ = write!(out, "twin/desired/?$version={version}");
}

/// `$edgehub/{client}/methods/post/{method}/?$rid={rid}`.
pub fn method_request_topic(out: &mut String, client: &Identity, method: &str, request_id: &str) {
    start(out, client);
    let _ = write!(out, "methods/post/{method}/?$rid={request_id}");
}

/// `$edgehub/{device}/messages/c2d/post[/{bag}]`; whether it fits in an MQTT topic.
pub fn cloud_to_device_topic(out: &mut String, device: &Identity, message: &Message) -> bool {
    start(out, device);
    out.push_str("messages/c2d/post/");
    if !super::propbag::encode_properties(message, out) {
        out.pop();
    }
    out.len() <= super::MAX_TOPIC_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<'a>(device_id: &'a str, module_id: Option<&'a str>) -> TopicIdentity<'a> {
        TopicIdentity {
            device_id,
            module_id,
        }
    }

    #[test]
    fn what_a_child_writes_its_parent_reads() {
        let mut out = String::new();
        let module = Identity::module("child", "$edgeAgent");
        twin_get_topic(&mut out, &module, "7");
        assert_eq!(out, "$edgehub/child/$edgeAgent/twin/get/?$rid=7");
        assert_eq!(
            parse_request(&out),
            Ok(ScopedRequest::TwinGet {
                client: id("child", Some("$edgeAgent")),
                request_id: "7"
            })
        );
        twin_reported_topic(&mut out, &Identity::device("leaf"), "r1");
        assert_eq!(
            parse_request(&out),
            Ok(ScopedRequest::TwinReported {
                client: id("leaf", None),
                request_id: "r1"
            })
        );
        method_response_topic(&mut out, &Identity::module("c", "twin"), 404, "9");
        assert_eq!(
            parse_request(&out),
            Ok(ScopedRequest::MethodResponse {
                client: id("c", Some("twin")),
                status: 404,
                request_id: "9"
            })
        );
        for filter in client_filters(&Identity::device("leaf")) {
            assert_eq!(
                parse_subscription(&filter).map(|s| s.client()),
                Ok(id("leaf", None)),
                "{filter}"
            );
        }
        assert_eq!(client_filters(&module).len(), 3, "no c2d for a module");
    }

    #[test]
    fn what_a_parent_writes_its_child_reads() {
        let mut out = String::new();
        let leaf = Identity::device("leaf");
        twin_response_topic(&mut out, &leaf, 204, "r2", Some(5));
        assert_eq!(
            parse_delivery(&out),
            Ok(ScopedDelivery::TwinResponse {
                client: id("leaf", None),
                status: 204,
                request_id: "r2"
            })
        );
        desired_patch_topic(&mut out, &Identity::module("c", "m"), 3);
        assert_eq!(
            parse_delivery(&out),
            Ok(ScopedDelivery::DesiredPatch {
                client: id("c", Some("m"))
            })
        );
        method_request_topic(&mut out, &leaf, "reboot", "a1");
        assert_eq!(
            parse_delivery(&out),
            Ok(ScopedDelivery::MethodRequest {
                client: id("leaf", None),
                method: "reboot",
                request_id: "a1"
            })
        );
        let message = Message::new("x").with_property("k", "v w");
        assert!(cloud_to_device_topic(&mut out, &leaf, &message));
        assert_eq!(out, "$edgehub/leaf/messages/c2d/post/k=v%20w");
        assert_eq!(
            parse_delivery(&out),
            Ok(ScopedDelivery::CloudToDevice {
                client: id("leaf", None),
                bag: "k=v%20w"
            })
        );
        assert!(cloud_to_device_topic(&mut out, &leaf, &Message::new("x")));
        assert_eq!(out, "$edgehub/leaf/messages/c2d/post");
    }

    #[test]
    fn malformed_scoped_topics_are_refused() {
        for bad in [
            "$edgehub/",
            "$edgehub//twin/get/?$rid=1",
            "$edgehub/d/twin/get/?$rid=",
            "$edgehub/d/m/x/twin/get/?$rid=1",
            "$edgehub/d/methods/res/abc/?$rid=1",
            "$edgehub/d/twin/get/?$rid=1&$rid=2",
            "$edgehub/+/twin/get/?$rid=1",
            "$iothub/twin/GET/?$rid=1",
        ] {
            assert!(parse_request(bad).is_err(), "{bad}");
        }
        for bad in [
            "$edgehub/d/m/messages/c2d/post/#",
            "$edgehub/#",
            "$edgehub/d/twin/#",
        ] {
            assert!(parse_subscription(bad).is_err(), "{bad}");
        }
        assert!(parse_delivery("$edgehub/d/methods/post//?$rid=1").is_err());
    }
}
