//! [`FencingToken`]: the number that only goes up.

use std::fmt;
use std::str::FromStr;

use crate::error::{evidence, InvalidInput};

/// A fencing token: handed out with every grant, strictly greater than every token handed
/// out before it (CONTRACT S1), and attached by the holder to every write it makes.
///
/// Zero is never issued, so a token is always at least 1; the gate uses "no mark yet" for a
/// resource that has seen no token, not zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// The first token a fresh server issues.
    pub const FIRST: FencingToken = FencingToken(1);

    /// Makes a token from its wire value, refusing zero.
    pub fn new(value: u64) -> Result<Self, InvalidInput> {
        if value == 0 {
            Err(InvalidInput::ZeroToken)
        } else {
            Ok(FencingToken(value))
        }
    }

    /// The token's numeric value, for the wire and for storage.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The token after this one, or `None` once the `u64` range is used up (which, at a
    /// million grants a second, takes half a million years).
    pub fn next(self) -> Option<FencingToken> {
        self.0.checked_add(1).map(FencingToken)
    }

    /// Reads a token in the big-endian form [`FencingToken::to_be_bytes`] writes.
    pub fn from_be_bytes(bytes: [u8; 8]) -> Result<Self, InvalidInput> {
        FencingToken::new(u64::from_be_bytes(bytes))
    }

    /// The token as 8 big-endian bytes: sorts like the number, for storage keys and values.
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for FencingToken {
    type Err = InvalidInput;

    /// Parses the decimal text form used in `fencing-token` request metadata.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let value: u64 = text
            .trim()
            .parse()
            .map_err(|_| InvalidInput::MalformedToken {
                given: evidence(text),
            })?;
        FencingToken::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_refused_and_order_is_numeric() {
        assert_eq!(FencingToken::new(0), Err(InvalidInput::ZeroToken));
        let a = FencingToken::new(33).unwrap();
        let b = FencingToken::new(34).unwrap();
        assert!(a < b);
        assert_eq!(a.next(), Some(b));
        assert_eq!(FencingToken::new(u64::MAX).unwrap().next(), None);
    }

    #[test]
    fn text_and_bytes_round_trip() {
        let t: FencingToken = "12345".parse().unwrap();
        assert_eq!(t.get(), 12345);
        assert_eq!(FencingToken::from_be_bytes(t.to_be_bytes()).unwrap(), t);
        assert!(matches!(
            "-1".parse::<FencingToken>(),
            Err(InvalidInput::MalformedToken { .. })
        ));
        assert!(matches!(
            "".parse::<FencingToken>(),
            Err(InvalidInput::MalformedToken { .. })
        ));
        assert_eq!("0".parse::<FencingToken>(), Err(InvalidInput::ZeroToken));
    }
}
