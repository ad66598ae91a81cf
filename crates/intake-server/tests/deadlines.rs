//! Deadlines that run out while a request is forwarded answer
//! DEADLINE_EXCEEDED, never CANCELLED, for `Submit` and for every item of a
//! `SubmitBatch`.
//!
//! The calls go through a plain HTTP/2 client: tonic's own channel starts a
//! timer from `grpc-timeout` and ends the call with CANCELLED itself, which
//! would hide what the server answered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestCluster, complaint, fast_tuning};
use futures::future::join_all;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use intake_proto::pb;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use tonic::Code;

const DISTRICTS: [&str; 16] = [
    "110101", "110102", "110105", "110106", "110107", "110108", "110109", "110111", "110112", "110113",
    "110114", "110115", "110116", "110117", "110118", "110119",
];

type RawClient = IntakeServiceClient<
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, tonic::body::Body>,
>;

fn raw_client(addr: &str) -> RawClient {
    let http = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<tonic::body::Body>();
    let origin = format!("http://{addr}")
        .parse()
        .expect("a loopback address is a URI");
    IntakeServiceClient::with_origin(http, origin)
}

/// Codes a deadline of a few ms may get; CANCELLED (and anything else) is a bug.
fn allowed(code: Code) -> bool {
    matches!(
        code,
        Code::Ok | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Unavailable
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiring_deadlines_through_a_follower_are_deadline_exceeded() {
    let cluster = TestCluster::start_with(3, 4, fast_tuning()).await;
    let mut leaders = BTreeMap::new();
    for shard in 0..4 {
        leaders.insert(
            shard,
            cluster.wait_shard_leader(shard, Duration::from_secs(20)).await,
        );
    }
    // The door leads the fewest shards, so most calls are forwarded.
    let door = (1..=3u64)
        .min_by_key(|n| leaders.values().filter(|l| *l == n).count())
        .unwrap_or(1);
    let client = raw_client(&cluster.addr(door));
    // Warm the connections (door → leaders) so the test is about deadlines.
    let mut warm = cluster.client(door).await;
    for (i, d) in DISTRICTS.iter().enumerate() {
        common::submit(&mut warm, complaint(&format!("warm-{i}"), d, "warm-up"))
            .await
            .expect("warm-up submit");
    }

    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad: Vec<String> = Vec::new();
    for round in 0..10 {
        let calls = (0..30).map(|i| {
            let mut client = client.clone();
            let n = round * 30 + i;
            async move {
                let deadline = Duration::from_millis(1 + (n % 3) as u64);
                if n % 2 == 0 {
                    let c = complaint(&format!("unary-{n}"), DISTRICTS[n % 16], "deadline test");
                    let mut req = tonic::Request::new(pb::SubmitRequest { complaint: Some(c) });
                    req.set_timeout(deadline);
                    let answer = tokio::time::timeout(Duration::from_secs(10), client.submit(req)).await;
                    match answer {
                        Ok(Ok(_)) => vec![("unary", Code::Ok, String::new())],
                        Ok(Err(s)) => vec![("unary", s.code(), s.message().to_string())],
                        Err(_) => vec![("unary", Code::Unknown, "no answer within 10 s".into())],
                    }
                } else {
                    let complaints = (0..4)
                        .map(|j| {
                            complaint(
                                &format!("batch-{n}-{j}"),
                                DISTRICTS[(n + j * 5) % 16],
                                "deadline test",
                            )
                        })
                        .collect();
                    let mut req = tonic::Request::new(pb::SubmitBatchRequest { complaints });
                    req.set_timeout(deadline);
                    let answer =
                        tokio::time::timeout(Duration::from_secs(10), client.submit_batch(req)).await;
                    match answer {
                        Ok(Ok(r)) => r
                            .into_inner()
                            .results
                            .into_iter()
                            .map(|item| match item.outcome {
                                Some(pb::submit_result::Outcome::Accepted(_)) => {
                                    ("item", Code::Ok, String::new())
                                }
                                Some(pb::submit_result::Outcome::Error(e)) => {
                                    ("item", Code::from_i32(e.code), e.message)
                                }
                                None => ("item", Code::Unknown, "empty item".into()),
                            })
                            .collect(),
                        Ok(Err(s)) => vec![("batch", s.code(), s.message().to_string())],
                        Err(_) => vec![("batch", Code::Unknown, "no answer within 10 s".into())],
                    }
                }
            }
        });
        for answers in join_all(calls).await {
            for (what, code, message) in answers {
                *tally.entry(format!("{what} {code:?}")).or_default() += 1;
                if !allowed(code) {
                    bad.push(format!("{what} {code:?}: {message}"));
                }
                if code == Code::DeadlineExceeded {
                    assert!(
                        message.contains("retry with the same idempotency key"),
                        "{what}: a deadline must say to retry with the same key: {message}"
                    );
                }
            }
        }
    }
    println!("answers through node {door}: {tally:?}");
    bad.sort();
    bad.dedup();
    assert!(
        bad.is_empty(),
        "answers other than OK/DEADLINE_EXCEEDED/RESOURCE_EXHAUSTED/UNAVAILABLE: {bad:?}"
    );
    cluster.shutdown().await;
}
