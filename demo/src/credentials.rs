//! [`Credentials`]: the secured story's keys (`--secure tokens|certificates`). Each worker
//! and the director authenticate to `fenced` and `fenced-kv` with their own credential:
//! a bearer token (listed by digest in a tokens file) or a client certificate (signed by a
//! throwaway CA both servers trust, over TLS). Either way `fenced` holds each identity to
//! a policy and signs each grant's sequencer, whose public key `fenced-kv` verifies every
//! write with. Everything is written to the run's temporary directory, each secret in its
//! own file readable by its owner only.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use fenced_types::sequencer::{generate_key, KeyId};
use fenced_types::service::bearer::{new_token, tokens_file_line};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::pki::Pki;
use crate::process::DemoError;

/// The id of the key the demo's server signs with.
const KEY_ID: &str = "demo-1";

/// Who may do what: the workers take the lock under `orders/`, the director (who follows
/// the lock on the timeline and reads the store at the end) reads every lock.
const POLICY: &str = "\
alpha    lock orders/*
beta     lock orders/*
director read *
";

/// How the secured story's processes authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secure {
    /// Bearer tokens (`--auth-tokens`).
    Tokens,
    /// Client certificates over TLS (`--client-ca`).
    Certificates,
}

/// One party's credential.
#[derive(Debug, Clone)]
enum Credential {
    /// A bearer token, and the file it is in.
    Token { token: String, file: PathBuf },
    /// A client certificate and its key (PEM), and the files they are in.
    Certificate {
        cert: String,
        key: String,
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

/// The secured story's files and credentials.
#[derive(Debug)]
pub struct Credentials {
    /// The servers' flags that turn authentication on (tokens file, or TLS and client CA).
    auth_args: Vec<String>,
    /// The CA that signed the servers' and clients' certificates (PEM), with certificates.
    ca: Option<(String, PathBuf)>,
    /// The policy for `--policy`.
    policy_file: PathBuf,
    /// The signing key (PKCS#8) for `--signing-key`.
    signing_key: PathBuf,
    /// The public keys for `fenced-kv --verify-keys`.
    public_keys: PathBuf,
    /// The director's credential.
    director: Credential,
    /// Each worker's credential, by name.
    workers: Vec<(String, Credential)>,
}

impl Credentials {
    /// Makes credentials for `workers` and the director, a policy and a signing key in
    /// `dir`.
    pub fn create(dir: &Path, secure: Secure, workers: &[&str]) -> Result<Credentials, DemoError> {
        let (auth_args, ca, director, workers) = match secure {
            Secure::Tokens => tokens(dir, workers)?,
            Secure::Certificates => certificates(dir, workers)?,
        };
        let policy_file = dir.join("policy");
        write_file(&policy_file, POLICY.as_bytes())?;
        let key_id = KeyId::new(KEY_ID).map_err(setup)?;
        let key = generate_key(&key_id).map_err(setup)?;
        let signing_key = dir.join("signing.key");
        write_secret(&signing_key, &key.pkcs8)?;
        let public_keys = dir.join("public.keys");
        write_file(&public_keys, format!("{}\n", key.public_line).as_bytes())?;
        Ok(Credentials {
            auth_args,
            ca,
            policy_file,
            signing_key,
            public_keys,
            director,
            workers,
        })
    }

    /// The scheme the servers are reached with: `https` when they serve TLS.
    pub fn url(&self, addr: &str) -> String {
        match &self.ca {
            // The server certificate names `localhost`.
            Some(_) => format!(
                "https://localhost:{}",
                addr.rsplit(':').next().unwrap_or_default()
            ),
            None => format!("http://{addr}"),
        }
    }

    /// `fenced`'s flags: authentication, the policy and the signing key.
    pub fn server_args(&self) -> Vec<String> {
        let mut args = self.auth_args.clone();
        args.extend([
            "--policy".into(),
            self.policy_file.display().to_string(),
            "--signing-key".into(),
            self.signing_key.display().to_string(),
            "--signing-key-id".into(),
            KEY_ID.into(),
        ]);
        args
    }

    /// `fenced-kv`'s flags: authentication, and (with its gate on) sequencers demanded and
    /// verified with the server's public key.
    pub fn store_args(&self, gate: bool) -> Vec<String> {
        let mut args = self.auth_args.clone();
        if gate {
            args.extend([
                "--verify-keys".into(),
                self.public_keys.display().to_string(),
            ]);
        }
        args
    }

    /// The worker's flags naming its credential's files (and the CA it trusts).
    pub fn worker_args(&self, worker: &str) -> Vec<String> {
        let Some((_, credential)) = self.workers.iter().find(|(name, _)| name == worker) else {
            return Vec::new();
        };
        match credential {
            Credential::Token { file, .. } => {
                vec!["--token-file".into(), file.display().to_string()]
            }
            Credential::Certificate {
                cert_file,
                key_file,
                ..
            } => {
                let mut args = vec![
                    "--tls-cert".into(),
                    cert_file.display().to_string(),
                    "--tls-key".into(),
                    key_file.display().to_string(),
                ];
                if let Some((_, ca_file)) = &self.ca {
                    args.extend(["--tls-ca".into(), ca_file.display().to_string()]);
                }
                args
            }
        }
    }

    /// The director's bearer token, with tokens.
    pub fn director_token(&self) -> Option<&str> {
        match &self.director {
            Credential::Token { token, .. } => Some(token),
            Credential::Certificate { .. } => None,
        }
    }

    /// The director's TLS settings (its certificate, and the CA it trusts), with
    /// certificates.
    pub fn director_tls(&self) -> Option<ClientTlsConfig> {
        let (Credential::Certificate { cert, key, .. }, Some((ca, _))) = (&self.director, &self.ca)
        else {
            return None;
        };
        Some(client_tls(ca, cert, key))
    }
}

/// What a client with `cert` and `key` (PEM) sends, trusting `ca` for the `localhost`
/// servers.
pub fn client_tls(ca: &str, cert: &str, key: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost")
        .identity(Identity::from_pem(cert, key))
}

/// Authentication's server flags, the CA (none), and the director's and workers' tokens.
type Made = (
    Vec<String>,
    Option<(String, PathBuf)>,
    Credential,
    Vec<(String, Credential)>,
);

/// A token for each party, and the tokens file the servers check them against.
fn tokens(dir: &Path, workers: &[&str]) -> Result<Made, DemoError> {
    let token = |name: &str| {
        let token = new_token().ok_or_else(|| setup("the system's random source failed"))?;
        let file = dir.join(format!("{name}.token"));
        write_secret(&file, token.as_bytes())?;
        Ok::<_, DemoError>(Credential::Token { token, file })
    };
    let line = |name: &str, credential: &Credential| match credential {
        Credential::Token { token, .. } => tokens_file_line(name, token),
        Credential::Certificate { .. } => String::new(),
    };
    let director = token("director")?;
    let mut lines = vec![line("director", &director)];
    let mut made = Vec::new();
    for worker in workers {
        let credential = token(worker)?;
        lines.push(line(worker, &credential));
        made.push((worker.to_string(), credential));
    }
    let tokens_file = dir.join("tokens");
    write_file(&tokens_file, lines.join("\n").as_bytes())?;
    let args = vec!["--auth-tokens".into(), tokens_file.display().to_string()];
    Ok((args, None, director, made))
}

/// A CA, the servers' certificate, and a client certificate for each party.
fn certificates(dir: &Path, workers: &[&str]) -> Result<Made, DemoError> {
    let pki = Pki::new().map_err(setup)?;
    let ca_file = dir.join("ca.pem");
    write_file(&ca_file, pki.ca.as_bytes())?;
    let server_cert = dir.join("server.pem");
    write_file(&server_cert, pki.server_cert.as_bytes())?;
    let server_key = dir.join("server.key");
    write_secret(&server_key, pki.server_key.as_bytes())?;
    let certificate = |name: &str| {
        let (cert, key) = pki.client(name).map_err(setup)?;
        let cert_file = dir.join(format!("{name}.pem"));
        write_file(&cert_file, cert.as_bytes())?;
        let key_file = dir.join(format!("{name}.key"));
        write_secret(&key_file, key.as_bytes())?;
        Ok::<_, DemoError>(Credential::Certificate {
            cert,
            key,
            cert_file,
            key_file,
        })
    };
    let director = certificate("director")?;
    let mut made = Vec::new();
    for worker in workers {
        made.push((worker.to_string(), certificate(worker)?));
    }
    let args = vec![
        "--tls-cert".into(),
        server_cert.display().to_string(),
        "--tls-key".into(),
        server_key.display().to_string(),
        "--client-ca".into(),
        ca_file.display().to_string(),
    ];
    Ok((args, Some((pki.ca.clone(), ca_file)), director, made))
}

fn setup(reason: impl std::fmt::Display) -> DemoError {
    DemoError::Io {
        what: "making the demo's credentials".into(),
        reason: reason.to_string(),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    std::fs::write(path, bytes).map_err(|error| DemoError::Io {
        what: format!("writing {}", path.display()),
        reason: error.to_string(),
    })
}

/// Writes a file only its owner can read.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |error: std::io::Error| DemoError::Io {
        what: format!("writing {}", path.display()),
        reason: error.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)
}

/// How one party reaches `fenced` and `fenced-kv`: plain, with a bearer token on every
/// call, or over TLS with its client certificate.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Sent as `authorization: Bearer TOKEN`.
    token: Option<String>,
    /// The party's certificate and the CA it trusts.
    tls: Option<ClientTlsConfig>,
}

impl Access {
    /// Access with `token` on every call and over TLS with `tls`, each if given.
    pub fn new(token: Option<String>, tls: Option<ClientTlsConfig>) -> Access {
        Access { token, tls }
    }

    /// The director's access (plain without credentials).
    pub fn director(credentials: Option<&Credentials>) -> Access {
        Access {
            token: credentials
                .and_then(Credentials::director_token)
                .map(str::to_string),
            tls: credentials.and_then(Credentials::director_tls),
        }
    }

    /// A channel to `url`, over TLS with the party's certificate when it has one.
    pub async fn channel(&self, url: &str) -> Result<tonic::transport::Channel, DemoError> {
        let failed = |error: tonic::transport::Error| DemoError::Io {
            what: format!("connecting to {url}"),
            reason: error.to_string(),
        };
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(url.to_string()).map_err(failed)?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(failed)?;
        }
        endpoint.connect().await.map_err(failed)
    }

    /// `message` as a request, with the party's bearer token when it has one.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, DemoError> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|e| DemoError::Io {
                    what: "a bearer token".into(),
                    reason: format!("{e}"),
                })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}
