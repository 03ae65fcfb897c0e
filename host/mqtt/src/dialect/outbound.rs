//! Topics the hub publishes to clients (reference `iotedge.md` §4.3; IoT Edge's outbound
//! templates in `appsettings_hub.json` and `TwinAddressHelper`).
//!
//! Every builder replaces the content of a caller's `String`, so that one buffer serves every
//! delivery of a session. Ids, input and method names, request ids and versions are written as
//! they are (IoT Edge does not escape them); only the property bag is percent-encoded
//! ([`super::propbag::encode_properties`]). As in IoT Edge, a message topic gets `/{bag}` only
//! when the message has properties to send: `devices/d/messages/devicebound` without, never a
//! trailing `/`.
//!
//! MQTT caps a topic name at [`MAX_TOPIC_BYTES`]. The fixed parts are short, but a message's
//! properties can make its topic longer than that; every builder therefore returns whether the
//! topic it wrote fits. A topic that does not fit must not be sent (the length would not fit the
//! PUBLISH header): such a message cannot be delivered over MQTT with its properties.

use std::fmt::Write as _;

use verge_message::Message;

use super::propbag::encode_properties;

/// The longest topic name MQTT can carry (its length is a 16-bit field).
pub const MAX_TOPIC_BYTES: usize = u16::MAX as usize;

#[inline]
fn fits(out: &str) -> bool {
    out.len() <= MAX_TOPIC_BYTES
}

/// Append `/{bag}` of `message` to `out`, or nothing when there is nothing to send.
fn append_bag(message: &Message, out: &mut String) {
    out.push('/');
    if !encode_properties(message, out) {
        out.pop();
    }
}

/// `devices/{device_id}/modules/{module_id}/inputs/{input}[/{bag}]`: a message delivered to a
/// module's input.
/// Returns whether the topic fits in [`MAX_TOPIC_BYTES`].
pub fn module_input_topic(
    out: &mut String,
    device_id: &str,
    module_id: &str,
    input: &str,
    message: &Message,
) -> bool {
    out.clear();
    out.push_str("devices/");
    out.push_str(device_id);
    out.push_str("/modules/");
    out.push_str(module_id);
    out.push_str("/inputs/");
    out.push_str(input);
    append_bag(message, out);
    fits(out)
}

/// `devices/{device_id}/messages/devicebound[/{bag}]`: a cloud-to-device message.
/// Returns whether the topic fits in [`MAX_TOPIC_BYTES`].
pub fn cloud_to_device_topic(out: &mut String, device_id: &str, message: &Message) -> bool {
    out.clear();
    out.push_str("devices/");
    out.push_str(device_id);
    out.push_str("/messages/devicebound");
    append_bag(message, out);
    fits(out)
}

/// `$iothub/twin/res/{status}/?$rid={request_id}[&$version={version}]`: the response to a twin
/// request (200 for GET, 204 for a reported patch, with the new reported version).
/// Returns whether the topic fits in [`MAX_TOPIC_BYTES`].
pub fn twin_response_topic(
    out: &mut String,
    status: u16,
    request_id: &str,
    version: Option<i64>,
) -> bool {
    out.clear();
    let _ = write!(out, "$iothub/twin/res/{status}/?$rid={request_id}");
    if let Some(version) = version {
        let _ = write!(out, "&$version={version}");
    }
    fits(out)
}

/// `$iothub/twin/PATCH/properties/desired/?$version={version}`: a desired-property patch.
/// Returns whether the topic fits in [`MAX_TOPIC_BYTES`].
pub fn desired_patch_topic(out: &mut String, version: i64) -> bool {
    out.clear();
    let _ = write!(
        out,
        "$iothub/twin/PATCH/properties/desired/?$version={version}"
    );
    fits(out)
}

/// `$iothub/methods/POST/{method}/?$rid={request_id}`: a direct-method request.
/// Returns whether the topic fits in [`MAX_TOPIC_BYTES`].
pub fn method_request_topic(out: &mut String, method: &str, request_id: &str) -> bool {
    out.clear();
    out.push_str("$iothub/methods/POST/");
    out.push_str(method);
    out.push_str("/?$rid=");
    out.push_str(request_id);
    fits(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::topic::{PublishTopic, parse_publish};
    use verge_message::system;

    #[test]
    fn message_topics() {
        let mut out = String::from("stale content");
        let m = Message::new("")
            .with_system(system::CONNECTION_DEVICE_ID, "TestEdgeDevice")
            .with_system(system::CONNECTION_MODULE_ID, "SenderModule");
        module_input_topic(&mut out, "TestEdgeDevice", "TestModule", "TestInput", &m);
        // The example of IoT Edge's doc/edgehub-api.md.
        assert_eq!(
            out,
            "devices/TestEdgeDevice/modules/TestModule/inputs/TestInput/\
             %24.cdid=TestEdgeDevice&%24.cmid=SenderModule"
        );
        module_input_topic(&mut out, "d", "m", "i", &Message::new(""));
        assert_eq!(out, "devices/d/modules/m/inputs/i");
        cloud_to_device_topic(&mut out, "d", &Message::new("").with_property("a b", "c"));
        assert_eq!(out, "devices/d/messages/devicebound/a%20b=c");
        cloud_to_device_topic(&mut out, "d", &Message::new(""));
        assert_eq!(out, "devices/d/messages/devicebound");
    }

    #[test]
    fn service_topics() {
        let mut out = String::new();
        twin_response_topic(&mut out, 200, "6f2c8", None);
        assert_eq!(out, "$iothub/twin/res/200/?$rid=6f2c8");
        twin_response_topic(&mut out, 204, "5de34", Some(7));
        assert_eq!(out, "$iothub/twin/res/204/?$rid=5de34&$version=7");
        desired_patch_topic(&mut out, 42);
        assert_eq!(out, "$iothub/twin/PATCH/properties/desired/?$version=42");
        // TwinAddressHelperTests.TwinFormatDirectRequestTopic.
        method_request_topic(&mut out, "test", "123");
        assert_eq!(out, "$iothub/methods/POST/test/?$rid=123");
    }

    #[test]
    fn topics_too_long_for_mqtt_are_reported() {
        let mut out = String::new();
        let fat = Message::new("").with_property("k", &"v".repeat(MAX_TOPIC_BYTES));
        assert!(!module_input_topic(&mut out, "d", "m", "i", &fat));
        assert!(!cloud_to_device_topic(&mut out, "d", &fat));
        assert!(out.len() > MAX_TOPIC_BYTES);
        let prefix = "devices/d/messages/devicebound/k=".len();
        let just = Message::new("").with_property("k", &"v".repeat(MAX_TOPIC_BYTES - prefix));
        assert!(cloud_to_device_topic(&mut out, "d", &just));
        assert_eq!(out.len(), MAX_TOPIC_BYTES);
        let rid = "r".repeat(MAX_TOPIC_BYTES);
        assert!(!twin_response_topic(&mut out, 200, &rid, None));
        assert!(!method_request_topic(&mut out, "m", &rid));
        assert!(desired_patch_topic(&mut out, i64::MIN));
    }

    #[test]
    fn reported_patch_response_matches_the_request() {
        let request = "$iothub/twin/PATCH/properties/reported/?$rid=r1";
        let Ok(PublishTopic::TwinReportedPatch { request_id, .. }) = parse_publish(request) else {
            panic!("{request}");
        };
        let mut out = String::new();
        twin_response_topic(&mut out, 204, request_id, Some(3));
        assert_eq!(out, "$iothub/twin/res/204/?$rid=r1&$version=3");
    }
}
