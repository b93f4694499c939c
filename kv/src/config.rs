//! [`Config`]: what a fenced-kv instance needs.

use std::path::PathBuf;
use std::time::Duration;

use fenced_gate::Admission;

use crate::error::Error;

/// How a fenced-kv instance runs. `clap` lives only in `main.rs`; this is plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where sled keeps the data and the marks.
    pub data_dir: PathBuf,
    /// The gate's limits (value size, key size) and admission rule. Setting
    /// `gate.admission` to [`Admission::Unfenced`] turns the gate OFF (the zombie demo's
    /// counterfactual run): never for real data.
    pub gate: fenced_gate::Config,
    /// On shutdown, how long to let in-flight requests and connections drain before
    /// closing them anyway. Bounded because HTTP/2's graceful close waits for every client
    /// to answer a ping, and a frozen client never does. Cutting requests off is safe: a
    /// write is acknowledged only once durable, so an unanswered one was never promised.
    pub drain_timeout: Duration,
    /// Demand a sequencer with every write (`Put`, `Delete`, `Fence`) and verify it
    /// against the public keys in this file (one `KEY_ID BASE64URL_PUBLIC_KEY` per line);
    /// a bare fencing token is then refused. `None` takes bare tokens (default).
    pub verify_keys: Option<PathBuf>,
    /// Authentication: every call but health must carry `authorization: Bearer TOKEN` for
    /// a token this file lists (the lock server's format, `fenced_types::service::bearer`);
    /// `None`: no authentication (default).
    pub auth_tokens: Option<PathBuf>,
    /// Serve TLS with this certificate chain and private key (both PEM); `None`: plain
    /// gRPC (default).
    pub tls: Option<TlsFiles>,
    /// Authentication by client certificates (needs `tls`): a client that presents a
    /// certificate this CA (PEM) signed is identified by it; one that presents none needs a
    /// bearer token (`auth_tokens`) or is refused. `None`: no client certificates (default).
    pub client_ca: Option<PathBuf>,
    /// The audit log ([`crate::audit`]): refused calls and refused writes, one JSON line
    /// each; `None`: no audit log (default).
    pub audit_log: Option<PathBuf>,
    /// The size at which the audit log is rotated (default 64 MiB).
    pub audit_max_bytes: u64,
}

/// The files of the TLS identity the store serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./fenced-kv-data"),
            gate: fenced_gate::Config::default(),
            drain_timeout: Duration::from_secs(5),
            verify_keys: None,
            auth_tokens: None,
            tls: None,
            client_ca: None,
            audit_log: None,
            audit_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Checks that the config can work.
    pub fn validate(&self) -> Result<(), Error> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(Error::Config("data_dir is empty".into()));
        }
        if self.client_ca.is_some() && self.tls.is_none() {
            return Err(Error::Config(
                "client_ca needs tls_cert and tls_key: client certificates come with TLS".into(),
            ));
        }
        if self.drain_timeout > Duration::from_secs(600) {
            return Err(Error::Config(format!(
                "drain_timeout is {:?}: at most 10 minutes",
                self.drain_timeout
            )));
        }
        self.gate
            .validate()
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// Whether the gate is off.
    pub fn unfenced(&self) -> bool {
        self.gate.admission == Admission::Unfenced
    }

    /// The largest gRPC message the service decodes: room for the largest value plus the
    /// other fields, and never below tonic's 4 MiB default. A value just over the limit
    /// still reaches the gate and gets its clear `INVALID_ARGUMENT`.
    pub fn max_message_bytes(&self) -> usize {
        (self.gate.max_value_bytes + self.gate.max_key_bytes + 64 * 1024).max(4 * 1024 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_validates_and_bad_values_do_not() {
        assert_eq!(Config::default().validate(), Ok(()));
        assert!(!Config::default().unfenced());
        let empty = Config {
            data_dir: PathBuf::new(),
            ..Config::default()
        };
        assert!(empty.validate().is_err());
        let certificates_without_tls = Config {
            client_ca: Some(PathBuf::from("ca.pem")),
            ..Config::default()
        };
        assert!(certificates_without_tls.validate().is_err());
        let mut huge = Config::default();
        huge.gate.max_value_bytes = usize::MAX;
        assert!(huge.validate().is_err());
    }
}
