//! The MQTT CONNECT username, parsed as IoT Edge's `MqttUsernameParser` does (reference
//! `iotedge.md` §4.2, vectors `mqtt_usernames.json`).
//!
//! Accepted forms (`/`-separated segments):
//! - `{host}/{device}/?{properties}` and `{host}/{device}/{module}/?{properties}`: the last
//!   segment starts with `?`;
//! - `{host}/{device}/{properties}` and `{host}/{device}/{module}/{properties}`: without `?`, the
//!   last segment must contain `api-version=`;
//! - the legacy six-segment form of an old .NET client, accepted only with exactly the suffix
//!   `/api-version=2017-06-30/DeviceClientType=Microsoft.Azure.Devices.Client/1.5.1-preview-003`
//!   (compared case-insensitively).
//!
//! Properties are `name=value` joined by `&`. Names are exact (case-sensitive); when a name comes
//! twice the first wins; names without `=` have an empty value; unknown names are ignored
//! (`auth-chain` among them). Values are percent-decoded leniently ([`super::escape`]). Device and
//! module ids are trimmed and **not** decoded (IoT Edge does not decode them either); a blank
//! module id means a device. The host segment is returned as written: IoT Edge ignores it.
//!
//! `api-version` must be present and not blank; its value is not checked.

use verge_message::Identity;

use super::escape::unescape;

const API_VERSION: &str = "api-version";
const DEVICE_CLIENT_TYPE: &str = "DeviceClientType";
const MODEL_ID: &str = "model-id";
const LEGACY_SUFFIX: &str =
    "/api-version=2017-06-30/DeviceClientType=Microsoft.Azure.Devices.Client/1.5.1-preview-003";
const LEGACY_API_VERSION: &str = "2017-06-30";
const LEGACY_CLIENT_TYPE: &str = "Microsoft.Azure.Devices.Client/1.5.1-preview-003";

/// What a CONNECT username says about the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The first segment, as written (IoT Edge ignores it).
    pub hub_host: String,
    /// The device, or the module of a device.
    pub identity: Identity,
    /// `api-version`, decoded; never blank.
    pub api_version: String,
    /// `DeviceClientType`, decoded; `None` when absent or empty.
    pub device_client_type: Option<String>,
    /// `model-id` (IoT Plug and Play), decoded; `None` when absent or blank.
    pub model_id: Option<String>,
}

/// Why a CONNECT username was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Empty or only whitespace.
    #[error("the MQTT username is empty")]
    Empty,
    /// Not `{host}/{device}/[{module}/]{properties}` (wrong number of segments, or a last
    /// segment that neither starts with `?` nor contains `api-version=`).
    #[error(
        "the MQTT username is not of the form {{host}}/{{device}}/[{{module}}/]?api-version=..."
    )]
    Malformed,
    /// No `api-version` property, or a blank one.
    #[error("the MQTT username has no api-version property")]
    MissingApiVersion,
    /// A blank device id.
    #[error("the MQTT username has no device id")]
    MissingDeviceId,
}

/// The properties of a username that Verge reads: (api-version, DeviceClientType, model-id),
/// still encoded. The first occurrence of a name wins.
#[derive(Default)]
struct Properties<'a> {
    api_version: Option<&'a str>,
    device_client_type: Option<&'a str>,
    model_id: Option<&'a str>,
}

fn properties(text: &str) -> Properties<'_> {
    let mut props = Properties::default();
    for item in text.split('&') {
        let (name, value) = item.split_once('=').unwrap_or((item, ""));
        let slot = match name {
            API_VERSION => &mut props.api_version,
            DEVICE_CLIENT_TYPE => &mut props.device_client_type,
            MODEL_ID => &mut props.model_id,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    props
}

/// Parse a CONNECT username (see the module docs).
pub fn parse_username(username: &str) -> Result<ClientInfo, UsernameError> {
    if username.trim().is_empty() {
        return Err(UsernameError::Empty);
    }
    let segments: Vec<&str> = username.split('/').collect();
    let last = segments.last().copied().unwrap_or_default();
    let (device, module, props) = match (segments.as_slice(), last.strip_prefix('?')) {
        ([_, device, _], Some(props)) => (*device, "", properties(props.trim())),
        ([_, device, module, _], Some(props)) => (*device, *module, properties(props.trim())),
        (_, Some(_)) => return Err(UsernameError::Malformed),
        ([_, device, props], None) if props.contains("api-version=") => {
            (*device, "", properties(props.trim()))
        }
        ([_, device, module, props], None) if props.contains("api-version=") => {
            (*device, *module, properties(props.trim()))
        }
        ([_, device, module, _, _, _], None) if ends_with_ignore_case(username, LEGACY_SUFFIX) => (
            *device,
            *module,
            Properties {
                api_version: Some(LEGACY_API_VERSION),
                device_client_type: Some(LEGACY_CLIENT_TYPE),
                model_id: None,
            },
        ),
        _ => return Err(UsernameError::Malformed),
    };

    let api_version = props.api_version.map(unescape).unwrap_or_default();
    if api_version.trim().is_empty() {
        return Err(UsernameError::MissingApiVersion);
    }
    let device = device.trim();
    if device.is_empty() {
        return Err(UsernameError::MissingDeviceId);
    }
    let module = module.trim();
    let identity = if module.is_empty() {
        Identity::device(device)
    } else {
        Identity::module(device, module)
    };
    let device_client_type = props
        .device_client_type
        .map(unescape)
        .filter(|t| !t.is_empty())
        .map(|t| t.into_owned());
    let model_id = props
        .model_id
        .map(unescape)
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.into_owned());
    Ok(ClientInfo {
        hub_host: segments.first().copied().unwrap_or_default().to_owned(),
        identity,
        api_version: api_version.into_owned(),
        device_client_type,
        model_id,
    })
}

fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len()
        && text
            .as_bytes()
            .get(text.len() - suffix.len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_sdk_username() {
        let info = parse_username(
            "myhub.azure-devices.net/edgeDev/myModule/?api-version=2019-10-01\
             &DeviceClientType=azure-iot-device-iothub-py%2F2.14.0",
        )
        .unwrap();
        assert_eq!(info.hub_host, "myhub.azure-devices.net");
        assert_eq!(info.identity, Identity::module("edgeDev", "myModule"));
        assert_eq!(info.api_version, "2019-10-01");
        assert_eq!(
            info.device_client_type.as_deref(),
            Some("azure-iot-device-iothub-py/2.14.0")
        );
        assert_eq!(info.model_id, None);
    }

    #[test]
    fn values_are_decoded_and_first_wins() {
        let info = parse_username(
            "h/d/?api-version=2020%2D09%2D30&api-version=x&model-id=dtmi%3Acom%3Aa%3B1\
             &auth-chain=a;b&extra&DeviceClientType=",
        )
        .unwrap();
        assert_eq!(info.api_version, "2020-09-30");
        assert_eq!(info.model_id.as_deref(), Some("dtmi:com:a;1"));
        assert_eq!(info.device_client_type, None);
        assert_eq!(info.identity, Identity::device("d"));
    }

    #[test]
    fn ids_are_trimmed_not_decoded() {
        let info = parse_username("h/ d%41 / m /?api-version=1").unwrap();
        assert_eq!(info.identity, Identity::module("d%41", "m"));
        let info = parse_username("h/d/ /?api-version=1").unwrap();
        assert_eq!(info.identity, Identity::device("d"));
    }

    #[test]
    fn refusals() {
        use UsernameError::*;
        let cases = [
            ("", Empty),
            ("   ", Empty),
            ("h", Malformed),
            ("h/d", Malformed),
            ("h/d/m/x/?api-version=1", Malformed),
            ("?api-version=1", Malformed),
            ("h/?api-version=1", Malformed),
            ("h/d/?api-version=", MissingApiVersion),
            ("h/d/?api-version=%20", MissingApiVersion),
            ("h/d/?api-version", MissingApiVersion),
            ("h/d/?", MissingApiVersion),
            ("h/ /?api-version=1", MissingDeviceId),
            ("h//m/?api-version=1", MissingDeviceId),
        ];
        for (username, error) in cases {
            assert_eq!(parse_username(username), Err(error), "{username:?}");
        }
    }

    #[test]
    fn legacy_suffix_is_case_insensitive() {
        let info = parse_username(
            "h/d/m/API-VERSION=2017-06-30/devicecLientType=Microsoft.Azure.Devices.Client/1.5.1-PREVIEW-003",
        )
        .unwrap();
        assert_eq!(info.api_version, LEGACY_API_VERSION);
        assert_eq!(info.device_client_type.as_deref(), Some(LEGACY_CLIENT_TYPE));
        assert_eq!(info.identity, Identity::module("d", "m"));
    }
}
