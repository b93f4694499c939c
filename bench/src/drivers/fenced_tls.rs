//! fenced over TLS (`--fenced-tls-ca`): how the benchmark verifies the server on both of
//! its listeners, with the CA that signed its certificate, so the cost of TLS can be
//! measured on the same workloads.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;
use tonic::transport::{Certificate, ClientTlsConfig};

use crate::error::BenchError;

/// The TLS settings of every connection to one fenced server.
#[derive(Clone)]
pub struct FencedTls {
    /// For the gRPC channels (the name verified is the endpoint's host).
    pub grpc: ClientTlsConfig,
    /// For the framed session's connections.
    framed: TlsConnector,
}

impl std::fmt::Debug for FencedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedTls").finish_non_exhaustive()
    }
}

impl FencedTls {
    /// Trusts the CA certificates in `ca_pem` (PEM).
    pub fn from_ca(ca_pem: &[u8]) -> Result<FencedTls, BenchError> {
        let bad = |why: String| BenchError::Config(format!("--fenced-tls-ca: {why}"));
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem) {
            let certificate = certificate.map_err(|e| bad(format!("not PEM: {e}")))?;
            roots
                .add(certificate)
                .map_err(|e| bad(format!("unusable certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let framed = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(FencedTls {
            grpc: ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)),
            framed: TlsConnector::from(Arc::new(framed)),
        })
    }

    /// The TLS handshake on a connection to the framed listener at `addr` (`host:port`),
    /// verifying `addr`'s host.
    pub async fn wrap(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} is not a server name: {e}"))?;
        self.framed
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))
    }
}
