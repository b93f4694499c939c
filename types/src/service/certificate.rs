//! Client certificates (feature `certificates`): [`CertificateIdentity`], who a client of
//! `fenced` or `fenced-kv` is, from the certificate it presented over TLS when the server
//! checks client certificates (`--client-ca FILE`).
//!
//! A certificate's identity is its first DNS name, URI or email address among its subject
//! alternative names, else its subject's common name. The certificate was verified in the
//! TLS handshake against the client CA: a certificate from any other CA never gets this far.

use std::sync::Arc;

use super::bearer::{Authenticator, Identity, MAX_IDENTITY_BYTES};

/// Who a call is, by the rule `fenced` and `fenced-kv` share when authentication is on: a
/// call that carries an `authorization` header is judged by its bearer token alone (a
/// wrong token is refused even on a connection with a good certificate); one without, by
/// its connection's client certificate, when `certificates` authenticate (`certificate`
/// is asked for it only then); anything else is refused, and the `Err` says why.
pub fn identify(
    tokens: Option<&Authenticator>,
    certificates: bool,
    authorization: Option<&[u8]>,
    certificate: impl FnOnce() -> Option<CertificateIdentity>,
) -> Result<Identity, String> {
    if let (Some(tokens), Some(_)) = (tokens, authorization) {
        return tokens
            .authenticate(authorization)
            .map_err(|why| why.to_string());
    }
    if certificates {
        match certificate() {
            Some(CertificateIdentity::Named(identity)) => return Ok(identity),
            Some(CertificateIdentity::Unnamed(why)) => {
                return Err(format!("the client certificate names no identity: {why}"))
            }
            None => {}
        }
    }
    match tokens {
        Some(tokens) => tokens.authenticate(None).map_err(|why| why.to_string()),
        None => Err(
            "authentication is on: connect with a client certificate the client CA signed"
                .to_string(),
        ),
    }
}

/// The identity a verified client certificate gives, or why it gives none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateIdentity {
    /// The name it carries.
    Named(Identity),
    /// The certificate names nobody (no usable alternative name nor common name), or does
    /// not parse.
    Unnamed(String),
}

impl CertificateIdentity {
    /// The identity of the DER certificate `der` (already verified by the handshake).
    pub fn of(der: &[u8]) -> CertificateIdentity {
        use x509_parser::extensions::GeneralName;
        let certificate = match x509_parser::parse_x509_certificate(der) {
            Ok((_, certificate)) => certificate,
            Err(error) => return CertificateIdentity::Unnamed(format!("does not parse: {error}")),
        };
        let alternative = certificate
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|names| {
                names
                    .value
                    .general_names
                    .iter()
                    .find_map(|name| match name {
                        GeneralName::DNSName(name)
                        | GeneralName::URI(name)
                        | GeneralName::RFC822Name(name) => Some(name.to_string()),
                        _ => None,
                    })
            });
        let common = || {
            certificate
                .subject()
                .iter_common_name()
                .next()
                .and_then(|name| name.as_str().ok())
                .map(str::to_string)
        };
        match alternative.or_else(common) {
            Some(name) if !name.is_empty() && name.len() <= MAX_IDENTITY_BYTES => {
                CertificateIdentity::Named(Identity(Arc::from(name)))
            }
            Some(name) => CertificateIdentity::Unnamed(format!(
                "its name is empty or over {MAX_IDENTITY_BYTES} bytes ({} bytes)",
                name.len()
            )),
            None => CertificateIdentity::Unnamed(
                "it has no DNS, URI or email alternative name and no common name".to_string(),
            ),
        }
    }
}

#[cfg(test)]
#[path = "certificate_tests.rs"]
mod tests;
