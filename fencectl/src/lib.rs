//! `fencectl`: the fenced command line, on the SDK (`fenced-client`).
//!
//! - `fencectl lock NAME [--ttl D] [--wait D] -- CMD ARGS...` takes the lock, runs CMD
//!   with `FENCED_TOKEN`, `FENCED_LOCK` and `FENCED_LEASE_ID` in its environment, renews
//!   while it runs, stops it when the lease can no longer be vouched for, and releases the
//!   lock when it exits.
//! - `fencectl elect NAME -- CMD ARGS...` campaigns, runs CMD as the leader with its token
//!   (the term), and resigns when it exits.
//! - `fencectl revoke NAME [--token T] [--lock-only]`: an administrator ends a holding.
//! - `fencectl list [PREFIX]`, `describe NAME`, `watch [PREFIX]`, `check NAME TOKEN`: a
//!   table for humans by default, `--json` for scripts.
//! - `fencectl keygen KEY_ID --private-key FILE [--public-keys FILE]`: a sequencer
//!   signing key pair for `fenced --signing-key` and the verifiers' public-keys file.
//! - `fencectl completions SHELL`: a completion script for bash, zsh, fish, elvish or
//!   PowerShell.
//!
//! Endpoints come from `--endpoints` or `FENCED_ENDPOINTS` (comma-separated or repeated,
//! tried in order until one connects; `host:port` means `http://host:port`, or `https://`
//! with `--tls-ca`; one scheme for all). Several endpoints are the members of a cluster:
//! every call follows its leader ([`fenced_client::ClientBuilder::endpoints`]).
//!
//! # When the child is stopped (CONTRACT S4)
//! The SDK keeps a *local deadline* per lease: the send time of the latest confirmed
//! request plus `ttl * (1 - drift_bound) - safety_margin` (the *usable* TTL, `U`). The
//! server cannot expire the lease before it. Renewals go out every third of the TTL, so a
//! healthy lease always has at least about `U - ttl / 3` (two thirds of the TTL) left.
//! fencectl checks the lease every `U / 40` (at most 50 ms) and acts on the time left
//! (`remaining`), not only on the SDK's state, because the SDK turns a lease
//! `Suspect` for its deadline only once the deadline has passed, which is too late:
//!
//! - `remaining <= kill_before + term_grace` (default `U / 6 + U / 6 = U / 3`), or the
//!   lease `Suspect` (a pause, a late grant) for longer than `suspect_grace` (default
//!   `U / 6`): SIGTERM to the child's process group.
//! - `remaining <= kill_before` (default `U / 6`), or `term_grace` after the SIGTERM:
//!   SIGKILL to the child's process group. So the SIGKILL lands at least `kill_before`
//!   before the local deadline, which is itself before the server's expiry, hence before
//!   the server can grant the lock to anyone else.
//! - The lease `Lost` (the server said it expired or was released, or nothing was
//!   confirmed until the server has surely expired it): SIGKILL at once, with no grace.
//!
//! `kill_before + term_grace` must stay below the time a healthy lease always has left
//! (`U - ttl * renew_fraction`), or fencectl would stop children of healthy leases: it
//! refuses such settings.
//!
//! This ordering holds while fencectl itself runs. A fencectl that is frozen (SIGSTOP, a
//! suspended VM) cannot signal anyone, and its child runs on: that is what fencing tokens
//! and the gate are for (CONTRACT S5). When fencectl wakes past the thresholds it kills at
//! once.
//!
//! # The command's process group
//! The command runs in a process group of its own, so that one signal reaches it and
//! everything it started. SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to
//! fencectl are passed on to that group (fencectl itself stays, to release the lock when
//! the command exits). When the command exits, whatever it left running in its group gets
//! SIGKILL before the lock is released, so nothing started under the lock outlives it (a
//! process that left the group, e.g. with `setsid`, is out of fencectl's reach). The group
//! is not the terminal's foreground group: a command that reads the terminal is stopped
//! by SIGTTIN, so give it its input another way.
//!
//! # Exit status
//! See [`exit`]: the child's own status when it exited by itself, `128 + N` when it died
//! of signal N, and fencectl's own codes for "not acquired", "lock lost", "could not
//! run", "server unavailable".
//!
//! # Layout
//! - [`exit`]: the exit codes.
//! - [`duration`]: durations on the command line (`10s`, `500ms`, `2m`).
//! - [`connect`]: endpoints and TLS into an SDK [`fenced_client::Client`], one that holds
//!   leases or one that only reads.
//! - [`kill_plan`]: the pure rule above: from the lease's state and time left, what to do
//!   to the child (unit-tested with hand-made times).
//! - [`supervise`]: runs the child under a lease: environment, process group, signal
//!   forwarding, the kill plan, release.
//! - [`inspect`]: list (all pages), describe, check.
//! - [`watch`]: the live table and the event stream.
//! - [`members`]: a cluster's members, as a table or JSON.
//! - [`output`]: tables and JSON.
//! - [`error`]: [`Error`], each with its exit code.

pub mod connect;
pub mod duration;
pub mod error;
pub mod exit;
pub mod inspect;
pub mod keygen;
pub mod kill_plan;
pub mod members;
pub mod output;
pub mod supervise;
pub mod watch;

pub use error::Error;
