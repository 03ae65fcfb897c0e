//! What the registry keeps per identity ([`Record`]), how it is stored as JSON, and the
//! credentials handed out once when a SAS identity is created ([`Credentials`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use verge_message::Identity;

/// What an identity is and who manages it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// The edge device itself (its upstream identity).
    EdgeDevice,
    /// A module the agent deploys and manages; its keys are generated in the key store and never
    /// leave it (the module signs through the workload API).
    Module,
    /// A module of the edge device that runs elsewhere and connects over MQTT with its own
    /// connection string.
    ExternalModule,
    /// A device behind this gateway.
    LeafDevice,
    /// An edge device whose upstream is this one (a child Verge or IoT Edge device): its one
    /// connection carries its own messages and those of its modules.
    ChildEdgeDevice,
}

/// How an identity authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Auth {
    /// SAS tokens signed with one of two HMAC keys, held by the key store under these labels.
    Sas {
        /// The primary key's label.
        primary: String,
        /// The secondary key's label.
        secondary: String,
    },
    /// A client certificate with one of these thumbprints (lower-case hex SHA-1 or SHA-256 of
    /// the DER certificate; compared ignoring case).
    X509Thumbprint {
        /// The primary thumbprint.
        primary: String,
        /// The secondary thumbprint, if any.
        secondary: Option<String>,
    },
    /// A client certificate whose chain TLS validated against the trust bundle, with the device
    /// id as its common name.
    X509Ca,
}

impl Auth {
    /// The name of the method, for messages.
    pub fn method(&self) -> &'static str {
        match self {
            Auth::Sas { .. } => "SAS",
            Auth::X509Thumbprint { .. } => "X.509 thumbprint",
            Auth::X509Ca => "X.509 CA",
        }
    }
}

/// How a new identity is to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewAuth {
    /// Two fresh random SAS keys, returned once in connection strings.
    Sas,
    /// Certificate thumbprints (hex SHA-1 or SHA-256, any case).
    X509Thumbprint {
        /// The primary thumbprint.
        primary: String,
        /// The secondary thumbprint, if any.
        secondary: Option<String>,
    },
    /// Certificates from a trusted CA with the device id as common name (leaf devices only).
    X509Ca,
}

/// One identity in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The device, or device/module.
    pub identity: Identity,
    /// What it is.
    pub kind: IdentityKind,
    /// Random, made when the identity is created: a removed and re-added identity has a new one.
    pub generation_id: String,
    /// How it authenticates.
    pub auth: Auth,
    /// When it was created (Unix seconds).
    pub created: u64,
}

/// A record as stored in the registry file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredRecord {
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    pub kind: IdentityKind,
    pub generation_id: String,
    pub auth: Auth,
    pub created: u64,
}

impl From<&Record> for StoredRecord {
    fn from(record: &Record) -> Self {
        Self {
            device_id: record.identity.device_id().to_owned(),
            module_id: record.identity.module_id().map(str::to_owned),
            kind: record.kind,
            generation_id: record.generation_id.clone(),
            auth: record.auth.clone(),
            created: record.created,
        }
    }
}

impl From<StoredRecord> for Record {
    fn from(stored: StoredRecord) -> Self {
        let identity = match &stored.module_id {
            Some(module) => Identity::module(&stored.device_id, module),
            None => Identity::device(&stored.device_id),
        };
        Self {
            identity,
            kind: stored.kind,
            generation_id: stored.generation_id,
            auth: stored.auth,
            created: stored.created,
        }
    }
}

/// The registry file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistryFile {
    pub version: u32,
    pub identities: Vec<StoredRecord>,
}

/// The version of the registry file this code writes and reads.
pub(crate) const FILE_VERSION: u32 = 1;

/// An IoT Hub connection string holding a shared key:
/// `HostName=…;DeviceId=…;[ModuleId=…;]SharedAccessKey=…[;GatewayHostName=…]`.
///
/// It is a secret: `Debug` hides the key, there is no `Display`, and [`expose`](Self::expose)
/// says what it does.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString(String);

impl ConnectionString {
    pub(crate) fn new(
        hub_host: &str,
        identity: &Identity,
        key_base64: &str,
        gateway_host: Option<&str>,
    ) -> Self {
        let mut s = format!("HostName={hub_host};DeviceId={}", identity.device_id());
        if let Some(module) = identity.module_id() {
            s.push_str(";ModuleId=");
            s.push_str(module);
        }
        s.push_str(";SharedAccessKey=");
        s.push_str(key_base64);
        if let Some(gateway) = gateway_host {
            s.push_str(";GatewayHostName=");
            s.push_str(gateway);
        }
        Self(s)
    }

    /// The connection string, key included: show it to the device's owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted: Vec<&str> = self
            .0
            .split(';')
            .map(|part| {
                if part.starts_with("SharedAccessKey=") {
                    "SharedAccessKey=<redacted>"
                } else {
                    part
                }
            })
            .collect();
        f.debug_tuple("ConnectionString")
            .field(&redacted.join(";"))
            .finish()
    }
}

/// The shared keys of a new SAS identity, as connection strings: returned once, never stored
/// outside the key store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// With the primary key.
    pub primary: ConnectionString,
    /// With the secondary key.
    pub secondary: ConnectionString,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_string_format() {
        let module = Identity::module("edge", "ext");
        let cs = ConnectionString::new("hub.net", &module, "S2V5", Some("gw.local"));
        assert_eq!(
            cs.expose(),
            "HostName=hub.net;DeviceId=edge;ModuleId=ext;SharedAccessKey=S2V5;GatewayHostName=gw.local"
        );
        let device = Identity::device("leaf");
        let cs = ConnectionString::new("hub.net", &device, "S2V5", None);
        assert_eq!(
            cs.expose(),
            "HostName=hub.net;DeviceId=leaf;SharedAccessKey=S2V5"
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let cs = ConnectionString::new(
            "hub.net",
            &Identity::device("leaf"),
            "SECRETKEY",
            Some("gw"),
        );
        let shown = format!("{cs:?}");
        assert!(!shown.contains("SECRETKEY"), "{shown}");
        assert!(shown.contains("DeviceId=leaf"), "{shown}");
        assert!(shown.contains("GatewayHostName=gw"), "{shown}");
    }

    #[test]
    fn records_round_trip_through_json() {
        let record = Record {
            identity: Identity::module("d", "m"),
            kind: IdentityKind::ExternalModule,
            generation_id: "g".into(),
            auth: Auth::X509Thumbprint {
                primary: "ab".into(),
                secondary: None,
            },
            created: 5,
        };
        let json = serde_json::to_string(&StoredRecord::from(&record)).expect("json");
        assert_eq!(
            json,
            r#"{"device_id":"d","module_id":"m","kind":"external_module","generation_id":"g","auth":{"type":"x509_thumbprint","primary":"ab","secondary":null},"created":5}"#
        );
        let back: StoredRecord = serde_json::from_str(&json).expect("parse");
        assert_eq!(Record::from(back), record);
    }
}
