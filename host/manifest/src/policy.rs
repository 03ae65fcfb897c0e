//! The small enums of a module definition: type, desired status, restart and image-pull policy.
//!
//! Manifest values are matched case-insensitively (IoT Edge's Newtonsoft enum reader does too);
//! they serialize as IoT Edge writes them (`on-failure`, `running`, …).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! manifest_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value with its manifest spelling, in declaration order.
            pub const ALL: &'static [(&'static str, $name)] = &[$(($text, $name::$variant)),+];

            /// The manifest spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses a manifest value, ignoring ASCII case.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(text))
                    .map(|(_, value)| *value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

manifest_enum! {
    /// How the module runs. Verge's one deviation from IoT Edge: `wasm` beside `docker`.
    ModuleType {
        /// A container (`settings.image` is an image reference).
        Docker = "docker",
        /// A WebAssembly component (`settings.image` names the component file or an OCI reference).
        Wasm = "wasm",
    }
}

manifest_enum! {
    /// The desired status of a module (`status`).
    DesiredStatus {
        /// The module should run.
        Running = "running",
        /// The module should be stopped.
        Stopped = "stopped",
    }
}

manifest_enum! {
    /// `restartPolicy`. Ordered as IoT Edge orders it: `never < on-failure < on-unhealthy < always`;
    /// the restart rules compare against `never`.
    #[derive(PartialOrd, Ord)]
    RestartPolicy {
        /// Never restart.
        Never = "never",
        /// Restart when the module failed.
        OnFailure = "on-failure",
        /// Restart when the module failed or is unhealthy.
        OnUnhealthy = "on-unhealthy",
        /// Always restart a module that is not running.
        Always = "always",
    }
}

manifest_enum! {
    /// `imagePullPolicy`.
    #[derive(Default)]
    ImagePullPolicy {
        /// Pull the image when the module is created (the default).
        #[default]
        OnCreate = "on-create",
        /// Never pull; the image must already be present.
        Never = "never",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_is_ordered() {
        use RestartPolicy::*;
        assert!(Never < OnFailure && OnFailure < OnUnhealthy && OnUnhealthy < Always);
        let mut all: Vec<RestartPolicy> = RestartPolicy::ALL.iter().map(|(_, p)| *p).collect();
        all.reverse();
        all.sort();
        assert_eq!(all, vec![Never, OnFailure, OnUnhealthy, Always]);
    }

    #[test]
    fn parse_ignores_case_and_serde_uses_manifest_spelling() {
        assert_eq!(
            RestartPolicy::parse("On-Failure"),
            Some(RestartPolicy::OnFailure)
        );
        assert_eq!(RestartPolicy::parse("sometimes"), None);
        assert_eq!(ModuleType::parse("WASM"), Some(ModuleType::Wasm));
        assert_eq!(
            serde_json::to_string(&RestartPolicy::OnUnhealthy).unwrap(),
            "\"on-unhealthy\""
        );
        assert_eq!(
            serde_json::from_str::<ImagePullPolicy>("\"on-create\"").unwrap(),
            ImagePullPolicy::OnCreate
        );
        assert_eq!(DesiredStatus::Stopped.to_string(), "stopped");
        assert_eq!(ImagePullPolicy::default(), ImagePullPolicy::OnCreate);
    }
}
