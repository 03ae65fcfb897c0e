//! The one table of IoT Hub's on-the-wire system property names.
//!
//! IoT Edge's hub (`SystemProperties.cs`, reference `iotedge.md` §4.4, and the tables in the
//! conformance vectors `mqtt_topics.json` → `reference`) maps property-bag keys to system
//! properties in two directions, and the two maps differ:
//!
//! - inbound (a client's PUBLISH): `$.on` becomes `outputName`, `$.ifid` the interface id; a
//!   client cannot set `$.cdid`/`$.cmid` (those keys stay application properties, as in IoT Edge);
//! - outbound (a delivery to a client): `connectionDeviceId`/`connectionModuleId` go out as
//!   `$.cdid`/`$.cmid`; `outputName` and the interface id are never sent.
//!
//! Wire names are matched exactly (ordinal, case-sensitive), as IoT Edge's dictionaries do.
//! System property names are Verge's constants ([`verge_message::system`]); IoT Edge calls the
//! correlation id `cid` internally, Verge calls it [`system::CORRELATION_ID`].
//!
//! Not in the table, on purpose: IoT Edge's nested-edge internals `rpSenderDeviceId` /
//! `rpSenderModuleId` (Verge stamps the original sender into `connectionDeviceId` itself), the
//! Python SDK's `iothub-ack` (IoT Edge reads `ack`), and `mqtt-retain`/`mqtt-dup`, which the
//! session layer sets from PUBLISH flags, not from the bag.

use verge_message::system;

/// One wire name and the system property it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireName {
    /// The key in the property bag (before percent-encoding).
    pub wire: &'static str,
    /// The system property (a [`verge_message::system`] constant).
    pub system: &'static str,
    /// Read from clients' PUBLISH bags.
    pub inbound: bool,
    /// Written into bags of messages delivered to clients.
    pub outbound: bool,
}

const fn both(wire: &'static str, system: &'static str) -> WireName {
    WireName {
        wire,
        system,
        inbound: true,
        outbound: true,
    }
}

const fn inbound_only(wire: &'static str, system: &'static str) -> WireName {
    WireName {
        wire,
        system,
        inbound: true,
        outbound: false,
    }
}

const fn outbound_only(wire: &'static str, system: &'static str) -> WireName {
    WireName {
        wire,
        system,
        inbound: false,
        outbound: true,
    }
}

/// The table, in IoT Edge's order.
pub const WIRE_NAMES: &[WireName] = &[
    both("$.exp", system::ABSOLUTE_EXPIRY_TIME),
    both("$.cid", system::CORRELATION_ID),
    both("$.mid", system::MESSAGE_ID),
    both("$.to", system::TO),
    both("$.uid", system::USER_ID),
    both("ack", system::ACK),
    inbound_only("$.on", system::OUTPUT_NAME),
    both("$.ct", system::CONTENT_TYPE),
    both("$.ce", system::CONTENT_ENCODING),
    both("$.schema", system::MESSAGE_SCHEMA),
    both("iothub-operation", system::OPERATION),
    both("$.ctime", system::CREATION_TIME),
    inbound_only("$.ifid", system::INTERFACE_ID),
    both("$.sub", system::COMPONENT_NAME),
    outbound_only("$.cdid", system::CONNECTION_DEVICE_ID),
    outbound_only("$.cmid", system::CONNECTION_MODULE_ID),
];

/// The system property an inbound bag key stands for (exact match), if any.
#[inline]
pub fn inbound_system_name(wire: &str) -> Option<&'static str> {
    WIRE_NAMES
        .iter()
        .find(|w| w.inbound && w.wire.len() == wire.len() && w.wire == wire)
        .map(|w| w.system)
}

/// [`inbound_system_name`] of `$` followed by `rest` (for names that arrive as `%24…`).
#[inline]
pub fn inbound_system_name_after_dollar(rest: &str) -> Option<&'static str> {
    WIRE_NAMES
        .iter()
        .find(|w| w.inbound && w.wire.strip_prefix('$') == Some(rest))
        .map(|w| w.system)
}

/// The wire name a system property is delivered under, if it is delivered at all. System names
/// compare case-insensitively, like [`verge_message::PropertyMap`] names.
#[inline]
pub fn outbound_wire_name(system_name: &str) -> Option<&'static str> {
    WIRE_NAMES
        .iter()
        .find(|w| w.outbound && w.system.eq_ignore_ascii_case(system_name))
        .map(|w| w.wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_direction() {
        for (i, a) in WIRE_NAMES.iter().enumerate() {
            for b in &WIRE_NAMES[i + 1..] {
                assert!(!(a.inbound && b.inbound && a.wire == b.wire), "{a:?} {b:?}");
                assert!(
                    !(a.outbound && b.outbound && a.system.eq_ignore_ascii_case(b.system)),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(inbound_system_name("$.mid"), Some(system::MESSAGE_ID));
        assert_eq!(inbound_system_name("$.on"), Some(system::OUTPUT_NAME));
        assert_eq!(inbound_system_name("$.MID"), None);
        assert_eq!(inbound_system_name("$.cdid"), None);
        assert_eq!(
            inbound_system_name_after_dollar(".ct"),
            Some(system::CONTENT_TYPE)
        );
        assert_eq!(inbound_system_name_after_dollar("ack"), None);
        assert_eq!(inbound_system_name_after_dollar(".cdid"), None);
        assert_eq!(
            outbound_wire_name(system::CONNECTION_DEVICE_ID),
            Some("$.cdid")
        );
        assert_eq!(outbound_wire_name("CONTENTTYPE"), Some("$.ct"));
        assert_eq!(outbound_wire_name(system::OUTPUT_NAME), None);
        assert_eq!(outbound_wire_name(system::INPUT_NAME), None);
    }
}
