//! What must survive: reopen after shutdown, no unsynced blob files, and
//! group commit sharing flushes.

use std::io;
use std::sync::Arc;

use openraft::alias::StoredMembershipOf;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::testing::log_id;
use openraft::type_config::TypeConfigExt;

use super::fixtures::{Entry, complaint, new_node, open_at, submit};
use crate::{MAX_ENTRY_BYTES, TypeConfig, keys};

#[tokio::test]
async fn everything_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vote = openraft::alias::VoteOf::<TypeConfig>::new_committed(3, 2);
    {
        let node = open_at(dir.path());
        let mut log = node.log_store(7).unwrap();
        let sm = node.state_machine(7).unwrap();
        log.save_vote(&vote).await.unwrap();
        let entries: Vec<Entry> = (1..=5)
            .map(|i| submit(i, 9, vec![complaint(&format!("k{i}"), "t")]))
            .collect();
        log.append(entries.clone(), IOFlushed::noop()).await.unwrap();
        log.save_committed(Some(log_id::<TypeConfig>(1, 1, 5)))
            .await
            .unwrap();
        let mut membership = StoredMembershipOf::<TypeConfig>::default();
        for e in entries {
            sm.apply_entry(e, &mut membership).unwrap();
        }
        node.put_meta("node_id", b"2").await.unwrap();
        node.shutdown().await;
    }
    let node = open_at(dir.path());
    let mut log = node.log_store(7).unwrap();
    let sm = node.state_machine(7).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(
        log.read_committed().await.unwrap(),
        Some(log_id::<TypeConfig>(1, 1, 5))
    );
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id::<TypeConfig>(1, 1, 5)));
    assert_eq!(log.try_get_log_entries(2..4).await.unwrap().len(), 2);
    assert_eq!(sm.applied().unwrap(), Some(5));
    assert_eq!(sm.ticket_count().unwrap(), 5);
    assert_eq!(node.get_meta("node_id").unwrap().as_deref(), Some(&b"2"[..]));
    assert!(node.disk_bytes() > 0);
    node.shutdown().await;
}

/// An entry whose encoding is exactly `bytes` long.
fn entry_of_size(index: u64, bytes: usize) -> Entry {
    let mut text_len = bytes;
    loop {
        let e = submit(
            index,
            1,
            vec![complaint(&format!("key{index}"), &"x".repeat(text_len))],
        );
        let len = keys::encode(&e).unwrap().len();
        if len == bytes {
            return e;
        }
        text_len = text_len + bytes - len;
    }
}

#[tokio::test]
async fn largest_entries_never_reach_unsynced_blob_files() {
    let (dir, node) = new_node();
    let mut log = node.log_store(0).unwrap();
    let sm = node.state_machine(0).unwrap();
    let mut membership = StoredMembershipOf::<TypeConfig>::default();
    // Batch sizes as the leader produces them, including one large batch.
    // The log lives in the log engine; applying writes the complaints to
    // sled, which is where a page could grow past the blob threshold.
    let mut next = 1;
    for size in [1, 16, 1, 64, 8, 8, 8, 8, 16, 1, 1, 32] {
        let entries: Vec<Entry> = (next..next + size)
            .map(|i| entry_of_size(i, MAX_ENTRY_BYTES))
            .collect();
        log.append(entries.clone(), IOFlushed::noop()).await.unwrap();
        for e in entries {
            sm.apply_entry(e, &mut membership).unwrap();
        }
        next += size;
    }
    // Re-read everything so sled consolidates leaves, which is when a leaf
    // page is written whole.
    assert_eq!(log.try_get_log_entries(..).await.unwrap().len() as u64, next - 1);
    assert_eq!(sm.ticket_count().unwrap(), next - 1);
    node.flusher().flush(0).await.unwrap();
    let blobs = dir.path().join("blobs");
    let count = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 0, "sled wrote pages to unsynced blob files");

    // One byte more is refused, and the callback hears about it too.
    let (tx, rx) = TypeConfig::oneshot();
    let too_big = entry_of_size(1000, MAX_ENTRY_BYTES + 1);
    let err = log
        .append(vec![too_big], IOFlushed::signal(tx))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(rx.await.unwrap().is_err());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_share_fsyncs() {
    let (_dir, node) = new_node();
    let node = Arc::new(node);
    let calls = 500;
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { node.flusher().flush(1).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = node.flusher().stats();
    assert_eq!(stats.entries, calls);
    assert!(stats.flushes * 5 < calls, "{stats:?}");
    node.shutdown().await;
    assert!(
        node.flusher().flush(0).await.is_err(),
        "flush after shutdown must fail"
    );
}
