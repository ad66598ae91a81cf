//! Surge safety on a real 3-node cluster with deliberately small queues:
//! every submission is acknowledged or explicitly refused within its
//! deadline, refusals say when to retry, every acknowledgement is durable on
//! every replica, and emergencies keep being admitted while ordinary
//! complaints are shed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestCluster, complaint, fast_tuning, get_local};
use intake_proto::pb;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::Code;
use tonic_types::StatusExt;

const DEADLINE: Duration = Duration::from_secs(3);
/// Time for the answer to travel back after the server gave up; generous,
/// because the machine is shared.
const GRACE: Duration = Duration::from_millis(1500);

#[derive(Default)]
struct Seen {
    acked: Vec<(String, String)>,
    refused_with_retry: u64,
    refused_without_retry: u64,
    other: Vec<String>,
    late: Vec<Duration>,
}

struct Counts {
    offered: u64,
    acked: u64,
}

/// `workers` tasks each submit `per_worker` complaints of `category` back to
/// back, one attempt each, spread over the nodes.
async fn flood(
    cluster: &TestCluster,
    seen: Arc<Mutex<Seen>>,
    prefix: &'static str,
    category: &'static str,
    workers: usize,
    per_worker: usize,
) -> tokio::task::JoinSet<Counts> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let mut client = cluster.client(1 + (w as u64 % 3)).await;
        let seen = seen.clone();
        set.spawn(async move {
            let mut counts = Counts { offered: 0, acked: 0 };
            for i in 0..per_worker {
                let key = format!("{prefix}-{w}-{i}");
                let mut c = complaint(&key, "110105", "surge");
                c.category = category.into();
                let mut req = tonic::Request::new(pb::SubmitRequest { complaint: Some(c) });
                req.set_timeout(DEADLINE);
                let started = Instant::now();
                let result = client.submit(req).await;
                let took = started.elapsed();
                counts.offered += 1;
                let mut s = seen.lock().await;
                if took > DEADLINE + GRACE {
                    s.late.push(took);
                }
                match result {
                    Ok(r) => {
                        counts.acked += 1;
                        s.acked.push((key, r.into_inner().ticket_id));
                    }
                    Err(st) if st.code() == Code::ResourceExhausted => {
                        let after = st.get_details_retry_info().and_then(|r| r.retry_delay);
                        if after.is_some_and(|d| d > Duration::ZERO) {
                            s.refused_with_retry += 1;
                        } else {
                            s.refused_without_retry += 1;
                        }
                    }
                    Err(st) => s.other.push(format!("{:?}: {}", st.code(), st.message())),
                }
            }
            counts
        });
    }
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_refused_explicitly_and_emergencies_get_through() {
    // One proposal of at most 16 complaints at a time and a 64-complaint
    // queue, so 150 eager clients are far beyond what the shard can take.
    let cluster = TestCluster::start_configured(3, 1, fast_tuning(), |cfg| {
        cfg.admission.shard_queue = 64;
        cfg.admission.node_queue = 128;
        cfg.admission.max_in_flight = 1;
        cfg.admission.max_batch_items = 16;
    })
    .await;
    cluster.wait_leader(Duration::from_secs(20)).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut ordinary = flood(&cluster, seen.clone(), "ord", "noise", 150, 30).await;
    // Emergencies arrive a few at a time, as they do in a real surge: well
    // within the room the ordinary share leaves free.
    let mut emergency = flood(&cluster, seen.clone(), "emg", "flood", 4, 50).await;

    let (mut e, mut o) = (Counts { offered: 0, acked: 0 }, Counts { offered: 0, acked: 0 });
    while let Some(c) = emergency.join_next().await {
        let c = c.unwrap();
        e.offered += c.offered;
        e.acked += c.acked;
    }
    while let Some(c) = ordinary.join_next().await {
        let c = c.unwrap();
        o.offered += c.offered;
        o.acked += c.acked;
    }
    let s = seen.lock().await;
    assert!(
        s.other.is_empty(),
        "only acknowledgements and explicit refusals: {:?}",
        &s.other[..s.other.len().min(5)]
    );
    assert!(s.late.is_empty(), "answers after the deadline: {:?}", s.late);
    assert_eq!(s.refused_without_retry, 0, "every refusal carries RetryInfo");
    assert!(
        s.refused_with_retry > 0,
        "the flood must actually overload the shard"
    );
    assert!(
        e.acked * 100 >= e.offered * 99,
        "emergencies admitted {}/{} while ordinary got {}/{}",
        e.acked,
        e.offered,
        o.acked,
        o.offered
    );
    assert!(o.acked < o.offered, "ordinary complaints are the ones shed");

    // Every acknowledgement is durable: on every replica once applied.
    let acked = s.acked.clone();
    drop(s);
    for id in 1..=3u64 {
        let mut client = cluster.client(id).await;
        for (key, ticket) in &acked {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(t) = get_local(&mut client, ticket).await {
                    assert_eq!(t.complaint.unwrap().idempotency_key, *key);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id} lacks acknowledged ticket {ticket}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn bad_items_in_a_batch_fail_alone_under_admission() {
    let cluster = TestCluster::start_configured(1, 1, fast_tuning(), |cfg| {
        cfg.admission.max_batch_items = 4;
    })
    .await;
    cluster.wait_leader(Duration::from_secs(20)).await;
    let mut client = cluster.client(1).await;
    let mut items: Vec<pb::Complaint> = (0..10)
        .map(|i| {
            let mut c = complaint(&format!("b-{i}"), "110105", "x");
            c.category = if i % 2 == 0 { "fire".into() } else { "noise".into() };
            c
        })
        .collect();
    items[3].text.clear();
    items[6].district_code = "999999".into();
    let resp = client
        .submit_batch(pb::SubmitBatchRequest { complaints: items })
        .await
        .unwrap()
        .into_inner();
    for (i, r) in resp.results.iter().enumerate() {
        let ok = matches!(r.outcome, Some(pb::submit_result::Outcome::Accepted(_)));
        assert_eq!(ok, i != 3 && i != 6, "item {i}: {:?}", r.outcome);
        if let Some(pb::submit_result::Outcome::Error(e)) = &r.outcome {
            assert_eq!(e.code, Code::InvalidArgument as i32);
            assert!(!e.field_violations.is_empty());
        }
    }
    cluster.shutdown().await;
}

/// Ordinary callers refused while the shedding goes on are told to stay away
/// longer and longer, so clients that honour RetryInfo stop retrying within
/// their deadlines instead of multiplying the surge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lasting_surge_sends_ordinary_callers_away_for_longer() {
    let cluster = TestCluster::start_configured(1, 1, fast_tuning(), |cfg| {
        cfg.admission.shard_queue = 16;
        cfg.admission.node_queue = 32;
        cfg.admission.max_in_flight = 1;
        cfg.admission.max_batch_items = 4;
    })
    .await;
    cluster.wait_leader(Duration::from_secs(20)).await;
    const FLOOD: Duration = Duration::from_millis(2500);
    let began = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..40 {
        let mut client = cluster.client(1).await;
        set.spawn(async move {
            // (when, asked delay) of each refusal; bounded by time and count.
            let mut refusals = Vec::new();
            for i in 0..5_000 {
                if began.elapsed() >= FLOOD {
                    break;
                }
                let mut req = tonic::Request::new(pb::SubmitRequest {
                    complaint: Some(complaint(&format!("long-{w}-{i}"), "110105", "surge")),
                });
                req.set_timeout(DEADLINE);
                if let Err(st) = client.submit(req).await
                    && st.code() == Code::ResourceExhausted
                {
                    let after = st.get_details_retry_info().and_then(|r| r.retry_delay);
                    refusals.push((began.elapsed(), after.unwrap_or_default()));
                }
            }
            refusals
        });
    }
    let mut refusals = Vec::new();
    while let Some(r) = set.join_next().await {
        refusals.extend(r.unwrap());
    }
    refusals.sort();
    let early: Vec<Duration> = refusals
        .iter()
        .filter(|(t, _)| *t < Duration::from_millis(500))
        .map(|r| r.1)
        .collect();
    let late: Vec<Duration> = refusals
        .iter()
        .filter(|(t, _)| *t >= Duration::from_secs(2))
        .map(|r| r.1)
        .collect();
    assert!(
        !early.is_empty() && !late.is_empty(),
        "the flood must be refused throughout: {refusals:?}"
    );
    let longest_early = early.iter().max().copied().unwrap_or_default();
    let longest_late = late.iter().max().copied().unwrap_or_default();
    assert!(
        longest_late >= Duration::from_secs(1) && longest_late > longest_early,
        "late refusals asked for at most {longest_late:?}, early ones {longest_early:?}"
    );
    assert!(
        refusals
            .iter()
            .all(|(_, d)| *d <= intake_server::admission::delay::MAX_RETRY)
    );
    cluster.shutdown().await;
}
