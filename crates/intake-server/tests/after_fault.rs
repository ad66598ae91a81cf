//! Refusals must end with the fault: once a killed leader's shard has a new
//! leader, ordinary complaints are not refused as "answers too slowly"
//! because earlier requests spent seconds waiting out the election.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use std::time::Duration;

use common::{TestCluster, complaint, fast_tuning};
use futures::future::join_all;
use intake_proto::pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_slowness_refusals_once_a_new_leader_answers() {
    let mut cluster = TestCluster::start(3, fast_tuning()).await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let door = (1..=3u64).find(|n| *n != leader).unwrap_or(1);
    let mut client = cluster.client(door).await;
    for i in 0..5 {
        common::submit(
            &mut client,
            complaint(&format!("before-{i}"), "110105", "warm-up"),
        )
        .await
        .expect("submit before the fault");
    }

    cluster.stop_node(leader).await;
    // Complaints arriving during the election wait it out at the door and
    // are acknowledged once a new leader is elected.
    let during = (0..10).map(|i| {
        let mut client = client.clone();
        async move {
            let mut req = tonic::Request::new(pb::SubmitRequest {
                complaint: Some(complaint(&format!("during-{i}"), "110105", "during the election")),
            });
            req.set_timeout(Duration::from_secs(10));
            client.submit(req).await
        }
    });
    let during = join_all(during).await;
    let acked = during.iter().filter(|r| r.is_ok()).count();
    println!("acknowledged during the election: {acked} of {}", during.len());
    let new_leader = cluster.wait_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);

    // The shard has a leader again: ordinary complaints get in.
    let mut slow_refusals = Vec::new();
    for i in 0..20 {
        let mut req = tonic::Request::new(pb::SubmitRequest {
            complaint: Some(complaint(&format!("after-{i}"), "110105", "after the election")),
        });
        req.set_timeout(Duration::from_secs(5));
        if let Err(s) = client.submit(req).await
            && s.code() == Code::ResourceExhausted
            && s.message().contains("too slowly")
        {
            slow_refusals.push(s.message().to_string());
        }
    }
    assert!(
        slow_refusals.is_empty(),
        "{} of 20 refused after the fault ended: {:?}",
        slow_refusals.len(),
        slow_refusals.first()
    );
    cluster.shutdown().await;
}
