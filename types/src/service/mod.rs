//! What the binaries (`fenced`, `fenced-kv`) share to run as services (feature `service`).
//!
//! - [`config_file`]: `--config FILE`, a TOML file whose keys are the binary's long flags,
//!   below the command line and the environment in precedence.
//! - [`sd_notify`]: systemd's readiness protocol (`READY=1`, `STOPPING=1`), when
//!   `NOTIFY_SOCKET` is set.
//! - `bearer` (feature `bearer`): the tokens file of `--auth-tokens` and the check of a
//!   call's bearer token.
//! - `audit_log` (feature `audit`): the audit log's file of JSON lines, rotated by size.
//! - `certificate` (feature `certificates`): the identity a verified client certificate
//!   names (`--client-ca`).
//!
//! It lives here because both binaries already depend on this crate; behind a feature, so
//! that a storage service embedding the protocol's nouns does not compile clap or toml.

#[cfg(feature = "audit")]
pub mod audit_log;
#[cfg(feature = "bearer")]
pub mod bearer;
#[cfg(feature = "certificates")]
pub mod certificate;
pub mod config_file;
pub mod sd_notify;
