//! Reads and checks the `fencing-token` request metadata.

use fenced_proto::metadata::FENCING_TOKEN;
use fenced_types::FencingToken;
use tonic::metadata::MetadataMap;
use tonic::service::{Interceptor, InterceptorLayer};
use tonic::{Request, Status};

use crate::error::Error;
use crate::token_source::reconcile;

/// The token a request carried as `fencing-token` metadata, put into the request's
/// extensions by [`FencingTokenInterceptor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresentedToken(pub FencingToken);

/// A tonic interceptor for any service: if a request has `fencing-token` metadata, it must
/// be one decimal token from 1 to 2^64-1, or the request is refused with
/// `INVALID_ARGUMENT` before the service sees it. A valid token is put into the
/// extensions as [`PresentedToken`]. Requests without the metadata pass (the token may be
/// in the body); [`token_of`] then decides.
#[derive(Debug, Clone, Copy, Default)]
pub struct FencingTokenInterceptor;

impl Interceptor for FencingTokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = metadata_token(request.metadata())? {
            request.extensions_mut().insert(PresentedToken(token));
        }
        Ok(request)
    }
}

/// The interceptor as a tower layer: `Server::builder().layer(fenced_gate::grpc::layer())`.
pub fn layer() -> InterceptorLayer<FencingTokenInterceptor> {
    InterceptorLayer::new(FencingTokenInterceptor)
}

/// Parses the `fencing-token` metadata: `Ok(None)` if absent, an error if it is not ASCII,
/// not a decimal token, zero, or given several times with different values.
pub fn metadata_token(metadata: &MetadataMap) -> Result<Option<FencingToken>, Error> {
    let mut found: Option<FencingToken> = None;
    for value in metadata.get_all(FENCING_TOKEN) {
        let text = value.to_str().map_err(|_| {
            Error::InvalidToken(fenced_types::InvalidInput::MalformedToken {
                given: String::from_utf8_lossy(value.as_bytes())
                    .chars()
                    .take(64)
                    .collect(),
            })
        })?;
        let token: FencingToken = text.parse().map_err(Error::InvalidToken)?;
        match found {
            Some(earlier) if earlier != token => {
                return Err(Error::TokenMismatch {
                    body: earlier,
                    metadata: token,
                })
            }
            _ => found = Some(token),
        }
    }
    Ok(found)
}

/// The token a request's write carries: the body's (`0` = none) and the metadata's
/// (from [`PresentedToken`] if the interceptor ran, else parsed here), which must agree if
/// both are given. Neither is `INVALID_ARGUMENT`.
pub fn token_of<T>(request: &Request<T>, body: u64) -> Result<FencingToken, Status> {
    let metadata = match request.extensions().get::<PresentedToken>() {
        Some(PresentedToken(token)) => Some(*token),
        None => metadata_token(request.metadata())?,
    };
    Ok(reconcile(body, metadata)?)
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn with_metadata(values: &[&str]) -> Request<()> {
        let mut request = Request::new(());
        for v in values {
            request
                .metadata_mut()
                .append(FENCING_TOKEN, v.parse().unwrap());
        }
        request
    }

    #[test]
    fn valid_metadata_reaches_the_handler() {
        let request = FencingTokenInterceptor
            .call(with_metadata(&["34"]))
            .unwrap();
        assert_eq!(
            request.extensions().get::<PresentedToken>(),
            Some(&PresentedToken(FencingToken::new(34).unwrap()))
        );
        assert_eq!(token_of(&request, 0).unwrap().get(), 34);
        assert_eq!(token_of(&request, 34).unwrap().get(), 34);
        let mismatch = token_of(&request, 33).unwrap_err();
        assert_eq!(mismatch.code(), Code::InvalidArgument);
        assert!(mismatch.message().contains("33") && mismatch.message().contains("34"));
    }

    #[test]
    fn malformed_zero_and_conflicting_metadata_are_refused() {
        for bad in [
            &["abc"][..],
            &["0"],
            &["-3"],
            &["5", "6"],
            &["99999999999999999999"],
        ] {
            let status = FencingTokenInterceptor
                .call(with_metadata(bad))
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
            assert!(
                status.message().contains("fencing token"),
                "{}",
                status.message()
            );
        }
    }

    #[test]
    fn no_token_anywhere_is_refused_and_body_alone_is_fine() {
        let request = FencingTokenInterceptor.call(Request::new(())).unwrap();
        assert_eq!(
            token_of(&request, 0).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(token_of(&request, 9).unwrap().get(), 9);
        // Without the interceptor, token_of applies the same rules itself.
        assert_eq!(
            token_of(&with_metadata(&["x"]), 0).unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}
