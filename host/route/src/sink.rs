//! Route sinks (`INTO …`) and the Edge Hub endpoints they resolve to.
//!
//! The grammar allows a system sink `$name` or a function sink `name("address")` /
//! `name('address')`; the address is the text between the quotes, not unescaped. Edge Hub's
//! `EndpointFactory` then resolves exactly two:
//!
//! - `$upstream` (any case) → [`Endpoint::Upstream`], the IoT Hub (endpoint id `iothub`).
//! - `BrokeredEndpoint("/modules/{m}/inputs/{i}")` (function name in any case) →
//!   [`Endpoint::ModuleInput`] (endpoint id `{edgeDeviceId}/{m}/{i}`). The address is trimmed of
//!   blanks, then of **one** leading and **one** trailing `/`, and must split on `/` into exactly
//!   four items; the module is the second and the input the fourth.
//!
//! Decisions: like upstream, the first and third items are not checked (`/a/b/c/d` is module
//! `b`, input `d`; `routes.json` has such a route as valid). Unlike upstream, an empty module or
//! input (`/modules//inputs/x`) is refused.

use std::fmt;

use crate::error::RouteError;

/// A route's sink as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sink {
    /// `$name` (with the `$`).
    System(String),
    /// `name("address")`.
    Function {
        /// The function name as written.
        name: String,
        /// The text between the quotes.
        address: String,
    },
}

impl fmt::Display for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::System(name) => f.write_str(name),
            Self::Function { name, address } => write!(f, "{name}(\"{address}\")"),
        }
    }
}

/// Where Edge Hub delivers a routed message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The IoT Hub (`$upstream`).
    Upstream,
    /// A module's input (`BrokeredEndpoint("/modules/{module}/inputs/{input}")`).
    ModuleInput {
        /// The module id.
        module: String,
        /// The input name.
        input: String,
    },
}

const UPSTREAM: &str = "$upstream";
const BROKERED: &str = "BrokeredEndpoint";
const FORMAT: &str = "Expect input in this format - /modules/{mid}/inputs/{input}";

impl Endpoint {
    /// Resolve a sink as Edge Hub does.
    pub fn resolve(sink: &Sink) -> Result<Self, RouteError> {
        match sink {
            Sink::System(name) => Self::system(name),
            Sink::Function { name, address } => Self::function(name, address),
        }
    }

    /// The system endpoint `name` (only `$upstream`).
    pub fn system(name: &str) -> Result<Self, RouteError> {
        if name.eq_ignore_ascii_case(UPSTREAM) {
            Ok(Self::Upstream)
        } else {
            Err(RouteError::Sink(format!(
                "system endpoint '{name}' is not supported; the only one is $upstream"
            )))
        }
    }

    /// The function endpoint `name(address)` (only `BrokeredEndpoint`).
    pub fn function(name: &str, address: &str) -> Result<Self, RouteError> {
        if !name.eq_ignore_ascii_case(BROKERED) {
            return Err(RouteError::Sink(format!(
                "function endpoint '{name}' is not supported; use \
                 BrokeredEndpoint(\"/modules/{{mid}}/inputs/{{input}}\")"
            )));
        }
        let trimmed = address.trim();
        let trimmed = trimmed.strip_prefix('/').unwrap_or(trimmed);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        let items: Vec<&str> = trimmed.split('/').collect();
        match items[..] {
            [_, module, _, input] if !module.is_empty() && !input.is_empty() => {
                Ok(Self::ModuleInput {
                    module: module.to_owned(),
                    input: input.to_owned(),
                })
            }
            _ => Err(RouteError::Sink(format!(
                "endpoint address '{address}' could not be parsed. {FORMAT}"
            ))),
        }
    }

    /// Edge Hub's endpoint id: `iothub`, or `{edge_device_id}/{module}/{input}`.
    pub fn id(&self, edge_device_id: &str) -> String {
        match self {
            Self::Upstream => "iothub".to_owned(),
            Self::ModuleInput { module, input } => format!("{edge_device_id}/{module}/{input}"),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upstream => f.write_str(UPSTREAM),
            Self::ModuleInput { module, input } => {
                write!(f, "{BROKERED}(\"/modules/{module}/inputs/{input}\")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokered_endpoint_rule() {
        let ok = |a: &str| Endpoint::function("brokeredendpoint", a);
        assert_eq!(
            ok(" /modules/m/inputs/i/ ").unwrap(),
            Endpoint::ModuleInput {
                module: "m".into(),
                input: "i".into()
            }
        );
        for bad in [
            "/modules/m",
            "//modules/m/inputs/i",
            "/modules/m/inputs/i//",
            "/modules//inputs/i",
            "",
        ] {
            let err = ok(bad).unwrap_err().to_string();
            assert!(
                err.contains("/modules/{mid}/inputs/{input}"),
                "{bad}: {err}"
            );
        }
        assert!(Endpoint::function("Other", "/modules/m/inputs/i").is_err());
        assert_eq!(Endpoint::system("$UPSTREAM").unwrap().id("dev"), "iothub");
        assert!(Endpoint::system("upstream").is_err());
    }
}
