//! One driver per system under test, each implementing [`crate::driver`]'s traits.
//!
//! # Layout
//! - [`fenced`]: the generated tonic client of `fenced.v1.LockService`, no SDK, so the
//!   numbers are the server's.
//! - [`etcd`]: etcd's Lease and Lock services (the client etcd's own `concurrency`
//!   package uses: a session lease kept alive in the background, Lock/Unlock per grant).
//! - [`redis`]: `SET NX PX` + `INCR` in one Lua script, compare-and-delete to release.
//! - [`fenced_tls`]: fenced's two listeners over TLS (`--fenced-tls-ca`).

pub mod etcd;
pub mod fenced;
pub mod fenced_tls;
pub mod redis;

use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::BenchError;

/// Opens a gRPC connection of its own to `endpoint` (each call makes a new TCP
/// connection: clients do not share one HTTP/2 connection unless they clone the channel).
pub async fn grpc_channel(
    system: &'static str,
    endpoint: &str,
    timeout: Duration,
    tls: Option<&ClientTlsConfig>,
) -> Result<Channel, BenchError> {
    let connect_error = |reason: String| BenchError::Connect {
        system,
        endpoint: endpoint.to_string(),
        reason,
    };
    let mut channel =
        Endpoint::from_shared(endpoint.to_string()).map_err(|e| connect_error(e.to_string()))?;
    if let Some(tls) = tls {
        channel = channel
            .tls_config(tls.clone())
            .map_err(|e| connect_error(e.to_string()))?;
    }
    channel
        .tcp_nodelay(true)
        .connect_timeout(timeout)
        .connect()
        .await
        .map_err(|e| connect_error(format!("{e:?}")))
}
