//! Property bags: the `k1=v1&k2=v2` last topic segment that carries a message's properties.
//!
//! **Decoding** (a client's PUBLISH, reference `iotedge.md` §4.4) follows IoT Edge's
//! `UrlEncodedDictionarySerializer`:
//! - the bag is split on `&`, each property on its first `=`; names and values are then
//!   percent-decoded leniently ([`super::escape`]);
//! - `k` (no `=`) is present with a null value; `k=` has the value `""` (the reference's rule; IoT
//!   Edge's C# tokenizer makes both null, Verge keeps the difference so that encode → decode is
//!   exact);
//! - an empty name (`=v`, `&&`, a leading or trailing `&`) and a second `=` in one property
//!   (`a=b=c`) are errors, as in IoT Edge; so is a `/` (IoT Edge stops reading there; the topic
//!   parser never hands one over);
//! - an empty or blank bag holds no properties;
//! - a later property replaces an earlier one of the same name, keeping its place;
//! - wire names ([`super::wire`]) become system properties, every other name an application
//!   property (including `$.cdid`/`$.cmid`: a client cannot set the hub's stamps).
//!
//! **Encoding** (a message delivered to a client on a module input or as cloud-to-device)
//! follows IoT Edge's `ProtocolGatewayMessageConverter.FromMessage`: the application properties
//! in order, then the system properties that have an outbound wire name, in the message's order.
//! When an application property has the name of such a wire property, the system value replaces
//! it in its place and is not repeated. Names and values are escaped like
//! `Uri.EscapeDataString`; a null value is written as the bare name.
//!
//! Decoding allocates only what the [`PropertyMap`] entries need (plus one scratch string when a
//! name or value holds an escape); encoding appends to a caller's reused `String`.

use verge_message::{Message, PropertyMap, Text};

use super::escape::{escape_into, unescape_into};
use super::wire::{self, WIRE_NAMES};

/// A property bag that IoT Edge would refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BagError {
    /// A property with an empty name: `=v`, `&&`, a leading or trailing `&`.
    #[error("property bag has an empty property name at byte {at}")]
    EmptyName {
        /// Byte offset in the bag.
        at: usize,
    },
    /// A second `=` in one property (`a=b=c`).
    #[error("property bag has a second '=' in one property at byte {at}")]
    ExtraEquals {
        /// Byte offset in the bag.
        at: usize,
    },
    /// A `/` in the bag.
    #[error("property bag contains '/' at byte {at}")]
    Slash {
        /// Byte offset in the bag.
        at: usize,
    },
}

/// One property of a bag, still percent-encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawPair<'a> {
    /// The name, percent-encoded.
    pub name: &'a str,
    /// The value, percent-encoded; `None` when the property has no `=`.
    pub value: Option<&'a str>,
}

/// The properties of a bag, in order, without decoding (see [`pairs`]).
#[derive(Clone, Debug)]
pub struct Pairs<'a> {
    bag: &'a str,
    pos: usize,
    done: bool,
}

/// Iterate over the properties of `bag`, still percent-encoded. The iteration ends after the
/// first error.
pub fn pairs(bag: &str) -> Pairs<'_> {
    Pairs {
        bag,
        pos: 0,
        done: bag.trim().is_empty(),
    }
}

/// One property and whether its name and value hold a `%`.
#[derive(Clone, Copy)]
struct Item<'a> {
    pair: RawPair<'a>,
    name_escaped: bool,
    value_escaped: bool,
}

impl<'a> Pairs<'a> {
    /// The next property, scanned in one pass over its bytes.
    fn next_item(&mut self) -> Option<Result<Item<'a>, BagError>> {
        if self.done {
            return None;
        }
        let start = self.pos;
        let bytes = self.bag.as_bytes();
        let mut end = bytes.len();
        let mut equals = None;
        let mut fault = None;
        let (mut name_escaped, mut value_escaped) = (false, false);
        for (i, &b) in bytes.iter().enumerate().skip(start) {
            match b {
                b'&' => {
                    end = i;
                    break;
                }
                b'=' if equals.is_none() => equals = Some(i),
                b'=' => {
                    fault.get_or_insert(BagError::ExtraEquals { at: i });
                }
                b'/' => {
                    fault.get_or_insert(BagError::Slash { at: i });
                }
                b'%' if equals.is_none() => name_escaped = true,
                b'%' => value_escaped = true,
                _ => {}
            }
        }
        if end == bytes.len() {
            self.done = true;
        } else {
            self.pos = end + 1;
        }
        // `start`, `end` and `equals` sit at ASCII bytes or the ends: char boundaries.
        let name_end = equals.unwrap_or(end);
        let fault = if name_end == start {
            Some(BagError::EmptyName { at: start })
        } else {
            fault
        };
        if let Some(fault) = fault {
            self.done = true;
            return Some(Err(fault));
        }
        let name = self.bag.get(start..name_end).unwrap_or_default();
        let value = equals.map(|e| self.bag.get(e + 1..end).unwrap_or_default());
        Some(Ok(Item {
            pair: RawPair { name, value },
            name_escaped,
            value_escaped,
        }))
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Result<RawPair<'a>, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().map(|item| item.map(|i| i.pair))
    }
}

/// Decode `item` with `scratch` (cleared) as the buffer for escaped parts: (name, value).
fn decoded<'s>(item: &Item<'s>, scratch: &'s mut String) -> (&'s str, Option<&'s str>) {
    let Item {
        pair,
        name_escaped,
        value_escaped,
    } = *item;
    scratch.clear();
    if name_escaped {
        unescape_into(pair.name, scratch);
    }
    let split = scratch.len();
    if let (Some(value), true) = (pair.value, value_escaped) {
        unescape_into(value, scratch);
    }
    let scratch: &'s str = scratch;
    let name = if name_escaped {
        scratch.get(..split).unwrap_or_default()
    } else {
        pair.name
    };
    let value = pair.value.map(|v| {
        if value_escaped {
            scratch.get(split..).unwrap_or_default()
        } else {
            v
        }
    });
    (name, value)
}

/// The system property of a still-encoded name, when that needs no decoding: `$.mid` or, as
/// clients send it, `%24.mid`.
#[inline]
fn system_name_fast(item: &Item<'_>) -> Option<Option<&'static str>> {
    if !item.name_escaped {
        return Some(wire::inbound_system_name(item.pair.name));
    }
    let rest = item.pair.name.strip_prefix("%24")?;
    if rest.contains('%') {
        return None;
    }
    Some(wire::inbound_system_name_after_dollar(rest))
}

/// Decode `bag` into `message`'s application and system properties (see the module docs).
///
/// On error, `message` may already hold the properties before the faulty one; the caller
/// drops the message.
pub fn decode_properties(bag: &str, message: &mut Message) -> Result<(), BagError> {
    let mut scratch = String::new();
    let mut items = pairs(bag);
    while let Some(item) = items.next_item() {
        let item = item?;
        let (system, value) = match system_name_fast(&item) {
            Some(Some(system)) => {
                // A wire name: only the value may need decoding.
                let value = match item.pair.value {
                    Some(v) if item.value_escaped => {
                        scratch.clear();
                        unescape_into(v, &mut scratch);
                        Some(scratch.as_str())
                    }
                    other => other,
                };
                (Some(system), value)
            }
            Some(None) if !item.name_escaped && !item.value_escaped => (None, item.pair.value),
            _ => {
                let (name, value) = decoded(&item, &mut scratch);
                match wire::inbound_system_name(name) {
                    Some(system) => (Some(system), value),
                    None => {
                        message.properties_mut().set(name, value);
                        continue;
                    }
                }
            }
        };
        match (system, value) {
            (Some(system), Some(value)) => message
                .system_mut()
                .insert_text(Text::from_static(system), Text::from(value)),
            (Some(system), None) => message.system_mut().set(system, None),
            (None, value) => message.properties_mut().set(item.pair.name, value),
        }
    }
    Ok(())
}

/// Decode `bag` into `map` with the names as they are (no wire-name mapping), as IoT Edge's
/// topic templates do with `{params}`.
pub fn decode_raw(bag: &str, map: &mut PropertyMap) -> Result<(), BagError> {
    let mut scratch = String::new();
    let mut items = pairs(bag);
    while let Some(item) = items.next_item() {
        let (name, value) = decoded(&item?, &mut scratch);
        map.set(name, value);
    }
    Ok(())
}

/// Append `name[=value]` to `out`, escaped, with a `&` before it unless `first`.
#[inline]
fn write_pair(name: &str, value: Option<&str>, first: &mut bool, out: &mut String) {
    if !*first {
        out.push('&');
    }
    *first = false;
    escape_into(name, out);
    if let Some(value) = value {
        out.push('=');
        escape_into(value, out);
    }
}

/// Append the bag of `pairs` (names and values escaped, a null value as the bare name) to `out`.
/// Returns whether anything was written.
pub fn encode_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    out: &mut String,
) -> bool {
    let mut first = true;
    for (name, value) in pairs {
        write_pair(name, value, &mut first, out);
    }
    !first
}

/// The properties of `message` as delivered to a client, in wire order and with wire names,
/// not yet escaped (see the module docs).
pub fn outbound_pairs(message: &Message) -> impl Iterator<Item = (&str, Option<&str>)> {
    let app = message.properties();
    let sys = message.system();
    let application = app.iter().map(move |(name, value)| {
        // An application property named like an outbound wire property takes the system value.
        let value = WIRE_NAMES
            .iter()
            .find(|w| w.outbound && w.wire == name)
            .and_then(|w| sys.lookup(w.system))
            .unwrap_or(value);
        (name, value)
    });
    let system = sys.iter().filter_map(move |(name, value)| {
        let wire = wire::outbound_wire_name(name)?;
        // Already written in the application property's place.
        let written = app.iter().any(|(n, _)| n == wire);
        (!written).then_some((wire, value))
    });
    application.chain(system)
}

/// Append the bag of `message`'s properties, as delivered to a client, to `out` (see the module
/// docs). Returns whether anything was written.
pub fn encode_properties(message: &Message, out: &mut String) -> bool {
    encode_pairs(outbound_pairs(message), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use verge_message::system;

    fn decode(bag: &str) -> Result<Message, BagError> {
        let mut m = Message::new("");
        decode_properties(bag, &mut m).map(|()| m)
    }

    fn encode(m: &Message) -> String {
        let mut out = String::new();
        encode_properties(m, &mut out);
        out
    }

    fn raw(bag: &str) -> Vec<Result<RawPair<'_>, BagError>> {
        pairs(bag).collect()
    }

    #[test]
    fn splits_names_and_values() {
        let p = |name, value| Ok(RawPair { name, value });
        assert_eq!(
            raw("a=1&b&c="),
            [p("a", Some("1")), p("b", None), p("c", Some(""))]
        );
        assert_eq!(raw(""), []);
        assert_eq!(raw("  "), []);
        assert_eq!(raw("k"), [p("k", None)]);
    }

    #[test]
    fn malformed_bags_are_errors() {
        assert_eq!(decode("=v").err(), Some(BagError::EmptyName { at: 0 }));
        assert_eq!(
            decode("a=1&&b=2").err(),
            Some(BagError::EmptyName { at: 4 })
        );
        assert_eq!(decode("&a=1").err(), Some(BagError::EmptyName { at: 0 }));
        assert_eq!(decode("a=1&").err(), Some(BagError::EmptyName { at: 4 }));
        assert_eq!(decode("a=1&=2").err(), Some(BagError::EmptyName { at: 4 }));
        assert_eq!(decode("a=b=c").err(), Some(BagError::ExtraEquals { at: 3 }));
        assert_eq!(
            decode("x&a=b=c").err(),
            Some(BagError::ExtraEquals { at: 5 })
        );
        assert_eq!(decode("a=1/b").err(), Some(BagError::Slash { at: 3 }));
        // The iteration stops at the first error.
        assert_eq!(pairs("&a&&b").count(), 1);
    }

    #[test]
    fn lenient_escapes_and_utf8() {
        let m = decode("k%=%4&n%zz=%FF%41&%E9%94%99=%C3%A9").unwrap();
        assert_eq!(m.properties().lookup("k%"), Some(Some("%4")));
        assert_eq!(m.properties().get("n%zz"), Some("%FFA"));
        assert_eq!(m.properties().get("错"), Some("é"));
        let m = decode("%24.mid=%E9%94%99%E8%AF%AF").unwrap();
        assert_eq!(m.system().get(system::MESSAGE_ID), Some("错误"));
        // Raw UTF-8 in a bag is kept.
        let m = decode("naïve=café").unwrap();
        assert_eq!(m.properties().get("naïve"), Some("café"));
    }

    #[test]
    fn wire_names_become_system_properties() {
        let m = decode("%24.mid=m1&$.cid=c1&%24.on=out&%24.cdid=spoof&Foo=Bar&%24.ct").unwrap();
        assert_eq!(m.system().get(system::MESSAGE_ID), Some("m1"));
        assert_eq!(m.system().get(system::CORRELATION_ID), Some("c1"));
        assert_eq!(m.system().get(system::OUTPUT_NAME), Some("out"));
        assert_eq!(m.system().lookup(system::CONTENT_TYPE), Some(None));
        assert_eq!(m.system().get(system::CONNECTION_DEVICE_ID), None);
        assert_eq!(m.properties().get("$.cdid"), Some("spoof"));
        assert_eq!(m.properties().get("Foo"), Some("Bar"));
        assert_eq!(m.properties().len(), 2);
        // Case matters for wire names.
        let m = decode("%24.MID=x").unwrap();
        assert_eq!(m.properties().get("$.MID"), Some("x"));
        assert!(m.system().is_empty());
    }

    #[test]
    fn later_property_replaces_earlier() {
        let m = decode("a=1&b=2&A=3&%24.mid=x&%24.mid=y").unwrap();
        let app: Vec<_> = m.properties().iter().collect();
        assert_eq!(app, [("a", Some("3")), ("b", Some("2"))]);
        assert_eq!(m.system().get(system::MESSAGE_ID), Some("y"));
    }

    #[test]
    fn every_outbound_system_property_round_trips() {
        let mut m = Message::new("");
        let mut expected_wire = Vec::new();
        for (i, w) in WIRE_NAMES.iter().enumerate() {
            let value = format!("v{i} /&=?%é");
            m.system_mut().insert(w.system, &value);
            if w.outbound {
                expected_wire.push((w.wire, value));
            }
        }
        let bag = encode(&m);
        // Only outbound wire names are on the wire, in the message's order.
        let on_wire: Vec<(String, String)> = pairs(&bag)
            .map(|p| {
                let p = p.unwrap();
                (
                    super::super::escape::unescape(p.name).into_owned(),
                    super::super::escape::unescape(p.value.unwrap()).into_owned(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = expected_wire
            .iter()
            .map(|(w, v)| ((*w).to_owned(), v.clone()))
            .collect();
        assert_eq!(on_wire, expected);
        // Decoding gives every property that is both ways back as the same system property.
        let back = decode(&bag).unwrap();
        for w in WIRE_NAMES.iter().filter(|w| w.outbound) {
            let sent = m.system().get(w.system);
            if w.inbound {
                assert_eq!(back.system().get(w.system), sent, "{w:?}");
            } else {
                // $.cdid/$.cmid come back as application properties.
                assert_eq!(back.properties().get(w.wire), sent, "{w:?}");
            }
        }
    }

    #[test]
    fn every_inbound_system_property_round_trips() {
        for w in WIRE_NAMES.iter().filter(|w| w.inbound) {
            let mut bag = String::new();
            encode_pairs(
                [(w.wire, Some("a b/c")), ("app", None), ("e", Some(""))],
                &mut bag,
            );
            let m = decode(&bag).unwrap();
            assert_eq!(m.system().get(w.system), Some("a b/c"), "{w:?} {bag}");
            assert_eq!(m.properties().lookup("app"), Some(None));
            assert_eq!(m.properties().lookup("e"), Some(Some("")));
        }
    }

    #[test]
    fn application_properties_round_trip() {
        let m = Message::new("")
            .with_property("temp erature", "21.5")
            .with_property("ünïcode", "値")
            .with_property("empty", "")
            .with_property("q", "a=b&c");
        let mut m2 = m.clone();
        m2.properties_mut().set("null", None);
        let bag = encode(&m2);
        assert_eq!(
            bag,
            "temp%20erature=21.5&%C3%BCn%C3%AFcode=%E5%80%A4&empty=&q=a%3Db%26c&null"
        );
        assert_eq!(decode(&bag).unwrap().properties(), m2.properties());
    }

    #[test]
    fn system_value_replaces_application_property_in_place() {
        let m = Message::new("")
            .with_property("a", "1")
            .with_property("$.cdid", "wrong")
            .with_property("$.on", "kept")
            .with_system(system::CONTENT_TYPE, "application/json")
            .with_system(system::CONNECTION_DEVICE_ID, "dev")
            .with_system(system::OUTPUT_NAME, "never")
            .with_system(system::INPUT_NAME, "never");
        assert_eq!(
            encode(&m),
            "a=1&%24.cdid=dev&%24.on=kept&%24.ct=application%2Fjson"
        );
        let empty = Message::new("");
        let mut out = String::from("x");
        assert!(!encode_properties(&empty, &mut out));
        assert_eq!(out, "x");
    }
}
