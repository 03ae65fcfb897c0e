//! The JSON form of a message, used wherever a person reads or writes one.
//!
//! ```json
//! {"properties": {"k": "v"}, "systemProperties": {"contentType": "application/json"},
//!  "body": {"temperature": 21.5}}
//! ```
//!
//! `body` is any JSON value, and the message body is that value's JSON text. With
//! `"bodyEncoding": "base64"` it is a base64 string of raw bytes; with `"bodyEncoding": "utf-8"`
//! it is a string whose UTF-8 bytes are the body. [`MessageDoc::from_message`] picks the form that
//! reads best: parsed JSON when the body is JSON, text when it is UTF-8, base64 otherwise, so a
//! `verge monitor` line can be fed back to `verge route test --message`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Message, PropertyMap};

/// The JSON document of a message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageDoc {
    /// Application properties; a `null` value is a property present with no value.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
    /// System properties by IoT Edge name (`contentType`, `connectionModuleId`, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub system_properties: Map<String, Value>,
    /// The body (see the module docs for how it maps to bytes).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub body: Value,
    /// `base64` or `utf-8`; absent means `body` is a JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_encoding: Option<BodyEncoding>,
    /// Who sent it (informational, as `verge monitor` prints it; read from the system
    /// properties, never written back into them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// When the hub accepted it (informational, as `verge monitor` prints it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_time: Option<String>,
}

/// Who sent a message: device, module and output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Origin {
    /// `connectionDeviceId`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `connectionModuleId`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// `outputName`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_name: Option<String>,
}

/// How `body` is written in a [`MessageDoc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyEncoding {
    /// A base64 string of raw bytes.
    #[serde(rename = "base64")]
    Base64,
    /// A string whose UTF-8 bytes are the body.
    #[serde(rename = "utf-8")]
    Utf8,
}

/// Why a JSON document is not a message.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// Not JSON, or not the document's shape.
    #[error("not a message document: {0}")]
    Json(#[from] serde_json::Error),
    /// A property value is not a string or null.
    #[error("property {name:?} must be a string or null, found {found}")]
    PropertyType {
        /// The property name.
        name: String,
        /// The JSON type found.
        found: &'static str,
    },
    /// `bodyEncoding` asks for a string body and `body` is not one.
    #[error("body must be a string when bodyEncoding is {0:?}")]
    BodyNotString(BodyEncoding),
    /// The base64 body does not decode.
    #[error("body is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

/// The JSON type of `v` as an error message names it (`a string`, `an object`, ...).
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn to_map(json: &Map<String, Value>) -> Result<PropertyMap, DocError> {
    let mut map = PropertyMap::new();
    for (name, value) in json {
        match value {
            Value::String(s) => map.insert(name, s),
            Value::Null => map.set(name, None),
            other => {
                return Err(DocError::PropertyType {
                    name: name.clone(),
                    found: json_type(other),
                });
            }
        }
    }
    Ok(map)
}

fn from_map(map: &PropertyMap) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.map_or(Value::Null, |v| Value::String(v.to_owned())),
            )
        })
        .collect()
}

impl MessageDoc {
    /// Parse a document from JSON text.
    pub fn parse(text: &str) -> Result<Self, DocError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The message this document describes.
    pub fn to_message(&self) -> Result<Message, DocError> {
        let body: Vec<u8> = match (self.body_encoding, &self.body) {
            (None, Value::Null) => Vec::new(),
            (None, value) => value.to_string().into_bytes(),
            (Some(BodyEncoding::Base64), Value::String(s)) => BASE64.decode(s)?,
            (Some(BodyEncoding::Utf8), Value::String(s)) => s.clone().into_bytes(),
            (Some(encoding), _) => return Err(DocError::BodyNotString(encoding)),
        };
        Ok(Message::from_parts(
            body.into(),
            to_map(&self.properties)?,
            to_map(&self.system_properties)?,
        ))
    }

    /// The document of a message, with the body in its most readable form.
    pub fn from_message(message: &Message) -> Self {
        let bytes = message.body();
        let (body, body_encoding) = if bytes.is_empty() {
            (Value::Null, None)
        } else if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
            (value, None)
        } else if let Ok(text) = std::str::from_utf8(bytes) {
            (Value::String(text.to_owned()), Some(BodyEncoding::Utf8))
        } else {
            (
                Value::String(BASE64.encode(bytes)),
                Some(BodyEncoding::Base64),
            )
        };
        Self {
            properties: from_map(message.properties()),
            system_properties: from_map(message.system()),
            body,
            body_encoding,
            origin: None,
            enqueued_time: None,
        }
    }

    /// The document with `origin` filled in from the message's system properties.
    pub fn with_origin(mut self, message: &Message) -> Self {
        let sys = message.system();
        let get = |name: &str| sys.get(name).map(str::to_owned);
        self.origin = Some(Origin {
            device_id: get(crate::system::CONNECTION_DEVICE_ID),
            module_id: get(crate::system::CONNECTION_MODULE_ID),
            output_name: get(crate::system::OUTPUT_NAME),
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_is_the_values_text() {
        let doc = MessageDoc::parse(
            r#"{"properties":{"a":"1","n":null},"systemProperties":{"contentType":"application/json"},"body":{"t":21.5}}"#,
        )
        .unwrap();
        let m = doc.to_message().unwrap();
        assert_eq!(&m.body()[..], br#"{"t":21.5}"#);
        assert_eq!(m.properties().lookup("n"), Some(None));
        assert_eq!(m.system().get("contenttype"), Some("application/json"));
        assert_eq!(MessageDoc::from_message(&m), doc);
    }

    #[test]
    fn binary_and_text_bodies_round_trip() {
        for body in [&b"\x00\xff\x10"[..], b"plain text", b""] {
            let m = Message::new(body.to_vec());
            let text = serde_json::to_string(&MessageDoc::from_message(&m)).unwrap();
            let back = MessageDoc::parse(&text).unwrap().to_message().unwrap();
            assert_eq!(&back.body()[..], body, "{text}");
        }
    }

    #[test]
    fn bad_documents_are_refused_with_the_reason() {
        let err = MessageDoc::parse(r#"{"properties":{"a":1}}"#)
            .unwrap()
            .to_message()
            .unwrap_err();
        assert!(err.to_string().contains("\"a\" must be a string"), "{err}");
        let err = MessageDoc::parse(r#"{"body":"!!","bodyEncoding":"base64"}"#)
            .unwrap()
            .to_message()
            .unwrap_err();
        assert!(matches!(err, DocError::Base64(_)));
        assert!(MessageDoc::parse(r#"{"bogus":1}"#).is_err());
    }
}
