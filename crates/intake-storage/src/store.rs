//! The store of every shard's state machine on a node: one fjall database,
//! a keyspace per shard, with the few calls apply, snapshots and reads use.
//!
//! Why fjall and not sled, which holds the rest of the node's metadata: in
//! the spread benchmark a node spent about half of its CPU per complaint in
//! sled on the apply path (its B-tree inserts with page copies, the
//! read-before-write of its transactions, the hand-offs to its IO threads),
//! about 60 µs per complaint; the same writes as one fjall batch (an append
//! to its journal and a memtable insert, with its flushes and compactions
//! counted) cost about 10 µs (`benches/sm_store.rs`, docs/benchmarks.md).
//!
//! Nothing here is made durable per write, as before: the Raft log is the
//! durable copy, and apply is redone from the persisted applied id after a
//! crash (fjall recovers its journal to a consistent prefix of the batches,
//! each batch atomic across keyspaces). [`SmStore::persist`] fsyncs the
//! journal where durability is needed: before a snapshot lets openraft
//! purge the log, and when a snapshot is recorded or installed.

use std::ops::RangeBounds;
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Slice};

use crate::error::StorageError;

/// The directory of the state-machine store inside a node's data directory.
pub const SM_DIR: &str = "sm";

/// A keyspace's memtable at most before it is flushed to a table: with a
/// keyspace per shard, this bounds what a node holds of them in memory under
/// a surge (README's 512 MiB per node); fjall's default is 64 MiB each.
const MEMTABLE_BYTES: u64 = 8 << 20;

/// fjall's flush and compaction threads. Its default is one per core (up to
/// 4), and with more than one, worker 0 hands every compaction message back
/// to the queue to stay free for flushes (fjall 3.1 `worker_pool.rs`): while
/// the other worker compacts, worker 0 takes the message back at once, in a
/// loop. Profiled on a node holding ~300,000 tickets, that loop was 17 % of
/// the node's CPU samples (`worker_tick` and `flume` send), on a 2-core
/// machine shared with the Raft log and the gRPC runtime. One thread flushes
/// and compacts in turn and never spins (docs/benchmarks.md).
const FLUSH_AND_COMPACTION_THREADS: usize = 1;

/// One node's state-machine database. Cheap to clone.
#[derive(Clone)]
pub struct SmStore {
    db: Database,
    /// The first failed persist, if any: sticky, like a failed fsync of the
    /// Raft log, since what the journal held may not be on disk.
    failed: tokio::sync::watch::Sender<Option<String>>,
}

impl SmStore {
    /// Opens (or creates) the store under `dir`, with a block cache of
    /// `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            .worker_threads(FLUSH_AND_COMPACTION_THREADS)
            .open()?;
        Ok(Self {
            db,
            failed: tokio::sync::watch::Sender::new(None),
        })
    }

    /// The keyspace named `name`, created empty if it does not exist.
    pub fn tree(&self, name: &str) -> Result<Tree, StorageError> {
        // Manual journal persistence: a batch stays in the journal's buffer
        // instead of costing a `write` each; a crash loses only what apply
        // redoes from the Raft log anyway, and `persist` writes and syncs.
        let ks = self.db.keyspace(name, || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(MEMTABLE_BYTES)
                .manual_journal_persist(true)
        })?;
        Ok(Tree {
            ks,
            db: self.db.clone(),
        })
    }

    /// Makes every write so far durable (fsync of the journal). After one
    /// failure every later call fails too (see [`SmStore::failure`]).
    pub fn persist(&self) -> Result<(), StorageError> {
        if let Some(msg) = self.failed.borrow().clone() {
            return Err(StorageError::Io(std::io::Error::other(msg)));
        }
        self.db.persist(PersistMode::SyncAll).inspect_err(|e| {
            let msg = format!("state-machine store persist failed: {e}");
            self.failed.send_if_modified(|f| {
                let first = f.is_none();
                if first {
                    *f = Some(msg);
                }
                first
            });
        })?;
        Ok(())
    }

    /// Resolves once a persist has failed.
    pub async fn failure(&self) -> std::io::Error {
        let mut rx = self.failed.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(f) => std::io::Error::other(f.clone().unwrap_or_default()),
            Err(_) => std::future::pending().await,
        }
    }

    /// Bytes on disk (journal and tables).
    pub fn disk_bytes(&self) -> u64 {
        match self.db.disk_space() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the state-machine store's size on disk");
                0
            }
        }
    }
}

/// A point-in-time view of one keyspace. A snapshot file is written from
/// one while applies go on: each apply writes its effects and the applied
/// state in one batch, and a view holds a batch whole or not at all, so it
/// holds exactly the state its applied id names.
pub struct TreeView {
    snap: fjall::Snapshot,
    ks: Keyspace,
}

impl TreeView {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Slice>, StorageError> {
        use fjall::Readable;
        Ok(self.snap.get(&self.ks, key)?)
    }

    /// Records whose key starts with `prefix`, in key order, as of the view.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Records {
        use fjall::Readable;
        self.snap.prefix(&self.ks, prefix).map(record)
    }
}

/// A key and its value, as stored.
pub type Record = (Slice, Slice);

/// Records read in key order.
pub type Records = std::iter::Map<fjall::Iter, fn(fjall::Guard) -> Result<Record, StorageError>>;

fn record(g: fjall::Guard) -> Result<Record, StorageError> {
    Ok(g.into_inner()?)
}

/// One shard's keyspace. Cheap to clone.
#[derive(Clone)]
pub struct Tree {
    ks: Keyspace,
    db: Database,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").field("name", &self.name()).finish()
    }
}

impl Tree {
    pub fn name(&self) -> String {
        self.ks.name().to_string()
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Slice>, StorageError> {
        Ok(self.ks.get(key)?)
    }

    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StorageError> {
        Ok(self.ks.contains_key(key)?)
    }

    /// Writes one record now (not durable until [`SmStore::persist`]).
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StorageError> {
        Ok(self.ks.insert(key.as_ref(), value.as_ref())?)
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StorageError> {
        Ok(self.ks.remove(key.as_ref())?)
    }

    /// A point-in-time view of this keyspace ([`TreeView`]).
    pub fn view(&self) -> TreeView {
        TreeView {
            snap: self.db.snapshot(),
            ks: self.ks.clone(),
        }
    }

    /// Records whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Records {
        self.ks.prefix(prefix).map(record)
    }

    /// Records with keys in `range`, in key order. The iterator owns its
    /// bounds, so it may outlive them.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Records {
        self.ks.range(range).map(record)
    }

    /// Every record, in key order.
    pub fn iter(&self) -> Records {
        self.ks.iter().map(record)
    }

    /// Writes `batch` atomically.
    pub fn apply_batch(&self, batch: Batch) -> Result<(), StorageError> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        let mut b = self.db.batch();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(&self.ks, k, v),
                None => b.remove(&self.ks, k),
            }
        }
        Ok(b.commit()?)
    }
}

/// Writes to one tree, applied together and atomically by
/// [`Tree::apply_batch`]; in order, so a later write to a key wins.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<(Slice, Option<Slice>)>,
}

impl Batch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((Slice::from(key.as_ref()), Some(Slice::from(value.as_ref()))));
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((Slice::from(key.as_ref()), None));
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}
