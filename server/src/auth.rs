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
//! The tokens file holds one client per line, `IDENTITY SHA256`: a name (printable, no
//! spaces, at most [`MAX_IDENTITY_BYTES`] bytes) and the SHA-256 of its token in hex (what
//! `printf %s "$TOKEN" | sha256sum` prints), so the file reveals no token; `#` starts a
//! comment. The server keeps only the digests, hashes the token a request presents and
//! compares it with every digest in constant time (no early exit, so the time a refusal
//! takes says nothing about how close a guess came).
//!
//! A client sends `authorization: Bearer TOKEN` with every call. Without authentication
//! (the default, for the embedded single node) nothing is checked. The health service stays
//! open either way (load balancers probe it; it says only whether the server serves).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fenced_proto::metadata::ERROR_CODE;
use ring::digest::{digest, SHA256};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The longest identity a tokens file may name, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 128;
/// The most tokens a file may hold (each request compares with all of them).
pub const MAX_TOKENS: usize = 10_000;
/// The [`ERROR_CODE`] of an unauthenticated call.
pub const UNAUTHENTICATED_CODE: &str = "unauthenticated";

/// A client the server knows, as a request's extension carries it once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity(pub Arc<str>);

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

/// Why a tokens file cannot be used, with the line that says so.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    /// The file cannot be read.
    #[error("cannot read the tokens file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `IDENTITY SHA256`.
    #[error("tokens file {}, line {line}: {problem}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// The file names no client: authentication on would refuse everyone.
    #[error("tokens file {} names no client", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// One client: its name and its token's digest.
struct Client {
    identity: Identity,
    digest: [u8; 32],
}

/// The clients a tokens file names. See the module documentation.
pub struct Authenticator {
    clients: Vec<Client>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The digests stay out of logs.
        f.debug_struct("Authenticator")
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl Authenticator {
    /// Reads a tokens file, refusing any line it cannot use.
    pub fn from_file(path: &Path) -> Result<Authenticator, TokensFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Authenticator::parse(&text).map_err(|(line, problem)| match line {
            0 => TokensFileError::Empty {
                path: path.to_path_buf(),
            },
            line => TokensFileError::Line {
                path: path.to_path_buf(),
                line,
                problem,
            },
        })
    }

    /// Parses a tokens file's text; an error is the line number (0: the whole file) and
    /// the problem.
    fn parse(text: &str) -> Result<Authenticator, (usize, String)> {
        let mut clients: Vec<Client> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(identity), Some(hex), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err((number, "expected IDENTITY SHA256".to_string()));
            };
            if identity.len() > MAX_IDENTITY_BYTES || identity.chars().any(char::is_control) {
                return Err((
                    number,
                    format!("the identity must be at most {MAX_IDENTITY_BYTES} printable bytes"),
                ));
            }
            let digest = parse_digest(hex).ok_or_else(|| {
                (
                    number,
                    "the token's SHA-256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)"
                        .to_string(),
                )
            })?;
            if clients.iter().any(|client| client.digest == digest) {
                return Err((number, "this token's digest is listed twice".to_string()));
            }
            if clients.len() == MAX_TOKENS {
                return Err((number, format!("more than {MAX_TOKENS} tokens")));
            }
            clients.push(Client {
                identity: Identity(Arc::from(identity)),
                digest,
            });
        }
        if clients.is_empty() {
            return Err((0, String::new()));
        }
        Ok(Authenticator { clients })
    }

    /// The client whose token `authorization` (the header's value) carries, or the
    /// refusal.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Identity, Status> {
        let Some(value) = authorization else {
            return Err(unauthenticated(
                "authentication is on: send `authorization: Bearer TOKEN`",
            ));
        };
        let Some(token) = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
        else {
            return Err(unauthenticated(
                "the authorization header is not `Bearer TOKEN`",
            ));
        };
        let presented = digest(&SHA256, token);
        let mut found: Option<&Identity> = None;
        for client in &self.clients {
            // Every digest is compared in full, whatever matched before.
            if constant_time_eq(presented.as_ref(), &client.digest) {
                found = Some(&client.identity);
            }
        }
        found
            .cloned()
            .ok_or_else(|| unauthenticated("unknown bearer token"))
    }
}

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

    /// The caller's identity, or the refusal.
    fn identify(&self, request: &Request<()>) -> Result<Identity, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(MetadataValue::as_bytes);
        if let (Some(authenticator), Some(_)) = (&self.authenticator, header) {
            return authenticator.authenticate(header);
        }
        if self.certificates {
            let certificate = request
                .extensions()
                .get::<crate::grpc_incoming::ConnectionInfo>()
                .and_then(|info| info.certificate.clone());
            match certificate {
                Some(CertificateIdentity::Named(identity)) => return Ok(identity),
                Some(CertificateIdentity::Unnamed(why)) => {
                    return Err(unauthenticated(&format!(
                        "the client certificate names no identity: {why}"
                    )))
                }
                None => {}
            }
        }
        match &self.authenticator {
            Some(authenticator) => authenticator.authenticate(None),
            None => Err(unauthenticated(
                "authentication is on: connect with a client certificate the server's client CA signed",
            )),
        }
    }
}

impl Interceptor for AuthLayer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if !self.is_on() {
            return Ok(request);
        }
        let identity = self.identify(&request)?;
        request.extensions_mut().insert(identity);
        Ok(request)
    }
}

/// `UNAUTHENTICATED` with `fenced-error: unauthenticated`.
fn unauthenticated(why: &str) -> Status {
    let mut status = Status::unauthenticated(why.to_string());
    status
        .metadata_mut()
        .insert(ERROR_CODE, MetadataValue::from_static(UNAUTHENTICATED_CODE));
    status
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(digest)
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
