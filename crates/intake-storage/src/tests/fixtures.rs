//! Builders for nodes, complaints and entries shared by the tests.

use std::path::Path;

use intake_core::{Command, CommandResponse, Complaint, SubmitOutcome};
use openraft::alias::EntryOf;
use openraft::entry::RaftEntry;
use openraft::testing::log_id;
use tempfile::TempDir;

use crate::{NodeStorage, StorageConfig, TypeConfig};

pub type Entry = EntryOf<TypeConfig>;

/// Opens the store in `dir`. Right after a shutdown in the same process,
/// sled's background thread may still hold the directory's file lock for a
/// moment (a restarted process never sees this), so a lock error is retried
/// for up to 5 s.
pub fn open_at(dir: &Path) -> NodeStorage {
    let config = StorageConfig {
        dir: dir.to_path_buf(),
        cache_capacity_bytes: 16 << 20,
    };
    for _ in 0..50 {
        match NodeStorage::open(config.clone()) {
            Ok(node) => return node,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("opening {}: {e}", dir.display()),
        }
    }
    panic!("{} stayed locked for 5 s", dir.display())
}

pub fn new_node() -> (TempDir, NodeStorage) {
    let dir = tempfile::tempdir().unwrap();
    let node = open_at(dir.path());
    (dir, node)
}

pub fn complaint(key: &str, text: &str) -> Complaint {
    Complaint {
        idempotency_key: key.to_string(),
        channel: "hotline".to_string(),
        district: "110105".to_string(),
        category: "noise".to_string(),
        text: text.to_string(),
        location: None,
        contact: String::new(),
        reported_at: Some(1_700_000_000_000),
        attachments: vec![],
    }
}

pub fn submit(index: u64, accepted_at: i64, complaints: Vec<Complaint>) -> Entry {
    Entry::new_normal(
        log_id::<TypeConfig>(1, 1, index),
        Command::Submit {
            accepted_at,
            complaints,
        },
    )
}

pub fn outcomes(resp: CommandResponse) -> Vec<SubmitOutcome> {
    match resp {
        CommandResponse::Submitted(o) => o,
        other => panic!("expected Submitted, got {other:?}"),
    }
}
