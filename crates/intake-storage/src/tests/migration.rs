//! A data directory written by an earlier version (Raft logs in sled trees)
//! opens with its log, vote and committed id intact, and the old trees go.

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::testing::log_id;

use super::fixtures::{complaint, open_at, submit};
use crate::{TypeConfig, keys};

#[tokio::test]
async fn logs_of_an_earlier_version_move_into_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let vote = openraft::alias::VoteOf::<TypeConfig>::new_committed(4, 1);
    {
        // What an earlier version left: `log.3` and `raft.3` trees.
        let db = sled::Config::new()
            .path(dir.path())
            .segment_size(crate::SEGMENT_SIZE_BYTES)
            .open()
            .unwrap();
        let log = db.open_tree("log.3").unwrap();
        for i in 1..=4u64 {
            let e = submit(i, 2, vec![complaint(&format!("old{i}"), "t")]);
            log.insert(i.to_be_bytes(), keys::encode(&e).unwrap()).unwrap();
        }
        let raft = db.open_tree("raft.3").unwrap();
        raft.insert(keys::VOTE, keys::encode(&vote).unwrap()).unwrap();
        raft.insert(
            keys::COMMITTED,
            keys::encode(&log_id::<TypeConfig>(2, 1, 3)).unwrap(),
        )
        .unwrap();
        db.flush().unwrap();
    }
    for _ in 0..2 {
        // Twice: the second open must not migrate again or lose anything.
        let node = open_at(dir.path());
        let mut log = node.log_store(3).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(
            log.read_committed().await.unwrap(),
            Some(log_id::<TypeConfig>(2, 1, 3))
        );
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(4));
        assert_eq!(log.try_get_log_entries(1..=4).await.unwrap().len(), 4);
        node.shutdown().await;
    }
    let db = sled::Config::new()
        .path(dir.path())
        .segment_size(crate::SEGMENT_SIZE_BYTES)
        .open()
        .unwrap();
    let names: Vec<String> = db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("log.") || n.starts_with("raft.")),
        "{names:?}"
    );
}
