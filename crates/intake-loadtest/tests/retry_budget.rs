//! The load tool's retry budget, against a stand-in for what a real cluster
//! will not do on demand: refuse every submission (RESOURCE_EXHAUSTED with
//! a short RetryInfo) for as long as the test needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use intake_core::category::CategoryTable;
use intake_core::district::DistrictTable;
use intake_loadtest::engine::{self, Engine};
use intake_loadtest::{Mix, Phase, Rate, RetryBudgetConfig};
use intake_proto::pb;
use intake_proto::pb::intake_service_server::{IntakeService, IntakeServiceServer};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Always at capacity; counts the attempts it refused.
#[derive(Clone, Default)]
struct AlwaysFull {
    attempts: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl IntakeService for AlwaysFull {
    async fn submit(&self, _: Request<pb::SubmitRequest>) -> Result<Response<pb::SubmitResponse>, Status> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        Err(Status::with_error_details(
            Code::ResourceExhausted,
            "at capacity",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(2))),
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

    async fn update_status(
        &self,
        _: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }
}

const REQUESTS: u64 = 40;
const MAX_ATTEMPTS: u32 = 3;
const IN_FLIGHT: usize = 4;

/// Offers REQUESTS unary submissions to an always-full peer; returns
/// (attempts the peer saw, retries, retries throttled).
async fn offer(budget: Option<RetryBudgetConfig>) -> (u64, u64, u64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = AlwaysFull::default();
    let server = tonic::transport::Server::builder().add_service(IntakeServiceServer::new(peer.clone()));
    let serving =
        tokio::spawn(server.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    let engine = Engine::new(engine::clients(&[addr]).unwrap(), budget);
    let phase = Phase {
        name: "refused".into(),
        duration_s: 10.0,
        // Slow enough that the retries (20 ms, then 40 ms of backoff) of one
        // request end before IN_FLIGHT more arrive.
        rate: Rate::PerSecond(20.0),
        total: Some(REQUESTS),
        concurrency: IN_FLIGHT,
        deadline_ms: 5_000,
        max_attempts: MAX_ATTEMPTS,
        mix: Mix::default(),
    };
    let driven = engine
        .run(&[phase], &DistrictTable::beijing(), &CategoryTable::default())
        .await;
    serving.abort();
    let t = driven.tally;
    assert_eq!(
        t.rejected + t.dropped,
        REQUESTS,
        "every complaint ends refused or dropped"
    );
    (
        peer.attempts.load(Ordering::Relaxed),
        t.retries,
        t.retries_throttled,
    )
}

#[tokio::test]
async fn without_a_budget_every_refusal_is_retried_to_the_last_attempt() {
    let (attempts, retries, throttled) = offer(None).await;
    let sent = attempts - retries;
    assert!(
        sent >= REQUESTS / 2,
        "only {sent} of {REQUESTS} requests were sent"
    );
    assert_eq!(attempts, sent * u64::from(MAX_ATTEMPTS), "{retries} retries");
    assert_eq!(throttled, 0);
}

#[tokio::test]
async fn the_budget_stops_retries_once_half_its_tokens_are_spent() {
    let (attempts, retries, throttled) = offer(Some(RetryBudgetConfig::default())).await;
    let sent = attempts - retries;
    assert!(
        sent >= REQUESTS / 2,
        "only {sent} of {REQUESTS} requests were sent"
    );
    // 10 tokens and no success to refill them: retries stop once 5 are
    // left, give or take the requests in flight when they ran out.
    assert!(retries > 0, "the budget allowed no retry at all");
    assert!(retries <= 5 + IN_FLIGHT as u64, "{retries} retries");
    // Every request the budget cut short counts once.
    assert!(
        throttled >= sent - retries,
        "{throttled} throttled, {retries} retries, {sent} sent"
    );
    assert!(throttled <= sent);
}
