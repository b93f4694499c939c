//! [`PeerSecret`]: what a member proves to its peers with every raft message, when the
//! cluster has a secret (`--cluster-secret-file FILE`, the same file on every member).
//!
//! Without it, anyone who reaches a member's raft port could vote, append entries or
//! install a snapshot: take the cluster over. With it, every raft rpc carries
//! `authorization: Bearer SECRET`, and a member's raft listener refuses one without the
//! secret with `UNAUTHENTICATED` before the raft core sees it. The check is the bearer
//! tokens' (`fenced_types::service::bearer`): the secret's SHA-256, compared in constant
//! time. The secret travels in the clear unless the raft port is on a private network;
//! it authenticates peers, it does not hide their traffic.

use std::path::Path;
use std::sync::Arc;

use fenced_types::service::bearer::{tokens_file_line, Authenticator};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The shortest secret accepted, in bytes: guessing it must be out of reach.
pub const MIN_SECRET_BYTES: usize = 32;
/// The longest secret accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 1024;

/// The cluster's secret: the header a member sends, and the check its listener makes.
#[derive(Clone)]
pub struct PeerSecret {
    /// `Bearer SECRET`, sent with every raft rpc.
    header: MetadataValue<Ascii>,
    /// Knows the secret's digest only.
    check: Arc<Authenticator>,
}

/// Two settings are equal when they hold the same secret.
impl PartialEq for PeerSecret {
    fn eq(&self, other: &PeerSecret) -> bool {
        self.header == other.header
    }
}

impl Eq for PeerSecret {}

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(<redacted>)")
    }
}

/// Why a cluster secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerSecretError {
    /// The file cannot be read.
    #[error("cannot read the cluster secret file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The secret is too short, too long, or not printable ASCII without spaces.
    #[error(
        "the cluster secret in {path} must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} \
         printable ASCII characters without spaces (it has {len} bytes{}); make one with \
         `head -c 32 /dev/urandom | base64`",
        if *printable { "" } else { ", not all printable" }
    )]
    Unusable {
        /// The file.
        path: String,
        /// Its length in bytes (surrounding whitespace trimmed).
        len: usize,
        /// Whether every byte is printable ASCII.
        printable: bool,
    },
}

impl PeerSecret {
    /// The secret in `path` (surrounding whitespace trimmed).
    pub fn from_file(path: &Path) -> Result<PeerSecret, PeerSecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| PeerSecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        PeerSecret::new(text.trim()).map_err(|(len, printable)| PeerSecretError::Unusable {
            path: path.display().to_string(),
            len,
            printable,
        })
    }

    /// The secret `secret`, or its length and whether it is printable, if unusable.
    pub fn new(secret: &str) -> Result<PeerSecret, (usize, bool)> {
        let printable = secret.bytes().all(|byte| byte.is_ascii_graphic());
        let len = secret.len();
        let unusable = || (len, printable);
        if !printable || !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&len) {
            return Err(unusable());
        }
        let header = format!("Bearer {secret}").parse().map_err(|_| unusable())?;
        let check =
            Authenticator::parse(&tokens_file_line("peer", secret)).map_err(|_| unusable())?;
        Ok(PeerSecret {
            header,
            check: Arc::new(check),
        })
    }

    /// Puts the secret on an outgoing raft rpc.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        request
            .metadata_mut()
            .insert("authorization", self.header.clone());
    }
}

/// The raft listener's interceptor: with a secret, refuses every rpc that does not carry
/// it; without one, lets everything through.
#[derive(Debug, Clone, Default)]
pub struct PeerCheck(pub Option<PeerSecret>);

impl Interceptor for PeerCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(secret) = &self.0 else {
            return Ok(request);
        };
        let header = request
            .metadata()
            .get("authorization")
            .map(MetadataValue::as_bytes);
        match secret.check.authenticate(header) {
            Ok(_) => Ok(request),
            Err(why) => Err(Status::unauthenticated(format!(
                "raft rpcs need the cluster's secret (--cluster-secret-file): {why}"
            ))),
        }
    }
}
