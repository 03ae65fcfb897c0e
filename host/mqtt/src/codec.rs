//! MQTT 3.1.1 packets on the wire.
//!
//! Decoding is `mqttbytes` (the rumqtt project's codec, the same code rumqttd's `protocol::v4`
//! grew from): a frame is checked against the size limit before it is parsed, and a parsed
//! PUBLISH's payload is a slice of the read buffer, so a message body is never copied on the way
//! in. Encoding the few packets the hub sends is done here, straight into the connection's write
//! buffer: a PUBLISH to a client is written from the topic and the shared body without building
//! an intermediate packet.

use bytes::{BufMut, BytesMut};
pub use mqttbytes::v4::Packet;
pub use mqttbytes::{Error as CodecError, QoS};

/// The next complete packet in `buf`, `Ok(None)` if more bytes are needed.
pub fn read(buf: &mut BytesMut, max_packet_bytes: usize) -> Result<Option<Packet>, CodecError> {
    match mqttbytes::v4::read(buf, max_packet_bytes) {
        Ok(packet) => Ok(Some(packet)),
        Err(CodecError::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How a PUBLISH to a client is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// QoS 0.
    AtMostOnce,
    /// QoS 1 with its packet id; `dup` when it was sent before.
    AtLeastOnce {
        /// The packet id.
        pkid: u16,
        /// Sent before (MQTT's DUP flag).
        dup: bool,
    },
}

/// MQTT's variable-length "remaining length".
fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// A PUBLISH, QoS 0 or 1 ([`Delivery`]).
/// `false`, writing nothing, when the topic is longer than MQTT allows (65 535 bytes: a message
/// with huge properties cannot be delivered).
#[must_use]
pub fn put_publish(out: &mut BytesMut, topic: &str, qos: Delivery, payload: &[u8]) -> bool {
    let Ok(topic_len) = u16::try_from(topic.len()) else {
        return false;
    };
    let (flags, pkid) = match qos {
        Delivery::AtMostOnce => (0, None),
        Delivery::AtLeastOnce { pkid, dup } => (if dup { 0x0A } else { 0x02 }, Some(pkid)),
    };
    let len = 2 + topic.len() + if pkid.is_some() { 2 } else { 0 } + payload.len();
    out.reserve(5 + len);
    out.put_u8(0x30 | flags);
    put_remaining_length(out, len);
    out.put_u16(topic_len);
    out.put_slice(topic.as_bytes());
    if let Some(pkid) = pkid {
        out.put_u16(pkid);
    }
    out.put_slice(payload);
    true
}

/// CONNACK with a 3.1.1 return code (0 accepted, 1 protocol, 2 client id, 4 credentials,
/// 5 not authorised).
pub fn put_connack(out: &mut BytesMut, session_present: bool, code: u8) {
    out.put_slice(&[0x20, 0x02, u8::from(session_present), code]);
}

/// PUBACK.
pub fn put_puback(out: &mut BytesMut, pkid: u16) {
    out.put_slice(&[0x40, 0x02]);
    out.put_u16(pkid);
}

/// SUBACK with one return code per filter (0, 1, or 0x80 for failure).
pub fn put_suback(out: &mut BytesMut, pkid: u16, codes: &[u8]) {
    out.put_u8(0x90);
    put_remaining_length(out, 2 + codes.len());
    out.put_u16(pkid);
    out.put_slice(codes);
}

/// UNSUBACK.
pub fn put_unsuback(out: &mut BytesMut, pkid: u16) {
    out.put_slice(&[0xB0, 0x02]);
    out.put_u16(pkid);
}

/// PINGRESP.
pub fn put_pingresp(out: &mut BytesMut) {
    out.put_slice(&[0xD0, 0x00]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_round_trip_through_the_decoder() {
        let mut buf = BytesMut::new();
        assert!(put_publish(
            &mut buf,
            "a/b",
            Delivery::AtLeastOnce { pkid: 7, dup: true },
            &[1u8; 300]
        ));
        assert!(put_publish(&mut buf, "c", Delivery::AtMostOnce, b"x"));
        let long = "t".repeat(70_000);
        assert!(!put_publish(&mut buf, &long, Delivery::AtMostOnce, b"x"));
        match read(&mut buf, 1 << 20) {
            Ok(Some(Packet::Publish(p))) => {
                assert_eq!(
                    (p.topic.as_str(), p.pkid, p.qos),
                    ("a/b", 7, QoS::AtLeastOnce)
                );
                assert_eq!(p.payload.len(), 300);
                assert!(p.dup);
            }
            other => panic!("{other:?}"),
        }
        match read(&mut buf, 1 << 20) {
            Ok(Some(Packet::Publish(p))) => {
                assert_eq!((p.topic.as_str(), &p.payload[..]), ("c", &b"x"[..]))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(read(&mut buf, 1 << 20), Ok(None)));
    }

    #[test]
    fn acks_decode() {
        let mut buf = BytesMut::new();
        put_puback(&mut buf, 9);
        put_suback(&mut buf, 3, &[1, 0x80]);
        put_unsuback(&mut buf, 4);
        put_connack(&mut buf, false, 5);
        put_pingresp(&mut buf);
        let mut kinds = Vec::new();
        while let Ok(Some(p)) = read(&mut buf, 1024) {
            kinds.push(format!("{p:?}"));
        }
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        assert!(kinds[1].contains("Failure"), "{kinds:?}");
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors_not_panics() {
        let mut big = BytesMut::new();
        assert!(put_publish(
            &mut big,
            "t",
            Delivery::AtMostOnce,
            &[0u8; 2000]
        ));
        assert!(read(&mut big, 1000).is_err());
        // Every prefix and every single-byte corruption of a valid stream: no panic.
        let mut valid = BytesMut::new();
        let topic = "devices/d/messages/events/";
        assert!(put_publish(
            &mut valid,
            topic,
            Delivery::AtLeastOnce {
                pkid: 1,
                dup: false
            },
            b"hello"
        ));
        put_suback(&mut valid, 2, &[1]);
        for cut in 0..valid.len() {
            let mut b = BytesMut::from(&valid[..cut]);
            let _ = read(&mut b, 1024);
        }
        for i in 0..valid.len() {
            for v in [0u8, 0x7f, 0x80, 0xff] {
                let mut b = valid.clone();
                b[i] = v;
                while let Ok(Some(_)) = read(&mut b, 1024) {}
            }
        }
    }
}
