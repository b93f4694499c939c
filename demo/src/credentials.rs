//! [`Credentials`]: the secured story's keys (`--secure`): a bearer token for each worker
//! and for the director, the tokens file and policy file `fenced` and `fenced-kv` check
//! them against, and the key `fenced` signs each grant's sequencer with, whose public half
//! `fenced-kv` verifies every write with. Written to the run's temporary directory, each
//! secret in its own file readable by its owner only.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use fenced_types::sequencer::{generate_key, KeyId};
use fenced_types::service::bearer::{new_token, tokens_file_line};

use crate::process::DemoError;

/// The id of the key the demo's server signs with.
const KEY_ID: &str = "demo-1";

/// Who may do what: the workers take the lock under `orders/`, the director (who follows
/// the lock on the timeline) reads every lock.
const POLICY: &str = "\
alpha    lock orders/*
beta     lock orders/*
director read *
";

/// The secured story's files and tokens.
#[derive(Debug)]
pub struct Credentials {
    /// `IDENTITY SHA256` lines for `--auth-tokens`.
    tokens_file: PathBuf,
    /// The policy for `--policy`.
    policy_file: PathBuf,
    /// The signing key (PKCS#8) for `--signing-key`.
    signing_key: PathBuf,
    /// The public keys for `fenced-kv --verify-keys`.
    public_keys: PathBuf,
    /// The director's own token.
    director_token: String,
    /// Each worker's token file, by name.
    worker_token_files: Vec<(String, PathBuf)>,
}

impl Credentials {
    /// Makes tokens for `workers` and the director, a policy and a signing key in `dir`.
    pub fn create(dir: &Path, workers: &[&str]) -> Result<Credentials, DemoError> {
        let token = || new_token().ok_or_else(|| setup("the system's random source failed"));
        let director_token = token()?;
        let mut lines = vec![tokens_file_line("director", &director_token)];
        let mut worker_token_files = Vec::new();
        for worker in workers {
            let secret = token()?;
            lines.push(tokens_file_line(worker, &secret));
            let path = dir.join(format!("{worker}.token"));
            write_secret(&path, secret.as_bytes())?;
            worker_token_files.push((worker.to_string(), path));
        }
        let tokens_file = dir.join("tokens");
        write_file(&tokens_file, lines.join("\n").as_bytes())?;
        let policy_file = dir.join("policy");
        write_file(&policy_file, POLICY.as_bytes())?;
        let key_id = KeyId::new(KEY_ID).map_err(setup)?;
        let key = generate_key(&key_id).map_err(setup)?;
        let signing_key = dir.join("signing.key");
        write_secret(&signing_key, &key.pkcs8)?;
        let public_keys = dir.join("public.keys");
        write_file(&public_keys, format!("{}\n", key.public_line).as_bytes())?;
        Ok(Credentials {
            tokens_file,
            policy_file,
            signing_key,
            public_keys,
            director_token,
            worker_token_files,
        })
    }

    /// `fenced`'s flags: authentication, the policy and the signing key.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--auth-tokens".into(),
            self.tokens_file.display().to_string(),
            "--policy".into(),
            self.policy_file.display().to_string(),
            "--signing-key".into(),
            self.signing_key.display().to_string(),
            "--signing-key-id".into(),
            KEY_ID.into(),
        ]
    }

    /// `fenced-kv`'s flags: authentication, and (with its gate on) sequencers demanded and
    /// verified with the server's public key.
    pub fn store_args(&self, gate: bool) -> Vec<String> {
        let mut args = vec![
            "--auth-tokens".into(),
            self.tokens_file.display().to_string(),
        ];
        if gate {
            args.extend([
                "--verify-keys".into(),
                self.public_keys.display().to_string(),
            ]);
        }
        args
    }

    /// The worker's flag naming its token file.
    pub fn worker_args(&self, worker: &str) -> Vec<String> {
        self.worker_token_files
            .iter()
            .filter(|(name, _)| name == worker)
            .flat_map(|(_, path)| ["--token-file".into(), path.display().to_string()])
            .collect()
    }

    /// The director's bearer token.
    pub fn director_token(&self) -> &str {
        &self.director_token
    }
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
