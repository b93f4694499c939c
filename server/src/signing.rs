//! Sequencers on the server: the signing key, read when the server opens, and the signing
//! of each grant's answer.
//!
//! With a signing key (`--signing-key FILE --signing-key-id ID`), every grant's
//! `AcquireResponse` (unary, the `Session` stream over gRPC or framed TCP, queued
//! handoffs) carries a [`Sequencer`](fenced_types::Sequencer): the lock, the token and the
//! key id, signed with Ed25519. Without one the field stays empty and nothing is signed,
//! so the grant path costs what it did. The server prints the key's public-keys line at
//! start, for the verifiers' file.
//!
//! In a cluster only the leader grants, so only the leader signs, with the key configured
//! on that member. Members may share one key (one line in the verifiers' file) or each
//! have its own key id (every member's line in the file): both verify, since a verifier
//! accepts every key its file lists.

use std::path::PathBuf;
use std::sync::Arc;

use fenced_proto::v1 as pb;
use fenced_types::sequencer::SigningKey;
use fenced_types::{FencingToken, KeyId, LockName};

use crate::error::Error;

/// Where the signing key is and the id its sequencers carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyFile {
    /// The Ed25519 private key, PKCS#8 DER (`fencectl keygen` writes one).
    pub path: PathBuf,
    /// The key's id, as the verifiers' public-keys file lists it.
    pub key_id: KeyId,
}

/// Reads the signing key, naming the file if it cannot be read or is not an Ed25519
/// PKCS#8 key.
pub fn load(file: &SigningKeyFile) -> Result<Arc<SigningKey>, Error> {
    let unusable = |problem: String| Error::SigningKey {
        path: file.path.clone(),
        problem,
    };
    let pkcs8 = std::fs::read(&file.path).map_err(|e| unusable(e.to_string()))?;
    let key =
        SigningKey::from_pkcs8(file.key_id.clone(), &pkcs8).map_err(|e| unusable(e.to_string()))?;
    Ok(Arc::new(key))
}

/// Puts the grant's sequencer into its answer. An answer that does not name a valid lock
/// and token (it always does: they come from the table) is left unsigned.
pub fn sign(signer: &SigningKey, lock: &LockName, response: &mut pb::AcquireResponse) {
    if let Ok(token) = FencingToken::new(response.token) {
        response.sequencer = signer.sign(lock, token).encode();
    }
}

#[cfg(test)]
mod tests {
    use fenced_types::sequencer::{generate_key, PublicKeys};
    use fenced_types::Sequencer;

    use super::*;

    // checks: S8
    #[test]
    fn a_signed_answer_verifies_and_a_missing_or_bad_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let key_id = KeyId::new("k1").unwrap();
        let generated = generate_key(&key_id).unwrap();
        let path = dir.path().join("k1.pk8");
        std::fs::write(&path, &generated.pkcs8).unwrap();
        let signer = load(&SigningKeyFile {
            path: path.clone(),
            key_id,
        })
        .unwrap();
        let lock = LockName::new("orders").unwrap();
        let mut response = pb::AcquireResponse {
            token: 34,
            ..Default::default()
        };
        sign(&signer, &lock, &mut response);
        let sequencer = Sequencer::decode(&response.sequencer).unwrap();
        let keys = PublicKeys::parse(&generated.public_line).unwrap();
        assert_eq!(
            keys.verify_sequencer_for(&lock, &sequencer).unwrap().get(),
            34
        );

        for (path, words) in [
            (dir.path().join("absent"), "No such file"),
            (dir.path().to_path_buf(), "Is a directory"),
        ] {
            let error = load(&SigningKeyFile {
                path,
                key_id: KeyId::new("k1").unwrap(),
            })
            .unwrap_err();
            assert!(error.to_string().contains(words), "{error}");
        }
        std::fs::write(dir.path().join("junk"), b"not a key").unwrap();
        let error = load(&SigningKeyFile {
            path: dir.path().join("junk"),
            key_id: KeyId::new("k1").unwrap(),
        })
        .unwrap_err();
        assert!(error.to_string().contains("PKCS#8"), "{error}");
    }
}
