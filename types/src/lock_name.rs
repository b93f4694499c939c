//! [`LockName`]: a validated lock or resource name.

use std::borrow::Borrow;
use std::fmt;

use crate::error::InvalidInput;

/// A lock name (also used for the gate's resource names): UTF-8, 1 to
/// [`LockName::MAX_BYTES`] bytes, no control characters. Being a `String` underneath, it is
/// UTF-8 by construction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockName(String);

impl LockName {
    /// The longest name the protocol allows, in bytes (CONTRACT, "Words").
    pub const MAX_BYTES: usize = 256;

    /// Validates a name against the protocol's rules.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidInput> {
        Self::with_max_len(name, Self::MAX_BYTES)
    }

    /// Validates a name against a stricter length limit (a server may configure one);
    /// `max` above [`LockName::MAX_BYTES`] is treated as that.
    pub fn with_max_len(name: impl Into<String>, max: usize) -> Result<Self, InvalidInput> {
        let name = name.into();
        let max = max.min(Self::MAX_BYTES);
        if name.is_empty() {
            return Err(InvalidInput::EmptyName { max });
        }
        if name.len() > max {
            return Err(InvalidInput::NameTooLong {
                len: name.len(),
                max,
            });
        }
        if let Some((at, ch)) = name.char_indices().find(|(_, ch)| ch.is_control()) {
            return Err(InvalidInput::ControlCharacter { ch, at });
        }
        Ok(LockName(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as bytes, for storage keys.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for LockName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for LockName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_the_name_rules() {
        assert!(LockName::new("orders/primary").is_ok());
        assert!(LockName::new("ünïcødé").is_ok());
        assert_eq!(LockName::new(""), Err(InvalidInput::EmptyName { max: 256 }));
        assert!(LockName::new("x".repeat(256)).is_ok());
        assert_eq!(
            LockName::new("x".repeat(257)),
            Err(InvalidInput::NameTooLong { len: 257, max: 256 })
        );
        assert_eq!(
            LockName::new("a\nb"),
            Err(InvalidInput::ControlCharacter { ch: '\n', at: 1 })
        );
        assert_eq!(
            LockName::with_max_len("abcd", 3),
            Err(InvalidInput::NameTooLong { len: 4, max: 3 })
        );
    }
}
