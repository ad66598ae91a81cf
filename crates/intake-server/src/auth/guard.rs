//! The public IntakeService behind the gate: checks what needs the decoded
//! request or answer (an adapter's channels), then hands the call to the
//! real service.
//!
//! A `SubmitBatch` is refused whole when any item's channel is not the
//! token's: a token submitting for channels it does not own is a
//! misconfigured or hostile adapter, and half-accepting its batch would hide
//! that behind per-item errors it might retry forever.

use intake_proto::pb;
use intake_proto::pb::intake_service_server::IntakeService;
use tonic::{Request, Response, Status};

use super::gate::Caller;
use super::table::{Principal, Role};

/// Wraps the service the gate's callers reach.
/// Shared with the node's other doors (the HTTP API calls the same service
/// in-process), hence the `Arc`.
pub struct Guarded<S> {
    inner: std::sync::Arc<S>,
}

impl<S> Guarded<S> {
    pub fn new(inner: std::sync::Arc<S>) -> Self {
        Self { inner }
    }
}

/// The token's holder, when the call came with a token.
fn principal<T>(req: &Request<T>) -> Option<std::sync::Arc<Principal>> {
    match req.extensions().get::<Caller>() {
        Some(Caller::Token(p)) => Some(p.clone()),
        _ => None,
    }
}

fn channel_refused(p: &Principal, channel: &str, item: Option<usize>) -> Status {
    let which = item.map(|i| format!("complaints[{i}]: ")).unwrap_or_default();
    Status::permission_denied(format!(
        "{which}token {:?} may not submit for channel {channel:?} (it may for {:?})",
        p.name, p.channels
    ))
}

#[tonic::async_trait]
impl<S: IntakeService> IntakeService for Guarded<S> {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        if let Some(p) = principal(&request) {
            let channel = request
                .get_ref()
                .complaint
                .as_ref()
                .map_or("", |c| c.channel.as_str());
            if !p.channels.contains(channel) {
                return Err(channel_refused(&p, channel, None));
            }
        }
        self.inner.submit(request).await
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        if let Some(p) = principal(&request)
            && let Some((i, c)) = request
                .get_ref()
                .complaints
                .iter()
                .enumerate()
                .find(|(_, c)| !p.channels.contains(&c.channel))
        {
            return Err(channel_refused(&p, &c.channel, Some(i)));
        }
        self.inner.submit_batch(request).await
    }

    async fn get_ticket(
        &self,
        request: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::GetTicketResponse>, Status> {
        let adapter = principal(&request).filter(|p| p.role == Role::Adapter);
        let answer = self.inner.get_ticket(request).await?;
        if let Some(p) = adapter {
            let channel = answer
                .get_ref()
                .ticket
                .as_ref()
                .and_then(|t| t.complaint.as_ref())
                .map_or("", |c| c.channel.as_str());
            if !p.channels.contains(channel) {
                return Err(Status::permission_denied(format!(
                    "token {:?} may read tickets of channels {:?} only",
                    p.name, p.channels
                )));
            }
        }
        Ok(answer)
    }

    async fn update_status(
        &self,
        request: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        self.inner.update_status(request).await
    }
}
