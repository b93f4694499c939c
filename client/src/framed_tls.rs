//! TLS for the framed session ([`Config::framed_tls`](crate::Config::framed_tls)): the
//! rustls connector that wraps each framed connection, built once when the client connects.
//!
//! Why a setting of its own: the gRPC side's TLS is tonic's `ClientTlsConfig`, which
//! cannot be read back, so the framed connection cannot borrow its trust. The connector
//! uses the same rustls and provider (ring) as tonic's `tls-ring`.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::config::FramedTls;
use crate::error::Error;

/// Wraps framed connections in TLS, verifying the server against the configured CA.
pub(crate) struct FramedConnector {
    /// rustls, with the CA as its only root.
    connector: TlsConnector,
    /// The name the server's certificate must carry.
    name: ServerName<'static>,
}

impl FramedConnector {
    /// Builds the connector for the framed listener at `addr` (`host:port`): the name to
    /// verify is [`FramedTls::domain`], or else `addr`'s host. Fails with a config error
    /// naming `framed_tls` when the CA or the name cannot be used.
    pub(crate) fn new(tls: &FramedTls, addr: &str) -> Result<FramedConnector, Error> {
        let bad = |why: String| Error::Config {
            field: "framed_tls",
            why,
        };
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(&tls.ca_certificate_pem) {
            let certificate =
                certificate.map_err(|e| bad(format!("the CA is not PEM certificates: {e}")))?;
            roots
                .add(certificate)
                .map_err(|e| bad(format!("the CA certificate is unusable: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("the CA holds no certificate".into()));
        }
        let host = match &tls.domain {
            Some(domain) => domain.clone(),
            None => host_of(addr).to_string(),
        };
        let name = ServerName::try_from(host.clone())
            .map_err(|e| bad(format!("{host:?} cannot be verified as a server name: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(FramedConnector {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Runs the TLS handshake on a fresh connection to the framed listener.
    pub(crate) async fn wrap(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), stream).await
    }
}

/// The host part of `host:port`, without the brackets of an IPv6 address.
fn host_of(addr: &str) -> &str {
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
    fn a_ca_that_is_not_pem_is_a_config_error_naming_the_field() {
        let tls = FramedTls::new(b"not a certificate".to_vec());
        match FramedConnector::new(&tls, "localhost:7501") {
            Err(Error::Config { field, why }) => {
                assert_eq!(field, "framed_tls");
                assert!(why.contains("no certificate"), "{why}");
            }
            Err(other) => panic!("expected a config error, got {other}"),
            Ok(_) => panic!("a CA without a certificate was accepted"),
        }
    }
}
