//! Verge's MQTT front: containers, leaf devices and any Azure IoT device SDK reach the hub here.
//!
//! - [`dialect`]: IoT Hub's MQTT dialect: CONNECT usernames, topic names, property bags.
//! - [`Broker`]: the listener (plain on loopback, or TLS) and one session per client: CONNECT
//!   checked by an [`Authenticator`], PUBLISHes committed to the hub before their PUBACK, the
//!   module's input queue delivered with QoS 1, twin and direct-method topics, authorisation on
//!   every PUBLISH and SUBSCRIBE.
//! - [`serve_https`]: direct methods over HTTPS (IoT Hub's port 443), the endpoint the SDKs'
//!   `invoke_method` calls; callers proved by a SAS token (or a client certificate) through the
//!   same [`Authenticator`], targets reached through the hub's method registry.
//! - `codec`: MQTT 3.1.1 packets (`mqttbytes` decodes, the hub's few packets are encoded here).

pub mod auth;
mod broker;
mod codec;
pub mod dialect;
pub mod downstream;
mod http;
mod session;
mod stats;
pub mod upstream;

pub use auth::{AuthMethod, Authenticator, Credentials, Refused, RegistryAuthenticator};
pub use broker::{Broker, BrokerOptions, twin_id};
pub use http::serve_https;
pub use stats::BrokerStats;
