//! `schemaVersion` strings, parsed the way IoT Edge parses them (.NET `System.Version`).
//!
//! A version has two to four dot-separated non-negative integers (`major.minor[.build[.revision]]`).
//! `"1"`, `"v1.1"`, `"1.x"` and `""` do not parse. Surrounding whitespace of a component is
//! tolerated, as .NET does.

use std::fmt;
use std::str::FromStr;

/// A parsed `schemaVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Build number, when written.
    pub build: Option<u32>,
    /// Revision, when written (only with a build number).
    pub revision: Option<u32>,
}

impl SchemaVersion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self {
            major,
            minor,
            build: None,
            revision: None,
        }
    }
}

/// A `schemaVersion` that is not a .NET version string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a version (expected major.minor[.build[.revision]])")]
pub struct VersionParseError(pub String);

impl FromStr for SchemaVersion {
    type Err = VersionParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = || VersionParseError(text.to_owned());
        let parts: Vec<&str> = text.split('.').collect();
        if !(2..=4).contains(&parts.len()) {
            return Err(fail());
        }
        let mut numbers = [0u32; 4];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail());
            }
            // .NET components are non-negative Int32 values.
            *slot = part
                .parse::<i32>()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(fail)?;
        }
        Ok(Self {
            major: numbers[0],
            minor: numbers[1],
            build: (parts.len() > 2).then_some(numbers[2]),
            revision: (parts.len() > 3).then_some(numbers[3]),
        })
    }
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(build) = self.build {
            write!(f, ".{build}")?;
            if let Some(revision) = self.revision {
                write!(f, ".{revision}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_dotnet_version() {
        assert_eq!("1.1".parse(), Ok(SchemaVersion::new(1, 1)));
        assert_eq!("01.0".parse(), Ok(SchemaVersion::new(1, 0)));
        let long: SchemaVersion = "1.1.0.7".parse().unwrap();
        assert_eq!((long.build, long.revision), (Some(0), Some(7)));
        assert_eq!(long.to_string(), "1.1.0.7");
        assert_eq!(" 1 . 2 ".parse(), Ok(SchemaVersion::new(1, 2)));
        for bad in [
            "",
            "1",
            "v1.1",
            "1.x",
            "1..1",
            "1.1.1.1.1",
            "-1.0",
            "1.-1",
            "99999999999.0",
        ] {
            assert!(bad.parse::<SchemaVersion>().is_err(), "{bad:?} parsed");
        }
    }
}
