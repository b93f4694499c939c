//! [`LockServiceChecker`]: strict mode over fenced's `CheckToken` RPC.

use fenced_proto::v1::lock_service_client::LockServiceClient;
use fenced_proto::v1::CheckTokenRequest;
use fenced_types::{FencingToken, LockName};
use tonic::transport::Channel;

use crate::strict::{Liveness, TokenChecker};

/// Asks a fenced lock server, over gRPC, whether a token is the live holder's.
#[derive(Debug, Clone)]
pub struct LockServiceChecker {
    /// The lock service client (a cheap clone per call: tonic channels multiplex).
    client: LockServiceClient<Channel>,
}

impl LockServiceChecker {
    /// A checker over an existing channel.
    pub fn new(channel: Channel) -> Self {
        LockServiceChecker {
            client: LockServiceClient::new(channel),
        }
    }

    /// Connects to a lock server at `endpoint` (e.g. `http://127.0.0.1:7500`).
    pub async fn connect(endpoint: String) -> Result<Self, tonic::transport::Error> {
        Ok(LockServiceChecker {
            client: LockServiceClient::connect(endpoint).await?,
        })
    }
}

impl TokenChecker for LockServiceChecker {
    async fn check(&self, lock: &LockName, token: FencingToken) -> Result<Liveness, String> {
        let mut client = self.client.clone();
        let reply = client
            .check_token(CheckTokenRequest {
                lock: lock.to_string(),
                token: token.get(),
            })
            .await
            .map_err(|status| format!("CheckToken failed: {status}"))?
            .into_inner();
        Ok(Liveness {
            current: reply.current,
            live_token: FencingToken::new(reply.current_token).ok(),
        })
    }
}
