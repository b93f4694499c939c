//! Where a write's token comes from: the request body, `fencing-token` metadata, or both.
//! The rules live here, free of any RPC framework, so every edge applies the same ones.

use fenced_types::FencingToken;

use crate::error::Error;

/// Reconciles the token in a request body (`0` meaning "none", as in proto3) with the one
/// from metadata (already parsed).
///
/// Either may be absent; if both are present they must agree ([`Error::TokenMismatch`]);
/// if neither is, the write is refused ([`Error::MissingToken`]).
pub fn reconcile(body: u64, metadata: Option<FencingToken>) -> Result<FencingToken, Error> {
    let body = if body == 0 {
        None
    } else {
        FencingToken::new(body).ok()
    };
    match (body, metadata) {
        (Some(body), Some(metadata)) if body != metadata => {
            Err(Error::TokenMismatch { body, metadata })
        }
        (Some(token), _) | (None, Some(token)) => Ok(token),
        (None, None) => Err(Error::MissingToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: u64) -> FencingToken {
        FencingToken::new(v).unwrap()
    }

    #[test]
    fn either_source_or_both_agreeing() {
        assert_eq!(reconcile(7, None), Ok(t(7)));
        assert_eq!(reconcile(0, Some(t(7))), Ok(t(7)));
        assert_eq!(reconcile(7, Some(t(7))), Ok(t(7)));
        assert_eq!(reconcile(0, None), Err(Error::MissingToken));
        assert_eq!(
            reconcile(7, Some(t(8))),
            Err(Error::TokenMismatch {
                body: t(7),
                metadata: t(8)
            })
        );
    }
}
