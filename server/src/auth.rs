//! Who a client is, when authentication is on: [`Authenticator`], from the bearer token it
//! sends (`fenced --auth-tokens FILE`), or [`CertificateIdentity`], from the client
//! certificate it presented (`fenced --client-ca FILE`, over TLS); [`AuthLayer`], the gRPC
//! interceptor that refuses everyone else with `UNAUTHENTICATED` before any handler runs.
//! A call that carries a bearer token is judged by the token alone (a wrong token is
//! refused even on a connection with a good certificate); one without, by its connection's
//! certificate.
//!
//! A certificate's identity is its first DNS name, URI or email address among its subject
//! alternative names, else its subject's common name. The certificate was verified in the
//! TLS handshake against the client CA: a certificate from any other CA never gets this far.
//!
//! The tokens file and the token check live in `fenced_types::service::bearer`, the
//! certificate's identity in `fenced_types::service::certificate` (both shared with
//! `fenced-kv`): one client per line, `IDENTITY SHA256-OF-TOKEN`, compared in constant
//! time.
//!
//! A client sends `authorization: Bearer TOKEN` with every call. Without authentication
//! (the default, for the embedded single node) nothing is checked. The health service stays
//! open either way (load balancers probe it; it says only whether the server serves).

use std::sync::Arc;

use fenced_proto::metadata::ERROR_CODE;
pub use fenced_types::service::bearer::{
    Authenticator, Identity, TokensFileError, Unauthenticated, MAX_IDENTITY_BYTES, MAX_TOKENS,
    UNAUTHENTICATED_CODE,
};
use fenced_types::service::certificate::identify;
pub use fenced_types::service::certificate::CertificateIdentity;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The interceptor in front of every authenticated gRPC service: with authentication on,
/// a call is refused unless a known bearer token or its connection's client certificate
/// names its client, whose [`Identity`] it then carries as a request extension; with
/// authentication off, every call passes.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    /// Bearer tokens, if they authenticate.
    authenticator: Option<Arc<Authenticator>>,
    /// Whether client certificates authenticate.
    certificates: bool,
}

impl AuthLayer {
    /// Checks calls against `authenticator` (`None`: no bearer tokens) and, when
    /// `certificates`, client certificates; neither: authentication off.
    pub fn new(authenticator: Option<Arc<Authenticator>>, certificates: bool) -> AuthLayer {
        AuthLayer {
            authenticator,
            certificates,
        }
    }

    /// Whether any call is checked.
    pub fn is_on(&self) -> bool {
        self.authenticator.is_some() || self.certificates
    }

    /// The identity of a plain HTTP request (the admin listener's) from its
    /// `authorization` header: `Ok(None)` with authentication off; with it on, the bearer
    /// token's identity, or the refusal (a listener without TLS has no client
    /// certificates, so with `--client-ca` alone nothing there authenticates).
    pub fn identify_http(&self, authorization: Option<&[u8]>) -> Result<Option<Identity>, Status> {
        if !self.is_on() {
            return Ok(None);
        }
        match &self.authenticator {
            Some(authenticator) => authenticator
                .authenticate(authorization)
                .map(Some)
                .map_err(refused),
            None => Err(unauthenticated(
                "authentication is on with client certificates only, which the admin \
                 listener (plain HTTP) cannot check: use --auth-tokens for its lock data",
            )),
        }
    }

    /// The caller's identity, or the refusal (the rule is
    /// `fenced_types::service::certificate::identify`, shared with fenced-kv).
    fn identify(&self, request: &Request<()>) -> Result<Identity, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(MetadataValue::as_bytes);
        identify(
            self.authenticator.as_deref(),
            self.certificates,
            header,
            || {
                request
                    .extensions()
                    .get::<crate::grpc_incoming::ConnectionInfo>()
                    .and_then(|info| info.certificate.clone())
            },
        )
        .map_err(|why| unauthenticated(&why))
    }
}

impl Interceptor for AuthLayer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if !self.is_on() {
            return Ok(request);
        }
        let identity = match self.identify(&request) {
            Ok(identity) => identity,
            Err(status) => {
                let peer = request
                    .extensions()
                    .get::<crate::grpc_incoming::ConnectionInfo>()
                    .and_then(|info| info.tcp.remote_addr);
                crate::audit::unauthenticated(peer, status.message());
                return Err(status);
            }
        };
        request.extensions_mut().insert(identity);
        Ok(request)
    }
}

/// A bearer token's refusal as a status.
fn refused(why: Unauthenticated) -> Status {
    unauthenticated(&why.to_string())
}

/// `UNAUTHENTICATED` with `fenced-error: unauthenticated`.
pub fn unauthenticated(why: &str) -> Status {
    let mut status = Status::unauthenticated(why.to_string());
    status
        .metadata_mut()
        .insert(ERROR_CODE, MetadataValue::from_static(UNAUTHENTICATED_CODE));
    status
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
