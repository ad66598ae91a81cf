//! The outbox across adapter crashes: what `enqueue` stored is still there
//! after a drop without shutdown, drains once a cluster is up, and yields
//! exactly one ticket per complaint — also when the crash comes mid-drain.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

#[path = "../../intake-server/tests/common/mod.rs"]
mod common;
mod stand_in;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::{TestCluster, complaint, fast_tuning};
use intake_client::{Client, ClientConfig, MAX_RECORD_BYTES, Outbox, OutboxConfig, OutboxError, OutboxEvent};

const DISTRICT: &str = "110105";

/// A client whose only endpoint refuses connections: the cluster is down.
async fn client_of_a_dead_cluster() -> Client {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    Client::connect(ClientConfig::new([addr])).await.unwrap()
}

async fn client_of(cluster: &TestCluster) -> Client {
    let endpoints: Vec<String> = cluster.configs.keys().map(|id| cluster.addr(*id)).collect();
    Client::connect(ClientConfig::new(endpoints)).await.unwrap()
}

fn quick() -> OutboxConfig {
    OutboxConfig {
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..Default::default()
    }
}

/// Reopens after a simulated crash. The dropped outbox's drain task lets go
/// of the store's file lock a moment later, so this retries briefly.
async fn reopen(dir: &Path, client: Client) -> Outbox {
    let mut last = String::new();
    for _ in 0..50 {
        match Outbox::open(dir, client.clone(), quick()).await {
            Ok(o) => return o,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("outbox did not reopen: {last}");
}

async fn enqueue_n(outbox: &Outbox, prefix: &str, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..n {
        let key = outbox
            .enqueue(complaint("", DISTRICT, &format!("{prefix} {i}")))
            .await
            .unwrap();
        keys.push(key);
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueue_is_durable_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path(), client_of_a_dead_cluster().await, quick())
        .await
        .unwrap();
    let keys = enqueue_n(&outbox, "stored", 7).await;
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 7, "one fresh key each");
    let huge = complaint("", DISTRICT, &"x".repeat(MAX_RECORD_BYTES));
    assert!(matches!(
        outbox.enqueue(huge).await,
        Err(OutboxError::TooLarge(_))
    ));
    drop(outbox);

    let outbox = reopen(dir.path(), client_of_a_dead_cluster().await).await;
    assert_eq!(outbox.pending_count(), 7);
    assert_eq!(
        outbox.pending_keys().unwrap(),
        keys,
        "in enqueue order, keys kept"
    );
    outbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_drains_after_restart_with_one_ticket_per_complaint() {
    let dir = tempfile::tempdir().unwrap();

    // The adapter takes complaints while the cluster is down, then crashes.
    let outbox = Outbox::open(dir.path(), client_of_a_dead_cluster().await, quick())
        .await
        .unwrap();
    let mut keys = enqueue_n(&outbox, "while down", 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(outbox.pending_count(), 20);
    drop(outbox);

    // The cluster comes up; the adapter restarts and drains what was left.
    let cluster = TestCluster::start(3, fast_tuning()).await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let client = client_of(&cluster).await;
    let outbox = reopen(dir.path(), client.clone()).await;
    assert!(
        outbox.wait_drained(Duration::from_secs(60)).await,
        "left: {}",
        outbox.pending_count()
    );

    // Crash again mid-drain: some of these are in flight when it drops, so
    // they are sent again after the restart, with the same keys.
    let mut events = outbox.subscribe();
    let more = enqueue_n(&outbox, "mid drain", 30).await;
    let _ = tokio::time::timeout(Duration::from_millis(20), events.recv()).await;
    drop(outbox);
    keys.extend(more);
    let outbox = reopen(dir.path(), client).await;
    let left = outbox.pending_count();
    assert!(
        outbox.wait_drained(Duration::from_secs(60)).await,
        "left: {}",
        outbox.pending_count()
    );
    assert!(left > 0, "the second crash came after the drain, not during it");

    let n = keys.len();
    let mut tickets = HashSet::new();
    for key in &keys {
        let ticket = outbox
            .ticket_for(key)
            .unwrap()
            .unwrap_or_else(|| panic!("no ticket for {key}"));
        assert!(tickets.insert(ticket), "two complaints share a ticket");
    }
    // The cluster made exactly one ticket per complaint, under its key.
    let sm = cluster.nodes[&leader].registry().state_machine(0).unwrap();
    assert_eq!(sm.ticket_count().unwrap(), n as u64);
    for key in &keys {
        let id = sm.lookup_key(key).unwrap().map(|id| id.to_string());
        assert_eq!(id, outbox.ticket_for(key).unwrap());
    }
    outbox.shutdown().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_complaint_goes_to_dead_and_others_still_drain() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(3, fast_tuning()).await;
    cluster.wait_leader(Duration::from_secs(20)).await;
    let outbox = Outbox::open(dir.path(), client_of(&cluster).await, quick())
        .await
        .unwrap();
    let mut events = outbox.subscribe();
    let bad = outbox.enqueue(complaint("", "999999", "nowhere")).await.unwrap();
    let good = outbox
        .enqueue(complaint("", DISTRICT, "somewhere"))
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push(e);
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, OutboxEvent::Dead { key, .. } if *key == bad))
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, OutboxEvent::Ticketed { key, .. } if *key == good))
    );
    assert!(
        outbox
            .dead_reason(&bad)
            .unwrap()
            .unwrap()
            .contains("InvalidArgument")
    );
    assert!(outbox.ticket_for(&good).unwrap().is_some());
    assert_eq!(outbox.pending_count(), 0);
    outbox.shutdown().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_facing_a_full_cluster_slows_down() {
    let (server, addr) = stand_in::serve_always_full().await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::connect(ClientConfig::new([addr])).await.unwrap();
    let config = OutboxConfig {
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        ..Default::default()
    };
    let outbox = Outbox::open(dir.path(), client, config).await.unwrap();
    let keys = enqueue_n(&outbox, "surge", 200).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    outbox.shutdown().await.unwrap();

    let attempts = server.attempts.lock().unwrap();
    let batches = server.batches.lock().unwrap();
    let requests = attempts.len() + batches.len();
    eprintln!("{requests} requests in 2 s");
    // Without the shared pause, 4 requests at a time would cycle through
    // the backlog every server round trip: hundreds of requests.
    assert!(requests < 40, "{requests} requests in 2 s");
    let sent: HashSet<&str> = attempts
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(batches.iter().flatten().map(String::as_str))
        .collect();
    let known: HashSet<&str> = keys.iter().map(String::as_str).collect();
    assert!(sent.is_subset(&known), "only the stored keys are ever sent");
}
