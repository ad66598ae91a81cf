//! A data directory written by an earlier version (Raft logs in sled trees)
//! opens with its log, vote and committed id intact, and the old trees go.

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::testing::log_id;

use super::fixtures::{complaint, open_at, submit};
use crate::{TypeConfig, keys};

/// The sled database in `dir`, as an earlier version opened it.
fn sled_at(dir: &std::path::Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        .segment_size(crate::SEGMENT_SIZE_BYTES)
        .open()
        .unwrap()
}

#[tokio::test]
async fn logs_of_an_earlier_version_move_into_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let vote = openraft::alias::VoteOf::<TypeConfig>::new_committed(4, 1);
    {
        // What an earlier version left: `log.3` and `raft.3` trees.
        let db = sled_at(dir.path());
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
    let db = sled_at(dir.path());
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

/// A state machine an earlier version kept in sled (tree `sm.3`) moves into
/// the state-machine store at open: tickets, keys and the applied id stay,
/// the sled tree goes. A copy cut short by a crash (the sled tree still
/// there, the store holding part of it) is redone from scratch.
#[tokio::test]
async fn state_machines_of_an_earlier_version_move_out_of_sled() {
    use futures::StreamExt;
    use openraft::storage::RaftStateMachine;

    let dir = tempfile::tempdir().unwrap();
    // Records as this version writes them (their format did not change),
    // then moved into sled by hand: what an earlier version left behind.
    let records: Vec<(Vec<u8>, Vec<u8>)> = {
        let node = open_at(dir.path());
        let mut sm = node.state_machine(3).unwrap();
        let entries = (1..=3u64).map(|i| {
            Ok((
                submit(i, 100 * i as i64, vec![complaint(&format!("k{i}"), "t")]),
                None,
            ))
        });
        sm.apply(futures::stream::iter(entries).boxed()).await.unwrap();
        let all = sm
            .tree
            .scan_prefix([])
            .map(|kv| kv.unwrap())
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        node.shutdown().await;
        all
    };
    assert!(records.len() >= 7, "{} records", records.len());
    std::fs::remove_dir_all(dir.path().join(crate::store::SM_DIR)).unwrap();
    {
        let db = sled_at(dir.path());
        let old = db.open_tree(keys::sm_tree(3)).unwrap();
        for (k, v) in &records {
            old.insert(k.as_slice(), v.as_slice()).unwrap();
        }
        db.flush().unwrap();
        // A copy a crash cut short: a stray record in the store.
        let store = crate::store::SmStore::open(&dir.path().join(crate::store::SM_DIR), 1 << 20).unwrap();
        store
            .tree(&keys::sm_tree(3))
            .unwrap()
            .insert(b"t-stray", b"x")
            .unwrap();
        store.persist().unwrap();
    }
    for _ in 0..2 {
        // Twice: the second open finds nothing to move and loses nothing.
        let node = open_at(dir.path());
        let sm = node.state_machine(3).unwrap();
        assert_eq!(sm.applied().unwrap(), Some(3));
        assert_eq!(sm.ticket_count().unwrap(), 3);
        let id = sm.lookup_key("k2").unwrap().unwrap();
        assert_eq!(sm.get_ticket(&id).unwrap().unwrap().accepted_at, 200);
        let now: Vec<(Vec<u8>, Vec<u8>)> = sm
            .tree
            .scan_prefix([])
            .map(|kv| kv.unwrap())
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(now, records, "exactly the old records, the stray one gone");
        node.shutdown().await;
    }
    let db = sled_at(dir.path());
    assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"sm.3"));
}
