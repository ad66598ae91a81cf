//! A stand-in peer for what a real cluster will not do on demand: answer
//! every submission with RESOURCE_EXHAUSTED and RetryInfo, as a cluster at
//! capacity does, while recording each attempt's key and time.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use intake_client::pb;
use intake_proto::pb::intake_service_server::{IntakeService, IntakeServiceServer};
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};

/// RESOURCE_EXHAUSTED asking for `SERVER_DELAY`, as a shedding node answers.
fn at_capacity() -> Status {
    intake_proto::wire::item_status(pb::ItemError {
        code: Code::ResourceExhausted as i32,
        message: "at capacity".into(),
        field_violations: vec![],
        retry_after_ms: SERVER_DELAY.as_millis() as u64,
    })
}

/// A peer that is always at capacity, recording every attempt's key and time.
#[derive(Clone, Default)]
pub struct AlwaysFull {
    /// Unary attempts: key and time.
    pub attempts: Arc<Mutex<Vec<(String, Instant)>>>,
    /// `SubmitBatch` requests: their keys.
    pub batches: Arc<Mutex<Vec<Vec<String>>>>,
}

pub const SERVER_DELAY: Duration = Duration::from_millis(120);

#[tonic::async_trait]
impl IntakeService for AlwaysFull {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let key = request
            .into_inner()
            .complaint
            .map(|c| c.idempotency_key)
            .unwrap_or_default();
        self.attempts.lock().unwrap().push((key, Instant::now()));
        Err(at_capacity())
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let keys = request
            .into_inner()
            .complaints
            .into_iter()
            .map(|c| c.idempotency_key);
        self.batches.lock().unwrap().push(keys.collect());
        Err(at_capacity())
    }

    async fn get_ticket(
        &self,
        _: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::GetTicketResponse>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }

    async fn update_status(
        &self,
        _: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }
}

/// Serves `service` on a fresh loopback port; returns the address.
pub async fn serve<S: IntakeService>(service: S) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tonic::transport::Server::builder().add_service(IntakeServiceServer::new(service));
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    addr
}

pub async fn serve_always_full() -> (AlwaysFull, String) {
    let service = AlwaysFull::default();
    (service.clone(), serve(service).await)
}

/// A peer whose `SubmitBatch` turns away, once, each complaint whose text
/// says "busy" (come back in 50 ms), every time each whose text says "away"
/// (come back in a minute), and accepts everything else; it records every
/// request's keys.
#[derive(Clone, Default)]
pub struct BusyOnce {
    pub requests: Arc<Mutex<Vec<Vec<String>>>>,
}

#[tonic::async_trait]
impl IntakeService for BusyOnce {
    async fn submit(&self, _: Request<pb::SubmitRequest>) -> Result<Response<pb::SubmitResponse>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let complaints = request.into_inner().complaints;
        let mut requests = self.requests.lock().unwrap();
        let seen = |key: &str| requests.iter().flatten().any(|k| k == key);
        let results = complaints
            .iter()
            .map(|c| {
                let busy = c.text.contains("busy") && !seen(&c.idempotency_key);
                let away = c.text.contains("away");
                let outcome = if busy || away {
                    pb::submit_result::Outcome::Error(pb::ItemError {
                        code: Code::ResourceExhausted as i32,
                        message: "at capacity".into(),
                        field_violations: vec![],
                        retry_after_ms: if away { 60_000 } else { 50 },
                    })
                } else {
                    pb::submit_result::Outcome::Accepted(pb::SubmitResponse {
                        ticket_id: format!("t-{}", c.idempotency_key),
                        duplicate: false,
                        accepted_at: None,
                        shard: 0,
                    })
                };
                pb::SubmitResult {
                    outcome: Some(outcome),
                }
            })
            .collect();
        requests.push(complaints.into_iter().map(|c| c.idempotency_key).collect());
        Ok(Response::new(pb::SubmitBatchResponse { results }))
    }

    async fn get_ticket(
        &self,
        _: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::GetTicketResponse>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }

    async fn update_status(
        &self,
        _: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }
}

pub async fn serve_busy_once() -> (BusyOnce, String) {
    let service = BusyOnce::default();
    (service.clone(), serve(service).await)
}
