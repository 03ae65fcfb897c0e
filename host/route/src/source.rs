//! Where a message comes from, and which messages a route's `FROM` selects.
//!
//! Every message has a [`MessageSource`] path, given by its system properties as Edge Hub's
//! `RoutingMessageConverter` does:
//!
//! | system properties | source | path |
//! |---|---|---|
//! | `messageType` = `twinChangeNotification` (any case) | twin change | `/twinChangeNotifications` |
//! | `connectionModuleId` = `M`, `outputName` = `O` | module output | `/messages/modules/M/outputs/O` |
//! | `connectionModuleId` = `M`, no `outputName` | module | `/messages/modules/M` |
//! | otherwise (a leaf device) | telemetry | `/messages` |
//!
//! A [`SourcePattern`] is a route's `FROM` path, normalised as upstream's `CustomMessageSource`:
//! trim, drop trailing `*`s, drop trailing `/`s unless the path is just `/`. It matches a message
//! when the message's path plus `/` starts with the normalised path plus one `/`, ignoring case.
//! So `/messages/*` selects module messages too, `/messages/modules/M/outputs/*` does not select
//! a message `M` sent without an output, and `/twinChangeNotifications` selects only twin
//! changes. `*` elsewhere is literal (`/*/messages` matches nothing).

use std::fmt;

use verge_message::{Message, names_equal, system};

use crate::dotnet::chars_eq_ignore_case;

/// The source of a message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MessageSource {
    /// A device-to-cloud message from a leaf device: `/messages`.
    Telemetry,
    /// A message a module sent: `/messages/modules/{module}[/outputs/{output}]`.
    Module {
        /// The sending module's id.
        module: String,
        /// The output it was sent on, if any.
        output: Option<String>,
    },
    /// A twin change notification: `/twinChangeNotifications`.
    TwinChange,
}

const TELEMETRY: &str = "/messages";
const MODULES: &str = "/messages/modules/";
const OUTPUTS: &str = "/outputs/";
const TWIN_CHANGE: &str = "/twinChangeNotifications";

impl MessageSource {
    /// The source of `message`, from its system properties.
    pub fn of(message: &Message) -> Self {
        SourceRef::of(message).into_owned()
    }

    /// The source a path names (`/messages`, `/messages/modules/M[/outputs/O]`,
    /// `/twinChangeNotifications`; exact case), if any.
    pub fn parse(path: &str) -> Option<Self> {
        if path == TELEMETRY {
            return Some(Self::Telemetry);
        }
        if path == TWIN_CHANGE {
            return Some(Self::TwinChange);
        }
        let rest = path.strip_prefix(MODULES)?;
        let (module, output) = match rest.split_once('/') {
            None => (rest, None),
            Some((module, tail)) => (module, Some(tail.strip_prefix("outputs/")?)),
        };
        let valid = |s: &str| !s.is_empty() && !s.contains('/');
        if !valid(module) || output.is_some_and(|o| !valid(o)) {
            return None;
        }
        Some(Self::Module {
            module: module.to_owned(),
            output: output.map(str::to_owned),
        })
    }

    /// The source path.
    pub fn path(&self) -> String {
        self.to_string()
    }

    /// Whether this is a device-to-cloud message (the path is under `/messages/`).
    pub fn is_telemetry(&self) -> bool {
        !matches!(self, Self::TwinChange)
    }

    fn as_ref(&self) -> SourceRef<'_> {
        match self {
            Self::Telemetry => SourceRef::Telemetry,
            Self::TwinChange => SourceRef::TwinChange,
            Self::Module { module, output } => SourceRef::Module {
                module,
                output: output.as_deref(),
            },
        }
    }
}

/// A [`MessageSource`] borrowed from a message (what routing uses: no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SourceRef<'m> {
    Telemetry,
    Module {
        module: &'m str,
        output: Option<&'m str>,
    },
    TwinChange,
}

impl<'m> SourceRef<'m> {
    /// The source of `message` (the rule of [`MessageSource::of`]), in one pass over the
    /// system properties.
    pub fn of(message: &'m Message) -> Self {
        let (mut message_type, mut module, mut output) = (None, None, None);
        for (name, value) in message.system().iter() {
            // Scan each name once: ASCII names are compared by length first.
            let ascii = name.is_ascii();
            let is = |wanted: &str| {
                if ascii {
                    name.len() == wanted.len() && name.eq_ignore_ascii_case(wanted)
                } else {
                    names_equal(name, wanted)
                }
            };
            let slot = if is(system::MESSAGE_TYPE) {
                &mut message_type
            } else if is(system::CONNECTION_MODULE_ID) {
                &mut module
            } else if is(system::OUTPUT_NAME) {
                &mut output
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        if message_type
            .flatten()
            .is_some_and(|t| t.eq_ignore_ascii_case(system::TWIN_CHANGE_NOTIFICATION))
        {
            return Self::TwinChange;
        }
        match module.flatten() {
            Some(module) => Self::Module {
                module,
                output: output.flatten(),
            },
            None => Self::Telemetry,
        }
    }

    /// The owned form.
    pub fn into_owned(self) -> MessageSource {
        match self {
            Self::Telemetry => MessageSource::Telemetry,
            Self::TwinChange => MessageSource::TwinChange,
            Self::Module { module, output } => MessageSource::Module {
                module: module.to_owned(),
                output: output.map(str::to_owned),
            },
        }
    }

    /// The path followed by one `/`, in pieces.
    fn pieces(self) -> [&'m str; 5] {
        match self {
            Self::Telemetry => [TELEMETRY, "/", "", "", ""],
            Self::TwinChange => [TWIN_CHANGE, "/", "", "", ""],
            Self::Module {
                module,
                output: None,
            } => [MODULES, module, "/", "", ""],
            // Upstream trims trailing slashes: an empty output name ends at `/outputs/`.
            Self::Module {
                module,
                output: Some(""),
            } => [MODULES, module, "/outputs", "/", ""],
            Self::Module {
                module,
                output: Some(output),
            } => [MODULES, module, OUTPUTS, output, "/"],
        }
    }
}

impl fmt::Display for MessageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Telemetry => f.write_str(TELEMETRY),
            Self::TwinChange => f.write_str(TWIN_CHANGE),
            Self::Module {
                module,
                output: None,
            } => write!(f, "{MODULES}{module}"),
            Self::Module {
                module,
                output: Some(output),
            } => write!(f, "{MODULES}{module}{OUTPUTS}{output}"),
        }
    }
}

/// A route's `FROM` path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourcePattern {
    /// Normalised path (`/`, `/messages`, …).
    path: Box<str>,
    /// The path without trailing `/`, plus one `/`.
    prefix: Box<str>,
}

impl SourcePattern {
    /// The pattern for a `FROM` path. Any text is accepted; an empty one selects everything.
    pub fn new(from: &str) -> Self {
        let trimmed = from.trim().trim_end_matches('*');
        let path = if trimmed.len() > 1 {
            trimmed.trim_end_matches('/')
        } else {
            trimmed
        };
        let prefix = format!("{}/", path.trim().trim_end_matches('/'));
        Self {
            path: path.into(),
            prefix: prefix.into(),
        }
    }

    /// The normalised path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether messages from `source` take this route.
    pub fn matches(&self, source: &MessageSource) -> bool {
        self.matches_ref(source.as_ref())
    }

    /// Case-insensitive: does `source`'s path plus `/` start with the prefix?
    pub(crate) fn matches_ref(&self, source: SourceRef<'_>) -> bool {
        let pieces = source.pieces();
        if self.prefix.is_ascii() {
            // Byte by byte; a difference that involves a non-ASCII byte needs the char path.
            let mut prefix = self.prefix.as_bytes().iter();
            for byte in pieces.iter().flat_map(|p| p.as_bytes()) {
                let Some(p) = prefix.next() else {
                    return true;
                };
                if !p.eq_ignore_ascii_case(byte) {
                    if byte.is_ascii() {
                        return false;
                    }
                    return self.matches_chars(pieces);
                }
            }
            return prefix.next().is_none();
        }
        self.matches_chars(pieces)
    }

    fn matches_chars(&self, pieces: [&str; 5]) -> bool {
        let mut haystack = pieces.into_iter().flat_map(str::chars);
        self.prefix
            .chars()
            .all(|p| haystack.next().is_some_and(|h| chars_eq_ignore_case(h, p)))
    }

    /// Whether this is `/twinChangeNotifications` (where `twin_change_includes` may be used).
    pub fn is_twin_change_notifications(&self) -> bool {
        self.path.eq_ignore_ascii_case(TWIN_CHANGE)
    }
}

impl fmt::Display for SourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(m: &str, o: Option<&str>) -> MessageSource {
        MessageSource::Module {
            module: m.to_owned(),
            output: o.map(str::to_owned),
        }
    }

    #[test]
    fn normalisation() {
        assert_eq!(SourcePattern::new("/*").path(), "/");
        assert_eq!(SourcePattern::new("/").path(), "/");
        assert_eq!(
            SourcePattern::new("/messages/modules/").path(),
            "/messages/modules"
        );
        assert_eq!(SourcePattern::new(" /messages/* ").path(), "/messages");
    }

    #[test]
    fn matching() {
        let out = module("ModId1", Some("Op1"));
        let bare = module("ModId1", None);
        assert!(SourcePattern::new("/messages").matches(&out));
        assert!(SourcePattern::new("/MESSAGES/modules/modid1").matches(&bare));
        assert!(!SourcePattern::new("/messages/modules/ModId1/outputs/*").matches(&bare));
        assert!(!SourcePattern::new("/message").matches(&MessageSource::Telemetry));
        assert!(!SourcePattern::new("/messages").matches(&MessageSource::TwinChange));
        assert!(SourcePattern::new("/").matches(&MessageSource::TwinChange));
    }

    #[test]
    fn sources_of_messages_and_paths() {
        let twin = Message::new(Vec::new())
            .with_system(system::MESSAGE_TYPE, "TwinChangeNotification")
            .with_system(system::CONNECTION_MODULE_ID, "$edgeHub");
        assert_eq!(MessageSource::of(&twin), MessageSource::TwinChange);
        let m = Message::new(Vec::new())
            .with_system(system::CONNECTION_MODULE_ID, "m")
            .with_system(system::OUTPUT_NAME, "o");
        assert_eq!(
            MessageSource::of(&m).path(),
            "/messages/modules/m/outputs/o"
        );
        for path in [
            "/messages",
            "/messages/modules/m",
            "/messages/modules/m/outputs/o",
        ] {
            assert_eq!(MessageSource::parse(path).unwrap().path(), path);
        }
        assert_eq!(MessageSource::parse("/messages/modules/m/x/o"), None);
        assert!(!MessageSource::TwinChange.is_telemetry());
    }
}
