//! Builders for nodes, complaints and entries shared by the tests.

use std::path::Path;

use intake_core::{Command, CommandResponse, Complaint, SubmitOutcome};
use openraft::alias::EntryOf;
use openraft::entry::RaftEntry;
use openraft::testing::log_id;
use tempfile::TempDir;

use crate::{NodeStorage, StorageConfig, TypeConfig};

pub type Entry = EntryOf<TypeConfig>;

pub fn open_at(dir: &Path) -> NodeStorage {
    NodeStorage::open(StorageConfig {
        dir: dir.to_path_buf(),
        cache_capacity_bytes: 16 << 20,
    })
    .unwrap()
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
