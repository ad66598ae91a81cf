//! A Raft log engine built for many groups on one node: one append-only
//! sequence of checksummed segment files shared by every shard, written by
//! one thread with one `fdatasync` per round (see `writer.rs`).
//!
//! Why not sled, which holds the state machines: measured on this machine
//! (`benches/storage_append.rs`), sled's write path costs a page-cache
//! update, its own I/O threads and a `sync_file_range` before our
//! `fdatasync`, and with many shards each append still paid a thread
//! hand-off of its own. A Raft log needs much less: append at the end, cut a
//! suffix, drop a prefix, read recent entries back. Entries are written once,
//! never rewritten; the index (where each entry sits) lives in memory and is
//! rebuilt at start-up by replaying the segments (`recovery.rs`).
//!
//! Values are opaque bytes; `LogStore` maps openraft's types onto them.

mod record;
mod recovery;
mod segment;
mod state;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

pub use record::{MetaKind, Op};
use state::IndexState;

use crate::ShardId;

/// Jobs waiting for the writer. Bounded so that a stalled disk pushes back on
/// Raft instead of growing memory.
const QUEUE_JOBS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LogEngineError {
    #[error("raft log io: {0}")]
    Io(#[from] io::Error),
    #[error(
        "raft log segment {segment} is damaged at byte {offset} ({reason}); it holds acknowledged \
         entries, so this node will not start with an older log. Restore the data directory, or \
         remove it and rejoin the node"
    )]
    Corrupt {
        segment: u64,
        offset: u64,
        reason: String,
    },
}

/// Metadata values waiting for the next round, by shard and kind.
type LazyMeta = BTreeMap<(ShardId, MetaKind), Option<Vec<u8>>>;

/// State shared by the engine handles and the writer thread.
pub(crate) struct Shared {
    index: RwLock<IndexState>,
    /// Metadata set with [`LogEngine::set_meta_lazily`], written at the start
    /// of the next round (or at shutdown).
    lazy: Mutex<LazyMeta>,
    files: RwLock<BTreeMap<u64, Arc<File>>>,
    rounds: AtomicU64,
    /// Set once, by the writer, when a write or fsync fails (sticky).
    failed: tokio::sync::watch::Sender<Option<(io::ErrorKind, String)>>,
}

struct Inner {
    dir: PathBuf,
    shared: Arc<Shared>,
    tx: mpsc::Sender<writer::Msg>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The node's Raft log, for every shard. Cheap to clone.
#[derive(Clone)]
pub struct LogEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LogEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogEngine").field("dir", &self.inner.dir).finish()
    }
}

impl LogEngine {
    /// Opens (or creates) the log in `dir`: replays it, cuts a torn tail,
    /// starts a fresh segment with a checkpoint, and starts the writer thread.
    pub fn open(dir: &Path) -> Result<LogEngine, LogEngineError> {
        Self::open_with(dir, segment::SEGMENT_TARGET_BYTES)
    }

    /// [`open`](Self::open) with another segment size (tests use small ones
    /// to exercise rotation and clean-up).
    pub fn open_with(dir: &Path, segment_bytes: u64) -> Result<LogEngine, LogEngineError> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir)?;
        if created && let Some(parent) = dir.parent() {
            segment::sync_dir(parent)?;
        }
        let recovered = recovery::replay(dir)?;
        let mut files = BTreeMap::new();
        for id in &recovered.segments {
            files.insert(*id, Arc::new(segment::open_read(dir, *id)?));
        }
        // Each start writes into a new segment that opens with a checkpoint,
        // so a cut tail is never appended after and old segments can go.
        let id = recovered.segments.last().map_or(1, |last| last + 1);
        let file = Arc::new(segment::create(dir, id)?);
        let mut buf = Vec::new();
        let start = record::begin_round(&mut buf);
        for (shard, op) in recovered.index.checkpoint() {
            record::encode(shard, &op, &mut buf);
        }
        record::finish_round(&mut buf, start, recovered.next_seq);
        file.write_all_at(&buf, 0)?;
        file.sync_data()?;
        files.insert(id, Arc::clone(&file));
        let shared = Arc::new(Shared {
            index: RwLock::new(recovered.index),
            lazy: Mutex::new(BTreeMap::new()),
            failed: tokio::sync::watch::Sender::new(None),
            files: RwLock::new(files),
            rounds: AtomicU64::new(0),
        });
        let mut w = writer::Writer {
            shared: Arc::clone(&shared),
            dir: dir.to_path_buf(),
            segment: id,
            file,
            len: buf.len() as u64,
            seq: recovered.next_seq + 1,
            segment_bytes,
            failed: None,
        };
        // Old segments whose entries are all gone need not wait for a write.
        w.collect_garbage_now()?;
        let (tx, rx) = mpsc::channel(QUEUE_JOBS);
        let thread = std::thread::Builder::new()
            .name("intake-raftlog".into())
            .spawn(move || w.run(rx))?;
        Ok(LogEngine {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                shared,
                tx,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Writes `ops` for `shard` and returns once they are durable (in one
    /// round with whatever else was waiting). Ops of one call land together,
    /// in order.
    pub async fn write(&self, shard: ShardId, ops: Vec<Op>) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        self.inner
            .tx
            .send(writer::Msg::Write(writer::Job { shard, ops, done }))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// The entries of `shard` with index in `start..end` (`end` `None`:
    /// unbounded), as stored. Missing indexes are skipped.
    pub fn entries(&self, shard: ShardId, start: u64, end: Option<u64>) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let wanted: Vec<(u64, state::Loc, Arc<File>)> = {
            let files = self.inner.shared.files.read();
            let index = self.inner.shared.index.read();
            let Some(log) = index.shards.get(&shard) else {
                return Ok(Vec::new());
            };
            let range = match end {
                Some(end) if end <= start => return Ok(Vec::new()),
                Some(end) => log.entries.range(start..end),
                None => log.entries.range(start..),
            };
            let mut out = Vec::new();
            for (i, loc) in range {
                let file = files.get(&loc.segment).ok_or_else(|| {
                    io::Error::other(format!("raft log segment {} of entry {i} is gone", loc.segment))
                })?;
                out.push((*i, *loc, Arc::clone(file)));
            }
            out
        };
        let mut out = Vec::with_capacity(wanted.len());
        for (i, loc, file) in wanted {
            let mut bytes = vec![0u8; loc.len as usize];
            file.read_exact_at(&mut bytes, loc.offset)?;
            out.push((i, bytes));
        }
        Ok(out)
    }

    /// Sets a metadata value without waiting: it is written with the next
    /// round (anyone's) or at shutdown. For hints whose loss in a crash is
    /// harmless, such as openraft's committed id.
    pub fn set_meta_lazily(&self, shard: ShardId, kind: MetaKind, value: Option<Vec<u8>>) -> io::Result<()> {
        self.inner.shared.lazy.lock().insert((shard, kind), value);
        Ok(())
    }

    pub fn meta(&self, shard: ShardId, kind: MetaKind) -> io::Result<Option<Vec<u8>>> {
        if let Some(v) = self.inner.shared.lazy.lock().get(&(shard, kind)) {
            return Ok(v.clone());
        }
        let index = self.inner.shared.index.read();
        Ok(index.shards.get(&shard).and_then(|l| l.meta.get(&kind).cloned()))
    }

    /// First and last live index of `shard`.
    pub fn bounds(&self, shard: ShardId) -> io::Result<(Option<u64>, Option<u64>)> {
        let index = self.inner.shared.index.read();
        Ok(index
            .shards
            .get(&shard)
            .map_or((None, None), |l| (l.first(), l.last())))
    }

    /// Resolves with the error once a write round has failed (never, on a
    /// healthy disk). After it every write fails; the node must stop.
    pub async fn failure(&self) -> io::Error {
        let mut rx = self.inner.shared.failed.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(f) => match &*f {
                Some((kind, msg)) => io::Error::new(*kind, msg.clone()),
                None => io::Error::other("raft log failed"),
            },
            Err(_) => std::future::pending().await,
        }
    }

    /// Write rounds (each one `fdatasync`) since open.
    pub fn rounds(&self) -> u64 {
        self.inner.shared.rounds.load(Ordering::Relaxed)
    }

    /// Segment files on disk now.
    pub fn segment_count(&self) -> usize {
        self.inner.shared.files.read().len()
    }

    /// Stops the writer thread after the jobs already queued and waits for
    /// it. Later writes, from any clone, fail as stopped.
    pub async fn shutdown(&self) {
        let thread = self.inner.thread.lock().take();
        let Some(thread) = thread else { return };
        if self.inner.tx.send(writer::Msg::Stop).await.is_err() {
            return;
        }
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("raft log writer thread ended abnormally");
        }
    }
}

/// Writes a new log directory holding `records`, synced, without starting a
/// writer (for migrating logs of an earlier format). `dir` must not exist.
pub fn write_new(dir: &Path, records: &[(ShardId, Op)]) -> io::Result<()> {
    std::fs::create_dir(dir)?;
    let file = segment::create(dir, 1)?;
    let mut buf = Vec::new();
    let start = record::begin_round(&mut buf);
    for (shard, op) in records {
        record::encode(*shard, op, &mut buf);
    }
    record::finish_round(&mut buf, start, 1);
    file.write_all_at(&buf, 0)?;
    file.sync_data()?;
    if let Some(parent) = dir.parent() {
        segment::sync_dir(parent)?;
    }
    Ok(())
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "raft log writer is stopped")
}

#[cfg(test)]
mod tests;
