//! Bearer tokens (feature `bearer`): [`Authenticator`], who a client of `fenced` or
//! `fenced-kv` is, from the token it sends as `authorization: Bearer TOKEN`, when
//! authentication is on (`--auth-tokens FILE`).
//!
//! The tokens file holds one client per line, `IDENTITY SHA256`: a name (printable, no
//! spaces, at most [`MAX_IDENTITY_BYTES`] bytes) and the SHA-256 of its token in hex (what
//! `printf %s "$TOKEN" | sha256sum` prints), so the file reveals no token; `#` starts a
//! comment. Only the digests are kept; the token a request presents is hashed and
//! compared with every digest in constant time (no early exit, so the time a refusal takes
//! says nothing about how close a guess came).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::digest::{digest, SHA256};

/// The longest identity a tokens file may name, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 128;
/// The most tokens a file may hold (each request compares with all of them).
pub const MAX_TOKENS: usize = 10_000;
/// The `fenced-error` code of an unauthenticated call.
pub const UNAUTHENTICATED_CODE: &str = "unauthenticated";

/// A client the server knows, as a request's extension carries it once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity(pub Arc<str>);

/// Why a call is not authenticated by its bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    /// It sent no `authorization` header.
    #[error("authentication is on: send `authorization: Bearer TOKEN`")]
    NoToken,
    /// Its header is not `Bearer TOKEN`.
    #[error("the authorization header is not `Bearer TOKEN`")]
    NotBearer,
    /// The tokens file lists no such token.
    #[error("unknown bearer token")]
    UnknownToken,
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
    pub fn parse(text: &str) -> Result<Authenticator, (usize, String)> {
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

    /// The client whose token `authorization` (the header's value) carries, or why none.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Identity, Unauthenticated> {
        let Some(value) = authorization else {
            return Err(Unauthenticated::NoToken);
        };
        let Some(token) = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
        else {
            return Err(Unauthenticated::NotBearer);
        };
        let presented = digest(&SHA256, token);
        let mut found: Option<&Identity> = None;
        for client in &self.clients {
            // Every digest is compared in full, whatever matched before.
            if constant_time_eq(presented.as_ref(), &client.digest) {
                found = Some(&client.identity);
            }
        }
        found.cloned().ok_or(Unauthenticated::UnknownToken)
    }
}

/// A new bearer token: 32 random bytes from the operating system, in hex. `None` if the
/// system's random source fails.
pub fn new_token() -> Option<String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(hex(&bytes))
}

/// The tokens-file line for `identity` and `token`: `IDENTITY SHA256-OF-TOKEN`, the same
/// digest `printf %s "$TOKEN" | sha256sum` prints.
pub fn tokens_file_line(identity: &str, token: &str) -> String {
    format!(
        "{identity} {}",
        hex(digest(&SHA256, token.as_bytes()).as_ref())
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
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
#[path = "bearer_tests.rs"]
mod tests;
