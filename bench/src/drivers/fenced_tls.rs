//! fenced over TLS (`--fenced-tls-ca`): how the benchmark verifies the server on both of
//! its listeners, with the CA that signed its certificate, so the cost of TLS can be
//! measured on the same workloads.

use fenced_proto::framed_tls::{connector, host_of};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
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
        let framed =
            connector(ca_pem).map_err(|e| BenchError::Config(format!("--fenced-tls-ca: {e}")))?;
        Ok(FencedTls {
            grpc: ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)),
            framed,
        })
    }

    /// The TLS handshake on a connection to the framed listener at `addr` (`host:port`),
    /// verifying `addr`'s host.
    pub async fn wrap(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let host = host_of(addr);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} is not a server name: {e}"))?;
        self.framed
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))
    }
}
