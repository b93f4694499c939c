//! [`Sequencer`]: a fencing token signed by the lock server, which a gate checks offline.
//!
//! A bare fencing token is a number anyone can read (Describe, Watch, a busy refusal) and
//! present to a gate. A sequencer binds the token to its lock and carries the server's
//! Ed25519 signature over both, so a gate that knows the server's public keys refuses a
//! made-up token, a token of another lock, a tampered number, or a key it does not know,
//! without asking the lock server anything.
//!
//! The format lives here, at the bottom of the workspace, because the server signs and the
//! gates verify, and both must agree on every byte while neither depends on the other.
//!
//! # Wire format, version 1
//! ```text
//! version      u8 = 1
//! key id       u8 length (1..=64), then the id's bytes ([A-Za-z0-9._-])
//! lock name    u16 big-endian length (1..=256), then the name's UTF-8 bytes
//! token        u64 big-endian (never 0)
//! signature    64 bytes: Ed25519 over signed_message(key id, lock, token)
//! ```
//! Nothing may follow the signature. The text form (`fencing-sequencer` metadata, HTTP
//! headers, CLIs) is the same bytes in unpadded base64url (RFC 4648 §5).
//!
//! The signed message is domain-separated and length-prefixed, so it can be confused with
//! no other message the key might sign, and no two (key id, lock, token) triples share one:
//! `b"fenced-sequencer-v1\0" || u8 len || key id || u16 len || lock || u64 token`.
//!
//! # Layout
//! - this file: [`Sequencer`], its encodings, and [`signed_message`].
//! - [`key_id`]: [`KeyId`], the name of a signing key.
//! - [`error`]: [`SequencerError`], why a sequencer was refused, with the evidence.
//! - `keys` (feature `signing`): [`SigningKey`] (sign), [`PublicKeys`] (verify, rotation),
//!   [`generate_key`] (a new key pair).

pub mod error;
pub mod key_id;
#[cfg(feature = "signing")]
pub mod keys;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

pub use error::SequencerError;
pub use key_id::KeyId;
#[cfg(feature = "signing")]
pub use keys::{generate_key, GeneratedKey, KeysFileError, PublicKeys, SigningKey};

use crate::{FencingToken, LockName};

/// The one format version this code writes and reads.
pub const VERSION: u8 = 1;

/// The prefix of every signed message: names the purpose and the version, so a signature
/// made for a sequencer means nothing anywhere else.
pub const DOMAIN: &[u8] = b"fenced-sequencer-v1\0";

/// The length of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// The longest encoded sequencer: version, the longest key id and lock name, the token and
/// the signature.
pub const MAX_ENCODED_BYTES: usize =
    1 + 1 + KeyId::MAX_BYTES + 2 + LockName::MAX_BYTES + 8 + SIGNATURE_BYTES;

/// The longest text form: [`MAX_ENCODED_BYTES`] in unpadded base64.
pub const MAX_TEXT_BYTES: usize = MAX_ENCODED_BYTES.div_ceil(3) * 4;

/// A fencing token with its lock and the lock server's signature over both.
///
/// Decoding checks only the format; whether the signature is good is a question for
/// [`PublicKeys::verify`] (feature `signing`), which a gate asks before it touches a mark.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sequencer {
    /// The lock the token was granted for.
    lock: LockName,
    /// The grant's token.
    token: FencingToken,
    /// The key that signed it.
    key_id: KeyId,
    /// Ed25519 over [`signed_message`]`(key_id, lock, token)`.
    signature: [u8; SIGNATURE_BYTES],
}

/// The bytes a sequencer's signature covers (see the module docs for the layout).
pub fn signed_message(key_id: &KeyId, lock: &LockName, token: FencingToken) -> Vec<u8> {
    let mut message = Vec::with_capacity(
        DOMAIN.len() + 1 + key_id.as_str().len() + 2 + lock.as_bytes().len() + 8,
    );
    message.extend_from_slice(DOMAIN);
    push_key_id(&mut message, key_id);
    push_lock(&mut message, lock);
    message.extend_from_slice(&token.to_be_bytes());
    message
}

fn push_key_id(out: &mut Vec<u8>, key_id: &KeyId) {
    let id = key_id.as_str().as_bytes();
    // A KeyId is at most 64 bytes: the length fits.
    out.push(id.len() as u8);
    out.extend_from_slice(id);
}

fn push_lock(out: &mut Vec<u8>, lock: &LockName) {
    let name = lock.as_bytes();
    // A LockName is at most 256 bytes: the length fits.
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name);
}

impl Sequencer {
    /// Assembles a sequencer from its parts (the signer's job; a verifier decodes).
    pub fn from_parts(
        lock: LockName,
        token: FencingToken,
        key_id: KeyId,
        signature: [u8; SIGNATURE_BYTES],
    ) -> Self {
        Sequencer {
            lock,
            token,
            key_id,
            signature,
        }
    }

    /// The lock the token was granted for (as the sequencer claims, until verified).
    pub fn lock(&self) -> &LockName {
        &self.lock
    }

    /// The token (as the sequencer claims, until verified).
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The id of the key that signed it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The signature.
    pub fn signature(&self) -> &[u8; SIGNATURE_BYTES] {
        &self.signature
    }

    /// The bytes the signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(&self.key_id, &self.lock, self.token)
    }

    /// The compact binary form (`bytes sequencer` fields).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            2 + self.key_id.as_str().len() + 2 + self.lock.as_bytes().len() + 8 + SIGNATURE_BYTES,
        );
        out.push(VERSION);
        push_key_id(&mut out, &self.key_id);
        push_lock(&mut out, &self.lock);
        out.extend_from_slice(&self.token.to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Reads the binary form. Any bytes at all are safe to give: what is not a
    /// well-formed version-1 sequencer is refused with [`SequencerError::Malformed`] or
    /// [`SequencerError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<Self, SequencerError> {
        let mut reader = Reader { bytes };
        let version = reader.take(1, "the version")?[0];
        if version != VERSION {
            return Err(SequencerError::UnsupportedVersion { version });
        }
        let id_len = usize::from(reader.take(1, "the key id's length")?[0]);
        let id = reader.take(id_len, "the key id")?;
        let key_id = std::str::from_utf8(id)
            .ok()
            .and_then(|id| KeyId::new(id).ok())
            .ok_or(SequencerError::Malformed {
                reason: "the key id is not 1 to 64 of [A-Za-z0-9._-]",
            })?;
        let lock_len = reader.take(2, "the lock name's length")?;
        let lock_len = usize::from(u16::from_be_bytes([lock_len[0], lock_len[1]]));
        let lock = reader.take(lock_len, "the lock name")?;
        let lock = std::str::from_utf8(lock)
            .ok()
            .and_then(|name| LockName::new(name).ok())
            .ok_or(SequencerError::Malformed {
                reason: "the lock name is not a valid lock name",
            })?;
        let token = reader.take(8, "the token")?;
        let mut token_bytes = [0u8; 8];
        token_bytes.copy_from_slice(token);
        let token =
            FencingToken::from_be_bytes(token_bytes).map_err(|_| SequencerError::Malformed {
                reason: "the token is 0, which is never issued",
            })?;
        let signature = reader.take(SIGNATURE_BYTES, "the signature")?;
        let mut sig = [0u8; SIGNATURE_BYTES];
        sig.copy_from_slice(signature);
        if !reader.bytes.is_empty() {
            return Err(SequencerError::Malformed {
                reason: "bytes follow the signature",
            });
        }
        Ok(Sequencer {
            lock,
            token,
            key_id,
            signature: sig,
        })
    }

    /// The text form: the binary form in unpadded base64url.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.encode())
    }

    /// Reads the text form; refuses text longer than [`MAX_TEXT_BYTES`] before decoding it.
    pub fn from_text(text: &str) -> Result<Self, SequencerError> {
        let text = text.trim();
        if text.len() > MAX_TEXT_BYTES {
            return Err(SequencerError::Malformed {
                reason: "the text is longer than any sequencer",
            });
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| SequencerError::Malformed {
                reason: "the text is not unpadded base64url",
            })?;
        Sequencer::decode(&bytes)
    }
}

impl std::fmt::Display for Sequencer {
    /// The text form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// Reads fields off the front of a byte slice, refusing to read past its end.
struct Reader<'a> {
    /// What is left to read.
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SequencerError> {
        if self.bytes.len() < n {
            return Err(SequencerError::Truncated { missing: what });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sequencer {
        Sequencer::from_parts(
            LockName::new("orders").unwrap(),
            FencingToken::new(34).unwrap(),
            KeyId::new("k1").unwrap(),
            [7u8; SIGNATURE_BYTES],
        )
    }

    #[test]
    fn binary_and_text_round_trip() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(bytes.len(), 1 + 1 + 2 + 2 + 6 + 8 + 64);
        assert_eq!(Sequencer::decode(&bytes).unwrap(), s);
        assert_eq!(Sequencer::from_text(&s.to_text()).unwrap(), s);
        assert!(!s.to_text().contains(['+', '/', '=']));
    }

    #[test]
    fn the_signed_message_is_domain_separated_and_length_prefixed() {
        let s = sample();
        let message = s.signed_message();
        assert!(message.starts_with(DOMAIN));
        let mut expected = DOMAIN.to_vec();
        expected.extend_from_slice(b"\x02k1\x00\x06orders");
        expected.extend_from_slice(&34u64.to_be_bytes());
        assert_eq!(message, expected);
        // ("a", "bc") and ("ab", "c") sign different bytes.
        let t = FencingToken::new(1).unwrap();
        assert_ne!(
            signed_message(&KeyId::new("a").unwrap(), &LockName::new("bc").unwrap(), t),
            signed_message(&KeyId::new("ab").unwrap(), &LockName::new("c").unwrap(), t)
        );
    }

    // Every prefix, every single-byte change of the header, and garbage: an error, no panic.
    #[test]
    fn truncated_and_garbage_bytes_are_refused_without_panic() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(
                Sequencer::decode(&bytes[..len]).is_err(),
                "a {len}-byte prefix was accepted"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Sequencer::decode(&longer),
            Err(SequencerError::Malformed {
                reason: "bytes follow the signature"
            })
        );
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            Sequencer::decode(&v2),
            Err(SequencerError::UnsupportedVersion { version: 2 })
        );
        for garbage in [&b""[..], b"\x01", b"\x01\xff", &[0xffu8; 600][..], b"34"] {
            assert!(Sequencer::decode(garbage).is_err());
        }
        for text in ["", "34", "!!!!", "a", &"A".repeat(10_000)] {
            assert!(Sequencer::from_text(text).is_err(), "{text:?}");
        }
    }
}
