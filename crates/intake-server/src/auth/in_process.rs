//! The public IntakeService for a door that calls it in-process (the HTTP
//! API on `--api`), behind the same gate as the gRPC port: the door copies
//! its request's `authorization` header into the call's metadata, as a gRPC
//! client sends it, and each call is decided by [`GateLayer::authorize`]
//! and then checked by [`Guarded`] (an adapter's channels), exactly as a
//! call through the gRPC port is. Refusals come back as the same statuses,
//! which the door turns into its own answers (401, 403, 429).

use std::sync::Arc;

use intake_proto::pb;
use intake_proto::pb::intake_service_server::IntakeService;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Response, Status};

use super::forward::with_caller_token;
use super::gate::{GET_TICKET, GateLayer, SUBMIT, SUBMIT_BATCH, UPDATE_STATUS, caller_token, refused};
use super::guard::Guarded;

/// The node's IntakeService as another door in this process reaches it.
pub struct InProcess<S> {
    gate: GateLayer,
    inner: Guarded<S>,
}

impl<S> InProcess<S> {
    pub fn new(gate: GateLayer, inner: Arc<S>) -> Self {
        Self {
            gate,
            inner: Guarded::new(inner),
        }
    }

    /// Decides the call as the gate does for the gRPC method `path`; on
    /// success the caller is in the request for [`Guarded`], and the token
    /// to forward with it is returned. A call made in-process entered here,
    /// so it counts against its token's rate.
    fn admit<T>(&self, path: &str, req: &mut Request<T>) -> Result<Option<MetadataValue<Ascii>>, Status> {
        let headers = req.metadata().as_ref();
        let caller = self.gate.authorize(path, headers, false).map_err(refused)?;
        let token = caller_token(&caller, headers);
        req.extensions_mut().insert(caller);
        Ok(token)
    }
}

#[tonic::async_trait]
impl<S: IntakeService> IntakeService for InProcess<S> {
    async fn submit(
        &self,
        mut request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let token = self.admit(SUBMIT, &mut request)?;
        with_caller_token(token, self.inner.submit(request)).await
    }

    async fn submit_batch(
        &self,
        mut request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let token = self.admit(SUBMIT_BATCH, &mut request)?;
        with_caller_token(token, self.inner.submit_batch(request)).await
    }

    async fn get_ticket(
        &self,
        mut request: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::GetTicketResponse>, Status> {
        let token = self.admit(GET_TICKET, &mut request)?;
        with_caller_token(token, self.inner.get_ticket(request)).await
    }

    async fn update_status(
        &self,
        mut request: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        let token = self.admit(UPDATE_STATUS, &mut request)?;
        with_caller_token(token, self.inner.update_status(request)).await
    }
}
