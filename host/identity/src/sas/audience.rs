//! Audiences: the resource a SAS token is for (`sr`), built and checked as IoT Edge does.
//!
//! - Built ([`audience`]) as `SasTokenHelper.BuildAudience`: the ids are URL-encoded inside the
//!   path, then the whole path is URL-encoded again (`n@m` becomes `n%2540m` in the token).
//! - Checked ([`AudienceRules::scope`]) as `DeviceScopeTokenAuthenticator`: the URL-decoded
//!   `sr` must be `{host}/devices/{d}` or `{host}/devices/{d}/modules/{m}`; `{host}` is the IoT
//!   Hub host name or the gateway (edge hub) host name, ignoring case; the ids, URL-decoded once
//!   more, must be the connecting identity's, ignoring case. A device-scoped audience is
//!   accepted for a module of that device (the caller decides whether the device's key may
//!   sign for it).

use verge_message::Identity;

use super::SasError;
use super::url::{url_decode, url_encode};

/// The URL-encoded `sr` for `device` (and `module`) on `host`, with the ids encoded twice.
pub fn audience(host: &str, device: &str, module: Option<&str>) -> String {
    let mut path = format!("{host}/devices/{}", url_encode(device));
    if let Some(module) = module {
        path.push_str("/modules/");
        path.push_str(&url_encode(module));
    }
    url_encode(&path)
}

/// The `sr` for `identity` on `host`.
pub fn audience_for(host: &str, identity: &Identity) -> String {
    audience(host, identity.device_id(), identity.module_id())
}

/// What a token's audience speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScope {
    /// `{host}/devices/{d}`: the device (or, if allowed, any of its modules).
    Device,
    /// `{host}/devices/{d}/modules/{m}`: the module.
    Module,
}

/// The host names a token's audience may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceRules {
    hub_host: String,
    gateway_host: Option<String>,
}

impl AudienceRules {
    /// Audiences on the IoT Hub host name `hub_host` (which must not be blank).
    pub fn new(hub_host: &str) -> Result<Self, SasError> {
        if hub_host.trim().is_empty() {
            return Err(SasError::MissingHubName);
        }
        Ok(Self {
            hub_host: hub_host.to_owned(),
            gateway_host: None,
        })
    }

    /// Also accepts audiences on the gateway (edge hub) host name; a blank name is ignored.
    pub fn with_gateway_host(mut self, gateway_host: &str) -> Self {
        self.gateway_host = (!gateway_host.trim().is_empty()).then(|| gateway_host.to_owned());
        self
    }

    /// The IoT Hub host name.
    pub fn hub_host(&self) -> &str {
        &self.hub_host
    }

    /// The gateway host name, if any.
    pub fn gateway_host(&self) -> Option<&str> {
        self.gateway_host.as_deref()
    }

    /// What the URL-decoded audience `audience` speaks for, if it is for `identity`.
    pub fn scope(&self, audience: &str, identity: &Identity) -> Option<TokenScope> {
        let parts: Vec<&str> = audience.split('/').collect();
        let (host, device, module) = match parts.as_slice() {
            [host, "devices", device] => (*host, *device, None),
            [host, "devices", device, "modules", module] => (*host, *device, Some(*module)),
            _ => return None,
        };
        let host_ok = host.eq_ignore_ascii_case(&self.hub_host)
            || self
                .gateway_host
                .as_deref()
                .is_some_and(|g| host.eq_ignore_ascii_case(g));
        if !host_ok || !url_decode(device).eq_ignore_ascii_case(identity.device_id()) {
            return None;
        }
        match (module, identity.module_id()) {
            (None, _) => Some(TokenScope::Device),
            (Some(module), Some(id)) if url_decode(module).eq_ignore_ascii_case(id) => {
                Some(TokenScope::Module)
            }
            (Some(_), _) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AudienceRules {
        AudienceRules::new("hub.example.net")
            .expect("host")
            .with_gateway_host("edge1")
    }

    #[test]
    fn builds_double_encoded_audiences() {
        assert_eq!(
            audience("h.net", "d1", Some("m1")),
            "h.net%2Fdevices%2Fd1%2Fmodules%2Fm1"
        );
        assert_eq!(audience("h.net", "a b", None), "h.net%2Fdevices%2Fa%2Bb");
        assert_eq!(
            audience_for("h.net", &Identity::module("d", "$edgeHub")),
            "h.net%2Fdevices%2Fd%2Fmodules%2F%2524edgeHub"
        );
    }

    #[test]
    fn device_and_module_scopes() {
        let device = Identity::device("d1");
        let module = Identity::module("d1", "m1");
        let r = rules();
        assert_eq!(
            r.scope("hub.example.net/devices/d1", &device),
            Some(TokenScope::Device)
        );
        assert_eq!(
            r.scope("EDGE1/devices/D1", &device),
            Some(TokenScope::Device)
        );
        assert_eq!(
            r.scope("hub.example.net/devices/d1/modules/M1", &module),
            Some(TokenScope::Module)
        );
        // A device-scoped audience for a module of that device.
        assert_eq!(
            r.scope("hub.example.net/devices/d1", &module),
            Some(TokenScope::Device)
        );
    }

    #[test]
    fn wrong_audiences() {
        let device = Identity::device("d1");
        let module = Identity::module("d1", "m1");
        let r = rules();
        for (audience, identity) in [
            ("other.net/devices/d1", &device),
            ("hub.example.net/devices/d2", &device),
            ("hub.example.net/devices/d1/modules/m1", &device),
            ("hub.example.net/devices/d1/modules/m2", &module),
            ("hub.example.net/devices/d1/modules", &module),
            ("hub.example.net/devices/d1/foo", &device),
            ("hub.example.net/things/d1", &device),
            ("hub.example.net/devices/d1/modules/m1/x", &module),
            ("hub.example.net/devices/d1/", &device),
            ("", &device),
            ("hub.example.net", &device),
        ] {
            assert_eq!(
                r.scope(audience, identity),
                None,
                "{audience} for {identity}"
            );
        }
    }

    #[test]
    fn ids_are_decoded_again() {
        let identity = Identity::module("n@m.et#st", "$edgeAgent");
        let sr = audience("hub.example.net", "n@m.et#st", Some("$edgeAgent"));
        assert_eq!(
            rules().scope(&url_decode(&sr), &identity),
            Some(TokenScope::Module)
        );
    }

    #[test]
    fn blank_hub_host_is_refused() {
        assert!(matches!(
            AudienceRules::new(""),
            Err(SasError::MissingHubName)
        ));
        assert!(matches!(
            AudienceRules::new("  "),
            Err(SasError::MissingHubName)
        ));
        let r = AudienceRules::new("h")
            .expect("host")
            .with_gateway_host(" ");
        assert_eq!(r.gateway_host(), None);
    }
}
