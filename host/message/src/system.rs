//! IoT Hub system property names, as IoT Edge spells them (`SystemProperties.cs`).
//!
//! Route conditions query these as `$name`; the MQTT front maps them to and from the wire names
//! (`$.mid`, `$.ct`, ...). Every other crate uses these constants, never string literals.

/// `messageId`
pub const MESSAGE_ID: &str = "messageId";
/// `correlationId`
pub const CORRELATION_ID: &str = "correlationId";
/// `userId`
pub const USER_ID: &str = "userId";
/// `to`
pub const TO: &str = "to";
/// `ack`
pub const ACK: &str = "ack";
/// `contentType`
pub const CONTENT_TYPE: &str = "contentType";
/// `contentEncoding`
pub const CONTENT_ENCODING: &str = "contentEncoding";
/// `messageSchema`
pub const MESSAGE_SCHEMA: &str = "messageSchema";
/// `creationTime`
pub const CREATION_TIME: &str = "creationTime";
/// `enqueuedTime`, set by the hub.
pub const ENQUEUED_TIME: &str = "enqueuedTime";
/// `connectionDeviceId`, set by the hub.
pub const CONNECTION_DEVICE_ID: &str = "connectionDeviceId";
/// `connectionModuleId`, set by the hub.
pub const CONNECTION_MODULE_ID: &str = "connectionModuleId";
/// `connectionDeviceGenerationId`, set by the hub.
pub const CONNECTION_DEVICE_GENERATION_ID: &str = "connectionDeviceGenerationId";
/// `connectionAuthMethod`, set by the hub.
pub const CONNECTION_AUTH_METHOD: &str = "connectionAuthMethod";
/// `inputName`, set by the hub per delivery.
pub const INPUT_NAME: &str = "inputName";
/// `outputName`, set by the hub from the sender's output.
pub const OUTPUT_NAME: &str = "outputName";
/// `messageType` (`twinChangeNotification` for twin change messages).
pub const MESSAGE_TYPE: &str = "messageType";
/// `operation`
pub const OPERATION: &str = "operation";
/// `modelId`
pub const MODEL_ID: &str = "modelId";
/// `dt-subject`: the IoT Plug and Play component name.
pub const COMPONENT_NAME: &str = "dt-subject";
/// `iothub-interface-id`
pub const INTERFACE_ID: &str = "iothub-interface-id";
/// `absolute-expiry-time`
pub const ABSOLUTE_EXPIRY_TIME: &str = "absolute-expiry-time";

/// The `messageType` value of twin change notifications.
pub const TWIN_CHANGE_NOTIFICATION: &str = "twinChangeNotification";

/// Properties only the hub sets; a module cannot write them.
pub const HUB_SET: &[&str] = &[
    ENQUEUED_TIME,
    CONNECTION_DEVICE_ID,
    CONNECTION_MODULE_ID,
    CONNECTION_DEVICE_GENERATION_ID,
    CONNECTION_AUTH_METHOD,
    INPUT_NAME,
    OUTPUT_NAME,
];

/// Whether `name` is one only the hub may set.
pub fn is_hub_set(name: &str) -> bool {
    HUB_SET.iter().any(|n| crate::names_equal(n, name))
}
