//! Why a protocol value was refused.

/// A value that does not satisfy the protocol's rules; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// A lock or resource name that is empty.
    #[error("name is empty: names are 1 to {max} bytes")]
    EmptyName {
        /// The longest name allowed.
        max: usize,
    },
    /// A lock or resource name that is longer than allowed.
    #[error("name is {len} bytes long: names are 1 to {max} bytes")]
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The longest name allowed.
        max: usize,
    },
    /// A lock or resource name containing a control character.
    #[error("name contains control character {ch:?} at byte {at}")]
    ControlCharacter {
        /// The offending character.
        ch: char,
        /// Its byte offset in the name.
        at: usize,
    },
    /// A lease id that is not the text of a UUID.
    #[error("lease id {given:?} is not a UUID: {reason}")]
    MalformedLeaseId {
        /// What was presented (cut to 64 characters).
        given: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A fencing token of zero: zero means "no token" and is never issued.
    #[error("fencing token 0 is never issued: tokens start at 1")]
    ZeroToken,
    /// A sequencer key id that is not 1 to 64 of `A-Z a-z 0-9 . _ -`.
    #[error("key id {given:?} is not 1 to 64 of A-Z a-z 0-9 . _ -")]
    MalformedKeyId {
        /// What was presented (cut to 64 characters).
        given: String,
    },
    /// A fencing token that is not a decimal `u64`.
    #[error("fencing token {given:?} is not a decimal number from 1 to 2^64-1")]
    MalformedToken {
        /// What was presented (cut to 64 characters).
        given: String,
    },
}

/// Cuts untrusted input to a length that is safe to echo back in an error message.
pub(crate) fn evidence(text: &str) -> String {
    text.chars().take(64).collect()
}
