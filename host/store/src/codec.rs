//! The stored forms of a message and of a queue entry.
//!
//! Both are small hand-rolled binary layouts, versioned by their first byte, because they are
//! written once per message on the hub's hottest path and read back only after a restart or
//! when a backlog is paged in:
//!
//! ```text
//! message: 1u8 | body_len u32 | body | app properties | system properties
//! properties: count u16 | (name_len u16 | name | value_len u32 (u32::MAX = null) | value)*
//! entry: 1u8 | message u64 | size u32 | enqueued_ms u64 | expires_ms u64 (0 = never)
//!        | input_len u16 | input | the message itself, when no other entry points at it
//! ```
//!
//! A message only one queue holds (the common case) is stored inline in its entry: one row to
//! write and one to remove instead of two of each.
//!
//! Integers are little-endian. Decoding checks every length against what is left, so a damaged
//! value is an error, never a panic or an over-read.

use std::sync::Arc;

use verge_message::{Bytes, Message, PropertyMap};

const MESSAGE_V1: u8 = 1;
const ENTRY_V1: u8 = 1;
const NULL: u32 = u32::MAX;

/// A stored value that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is damaged: {why}")]
pub struct DecodeError {
    what: &'static str,
    why: &'static str,
}

/// The length of the stored form of `message`.
pub fn encoded_len(message: &Message) -> usize {
    let properties = |map: &PropertyMap| 2 + map.len() * 6 + map.byte_size();
    1 + 4 + message.body().len() + properties(message.properties()) + properties(message.system())
}

/// Append the stored form of `message` to `out`.
pub fn encode_message(message: &Message, out: &mut Vec<u8>) {
    out.reserve(message.size() + 16);
    out.push(MESSAGE_V1);
    put_len32(out, message.body().len());
    out.extend_from_slice(message.body());
    encode_properties(message.properties(), out);
    encode_properties(message.system(), out);
}

fn put_len32(out: &mut Vec<u8>, len: usize) {
    // Bodies and properties are bounded far below 4 GiB by the MQTT and wasm limits.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX - 1).to_le_bytes());
}

fn encode_properties(map: &PropertyMap, out: &mut Vec<u8>) {
    let count = u16::try_from(map.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for (name, value) in map.iter().take(usize::from(count)) {
        let name = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        match value {
            Some(v) => {
                put_len32(out, v.len());
                out.extend_from_slice(v.as_bytes());
            }
            None => out.extend_from_slice(&NULL.to_le_bytes()),
        }
    }
}

/// Decode a stored message.
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader::new(bytes, "a stored message");
    if r.u8()? != MESSAGE_V1 {
        return Err(r.error("unknown format version"));
    }
    let len = r.u32()? as usize;
    let body = Bytes::copy_from_slice(r.take(len)?);
    let properties = decode_properties(&mut r)?;
    let system = decode_properties(&mut r)?;
    r.finish()?;
    Ok(Message::from_parts(body, properties, system))
}

fn decode_properties(r: &mut Reader<'_>) -> Result<PropertyMap, DecodeError> {
    let count = r.u16()?;
    let mut map = PropertyMap::new();
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        let name = r.str(len)?;
        let value = match r.u32()? {
            NULL => None,
            len => Some(r.str(len as usize)?),
        };
        map.set(name, value);
    }
    Ok(map)
}

/// What the store keeps about one queue entry besides its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// The stored message it delivers.
    pub message: u64,
    /// The message's size as the hub counts it ([`Message::size`]).
    pub size: u32,
    /// When the hub accepted it, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// When it expires, ms since the Unix epoch; 0 = never.
    pub expires_ms: u64,
    /// The module input it goes to (`None` for upstream).
    pub input: Option<Arc<str>>,
}

impl EntryMeta {
    /// Append the stored form to `out` (an inline message goes after it).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(ENTRY_V1);
        out.extend_from_slice(&self.message.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.enqueued_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        let input = self.input.as_deref().unwrap_or("").as_bytes();
        let input = &input[..input.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(input.len() as u16).to_le_bytes());
        out.extend_from_slice(input);
    }

    /// Decode the stored form: the entry, and its inline message's stored form (empty when the
    /// message is stored on its own).
    pub fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        let mut r = Reader::new(bytes, "a stored queue entry");
        if r.u8()? != ENTRY_V1 {
            return Err(r.error("unknown format version"));
        }
        let message = r.u64()?;
        let size = r.u32()?;
        let enqueued_ms = r.u64()?;
        let expires_ms = r.u64()?;
        let len = usize::from(r.u16()?);
        let input = match r.str(len)? {
            "" => None,
            name => Some(Arc::from(name)),
        };
        let meta = Self {
            message,
            size,
            enqueued_ms,
            expires_ms,
            input,
        };
        Ok((meta, r.rest()))
    }

    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && self.expires_ms <= now_ms
    }
}

/// A bounds-checked reader over a stored value.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    fn error(&self, why: &'static str) -> DecodeError {
        DecodeError {
            what: self.what,
            why,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(self.error("it ends early"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    fn str(&mut self, len: usize) -> Result<&'a str, DecodeError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| self.error("a property is not UTF-8"))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.error("it has trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        let mut m = Message::new(&b"{\"t\":21.5}"[..])
            .with_property("alert", "yes")
            .with_property("unit", "")
            .with_system("contentType", "application/json")
            .with_system("connectionModuleId", "sensor");
        m.properties_mut().set("nothing", None);
        m
    }

    #[test]
    fn messages_round_trip_with_nulls_and_order() {
        let m = sample();
        let mut out = Vec::new();
        encode_message(&m, &mut out);
        assert_eq!(out.len(), encoded_len(&m));
        let back = decode_message(&out).expect("decodes");
        assert_eq!(back, m);
        assert_eq!(back.size(), m.size());
        assert_eq!(back.properties().lookup("nothing"), Some(None));
        let names: Vec<&str> = back.properties().iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["alert", "unit", "nothing"]);
    }

    #[test]
    fn every_truncation_and_a_flipped_version_are_errors() {
        let mut out = Vec::new();
        encode_message(&sample(), &mut out);
        for n in 0..out.len() {
            assert!(decode_message(&out[..n]).is_err(), "decoded {n} bytes");
        }
        let mut longer = out.clone();
        longer.push(0);
        assert!(decode_message(&longer).is_err());
        out[0] = 9;
        assert!(decode_message(&out).is_err());
    }

    #[test]
    fn entries_round_trip() {
        for input in [None, Some(Arc::from("input1"))] {
            let meta = EntryMeta {
                message: 7,
                size: 300,
                enqueued_ms: 1_700_000_000_000,
                expires_ms: 0,
                input,
            };
            let mut out = Vec::new();
            meta.encode(&mut out);
            assert_eq!(EntryMeta::decode(&out), Ok((meta.clone(), &[][..])));
            assert!(EntryMeta::decode(&out[..10]).is_err());
            out.extend_from_slice(b"inline");
            assert_eq!(EntryMeta::decode(&out), Ok((meta, &b"inline"[..])));
        }
    }
}
