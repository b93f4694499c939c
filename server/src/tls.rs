//! The server's TLS identity, for both listeners: a rustls acceptor for gRPC
//! ([`crate::grpc_incoming`], announcing HTTP/2 by ALPN as gRPC clients require) and one
//! for the framed `Session` listener ([`crate::framed`]). Both come from the same two PEM
//! files and use the same rustls and provider (ring) as tonic's `tls-ring`.
//!
//! With a client CA (`--client-ca`), the gRPC listener asks every client for a certificate
//! and accepts one only if that CA signed it (a certificate from any other CA fails the
//! handshake); a client may still connect without one, and is then authenticated by a
//! bearer token or refused (`crate::auth`). The certificate's identity travels with the
//! connection into every request ([`crate::auth::CertificateIdentity`]).
//!
//! The files are read and parsed when the server opens, so a certificate or key that cannot
//! be used is a clear error naming the file, before anything is bound or announced.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::error::Error;

/// The server's TLS identity, ready for each listener.
#[derive(Clone)]
pub struct ServerTls {
    /// For the gRPC listener: ALPN `h2`.
    pub grpc: TlsAcceptor,
    /// For the framed `Session` listener.
    pub framed: TlsAcceptor,
}

impl ServerTls {
    /// Reads the certificate chain and the private key (and the client CA, if given),
    /// naming the file that cannot be read or holds nothing usable.
    pub fn load(files: &TlsFiles, client_ca: Option<&Path>) -> Result<ServerTls, Error> {
        let cert_pem = read(&files.cert)?;
        let key_pem = read(&files.key)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unusable(&files.cert, TlsProblem::NotACertificateChain(e)))?;
        if chain.is_empty() {
            return Err(unusable(&files.cert, TlsProblem::NoCertificate));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| unusable(&files.key, TlsProblem::NoPrivateKey(e)))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| unusable(&files.cert, TlsProblem::Protocols(e)))?;
        let framed = builder
            .clone()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| unusable(&files.key, TlsProblem::KeyMismatch(e)))?;
        let mut grpc = match client_ca {
            None => framed.clone(),
            Some(ca) => builder
                .with_client_cert_verifier(client_verifier(ca, provider)?)
                .with_single_cert(chain, key)
                .map_err(|e| unusable(&files.key, TlsProblem::KeyMismatch(e)))?,
        };
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls {
            grpc: TlsAcceptor::from(Arc::new(grpc)),
            framed: TlsAcceptor::from(Arc::new(framed)),
        })
    }
}

/// What is wrong with a TLS file: the evidence of an [`Error::Tls`].
#[derive(Debug, thiserror::Error)]
pub enum TlsProblem {
    /// The file cannot be read.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// The certificate file is not a PEM certificate chain.
    #[error("not a PEM certificate chain: {0}")]
    NotACertificateChain(#[source] pem::Error),
    /// The certificate file holds no certificate.
    #[error("no certificate in it")]
    NoCertificate,
    /// The key file holds no PEM private key.
    #[error("no PEM private key in it: {0}")]
    NoPrivateKey(#[source] pem::Error),
    /// rustls offers no protocol version with the provider.
    #[error("{0}")]
    Protocols(#[source] rustls::Error),
    /// A client CA certificate is not one rustls can trust.
    #[error("not a usable CA certificate: {0}")]
    BadClientCa(#[source] rustls::Error),
    /// The client certificate verifier could not be built from the CA.
    #[error("cannot verify client certificates with it: {0}")]
    ClientVerifier(String),
    /// The private key does not go with the certificate chain.
    #[error("does not go with the certificate chain: {0}")]
    KeyMismatch(#[source] rustls::Error),
}

/// Accepts client certificates that the CA in `path` signed; lets clients without one
/// through the handshake (a bearer token may authenticate them instead).
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, Error> {
    let pem = read(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| unusable(path, TlsProblem::NotACertificateChain(e)))?;
        roots
            .add(cert)
            .map_err(|e| unusable(path, TlsProblem::BadClientCa(e)))?;
    }
    if roots.is_empty() {
        return Err(unusable(path, TlsProblem::NoCertificate));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| unusable(path, TlsProblem::ClientVerifier(e.to_string())))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| unusable(path, TlsProblem::Read(e)))
}

fn unusable(path: &Path, problem: TlsProblem) -> Error {
    Error::Tls {
        path: path.to_path_buf(),
        problem,
    }
}
