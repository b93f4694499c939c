//! Endpoints and TLS into an SDK [`Client`]: one that holds leases, or one that only
//! reads.

use std::path::PathBuf;
use std::time::Duration;

use fenced_client::Client;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::Error;

/// The default TTL of a client that only reads: it takes no lease, so this is never used
/// on the server.
const READER_TTL: Duration = Duration::from_secs(10);

/// Where the server is and how to trust it.
#[derive(Debug, Clone, Default)]
pub struct ServerEndpoints {
    /// The endpoints, tried in order until one connects: `http://host:port`,
    /// `https://host:port`, or `host:port` (`https://` with a CA, else `http://`); one
    /// scheme for all. Several are the members of a cluster: every call follows the leader
    /// among them.
    pub endpoints: Vec<String>,
    /// The CA certificate (PEM) that signed the server's: turns on TLS.
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry, if not the endpoint's host.
    pub tls_domain: Option<String>,
    /// This client's certificate and private key (PEM files), for a server that
    /// authenticates clients by certificate.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    /// The bearer token sent with every call, for a server with authentication on.
    pub token: Option<String>,
}

impl ServerEndpoints {
    /// The endpoints as URLs.
    fn urls(&self) -> Result<Vec<String>, Error> {
        let urls: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_string()
                } else if self.tls_ca.is_some() {
                    format!("https://{e}")
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if urls.is_empty() {
            return Err(Error::NoEndpoint);
        }
        Ok(urls)
    }

    /// tonic's TLS settings, when a CA is given.
    fn tls(&self) -> Result<Option<ClientTlsConfig>, Error> {
        let Some(path) = &self.tls_ca else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|source| Error::TlsFile {
            what: "CA certificate",
            path: path.clone(),
            source,
        })?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(domain) = &self.tls_domain {
            tls = tls.domain_name(domain.clone());
        }
        if let Some((cert, key)) = &self.tls_identity {
            let read = |what: &'static str, path: &PathBuf| {
                std::fs::read(path).map_err(|source| Error::TlsFile {
                    what,
                    path: path.clone(),
                    source,
                })
            };
            let identity = Identity::from_pem(
                read("client certificate", cert)?,
                read("client private key", key)?,
            );
            tls = tls.identity(identity);
        }
        Ok(Some(tls))
    }

    /// An SDK client of the endpoints (the members of a cluster: it connects to the first
    /// that answers and follows the leader from there), holding leases as `holder` with
    /// `ttl` as their TTL.
    pub async fn client(&self, holder: &str, ttl: Duration) -> Result<Client, Error> {
        let tls = self.tls()?;
        let urls = self.urls()?;
        let mut builder = Client::builder_for_cluster(urls.iter().cloned())
            .holder(holder)
            .default_ttl(ttl);
        if let Some(tls) = tls {
            builder = builder.tls(tls);
        }
        if let Some(token) = &self.token {
            builder = builder.bearer_token(token.clone());
        }
        match builder.connect().await {
            Ok(client) => Ok(client),
            Err(
                e @ (fenced_client::Error::Connect { .. } | fenced_client::Error::NoLeader { .. }),
            ) => Err(Error::Unreachable {
                endpoints: urls.join(","),
                last: e.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// An SDK client that takes no lock, for reading (list, describe, watch, check).
    pub async fn reader(&self) -> Result<Client, Error> {
        let holder = format!("fencectl-{}", std::process::id());
        self.client(&holder, READER_TTL).await
    }
}

/// The bearer token: the first line of `file` if given, else the environment variable
/// `FENCED_TOKEN`, else none.
pub fn bearer_token(file: Option<&std::path::Path>) -> Result<Option<String>, Error> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| Error::TlsFile {
            what: "bearer token file",
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(text.lines().next().map(|line| line.trim().to_string()));
    }
    Ok(std::env::var("FENCED_TOKEN")
        .ok()
        .map(|token| token.trim().to_string())
        .filter(|token| !token.is_empty()))
}
