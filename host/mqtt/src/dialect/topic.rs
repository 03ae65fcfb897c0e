//! Topic names clients publish to, and topic filters they subscribe to (reference `iotedge.md`
//! §4.3). Parsing borrows from the topic and never allocates.
//!
//! **PUBLISH** ([`parse_publish`]):
//! - `devices/{d}/messages/events` + optional `/{bag}` + optional trailing `/`: device telemetry;
//! - `devices/{d}/modules/{m}/messages/events` + the same tail: a module's output (the output name
//!   is the bag's `$.on`);
//! - `$iothub/twin/GET/?$rid={rid}`: get the twin (`$rid` required);
//! - `$iothub/twin/PATCH/properties/reported/?$rid={rid}[&$version={v}]`: patch reported
//!   properties (`$rid` may be missing, as IoT Edge allows; it is then empty);
//! - `$iothub/methods/res/{status}/?$rid={rid}`: a direct-method response (`{status}` an
//!   integer, `$rid` required).
//!
//! Literal segments are case-sensitive. The bag of telemetry topics is the one segment after
//! `events/` (IoT Edge's inbound templates: `…/events/{params}/`, `…/events/{params}`,
//! `…/events/`, `…/events`); it is handed over undecoded ([`super::propbag`] decodes it). The
//! `?…` parameters of `$iothub` topics follow IoT Edge's `TwinAddressHelper`: split on `&` and
//! `=`, not percent-decoded, empty items skipped, unknown names ignored; `$rid` or `$version`
//! twice is an error. Device and module ids are taken as written (IoT Edge does not decode them)
//! and must not be empty.
//!
//! **SUBSCRIBE** ([`parse_subscription`]), following IoT Edge's `SessionStateParser`:
//! - `devices/{d}/modules/{m}/inputs/#` (or `devices/{d}/modules/{m}/#`): module inputs;
//! - `devices/{d}/messages/devicebound/#`: cloud-to-device messages;
//! - `$iothub/twin/res/#` (exactly): twin responses;
//! - any filter starting `$iothub/twin/PATCH/properties/desired/`: desired-property patches;
//! - any filter starting `$iothub/methods/POST/`: direct-method requests.
//!
//! The variant says which service the filter turns on; delivering a given topic still goes
//! through ordinary MQTT filter matching. IoT Edge ignores other filters; Verge refuses them.
//!
//! Topics that name an identity carry it ([`TopicIdentity`]) so the session layer can check that
//! a client publishes and subscribes only as itself; the `$iothub` topics always concern the
//! connected client.

use verge_message::Identity;

/// Why a topic name or filter was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not one of the topics (or filters) of IoT Hub's MQTT dialect that Verge serves.
    #[error("not a topic Verge accepts")]
    NotAccepted,
    /// A device or module id segment is empty.
    #[error("the topic has an empty {0}")]
    EmptySegment(&'static str),
    /// A device or module id segment of a filter holds a wildcard (`+`, `#`).
    #[error("the topic filter has a wildcard in the {0}")]
    Wildcard(&'static str),
    /// A twin GET or method response without a `$rid`, or with an empty one.
    #[error("the topic has no $rid request id")]
    MissingRequestId,
    /// `$version` is not an integer.
    #[error("the topic's $version is not an integer")]
    InvalidVersion,
    /// A method response status that is not an integer.
    #[error("the method response status is not an integer")]
    InvalidStatus,
    /// `$rid` or `$version` given twice.
    #[error("the topic gives a parameter twice")]
    DuplicateParameter,
}

const DEVICE_ID: &str = "device id";
const MODULE_ID: &str = "module id";

/// The device, or module of a device, that a topic names (borrowed from the topic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TopicIdentity<'a> {
    /// The device id.
    pub device_id: &'a str,
    /// The module id, for a module.
    pub module_id: Option<&'a str>,
}

impl TopicIdentity<'_> {
    /// Whether this is `identity` (ids compare exactly, as IoT Hub's do).
    pub fn is(&self, identity: &Identity) -> bool {
        self.device_id == identity.device_id() && self.module_id == identity.module_id()
    }

    /// An owned [`Identity`].
    pub fn to_identity(&self) -> Identity {
        match self.module_id {
            Some(module) => Identity::module(self.device_id, module),
            None => Identity::device(self.device_id),
        }
    }
}

/// A topic a client may publish to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishTopic<'a> {
    /// `devices/{device_id}/messages/events/{bag}`.
    DeviceTelemetry {
        /// The device the topic names.
        device_id: &'a str,
        /// The property bag, undecoded; empty when there is none.
        bag: &'a str,
    },
    /// `devices/{device_id}/modules/{module_id}/messages/events/{bag}`.
    ModuleOutput {
        /// The device the topic names.
        device_id: &'a str,
        /// The module the topic names.
        module_id: &'a str,
        /// The property bag, undecoded; empty when there is none. The output name is its `$.on`.
        bag: &'a str,
    },
    /// `$iothub/twin/GET/?$rid={request_id}`.
    TwinGet {
        /// `$rid`, never empty.
        request_id: &'a str,
    },
    /// `$iothub/twin/PATCH/properties/reported/?$rid={request_id}[&$version={version}]`.
    TwinReportedPatch {
        /// `$rid`; empty when the client gave none.
        request_id: &'a str,
        /// `$version`, if given.
        version: Option<i64>,
    },
    /// `$iothub/methods/res/{status}/?$rid={request_id}`.
    MethodResponse {
        /// The method's status.
        status: i32,
        /// `$rid`, never empty.
        request_id: &'a str,
    },
}

impl<'a> PublishTopic<'a> {
    /// The identity the topic names (telemetry topics only).
    pub fn identity(&self) -> Option<TopicIdentity<'a>> {
        match *self {
            Self::DeviceTelemetry { device_id, .. } => Some(TopicIdentity {
                device_id,
                module_id: None,
            }),
            Self::ModuleOutput {
                device_id,
                module_id,
                ..
            } => Some(TopicIdentity {
                device_id,
                module_id: Some(module_id),
            }),
            _ => None,
        }
    }

    /// The property bag of a telemetry topic.
    pub fn bag(&self) -> Option<&'a str> {
        match *self {
            Self::DeviceTelemetry { bag, .. } | Self::ModuleOutput { bag, .. } => Some(bag),
            _ => None,
        }
    }
}

/// What a SUBSCRIBE topic filter turns on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription<'a> {
    /// `devices/{device_id}/modules/{module_id}/inputs/#`: messages to the module's inputs.
    ModuleInputs {
        /// The device the filter names.
        device_id: &'a str,
        /// The module the filter names.
        module_id: &'a str,
    },
    /// `devices/{device_id}/messages/devicebound/#`: cloud-to-device messages.
    CloudToDevice {
        /// The device the filter names.
        device_id: &'a str,
    },
    /// `$iothub/twin/res/#`: responses to twin requests.
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`: desired-property patches.
    DesiredPatches,
    /// `$iothub/methods/POST/#`: direct-method requests.
    MethodRequests,
}

impl<'a> Subscription<'a> {
    /// The identity the filter names (module inputs and cloud-to-device only).
    pub fn identity(&self) -> Option<TopicIdentity<'a>> {
        match *self {
            Self::ModuleInputs {
                device_id,
                module_id,
            } => Some(TopicIdentity {
                device_id,
                module_id: Some(module_id),
            }),
            Self::CloudToDevice { device_id } => Some(TopicIdentity {
                device_id,
                module_id: None,
            }),
            _ => None,
        }
    }
}

const EVENTS: &str = "messages/events";
const TWIN_GET: &str = "$iothub/twin/GET/";
const TWIN_PATCH_REPORTED: &str = "$iothub/twin/PATCH/properties/reported/";
const METHOD_RESPONSE: &str = "$iothub/methods/res/";

/// Split `text` at its first `/`: (segment, rest after the `/`).
#[inline]
fn segment(text: &str) -> Option<(&str, &str)> {
    text.split_once('/')
}

#[inline]
fn non_empty<'a>(id: &'a str, what: &'static str) -> Result<&'a str, TopicError> {
    if id.is_empty() {
        Err(TopicError::EmptySegment(what))
    } else {
        Ok(id)
    }
}

/// The bag of what follows `messages/events`: ``, `/`, `/{bag}`, `/{bag}/`.
fn events_tail(tail: &str) -> Result<&str, TopicError> {
    if tail.is_empty() {
        return Ok("");
    }
    let bag = tail.strip_prefix('/').ok_or(TopicError::NotAccepted)?;
    let bag = bag.strip_suffix('/').unwrap_or(bag);
    if bag.contains('/') {
        return Err(TopicError::NotAccepted);
    }
    Ok(bag)
}

/// Parse a PUBLISH topic name (see the module docs).
pub fn parse_publish(topic: &str) -> Result<PublishTopic<'_>, TopicError> {
    if let Some(rest) = topic.strip_prefix("devices/") {
        let (device_id, rest) = segment(rest).ok_or(TopicError::NotAccepted)?;
        if let Some(tail) = rest.strip_prefix(EVENTS) {
            let bag = events_tail(tail)?;
            let device_id = non_empty(device_id, DEVICE_ID)?;
            return Ok(PublishTopic::DeviceTelemetry { device_id, bag });
        }
        let rest = rest
            .strip_prefix("modules/")
            .ok_or(TopicError::NotAccepted)?;
        let (module_id, rest) = segment(rest).ok_or(TopicError::NotAccepted)?;
        let tail = rest.strip_prefix(EVENTS).ok_or(TopicError::NotAccepted)?;
        let bag = events_tail(tail)?;
        let device_id = non_empty(device_id, DEVICE_ID)?;
        let module_id = non_empty(module_id, MODULE_ID)?;
        return Ok(PublishTopic::ModuleOutput {
            device_id,
            module_id,
            bag,
        });
    }
    if let Some(rest) = topic.strip_prefix(TWIN_GET) {
        let params = twin_params(rest)?;
        let request_id = params.request_id.filter(|r| !r.is_empty());
        let request_id = request_id.ok_or(TopicError::MissingRequestId)?;
        return Ok(PublishTopic::TwinGet { request_id });
    }
    if let Some(rest) = topic.strip_prefix(TWIN_PATCH_REPORTED) {
        let params = twin_params(rest)?;
        return Ok(PublishTopic::TwinReportedPatch {
            request_id: params.request_id.unwrap_or_default(),
            version: params.version()?,
        });
    }
    if let Some(rest) = topic.strip_prefix(METHOD_RESPONSE) {
        // `{status}/?{params}`: the status is everything up to the last `/`, which must be
        // followed by `?` (IoT Edge's TwinAddressHelper).
        let (status, params) = match rest.strip_prefix('?') {
            Some(params) => ("", Some(params)),
            None => match rest.rsplit_once('/') {
                Some((status, tail)) => (status, tail.strip_prefix('?')),
                None => (rest, None),
            },
        };
        let status: i32 = status.parse().map_err(|_| TopicError::InvalidStatus)?;
        let params = parse_params(params.ok_or(TopicError::MissingRequestId)?)?;
        let request_id = params.request_id.filter(|r| !r.is_empty());
        let request_id = request_id.ok_or(TopicError::MissingRequestId)?;
        return Ok(PublishTopic::MethodResponse { status, request_id });
    }
    Err(TopicError::NotAccepted)
}

/// The `$rid` and `$version` of a `$iothub` topic, raw.
#[derive(Default)]
struct Params<'a> {
    request_id: Option<&'a str>,
    version: Option<&'a str>,
}

impl Params<'_> {
    fn version(&self) -> Result<Option<i64>, TopicError> {
        self.version
            .map(|v| v.parse().map_err(|_| TopicError::InvalidVersion))
            .transpose()
    }
}

/// What follows a twin request's fixed prefix: nothing, or `?{params}`.
fn twin_params(rest: &str) -> Result<Params<'_>, TopicError> {
    if rest.is_empty() {
        return Ok(Params::default());
    }
    // Anything else before the `?` is a sub-resource, which no twin request has.
    let params = rest.strip_prefix('?').ok_or(TopicError::NotAccepted)?;
    parse_params(params)
}

fn parse_params(params: &str) -> Result<Params<'_>, TopicError> {
    let mut out = Params::default();
    for item in params.split('&').filter(|i| !i.is_empty()) {
        let (name, value) = item.split_once('=').unwrap_or((item, ""));
        let slot = match name {
            "$rid" => &mut out.request_id,
            "$version" => &mut out.version,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(TopicError::DuplicateParameter);
        }
    }
    Ok(out)
}

/// Check a device or module id segment of a filter.
fn filter_id<'a>(id: &'a str, what: &'static str) -> Result<&'a str, TopicError> {
    if id.contains(['+', '#']) {
        return Err(TopicError::Wildcard(what));
    }
    non_empty(id, what)
}

/// Parse a SUBSCRIBE topic filter (see the module docs).
pub fn parse_subscription(filter: &str) -> Result<Subscription<'_>, TopicError> {
    if filter.starts_with("$iothub/methods/POST/") {
        return Ok(Subscription::MethodRequests);
    }
    if filter.starts_with("$iothub/twin/PATCH/properties/desired/") {
        return Ok(Subscription::DesiredPatches);
    }
    if filter == "$iothub/twin/res/#" {
        return Ok(Subscription::TwinResponses);
    }
    let rest = filter
        .strip_prefix("devices/")
        .ok_or(TopicError::NotAccepted)?;
    let (device_id, rest) = segment(rest).ok_or(TopicError::NotAccepted)?;
    if rest == "messages/devicebound/#" {
        let device_id = filter_id(device_id, DEVICE_ID)?;
        return Ok(Subscription::CloudToDevice { device_id });
    }
    let rest = rest
        .strip_prefix("modules/")
        .ok_or(TopicError::NotAccepted)?;
    let (module_id, rest) = segment(rest).ok_or(TopicError::NotAccepted)?;
    if rest == "inputs/#" || rest == "#" {
        let device_id = filter_id(device_id, DEVICE_ID)?;
        let module_id = filter_id(module_id, MODULE_ID)?;
        return Ok(Subscription::ModuleInputs {
            device_id,
            module_id,
        });
    }
    Err(TopicError::NotAccepted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PublishTopic::*;

    fn ok(topic: &str) -> PublishTopic<'_> {
        parse_publish(topic).unwrap_or_else(|e| panic!("{topic:?}: {e}"))
    }

    #[test]
    fn telemetry_tails() {
        for (topic, bag) in [
            ("devices/d/messages/events", ""),
            ("devices/d/messages/events/", ""),
            ("devices/d/messages/events//", ""),
            ("devices/d/messages/events/a=1&b", "a=1&b"),
            ("devices/d/messages/events/a=1&b/", "a=1&b"),
        ] {
            assert_eq!(
                ok(topic),
                DeviceTelemetry {
                    device_id: "d",
                    bag
                },
                "{topic}"
            );
        }
        assert_eq!(
            ok("devices/d/modules/$edgeAgent/messages/events/%24.on=o1"),
            ModuleOutput {
                device_id: "d",
                module_id: "$edgeAgent",
                bag: "%24.on=o1"
            }
        );
        for topic in [
            "devices/d/messages/events/a/b",
            "devices/d/messages/events/a=1//",
            "devices/d/messages/events///",
            "devices/d/messages/eventsX",
            "devices/d/messages/eve/a=1",
            "devices/d/messages",
            "devices/d",
            "devices/",
            "Devices/d/messages/events",
            "devices/d/Messages/events",
            "devices/d/modules/m/messages/events/a/b",
            "devices/d/modules/m/inputs/i",
            "devices/d/modules/m",
            "devices/d/messages/devicebound",
            "x/devices/d/messages/events",
            "",
            "/",
        ] {
            assert_eq!(
                parse_publish(topic),
                Err(TopicError::NotAccepted),
                "{topic}"
            );
        }
    }

    #[test]
    fn empty_ids_are_refused() {
        assert_eq!(
            parse_publish("devices//messages/events/"),
            Err(TopicError::EmptySegment(DEVICE_ID))
        );
        assert_eq!(
            parse_publish("devices//modules/m/messages/events"),
            Err(TopicError::EmptySegment(DEVICE_ID))
        );
        assert_eq!(
            parse_publish("devices/d/modules//messages/events"),
            Err(TopicError::EmptySegment(MODULE_ID))
        );
    }

    #[test]
    fn twin_and_method_topics() {
        assert_eq!(
            ok("$iothub/twin/GET/?$rid=6f2c8"),
            TwinGet {
                request_id: "6f2c8"
            }
        );
        assert_eq!(
            ok("$iothub/twin/GET/?x&$rid=a/b&y=z&"),
            TwinGet { request_id: "a/b" }
        );
        assert_eq!(
            ok("$iothub/twin/PATCH/properties/reported/?$rid=5de34"),
            TwinReportedPatch {
                request_id: "5de34",
                version: None
            }
        );
        assert_eq!(
            ok("$iothub/twin/PATCH/properties/reported/?$rid=5de34&$version=-1"),
            TwinReportedPatch {
                request_id: "5de34",
                version: Some(-1)
            }
        );
        assert_eq!(
            ok("$iothub/twin/PATCH/properties/reported/"),
            TwinReportedPatch {
                request_id: "",
                version: None
            }
        );
        // Not percent-decoded (IoT Edge's TwinAddressHelper keeps `$rid=错误` and `%20a`).
        assert_eq!(
            ok("$iothub/twin/PATCH/properties/reported/?$rid=错误"),
            TwinReportedPatch {
                request_id: "错误",
                version: None
            }
        );
        assert_eq!(
            parse_publish("$iothub/twin/PATCH/properties/reported/?$rid=1&$version=%20a"),
            Err(TopicError::InvalidVersion)
        );
        assert_eq!(
            ok("$iothub/methods/res/200/?$rid=1&$random&$version=2"),
            MethodResponse {
                status: 200,
                request_id: "1"
            }
        );
        assert_eq!(
            ok("$iothub/methods/res/-3/?$rid=1&=value&"),
            MethodResponse {
                status: -3,
                request_id: "1"
            }
        );
        let refused = [
            ("$iothub/twin/GET/", TopicError::MissingRequestId),
            ("$iothub/twin/GET/?$rid=", TopicError::MissingRequestId),
            ("$iothub/twin/GET/?$rid", TopicError::MissingRequestId),
            ("$iothub/twin/GET/sub/?$rid=1", TopicError::NotAccepted),
            ("$iothub/twin/GET?$rid=1", TopicError::NotAccepted),
            (
                "$iothub/twin/GET/?$rid=1&$rid=2",
                TopicError::DuplicateParameter,
            ),
            (
                "$iothub/twin/PATCH/properties/desired/?$rid=1",
                TopicError::NotAccepted,
            ),
            ("$iothub/twin/res/200/?$rid=1", TopicError::NotAccepted),
            ("$iothub/methods/POST/m/?$rid=1", TopicError::NotAccepted),
            ("$iothub/methods/res/200", TopicError::MissingRequestId),
            ("$iothub/methods/res/200/", TopicError::MissingRequestId),
            ("$iothub/methods/res/200/?x=1", TopicError::MissingRequestId),
            ("$iothub/methods/res/?$rid=1", TopicError::InvalidStatus),
            (
                "$iothub/methods/res/200/?$rid=1/x",
                TopicError::InvalidStatus,
            ),
            ("$iothub/methods/res//?$rid=1", TopicError::InvalidStatus),
            ("$iothub/methods/res/ok/?$rid=1", TopicError::InvalidStatus),
            ("$iothub/methods/res/2/0/?$rid=1", TopicError::InvalidStatus),
            (
                "$iothub/methods/res/99999999999/?$rid=1",
                TopicError::InvalidStatus,
            ),
            ("$iothub/twin", TopicError::NotAccepted),
            ("$iothub/", TopicError::NotAccepted),
        ];
        for (topic, error) in refused {
            assert_eq!(parse_publish(topic), Err(error), "{topic}");
        }
    }

    #[test]
    fn identities() {
        let d = Identity::device("d");
        let m = Identity::module("d", "m");
        let t = ok("devices/d/messages/events/");
        assert!(t.identity().unwrap().is(&d));
        assert!(!t.identity().unwrap().is(&m));
        let t = ok("devices/d/modules/m/messages/events/");
        assert!(t.identity().unwrap().is(&m));
        assert!(!t.identity().unwrap().is(&d));
        assert_eq!(t.identity().unwrap().to_identity(), m);
        assert!(!ok("devices/D/messages/events").identity().unwrap().is(&d));
        assert_eq!(ok("$iothub/twin/GET/?$rid=1").identity(), None);
        assert_eq!(ok("$iothub/twin/GET/?$rid=1").bag(), None);
    }

    #[test]
    fn subscriptions() {
        use Subscription::*;
        let cases = [
            (
                "devices/d/modules/m/inputs/#",
                ModuleInputs {
                    device_id: "d",
                    module_id: "m",
                },
            ),
            (
                "devices/d/modules/m/#",
                ModuleInputs {
                    device_id: "d",
                    module_id: "m",
                },
            ),
            (
                "devices/d/messages/devicebound/#",
                CloudToDevice { device_id: "d" },
            ),
            ("$iothub/twin/res/#", TwinResponses),
            ("$iothub/twin/PATCH/properties/desired/#", DesiredPatches),
            ("$iothub/methods/POST/#", MethodRequests),
            ("$iothub/methods/POST/+/#", MethodRequests),
        ];
        for (filter, expected) in cases {
            assert_eq!(parse_subscription(filter), Ok(expected), "{filter}");
        }
        let m = Identity::module("d", "m");
        assert!(
            parse_subscription("devices/d/modules/m/inputs/#")
                .unwrap()
                .identity()
                .unwrap()
                .is(&m)
        );
        assert_eq!(
            parse_subscription("$iothub/twin/res/#").unwrap().identity(),
            None
        );
        let refused = [
            ("#", TopicError::NotAccepted),
            ("devices/#", TopicError::NotAccepted),
            ("devices/d/messages/events/#", TopicError::NotAccepted),
            ("devices/d/messages/devicebound", TopicError::NotAccepted),
            ("devices/d/messages/devicebound/+", TopicError::NotAccepted),
            ("devices/d/modules/m/inputs/i/#", TopicError::NotAccepted),
            ("devices/d/modules/m/inputs", TopicError::NotAccepted),
            ("devices/d/modules/m", TopicError::NotAccepted),
            ("$iothub/twin/res/200/#", TopicError::NotAccepted),
            ("$iothub/twin/res/+", TopicError::NotAccepted),
            ("$iothub/#", TopicError::NotAccepted),
            ("$iothub/methods/POST", TopicError::NotAccepted),
            (
                "devices/+/messages/devicebound/#",
                TopicError::Wildcard(DEVICE_ID),
            ),
            (
                "devices/#/messages/devicebound/#",
                TopicError::Wildcard(DEVICE_ID),
            ),
            (
                "devices/d/modules/+/inputs/#",
                TopicError::Wildcard(MODULE_ID),
            ),
            (
                "devices//messages/devicebound/#",
                TopicError::EmptySegment(DEVICE_ID),
            ),
            (
                "devices/d/modules//inputs/#",
                TopicError::EmptySegment(MODULE_ID),
            ),
            ("", TopicError::NotAccepted),
        ];
        for (filter, error) in refused {
            assert_eq!(parse_subscription(filter), Err(error), "{filter}");
        }
    }

    #[test]
    fn very_long_topics() {
        let id = "d".repeat(70_000);
        let bag = "k=v&".repeat(20_000) + "k=v";
        let topic = format!("devices/{id}/modules/{id}/messages/events/{bag}/");
        assert_eq!(
            ok(&topic),
            ModuleOutput {
                device_id: &id,
                module_id: &id,
                bag: &bag
            }
        );
        let topic = format!("devices/{id}/messages/events/{}", "/".repeat(70_000));
        assert_eq!(parse_publish(&topic), Err(TopicError::NotAccepted));
        let rid = "r".repeat(70_000);
        assert_eq!(
            ok(&format!("$iothub/twin/GET/?$rid={rid}")),
            TwinGet { request_id: &rid }
        );
        let filter = format!("devices/{id}/modules/{id}/inputs/#");
        assert!(parse_subscription(&filter).is_ok());
    }
}
