//! Verge's MQTT front.
//!
//! - [`dialect`]: IoT Hub's MQTT dialect: CONNECT usernames, topic names, property bags.

pub mod dialect;
