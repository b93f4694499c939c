//! [`KeyId`]: the name of a signing key, carried in every sequencer it signs.

use std::fmt;

use crate::error::{evidence, InvalidInput};

/// The id of a sequencer signing key: 1 to [`KeyId::MAX_BYTES`] of `A-Z a-z 0-9 . _ -`, so
/// it reads well in key files, logs and error messages and needs no escaping anywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// The longest key id, in bytes.
    pub const MAX_BYTES: usize = 64;

    /// Validates a key id.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidInput> {
        let id = id.into();
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if id.is_empty() || id.len() > Self::MAX_BYTES || !id.chars().all(allowed) {
            return Err(InvalidInput::MalformedKeyId {
                given: evidence(&id),
            });
        }
        Ok(KeyId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for KeyId {
    type Err = InvalidInput;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        KeyId::new(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_are_accepted() {
        for good in ["k1", "fenced-2026.a_b", &"x".repeat(64)] {
            assert!(KeyId::new(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65), "a\n"] {
            assert!(
                matches!(KeyId::new(bad), Err(InvalidInput::MalformedKeyId { .. })),
                "{bad:?}"
            );
        }
    }
}
