//! Moves what earlier versions kept in sled out of it, once, so an upgraded
//! node keeps its log, its vote and its tickets: Raft logs (sled trees
//! `log.{shard}` and `raft.{shard}`) into the log engine, and state machines
//! (`sm.{shard}`) into the state-machine store.
//!
//! Crash-safe by construction: the engine is built in a side directory and
//! renamed into place only when complete and synced; the old trees are
//! dropped after that, and dropped again on a later start if a crash came
//! between the two.

use std::path::Path;

use crate::ShardId;
use crate::error::StorageError;
use crate::keys;
use crate::raftlog::{LogEngine, MetaKind, Op};

const LOG_TREE_PREFIX: &str = "log.";
const RAFT_TREE_PREFIX: &str = "raft.";

/// Shards with an old-format log in `db`.
fn old_trees(db: &sled::Db) -> Vec<(ShardId, String)> {
    let mut out = Vec::new();
    for name in db.tree_names() {
        let Ok(name) = std::str::from_utf8(&name) else {
            continue;
        };
        for prefix in [LOG_TREE_PREFIX, RAFT_TREE_PREFIX] {
            if let Some(shard) = name.strip_prefix(prefix).and_then(|s| s.parse::<ShardId>().ok()) {
                out.push((shard, name.to_string()));
            }
        }
    }
    out
}

/// Opens the engine at `dir`, first migrating old-format logs from `db`.
pub fn open_engine(db: &sled::Db, dir: &Path) -> Result<LogEngine, StorageError> {
    let old = old_trees(db);
    if !dir.exists() && !old.is_empty() {
        let side = dir.with_extension("migrating");
        if side.exists() {
            std::fs::remove_dir_all(&side)?;
        }
        let mut shards: Vec<ShardId> = old.iter().map(|(s, _)| *s).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut records = Vec::new();
        for shard in shards {
            records.extend(old_ops(db, shard)?.into_iter().map(|op| (shard, op)));
        }
        crate::raftlog::write_new(&side, &records)?;
        std::fs::rename(&side, dir)?;
        if let Some(parent) = dir.parent() {
            crate::snapshot::sync_dir(parent)?;
        }
        tracing::info!("moved the Raft logs of an earlier version out of sled into the log engine");
    }
    let engine = LogEngine::open(dir)?;
    for (_, name) in old {
        db.drop_tree(name.as_bytes())?;
    }
    Ok(engine)
}

fn old_ops(db: &sled::Db, shard: ShardId) -> Result<Vec<Op>, StorageError> {
    let raft = db.open_tree(format!("{RAFT_TREE_PREFIX}{shard}"))?;
    let log = db.open_tree(format!("{LOG_TREE_PREFIX}{shard}"))?;
    let mut ops = Vec::new();
    for (key, kind) in [
        (keys::VOTE, MetaKind::Vote),
        (keys::COMMITTED, MetaKind::Committed),
        (keys::PURGED, MetaKind::Purged),
    ] {
        if let Some(v) = raft.get(key)? {
            ops.push(Op::Meta {
                kind,
                value: Some(v.to_vec()),
            });
        }
    }
    for kv in log.iter() {
        let (k, v) = kv?;
        let mut b = [0u8; 8];
        if k.len() == 8 {
            b.copy_from_slice(&k);
            ops.push(Op::Entry {
                index: u64::from_be_bytes(b),
                bytes: v.to_vec(),
            });
        }
    }
    Ok(ops)
}

/// Records copied per store batch while moving a state machine.
const COPY_BATCH: usize = 1024;

/// Moves shard tree `name` of an earlier version from sled into `tree`, if
/// sled still has it. Crash-safe: while the sled tree exists the copy is
/// not known complete, so it is redone from scratch (the store's tree is
/// emptied first); the sled tree is dropped only after the copy is durable.
pub fn sm_from_sled(
    db: &sled::Db,
    name: &str,
    tree: &crate::store::Tree,
    store: &crate::store::SmStore,
) -> Result<(), StorageError> {
    let present = db.tree_names().iter().any(|n| n.as_ref() == name.as_bytes());
    if !present {
        return Ok(());
    }
    let old = db.open_tree(name)?;
    let mut batch = crate::store::Batch::default();
    for kv in tree.scan_prefix([]) {
        batch.remove(kv?.0);
        if batch.len() >= COPY_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    let mut copied = 0u64;
    for kv in old.iter() {
        let (k, v) = kv?;
        batch.insert(k, v);
        copied += 1;
        if batch.len() >= COPY_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    tree.apply_batch(batch)?;
    store.persist()?;
    db.drop_tree(name.as_bytes())?;
    db.flush()?;
    tracing::info!(
        tree = name,
        records = copied,
        "moved a state machine of an earlier version out of sled"
    );
    Ok(())
}
