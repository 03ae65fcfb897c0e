//! Who sends a message or serves a destination: a device, or a module on a device.
//!
//! The hub stamps messages with their sender's identity (`connectionDeviceId`,
//! `connectionModuleId`); the identity registry keys credentials by it; the MQTT front derives it
//! from a client's username. One type for all of them.

use std::fmt;
use std::sync::Arc;

use crate::Text;

/// Who sent a message or serves a destination: a device, or a module on a device.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    device_id: Arc<str>,
    module_id: Option<Arc<str>>,
}

impl Identity {
    /// A module of `device`.
    pub fn module(device: &str, module: &str) -> Self {
        Self {
            device_id: device.into(),
            module_id: Some(module.into()),
        }
    }

    /// A device (a leaf device, or the edge device itself).
    pub fn device(device: &str) -> Self {
        Self {
            device_id: device.into(),
            module_id: None,
        }
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The module id, for a module.
    pub fn module_id(&self) -> Option<&str> {
        self.module_id.as_deref()
    }

    /// The device id as shared text: a message stamped with it copies nothing.
    pub fn device_text(&self) -> Text {
        Text::shared(Arc::clone(&self.device_id))
    }

    /// The module id as shared text, for a module.
    pub fn module_text(&self) -> Option<Text> {
        self.module_id.as_ref().map(|m| Text::shared(Arc::clone(m)))
    }
}

impl fmt::Display for Identity {
    /// `device` or `device/module`, as IoT Hub writes client ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.module_id {
            Some(m) => write!(f, "{}/{m}", self.device_id),
            None => f.write_str(&self.device_id),
        }
    }
}
