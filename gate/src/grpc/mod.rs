//! The gate at a tonic edge (feature `tonic`).
//!
//! - [`interceptor`]: [`FencingTokenInterceptor`] / [`layer`], reading and checking
//!   `fencing-token` metadata in front of any tonic service; [`token_of`] for handlers.
//! - [`sequencer`]: [`sequencer_of`], the sequencer a request carries (`fencing-sequencer`
//!   metadata or the body), for gates in sequencer mode.
//! - [`status`]: the one `From<Error> for tonic::Status`, and [`stale_tokens`] to read a
//!   refusal back on the client side.
//! - [`check_token`]: [`LockServiceChecker`], strict mode over fenced's `CheckToken`.
//!
//! # Example: a tonic handler behind the gate
//! ```no_run
//! use fenced_gate::grpc::{layer, token_of};
//! use fenced_gate::{Gate, SledBackend, WriteOp};
//! use fenced_types::LockName;
//!
//! async fn put(
//!     gate: &Gate<SledBackend>,
//!     request: tonic::Request<(String, String, Vec<u8>, u64)>,
//! ) -> Result<u64, tonic::Status> {
//!     // The token from the body or from `fencing-token` metadata (they must agree).
//!     let token = token_of(&request, request.get_ref().3)?;
//!     let (resource, key, value, _) = request.into_inner();
//!     let resource = LockName::new(resource).map_err(fenced_gate::Error::InvalidResource)?;
//!     let gate = gate.clone();
//!     // The sled backend blocks until the write is durable: run it off the async threads.
//!     let accepted = tokio::task::spawn_blocking(move || {
//!         gate.write(&resource, token, &WriteOp::put(key, value))
//!     })
//!     .await
//!     .map_err(|e| tonic::Status::internal(e.to_string()))??; // stale -> FAILED_PRECONDITION
//!     Ok(accepted.mark.get())
//! }
//! // And in front of the service: `Server::builder().layer(layer())`.
//! ```

pub mod check_token;
pub mod interceptor;
pub mod sequencer;
pub mod status;

pub use check_token::LockServiceChecker;
pub use interceptor::{layer, metadata_token, token_of, FencingTokenInterceptor, PresentedToken};
#[cfg(feature = "sequencer")]
pub use sequencer::sequenced_token_of;
pub use sequencer::{metadata_sequencer, sequencer_of};
pub use status::stale_tokens;
