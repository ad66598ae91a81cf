//! The forwarder's lane to a peer, over real gRPC, against a stand-in peer
//! that holds ordinary complaints for as long as the test needs: what a
//! real leader does to them in a surge (they queue up to their deadline,
//! and a forwarded call answers when its slowest shard has committed),
//! made to last.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::time::Duration;

use intake_cluster::PeerPool;
use intake_core::Priority;
use intake_proto::pb;
use intake_proto::pb::intake_service_server::{IntakeService, IntakeServiceServer};
use intake_server::forwarder::{CALLS_PER_PEER, Forward, Forwarder};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// Accepts every complaint; a call of ordinary complaints (category
/// "noise") is answered only once `release` turns true. `held` counts the
/// calls it is holding.
#[derive(Clone)]
struct StandIn {
    held: watch::Sender<usize>,
    release: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl IntakeService for StandIn {
    async fn submit(&self, _: Request<pb::SubmitRequest>) -> Result<Response<pb::SubmitResponse>, Status> {
        Err(Status::unimplemented("forwards are SubmitBatch calls"))
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let complaints = request.into_inner().complaints;
        if complaints.iter().any(|c| c.category == "noise") {
            self.held.send_modify(|n| *n += 1);
            let mut release = self.release.clone();
            release
                .wait_for(|go| *go)
                .await
                .map_err(|_| Status::internal("the test ended"))?;
        }
        let results = complaints
            .iter()
            .map(|c| pb::SubmitResult {
                outcome: Some(pb::submit_result::Outcome::Accepted(pb::SubmitResponse {
                    ticket_id: format!("0-{}", c.idempotency_key),
                    ..Default::default()
                })),
            })
            .collect();
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

fn forward(key: &str, class: Priority, deadline: Instant) -> Forward {
    let category = match class {
        Priority::Emergency => "flood",
        Priority::Ordinary => "noise",
    };
    Forward {
        complaints: vec![pb::Complaint {
            idempotency_key: key.into(),
            category: category.into(),
            ..Default::default()
        }],
        class,
        hops: 1,
        retry: false,
        deadline,
        token: None,
    }
}

/// An emergency forwarded to a peer while ordinary complaints hold every
/// call to it gets its answer: it neither waits for one of their calls nor
/// behind them in the lane. Before emergencies had calls of their own, it
/// waited there until its deadline (the DEADLINE_EXCEEDED emergencies of
/// the batched 5x surge in `benches/overload.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_is_forwarded_while_ordinary_complaints_hold_every_call_to_the_peer() {
    let (held, mut held_rx) = watch::channel(0usize);
    let (release, release_rx) = watch::channel(false);
    let peer = StandIn {
        held,
        release: release_rx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tonic::transport::Server::builder().add_service(IntakeServiceServer::new(peer));
    let serving =
        tokio::spawn(server.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));

    let forwarder = Forwarder::new(PeerPool::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ordinary = tokio::task::JoinSet::new();
    // One call at a time, each waiting until the peer holds it, so each is
    // a call of its own and together they take every call to the peer.
    for i in 0..CALLS_PER_PEER {
        let (forwarder, addr) = (forwarder.clone(), addr.clone());
        ordinary.spawn(async move {
            forwarder
                .send(2, &addr, forward(&format!("o{i}"), Priority::Ordinary, deadline))
                .await
        });
        held_rx.wait_for(|n| *n > i).await.unwrap();
    }
    // One more ordinary complaint waits in the lane for a call.
    {
        let (forwarder, addr) = (forwarder.clone(), addr.clone());
        ordinary.spawn(async move {
            forwarder
                .send(2, &addr, forward("waiting", Priority::Ordinary, deadline))
                .await
        });
    }

    let answer = forwarder
        .send(2, &addr, forward("e", Priority::Emergency, deadline))
        .await;
    let tickets: Vec<String> = match answer {
        Ok(items) => items
            .into_iter()
            .map(|r| r.map(|ok| ok.ticket_id).unwrap_or_else(|e| format!("{e:?}")))
            .collect(),
        Err(e) => panic!("the emergency was not answered: {e:?}"),
    };
    assert_eq!(tickets, ["0-e"]);
    assert_eq!(
        *held_rx.borrow(),
        CALLS_PER_PEER,
        "the ordinary calls were still held when the emergency got its answer"
    );

    // Released, the ordinary ones get theirs too.
    release.send(true).unwrap();
    while let Some(answer) = ordinary.join_next().await {
        let items = answer.unwrap().expect("an ordinary forward failed");
        assert!(items.iter().all(Result::is_ok), "{items:?}");
    }
    serving.abort();
}
