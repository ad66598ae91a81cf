//! The outbox's own disk rules: no page in sled's unsynced `blobs/`, and a
//! failed fsync that stays failed.

use std::time::Duration;

use intake_proto::pb;
use prost::Message;

use super::{MAX_RECORD_BYTES, Outbox, OutboxConfig, OutboxError};
use crate::{Client, ClientConfig};

/// A client whose only endpoint refuses connections, so nothing drains.
async fn client_of_nobody() -> Client {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    Client::connect(ClientConfig::new([addr])).await.unwrap()
}

fn idle() -> OutboxConfig {
    OutboxConfig {
        retry_base: Duration::from_secs(60),
        retry_max: Duration::from_secs(60),
        ..Default::default()
    }
}

/// A complaint whose encoding is exactly `bytes` long: the largest record
/// `enqueue` takes when `bytes` is `MAX_RECORD_BYTES`.
fn complaint_of_size(i: usize, bytes: usize) -> pb::Complaint {
    let mut c = pb::Complaint {
        idempotency_key: format!("big-{i:06}"),
        channel: "phone".into(),
        district_code: "110105".into(),
        category: "noise".into(),
        ..Default::default()
    };
    let mut text_len = bytes;
    for _ in 0..8 {
        c.text = "x".repeat(text_len);
        let len = c.encoded_len();
        if len == bytes {
            return c;
        }
        text_len = text_len + bytes - len;
    }
    panic!("no complaint of exactly {bytes} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_records_never_reach_unsynced_blob_files() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path(), client_of_nobody().await, idle())
        .await
        .unwrap();
    // Consecutive sequence numbers land in the same leaf: dozens of maximal
    // records per leaf page before sled splits it.
    let n = 200;
    for i in 0..n {
        outbox
            .enqueue(complaint_of_size(i, MAX_RECORD_BYTES))
            .await
            .unwrap();
    }
    // Reading consolidates leaves, which is when a leaf page is written whole.
    assert_eq!(outbox.pending_keys().unwrap().len(), n);
    outbox.trees.durable().await.unwrap();
    let blobs = dir.path().join("blobs");
    let count = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 0, "sled wrote outbox pages to unsynced blob files");
    outbox.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_fails_every_later_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path(), client_of_nobody().await, idle())
        .await
        .unwrap();
    outbox.enqueue(complaint_of_size(0, 100)).await.unwrap();
    outbox.trees.data_file.fail_syncs();
    assert!(matches!(
        outbox.enqueue(complaint_of_size(1, 100)).await,
        Err(OutboxError::SyncFailed(_))
    ));
    // The disk "recovers", but what the kernel dropped after the failed
    // fsync is gone: a later successful fsync would prove nothing.
    outbox.trees.data_file.heal_syncs();
    for i in 2..5 {
        let err = outbox.enqueue(complaint_of_size(i, 100)).await.unwrap_err();
        assert!(matches!(err, OutboxError::SyncFailed(_)), "{err}");
        assert!(err.to_string().contains("reopen"), "{err}");
    }
    assert!(outbox.shutdown().await.is_err(), "shutdown cannot flush either");
}
