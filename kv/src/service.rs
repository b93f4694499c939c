//! [`KvService`]: the `fenced.kv.v1.GatedKv` handlers. Thin: decode into domain types,
//! call the gate on a blocking thread (the sled backend waits for the disk), encode.
//!
//! With public keys (`--verify-keys`), every write must carry a sequencer, and it is
//! verified offline before the gate is called: a resource is guarded by the lock of the
//! same name, so a sequencer of another lock is refused too.

use std::sync::Arc;

use fenced_gate::grpc::{sequenced_token_of, token_of};
use fenced_gate::{Error as GateError, Gate, SledBackend, WriteOp};
use fenced_proto::kv::v1::gated_kv_server::GatedKv;
use fenced_proto::kv::v1::{
    DeleteRequest, DeleteResponse, FenceRequest, FenceResponse, GetRequest, GetResponse,
    PutRequest, PutResponse,
};
use fenced_types::sequencer::PublicKeys;
use fenced_types::{FencingToken, LockName};
use tonic::{Request, Response, Status};

use crate::audit::{Audit, Caller};
use crate::metrics;
use crate::stop::StoreStop;

/// What a gate call is, for the metrics.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// A write: `put`, `delete` or `fence`.
    Write(&'static str),
    /// A read.
    Read,
}

/// The service: one gate over one sled store, shared by every request.
#[derive(Debug, Clone)]
pub struct KvService {
    /// The gate.
    gate: Gate<SledBackend>,
    /// Where a request that finds the store stopped says so.
    stop: StoreStop,
    /// Sequencer mode: the keys every write's sequencer must verify with.
    keys: Option<Arc<PublicKeys>>,
    /// Where refused writes are recorded.
    audit: Audit,
}

impl KvService {
    /// The service over a gate; a call that finds the store stopped (a failed sync) reports
    /// it to `stop`.
    pub fn new(gate: Gate<SledBackend>, stop: StoreStop) -> Self {
        KvService {
            gate,
            stop,
            keys: None,
            audit: Audit::default(),
        }
    }

    /// Records every refused write to `audit`.
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }

    /// Records a refused write of `op` by `writer`, when auditing.
    fn audit_refusal(&self, op: &str, writer: Option<&(Caller, String)>, status: &Status) {
        if let Some((caller, resource)) = writer {
            self.audit.write_refused(op, resource, caller, status);
        }
    }

    /// Who writes `request` to `resource`, for the audit log: gathered only when auditing,
    /// so a write's path is unchanged otherwise.
    fn writer<T>(&self, request: &Request<T>, resource: &str) -> Option<(Caller, String)> {
        self.audit
            .is_on()
            .then(|| (Caller::of(request), resource.to_string()))
    }

    /// Sequencer mode: every write must carry a sequencer that verifies with `keys` and is
    /// of the lock named like the resource; `None` takes bare tokens.
    pub fn with_keys(mut self, keys: Option<Arc<PublicKeys>>) -> Self {
        self.keys = keys;
        self
    }

    /// The token a write may use on `resource`: the bare token (body or metadata) without
    /// keys; with keys, the verified token of the request's sequencer. A refusal is counted
    /// as a refused write of `op`.
    fn token_for<T>(
        &self,
        op: &'static str,
        request: &Request<T>,
        resource: &LockName,
        body_token: u64,
        body_sequencer: &[u8],
    ) -> Result<FencingToken, Status> {
        let Some(keys) = &self.keys else {
            return token_of(request, body_token);
        };
        sequenced_token_of(request, keys, resource, body_token, body_sequencer).map_err(|error| {
            tracing::debug!(%error, "refused");
            metrics::record_write::<()>(op, &Err(error.clone()));
            Status::from(error)
        })
    }

    /// Runs a gate call on a blocking thread, counts it, and maps its error to a status.
    async fn blocking<T: Send + 'static>(
        &self,
        what: Call,
        call: impl FnOnce(&Gate<SledBackend>) -> Result<T, GateError> + Send + 'static,
    ) -> Result<T, Status> {
        let (gate, stop) = (self.gate.clone(), self.stop.clone());
        // The report and the count happen on the blocking thread, so they are made even if
        // the client has gone and this future was dropped.
        let result = tokio::task::spawn_blocking(move || {
            let result = call(&gate);
            if let Err(error) = &result {
                stop.report(error);
            }
            match what {
                Call::Write(op) => metrics::record_write(op, &result),
                Call::Read if result.is_ok() => ::metrics::counter!(metrics::READS).increment(1),
                Call::Read => {}
            }
            result
        })
        .await
        .map_err(|e| Status::internal(format!("the storage task failed: {e}")))?;
        result.map_err(|error| {
            if let GateError::StaleToken { .. } = error {
                tracing::debug!(%error, "refused");
            } else if !error.is_refusal() {
                tracing::error!(%error, "storage failure");
            }
            Status::from(error)
        })
    }
}

fn resource(name: String) -> Result<LockName, Status> {
    LockName::new(name).map_err(|e| Status::from(GateError::InvalidResource(e)))
}

#[tonic::async_trait]
impl GatedKv for KvService {
    async fn put(&self, mut request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        const OP: &str = "put";
        let writer = self.writer(&request, &request.get_ref().resource);
        let refused = |status: &Status| self.audit_refusal(OP, writer.as_ref(), status);
        let resource =
            resource(std::mem::take(&mut request.get_mut().resource)).inspect_err(refused)?;
        let body = request.get_ref();
        let token = self
            .token_for(OP, &request, &resource, body.token, &body.sequencer)
            .inspect_err(refused)?;
        let PutRequest { key, value, .. } = request.into_inner();
        let op = WriteOp::put(key, value);
        // Refuse bad input here, before a blocking thread is even taken.
        self.gate
            .check_op(&op)
            .map_err(Status::from)
            .inspect_err(refused)?;
        let accepted = self
            .blocking(Call::Write(OP), move |gate| {
                gate.write(&resource, token, &op)
            })
            .await
            .inspect_err(refused)?;
        Ok(Response::new(PutResponse {
            mark: accepted.mark.get(),
        }))
    }

    async fn delete(
        &self,
        mut request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        const OP: &str = "delete";
        let writer = self.writer(&request, &request.get_ref().resource);
        let refused = |status: &Status| self.audit_refusal(OP, writer.as_ref(), status);
        let resource =
            resource(std::mem::take(&mut request.get_mut().resource)).inspect_err(refused)?;
        let body = request.get_ref();
        let token = self
            .token_for(OP, &request, &resource, body.token, &body.sequencer)
            .inspect_err(refused)?;
        let DeleteRequest { key, .. } = request.into_inner();
        let op = WriteOp::delete(key);
        self.gate
            .check_op(&op)
            .map_err(Status::from)
            .inspect_err(refused)?;
        let accepted = self
            .blocking(Call::Write(OP), move |gate| {
                gate.write(&resource, token, &op)
            })
            .await
            .inspect_err(refused)?;
        Ok(Response::new(DeleteResponse {
            existed: accepted.existed,
            mark: accepted.mark.get(),
        }))
    }

    async fn fence(
        &self,
        mut request: Request<FenceRequest>,
    ) -> Result<Response<FenceResponse>, Status> {
        const OP: &str = "fence";
        let writer = self.writer(&request, &request.get_ref().resource);
        let refused = |status: &Status| self.audit_refusal(OP, writer.as_ref(), status);
        let resource =
            resource(std::mem::take(&mut request.get_mut().resource)).inspect_err(refused)?;
        let body = request.get_ref();
        let token = self
            .token_for(OP, &request, &resource, body.token, &body.sequencer)
            .inspect_err(refused)?;
        let mark = self
            .blocking(Call::Write(OP), move |gate| gate.fence(&resource, token))
            .await
            .inspect_err(refused)?;
        Ok(Response::new(FenceResponse { mark: mark.get() }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let GetRequest {
            resource: name,
            key,
        } = request.into_inner();
        let resource = resource(name)?;
        let stored = self
            .blocking(Call::Read, move |gate| gate.read(&resource, key.as_bytes()))
            .await?;
        Ok(Response::new(match stored {
            Some(stored) => GetResponse {
                found: true,
                value: stored.value,
                token: stored.token.get(),
            },
            None => GetResponse {
                found: false,
                value: Vec::new(),
                token: 0,
            },
        }))
    }
}
