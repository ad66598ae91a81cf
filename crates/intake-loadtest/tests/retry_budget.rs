//! The load tool's retry budget, against a stand-in for what a real cluster
//! will not do on demand: refuse every submission (RESOURCE_EXHAUSTED with
//! a short RetryInfo) for as long as the test needs; and what a dead node
//! must not cost it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use intake_core::category::CategoryTable;
use intake_core::district::DistrictTable;
use intake_loadtest::engine::Engine;
use intake_loadtest::tally::Tally;
use intake_loadtest::{Mix, Phase, Rate, RetryBudgetConfig};
use intake_proto::pb;
use intake_proto::pb::intake_service_server::{IntakeService, IntakeServiceServer};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Always at capacity, or (`accepts`) always accepting; counts the
/// attempts it saw.
#[derive(Clone, Default)]
struct StandIn {
    attempts: Arc<AtomicU64>,
    accepts: bool,
}

#[tonic::async_trait]
impl IntakeService for StandIn {
    async fn submit(&self, _: Request<pb::SubmitRequest>) -> Result<Response<pb::SubmitResponse>, Status> {
        let n = self.attempts.fetch_add(1, Ordering::Relaxed);
        if self.accepts {
            return Ok(Response::new(pb::SubmitResponse {
                ticket_id: format!("0-{n}"),
                ..Default::default()
            }));
        }
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

/// Serves `peer` on a loopback port: its address and the serving task.
async fn serve(
    peer: StandIn,
) -> (
    String,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tonic::transport::Server::builder().add_service(IntakeServiceServer::new(peer));
    let serving =
        tokio::spawn(server.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    (addr, serving)
}

const REQUESTS: u64 = 40;

/// Offers REQUESTS unary submissions through `engine` at `rate` per second.
async fn drive(engine: &Arc<Engine>, rate: f64, concurrency: usize, max_attempts: u32) -> Tally {
    let phase = Phase {
        name: "stand-in".into(),
        duration_s: 10.0,
        rate: Rate::PerSecond(rate),
        total: Some(REQUESTS),
        concurrency,
        deadline_ms: 5_000,
        max_attempts,
        mix: Mix::default(),
    };
    let driven = engine
        .run(&[phase], &DistrictTable::beijing(), &CategoryTable::default())
        .await;
    driven.tally
}
const MAX_ATTEMPTS: u32 = 3;
const IN_FLIGHT: usize = 4;

/// Offers REQUESTS unary submissions to an always-full peer; returns
/// (attempts the peer saw, retries, retries throttled).
async fn offer(budget: Option<RetryBudgetConfig>) -> (u64, u64, u64) {
    let peer = StandIn::default();
    let (addr, serving) = serve(peer.clone()).await;
    let engine = Engine::new(&[addr], budget).unwrap();
    // Slow enough that the retries (20 ms, then 40 ms of backoff) of one
    // request end before IN_FLIGHT more arrive.
    let t = drive(&engine, 20.0, IN_FLIGHT, MAX_ATTEMPTS).await;
    serving.abort();
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

/// A dead node must not cost the load tool's requests: a request whose
/// connection is refused never reached a node and goes at once to another
/// endpoint, without taking an attempt or a token of the retry budget, and
/// the refusing endpoint leaves the rotation.
#[tokio::test]
async fn requests_for_a_refusing_endpoint_land_on_a_live_one_without_the_budget() {
    // Bound then dropped: nothing listens there, connections are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let peer = StandIn {
        accepts: true,
        ..Default::default()
    };
    let (live, serving) = serve(peer.clone()).await;

    // A budget that allows no retry at all after one failure.
    let budget = RetryBudgetConfig {
        max_tokens: 1.0,
        token_ratio: 0.1,
    };
    let engine = Engine::new(&[dead, live], Some(budget)).unwrap();
    let t = drive(&engine, 50.0, 8, 1).await;
    serving.abort();
    assert_eq!(
        t.acked, REQUESTS,
        "every request lands: {} errors {:?}, {} resent",
        t.errors, t.error_codes, t.resent_unsent
    );
    assert_eq!(t.retries, 0, "resending what was never sent is no retry");
    assert_eq!(t.retries_throttled, 0);
    // Every other request would go to the dead endpoint in turn; once it
    // refused, only the occasional probe does.
    assert!(t.resent_unsent >= 1, "the dead endpoint was never tried");
    assert!(
        t.resent_unsent < REQUESTS / 2,
        "the dead endpoint stayed in rotation: {} resent",
        t.resent_unsent
    );
    assert_eq!(peer.attempts.load(Ordering::Relaxed), REQUESTS);
}

/// A paused node (`docker pause`, SIGSTOP): its kernel takes connections,
/// nothing answers. The first attempt that runs out on it takes it out of
/// rotation; later requests go to the live node only (a health probe, not a
/// request, asks it again), so every request lands within its deadline.
#[tokio::test]
async fn a_silent_endpoint_costs_only_the_attempts_that_found_it_out() {
    // Listening, never accepting: connections open, nothing is answered.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let peer = StandIn {
        accepts: true,
        ..Default::default()
    };
    let (live, serving) = serve(peer.clone()).await;
    let engine =
        Engine::with_attempt_timeout(&[silent_addr, live], None, Some(Duration::from_millis(300))).unwrap();
    // 40 requests over 2 s; about 3 are sent to the silent node before its
    // first attempt runs out.
    let t = drive(&engine, 20.0, 8, 3).await;
    serving.abort();
    drop(silent);
    assert_eq!(
        t.acked, REQUESTS,
        "every request lands: {} errors {:?}",
        t.errors, t.error_codes
    );
    assert!(
        t.retries <= 6,
        "{} requests hung on the silent node: it stayed in rotation",
        t.retries
    );
    assert_eq!(peer.attempts.load(Ordering::Relaxed), REQUESTS);
}
