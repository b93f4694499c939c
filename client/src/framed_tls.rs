//! TLS for the framed session ([`Config::framed_tls`](crate::Config::framed_tls)): the
//! rustls connector that wraps each framed connection, built once when the client connects.
//!
//! Why a setting of its own: the gRPC side's TLS is tonic's `ClientTlsConfig`, which
//! cannot be read back, so the framed connection cannot borrow its trust. The connector
//! uses the same rustls and provider (ring) as tonic's `tls-ring`.

use fenced_proto::framed_tls::{connector, host_of};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
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
        let connector = connector(&tls.ca_certificate_pem).map_err(|e| bad(e.to_string()))?;
        let host = tls.domain.as_deref().unwrap_or_else(|| host_of(addr));
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| bad(format!("{host:?} cannot be verified as a server name: {e}")))?;
        Ok(FramedConnector { connector, name })
    }

    /// Runs the TLS handshake on a fresh connection to the framed listener.
    pub(crate) async fn wrap(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), stream).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
