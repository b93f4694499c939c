//! [`BearerToken`] and the interceptor that sends it with every call, for servers with
//! authentication on (`fenced --auth-tokens`): `authorization: Bearer TOKEN` on every
//! unary call and stream the client opens.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A bearer token, kept out of `Debug` output (and so out of logs).
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// The token as given.
    pub fn new(token: impl Into<String>) -> BearerToken {
        BearerToken(token.into())
    }

    /// The `authorization` header's value, or why the token cannot be one (it must be
    /// visible ASCII).
    pub(crate) fn header(&self) -> Result<MetadataValue<Ascii>, String> {
        if self.0.is_empty() || !self.0.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a bearer token must be non-empty visible ASCII".to_string());
        }
        format!("Bearer {}", self.0)
            .parse()
            .map_err(|_| "a bearer token must be non-empty visible ASCII".to_string())
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

/// What every call carries: the bearer token's header, if one is configured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

/// A channel whose calls carry the client's credentials.
pub(crate) type Authed = InterceptedService<Channel, Credentials>;

impl Credentials {
    /// The credentials of `token` (checked when the client is built, so this cannot fail
    /// then; an unusable token here sends none and the server refuses).
    pub(crate) fn of(token: Option<&BearerToken>) -> Credentials {
        Credentials {
            authorization: token.and_then(|token| token.header().ok()),
        }
    }

    /// `channel`, with these credentials on every call.
    pub(crate) fn on(&self, channel: Channel) -> Authed {
        InterceptedService::new(channel, self.clone())
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        Ok(request)
    }
}
