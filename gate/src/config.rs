//! [`Config`]: the gate's limits and its admission rule.

use crate::error::ConfigError;
use crate::rule::Admission;

/// How a [`crate::Gate`] checks its input. Oversized input is refused before the backend
/// is touched, so a client cannot make the store do work it will throw away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The longest key, in bytes (default 1 KiB).
    pub max_key_bytes: usize,
    /// The largest value, in bytes (default 1 MiB).
    pub max_value_bytes: usize,
    /// Whether the gate is on ([`Admission::Fenced`], the default).
    pub admission: Admission,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            admission: Admission::Fenced,
        }
    }
}

impl Config {
    /// The largest value any config may allow: 64 MiB, far above what a key-value write
    /// through one gRPC message should carry.
    pub const MAX_VALUE_LIMIT: usize = 64 * 1024 * 1024;

    /// Checks that the limits can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_key_bytes == 0 || self.max_key_bytes > 64 * 1024 {
            return Err(ConfigError(format!(
                "max_key_bytes is {}: it must be 1 to 65536",
                self.max_key_bytes
            )));
        }
        if self.max_value_bytes > Self::MAX_VALUE_LIMIT {
            return Err(ConfigError(format!(
                "max_value_bytes is {}: it must be at most {}",
                self.max_value_bytes,
                Self::MAX_VALUE_LIMIT
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_fenced() {
        assert_eq!(Config::default().validate(), Ok(()));
        assert_eq!(Config::default().admission, Admission::Fenced);
    }

    #[test]
    fn nonsense_limits_are_refused() {
        let zero_key = Config {
            max_key_bytes: 0,
            ..Config::default()
        };
        assert!(zero_key.validate().is_err());
        let huge_value = Config {
            max_value_bytes: Config::MAX_VALUE_LIMIT + 1,
            ..Config::default()
        };
        assert!(huge_value.validate().is_err());
    }
}
