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

/// A peer that is always at capacity, recording every attempt's key and time.
#[derive(Clone, Default)]
pub struct AlwaysFull {
    pub attempts: Arc<Mutex<Vec<(String, Instant)>>>,
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
        Err(intake_server::errors::with_retry(
            Code::ResourceExhausted,
            "at capacity",
            SERVER_DELAY,
        ))
    }

    async fn submit_batch(
        &self,
        _: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }

    async fn get_ticket(
        &self,
        _: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::GetTicketResponse>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }
}

pub async fn serve_always_full() -> (AlwaysFull, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let service = AlwaysFull::default();
    let server = tonic::transport::Server::builder().add_service(IntakeServiceServer::new(service.clone()));
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    (service, addr)
}
