//! [`LeaseId`]: the bearer secret that names one lease.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::error::{evidence, InvalidInput};

/// Names one lease: 128 random bits from the operating system's random source, and a bearer
/// secret: whoever presents it may renew or release the lease (CONTRACT S6). It travels as
/// UUID text (8-4-4-4-12 hex digits); every bit is random, so it is not a version-4 UUID,
/// whose version and variant fields fix 6 of the 128 bits.
///
/// `Debug` shows only the first 8 hex digits, so that logs never leak a usable secret.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(Uuid);

impl LeaseId {
    /// A fresh lease id of 128 random bits.
    ///
    /// # Panics
    /// If the operating system's random source fails, as `Uuid::new_v4` and every
    /// secret-generating call does: a lease id must never be guessable, so there is no
    /// weaker fallback.
    #[allow(clippy::expect_used)]
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        LeaseId(Uuid::from_bytes(bytes))
    }

    /// The id as 16 bytes, for storage keys.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Reads an id from the 16 bytes [`LeaseId::as_bytes`] gives.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        LeaseId(Uuid::from_bytes(bytes))
    }

    /// A short, non-secret prefix of the id, for logs and messages.
    pub fn short(&self) -> String {
        self.0.simple().to_string()[..8].to_string()
    }
}

impl fmt::Display for LeaseId {
    /// The full UUID text: the wire form. Only the holder should ever see it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({}…)", self.short())
    }
}

impl FromStr for LeaseId {
    type Err = InvalidInput;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text)
            .map(LeaseId)
            .map_err(|error| InvalidInput::MalformedLeaseId {
                given: evidence(text),
                reason: error.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hides_itself_in_debug() {
        let id = LeaseId::random();
        let text = id.to_string();
        assert_eq!(text.parse::<LeaseId>().unwrap(), id);
        assert_eq!(LeaseId::from_bytes(*id.as_bytes()), id);
        assert!(!format!("{id:?}").contains(&text));
        assert!(matches!(
            "nope".parse::<LeaseId>(),
            Err(InvalidInput::MalformedLeaseId { .. })
        ));
    }

    // checks: S6 (a lease id is 128 random bits: no bit is fixed, as a UUID v4's version
    // and variant bits would be)
    #[test]
    fn every_bit_of_a_random_id_varies() {
        let mut seen_one = [0u8; 16];
        let mut seen_zero = [0u8; 16];
        for _ in 0..256 {
            let id = LeaseId::random();
            for (index, byte) in id.as_bytes().iter().enumerate() {
                seen_one[index] |= byte;
                seen_zero[index] |= !byte;
            }
        }
        assert_eq!(seen_one, [0xff; 16], "some bit was never 1");
        assert_eq!(seen_zero, [0xff; 16], "some bit was never 0");
    }
}
