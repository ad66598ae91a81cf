//! The idempotency window end to end: within it a retry returns the original
//! ticket; after it the leader has compacted the key through the log, so the
//! same key makes a new ticket, and the old ticket stays readable.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use std::time::Duration;

use common::{TestCluster, complaint, fast_tuning, get_local, submit};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_expire_after_the_retention_window() {
    let cluster = TestCluster::start_configured(3, 1, fast_tuning(), |cfg| {
        cfg.key_retention = Duration::from_secs(2);
        cfg.compaction_interval = Duration::from_millis(200);
    })
    .await;
    cluster.wait_leader(Duration::from_secs(20)).await;
    let mut client = cluster.client(1).await;
    let c = complaint("window-key", "110105", "same words");
    let first = submit(&mut client, c.clone()).await.unwrap();
    let retry = submit(&mut client, c.clone()).await.unwrap();
    assert_eq!(retry.ticket_id, first.ticket_id);
    assert!(retry.duplicate);

    // Past the window (and a few compaction rounds), the key is forgotten.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let later = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = submit(&mut client, c.clone()).await.unwrap();
        if r.ticket_id != first.ticket_id {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "key never expired");
    };
    assert!(!later.duplicate);
    for id in 1..=3u64 {
        let mut client = cluster.client(id).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while get_local(&mut client, &later.ticket_id).await.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} lacks {}",
                later.ticket_id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            get_local(&mut client, &first.ticket_id).await.is_some(),
            "old tickets stay"
        );
    }
    cluster.shutdown().await;
}
