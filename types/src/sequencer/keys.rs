//! Keys (feature `signing`): [`SigningKey`] signs sequencers on the lock server,
//! [`PublicKeys`] verifies them at a gate, [`generate_key`] makes a new pair. Ed25519
//! through `ring` (the crate tonic's TLS already builds).
//!
//! # The public-keys file
//! One key per line, `KEY_ID BASE64URL_PUBLIC_KEY` (the 32-byte Ed25519 public key,
//! unpadded base64url as [`GeneratedKey::public_line`] prints it; padding is tolerated).
//! Blank lines and lines starting with `#` are ignored. Every key in the file is accepted,
//! which is how keys rotate: add the new key to every verifier's file, switch the server to
//! it, and remove the old one once no sequencer it signed is still in use.

use std::collections::HashMap;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use super::{KeyId, Sequencer, SequencerError, SIGNATURE_BYTES};
use crate::{FencingToken, LockName};

/// The most keys a public-keys file may list: rotation needs a handful.
pub const MAX_PUBLIC_KEYS: usize = 1024;

/// The length of an Ed25519 public key.
const PUBLIC_KEY_BYTES: usize = 32;

/// Unpadded base64url that also reads padded text.
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a key file could not be used; names the file's line where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysFileError {
    /// A line of the public-keys file is not `KEY_ID BASE64URL_PUBLIC_KEY`.
    #[error("public keys, line {line}: {problem}")]
    BadLine {
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// Two lines give the same key id.
    #[error("public keys, line {line}: key id {key_id:?} is listed twice")]
    DuplicateKeyId {
        /// The second line's number.
        line: usize,
        /// The id.
        key_id: KeyId,
    },
    /// More keys than [`MAX_PUBLIC_KEYS`].
    #[error("public keys: more than {max} keys")]
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// The file lists no key, so it would refuse every sequencer.
    #[error("public keys: the file lists no key")]
    NoKeys,
    /// The private key is not an Ed25519 PKCS#8 document.
    #[error("the signing key is not an Ed25519 PKCS#8 (v1 or v2) private key: {0}")]
    BadPrivateKey(String),
    /// The random source failed while making a key.
    #[error("could not generate a key: the random source failed")]
    Random,
}

/// The lock server's signing key and its id.
pub struct SigningKey {
    /// The id every sequencer it signs carries.
    key_id: KeyId,
    /// The key pair.
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    /// Shows the id and the public key, never the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_line())
            .finish()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 private key (as [`generate_key`] writes, or `openssl genpkey
    /// -algorithm ed25519 -outform DER`).
    pub fn from_pkcs8(key_id: KeyId, pkcs8: &[u8]) -> Result<Self, KeysFileError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| KeysFileError::BadPrivateKey(e.to_string()))?;
        Ok(SigningKey { key_id, pair })
    }

    /// The key's id.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// This key's line for the verifiers' public-keys file.
    pub fn public_line(&self) -> String {
        public_line(&self.key_id, self.pair.public_key().as_ref())
    }

    /// Signs a grant.
    pub fn sign(&self, lock: &LockName, token: FencingToken) -> Sequencer {
        let message = super::signed_message(&self.key_id, lock, token);
        let mut signature = [0u8; SIGNATURE_BYTES];
        signature.copy_from_slice(self.pair.sign(&message).as_ref());
        Sequencer::from_parts(lock.clone(), token, self.key_id.clone(), signature)
    }
}

fn public_line(key_id: &KeyId, public_key: &[u8]) -> String {
    format!("{key_id} {}", URL_SAFE_NO_PAD.encode(public_key))
}

/// A new key pair, from the operating system's random source.
pub struct GeneratedKey {
    /// The private key as PKCS#8 (v2) DER: what `--signing-key` reads. Keep it secret.
    pub pkcs8: Vec<u8>,
    /// The public-keys file line, `KEY_ID BASE64URL_PUBLIC_KEY`.
    pub public_line: String,
}

/// Makes a new Ed25519 key pair for `key_id`.
pub fn generate_key(key_id: &KeyId) -> Result<GeneratedKey, KeysFileError> {
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeysFileError::Random)?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| KeysFileError::BadPrivateKey(e.to_string()))?;
    Ok(GeneratedKey {
        public_line: public_line(key_id, pair.public_key().as_ref()),
        pkcs8: pkcs8.as_ref().to_vec(),
    })
}

/// The public keys a verifier accepts: every key of its public-keys file.
#[derive(Debug, Clone)]
pub struct PublicKeys {
    /// Each key by its id.
    keys: HashMap<KeyId, UnparsedPublicKey<[u8; PUBLIC_KEY_BYTES]>>,
}

impl PublicKeys {
    /// Reads a public-keys file's text (format in the module docs).
    pub fn parse(text: &str) -> Result<Self, KeysFileError> {
        let mut keys = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let bad = |problem: String| KeysFileError::BadLine { line, problem };
            let mut fields = content.split_whitespace();
            let (Some(id), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(bad("expected `KEY_ID BASE64URL_PUBLIC_KEY`".into()));
            };
            let key_id = KeyId::new(id).map_err(|e| bad(e.to_string()))?;
            let bytes = LENIENT_URL_SAFE
                .decode(key)
                .map_err(|_| bad("the public key is not base64url".into()))?;
            let bytes: [u8; PUBLIC_KEY_BYTES] = bytes.try_into().map_err(|b: Vec<u8>| {
                bad(format!(
                    "the public key is {} bytes: an Ed25519 public key is {PUBLIC_KEY_BYTES}",
                    b.len()
                ))
            })?;
            if keys.contains_key(&key_id) {
                return Err(KeysFileError::DuplicateKeyId { line, key_id });
            }
            if keys.len() == MAX_PUBLIC_KEYS {
                return Err(KeysFileError::TooManyKeys {
                    max: MAX_PUBLIC_KEYS,
                });
            }
            keys.insert(key_id, UnparsedPublicKey::new(&ED25519, bytes));
        }
        if keys.is_empty() {
            return Err(KeysFileError::NoKeys);
        }
        Ok(PublicKeys { keys })
    }

    /// The ids of the keys accepted, sorted.
    pub fn key_ids(&self) -> Vec<&KeyId> {
        let mut ids: Vec<_> = self.keys.keys().collect();
        ids.sort();
        ids
    }

    /// Checks a sequencer's signature: its key must be listed and its signature must
    /// cover exactly its key id, lock and token.
    pub fn verify(&self, sequencer: &Sequencer) -> Result<(), SequencerError> {
        let evidence = || {
            (
                sequencer.key_id().clone(),
                sequencer.lock().clone(),
                sequencer.token(),
            )
        };
        let Some(key) = self.keys.get(sequencer.key_id()) else {
            let (key_id, lock, token) = evidence();
            return Err(SequencerError::UnknownKey {
                key_id,
                lock,
                token,
            });
        };
        key.verify(&sequencer.signed_message(), sequencer.signature())
            .map_err(|_| {
                let (key_id, lock, token) = evidence();
                SequencerError::BadSignature {
                    key_id,
                    lock,
                    token,
                }
            })
    }

    /// Decodes `bytes`, verifies the signature, and checks that the sequencer is of
    /// `lock`; returns the verified token.
    pub fn verify_for(
        &self,
        lock: &LockName,
        bytes: &[u8],
    ) -> Result<FencingToken, SequencerError> {
        let sequencer = Sequencer::decode(bytes)?;
        self.verify_sequencer_for(lock, &sequencer)
    }

    /// [`PublicKeys::verify`], then checks that the sequencer is of `lock`.
    pub fn verify_sequencer_for(
        &self,
        lock: &LockName,
        sequencer: &Sequencer,
    ) -> Result<FencingToken, SequencerError> {
        self.verify(sequencer)?;
        if sequencer.lock() != lock {
            return Err(SequencerError::OtherLock {
                key_id: sequencer.key_id().clone(),
                lock: sequencer.lock().clone(),
                token: sequencer.token(),
                resource: lock.clone(),
            });
        }
        Ok(sequencer.token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> (SigningKey, String) {
        let id = KeyId::new(id).unwrap();
        let generated = generate_key(&id).unwrap();
        (
            SigningKey::from_pkcs8(id, &generated.pkcs8).unwrap(),
            generated.public_line,
        )
    }

    #[test]
    fn a_signed_sequencer_verifies_and_round_trips() {
        let (signer, line) = key("k1");
        assert_eq!(signer.public_line(), line);
        let keys = PublicKeys::parse(&format!("# fenced\n\n{line}\n")).unwrap();
        let lock = LockName::new("orders").unwrap();
        let s = signer.sign(&lock, FencingToken::new(34).unwrap());
        keys.verify(&s).unwrap();
        let decoded = Sequencer::from_text(&s.to_text()).unwrap();
        assert_eq!(keys.verify_for(&lock, &decoded.encode()).unwrap().get(), 34);
        assert!(!format!("{signer:?}").contains("pkcs8"));
    }

    #[test]
    fn bad_key_files_are_refused_with_their_line() {
        let (_, line) = key("k1");
        assert_eq!(
            PublicKeys::parse("# nothing\n").unwrap_err(),
            KeysFileError::NoKeys
        );
        assert!(matches!(
            PublicKeys::parse(&format!("{line}\n{line}\n")),
            Err(KeysFileError::DuplicateKeyId { line: 2, .. })
        ));
        for bad in ["k1", "k1 !!!", "k1 AAAA", "bad/id AAAA", "k1 AAAA extra"] {
            assert!(
                matches!(
                    PublicKeys::parse(bad),
                    Err(KeysFileError::BadLine { line: 1, .. })
                ),
                "{bad}"
            );
        }
        assert!(SigningKey::from_pkcs8(KeyId::new("k").unwrap(), b"not a key").is_err());
    }
}
