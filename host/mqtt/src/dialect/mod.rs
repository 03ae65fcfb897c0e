//! IoT Hub's MQTT dialect, as IoT Edge's hub speaks it (reference: `iotedge.md` §4).
//!
//! Pure code, no I/O:
//! - [`username`]: the CONNECT username → hub host, [`Identity`](verge_message::Identity),
//!   api-version, client type, model id;
//! - [`topic`]: PUBLISH topic names and SUBSCRIBE filters clients use → typed enums that borrow
//!   from the topic;
//! - [`propbag`]: property bags ↔ a [`Message`](verge_message::Message)'s application and system
//!   properties;
//! - [`outbound`]: topics the hub publishes to clients, written into a reused `String`;
//! - [`wire`]: the one table of on-the-wire system property names (`$.mid`, `$.ct`, ...);
//! - [`escape`]: percent-encoding as IoT Edge does it;
//! - [`template`]: IoT Edge's configurable topic templates (the fixed topics above are what its
//!   production templates accept).

pub mod escape;
pub mod outbound;
pub mod propbag;
pub mod scoped;
pub mod template;
pub mod topic;
pub mod username;
pub mod wire;

pub use outbound::{
    MAX_TOPIC_BYTES, cloud_to_device_topic, desired_patch_topic, method_request_topic,
    module_input_topic, twin_response_topic,
};
pub use propbag::{BagError, decode_properties, encode_properties};
pub use template::{TemplateConverter, TemplateError, TopicTemplate};
pub use topic::{
    PublishTopic, Subscription, TopicError, TopicIdentity, parse_publish, parse_subscription,
};
pub use username::{ClientInfo, UsernameError, parse_username};

#[cfg(test)]
mod robustness {
    //! No parser panics on arbitrary input: a loop over randomly mutated valid inputs.

    use super::*;
    use verge_message::{Message, PropertyMap};

    const SEEDS: &[&str] = &[
        "devices/d1/messages/events/%24.mid=m1&%24.ct=application%2Fjson&k=v/",
        "devices/d1/modules/m1/messages/events/%24.on=out&a&b=",
        "$iothub/twin/GET/?$rid=6f2c8",
        "$iothub/twin/PATCH/properties/reported/?$rid=5de34&$version=1",
        "$iothub/methods/res/200/?$rid=1&$random",
        "devices/d/modules/m/inputs/#",
        "devices/d/messages/devicebound/#",
        "$iothub/methods/POST/#",
        "iotHub1/device1/module1/?api-version=2010-01-01&DeviceClientType=c%2F1&model-id=x",
        "iotHub1/device1/module1/api-version=2017-06-30/DeviceClientType=Microsoft.Azure.Devices.Client/1.5.1-preview-003",
        "a/{b}/c/{params}/",
        "%E9%94%99=%C3%A9&%FF&%4",
    ];

    const PIECES: &[&str] = &[
        "/",
        "?",
        "&",
        "=",
        "%",
        "%2",
        "%C3",
        "%FF",
        "%24",
        "$",
        "#",
        "+",
        "é",
        "错",
        "{",
        "}",
        "{*x}",
        "{params}",
        "*",
        "devices/",
        "modules/",
        "messages/events",
        "$iothub/",
        "$rid=",
        "$version=",
        "api-version=",
        "\0",
        " ",
        "//",
        "&&",
        "==",
    ];

    use verge_tests::Rng;

    /// A random char boundary of `s`.
    fn boundary(rng: &mut Rng, s: &str) -> usize {
        let mut at = rng.below(s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        at
    }

    fn mutate(rng: &mut Rng, input: &str) -> String {
        let mut s = input.to_owned();
        for _ in 0..=rng.below(4) {
            let a = boundary(rng, &s);
            let b = boundary(rng, &s);
            let (lo, hi) = (a.min(b), a.max(b));
            let piece = PIECES[rng.below(PIECES.len())];
            match rng.below(5) {
                0 => s.insert_str(a, piece),
                1 => s.replace_range(lo..hi, ""),
                2 => s.replace_range(lo..hi, piece),
                3 => {
                    let copy = s[lo..hi].to_owned();
                    s.insert_str(hi, &copy);
                }
                _ => s.truncate(a),
            }
        }
        s
    }

    fn exercise(input: &str) {
        if let Ok(
            PublishTopic::DeviceTelemetry { bag, .. } | PublishTopic::ModuleOutput { bag, .. },
        ) = parse_publish(input)
        {
            let mut m = Message::new("");
            let _ = decode_properties(bag, &mut m);
        }
        let _ = parse_subscription(input);
        let _ = parse_username(input);
        let mut m = Message::new("");
        if decode_properties(input, &mut m).is_ok() {
            let mut out = String::new();
            encode_properties(&m, &mut out);
            assert!(
                decode_properties(&out, &mut Message::new("")).is_ok(),
                "{input:?} → {out:?}"
            );
        }
        let mut map = PropertyMap::new();
        let _ = propbag::decode_raw(input, &mut map);
        let mut escaped = String::new();
        escape::escape_into(input, &mut escaped);
        assert_eq!(escape::unescape(&escaped), input);
        let _ = escape::unescape(input);
        if let Ok(t) = TopicTemplate::new(input) {
            for seed in SEEDS {
                let _ = t.matches(seed);
            }
            let _ = t.matches(input);
            let _ = t.bind(&map, &mut String::new());
        }
        let mut out = String::new();
        module_input_topic(&mut out, input, input, input, &m);
        cloud_to_device_topic(&mut out, input, &m);
        method_request_topic(&mut out, input, input);
    }

    #[test]
    fn no_panics_on_mutated_inputs() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for seed in SEEDS {
            exercise(seed);
        }
        for _ in 0..20_000 {
            let seed = SEEDS[rng.below(SEEDS.len())];
            exercise(&mutate(&mut rng, seed));
        }
    }
}
