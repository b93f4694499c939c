//! TLS for the framed `Session` protocol ([`crate::framed`], point 0), client side: the
//! rustls connector that trusts a given CA, and the name a connection verifies. Shared by
//! the SDK and the benchmark; the same rustls and provider (ring) as tonic's `tls-ring`.

use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

/// Why a CA cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The PEM text does not parse.
    #[error("the CA is not PEM certificates: {0}")]
    NotPem(rustls::pki_types::pem::Error),
    /// A certificate parses but cannot be a root.
    #[error("the CA certificate is unusable: {0}")]
    Unusable(rustls::Error),
    /// No certificate at all.
    #[error("the CA holds no certificate")]
    Empty,
    /// rustls refused the configuration.
    #[error("{0}")]
    Config(rustls::Error),
}

/// A connector that verifies servers against the CA certificates in `ca_pem` (PEM) alone.
pub fn connector(ca_pem: &[u8]) -> Result<TlsConnector, CaError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(certificate.map_err(CaError::NotPem)?)
            .map_err(CaError::Unusable)?;
    }
    if roots.is_empty() {
        return Err(CaError::Empty);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(CaError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The host part of `host:port`, without the brackets of an IPv6 address: the name a
/// connection to that address verifies, unless told another.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    host.strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_to_verify_is_the_host_of_the_address() {
        assert_eq!(host_of("locks.example.com:7501"), "locks.example.com");
        assert_eq!(host_of("127.0.0.1:7501"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7501"), "::1");
    }

    #[test]
    fn a_ca_without_a_certificate_is_refused() {
        assert!(matches!(
            connector(b"not a certificate"),
            Err(CaError::Empty)
        ));
    }
}
