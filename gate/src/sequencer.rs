//! Sequencer mode (feature `sequencer`): the gate verifies the lock server's signature on
//! each write's token, offline, before it touches the mark.
//!
//! A bare fencing token is a number anyone can read from the lock server (Describe, Watch,
//! a busy refusal), so a process that never held the lock can present the holder's token.
//! A [`Sequencer`] binds the token to its lock under the server's Ed25519 signature. Given
//! the server's public keys ([`PublicKeys`], read from a public-keys file), [`admit`]
//! refuses, before any storage work:
//! - a write without a sequencer ([`Error::SequencerRequired`]), even with a valid token;
//! - bytes that are not a sequencer ([`fenced_types::SequencerError::Malformed`] and kin);
//! - a sequencer of a key not in the file ([`fenced_types::SequencerError::UnknownKey`]);
//! - a made-up sequencer, or one whose token, lock or signature was changed
//!   ([`fenced_types::SequencerError::BadSignature`]);
//! - a genuine sequencer of another lock ([`fenced_types::SequencerError::OtherLock`]): the resource
//!   written to is guarded by the lock of the same name.
//!
//! A sequencer that passes gives its token, which then meets the mark exactly as a bare
//! token does (CONTRACT S5): a genuine but old sequencer is still refused as stale.
//!
//! The numeric mode ([`Gate::write`]) stays for gates that cannot verify; a gate chooses
//! one mode for all its writes, since a gate that also took bare tokens would let anyone
//! who read a token write with it.

use fenced_types::sequencer::PublicKeys;
use fenced_types::{FencingToken, LockName, Sequencer};

use crate::backend::Backend;
use crate::error::Error;
use crate::gate::Gate;
use crate::op::{Accepted, WriteOp};

/// The token a write may use on `resource`, from what it presented: its sequencer (the
/// binary form) and the bare token sent with it, if any, which must then agree.
///
/// Verification is a signature check in memory (tens of microseconds); nothing is read or
/// written.
pub fn admit(
    keys: &PublicKeys,
    resource: &LockName,
    sequencer: Option<&[u8]>,
    token: Option<FencingToken>,
) -> Result<FencingToken, Error> {
    let Some(bytes) = sequencer else {
        return Err(Error::SequencerRequired { token });
    };
    let sequencer = Sequencer::decode(bytes).map_err(Error::Sequencer)?;
    admit_sequencer(keys, resource, &sequencer, token)
}

/// [`admit`] for a sequencer already decoded.
pub fn admit_sequencer(
    keys: &PublicKeys,
    resource: &LockName,
    sequencer: &Sequencer,
    token: Option<FencingToken>,
) -> Result<FencingToken, Error> {
    let verified = keys
        .verify_sequencer_for(resource, sequencer)
        .map_err(Error::Sequencer)?;
    match token {
        Some(token) if token != verified => Err(Error::SequencerTokenMismatch {
            sequencer: verified,
            token,
        }),
        _ => Ok(verified),
    }
}

impl<B: Backend> Gate<B> {
    /// [`Gate::write`] in sequencer mode: verifies `sequencer` against `keys` and
    /// `resource` first ([`admit`]); a refused sequencer leaves the store untouched.
    pub fn write_sequenced(
        &self,
        keys: &PublicKeys,
        resource: &LockName,
        sequencer: &[u8],
        op: &WriteOp,
    ) -> Result<Accepted, Error> {
        self.check_op(op)?;
        let token = admit(keys, resource, Some(sequencer), None)?;
        self.write(resource, token, op)
    }

    /// [`Gate::fence`] in sequencer mode: verifies `sequencer` first ([`admit`]).
    pub fn fence_sequenced(
        &self,
        keys: &PublicKeys,
        resource: &LockName,
        sequencer: &[u8],
    ) -> Result<FencingToken, Error> {
        let token = admit(keys, resource, Some(sequencer), None)?;
        self.fence(resource, token)
    }
}

/// Why sequencers are worth their bytes: the refusals below are each what a bare token
/// cannot tell apart from the holder's own write.
#[cfg(test)]
mod tests {
    use fenced_types::sequencer::{generate_key, SigningKey, SIGNATURE_BYTES};
    use fenced_types::KeyId;

    use fenced_types::SequencerError;

    use super::*;
    use crate::MemoryBackend;

    fn t(v: u64) -> FencingToken {
        FencingToken::new(v).unwrap()
    }

    fn name(n: &str) -> LockName {
        LockName::new(n).unwrap()
    }

    fn signer(id: &str) -> (SigningKey, String) {
        let id = KeyId::new(id).unwrap();
        let generated = generate_key(&id).unwrap();
        (
            SigningKey::from_pkcs8(id, &generated.pkcs8).unwrap(),
            generated.public_line,
        )
    }

    /// A gate with one genuine write (token 5 on `orders`, signed by `k1`), the keys that
    /// verify it, and the signer.
    fn setup() -> (Gate<MemoryBackend>, PublicKeys, SigningKey) {
        let (k1, line) = signer("k1");
        let keys = PublicKeys::parse(&line).unwrap();
        let gate = Gate::new(MemoryBackend::new());
        let genuine = k1.sign(&name("orders"), t(5)).encode();
        gate.write_sequenced(&keys, &name("orders"), &genuine, &WriteOp::put("k", "v5"))
            .unwrap();
        (gate, keys, k1)
    }

    /// The refused write left value and mark as they were.
    fn unchanged(gate: &Gate<MemoryBackend>) {
        let stored = gate.read(&name("orders"), b"k").unwrap().unwrap();
        assert_eq!((stored.value.as_slice(), stored.token), (&b"v5"[..], t(5)));
        assert_eq!(gate.mark(&name("orders")).unwrap(), Some(t(5)));
    }

    fn refused_write(
        gate: &Gate<MemoryBackend>,
        keys: &PublicKeys,
        bytes: &[u8],
    ) -> Result<Accepted, Error> {
        gate.write_sequenced(keys, &name("orders"), bytes, &WriteOp::put("k", "forged"))
    }

    // checks: S5, S8
    #[test]
    fn a_made_up_sequencer_is_refused_as_a_bad_signature() {
        let (gate, keys, _) = setup();
        let made_up = Sequencer::from_parts(
            name("orders"),
            t(1_000),
            KeyId::new("k1").unwrap(),
            [0u8; SIGNATURE_BYTES],
        );
        assert_eq!(
            refused_write(&gate, &keys, &made_up.encode()),
            Err(Error::Sequencer(SequencerError::BadSignature {
                key_id: KeyId::new("k1").unwrap(),
                lock: name("orders"),
                token: t(1_000),
            }))
        );
        assert_eq!(
            gate.fence_sequenced(&keys, &name("orders"), &made_up.encode())
                .unwrap_err()
                .to_string(),
            "sequencer refused: sequencer has a bad signature for key \"k1\" (lock \"orders\", \
             token 1000): forged or tampered with"
        );
        unchanged(&gate);
    }

    // checks: S5, S8
    #[test]
    fn a_sequencer_of_another_lock_is_refused() {
        let (gate, keys, k1) = setup();
        let other = k1.sign(&name("invoices"), t(1_000)).encode();
        assert_eq!(
            refused_write(&gate, &keys, &other),
            Err(Error::Sequencer(SequencerError::OtherLock {
                key_id: KeyId::new("k1").unwrap(),
                lock: name("invoices"),
                token: t(1_000),
                resource: name("orders"),
            }))
        );
        unchanged(&gate);
    }

    // checks: S5, S8
    #[test]
    fn a_tampered_token_is_refused() {
        let (gate, keys, k1) = setup();
        let mut bytes = k1.sign(&name("orders"), t(6)).encode();
        // The token is the 8 bytes before the 64-byte signature: make it 1,000,006.
        let at = bytes.len() - SIGNATURE_BYTES - 8;
        bytes[at..at + 8].copy_from_slice(&1_000_006u64.to_be_bytes());
        assert!(matches!(
            refused_write(&gate, &keys, &bytes),
            Err(Error::Sequencer(SequencerError::BadSignature { token, .. })) if token == t(1_000_006)
        ));
        unchanged(&gate);
    }

    // checks: S5, S8
    #[test]
    fn a_tampered_signature_is_refused() {
        let (gate, keys, k1) = setup();
        let mut bytes = k1.sign(&name("orders"), t(6)).encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            refused_write(&gate, &keys, &bytes),
            Err(Error::Sequencer(SequencerError::BadSignature { token, .. })) if token == t(6)
        ));
        unchanged(&gate);
    }

    // checks: S5, S8
    #[test]
    fn a_sequencer_of_an_unknown_key_is_refused() {
        let (gate, keys, _) = setup();
        // A real key pair, signing correctly, that the gate's file does not list; and one
        // that reuses a listed id with another key (a bad signature under k1's key).
        let (stranger, _) = signer("k9");
        let (impostor, _) = signer("k1");
        assert_eq!(
            refused_write(&gate, &keys, &stranger.sign(&name("orders"), t(6)).encode()),
            Err(Error::Sequencer(SequencerError::UnknownKey {
                key_id: KeyId::new("k9").unwrap(),
                lock: name("orders"),
                token: t(6),
            }))
        );
        assert!(matches!(
            refused_write(&gate, &keys, &impostor.sign(&name("orders"), t(6)).encode()),
            Err(Error::Sequencer(SequencerError::BadSignature { .. }))
        ));
        unchanged(&gate);
    }

    // checks: S5, S8
    #[test]
    fn truncated_and_garbage_bytes_are_refused_without_panic() {
        let (gate, keys, k1) = setup();
        let genuine = k1.sign(&name("orders"), t(6)).encode();
        for len in 0..genuine.len() {
            let refused = refused_write(&gate, &keys, &genuine[..len]).unwrap_err();
            assert!(
                matches!(&refused, Error::Sequencer(e) if e.is_malformed()),
                "prefix of {len} bytes: {refused:?}"
            );
            assert!(refused.to_string().starts_with("sequencer refused: "));
        }
        for garbage in [&b"6"[..], &[0xff; 64][..], &[1u8; 1000][..]] {
            assert!(matches!(
                refused_write(&gate, &keys, garbage),
                Err(Error::Sequencer(e)) if e.is_malformed()
            ));
        }
        unchanged(&gate);
    }

    // checks: S5, S8
    #[test]
    fn a_bare_token_is_refused_and_a_disagreeing_one_too() {
        let (_gate, keys, k1) = setup();
        assert_eq!(
            admit(&keys, &name("orders"), None, Some(t(6))),
            Err(Error::SequencerRequired { token: Some(t(6)) })
        );
        let genuine = k1.sign(&name("orders"), t(6)).encode();
        assert_eq!(
            admit(&keys, &name("orders"), Some(&genuine), Some(t(7))),
            Err(Error::SequencerTokenMismatch {
                sequencer: t(6),
                token: t(7)
            })
        );
        assert_eq!(
            admit(&keys, &name("orders"), Some(&genuine), Some(t(6))),
            Ok(t(6))
        );
    }

    // A genuine sequencer still meets the mark: an old holder's is stale.
    // checks: S5
    #[test]
    fn a_genuine_but_old_sequencer_is_stale() {
        let (gate, keys, k1) = setup();
        let old = k1.sign(&name("orders"), t(4)).encode();
        assert!(matches!(
            refused_write(&gate, &keys, &old),
            Err(Error::StaleToken { presented, current, .. }) if (presented, current) == (t(4), t(5))
        ));
        unchanged(&gate);
    }

    // Rotation: every key of the file is accepted; the one dropped from it is not.
    // checks: S5, S8
    #[test]
    fn every_listed_key_is_accepted_so_keys_rotate() {
        let (gate, keys, k1) = setup();
        let (k2, line2) = signer("k2");
        let k1_line = k1.public_line();
        let both = PublicKeys::parse(&format!("# old\n{k1_line}\n# new\n{line2}\n")).unwrap();
        let lock = name("orders");
        gate.write_sequenced(
            &both,
            &lock,
            &k1.sign(&lock, t(6)).encode(),
            &WriteOp::put("k", "v6"),
        )
        .unwrap();
        gate.write_sequenced(
            &both,
            &lock,
            &k2.sign(&lock, t(7)).encode(),
            &WriteOp::put("k", "v7"),
        )
        .unwrap();
        let only_new = PublicKeys::parse(&line2).unwrap();
        assert!(matches!(
            gate.write_sequenced(
                &only_new,
                &lock,
                &k1.sign(&lock, t(8)).encode(),
                &WriteOp::put("k", "v8")
            ),
            Err(Error::Sequencer(SequencerError::UnknownKey { .. }))
        ));
        assert_eq!(gate.mark(&lock).unwrap(), Some(t(7)));
        drop(keys);
    }
}
