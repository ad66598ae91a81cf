//! The client against real in-process clusters, and against a stand-in
//! server that only ever answers "at capacity", to see the retry budget and
//! `RetryInfo` at work from the outside.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

#[path = "../../intake-server/tests/common/mod.rs"]
mod common;
mod stand_in;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestCluster, complaint, fast_tuning};
use intake_client::{Client, ClientConfig, ClientError, RetryBudgetConfig, Submitted, pb};
use stand_in::{SERVER_DELAY, serve_always_full, serve_busy_once};
use tokio::time::Instant;
use tonic::Code;

const DISTRICT: &str = "110105";

fn endpoints(cluster: &TestCluster) -> Vec<String> {
    cluster.configs.keys().map(|id| cluster.addr(*id)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submit_goes_to_the_leader_and_a_retry_gets_the_same_ticket() {
    let cluster = TestCluster::start(3, fast_tuning()).await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let client = Client::connect(ClientConfig::new(endpoints(&cluster)))
        .await
        .unwrap();
    assert!(client.wait_for_leader(DISTRICT, Duration::from_secs(10)).await);
    assert_eq!(client.leader_for(DISTRICT), Some(cluster.addr(leader)));

    let first = client
        .submit(complaint("", DISTRICT, "Loud music at 2am"))
        .await
        .unwrap();
    assert!(!first.idempotency_key.is_empty(), "the client assigns a key");
    assert!(!first.duplicate);
    assert_eq!(first.shard, 0);
    assert!(first.accepted_at.is_some());

    let again = client
        .submit(complaint(&first.idempotency_key, DISTRICT, "Loud music at 2am"))
        .await
        .unwrap();
    assert_eq!(again.ticket_id, first.ticket_id);
    assert!(again.duplicate);

    // Definite refusals come back at once, with what was wrong.
    match client.submit(complaint("", "999999", "nowhere")).await {
        Err(ClientError::Rejected {
            code,
            field_violations,
            ..
        }) => {
            assert_eq!(code, Code::InvalidArgument);
            assert!(
                field_violations.iter().any(|v| v.field == "district_code"),
                "{field_violations:?}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    match client
        .submit(complaint(&first.idempotency_key, DISTRICT, "other text"))
        .await
    {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, Code::AlreadyExists),
        other => panic!("expected ALREADY_EXISTS, got {other:?}"),
    }
    cluster.shutdown().await;
}

/// Submits as an adapter must: on `Unknown`, `Overloaded` or `Unreachable`,
/// again with the same key, until a ticket or a rejection.
async fn submit_until_answered(client: &Client, c: pb::Complaint, resubmits: &Mutex<u32>) -> Submitted {
    let mut c = c;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match client.submit(c.clone()).await {
            Ok(s) => return s,
            Err(ClientError::Unknown {
                idempotency_key,
                last_error,
            }) => {
                eprintln!("unknown outcome, resubmitting {idempotency_key}: {last_error}");
                c.idempotency_key = idempotency_key;
            }
            Err(ClientError::Overloaded { retry_after }) => tokio::time::sleep(retry_after).await,
            Err(ClientError::Unreachable { last_error }) => {
                eprintln!("unreachable, resubmitting: {last_error}")
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
        *resubmits.lock().unwrap() += 1;
        assert!(Instant::now() < deadline, "no ticket for {c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_stopped_mid_stream_still_one_ticket_per_complaint() {
    let mut cluster = TestCluster::start(3, fast_tuning()).await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let mut config = ClientConfig::new(endpoints(&cluster));
    config.call_timeout = Duration::from_secs(20);
    config.attempt_timeout = Duration::from_secs(3);
    let client = Client::connect(config).await.unwrap();
    assert!(client.wait_for_leader(DISTRICT, Duration::from_secs(10)).await);

    const WORKERS: usize = 6;
    const EACH: usize = 40;
    let resubmits = Arc::new(Mutex::new(0u32));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let client = client.clone();
        let resubmits = resubmits.clone();
        let answered = answered.clone();
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..EACH {
                // Empty key: the client assigns it, once per complaint.
                let text = format!("complaint {w}-{i}");
                let s = submit_until_answered(&client, complaint("", DISTRICT, &text), &resubmits).await;
                out.push((text, s));
                answered.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            out
        }));
    }
    while answered.load(Ordering::Relaxed) < WORKERS * EACH / 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before_stop = answered.load(Ordering::Relaxed);
    cluster.stop_node(leader).await;

    let mut answers: Vec<(String, Submitted)> = Vec::new();
    for w in workers {
        answers.extend(w.await.unwrap());
    }
    let n = WORKERS * EACH;
    assert_eq!(answers.len(), n);
    assert!(
        before_stop > 0 && before_stop < n,
        "the leader stopped mid-stream ({before_stop} of {n} answered)"
    );
    let attempts: u32 = answers.iter().map(|(_, s)| s.attempts).sum();
    let tickets: HashSet<&str> = answers.iter().map(|(_, s)| s.ticket_id.as_str()).collect();
    assert_eq!(tickets.len(), n, "every complaint has its own ticket");

    // The cluster holds exactly one ticket per complaint: each text once,
    // under the key the client used, and nothing more.
    let new_leader = cluster.wait_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);
    let sm = cluster.nodes[&new_leader].registry().state_machine(0).unwrap();
    assert_eq!(sm.ticket_count().unwrap(), n as u64);
    let stored = sm.tickets_from(0, 10 * n).unwrap();
    let mut keys_per_text: HashMap<String, HashSet<String>> = HashMap::new();
    for t in &stored {
        keys_per_text
            .entry(t.complaint.text.clone())
            .or_default()
            .insert(t.complaint.idempotency_key.clone());
    }
    assert_eq!(stored.len(), n);
    for (text, s) in &answers {
        assert_eq!(
            keys_per_text[text],
            HashSet::from([s.idempotency_key.clone()]),
            "{text}"
        );
        assert_eq!(
            sm.lookup_key(&s.idempotency_key)
                .unwrap()
                .map(|id| id.to_string()),
            Some(s.ticket_id.clone())
        );
    }
    eprintln!(
        "{n} complaints, {before_stop} answered before the stop, {attempts} attempts in the final calls, {} resubmitted after Unknown/Overloaded",
        resubmits.lock().unwrap()
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn retry_budget_bounds_attempts_and_retry_info_spaces_them() {
    let (server, addr) = serve_always_full().await;
    let mut config = ClientConfig::new([addr]);
    config.call_timeout = Duration::from_secs(30);
    config.backoff_base = Duration::from_millis(1);
    config.backoff_max = Duration::from_millis(2);
    config.retry_budget = RetryBudgetConfig {
        max_tokens: 10.0,
        token_ratio: 0.1,
    };
    // The budget alone decides here; the throttle has its own test below.
    config.throttle = None;
    let client = Client::connect(config).await.unwrap();

    let started = Instant::now();
    match client.submit(complaint("", DISTRICT, "surge")).await {
        Err(ClientError::Overloaded { retry_after }) => assert_eq!(retry_after, SERVER_DELAY),
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the budget, not the timeout, ended it"
    );
    {
        let attempts = server.attempts.lock().unwrap();
        // Tokens 10 → 9, 8, 7, 6 allow a retry each; at 5 retries stop.
        assert_eq!(attempts.len(), 5);
        let keys: HashSet<&str> = attempts.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), 1, "one key for every attempt: {keys:?}");
        assert!(!attempts[0].0.is_empty());
        for pair in attempts.windows(2) {
            let gap = pair[1].1 - pair[0].1;
            assert!(
                gap >= SERVER_DELAY,
                "retried after {gap:?}, the server asked for {SERVER_DELAY:?}"
            );
        }
    }

    // The budget is shared: the next call gets its first attempt only.
    let _ = client.submit(complaint("k-2", DISTRICT, "surge 2")).await;
    let attempts = server.attempts.lock().unwrap();
    assert_eq!(attempts.len(), 6);
    assert_eq!(attempts[5].0, "k-2");
    assert!(client.retry_tokens() < 5.0);
}

/// The client-side throttle from the outside: once a node has refused the
/// ordinary complaints it was sent at capacity, most new ordinary ones are
/// answered `Overloaded` by the client itself without reaching it, while
/// every emergency still goes.
#[tokio::test]
async fn a_node_refusing_at_capacity_is_spared_ordinary_complaints_but_never_emergencies() {
    let (server, addr) = serve_always_full().await;
    let mut config = ClientConfig::new([addr]);
    // First attempts only, so that each call is one decision of the throttle.
    config.retry_budget = RetryBudgetConfig {
        max_tokens: 0.0,
        token_ratio: 0.1,
    };
    let client = Client::connect(config).await.unwrap();
    for i in 0..60 {
        match client
            .submit(complaint(&format!("o-{i}"), DISTRICT, "noise"))
            .await
        {
            Err(ClientError::Overloaded { retry_after }) => assert!(retry_after > Duration::ZERO),
            other => panic!("expected Overloaded, got {other:?}"),
        }
    }
    let reached = server.attempts.lock().unwrap().len();
    // With no acceptance, the chance to be held back after n refusals is
    // n/(n+1): about ln(60) ≈ 4 of the 60 reach the node, rarely 12.
    assert!(
        (1..=15).contains(&reached),
        "{reached} of 60 ordinary complaints reached the node"
    );
    for i in 0..20 {
        let mut fire = complaint(&format!("e-{i}"), DISTRICT, "smoke on the stairs");
        fire.category = "fire".into();
        assert!(matches!(
            client.submit(fire).await,
            Err(ClientError::Overloaded { .. })
        ));
    }
    assert_eq!(
        server.attempts.lock().unwrap().len(),
        reached + 20,
        "every emergency reached the node"
    );
}

#[tokio::test]
async fn a_dead_endpoint_is_unreachable_soon_and_a_hung_one_unknown() {
    // Bound then dropped: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut config = ClientConfig::new([addr]);
    config.call_timeout = Duration::from_secs(30);
    config.backoff_base = Duration::from_millis(5);
    let client = Client::connect(config).await.unwrap();
    let started = Instant::now();
    match client.submit(complaint("my-key", DISTRICT, "x")).await {
        Err(ClientError::Unreachable { .. }) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "the budget ended it");

    // A peer that accepts connections and never answers: the request was
    // sent, so its outcome is unknown, and the error names the key.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung = listener.local_addr().unwrap().to_string();
    let mut config = ClientConfig::new([hung]);
    config.call_timeout = Duration::from_millis(600);
    config.attempt_timeout = Duration::from_millis(200);
    let client = Client::connect(config).await.unwrap();
    match client.submit(complaint("my-key", DISTRICT, "x")).await {
        Err(ClientError::Unknown { idempotency_key, .. }) => assert_eq!(idempotency_key, "my-key"),
        other => panic!("expected Unknown, got {other:?}"),
    }
    drop(listener);
}

#[tokio::test]
async fn a_batch_resends_only_what_failed_retryably_with_the_same_keys() {
    let (server, addr) = stand_in::serve_busy_once().await;
    let mut config = ClientConfig::new([addr]);
    config.backoff_base = Duration::from_millis(1);
    let client = Client::connect(config).await.unwrap();
    let texts = ["calm 0", "busy 1", "calm 2", "busy 3"];
    let results = client
        .submit_batch(texts.iter().map(|t| complaint("", DISTRICT, t)).collect())
        .await;
    let answers: Vec<Submitted> = results.into_iter().map(Result::unwrap).collect();
    let requests = server.requests.lock().unwrap();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let first: Vec<&str> = requests[0].iter().map(String::as_str).collect();
    let keys: Vec<&str> = answers.iter().map(|a| a.idempotency_key.as_str()).collect();
    assert_eq!(first, keys, "one key per complaint, in order");
    assert_eq!(requests[1], vec![keys[1].to_string(), keys[3].to_string()]);
    let attempts: Vec<u32> = answers.iter().map(|a| a.attempts).collect();
    assert_eq!(attempts, [1, 2, 1, 2]);
}

/// Each complaint of a batch honours its own RetryInfo: one told to come
/// back in a minute does not hold back one told 50 ms (in a mixed batch, an
/// emergency beside ordinary complaints being shed).
#[tokio::test]
async fn each_complaint_of_a_batch_waits_only_its_own_retry_delay() {
    let (server, addr) = stand_in::serve_busy_once().await;
    let mut config = ClientConfig::new([addr]);
    config.backoff_base = Duration::from_millis(1);
    config.call_timeout = Duration::from_secs(5);
    // Two refusals at capacity and no ticket yet: the throttle could hold
    // the resend back; this test is about each complaint's own delay.
    config.throttle = None;
    let client = Client::connect(config).await.unwrap();
    let started = std::time::Instant::now();
    let results = client
        .submit_batch(vec![
            complaint("", DISTRICT, "busy 0"),
            complaint("", DISTRICT, "away 1"),
        ])
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let busy = results[0].as_ref().expect("resent after its own 50 ms");
    assert_eq!(busy.attempts, 2);
    match &results[1] {
        Err(ClientError::Overloaded { retry_after }) => assert_eq!(*retry_after, Duration::from_secs(60)),
        other => panic!("the complaint told to wait a minute: {other:?}"),
    }
    let requests = server.requests.lock().unwrap();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1], vec![busy.idempotency_key.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_across_shards_gets_one_ticket_each_and_the_same_on_resend() {
    let cluster = TestCluster::start_with(3, 4, fast_tuning()).await;
    for shard in 0..4 {
        cluster.wait_shard_leader(shard, Duration::from_secs(20)).await;
    }
    let client = Client::connect(ClientConfig::new(endpoints(&cluster)))
        .await
        .unwrap();
    let districts = ["110101", "110102", "110105", "110106", "110107", "110108"];
    let mut batch: Vec<pb::Complaint> = (0..60)
        .map(|i| complaint("", districts[i % districts.len()], &format!("batch {i}")))
        .collect();
    batch.insert(7, complaint("", "999999", "nowhere"));
    let first = client.submit_batch(batch.clone()).await;
    assert_eq!(first.len(), 61);
    match &first[7] {
        Err(ClientError::Rejected {
            code,
            field_violations,
            ..
        }) => {
            assert_eq!(*code, Code::InvalidArgument);
            assert!(!field_violations.is_empty());
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let ok: Vec<&Submitted> = first.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 60);
    let shards: HashSet<u32> = ok.iter().map(|s| s.shard).collect();
    assert!(shards.len() > 1, "the batch spanned shards: {shards:?}");
    assert_eq!(ok.iter().map(|s| &s.ticket_id).collect::<HashSet<_>>().len(), 60);

    // The same complaints with the keys the client assigned: same tickets.
    for (c, r) in batch.iter_mut().zip(&first) {
        if let Ok(s) = r {
            c.idempotency_key = s.idempotency_key.clone();
        }
    }
    let again = client.submit_batch(batch).await;
    for (a, b) in first.iter().zip(&again) {
        if let (Ok(a), Ok(b)) = (a, b) {
            assert_eq!(a.ticket_id, b.ticket_id);
            assert!(b.duplicate);
        }
    }
    assert_eq!(again.iter().filter(|r| r.is_ok()).count(), 60);
    cluster.shutdown().await;
}

/// A killed node refuses connections: calls that would go to it (the map
/// still names it, or it is next in turn) go at once to another node, with
/// no retry budget spent, and it leaves the rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_costs_no_complaint_even_with_a_tiny_retry_budget() {
    let mut cluster = TestCluster::start(3, fast_tuning()).await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    // An address nothing listens on, as well: bound, then dropped.
    let refusing = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let mut eps = vec![refusing];
    eps.extend(endpoints(&cluster));
    let mut config = ClientConfig::new(eps);
    config.call_timeout = Duration::from_secs(20);
    config.attempt_timeout = Duration::from_secs(10);
    // One failure and no retry is allowed any more.
    config.retry_budget = RetryBudgetConfig {
        max_tokens: 1.0,
        token_ratio: 0.1,
    };
    let client = Client::connect(config).await.unwrap();
    assert!(client.wait_for_leader(DISTRICT, Duration::from_secs(10)).await);
    assert_eq!(client.leader_for(DISTRICT), Some(cluster.addr(leader)));

    // The client's map still names the leader when it dies.
    cluster.stop_node(leader).await;
    let mut failures = Vec::new();
    for i in 0..30 {
        // Other districts are not in the map: they go to endpoints in turn.
        let district = if i % 2 == 0 { DISTRICT } else { "110108" };
        if let Err(e) = client
            .submit(complaint(&format!("dead-{i}"), district, "a node is down"))
            .await
        {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 30 failed: {:?}",
        failures.len(),
        failures.first()
    );
    cluster.shutdown().await;
}

/// A paused node takes connections and answers nothing. The first attempt
/// that runs out on it takes it out of rotation (a health probe, not a
/// request, asks it again), so of many calls only that one pays.
#[tokio::test]
async fn a_silent_node_leaves_the_rotation_after_one_attempt_runs_out() {
    // Listening, never accepting: connections open, nothing is answered.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (server, live) = serve_busy_once().await;
    let mut config = ClientConfig::new([silent.local_addr().unwrap().to_string(), live]);
    config.attempt_timeout = Duration::from_millis(300);
    config.call_timeout = Duration::from_secs(5);
    let client = Client::connect(config).await.unwrap();
    let mut attempts = Vec::new();
    for i in 0..10 {
        let c = complaint(&format!("silent-{i}"), DISTRICT, "a node is paused");
        let mut answers = client.submit_batch(vec![c]).await;
        match answers.pop() {
            Some(Ok(s)) => attempts.push(s.attempts),
            other => panic!("call {i}: {other:?}"),
        }
    }
    attempts.sort_unstable();
    assert_eq!(attempts, [1, 1, 1, 1, 1, 1, 1, 1, 1, 2], "one call found it out");
    assert_eq!(server.requests.lock().unwrap().len(), 10);
    drop(silent);
}
