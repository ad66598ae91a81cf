//! A three-node cluster in one process: acknowledged tickets survive the loss
//! of the leader, restarts of one node and of the whole cluster, and retries
//! never make a second ticket.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use intake_server::RaftTuning;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_leader_loss_and_restarts() {
    let mut c = TestCluster::start(3, fast_tuning()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;

    // Through every node, followers included: they forward to the leader.
    let mut acked: BTreeMap<String, (String, common_complaint::Stored)> = BTreeMap::new();
    for i in 0..30u64 {
        let via = 1 + i % 3;
        let key = format!("before-{i}");
        let body = common_complaint::make(&key, i);
        let r = submit(&mut c.client(via).await, body.clone())
            .await
            .expect("submit before failure");
        assert!(!r.duplicate);
        acked.insert(key, (r.ticket_id, body));
    }

    // Lose the leader; the survivors elect another and keep accepting.
    c.stop_node(leader).await;
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for i in 0..30u64 {
        let via = survivors[(i % 2) as usize];
        let key = format!("after-{i}");
        let body = common_complaint::make(&key, i);
        let r = submit(&mut c.client(via).await, body.clone())
            .await
            .expect("submit after leader loss");
        acked.insert(key, (r.ticket_id, body));
    }
    let new_leader = c.wait_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);

    // The old leader comes back with its data and catches up.
    c.start_node(leader).await;
    let last = c.nodes[&new_leader]
        .raft(0)
        .unwrap()
        .metrics()
        .borrow_watched()
        .last_applied
        .unwrap()
        .index;
    c.wait_applied(last, Duration::from_secs(30)).await;
    for id in 1..=3 {
        let mut client = c.client(id).await;
        for (key, (ticket, _)) in &acked {
            let t = get_local(&mut client, ticket)
                .await
                .unwrap_or_else(|| panic!("node {id} lacks {ticket}"));
            assert_eq!(
                &t.complaint.unwrap().idempotency_key,
                key,
                "node {id} ticket {ticket}"
            );
        }
    }

    // A retry with the same key and content returns the same ticket...
    let mut client = c.client(survivors[0]).await;
    for (ticket, body) in acked.values().take(10) {
        let r = submit(&mut client, body.clone()).await.unwrap();
        assert_eq!(&r.ticket_id, ticket);
        assert!(r.duplicate);
    }
    // ...and the same key with other content is refused, naming the ticket.
    let (ticket, body) = acked.values().next().unwrap().clone();
    let mut other = body.clone();
    other.text.push_str(" (edited)");
    let err = submit(&mut client, other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&ticket), "{}", err.message());

    // The whole cluster stops and starts again: every ticket is still there.
    c.stop_node(1).await;
    c.stop_node(2).await;
    c.stop_node(3).await;
    for id in 1..=3 {
        c.start_node(id).await;
    }
    c.wait_leader(Duration::from_secs(30)).await;
    for id in 1..=3 {
        let mut client = c.client(id).await;
        for (ticket, body) in acked.values() {
            let r = client
                .get_ticket(intake_proto::pb::GetTicketRequest {
                    ticket_id: ticket.clone(),
                    local: false,
                })
                .await
                .unwrap_or_else(|e| panic!("node {id}: {ticket}: {e}"))
                .into_inner();
            assert_eq!(
                r.ticket.unwrap().complaint.unwrap().idempotency_key,
                body.idempotency_key
            );
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_follower_catches_up_by_snapshot() {
    let tuning = RaftTuning {
        snapshot_every: 40,
        keep_behind_snapshot: 5,
        ..fast_tuning()
    };
    let mut c = TestCluster::start(3, tuning).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    tracing::info!(leader, follower, "stopping follower");
    c.stop_node(follower).await;
    tracing::info!("follower stopped");

    let mut client = c.client(leader).await;
    let mut tickets = Vec::new();
    for i in 0..150u64 {
        let key = format!("snap-{i}");
        let r = submit(&mut client, common_complaint::make(&key, i))
            .await
            .unwrap();
        tickets.push((key, r.ticket_id));
    }
    tracing::info!("submitted 150");
    // The leader has compacted its log past what the follower has.
    let raft = c.nodes[&leader].raft(0).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while raft.metrics().borrow_watched().purged.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "leader never purged its log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    tracing::info!("restarting follower");
    c.start_node(follower).await;
    let last = raft.metrics().borrow_watched().last_applied.unwrap().index;
    c.wait_applied(last, Duration::from_secs(30)).await;
    let snap = c.nodes[&follower]
        .raft(0)
        .unwrap()
        .metrics()
        .borrow_watched()
        .snapshot;
    assert!(snap.is_some(), "follower caught up without installing a snapshot");
    let mut fc = c.client(follower).await;
    for (key, ticket) in &tickets {
        let t = get_local(&mut fc, ticket)
            .await
            .unwrap_or_else(|| panic!("follower lacks {ticket}"));
        assert_eq!(&t.complaint.unwrap().idempotency_key, key);
    }
    c.shutdown().await;
}

/// A retry (marked with gRPC's `grpc-previous-rpc-attempts`) of a complaint
/// that is already committed is answered from the state of any replica that
/// has applied it, without a new proposal: even
/// with its shard's quorum gone, a node returns those tickets, while new
/// complaints in the same batch fail on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_of_applied_complaints_need_no_quorum() {
    let mut c = TestCluster::start(3, fast_tuning()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let mut first = Vec::new();
    for i in 0..5u64 {
        let body = common_complaint::make(&format!("once-{i}"), i);
        let r = submit(&mut c.client(leader).await, body.clone()).await.unwrap();
        first.push((r.ticket_id, body));
    }
    let last = c.nodes[&leader]
        .raft(0)
        .unwrap()
        .metrics()
        .borrow_watched()
        .last_log_index
        .unwrap();
    c.wait_applied(last, Duration::from_secs(30)).await;

    // Only one replica is left: nothing new can commit.
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    for id in (1..=3).filter(|id| *id != survivor) {
        c.stop_node(id).await;
    }
    let mut client = c.client(survivor).await;
    for (ticket, body) in &first {
        let mut req = tonic::Request::new(intake_proto::pb::SubmitRequest {
            complaint: Some(body.clone()),
        });
        req.set_timeout(Duration::from_secs(5));
        req.metadata_mut()
            .insert("grpc-previous-rpc-attempts", 1u32.into());
        let r = client
            .submit(req)
            .await
            .expect("a retry of an applied complaint")
            .into_inner();
        assert_eq!(&r.ticket_id, ticket);
        assert!(r.duplicate);
    }
    let mut edited = first[0].1.clone();
    edited.text.push_str(" (edited)");
    let fresh = common_complaint::make("never-before", 7);
    let mut req = tonic::Request::new(intake_proto::pb::SubmitBatchRequest {
        complaints: vec![first[1].1.clone(), fresh, edited, first[2].1.clone()],
    });
    req.set_timeout(Duration::from_secs(2));
    req.metadata_mut()
        .insert("grpc-previous-rpc-attempts", 1u32.into());
    let results = client
        .submit_batch(req)
        .await
        .expect("batch")
        .into_inner()
        .results;
    use intake_proto::pb::submit_result::Outcome;
    let ticket_of = |i: usize| match &results[i].outcome {
        Some(Outcome::Accepted(ok)) => Some(ok.ticket_id.clone()),
        _ => None,
    };
    assert_eq!(ticket_of(0).as_ref(), Some(&first[1].0));
    assert_eq!(ticket_of(3).as_ref(), Some(&first[2].0));
    assert!(
        ticket_of(1).is_none(),
        "a new complaint cannot commit without a quorum"
    );
    match &results[2].outcome {
        Some(Outcome::Error(e)) => {
            assert_eq!(Code::from_i32(e.code), Code::AlreadyExists);
            assert!(e.message.contains(&first[0].0), "{}", e.message);
        }
        other => panic!("same key, other content: {other:?}"),
    }
    c.shutdown().await;
}

mod common_complaint {
    pub type Stored = intake_proto::pb::Complaint;

    /// A valid complaint; districts and categories vary with `i`.
    pub fn make(key: &str, i: u64) -> Stored {
        let districts = ["110101", "110105", "110108", "110109", "110111"];
        let mut c = super::complaint(key, districts[(i % 5) as usize], &format!("complaint number {i}"));
        c.category = ["noise", "flood", "traffic"][(i % 3) as usize].into();
        c
    }
}
