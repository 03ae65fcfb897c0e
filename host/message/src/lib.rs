//! The message Verge's hub routes.
//!
//! A [`Message`] is a body plus two property maps, as in IoT Hub: application properties, set by
//! the sender, and system properties ([`system`] names them), some set by the sender
//! (`contentType`, `messageId`, ...) and some by the hub (`connectionModuleId`, `outputName`, ...).
//!
//! The body is a [`Bytes`]: the hub hands one message to every receiver as an `Arc<Message>` and
//! never copies the body between in-process modules. Changing a message a module received
//! (`Arc::make_mut`) clones only the property maps; the body buffer stays shared.
//!
//! [`json`] is the one JSON form of a message used at the edges (the `verge route test` message
//! file, `verge monitor` output).

mod identity;
pub mod json;
mod properties;
pub mod system;
pub mod time;

pub use bytes::Bytes;
pub use identity::Identity;
pub use properties::{PropertyMap, Text, names_equal};

/// A message: body, application properties and system properties.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    body: Bytes,
    properties: PropertyMap,
    system: PropertyMap,
}

impl Message {
    /// A message with this body and no properties.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            properties: PropertyMap::new(),
            system: PropertyMap::new(),
        }
    }

    /// A message from its parts.
    pub fn from_parts(body: Bytes, properties: PropertyMap, system: PropertyMap) -> Self {
        Self {
            body,
            properties,
            system,
        }
    }

    /// The body. Cloning the returned `Bytes` shares the buffer.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Replace the body.
    pub fn set_body(&mut self, body: impl Into<Bytes>) {
        self.body = body.into();
    }

    /// Application properties.
    pub fn properties(&self) -> &PropertyMap {
        &self.properties
    }

    /// Application properties, to change.
    pub fn properties_mut(&mut self) -> &mut PropertyMap {
        &mut self.properties
    }

    /// System properties, keyed by the names in [`system`].
    pub fn system(&self) -> &PropertyMap {
        &self.system
    }

    /// System properties, to change.
    pub fn system_mut(&mut self) -> &mut PropertyMap {
        &mut self.system
    }

    /// Builder form of `properties_mut().insert`.
    pub fn with_property(mut self, name: &str, value: &str) -> Self {
        self.properties.insert(name, value);
        self
    }

    /// Builder form of `system_mut().insert`.
    pub fn with_system(mut self, name: &str, value: &str) -> Self {
        self.system.insert(name, value);
        self
    }

    /// Bytes this message accounts for in queues: body plus property names and values.
    pub fn size(&self) -> usize {
        self.body.len() + self.properties.byte_size() + self.system.byte_size()
    }
}
