//! Device and module ids, as IoT Hub accepts them: 1 to 128 ASCII characters, letters, digits
//! and `- : . + % _ # * ? ! ( ) , = @ ; $ '`. The rules are the same for devices and modules.
//! `/` is never allowed, so `device/module` names an identity unambiguously.

/// The longest id.
pub const MAX_ID_LEN: usize = 128;

/// The characters besides ASCII letters and digits that an id may contain.
pub const ID_SPECIALS: &str = "-:.+%_#*?!(),=@;$'";

/// Why an id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty.
    #[error("id is empty")]
    Empty,
    /// Longer than [`MAX_ID_LEN`].
    #[error("id is {0} characters long (at most 128)")]
    TooLong(usize),
    /// A character IoT Hub does not allow.
    #[error(
        "id contains {0:?}, which IoT Hub does not allow (ASCII letters, digits and -:.+%_#*?!(),=@;$' only)"
    )]
    BadCharacter(char),
}

/// Checks a device or module id.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if let Some(c) = id
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || ID_SPECIALS.contains(c)))
    {
        return Err(IdError::BadCharacter(c));
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(id.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_ids() {
        for id in [
            "d1",
            "$edgeHub",
            "$edgeAgent",
            "Temp-Sensor_2",
            "n@m.et#st",
            "a:b.c+d%e_f#g*h?i!j(k)l,m=n@o;p$q'r",
            &"x".repeat(128),
        ] {
            assert_eq!(validate_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn refused_ids() {
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(validate_id(&"x".repeat(129)), Err(IdError::TooLong(129)));
        for (id, c) in [
            ("a/b", '/'),
            ("a b", ' '),
            ("a\\b", '\\'),
            ("é", 'é'),
            ("a\"b", '"'),
            ("a&b", '&'),
            ("a\nb", '\n'),
            ("a<b", '<'),
            ("a{b", '{'),
            ("a~b", '~'),
            ("a\0b", '\0'),
        ] {
            assert_eq!(validate_id(id), Err(IdError::BadCharacter(c)), "{id:?}");
        }
    }
}
