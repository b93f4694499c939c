//! Reads the sequencer a request carries: `fencing-sequencer` metadata (the text form) or
//! the request body's `bytes sequencer` field (the binary form), or both, which must agree.

use fenced_proto::metadata::FENCING_SEQUENCER;
use fenced_types::{Sequencer, SequencerError};
use tonic::metadata::MetadataMap;
use tonic::Request;

use crate::error::Error;

/// The sequencer in `fencing-sequencer` metadata: `Ok(None)` if absent; refused if it is
/// not one well-formed sequencer, or given several times with different values. Only the
/// format is checked here; the signature is the verifier's (`sequencer::admit`).
pub fn metadata_sequencer(metadata: &MetadataMap) -> Result<Option<Sequencer>, Error> {
    let mut found: Option<Sequencer> = None;
    for value in metadata.get_all(FENCING_SEQUENCER) {
        let text = value.to_str().map_err(|_| {
            Error::Sequencer(SequencerError::Malformed {
                reason: "the `fencing-sequencer` metadata is not ASCII",
            })
        })?;
        let sequencer = Sequencer::from_text(text).map_err(Error::Sequencer)?;
        match &found {
            Some(earlier) if *earlier != sequencer => return Err(Error::SequencerMismatch),
            _ => found = Some(sequencer),
        }
    }
    Ok(found)
}

/// The token a write may use on `resource` in sequencer mode: the verified token of the
/// sequencer the request carries ([`sequencer_of`]), which any bare token sent with it
/// (body or `fencing-token` metadata) must equal. No sequencer is refused
/// ([`Error::SequencerRequired`], `PERMISSION_DENIED`), even with a valid bare token; so is
/// a forged, tampered, unknown-key or other-lock one (`crate::sequencer::admit`). Nothing
/// is read or written: call it before the gate.
#[cfg(feature = "sequencer")]
pub fn sequenced_token_of<T>(
    request: &Request<T>,
    keys: &fenced_types::sequencer::PublicKeys,
    resource: &fenced_types::LockName,
    body_token: u64,
    body_sequencer: &[u8],
) -> Result<fenced_types::FencingToken, Error> {
    let metadata = match request.extensions().get::<super::PresentedToken>() {
        Some(super::PresentedToken(token)) => Some(*token),
        None => super::metadata_token(request.metadata())?,
    };
    let token = match crate::token_source::reconcile(body_token, metadata) {
        Ok(token) => Some(token),
        Err(Error::MissingToken) => None,
        Err(other) => return Err(other),
    };
    let Some(sequencer) = sequencer_of(request, body_sequencer)? else {
        return Err(Error::SequencerRequired { token });
    };
    crate::sequencer::admit_sequencer(keys, resource, &sequencer, token)
}

/// The sequencer a request carries: the body's (`body` empty meaning none, as in proto3)
/// and the metadata's, which must agree if both are given.
pub fn sequencer_of<T>(request: &Request<T>, body: &[u8]) -> Result<Option<Sequencer>, Error> {
    let metadata = metadata_sequencer(request.metadata())?;
    let body = if body.is_empty() {
        None
    } else {
        Some(Sequencer::decode(body).map_err(Error::Sequencer)?)
    };
    match (body, metadata) {
        (Some(body), Some(metadata)) if body != metadata => Err(Error::SequencerMismatch),
        (Some(sequencer), _) | (None, Some(sequencer)) => Ok(Some(sequencer)),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use fenced_types::sequencer::SIGNATURE_BYTES;
    use fenced_types::{FencingToken, KeyId, LockName};

    use super::*;

    fn sample(token: u64) -> Sequencer {
        Sequencer::from_parts(
            LockName::new("orders").unwrap(),
            FencingToken::new(token).unwrap(),
            KeyId::new("k1").unwrap(),
            [3u8; SIGNATURE_BYTES],
        )
    }

    fn with_metadata(values: &[&str]) -> Request<()> {
        let mut request = Request::new(());
        for v in values {
            request
                .metadata_mut()
                .append(FENCING_SEQUENCER, v.parse().unwrap());
        }
        request
    }

    // checks: S8
    #[test]
    fn body_metadata_or_both_agreeing() {
        let (a, b) = (sample(5), sample(6));
        let request = with_metadata(&[&a.to_text()]);
        assert_eq!(sequencer_of(&request, &[]), Ok(Some(a.clone())));
        assert_eq!(sequencer_of(&request, &a.encode()), Ok(Some(a.clone())));
        assert_eq!(
            sequencer_of(&request, &b.encode()),
            Err(Error::SequencerMismatch)
        );
        assert_eq!(
            sequencer_of(&Request::new(()), &b.encode()),
            Ok(Some(b.clone()))
        );
        assert_eq!(sequencer_of(&Request::new(()), &[]), Ok(None));
        assert_eq!(
            sequencer_of(&with_metadata(&[&a.to_text(), &b.to_text()]), &[]),
            Err(Error::SequencerMismatch)
        );
        for bad in ["34", "not base64!", "AAAA"] {
            assert!(matches!(
                sequencer_of(&with_metadata(&[bad]), &[]),
                Err(Error::Sequencer(e)) if e.is_malformed()
            ));
        }
        let status = tonic::Status::from(sequencer_of(&with_metadata(&["AAAA"]), &[]).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
