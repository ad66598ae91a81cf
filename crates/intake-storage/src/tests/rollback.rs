//! A sled store that comes back older than it was (sled reads any unreadable
//! log message as the end of its log) is refused at start-up, because the
//! vote and the log's high-water mark are also kept in side files.

use std::path::Path;

use openraft::alias::VoteOf;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::testing::log_id;

use super::fixtures::{Entry, complaint, open_at, submit};
use crate::{StorageError, TypeConfig};

const SHARD: u32 = 7;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Saves `vote` and appends entries `from..=to` to the shard, then shuts down.
async fn write(dir: &Path, vote: VoteOf<TypeConfig>, from: u64, to: u64) {
    let node = open_at(dir);
    let mut log = node.log_store(SHARD).unwrap();
    log.save_vote(&vote).await.unwrap();
    let entries: Vec<Entry> = (from..=to)
        .map(|i| submit(i, 9, vec![complaint(&format!("k{i}"), "t")]))
        .collect();
    log.append(entries, IOFlushed::noop()).await.unwrap();
    drop(log);
    node.shutdown().await;
}

/// Builds a store in two steps and returns a directory holding sled as it
/// was after the first step under the side files of the second.
async fn rolled_back(
    first: (VoteOf<TypeConfig>, u64),
    second: (VoteOf<TypeConfig>, u64),
) -> tempfile::TempDir {
    let (dir, old) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(dir.path(), first.0, 1, first.1).await;
    copy_dir(dir.path(), old.path());
    write(dir.path(), second.0, first.1 + 1, second.1).await;
    copy_dir(&dir.path().join("raft-marks"), &old.path().join("raft-marks"));
    old
}

fn refused(dir: &Path) -> String {
    let node = open_at(dir);
    let err = node
        .log_store(SHARD)
        .expect_err("a store that went back must be refused");
    assert!(
        matches!(err, StorageError::RolledBack { shard: SHARD, .. }),
        "{err}"
    );
    err.to_string()
}

#[tokio::test]
async fn an_older_vote_in_sled_is_refused() {
    let old = rolled_back(
        (VoteOf::<TypeConfig>::new(2, 1), 3),
        (VoteOf::<TypeConfig>::new(3, 2), 3),
    )
    .await;
    let msg = refused(old.path());
    assert!(msg.contains("shard 7") && msg.contains("vote"), "{msg}");
}

#[tokio::test]
async fn a_shorter_log_in_sled_is_refused() {
    let vote = VoteOf::<TypeConfig>::new(2, 1);
    let old = rolled_back((vote, 3), (vote, 6)).await;
    let msg = refused(old.path());
    assert!(
        msg.contains("shard 7") && msg.contains("(3)") && msg.contains("(6)"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_truncated_log_still_starts() {
    let dir = tempfile::tempdir().unwrap();
    let vote = VoteOf::<TypeConfig>::new(2, 1);
    write(dir.path(), vote, 1, 6).await;
    {
        let node = open_at(dir.path());
        let mut log = node.log_store(SHARD).unwrap();
        log.truncate_after(Some(log_id::<TypeConfig>(1, 1, 2)))
            .await
            .unwrap();
        drop(log);
        node.shutdown().await;
    }
    let node = open_at(dir.path());
    assert!(
        node.log_store(SHARD).is_ok(),
        "a legitimate truncation is not a rollback"
    );
    node.shutdown().await;
}
