//! One sled database per node, shared by every shard's log and state machine.
//!
//! sled allows one open instance per directory and process, and a single
//! instance lets the appends of all shards share one flush (see [`Flusher`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::ShardId;
use crate::apply_hook::ApplyHook;
use crate::error::StorageError;
use crate::flusher::Flusher;
use crate::keys;
use crate::log_store::LogStore;
use crate::raftlog::LogEngine;
use crate::snapshot::{self, ShardHome, SnapshotWriter};
use crate::state_machine::StateMachine;

/// sled's segment size, shared with the outbox (see `intake_disk`).
pub use intake_disk::SEGMENT_SIZE_BYTES;

/// The Raft log engine's directory inside the data directory.
pub const LOG_DIR: &str = "raftlog";

/// Where and how the node's database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    pub dir: PathBuf,
    /// sled's page cache size; sled's default (1 GiB) is too much to leave implicit.
    pub cache_capacity_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("intake-data"),
            cache_capacity_bytes: 256 << 20,
        }
    }
}

struct Inner {
    db: sled::Db,
    log: LogEngine,
    dir: PathBuf,
    flusher: Flusher,
    /// Every shard's state machine (`store.rs`).
    store: crate::store::SmStore,
    node_tree: sled::Tree,
    /// Makes snapshot file names unique; seeded from the clock so that names
    /// do not repeat across restarts.
    snapshot_seq: Arc<AtomicU64>,
    /// Told of every ticket apply creates, once set.
    apply_hook: Arc<OnceLock<Arc<dyn ApplyHook>>>,
}

/// The node's storage. Cheap to clone.
#[derive(Clone)]
pub struct NodeStorage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NodeStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStorage")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl NodeStorage {
    /// Opens (or creates) the database and starts the flush task, so it must
    /// be called inside a tokio runtime. Blocks briefly on disk IO.
    pub fn open(cfg: StorageConfig) -> Result<NodeStorage, StorageError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StorageError::NoRuntime);
        }
        let (db, data_file) = intake_disk::open_sled(&cfg.dir, cfg.cache_capacity_bytes)?;
        snapshot::create_dir_synced(&cfg.dir.join(snapshot::SNAPSHOT_DIR))?;
        snapshot::reset_incoming(&cfg.dir)?;
        snapshot::sync_dir(&cfg.dir)?;
        let node_tree = db.open_tree(keys::NODE_TREE)?;
        let log = crate::migrate::open_engine(&db, &cfg.dir.join(LOG_DIR))?;
        let flusher = Flusher::start(db.clone(), data_file);
        let store =
            crate::store::SmStore::open(&cfg.dir.join(crate::store::SM_DIR), cfg.cache_capacity_bytes)?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ok(NodeStorage {
            inner: Arc::new(Inner {
                db,
                log,
                dir: cfg.dir,
                flusher,
                store,
                node_tree,
                snapshot_seq: Arc::new(AtomicU64::new(seed)),
                apply_hook: Arc::default(),
            }),
        })
    }

    /// Sets the observer of created tickets (once; later calls are ignored).
    /// Set it before the Raft groups start so it sees every apply.
    pub fn set_apply_hook(&self, hook: Arc<dyn ApplyHook>) {
        let _ = self.inner.apply_hook.set(hook);
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The Raft log of one shard.
    pub fn log_store(&self, shard: ShardId) -> Result<LogStore, StorageError> {
        Ok(LogStore::new(shard, self.inner.log.clone()))
    }

    /// The state machine of one shard. If a crash interrupted a snapshot
    /// install, reloads the recorded snapshot first (blocking disk IO).
    pub fn state_machine(&self, shard: ShardId) -> Result<StateMachine, StorageError> {
        let name = keys::sm_tree(shard);
        let tree = self.inner.store.tree(&name)?;
        crate::migrate::sm_from_sled(&self.inner.db, &name, &tree, &self.inner.store)?;
        snapshot::create_dir_synced(&self.snapshot_dir(shard))?;
        let home = ShardHome {
            dir: self.snapshot_dir(shard),
            seq: self.inner.snapshot_seq.clone(),
            store: self.inner.store.clone(),
            apply_hook: self.inner.apply_hook.clone(),
        };
        let sm = StateMachine::new(shard, tree, home);
        sm.recover()?;
        Ok(sm)
    }

    /// Bytes sled occupies on disk (it has notable space amplification).
    pub fn disk_bytes(&self) -> u64 {
        match self.inner.db.size_on_disk() {
            Ok(n) => n + self.inner.store.disk_bytes(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read sled size on disk");
                0
            }
        }
    }

    /// Sets the gauge `intake_storage_disk_bytes`; call it periodically.
    pub fn report_metrics(&self) {
        metrics::gauge!("intake_storage_disk_bytes").set(self.disk_bytes() as f64);
    }

    pub fn flusher(&self) -> &Flusher {
        &self.inner.flusher
    }

    /// Node-level metadata (node id, cluster config).
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.inner.node_tree.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Stores node-level metadata durably. Values are bounded like Raft
    /// entries, to keep sled pages out of its unsynced blob files.
    pub async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        if key.len() + value.len() > crate::MAX_ENTRY_BYTES {
            let msg = format!(
                "node metadata {key:?} is larger than {} bytes",
                crate::MAX_ENTRY_BYTES
            );
            return Err(StorageError::Io(io::Error::new(io::ErrorKind::InvalidInput, msg)));
        }
        self.inner.node_tree.insert(key.as_bytes(), value)?;
        self.inner.flusher.flush(0).await?;
        Ok(())
    }

    /// Whether this node's log of `shard` holds a vote: whether this replica
    /// ever took part in the group (a vote is saved before anything else).
    pub fn has_vote(&self, shard: ShardId) -> Result<bool, StorageError> {
        Ok(self
            .inner
            .log
            .meta(shard, crate::raftlog::MetaKind::Vote)?
            .is_some())
    }

    /// Forgets this node's replica of `shard` once it has moved away: the
    /// log first (entries, vote, commit and purge marks), durably, then the
    /// state machine's records and snapshot files. A replica of the shard
    /// started here later begins empty, as a learner. Interrupted after the
    /// log, it leaves records without a vote, which
    /// [`Self::wipe_shard_if_unvoted`] clears before the next start.
    pub async fn wipe_shard(&self, shard: ShardId) -> Result<(), StorageError> {
        use crate::raftlog::{MetaKind, Op};
        let mut ops = vec![Op::TruncateFrom { index: 0 }];
        ops.extend(MetaKind::ALL.map(|kind| Op::Meta { kind, value: None }));
        self.inner.log.write(shard, ops).await?;
        self.wipe_state_machine(shard)
    }

    /// Before a replica of `shard` starts as a learner: clears what an
    /// earlier replica here left if the log holds no vote (an interrupted
    /// [`Self::wipe_shard`]); with a vote, the replica took part and keeps
    /// everything.
    pub fn wipe_shard_if_unvoted(&self, shard: ShardId) -> Result<(), StorageError> {
        if self.has_vote(shard)? {
            return Ok(());
        }
        self.wipe_state_machine(shard)
    }

    fn wipe_state_machine(&self, shard: ShardId) -> Result<(), StorageError> {
        let tree = self.inner.store.tree(&keys::sm_tree(shard))?;
        // A whole shard may be a lot of records: off the runtime when it can be.
        crate::state_machine::blocking(|| -> Result<(), StorageError> {
            let mut batch = crate::store::Batch::default();
            let mut n = 0usize;
            for kv in tree.iter() {
                batch.remove(kv?.0);
                n += 1;
                if n.is_multiple_of(4096) {
                    tree.apply_batch(std::mem::take(&mut batch))?;
                }
            }
            tree.apply_batch(batch)?;
            match snapshot::remove_others(&self.snapshot_dir(shard), None) {
                // Never had a replica here: no snapshot directory yet.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => Ok(other?),
            }
        })
    }

    /// A sink for a snapshot arriving over the network, in chunks.
    pub fn snapshot_writer(&self, shard: ShardId) -> io::Result<SnapshotWriter> {
        let seq = self.next_snapshot_seq();
        let path = self
            .inner
            .dir
            .join(snapshot::INCOMING_DIR)
            .join(format!("{shard}-{seq}.part"));
        SnapshotWriter::create(path)
    }

    /// Flushes everything and stops the flush task; afterwards the directory
    /// can be opened again once every store handle is dropped.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.flusher.flush(0).await {
            tracing::error!(error = %e, "final storage flush failed");
        }
        let store = self.inner.store.clone();
        match tokio::task::spawn_blocking(move || store.persist()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final state-machine persist failed"),
            Err(e) => tracing::error!(error = %e, "final state-machine persist task failed"),
        }
        self.inner.flusher.shutdown().await;
        self.inner.log.shutdown().await;
    }

    /// Resolves with the error once the Raft log or sled's group commit has
    /// failed an fsync. After that the node's storage can no longer promise
    /// anything, and the node must stop serving (PostgreSQL's rule since
    /// "fsyncgate").
    pub async fn failure(&self) -> io::Error {
        tokio::select! {
            e = self.inner.flusher.failure() => e,
            e = self.inner.log.failure() => e,
            e = self.inner.store.failure() => e,
        }
    }

    pub(crate) fn snapshot_dir(&self, shard: ShardId) -> PathBuf {
        self.inner
            .dir
            .join(snapshot::SNAPSHOT_DIR)
            .join(shard.to_string())
    }

    fn next_snapshot_seq(&self) -> u64 {
        self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed)
    }
}
